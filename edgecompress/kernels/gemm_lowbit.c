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
 * accumulators (at most 8 of the 16 ymm registers). Two decodes of a panel's 16 codes:
 * - permute (any table): vpermps on 8 codes at a time (two permutes and a blend on bit 3 for
 *   b = 4, `wide`), the vectors holding outputs 0-7 and 8-15;
 * - bytes (bfloat16-exact tables; lo / hi: byte 2 / byte 3 of each of the 16 values): pshufb of
 *   the two bytes, then unpacks, which work within 128-bit lanes: the vectors hold outputs
 *   {0-3, 8-11} and {4-7, 12-15}, put back in order at the store. */
typedef struct {
    __m256 lo, hi;      /* permute: the 16 table values */
    __m128i blo, bhi;   /* bytes: byte 2 / byte 3 of each value */
    int wide;           /* permute: b = 4 (the table does not repeat every 8 entries) */
} lowbit_avx2_table;

/* panel q's codes of group g, field i, decoded into w[0], w[1] */
__attribute__((target("avx2"), always_inline))
static inline void lowbit_avx2_decode(const uint8_t *panel, int64_t g, int shift, int BYTES,
                                      const lowbit_avx2_table *t, __m256 w[2]) {
    if (BYTES) {
        const __m128i codes = _mm_loadu_si128((const __m128i *)(panel + g * 16));
        const __m128i idx = _mm_and_si128(_mm_srli_epi16(codes, shift), _mm_set1_epi8(0x0f));
        const __m128i lo = _mm_shuffle_epi8(t->blo, idx), hi = _mm_shuffle_epi8(t->bhi, idx);
        const __m256i half = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
        w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), half));
        w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), half));
        return;
    }
#pragma GCC unroll 2
    for (int v = 0; v < 2; v++) {
        const __m128i codes = _mm_loadl_epi64((const __m128i *)(panel + g * 16 + 8 * v));
        const __m256i idx = _mm256_srli_epi32(_mm256_cvtepu8_epi32(codes), shift);
        const __m256 a = _mm256_permutevar8x32_ps(t->lo, idx);
        w[v] = !t->wide ? a : _mm256_blendv_ps(a, _mm256_permutevar8x32_ps(t->hi, idx),
                                               _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
    }
}

__attribute__((target("avx2"), always_inline))
static inline void lowbit_avx2_fixed(const float *const *x, const uint8_t *const *wp, int64_t k,
                                     const int rows, const int np, const int lane,
                                     const int BYTES, const lowbit_avx2_table *t,
                                     float acc[LMAXR][LPANELS * 16], int r0, int q0) {
    const int per = 8 / lane;
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
                __m256 w[2];
                lowbit_avx2_decode(wp[q0 + q], g, lane * i, BYTES, t, w);
#pragma GCC unroll 4
                for (int r = 0; r < rows; r++) {
                    const __m256 v = _mm256_set1_ps(x[r0 + r][g * per + i]);
                    s[r][2 * q] = _mm256_add_ps(s[r][2 * q], _mm256_mul_ps(v, w[0]));
                    s[r][2 * q + 1] = _mm256_add_ps(s[r][2 * q + 1], _mm256_mul_ps(v, w[1]));
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) {
            float *out = &acc[r0 + r][16 * (q0 + q)];
            const __m256 a = s[r][2 * q], b = s[r][2 * q + 1];
            _mm256_storeu_ps(out, BYTES ? _mm256_permute2f128_ps(a, b, 0x20) : a);
            _mm256_storeu_ps(out + 8, BYTES ? _mm256_permute2f128_ps(a, b, 0x31) : b);
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

/* rows 4 at a time x 1 panel, the rest 1 row x 4 panels (permute) or 2 (bytes: its decode
 * needs more registers) */
__attribute__((target("avx2"), always_inline))
static inline void lowbit_avx2_rows(const float *const *x, const uint8_t *const *wp, int64_t k,
                                    int rows, const int lane, const int BYTES,
                                    const lowbit_avx2_table *t,
                                    float acc[LMAXR][LPANELS * 16]) {
    const int np = BYTES ? 2 : 4;
    int r = 0;
    for (; r + 4 <= rows; r += 4)
        for (int q = 0; q < LPANELS; q++) lowbit_avx2_fixed(x, wp, k, 4, 1, lane, BYTES, t, acc, r, q);
    for (; r < rows; r++)
        for (int q = 0; q < LPANELS; q += np)
            lowbit_avx2_fixed(x, wp, k, 1, np, lane, BYTES, t, acc, r, q);
}

__attribute__((target("avx2")))
static void lowbit_tile_avx2(const float *const *x, const uint8_t *const *wp, int64_t k,
                             int rows, int lane, const float *tab16,
                             float acc[LMAXR][LPANELS * 16]) {
    lowbit_avx2_table t;
    uint8_t lo[16], hi[16];
    const int bytes = lowbit_bf16_bytes(tab16, lo, hi);
    t.lo = _mm256_loadu_ps(tab16);
    t.hi = _mm256_loadu_ps(tab16 + 8);
    t.blo = _mm_loadu_si128((const __m128i *)lo);
    t.bhi = _mm_loadu_si128((const __m128i *)hi);
    t.wide = memcmp(tab16, tab16 + 8, 8 * sizeof(float)) != 0;  /* b = 4 */
    if (bytes && lane == 2) lowbit_avx2_rows(x, wp, k, rows, 2, 1, &t, acc);
    else if (bytes) lowbit_avx2_rows(x, wp, k, rows, 4, 1, &t, acc);
    else if (lane == 2) lowbit_avx2_rows(x, wp, k, rows, 2, 0, &t, acc);
    else lowbit_avx2_rows(x, wp, k, rows, 4, 0, &t, acc);
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
