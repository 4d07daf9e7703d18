/*
 * W1A32 GEMM, sign-select: +-1 weights (1 bit each) times float activations.
 *
 * y[m, n] = sum_k x[m, k] s[n, k] with s = +-1 is computed as  total[m] - 2 neg[m, n]  where
 * total[m] = sum_k x[m, k] and neg[m, n] = sum of x[m, k] over the k with s[n, k] = -1: one
 * masked add per 16 multiply-adds (an FMA does 16 too), and 1 bit per weight to read instead of
 * 32. Both sums run over k in increasing order, one float accumulator per (m, n) (and per m), so
 * every path gives bit-identical results. Then the affine epilogue: y * scale[n] + bias[n].
 *
 * Weights: "sign panels", for every group of 16 outputs p and every k, a 16-bit mask of the
 * outputs whose weight is -1 (bit j: output 16 p + j); layout (panels, K) uint16, missing
 * outputs 0.
 */
#include "kernels.h"

#define WMAXR 8    /* most rows of x per tile */
#define WMAXP 8    /* most panels (of 16 outputs) per tile */

/* A tile: `rows` rows of x times `np` sign panels; acc[r][16 q + j]. Two shapes are used:
 * 8 rows x 2 panels for blocks of 8 rows, 1 row x 8 panels for the rows left over (batch 1),
 * both with 16 independent accumulators. */
typedef void (*w1a32_kernel)(const float *const *x, const uint16_t *const *wm, int64_t k,
                             int rows, int np, float acc[WMAXR][WMAXP * 16]);

static void w1a32_tile_scalar(const float *const *x, const uint16_t *const *wm, int64_t k,
                              int rows, int np, float acc[WMAXR][WMAXP * 16]) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < np * 16; j++) acc[r][j] = 0.0f;
    for (int64_t t = 0; t < k; t++)
        for (int q = 0; q < np; q++) {
            const unsigned bits = wm[q][t];
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < 16; j++)
                    if (bits >> j & 1u) acc[r][16 * q + j] += x[r][t];
        }
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void w1a32_tile_avx2(const float *const *x, const uint16_t *const *wm, int64_t k,
                            int rows, int np, float acc[WMAXR][WMAXP * 16]) {
    /* one row at a time, 8 lanes per vector; blend keeps lanes without the bit untouched */
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int r = 0; r < rows; r++) {
        __m256 s[WMAXP * 2];
        for (int q = 0; q < np * 2; q++) s[q] = _mm256_setzero_ps();
        for (int64_t t = 0; t < k; t++) {
            const __m256 xv = _mm256_set1_ps(x[r][t]);
            for (int q = 0; q < np; q++) {
                const int bits = wm[q][t];
                for (int h = 0; h < 2; h++) {
                    const __m256i b = _mm256_set1_epi32((bits >> (8 * h)) & 0xff);
                    const __m256 sel = _mm256_castsi256_ps(
                        _mm256_cmpeq_epi32(_mm256_and_si256(b, lane), lane));
                    s[2 * q + h] = _mm256_blendv_ps(s[2 * q + h],
                                                    _mm256_add_ps(s[2 * q + h], xv), sel);
                }
            }
        }
        for (int q = 0; q < np * 2; q++) _mm256_storeu_ps(&acc[r][8 * q], s[q]);
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void w1a32_tile_avx512_fixed(const float *const *x, const uint16_t *const *wm,
                                           int64_t k, const int rows, const int np,
                                           float acc[WMAXR][WMAXP * 16]) {
    __m512 s[WMAXR][WMAXP];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) s[r][q] = _mm512_setzero_ps();
    for (int64_t t = 0; t < k; t++) {
        __mmask16 mk[WMAXP];
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) mk[q] = (__mmask16)wm[q][t];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            const __m512 v = _mm512_set1_ps(x[r][t]);
#pragma GCC unroll 8
            for (int q = 0; q < np; q++) s[r][q] = _mm512_mask_add_ps(s[r][q], mk[q], s[r][q], v);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) _mm512_storeu_ps(&acc[r][16 * q], s[r][q]);
}

__attribute__((target("avx512f")))
static void w1a32_tile_avx512(const float *const *x, const uint16_t *const *wm, int64_t k,
                              int rows, int np, float acc[WMAXR][WMAXP * 16]) {
    if (rows == 8 && np == 2) w1a32_tile_avx512_fixed(x, wm, k, 8, 2, acc);
    else if (rows == 1 && np == 8) w1a32_tile_avx512_fixed(x, wm, k, 1, 8, acc);
    else w1a32_tile_scalar(x, wm, k, rows, np, acc);
}
#endif

/* x: M x K float (row stride K), wm: sign panels (ceil(N / 16) x K), y: M x N float. */
EC_EXPORT int ec_w1a32_gemm(const float *x, const uint16_t *wm, int64_t m, int64_t n, int64_t k,
                            const float *scale, const float *bias, float *y, int path,
                            int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const w1a32_kernel kernel = EC_PICK(path, w1a32_tile_scalar, w1a32_tile_avx2,
                                        w1a32_tile_avx512);
    const int64_t panels = (n + 15) / 16;
    const int64_t full = m / 8;  /* blocks of 8 rows; then single rows */
    const int64_t blocks2 = (panels + 1) / 2, blocks8 = (panels + 7) / 8;
    const int64_t tiles = full * blocks2 + (m - full * 8) * blocks8;
    float *totals = malloc((size_t)(m > 0 ? m : 1) * sizeof(float));
    /* an all-zero sign panel stands in for the panels past the last one */
    uint16_t *zero = calloc((size_t)(k > 0 ? k : 1), sizeof(uint16_t));
    if (totals == NULL || zero == NULL) {
        free(totals);
        free(zero);
        return EC_OUT_OF_MEMORY;
    }
#pragma omp parallel num_threads(ec_threads(threads)) if (m * n * k > 32768)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m; i++) {
            float sum = 0.0f;
            for (int64_t t = 0; t < k; t++) sum += x[i * k + t];
            totals[i] = sum;
        }
        /* tile index -> (rows, panels); the panel block is the outer index so that a block of
         * weights stays in cache while the rows stream past it */
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; tile++) {
            int64_t row0, p0;
            int rows, np;
            if (tile < full * blocks2) {
                p0 = (tile / full) * 2; row0 = (tile % full) * 8; rows = 8; np = 2;
            } else {
                const int64_t rest = tile - full * blocks2, left = m - full * 8;
                p0 = (rest / left) * 8; row0 = full * 8 + rest % left; rows = 1; np = 8;
            }
            const float *xr[WMAXR];
            for (int r = 0; r < rows; r++) xr[r] = x + (row0 + r) * k;
            const uint16_t *wq[WMAXP];
            for (int q = 0; q < np; q++) wq[q] = p0 + q < panels ? wm + (p0 + q) * k : zero;
            float acc[WMAXR][WMAXP * 16];
            kernel(xr, wq, k, rows, np, acc);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < np * 16 && p0 * 16 + j < n; j++) {
                    const int64_t col = p0 * 16 + j;
                    float v = totals[row0 + r] - 2.0f * acc[r][j];
                    if (scale) v = v * scale[col];
                    if (bias) v = v + bias[col];
                    y[(row0 + r) * n + col] = v;
                }
        }
    }
    free(totals);
    free(zero);
    return EC_OK;
}
