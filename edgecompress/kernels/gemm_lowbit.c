/*
 * Low-bit weight GEMM for small batches: y = x W^T (* scale + bias) where every weight of W
 * (N x K) is a b-bit code (b = 2, 3, 4) into a 2^b-entry float value table, decoded in
 * registers by a vector permute (the table lives in one register) inside the product loop. At
 * batch 1-16 a float linear layer is bound by reading its 32-bit weights; this one reads 4 bits
 * per weight (2 for b = 2).
 *
 * Layout ("low-bit panels", uint8 (ceil(N / 16), ceil(K / per), 16)): for every group of 16
 * outputs p, every group g of `per` consecutive k and every output j of the group one byte,
 * holding the codes of output 16 p + j for k = per g + i in bits [lane i, lane (i + 1)).
 * lane = 4 bits for b = 3, 4 (3-bit codes in 4-bit lanes: the decode is one shift), lane = 2
 * for b = 2; per = 8 / lane. Missing outputs and k past K have code 0 (never read for k).
 *
 * The decode indexes a 16-entry table that repeats the 2^b values (entry i = value[i mod 2^b]),
 * so bits above a code's own in a lane-shifted byte fall out of the index without a mask: the
 * AVX-512 permute reads 4 index bits, the AVX2 one reads 3 (two permutes and a blend on bit 3
 * for b = 4). AVX2 with a table of bfloat16-exact values (the low 16 bits of every float32 zero:
 * the shift layers' 0 and +-2^e, the uniform layers' integer levels) decodes by byte shuffles
 * instead (pshufb of the values' two upper bytes, then unpacks): no cross-lane permute, which
 * some CPUs run slowly (AMD Zen 1: vpermps at about a quarter of pshufb's rate).
 *
 * Order of float operations (what makes every path equal, and the reference, bit for bit):
 * one float32 accumulator per (row, output), starting at 0, and for k = 0, 1, ..., K - 1
 * acc = acc + x[m, k] * w[n, k], the product rounded to float32 and then added (no fused
 * multiply-add; -std=c11 keeps the compiler from contracting); then acc * scale[n] and + bias[n]
 * when given. The vectors run along the outputs, so the vector width does not change the order.
 */
#include "kernels.h"

#define LMAXR 8       /* most rows of x per tile */
#define LPANELS 8     /* panels (of 16 outputs) per tile */

/* A tile: `rows` (<= 8) rows of x times LPANELS panels (wp[q]: panel q's bytes, groups x 16);
 * acc[r][16 q + j]. */
typedef void (*lowbit_tile)(const float *const *x, const uint8_t *const *wp, int64_t k,
                            int rows, int lane, const float *tab16,
                            float acc[LMAXR][LPANELS * 16]);

static void lowbit_tile_scalar(const float *const *x, const uint8_t *const *wp, int64_t k,
                               int rows, int lane, const float *tab16,
                               float acc[LMAXR][LPANELS * 16]) {
    const int per = 8 / lane;
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < LPANELS; q++)
            for (int j = 0; j < 16; j++) {
                float s = 0.0f;
                for (int64_t t = 0; t < k; t++) {
                    const unsigned byte = wp[q][(t / per) * 16 + j];
                    const float w = tab16[(byte >> (lane * (t % per))) & 15u];
                    const float p = x[r][t] * w;
                    s = s + p;
                }
                acc[r][16 * q + j] = s;
            }
}

#ifdef EC_X86
/* AVX2: a panel is two vectors of 8 outputs; a row block R x NP panels keeps 2 R NP
 * accumulators (at most 8 of the 16 ymm registers). */
__attribute__((target("avx2"), always_inline))
static inline __m256 lowbit_decode256(__m256i idx, __m256 lo, __m256 hi, int wide) {
    const __m256 a = _mm256_permutevar8x32_ps(lo, idx);
    if (!wide) return a;  /* b <= 3: the table repeats every 8 entries */
    const __m256 b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

__attribute__((target("avx2"), always_inline))
static inline void lowbit_avx2_fixed(const float *const *x, const uint8_t *const *wp, int64_t k,
                                     const int rows, const int np, const int lane, int wide,
                                     const float *tab16, float acc[LMAXR][LPANELS * 16],
                                     int r0, int q0) {
    const int per = 8 / lane;
    const __m256 lo = _mm256_loadu_ps(tab16), hi = _mm256_loadu_ps(tab16 + 8);
    __m256 s[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int h = 0; h < 2 * np; h++) s[r][h] = _mm256_setzero_ps();
    const int64_t groups = (k + per - 1) / per;
    for (int64_t g = 0; g < groups; g++) {
        const int valid = k - g * per < per ? (int)(k - g * per) : per;
#pragma GCC unroll 4
        for (int i = 0; i < per; i++) {
            if (i >= valid) break;
#pragma GCC unroll 4
            for (int h = 0; h < 2 * np; h++) {
                const __m128i bytes = _mm_loadl_epi64(
                    (const __m128i *)(wp[q0 + h / 2] + g * 16 + 8 * (h % 2)));
                const __m256i idx = _mm256_srli_epi32(_mm256_cvtepu8_epi32(bytes), lane * i);
                const __m256 w = lowbit_decode256(idx, lo, hi, wide);
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++)
                    s[r][h] = _mm256_add_ps(s[r][h],
                                            _mm256_mul_ps(_mm256_set1_ps(x[r0 + r][g * per + i]), w));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int h = 0; h < 2 * np; h++) _mm256_storeu_ps(&acc[r0 + r][16 * q0 + 8 * h], s[r][h]);
}

/* AVX2 for bfloat16-exact tables: tlo / thi hold byte 2 / byte 3 of each of the 16 float
 * values. A panel's 16 outputs decode into two vectors holding outputs {0-3, 8-11} and
 * {4-7, 12-15} (the unpacks work within 128-bit lanes); the store puts them back in order. */
__attribute__((target("avx2"), always_inline))
static inline void lowbit_avx2_bf16_fixed(const float *const *x, const uint8_t *const *wp,
                                          int64_t k, const int rows, const int np,
                                          const int lane, __m128i tlo, __m128i thi,
                                          float acc[LMAXR][LPANELS * 16], int r0, int q0) {
    const int per = 8 / lane;
    const __m128i nibble = _mm_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256 s[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int h = 0; h < 2 * np; h++) s[r][h] = _mm256_setzero_ps();
    const int64_t groups = (k + per - 1) / per;
    for (int64_t g = 0; g < groups; g++) {
        const int valid = k - g * per < per ? (int)(k - g * per) : per;
#pragma GCC unroll 4
        for (int i = 0; i < per; i++) {
            if (i >= valid) break;
#pragma GCC unroll 4
            for (int q = 0; q < np; q++) {
                const __m128i bytes = _mm_loadu_si128((const __m128i *)(wp[q0 + q] + g * 16));
                const __m128i idx = _mm_and_si128(_mm_srli_epi16(bytes, lane * i), nibble);
                const __m128i lo = _mm_shuffle_epi8(tlo, idx), hi = _mm_shuffle_epi8(thi, idx);
                const __m256i half = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi),
                                                      _mm_unpacklo_epi8(lo, hi));
                const __m256 wa = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, half));
                const __m256 wb = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, half));
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++) {
                    const __m256 v = _mm256_set1_ps(x[r0 + r][g * per + i]);
                    s[r][2 * q] = _mm256_add_ps(s[r][2 * q], _mm256_mul_ps(v, wa));
                    s[r][2 * q + 1] = _mm256_add_ps(s[r][2 * q + 1], _mm256_mul_ps(v, wb));
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) {
            float *out = &acc[r0 + r][16 * (q0 + q)];
            _mm256_storeu_ps(out, _mm256_permute2f128_ps(s[r][2 * q], s[r][2 * q + 1], 0x20));
            _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(s[r][2 * q], s[r][2 * q + 1], 0x31));
        }
}

/* byte 2 / byte 3 of every value of tab16 into lo / hi; 1 if the values are bfloat16-exact */
static int lowbit_bf16_bytes(const float *tab16, uint8_t lo[16], uint8_t hi[16]) {
    for (int i = 0; i < 16; i++) {
        uint32_t bits;
        memcpy(&bits, tab16 + i, sizeof bits);
        if (bits & 0xffffu) return 0;
        lo[i] = (uint8_t)(bits >> 16);
        hi[i] = (uint8_t)(bits >> 24);
    }
    return 1;
}

__attribute__((target("avx2")))
static void lowbit_tile_avx2_bf16(const float *const *x, const uint8_t *const *wp, int64_t k,
                                  int rows, int lane, const uint8_t *lo, const uint8_t *hi,
                                  float acc[LMAXR][LPANELS * 16]) {
    const __m128i tlo = _mm_loadu_si128((const __m128i *)lo);
    const __m128i thi = _mm_loadu_si128((const __m128i *)hi);
    int r = 0;
    for (; r + 4 <= rows; r += 4)  /* 4 rows x 1 panel */
        for (int q = 0; q < LPANELS; q++) {
            if (lane == 2) lowbit_avx2_bf16_fixed(x, wp, k, 4, 1, 2, tlo, thi, acc, r, q);
            else lowbit_avx2_bf16_fixed(x, wp, k, 4, 1, 4, tlo, thi, acc, r, q);
        }
    for (; r < rows; r++)  /* 1 row x 2 panels */
        for (int q = 0; q < LPANELS; q += 2) {
            if (lane == 2) lowbit_avx2_bf16_fixed(x, wp, k, 1, 2, 2, tlo, thi, acc, r, q);
            else lowbit_avx2_bf16_fixed(x, wp, k, 1, 2, 4, tlo, thi, acc, r, q);
        }
}

__attribute__((target("avx2")))
static void lowbit_tile_avx2(const float *const *x, const uint8_t *const *wp, int64_t k,
                             int rows, int lane, const float *tab16,
                             float acc[LMAXR][LPANELS * 16]) {
    uint8_t lo[16], hi[16];
    if (lowbit_bf16_bytes(tab16, lo, hi)) {
        lowbit_tile_avx2_bf16(x, wp, k, rows, lane, lo, hi, acc);
        return;
    }
    const int wide = memcmp(tab16, tab16 + 8, 8 * sizeof(float)) != 0;  /* b = 4 */
    int r = 0;
    for (; r + 4 <= rows; r += 4)  /* 4 rows x 1 panel */
        for (int q = 0; q < LPANELS; q++) {
            if (lane == 2) lowbit_avx2_fixed(x, wp, k, 4, 1, 2, wide, tab16, acc, r, q);
            else lowbit_avx2_fixed(x, wp, k, 4, 1, 4, wide, tab16, acc, r, q);
        }
    for (; r < rows; r++)  /* 1 row x 4 panels */
        for (int q = 0; q < LPANELS; q += 4) {
            if (lane == 2) lowbit_avx2_fixed(x, wp, k, 1, 4, 2, wide, tab16, acc, r, q);
            else lowbit_avx2_fixed(x, wp, k, 1, 4, 4, wide, tab16, acc, r, q);
        }
}

/* AVX-512: a panel is one vector of 16 outputs, decoded by one permute; a row block R x NP
 * panels keeps R NP accumulators (16 of the 32 zmm registers). */
__attribute__((target("avx512f"), always_inline))
static inline void lowbit_avx512_fixed(const float *const *x, const uint8_t *const *wp, int64_t k,
                                       const int rows, const int np, const int lane,
                                       const float *tab16, float acc[LMAXR][LPANELS * 16],
                                       int r0, int q0) {
    const int per = 8 / lane;
    const __m512 tab = _mm512_loadu_ps(tab16);
    __m512 s[8][8];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) s[r][q] = _mm512_setzero_ps();
    const int64_t groups = (k + per - 1) / per;
    for (int64_t g = 0; g < groups; g++) {
        const int valid = k - g * per < per ? (int)(k - g * per) : per;
        __m512i c[8];
#pragma GCC unroll 8
        for (int q = 0; q < np; q++)
            c[q] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wp[q0 + q] + g * 16)));
#pragma GCC unroll 4
        for (int i = 0; i < per; i++) {
            if (i >= valid) break;
            __m512 w[8];
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                w[q] = _mm512_permutexvar_ps(_mm512_srli_epi32(c[q], lane * i), tab);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                const __m512 v = _mm512_set1_ps(x[r0 + r][g * per + i]);
#pragma GCC unroll 8
                for (int q = 0; q < np; q++)
                    s[r][q] = _mm512_add_ps(s[r][q], _mm512_mul_ps(v, w[q]));
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) _mm512_storeu_ps(&acc[r0 + r][16 * (q0 + q)], s[r][q]);
}

__attribute__((target("avx512f")))
static void lowbit_tile_avx512(const float *const *x, const uint8_t *const *wp, int64_t k,
                               int rows, int lane, const float *tab16,
                               float acc[LMAXR][LPANELS * 16]) {
    /* row blocks of 8 (x 2 panels), 4 (x 4), 2 (x 4), 1 (x 8) */
    int r = 0;
    if (rows == 8) {
        for (int q = 0; q < LPANELS; q += 2) {
            if (lane == 2) lowbit_avx512_fixed(x, wp, k, 8, 2, 2, tab16, acc, 0, q);
            else lowbit_avx512_fixed(x, wp, k, 8, 2, 4, tab16, acc, 0, q);
        }
        return;
    }
    if (rows - r >= 4) {
        for (int q = 0; q < LPANELS; q += 4) {
            if (lane == 2) lowbit_avx512_fixed(x, wp, k, 4, 4, 2, tab16, acc, r, q);
            else lowbit_avx512_fixed(x, wp, k, 4, 4, 4, tab16, acc, r, q);
        }
        r += 4;
    }
    if (rows - r >= 2) {
        for (int q = 0; q < LPANELS; q += 4) {
            if (lane == 2) lowbit_avx512_fixed(x, wp, k, 2, 4, 2, tab16, acc, r, q);
            else lowbit_avx512_fixed(x, wp, k, 2, 4, 4, tab16, acc, r, q);
        }
        r += 2;
    }
    if (rows - r >= 1) {
        if (lane == 2) lowbit_avx512_fixed(x, wp, k, 1, 8, 2, tab16, acc, r, 0);
        else lowbit_avx512_fixed(x, wp, k, 1, 8, 4, tab16, acc, r, 0);
    }
}
#endif

/* x: M x K float (row stride K); wp: low-bit panels of N outputs (layout above); table: the
 * 2^bits values; scale, bias: N values or NULL; y: M x N float. */
EC_EXPORT int ec_lowbit_gemm(const float *x, const uint8_t *wp, const float *table, int bits,
                             int64_t m, int64_t n, int64_t k, const float *scale,
                             const float *bias, float *y, int path, int threads) {
    if (bits < 2 || bits > 4 || m < 0 || n < 0 || k < 0) return EC_BAD_ARGUMENT;
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const lowbit_tile tile_kernel = EC_PICK(path, lowbit_tile_scalar, lowbit_tile_avx2,
                                            lowbit_tile_avx512);
    const int lane = bits == 2 ? 2 : 4;
    const int64_t groups = (k + 8 / lane - 1) / (8 / lane);
    float tab16[16];
    for (int i = 0; i < 16; i++) tab16[i] = table[i % (1 << bits)];
    const int64_t panels = (n + 15) / 16;
    const int64_t blocks = (panels + LPANELS - 1) / LPANELS;
    const int64_t chunks = (m + LMAXR - 1) / LMAXR;
    /* an all-zero panel stands in for the panels past the last one */
    uint8_t *zero = calloc((size_t)(groups > 0 ? groups : 1) * 16, 1);
    if (zero == NULL) return EC_OUT_OF_MEMORY;
    /* tile = (block of panels, chunk of rows), the panel block outer so that its weights stay
     * in cache while the row chunks pass */
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) \
    if (m * n * k > 32768)
    for (int64_t tile = 0; tile < blocks * chunks; tile++) {
        const int64_t p0 = (tile / chunks) * LPANELS, row0 = (tile % chunks) * LMAXR;
        const int rows = (int)(m - row0 < LMAXR ? m - row0 : LMAXR);
        const float *xr[LMAXR];
        for (int r = 0; r < LMAXR; r++) xr[r] = x + (row0 + (r < rows ? r : 0)) * k;
        const uint8_t *wq[LPANELS];
        for (int q = 0; q < LPANELS; q++)
            wq[q] = p0 + q < panels ? wp + (p0 + q) * groups * 16 : zero;
        float acc[LMAXR][LPANELS * 16];
        tile_kernel(xr, wq, k, rows, lane, tab16, acc);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < LPANELS * 16 && p0 * 16 + j < n; j++) {
                const int64_t col = p0 * 16 + j;
                float v = acc[r][j];
                if (scale) v = v * scale[col];
                if (bias) v = v + bias[col];
                y[(row0 + r) * n + col] = v;
            }
    }
    free(zero);
    return EC_OK;
}
