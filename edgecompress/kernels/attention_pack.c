/*
 * The packing passes of binary attention's {0, a} x +-1 product (attention.c's operands),
 * straight from the float tensors, without the intermediate tensors of the training form:
 *
 *   ec_pack_prob_masks     bit j of row i set where round(clamp(p[i, j] / a, 0, 1)) = 1: with
 *                          torch's round (half to even) that is p / a > 0.5 (0.5 rounds to 0,
 *                          a NaN gives 0 in both), the same IEEE division p / a, so the bits are
 *                          those of pack_signs(-codes) (reference: pack_prob_masks_reference);
 *   ec_pack_value_columns  the values' signs sign(v + off) packed along the keys, per sample,
 *                          head and channel: word w of channel c of head h at
 *                          out[(n heads + h), w, c] (reference: pack_value_columns_reference);
 *                          the same float sum then "< 0" compare as ec_pack_signs.
 *
 * Divisions, additions and comparisons are single IEEE operations (no contraction: ISO C, and
 * the vector bodies use the same operations), so every path equals its reference bit for bit.
 */
#include "kernels.h"

static void masks_row_scalar(const float *p, float alpha, int64_t k, uint64_t *dst) {
    for (int64_t w = 0; w < (k + 63) / 64; w++) {
        uint64_t word = 0;
        const int64_t base = w * 64, n = (k - base) < 64 ? (k - base) : 64;
        for (int64_t j = 0; j < n; j++) word |= (uint64_t)(p[base + j] / alpha > 0.5f) << j;
        dst[w] = word;
    }
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void masks_row_avx2(const float *p, float alpha, int64_t k, uint64_t *dst) {
    const int64_t full = k / 64;
    const __m256 a = _mm256_set1_ps(alpha), half = _mm256_set1_ps(0.5f);
    for (int64_t w = 0; w < full; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            const __m256 v = _mm256_div_ps(_mm256_loadu_ps(p + w * 64 + 8 * q), a);
            word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, half, _CMP_GT_OQ))
                    << (8 * q);
        }
        dst[w] = word;
    }
    if (full * 64 < k) masks_row_scalar(p + full * 64, alpha, k - full * 64, dst + full);
}

__attribute__((target("avx512f")))
static void masks_row_avx512(const float *p, float alpha, int64_t k, uint64_t *dst) {
    const __m512 a = _mm512_set1_ps(alpha), half = _mm512_set1_ps(0.5f);
    for (int64_t w = 0; w < (k + 63) / 64; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 4; q++) {
            const int64_t at = w * 64 + 16 * q, left = k - at;
            if (left <= 0) break;
            const __mmask16 keep = (__mmask16)(left >= 16 ? 0xffff : ((1u << left) - 1));
            const __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(keep, p + at), a);
            word |= (uint64_t)_mm512_mask_cmp_ps_mask(keep, v, half, _CMP_GT_OQ) << (16 * q);
        }
        dst[w] = word;
    }
}
#endif

/* p: rows x k probabilities -> out: rows x ceil(k / 64) words. */
EC_EXPORT int ec_pack_prob_masks(const float *p, float alpha, int64_t rows, int64_t k,
                                 uint64_t *out, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    void (*const row)(const float *, float, int64_t, uint64_t *) =
        EC_PICK(path, masks_row_scalar, masks_row_avx2, masks_row_avx512);
    const int64_t kw = (k + 63) / 64;
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) if (rows * k > 65536)
    for (int64_t r = 0; r < rows; r++) row(p + r * k, alpha, k, out + r * kw);
    return EC_OK;
}

/* v: b x s x (heads d) floats, off: heads d offsets (or NULL) -> out: (b heads) x ceil(s / 64)
 * x d words. One pass over the keys of a word, all channels of a key at once (the compiler
 * vectorizes the loop over channels); bits past s stay 0. */
EC_EXPORT int ec_pack_value_columns(const float *v, const float *off, int64_t b, int64_t s,
                                    int64_t heads, int64_t d, uint64_t *out, int threads) {
    const int64_t c = heads * d, sw = (s + 63) / 64;
    int failed = 0;
#pragma omp parallel num_threads(ec_threads(threads)) if (b * s * c > 65536)
    {
        uint64_t *word = malloc((size_t)c * sizeof(uint64_t));
        if (!word) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < b * sw; task++) {
            if (!word) continue;
            const int64_t n = task / sw, w = task % sw;
            const int64_t end = (w + 1) * 64 < s ? (w + 1) * 64 : s;
            for (int64_t j = 0; j < c; j++) word[j] = 0;
            for (int64_t key = w * 64; key < end; key++) {
                const float *row = v + (n * s + key) * c;
                const int bit = (int)(key - w * 64);
                if (off)
                    for (int64_t j = 0; j < c; j++)
                        word[j] |= (uint64_t)(row[j] + off[j] < 0.0f) << bit;
                else
                    for (int64_t j = 0; j < c; j++) word[j] |= (uint64_t)(row[j] < 0.0f) << bit;
            }
            for (int64_t h = 0; h < heads; h++)
                memcpy(out + ((n * heads + h) * sw + w) * d, word + h * d,
                       (size_t)d * sizeof(uint64_t));
        }
        free(word);
    }
    return failed ? EC_OUT_OF_MEMORY : EC_OK;
}
