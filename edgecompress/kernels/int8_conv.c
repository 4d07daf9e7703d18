/*
 * Integer convolution of a uniform n-bit layer with quantized inputs (b <= 8 bits for weights
 * and inputs; edgecompress.deploy.uniform's PackedUniformConv2d): with the input step t, the
 * codes of the input, as the layer's quantizer computes them,
 *
 *     q_x = clamp(round(x / t), q_min, q_max)       (round half to even; a NaN gives q_min)
 *
 * then the exact integer sums over the window (k in (ky, kx, c) order; any order: int32)
 *
 *     acc[m, o] = sum_k q_w[o, k] q_x[m, k]
 *
 * and y[m, o] = (float)acc[m, o] * s[o] + bias[o] (s[o]: the weight step of output o times t,
 * rounded to float32 by the caller; the product and the sum each rounded to float32, no fused
 * multiply-add). Every path computes the same integers and the same two float operations, so
 * every path gives the same bits; the float form conv(q_x t, q_w s_w) + bias rounds elsewhere
 * (equal to it to float rounding).
 *
 * The input (n, c, h, w), channels-last or contiguous, is first quantized into a zero-code
 * bordered channels-last byte image, u = q_x - q_off (q_off = q_min for signed codes, so
 * u in 0..255; 0 for unsigned ones), the border holding code 0 (u = -q_off); then
 * acc = sum_k q_w u + q_off sum_k q_w (wsum[o], from the caller). A window is read in place
 * (implicit GEMM) as runs of contiguous bytes: kh runs of kw c bytes (one run of c bytes per
 * tap when dilated along the width), each taken 4 bytes at a time, so a run of L bytes reads
 * ceil(L / 4) groups: the up to 3 bytes past its end belong to the next pixel (or to the
 * image's slack) and meet weights of 0.
 *
 * Weights ("int8 panels", int8 (ceil(N / 16), runs x ceil(L / 4), 16, 4)): for panel p of 16
 * outputs, group g and output j of the panel, the codes of output 16 p + j at the 4 positions of
 * group g (run g / ceil(L / 4), positions 4 (g mod ceil(L / 4)) .. + 3 of the run; zero past the
 * run's L and past N): one 64-byte vector per (panel, group), as AVX-512 VNNI's vpdpbusd (u8 x
 * s8, four products per 32-bit lane, no saturation) takes it; AVX2 widens it to 16-bit pairs
 * for vpmaddwd.
 */
#include "kernels.h"
#include "im2col.h"

#define I8_ROWS 48      /* rows (output pixels) per block of a thread */
#define I8_MAX_K 65536  /* window size bound: |acc| <= K 255 128 < 2^31 */
#define I8_SLACK 64     /* bytes after the image: a run's last group may read past its end */

/* What a tile needs: the window runs (offsets from a window's first byte, groups per run),
 * the panels, and the epilogue. */
typedef struct {
    const int64_t *off;
    int64_t runs, run_groups, groups;  /* groups = runs x run_groups */
    const int8_t *wp;
    int64_t np, n_out;
    const int32_t *corr;  /* q_off wsum[o], n_out padded to 16 np */
    const float *s, *bias;  /* padded to 16 np (bias: zeros when absent) */
    int has_bias;
} i8_job;

/* y rows (n_out floats each) of the nrows windows starting at base[r] */
typedef void (*i8_tile_fn)(const uint8_t *const *base, int nrows, const i8_job *j, float *y);

static void i8_tile_scalar(const uint8_t *const *base, int nrows, const i8_job *j, float *y) {
    for (int r = 0; r < nrows; r++)
        for (int64_t o = 0; o < j->n_out; o++) {
            const int8_t *w = j->wp + (o / 16) * j->groups * 64 + (o % 16) * 4;
            int32_t acc = 0;
            for (int64_t run = 0; run < j->runs; run++) {
                const uint8_t *x = base[r] + j->off[run];
                for (int64_t g = 0; g < j->run_groups; g++, w += 64)
                    for (int i = 0; i < 4; i++) acc += (int32_t)x[4 * g + i] * w[i];
            }
            const float v = (float)(acc + j->corr[o]) * j->s[o];
            y[r * j->n_out + o] = j->has_bias ? v + j->bias[o] : v;
        }
}

#ifdef EC_X86
/* AVX2: a panel group's 64 bytes as four vectors of 16-bit codes, outputs 4 v .. 4 v + 3 of the
 * panel with their 4 positions each, so each 32-bit lane of vpmaddwd holds the sum of two
 * products (positions 0, 1 or 2, 3 of one output); R (<= 3) rows x 1 panel, 12 accumulators. */
__attribute__((target("avx2"), always_inline))
static inline void i8_avx2_rows(const uint8_t *const *base, const int R, const i8_job *j,
                                int64_t p, float *y) {
    __m256i s[3][4];
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) s[r][v] = _mm256_setzero_si256();
    const int8_t *w = j->wp + p * j->groups * 64;
    for (int64_t run = 0; run < j->runs; run++) {
        const int64_t off = j->off[run];
        for (int64_t g = 0; g < j->run_groups; g++, w += 64) {
            __m256i wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++)
                wv[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16 * v)));
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) {
                int32_t four;
                memcpy(&four, base[r] + off + 4 * g, 4);
                const __m256i x =
                    _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(four)));
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++)
                    s[r][v] = _mm256_add_epi32(s[r][v], _mm256_madd_epi16(wv[v], x));
            }
        }
    }
    /* lanes (2 t, 2 t + 1) of s[r][v] -> output 4 v + t: pairs added by hadd, in order */
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const int64_t o0 = 16 * p, valid = j->n_out - o0 < 16 ? j->n_out - o0 : 16;
    const __m256 s0 = _mm256_loadu_ps(j->s + o0), s1 = _mm256_loadu_ps(j->s + o0 + 8);
    const __m256 b0 = _mm256_loadu_ps(j->bias + o0), b1 = _mm256_loadu_ps(j->bias + o0 + 8);
    const __m256i c0 = _mm256_loadu_si256((const __m256i *)(j->corr + o0));
    const __m256i c1 = _mm256_loadu_si256((const __m256i *)(j->corr + o0 + 8));
#pragma GCC unroll 3
    for (int r = 0; r < R; r++) {
        const __m256i a0 = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s[r][0], s[r][1]), order);
        const __m256i a1 = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s[r][2], s[r][3]), order);
        __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a0, c0)), s0);
        __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a1, c1)), s1);
        if (j->has_bias) {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
        }
        float *out = y + r * j->n_out + o0;
        if (valid == 16) {
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out + 8, v1);
        } else {
            float lanes[16];
            _mm256_storeu_ps(lanes, v0);
            _mm256_storeu_ps(lanes + 8, v1);
            memcpy(out, lanes, (size_t)valid * sizeof(float));
        }
    }
}

__attribute__((target("avx2")))
static void i8_tile_avx2(const uint8_t *const *base, int nrows, const i8_job *j, float *y) {
    for (int64_t p = 0; p < j->np; p++) {
        int r = 0;
        for (; r + 3 <= nrows; r += 3) i8_avx2_rows(base + r, 3, j, p, y + r * j->n_out);
        for (; r < nrows; r++) i8_avx2_rows(base + r, 1, j, p, y + r * j->n_out);
    }
}

/* AVX-512 VNNI: R (<= 6) rows x P (<= 4) panels of accumulators, one vpdpbusd per (row, panel,
 * group) */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void i8_vnni_rows(const uint8_t *const *base, const int R, const i8_job *j,
                                int64_t p, const int P, float *y) {
    __m512i s[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int q = 0; q < P; q++) s[r][q] = _mm512_setzero_si512();
    const int64_t pstride = j->groups * 64;
    const int8_t *w = j->wp + p * pstride;
    for (int64_t run = 0; run < j->runs; run++) {
        const int64_t off = j->off[run];
        for (int64_t g = 0; g < j->run_groups; g++, w += 64) {
            __m512i wv[4];
#pragma GCC unroll 4
            for (int q = 0; q < P; q++) wv[q] = _mm512_loadu_si512(w + q * pstride);
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) {
                int32_t four;
                memcpy(&four, base[r] + off + 4 * g, 4);
                const __m512i x = _mm512_set1_epi32(four);
#pragma GCC unroll 4
                for (int q = 0; q < P; q++) s[r][q] = _mm512_dpbusd_epi32(s[r][q], x, wv[q]);
            }
        }
    }
#pragma GCC unroll 4
    for (int q = 0; q < P; q++) {
        const int64_t o0 = 16 * (p + q), valid = j->n_out - o0 < 16 ? j->n_out - o0 : 16;
        const __mmask16 keep = (__mmask16)((1u << valid) - 1u);
        const __m512 sv = _mm512_loadu_ps(j->s + o0), bv = _mm512_loadu_ps(j->bias + o0);
        const __m512i cv = _mm512_loadu_si512(j->corr + o0);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s[r][q], cv)), sv);
            if (j->has_bias) v = _mm512_add_ps(v, bv);
            _mm512_mask_storeu_ps(y + r * j->n_out + o0, keep, v);
        }
    }
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void i8_tile_vnni(const uint8_t *const *base, int nrows, const i8_job *j, float *y) {
    for (int64_t p = 0; p < j->np;) {
        const int64_t left = j->np - p;
        const int P = left >= 4 ? 4 : left >= 2 ? 2 : 1;
        int r = 0;
        if (P == 4) {
            for (; r + 6 <= nrows; r += 6) i8_vnni_rows(base + r, 6, j, p, 4, y + r * j->n_out);
            for (; r < nrows; r++) i8_vnni_rows(base + r, 1, j, p, 4, y + r * j->n_out);
        } else if (P == 2) {
            for (; r + 6 <= nrows; r += 6) i8_vnni_rows(base + r, 6, j, p, 2, y + r * j->n_out);
            for (; r < nrows; r++) i8_vnni_rows(base + r, 1, j, p, 2, y + r * j->n_out);
        } else {
            for (; r + 6 <= nrows; r += 6) i8_vnni_rows(base + r, 6, j, p, 1, y + r * j->n_out);
            for (; r < nrows; r++) i8_vnni_rows(base + r, 1, j, p, 1, y + r * j->n_out);
        }
        p += P;
    }
}
#endif

/* u of one input value: its code (as the quantizer rounds and clamps) minus q_off. Clamping
 * to the integer bounds before rounding gives clamp(round(v)) (rounding is monotone and keeps
 * integers), and a value within 2^22 of 0 rounds half to even exactly by adding and taking
 * away 1.5 * 2^23 (float32, round to nearest); a NaN gives q_min. */
static inline uint8_t i8_code(float x, float step, int q_min, int q_max, int q_off) {
    float v = x / step;
    v = v >= (float)q_min ? v : (float)q_min;
    v = v <= (float)q_max ? v : (float)q_max;
    v = (v + 12582912.0f) - 12582912.0f;
    return (uint8_t)((int)v - q_off);
}

/* dst[i] = u of src[i], i < n, as i8_code */
typedef void (*i8_quantize_fn)(const float *src, int64_t n, float step, int q_min, int q_max,
                               int q_off, uint8_t *dst);

static void i8_quantize_scalar(const float *src, int64_t n, float step, int q_min, int q_max,
                               int q_off, uint8_t *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = i8_code(src[i], step, q_min, q_max, q_off);
}

#ifdef EC_X86
/* i8_code 8 values at a time: the same division, max (a NaN takes the bound: maxps returns its
 * second operand then), min, rounding constant and exact conversions (also on the AVX-512
 * path: the quantization is a small part of the time) */
__attribute__((target("avx2")))
static void i8_quantize_avx2(const float *src, int64_t n, float step, int q_min, int q_max,
                             int q_off, uint8_t *dst) {
    const __m256 st = _mm256_set1_ps(step), lo = _mm256_set1_ps((float)q_min);
    const __m256 hi = _mm256_set1_ps((float)q_max), magic = _mm256_set1_ps(12582912.0f);
    const __m256i off = _mm256_set1_epi32(q_off);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(src + i), st);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
        const __m256i q = _mm256_sub_epi32(_mm256_cvttps_epi32(v), off);
        const __m128i w16 =
            _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(dst + i), _mm_packus_epi16(w16, w16));
    }
    for (; i < n; i++) dst[i] = i8_code(src[i], step, q_min, q_max, q_off);
}

#endif

/* 1 where the AVX-512 path multiplies with VNNI (vpdpbusd), else 0: the AVX2 and scalar
 * paths give the same bits, slower than a float convolution on the same CPU. */
EC_EXPORT int ec_int8_conv_vnni(void) {
#ifdef EC_X86
    return ec_cpu_path() == EC_PATH_AVX512 && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/*
 * x: float32 (n, c, h, w), channels-last (x_cl) or contiguous; geometry: the 12 values of
 * conv_window (n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw); step, q_min, q_max: the input
 * quantizer (q_min <= 0 <= q_max, q_max - q_min <= 255); wp: int8 panels of the weight codes
 * (layout above); wsum: per output, the sum of its codes; s, bias (or NULL): the epilogue;
 * y: (n, oh, ow, n_out) float32 (the output channels-last).
 */
EC_EXPORT int ec_int8_conv(const float *x, int x_cl, const int64_t *geometry, float step,
                           int q_min, int q_max, const int8_t *wp, const int32_t *wsum,
                           int64_t n_out, const float *s, const float *bias, float *y,
                           int path, int threads) {
    conv_window g;
    memcpy(&g, geometry, sizeof g);
    if (g.n < 0 || g.c < 1 || g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 ||
        g.pw < 0 || g.dh < 1 || g.dw < 1 || conv_out_h(&g) < 1 || conv_out_w(&g) < 1 ||
        n_out < 1 || q_min > 0 || q_max < 0 || q_max - q_min > 255 || !(step > 0.0f) ||
        g.kh * g.kw * g.c > I8_MAX_K)
        return EC_BAD_ARGUMENT;
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    i8_tile_fn tile = i8_tile_scalar;
#ifdef EC_X86
    if (path == EC_PATH_AVX512 && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512bw"))
        tile = i8_tile_vnni;
    else if (path != EC_PATH_SCALAR)
        tile = i8_tile_avx2;
#endif
    const i8_quantize_fn quantize =
        EC_PICK(path, i8_quantize_scalar, i8_quantize_avx2, i8_quantize_avx2);
    const int q_off = q_min;  /* 0 for unsigned codes */
    const int64_t hp = g.h + 2 * g.ph, wpx = g.w + 2 * g.pw;
    const int64_t m = g.n * conv_out_h(&g) * conv_out_w(&g);
    const int dilated = g.dw > 1;
    const int64_t runs = dilated ? g.kh * g.kw : g.kh;
    const int64_t run_len = dilated ? g.c : g.kw * g.c, run_groups = (run_len + 3) / 4;
    const int64_t np = (n_out + 15) / 16, padded = 16 * np;
    const int nthreads = ec_threads(threads);
    const size_t img_bytes = (size_t)(g.n * hp * wpx * g.c);
    uint8_t *img = malloc(img_bytes + I8_SLACK);
    int64_t *off = malloc((size_t)runs * sizeof(int64_t));
    int32_t *corr = malloc((size_t)padded * sizeof(int32_t));
    float *sp = malloc((size_t)(2 * padded) * sizeof(float));
    if (img == NULL || off == NULL || corr == NULL || sp == NULL) {
        free(img);
        free(off);
        free(corr);
        free(sp);
        return EC_OUT_OF_MEMORY;
    }
    memset(img + img_bytes, 0, I8_SLACK);
    for (int64_t i = 0; i < g.kh; i++)
        for (int64_t t = 0; t < (dilated ? g.kw : 1); t++)
            off[i * (dilated ? g.kw : 1) + t] = ((i * g.dh) * wpx + t * g.dw) * g.c;
    for (int64_t o = 0; o < padded; o++) {
        corr[o] = o < n_out ? q_off * wsum[o] : 0;
        sp[o] = o < n_out ? s[o] : 0.0f;
        sp[padded + o] = o < n_out && bias ? bias[o] : 0.0f;
    }
    const i8_job job = {off, runs, run_groups, runs * run_groups, wp, np, n_out, corr, sp,
                        sp + padded, bias != NULL};
    const uint8_t zero_code = (uint8_t)(0 - q_off);
    /* the bordered byte image, a row (image, y) at a time */
#pragma omp parallel for schedule(static) num_threads(nthreads) if (g.n * g.h * g.w * g.c > 65536)
    for (int64_t row = 0; row < g.n * hp; row++) {
        const int64_t b = row / hp, yy = row % hp - g.ph;
        uint8_t *dst = img + row * wpx * g.c;
        if (yy < 0 || yy >= g.h) {
            memset(dst, zero_code, (size_t)(wpx * g.c));
            continue;
        }
        memset(dst, zero_code, (size_t)(g.pw * g.c));
        memset(dst + (g.pw + g.w) * g.c, zero_code, (size_t)(g.pw * g.c));
        dst += g.pw * g.c;
        if (x_cl) {
            quantize(x + (b * g.h + yy) * g.w * g.c, g.w * g.c, step, q_min, q_max, q_off, dst);
        } else {  /* a channel's row at a time, then interleaved */
            uint8_t one[256];
            for (int64_t ch = 0; ch < g.c; ch++)
                for (int64_t x0 = 0; x0 < g.w; x0 += 256) {
                    const int64_t len = g.w - x0 < 256 ? g.w - x0 : 256;
                    quantize(x + ((b * g.c + ch) * g.h + yy) * g.w + x0, len, step, q_min,
                             q_max, q_off, one);
                    for (int64_t xx = 0; xx < len; xx++) dst[(x0 + xx) * g.c + ch] = one[xx];
                }
        }
    }
    const int64_t blocks = (m + I8_ROWS - 1) / I8_ROWS;
#pragma omp parallel for schedule(static) num_threads(nthreads) \
    if (m * n_out * g.kh * g.kw * g.c > 32768)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t r0 = blk * I8_ROWS;
        const int nrows = (int)(m - r0 < I8_ROWS ? m - r0 : I8_ROWS);
        const uint8_t *base[I8_ROWS];
        conv_pixel px = conv_pixel_of(&g, r0);
        for (int r = 0; r < nrows; r++, conv_pixel_next(&g, &px))
            base[r] = img + ((px.img * hp + px.y * g.sh) * wpx + px.x * g.sw) * g.c;
        tile(base, nrows, &job, y + r0 * n_out);
    }
    free(img);
    free(off);
    free(corr);
    free(sp);
    return EC_OK;
}
