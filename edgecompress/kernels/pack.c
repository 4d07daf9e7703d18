/*
 * Sign packing, the encoding every binary kernel reads:
 * bit 1 = -1 (x < 0), bit 0 = +1; 64 values per uint64 word, value j of a row in bit (j % 64)
 * of word (j / 64); rows are padded to a whole number of words with 0 bits.
 * With a per-column offset b (a learnable threshold) the bit is sign(x + b): the float sum is
 * rounded first, then compared, as torch computes (x + b) < 0.
 */
#include "kernels.h"

/* One row of k floats (plus off[j] when off is not NULL) -> ceil(k / 64) words. The vector
 * versions compare 8 or 16 values with "x < 0" at once (ordered compare: -0.0 and NaN give 0,
 * like the scalar loop). */
static void pack_row_scalar(const float *src, const float *off, int64_t k, uint64_t *dst) {
    const int64_t kw = (k + 63) / 64;
    for (int64_t w = 0; w < kw; w++) {
        uint64_t word = 0;
        const int64_t base = w * 64;
        const int64_t n = (k - base) < 64 ? (k - base) : 64;
        if (off)
            for (int64_t j = 0; j < n; j++)
                word |= (uint64_t)(src[base + j] + off[base + j] < 0.0f) << j;
        else
            for (int64_t j = 0; j < n; j++) word |= (uint64_t)(src[base + j] < 0.0f) << j;
        dst[w] = word;
    }
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void pack_row_avx2(const float *src, const float *off, int64_t k, uint64_t *dst) {
    const int64_t full = k / 64;
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t w = 0; w < full; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            __m256 v = _mm256_loadu_ps(src + w * 64 + 8 * q);
            if (off) v = _mm256_add_ps(v, _mm256_loadu_ps(off + w * 64 + 8 * q));
            word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ))
                    << (8 * q);
        }
        dst[w] = word;
    }
    if (full * 64 < k)
        pack_row_scalar(src + full * 64, off ? off + full * 64 : NULL, k - full * 64, dst + full);
}

__attribute__((target("avx512f")))
static void pack_row_avx512(const float *src, const float *off, int64_t k, uint64_t *dst) {
    const int64_t kw = (k + 63) / 64;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t w = 0; w < kw; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 4; q++) {
            const int64_t at = w * 64 + 16 * q;
            const int64_t left = k - at;
            if (left <= 0) break;
            const __mmask16 keep = (__mmask16)(left >= 16 ? 0xffff : ((1u << left) - 1));
            __m512 v = _mm512_maskz_loadu_ps(keep, src + at);
            if (off) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, off + at));
            word |= (uint64_t)_mm512_mask_cmp_ps_mask(keep, v, zero, _CMP_LT_OQ) << (16 * q);
        }
        dst[w] = word;
    }
}
#endif

/* x: rows x k floats (off: k offsets or NULL) -> out: rows x ceil(k / 64) words. */
EC_EXPORT int ec_pack_signs(const float *x, const float *off, int64_t rows, int64_t k,
                            uint64_t *out, int path) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    void (*const pack_row)(const float *, const float *, int64_t, uint64_t *) =
        EC_PICK(path, pack_row_scalar, pack_row_avx2, pack_row_avx512);
    const int64_t kw = (k + 63) / 64;
#pragma omp parallel for schedule(static) if (rows * k > 65536)
    for (int64_t r = 0; r < rows; r++) pack_row(x + r * k, off, k, out + r * kw);
    return EC_OK;
}

/* The pixels (i, oy sh, ox sw), oy < oh, ox < ow, of a float input (n, c, h, w) held
 * channels-last (last) or contiguous -> out (n oh ow, ceil(c / 64)) words, bit 1 where x < 0, as
 * ec_pack_signs packs a row: with stride 1 and the whole image, every pixel (a convolution's
 * packed input); with a stride, the rows of a 1x1 convolution without padding, the pixels it
 * skips never read. */
EC_EXPORT int ec_pack_pixels(const float *x, int last, int64_t n, int64_t c, int64_t h,
                             int64_t w, int64_t sh, int64_t sw, int64_t oh, int64_t ow,
                             uint64_t *out, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    void (*const pack_row)(const float *, const float *, int64_t, uint64_t *) =
        EC_PICK(path, pack_row_scalar, pack_row_avx2, pack_row_avx512);
    const int64_t cw = (c + 63) / 64, plane = oh * ow;
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) \
    if (n * plane * c > 65536)
    for (int64_t line = 0; line < n * oh; line++) {  /* an output row of one image */
        const int64_t img = line / oh, y = (line % oh) * sh;
        uint64_t *o = out + line * ow * cw;
        if (last) {
            for (int64_t ox = 0; ox < ow; ox++)
                pack_row(x + ((img * h + y) * w + ox * sw) * c, NULL, c, o + ox * cw);
            continue;
        }
        memset(o, 0, (size_t)(ow * cw) * sizeof(uint64_t));
        for (int64_t ch = 0; ch < c; ch++) {
            const float *row = x + ((img * c + ch) * h + y) * w;
            const uint64_t bit = (uint64_t)1 << (ch & 63);
            const int64_t word = ch >> 6;
            for (int64_t ox = 0; ox < ow; ox++)
                if (row[ox * sw] < 0.0f) o[ox * cw + word] |= bit;
        }
    }
    return EC_OK;
}

/* Binary attention's q / k: x (b, t, heads * d) floats plus off (heads * d offsets, the
 * quantizer's threshold) -> out (b, heads, t, ceil(d / 64)) words, each head's d values of a
 * token packed as one row: the head split is read in place (no transposed copy), each bit the
 * same sum-then-compare as ec_pack_signs. */
EC_EXPORT int ec_pack_head_signs(const float *x, const float *off, int64_t b, int64_t t,
                                 int64_t heads, int64_t d, uint64_t *out, int path) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    void (*const pack_row)(const float *, const float *, int64_t, uint64_t *) =
        EC_PICK(path, pack_row_scalar, pack_row_avx2, pack_row_avx512);
    const int64_t kw = (d + 63) / 64, rows = b * t * heads;
#pragma omp parallel for schedule(static) if (rows * d > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t h = r % heads, token = r / heads, sample = token / t;
        pack_row(x + r * d, off ? off + h * d : NULL, d,
                 out + ((sample * heads + h) * t + token % t) * kw);
    }
    return EC_OK;
}
