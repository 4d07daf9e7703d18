/*
 * Binary (1-bit) kernels of edgecompress: sign packing and XNOR/XOR-popcount GEMM.
 *
 * Encoding: bit 1 = -1, bit 0 = +1; 64 values per uint64 word, value j of a row in bit (j % 64)
 * of word (j / 64); rows are padded to a whole number of words with 0 bits.
 * For +-1 vectors a, w of length K:  a . w = K - 2 popcount(a XOR w).
 * With a per-row validity mask (bits of positions that exist, e.g. not convolution padding):
 *     a . w = popcount(mask) - 2 popcount((a XOR w) AND mask).
 *
 * Three implementations of the GEMM, chosen at run time: AVX-512 with VPOPCNTQ, AVX2 (nibble
 * lookup popcount), and portable scalar code; OpenMP splits rows across threads. Every path gives
 * bit-identical int32 results (integer arithmetic). Loaded from Python with ctypes.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EC_X86 1
#endif

#define EC_EXPORT __attribute__((visibility("default")))

/* ---- packing ------------------------------------------------------------------------------ */

static int best_path(void);

/* One row of k floats -> ceil(k / 64) words. The vector versions compare 8 or 16 values with
 * "x < 0" at once (ordered compare: -0.0 and NaN give 0, like the scalar loop). */
static void pack_row_scalar(const float *src, int64_t k, uint64_t *dst) {
    const int64_t kw = (k + 63) / 64;
    for (int64_t w = 0; w < kw; w++) {
        uint64_t word = 0;
        const int64_t base = w * 64;
        const int64_t n = (k - base) < 64 ? (k - base) : 64;
        for (int64_t j = 0; j < n; j++) word |= (uint64_t)(src[base + j] < 0.0f) << j;
        dst[w] = word;
    }
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void pack_row_avx2(const float *src, int64_t k, uint64_t *dst) {
    const int64_t full = k / 64;
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t w = 0; w < full; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            const __m256 v = _mm256_loadu_ps(src + w * 64 + 8 * q);
            word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ))
                    << (8 * q);
        }
        dst[w] = word;
    }
    if (full * 64 < k) pack_row_scalar(src + full * 64, k - full * 64, dst + full);
}

__attribute__((target("avx512f")))
static void pack_row_avx512(const float *src, int64_t k, uint64_t *dst) {
    const int64_t kw = (k + 63) / 64;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t w = 0; w < kw; w++) {
        uint64_t word = 0;
        for (int q = 0; q < 4; q++) {
            const int64_t at = w * 64 + 16 * q;
            const int64_t left = k - at;
            if (left <= 0) break;
            const __mmask16 keep = (__mmask16)(left >= 16 ? 0xffff : ((1u << left) - 1));
            const __m512 v = _mm512_maskz_loadu_ps(keep, src + at);
            word |= (uint64_t)_mm512_mask_cmp_ps_mask(keep, v, zero, _CMP_LT_OQ) << (16 * q);
        }
        dst[w] = word;
    }
}
#endif

/* path: 0 scalar, 1 AVX2, 2 AVX-512, < 0 the best this CPU has; returns -1 if unsupported. */
EC_EXPORT int ec_pack_signs(const float *x, int64_t rows, int64_t k, uint64_t *out, int path) {
    const int64_t kw = (k + 63) / 64;
    if (path < 0) path = best_path();
    if (path > best_path()) return -1;
    void (*pack_row)(const float *, int64_t, uint64_t *) = pack_row_scalar;
#ifdef EC_X86
    if (path == 2) pack_row = pack_row_avx512;
    else if (path == 1) pack_row = pack_row_avx2;
#endif
#pragma omp parallel for schedule(static) if (rows * k > 65536)
    for (int64_t r = 0; r < rows; r++) pack_row(x + r * k, k, out + r * kw);
    return 0;
}

/* ---- GEMM ----------------------------------------------------------------------------------
 * C[m, n] = valid(m) - 2 popcount((A[m] ^ B[n]) & mask[m]), valid(m) = popcount(mask[m]) or k.
 *
 * B is given in panels of PANEL = 16 columns: panel p holds, for every word w, the 16 words
 * B[16 p + 0 .. 15][w] side by side (missing columns are 0). The kernels keep R = 4 rows x 16
 * columns of popcount sums in registers and walk the words once: for each word, the A word of
 * each row is broadcast and XORed (XOR-AND with the mask) with the 16 B words, so no horizontal
 * reduction is ever needed. Threads take blocks of rows; B is walked in cache-sized blocks of
 * panels (see gemm_block_bytes), each reused by every row block from L2.
 */
#define PANEL 16
#define R 4

typedef void (*tile_kernel)(const uint64_t *const *a, const uint64_t *const *m,
                            const uint64_t *bp, int64_t kw, int64_t acc[R][PANEL]);

/* The store of one R x PANEL tile: C = valid - 2 popcount, as int32 or through the affine
 * epilogue as float32 (see ec_binary_gemm). Rows >= rows_left and columns >= cols are skipped. */
typedef struct {
    int32_t *c;
    float *cf;
    uint64_t *cs;              /* packed signs of the affine value: bit 1 where it is < 0 */
    const float *scale, *bias;
    const float *res;          /* residual added after the affine step (row stride ldc) */
    int clamp;                 /* then clamp to [lo, hi] (a fused hardtanh / ReLU) */
    float lo, hi;
    int64_t ldc, ldw;          /* row strides of c / cf (values) and of cs (words) */
} epilogue;

/* OR 16 sign bits of columns col..col+15 into row i of cs (the word is reset by the panel that
 * starts it, so cs needs no clearing; panels of a row are stored in order by one thread). */
static inline void put_signs(const epilogue *e, int64_t i, int64_t col, uint64_t bits) {
    uint64_t *word = e->cs + i * e->ldw + col / 64;
    const int shift = (int)(col % 64);
    if (shift == 0) *word = bits;
    else *word |= bits << shift;
}

typedef void (*store_kernel)(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                             int64_t row, int64_t col, int rows_left, int cols);

static void store_scalar(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                         int64_t row, int64_t col, int rows_left, int cols) {
    for (int r = 0; r < R && r < rows_left; r++) {
        if (e->c) {
            int32_t *ci = e->c + (row + r) * e->ldc + col;
            for (int j = 0; j < cols; j++) ci[j] = valid[r] - 2 * (int32_t)acc[r][j];
        } else {
            float *fi = e->cf ? e->cf + (row + r) * e->ldc + col : NULL;
            uint64_t bits = 0;
            for (int j = 0; j < cols; j++) {
                float v = (float)(valid[r] - 2 * (int32_t)acc[r][j]);
                if (e->scale) v = v * e->scale[col + j];
                if (e->bias) v = v + e->bias[col + j];
                if (e->res) v = v + e->res[(row + r) * e->ldc + col + j];
                if (e->clamp) v = v < e->lo ? e->lo : (v > e->hi ? e->hi : v);
                if (fi) fi[j] = v;
                bits |= (uint64_t)(v < 0.0f) << j;
            }
            if (e->cs) put_signs(e, row + r, col, bits);
        }
    }
}

static void tile_scalar(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                        int64_t kw, int64_t acc[R][PANEL]) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < PANEL; j++) acc[r][j] = 0;
    for (int64_t w = 0; w < kw; w++) {
        const uint64_t *b = bp + w * PANEL;
        for (int r = 0; r < R; r++) {
            const uint64_t aw = a[r][w], mw = m ? m[r][w] : ~(uint64_t)0;
            for (int j = 0; j < PANEL; j++) acc[r][j] += __builtin_popcountll((aw ^ b[j]) & mw);
        }
    }
}

#ifdef EC_X86
__attribute__((target("avx2")))
static inline __m256i popcnt_bytes256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

/* AVX2: per-byte counts are summed into 64-bit lanes with VPSADBW for each word. */
__attribute__((target("avx2")))
static void tile_avx2(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                      int64_t kw, int64_t acc[R][PANEL]) {
    __m256i s[R][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < 4; q++) s[r][q] = _mm256_setzero_si256();
    const __m256i zero = _mm256_setzero_si256();
    for (int64_t w = 0; w < kw; w++) {
        const uint64_t *b = bp + w * PANEL;
        __m256i bv[4];
        for (int q = 0; q < 4; q++) bv[q] = _mm256_loadu_si256((const __m256i *)(b + 4 * q));
        for (int r = 0; r < R; r++) {
            const __m256i av = _mm256_set1_epi64x((long long)a[r][w]);
            const __m256i mv = _mm256_set1_epi64x(m ? (long long)m[r][w] : -1LL);
            for (int q = 0; q < 4; q++) {
                __m256i x = _mm256_and_si256(_mm256_xor_si256(av, bv[q]), mv);
                s[r][q] = _mm256_add_epi64(s[r][q], _mm256_sad_epu8(popcnt_bytes256(x), zero));
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < 4; q++) _mm256_storeu_si256((__m256i *)&acc[r][4 * q], s[r][q]);
}

/* AVX-512: VPOPCNTQ; VPTERNLOGQ computes (a ^ b) & mask in one instruction. */
__attribute__((target("avx512f,avx512vpopcntdq")))
static void tile_avx512(const uint64_t *const *a, const uint64_t *const *m, const uint64_t *bp,
                        int64_t kw, int64_t acc[R][PANEL]) {
    __m512i s00 = _mm512_setzero_si512(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00,
            s30 = s00, s31 = s00;
    const uint64_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    if (m) {
        const uint64_t *m0 = m[0], *m1 = m[1], *m2 = m[2], *m3 = m[3];
        for (int64_t w = 0; w < kw; w++) {
            const __m512i b0 = _mm512_loadu_si512(bp + w * PANEL);
            const __m512i b1 = _mm512_loadu_si512(bp + w * PANEL + 8);
#define EC_ROW(ar, mr, sa, sb) { \
            const __m512i av = _mm512_set1_epi64((long long)ar[w]); \
            const __m512i mv = _mm512_set1_epi64((long long)mr[w]); \
            sa = _mm512_add_epi64(sa, _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(av, b0, mv, 0x28))); \
            sb = _mm512_add_epi64(sb, _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(av, b1, mv, 0x28))); }
            EC_ROW(a0, m0, s00, s01) EC_ROW(a1, m1, s10, s11) EC_ROW(a2, m2, s20, s21)
            EC_ROW(a3, m3, s30, s31)
#undef EC_ROW
        }
    } else {
        for (int64_t w = 0; w < kw; w++) {
            const __m512i b0 = _mm512_loadu_si512(bp + w * PANEL);
            const __m512i b1 = _mm512_loadu_si512(bp + w * PANEL + 8);
#define EC_ROW(ar, sa, sb) { \
            const __m512i av = _mm512_set1_epi64((long long)ar[w]); \
            sa = _mm512_add_epi64(sa, _mm512_popcnt_epi64(_mm512_xor_si512(av, b0))); \
            sb = _mm512_add_epi64(sb, _mm512_popcnt_epi64(_mm512_xor_si512(av, b1))); }
            EC_ROW(a0, s00, s01) EC_ROW(a1, s10, s11) EC_ROW(a2, s20, s21) EC_ROW(a3, s30, s31)
#undef EC_ROW
        }
    }
    _mm512_storeu_si512(&acc[0][0], s00); _mm512_storeu_si512(&acc[0][8], s01);
    _mm512_storeu_si512(&acc[1][0], s10); _mm512_storeu_si512(&acc[1][8], s11);
    _mm512_storeu_si512(&acc[2][0], s20); _mm512_storeu_si512(&acc[2][8], s21);
    _mm512_storeu_si512(&acc[3][0], s30); _mm512_storeu_si512(&acc[3][8], s31);
}

/* AVX-512 store: the same arithmetic on 16 columns at once (int32 -> float conversion rounds to
 * nearest like the scalar cast; multiply and add are separate, so results are bit-identical). */
__attribute__((target("avx512f")))
static void store_avx512(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                         int64_t row, int64_t col, int rows_left, int cols) {
    const __mmask16 keep = (__mmask16)((cols >= 16) ? 0xffff : ((1u << cols) - 1));
    __m512 scale = _mm512_set1_ps(1.0f), bias = _mm512_setzero_ps();
    if (e->scale) scale = _mm512_maskz_loadu_ps(keep, e->scale + col);
    if (e->bias) bias = _mm512_maskz_loadu_ps(keep, e->bias + col);
    for (int r = 0; r < R && r < rows_left; r++) {
        const __m256i lo = _mm512_cvtepi64_epi32(_mm512_loadu_si512(&acc[r][0]));
        const __m256i hi = _mm512_cvtepi64_epi32(_mm512_loadu_si512(&acc[r][8]));
        const __m512i pop = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        const __m512i v = _mm512_sub_epi32(_mm512_set1_epi32(valid[r]), _mm512_add_epi32(pop, pop));
        if (e->c) {
            _mm512_mask_storeu_epi32(e->c + (row + r) * e->ldc + col, keep, v);
        } else {
            __m512 f = _mm512_cvtepi32_ps(v);
            if (e->scale) f = _mm512_mul_ps(f, scale);
            if (e->bias) f = _mm512_add_ps(f, bias);
            if (e->res)
                f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(keep, e->res + (row + r) * e->ldc + col));
            if (e->clamp)
                f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(e->lo)), _mm512_set1_ps(e->hi));
            if (e->cf) _mm512_mask_storeu_ps(e->cf + (row + r) * e->ldc + col, keep, f);
            if (e->cs) put_signs(e, row + r, col, (uint64_t)(_mm512_cmp_ps_mask(
                                     f, _mm512_setzero_ps(), _CMP_LT_OQ) & keep));
        }
    }
}
#endif

/* Which path: 0 = scalar, 1 = AVX2, 2 = AVX-512 VPOPCNTDQ (the best this CPU supports). */
EC_EXPORT int ec_best_path(void) { return best_path(); }

static int best_path(void) {
#ifdef EC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
#endif
    return 0;
}

static store_kernel store_for(int path) {
#ifdef EC_X86
    if (path == 2) return store_avx512;
#endif
    (void)path;
    return store_scalar;
}

static tile_kernel kernel_for(int path) {
#ifdef EC_X86
    if (path == 2) return tile_avx512;
    if (path == 1) return tile_avx2;
#endif
    (void)path;
    return tile_scalar;
}

/* Rearrange row-packed B (n x kw) into panels (ceil(n / 16) x kw x 16), zero-filled. */
EC_EXPORT void ec_pack_panels(const uint64_t *b, int64_t n, int64_t kw, uint64_t *out) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t w = 0; w < kw; w++)
            for (int64_t j = 0; j < PANEL; j++) {
                const int64_t col = p * PANEL + j;
                out[(p * kw + w) * PANEL + j] = col < n ? b[col * kw + w] : 0;
            }
}

/*
 * A: M x kw packed rows, mask: M x kw or NULL, BP: panels from ec_pack_panels (n columns),
 * k: values per row (used when mask is NULL). Output, one of:
 *   c  (cf == NULL): M x N int32 dot products;
 *   cf (c == NULL):  M x N float32 affine epilogue  cf[i, j] = (float)C[i, j] * scale[j] + bias[j]
 *                    then optionally + res[i, j] (M x N float) and a clamp to [lo, hi]
 *                    (a residual addition and hardtanh / ReLU fused into the store);
 *   cs (c == NULL):  and/or the signs of that value packed like ec_pack_signs
 *                    (M rows of ceil(N / 64) words, bit 1 where the value is < 0) - what the
 *                    next binary layer needs, without writing or re-reading the floats.
 *                    (scale / bias may be NULL: 1 / 0), a multiply then an add, each rounded
 *                    (no fused multiply-add: the build uses ISO C, where contraction is off), so
 *                    it equals torch's  C.float() * scale + bias  bit for bit.
 * path < 0 picks the best.
 */
/* Cache blocking: the panels are walked in blocks of at most this many bytes (default 256 KiB,
 * a share of L2 on current x86 cores), each block against every row block before the next, so a
 * block is read from L2 while the rows stream past it; the row blocks of a thread stay in L1. */
static int64_t gemm_block_bytes = 256 * 1024;

EC_EXPORT void ec_set_gemm_block_bytes(int64_t bytes) { gemm_block_bytes = bytes > 0 ? bytes : 1; }

EC_EXPORT int ec_binary_gemm(const uint64_t *a, const uint64_t *mask, const uint64_t *bp,
                             int64_t m, int64_t n, int64_t kw, int64_t k, int32_t *c,
                             float *cf, uint64_t *cs, const float *scale, const float *bias,
                             const float *res, int clamp, float lo, float hi,
                             int path, int threads) {
    if (path < 0) path = ec_best_path();
    if (path > ec_best_path()) return -1;
    const tile_kernel kernel = kernel_for(path);
    const store_kernel store = store_for(path);
    const epilogue out = {c, cf, cs, scale, bias, res, clamp, lo, hi, n, (n + 63) / 64};
    const int64_t panels = (n + PANEL - 1) / PANEL;
    const int64_t row_blocks = (m + R - 1) / R;
    const int64_t panel_bytes = (kw > 0 ? kw : 1) * PANEL * 8;
    const int64_t block = gemm_block_bytes / panel_bytes > 0 ? gemm_block_bytes / panel_bytes : 1;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads) if (m * n * kw > 32768)
#endif
    {
        /* a dummy all-zero row stands in for rows past the end of the last block */
        uint64_t *pad = (uint64_t *)__builtin_alloca((size_t)(kw > 0 ? kw : 1) * 8);
        memset(pad, 0, (size_t)(kw > 0 ? kw : 1) * 8);
        for (int64_t p0 = 0; p0 < panels; p0 += block) {
        const int64_t p1 = p0 + block < panels ? p0 + block : panels;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t rb = 0; rb < row_blocks; rb++) {
            const uint64_t *ar[R], *mr[R];
            int32_t valid[R];
            for (int r = 0; r < R; r++) {
                const int64_t i = rb * R + r;
                ar[r] = i < m ? a + i * kw : pad;
                mr[r] = mask ? (i < m ? mask + i * kw : pad) : NULL;
                valid[r] = (int32_t)k;
                if (mask && i < m) {
                    int64_t v = 0;
                    for (int64_t w = 0; w < kw; w++) v += __builtin_popcountll(mr[r][w]);
                    valid[r] = (int32_t)v;
                }
            }
            int64_t acc[R][PANEL];
            for (int64_t p = p0; p < p1; p++) {
                kernel(ar, mask ? mr : NULL, bp + p * kw * PANEL, kw, acc);
                const int cols = (p + 1) * PANEL <= n ? PANEL : (int)(n - p * PANEL);
                store(&out, acc, valid, rb * R, p * PANEL, (int)(m - rb * R), cols);
            }
        }
        }
    }
    (void)threads;
    return 0;
}

/* ---- convolution operands ------------------------------------------------------------------
 * Binary convolution runs as the GEMM above on im2col rows in (kernel row, kernel column,
 * channel) order with the channels of one input pixel packed in cw = ceil(C / 64) words:
 * a row is the kh * kw groups of cw words of the pixels under the kernel. The weights are packed
 * in the same order (see pack_conv_weights in Python). Unused channel bits are 0 on both sides,
 * so they add nothing; pixels in the zero padding get 0 words and a 0 mask.
 */

/* x: (n, c, h, w) float -> out: (n, h, w, cw) words, bit 1 where x < 0. */
EC_EXPORT void ec_pack_channels(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                uint64_t *out) {
    const int64_t cw = (c + 63) / 64, hw = h * w;
#pragma omp parallel for schedule(static) if (n * c * hw > 65536)
    for (int64_t img = 0; img < n; img++) {
        uint64_t *o = out + img * hw * cw;
        memset(o, 0, (size_t)(hw * cw) * sizeof(uint64_t));
        for (int64_t ch = 0; ch < c; ch++) {
            const float *plane = x + (img * c + ch) * hw;
            const uint64_t bit = (uint64_t)1 << (ch & 63);
            const int64_t word = ch >> 6;
            for (int64_t p = 0; p < hw; p++)
                if (plane[p] < 0.0f) o[p * cw + word] |= bit;
        }
    }
}

/* packed pixels (n, h, w, cw) -> rows (n * oh * ow, kh * kw * cw) and, when mask is not NULL,
 * the validity mask of the same shape (channel bits of real pixels). An output pixel whose
 * window lies inside the image (most of them) is copied without bounds checks, one run of
 * kw * cw words per kernel row when dilation is 1 (neighbouring pixels are adjacent words), and
 * its mask row is a copy of the all-valid row. */
EC_EXPORT void ec_im2col_words(const uint64_t *px, int64_t n, int64_t c, int64_t h, int64_t w,
                               int64_t kh, int64_t kw_, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw, uint64_t *rows,
                               uint64_t *mask) {
    const int64_t cw = (c + 63) / 64;
    const int64_t oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    const int64_t ow = (w + 2 * pw - dw * (kw_ - 1) - 1) / sw + 1;
    const int64_t row_words = kh * kw_ * cw;
    const uint64_t last = (c & 63) ? (((uint64_t)1 << (c & 63)) - 1) : ~(uint64_t)0;
    /* the mask row of a window inside the image (if malloc fails: the checked path for all) */
    uint64_t *full = mask ? malloc((size_t)row_words * sizeof(uint64_t)) : NULL;
    if (full)
        for (int64_t q = 0; q < row_words; q++) full[q] = (q % cw == cw - 1) ? last : ~(uint64_t)0;
#pragma omp parallel for schedule(static) if (n * oh * ow * row_words > 8192)
    for (int64_t line = 0; line < n * oh; line++) {   /* one output row of one image */
        const int64_t img = line / oh, oy = line % oh;
        const int64_t y0 = oy * sh - ph;
        const int rows_inside = y0 >= 0 && y0 + (kh - 1) * dh < h;
        for (int64_t ox = 0; ox < ow; ox++) {
            const int64_t r = line * ow + ox;
            const int64_t x0 = ox * sw - pw;
            uint64_t *dst = rows + r * row_words;
            uint64_t *mdst = mask ? mask + r * row_words : NULL;
            if (rows_inside && x0 >= 0 && x0 + (kw_ - 1) * dw < w && (!mdst || full)) {
                for (int64_t i = 0; i < kh; i++) {
                    const uint64_t *src = px + ((img * h + y0 + i * dh) * w + x0) * cw;
                    uint64_t *d = dst + i * kw_ * cw;
                    if (dw == 1) {
                        for (int64_t q = 0; q < kw_ * cw; q++) d[q] = src[q];
                    } else {
                        for (int64_t j = 0; j < kw_; j++)
                            for (int64_t q = 0; q < cw; q++) d[j * cw + q] = src[j * dw * cw + q];
                    }
                }
                if (mdst) memcpy(mdst, full, (size_t)row_words * sizeof(uint64_t));
                continue;
            }
            for (int64_t i = 0; i < kh; i++) {
                const int64_t y = y0 + i * dh;
                const int inside_y = y >= 0 && y < h;
                for (int64_t j = 0; j < kw_; j++) {
                    const int64_t xx = x0 + j * dw;
                    const int64_t off = (i * kw_ + j) * cw;
                    if (!inside_y || xx < 0 || xx >= w) {
                        for (int64_t q = 0; q < cw; q++) dst[off + q] = 0;
                        if (mdst)
                            for (int64_t q = 0; q < cw; q++) mdst[off + q] = 0;
                    } else {
                        const uint64_t *src = px + ((img * h + y) * w + xx) * cw;
                        for (int64_t q = 0; q < cw; q++) dst[off + q] = src[q];
                        if (mdst) {
                            for (int64_t q = 0; q < cw - 1; q++) mdst[off + q] = ~(uint64_t)0;
                            mdst[off + cw - 1] = last;
                        }
                    }
                }
            }
        }
    }
    free(full);
}

/* ---- W1A32: binary weights, float activations --------------------------------------------
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
    if (path < 0) path = best_path();
    if (path > best_path()) return -1;
    w1a32_kernel kernel = w1a32_tile_scalar;
#ifdef EC_X86
    if (path == 2) kernel = w1a32_tile_avx512;
    else if (path == 1) kernel = w1a32_tile_avx2;
#endif
    const int64_t panels = (n + 15) / 16;
    const int64_t full = m / 8;  /* blocks of 8 rows; then single rows */
    const int64_t blocks2 = (panels + 1) / 2, blocks8 = (panels + 7) / 8;
    const int64_t tiles = full * blocks2 + (m - full * 8) * blocks8;
    float *totals = (float *)malloc((size_t)(m > 0 ? m : 1) * sizeof(float));
    if (totals == NULL) return -2;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads) if (m * n * k > 32768)
#endif
    {
        uint16_t *zero = (uint16_t *)__builtin_alloca((size_t)(k > 0 ? k : 1) * 2);
        memset(zero, 0, (size_t)(k > 0 ? k : 1) * 2);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t i = 0; i < m; i++) {
            float sum = 0.0f;
            for (int64_t t = 0; t < k; t++) sum += x[i * k + t];
            totals[i] = sum;
        }
        /* tile index -> (rows, panels); the panel block is the outer index so that a block of
         * weights stays in cache while the rows stream past it */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
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
    (void)threads;
    return 0;
}
