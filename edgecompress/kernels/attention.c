/*
 * The {0, a} x +-1 product of binary attention (U1A1): P v with P in {0, a} and v in {-1, +1}.
 *
 * Row i of P is a bit mask m_i over the S keys (bit 1 where P[i, j] = a); column c of v is
 * packed like pack.c's signs but along the keys (bit 1 where v[j, c] = -1). Then
 *     sum_j P[i, j] v[j, c] = a * (popcount(m_i) - 2 popcount(m_i AND vneg_c)),
 * an integer count (AND and popcount only), scaled once: out = (float)count * a, which is what
 * torch computes for (codes @ v) * a with 0/1 codes (an exact integer sum, then one rounding).
 *
 * vneg is given word-major, (sw x d): word w of every channel side by side, so one broadcast
 * mask word meets 4 (AVX2) or 8 (AVX-512) channel words per instruction. Three bodies (scalar,
 * AVX2 nibble-lookup popcount, AVX-512 VPOPCNTQ), bit-identical (integer counts).
 */
#include "kernels.h"

/* counts[c] = popcount(AND of mask and channel c), c < d, over sw words. */
typedef void (*count_row)(const uint64_t *mask, const uint64_t *vneg, int64_t sw, int64_t d,
                          int64_t *counts);

static void count_scalar(const uint64_t *mask, const uint64_t *vneg, int64_t sw, int64_t d,
                         int64_t *counts) {
    for (int64_t c = 0; c < d; c++) counts[c] = 0;
    for (int64_t w = 0; w < sw; w++) {
        const uint64_t mw = mask[w];
        const uint64_t *v = vneg + w * d;
        for (int64_t c = 0; c < d; c++) counts[c] += ec_popcount64(mw & v[c]);
    }
}

#ifdef EC_X86
/* AVX2: 4 channels per vector, byte counts summed into 64-bit lanes with VPSADBW. */
__attribute__((target("avx2")))
static void count_avx2(const uint64_t *mask, const uint64_t *vneg, int64_t sw, int64_t d,
                       int64_t *counts) {
    const __m256i zero = _mm256_setzero_si256();
    int64_t c = 0;
    for (; c + 4 <= d; c += 4) {
        __m256i s = zero;
        for (int64_t w = 0; w < sw; w++) {
            const __m256i mv = _mm256_set1_epi64x((long long)mask[w]);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(vneg + w * d + c));
            s = _mm256_add_epi64(s, _mm256_sad_epu8(popcnt_bytes256(_mm256_and_si256(mv, v)),
                                                    zero));
        }
        _mm256_storeu_si256((__m256i *)(counts + c), s);
    }
    for (; c < d; c++) {
        int64_t s = 0;
        for (int64_t w = 0; w < sw; w++) s += __builtin_popcountll(mask[w] & vneg[w * d + c]);
        counts[c] = s;
    }
}

/* AVX-512: 8 channels per vector with VPOPCNTQ; the last vector is masked. */
__attribute__((target("avx512f,avx512vpopcntdq")))
static void count_avx512(const uint64_t *mask, const uint64_t *vneg, int64_t sw, int64_t d,
                         int64_t *counts) {
    for (int64_t c = 0; c < d; c += 8) {
        const int64_t left = d - c;
        const __mmask8 keep = (__mmask8)(left >= 8 ? 0xff : ((1u << left) - 1));
        __m512i s = _mm512_setzero_si512();
        for (int64_t w = 0; w < sw; w++) {
            const __m512i mv = _mm512_set1_epi64((long long)mask[w]);
            const __m512i v = _mm512_maskz_loadu_epi64(keep, vneg + w * d + c);
            s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_and_si512(mv, v)));
        }
        _mm512_mask_storeu_epi64(counts + c, keep, s);
    }
}
#endif

/*
 * masks: (batch * heads) x m x sw words (query rows); vneg: (batch * heads) x sw x d words;
 * out: batch x m x heads x d floats (the heads merged back into channels, as attention's
 * output is laid out), out[b, i, h, c] = (float)(popcount(mask) - 2 count[c]) * alpha.
 */
EC_EXPORT int ec_mask_matmul(const uint64_t *masks, const uint64_t *vneg, int64_t batch,
                             int64_t heads, int64_t m, int64_t d, int64_t sw, float alpha,
                             float *out, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const count_row count = EC_PICK(path, count_scalar, count_avx2, count_avx512);
    const int64_t rows = batch * heads * m;
    int status = EC_OK;
#pragma omp parallel num_threads(ec_threads(threads)) if (rows * d * sw > 32768)
    {
        int64_t *counts = malloc((size_t)(d > 0 ? d : 1) * sizeof(int64_t));
        if (counts == NULL) {
#pragma omp atomic write
            status = EC_OUT_OF_MEMORY;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (counts == NULL) continue;
            const int64_t g = r / m, i = r % m, b = g / heads, h = g % heads;
            const uint64_t *mask = masks + r * sw;
            int64_t total = 0;
            for (int64_t w = 0; w < sw; w++) total += ec_popcount64(mask[w]);
            count(mask, vneg + g * sw * d, sw, d, counts);
            float *o = out + ((b * m + i) * heads + h) * d;
            for (int64_t c = 0; c < d; c++) o[c] = (float)(total - 2 * counts[c]) * alpha;
        }
        free(counts);
    }
    return status;
}
