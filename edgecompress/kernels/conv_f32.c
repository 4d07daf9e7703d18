/*
 * Float32 direct 2-D convolution (NCHW, groups 1, no dilation) with a fused epilogue:
 * y = clamp(conv(x, w) + bias + residual, lo, hi), each part optional; or, with op EC_CONV_L1,
 * AdderNet's L1 "convolution" conv(x, w) = -sum over the taps of |x - w| in its place.
 *
 * Vectorized along output pixels, so its cost follows the real channel counts (9 or 36
 * channels cost 9/16 of 16 or 64; nothing is padded to a vector of channels). Per image, the
 * input is first rearranged into "shifted rows" (a partial im2col along x only, zero padding
 * written out): buf[c][kx][phase][r][ox] = xpad[c][r * sh + phase][ox * sw + kx], phase < min(sh,
 * kh), so that for every tap (c, ky, kx) the values an output pixel p = oy * ow + ox reads are
 * buf[off(c, ky, kx) + p], contiguous in p (off = ((c kw + kx) S + ky % sh) R + ky / sh) ow).
 * Output pixels are numbered across rows, so an 8x8 map fills 64 lanes. Then a register-blocked
 * product: a tile of (up to) 6 output channels x 64 pixels (AVX-512; AVX2 4 x 16, scalar any)
 * accumulates over the taps, and its store adds bias and residual and clamps.
 *
 * Summation order (the same in every path, so they agree bit for bit with each other and with
 * reference.conv2d_direct_reference): for every output value, acc = 0, then for c ascending,
 * ky ascending, kx ascending acc = acc + x * w (the product rounded to float32, then added: no
 * FMA; setup.py compiles in ISO C mode, where GCC does not contract a * b + c). Padding taps
 * add +0 products, which leaves acc unchanged (acc is never -0). EC_CONV_L1: acc = acc +
 * |x - w| in the same order (padding taps read the buffer's zeros and add |w|, as a zero-padded
 * distance must), then acc = -acc. Then y = acc + bias, y = y + residual,
 * y = min(max(y, lo), hi).
 */
#include "kernels.h"

#include <math.h>

#define CONV_MAXR 6    /* most output channels per tile */

/* the operation of a tap: op argument of ec_conv2d_f32 (index in dispatch.CONV_OPS) */
enum { EC_CONV_MUL = 0, EC_CONV_L1 = 1 };
#define CONV_SLACK 64  /* floats of zeros after an image's buffer: the last tile reads past P */

typedef struct {
    const float *src;     /* the image's shifted-row buffer + the tile's first pixel */
    const int64_t *off;   /* offset of every tap (c, ky, kx) in the buffer */
    int64_t k;            /* taps: c * kh * kw */
    const float *w;       /* weight row of the tile's first output channel; row stride k */
    const float *bias;    /* bias of the tile's first channel, or NULL */
    const float *res;     /* residual at the tile's first channel and pixel, or NULL */
    float *out;           /* output at the tile's first channel and pixel */
    int64_t plane;        /* output pixels per channel (row stride of out and res) */
    int rows, npix;       /* output channels and valid pixels of this tile */
    int op;               /* EC_CONV_MUL or EC_CONV_L1 */
    int clamp;
    float lo, hi;
} conv_tile;

typedef void (*conv_kernel)(const conv_tile *t);

static inline float conv_store_value(const conv_tile *t, int r, int i, float acc) {
    float v = t->op == EC_CONV_L1 ? -acc : acc;
    if (t->bias) v = v + t->bias[r];
    if (t->res) v = v + t->res[r * t->plane + i];
    if (t->clamp) {
        v = v > t->lo ? v : t->lo;
        v = v < t->hi ? v : t->hi;
    }
    return v;
}

static void conv_tile_scalar(const conv_tile *t) {
    for (int r = 0; r < t->rows; r++)
        for (int i = 0; i < t->npix; i++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < t->k; j++) {
                const float x = t->src[t->off[j] + i], w = t->w[r * t->k + j];
                const float term = t->op == EC_CONV_L1 ? fabsf(x - w) : x * w;
                acc = acc + term;
            }
            t->out[r * t->plane + i] = conv_store_value(t, r, i, acc);
        }
}

#ifdef EC_X86
/* AVX2: ROWS channels x NV vectors of 8 pixels (NV <= 2), tap operation OP */
__attribute__((target("avx2"), always_inline))
static inline void conv_tile_avx2_fixed(const conv_tile *t, const int ROWS, const int NV,
                                        const int OP) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
    for (int64_t j = 0; j < t->k; j++) {
        const float *s = t->src + t->off[j];
        __m256 xv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) xv[v] = _mm256_loadu_ps(s + 8 * v);
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; r++) {
            const __m256 wv = _mm256_broadcast_ss(t->w + r * t->k + j);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm256_add_ps(acc[r][v], OP == EC_CONV_L1
                    ? _mm256_andnot_ps(sign, _mm256_sub_ps(xv[v], wv))
                    : _mm256_mul_ps(xv[v], wv));
        }
    }
    const __m256 lo = _mm256_set1_ps(t->lo), hi = _mm256_set1_ps(t->hi);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(t->npix - 8 * v), lane);
            __m256 y = OP == EC_CONV_L1 ? _mm256_xor_ps(acc[r][v], sign) : acc[r][v];
            if (t->bias) y = _mm256_add_ps(y, _mm256_broadcast_ss(t->bias + r));
            if (t->res)
                y = _mm256_add_ps(y, _mm256_maskload_ps(t->res + r * t->plane + 8 * v, mask));
            if (t->clamp) y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            _mm256_maskstore_ps(t->out + r * t->plane + 8 * v, mask, y);
        }
}

#define CONV_AVX2_CASE(R, OP)                                  \
    case R:                                                    \
        if (nv == 1) conv_tile_avx2_fixed(t, R, 1, OP);        \
        else conv_tile_avx2_fixed(t, R, 2, OP);                \
        break;

#define CONV_AVX2_ROWS(OP)                                                             \
    switch (t->rows) {                                                                 \
        CONV_AVX2_CASE(1, OP) CONV_AVX2_CASE(2, OP) CONV_AVX2_CASE(3, OP)              \
        CONV_AVX2_CASE(4, OP)                                                          \
        default: conv_tile_scalar(t);                                                  \
    }

__attribute__((target("avx2")))
static void conv_tile_avx2(const conv_tile *t) {
    const int nv = (t->npix + 7) / 8;
    if (t->op == EC_CONV_L1) {
        CONV_AVX2_ROWS(EC_CONV_L1)
    } else {
        CONV_AVX2_ROWS(EC_CONV_MUL)
    }
}

/* AVX-512: ROWS channels x NV vectors of 16 pixels (NV <= 4), tap operation OP */
__attribute__((target("avx512f"), always_inline))
static inline void conv_tile_avx512_fixed(const conv_tile *t, const int ROWS, const int NV,
                                          const int OP) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 acc[CONV_MAXR][4];
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int64_t j = 0; j < t->k; j++) {
        const float *s = t->src + t->off[j];
        __m512 xv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(s + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const __m512 wv = _mm512_set1_ps(t->w[r * t->k + j]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm512_add_ps(acc[r][v], OP == EC_CONV_L1
                    ? _mm512_castsi512_ps(_mm512_andnot_si512(
                          sign, _mm512_castps_si512(_mm512_sub_ps(xv[v], wv))))
                    : _mm512_mul_ps(xv[v], wv));
        }
    }
    const __m512 lo = _mm512_set1_ps(t->lo), hi = _mm512_set1_ps(t->hi);
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const int left = t->npix - 16 * v;
            const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 y = OP == EC_CONV_L1
                ? _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(acc[r][v]), sign))
                : acc[r][v];
            if (t->bias) y = _mm512_add_ps(y, _mm512_set1_ps(t->bias[r]));
            if (t->res)
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, t->res + r * t->plane + 16 * v));
            if (t->clamp) y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
            _mm512_mask_storeu_ps(t->out + r * t->plane + 16 * v, mask, y);
        }
}

#define CONV_AVX512_CASE(R, OP)                                \
    case R:                                                    \
        switch (nv) {                                          \
            case 1: conv_tile_avx512_fixed(t, R, 1, OP); break;\
            case 2: conv_tile_avx512_fixed(t, R, 2, OP); break;\
            case 3: conv_tile_avx512_fixed(t, R, 3, OP); break;\
            default: conv_tile_avx512_fixed(t, R, 4, OP);      \
        }                                                      \
        break;

#define CONV_AVX512_ROWS(OP)                                                           \
    switch (t->rows) {                                                                 \
        CONV_AVX512_CASE(1, OP) CONV_AVX512_CASE(2, OP) CONV_AVX512_CASE(3, OP)        \
        CONV_AVX512_CASE(4, OP) CONV_AVX512_CASE(5, OP) CONV_AVX512_CASE(6, OP)        \
        default: conv_tile_scalar(t);                                                  \
    }

__attribute__((target("avx512f")))
static void conv_tile_avx512(const conv_tile *t) {
    const int nv = (t->npix + 15) / 16;
    if (t->op == EC_CONV_L1) {
        CONV_AVX512_ROWS(EC_CONV_L1)
    } else {
        CONV_AVX512_ROWS(EC_CONV_MUL)
    }
}
#endif

/* The shifted rows of one image (see the top of the file): buf[c][kx][phase][r][ox], then
 * CONV_SLACK zeros. */
static void conv_shift_rows(const float *x, int64_t c, int64_t h, int64_t w, int64_t kw,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t phases,
                            int64_t rows, int64_t ow, float *buf) {
    float *dst = buf;
    for (int64_t ic = 0; ic < c; ic++)
        for (int64_t kx = 0; kx < kw; kx++)
            for (int64_t phase = 0; phase < phases; phase++)
                for (int64_t r = 0; r < rows; r++, dst += ow) {
                    const int64_t iy = r * sh + phase - ph;
                    if (iy < 0 || iy >= h) {
                        memset(dst, 0, (size_t)ow * sizeof(float));
                        continue;
                    }
                    const float *src = x + (ic * h + iy) * w;
                    /* ox in [first, last) reads inside the row, the others are padding */
                    const int64_t shift = kx - pw;
                    int64_t first = shift >= 0 ? 0 : (-shift + sw - 1) / sw;
                    int64_t last = w - shift <= 0 ? 0 : (w - shift + sw - 1) / sw;
                    if (last > ow) last = ow;
                    if (first > last) first = last;
                    for (int64_t ox = 0; ox < first; ox++) dst[ox] = 0.0f;
                    if (sw == 1)
                        memcpy(dst + first, src + first + shift,
                               (size_t)(last - first) * sizeof(float));
                    else
                        for (int64_t ox = first; ox < last; ox++) dst[ox] = src[ox * sw + shift];
                    for (int64_t ox = last; ox < ow; ox++) dst[ox] = 0.0f;
                }
    memset(dst, 0, CONV_SLACK * sizeof(float));
}

/* One call of ec_conv2d_f32, for its two loops: the shifted rows of every image, then the
 * output tiles. */
typedef struct {
    const float *x, *weight, *bias, *residual;
    float *y, *buf;
    const int64_t *off;
    int64_t c, h, w, oc, kw, sh, sw, ph, pw, phases, rows, ow, plane, k, image;
    int64_t tile_rows, tile_pix, channel_blocks, pixel_blocks;
    int op, clamp;
    float lo, hi;
    conv_kernel kernel;
} conv_job;

static void conv_shift_image(const conv_job *j, int64_t i) {
    conv_shift_rows(j->x + i * j->c * j->h * j->w, j->c, j->h, j->w, j->kw, j->sh, j->sw, j->ph,
                    j->pw, j->phases, j->rows, j->ow, j->buf + i * j->image);
}

/* tile -> (image, channel block, pixel block), pixel blocks innermost so that a block's weight
 * rows stay in L1 while the pixels stream past */
static void conv_run_tile(const conv_job *j, int64_t tile) {
    const int64_t i = tile / (j->channel_blocks * j->pixel_blocks);
    const int64_t cb = tile / j->pixel_blocks % j->channel_blocks, pb = tile % j->pixel_blocks;
    const int64_t o0 = cb * j->tile_rows, p0 = pb * j->tile_pix;
    conv_tile t;
    t.src = j->buf + i * j->image + p0;
    t.off = j->off;
    t.k = j->k;
    t.w = j->weight + o0 * j->k;
    t.bias = j->bias ? j->bias + o0 : NULL;
    t.res = j->residual ? j->residual + (i * j->oc + o0) * j->plane + p0 : NULL;
    t.out = j->y + (i * j->oc + o0) * j->plane + p0;
    t.plane = j->plane;
    t.rows = (int)(j->oc - o0 < j->tile_rows ? j->oc - o0 : j->tile_rows);
    t.npix = (int)(j->plane - p0 < j->tile_pix ? j->plane - p0 : j->tile_pix);
    t.op = j->op;
    t.clamp = j->clamp;
    t.lo = j->lo;
    t.hi = j->hi;
    j->kernel(&t);
}

/* x (n, c, h, w), weight (oc, c, kh, kw), bias (oc) or NULL, residual (n, oc, oh, ow) or NULL,
 * y (n, oc, oh, ow); all contiguous float32. op: EC_CONV_MUL or EC_CONV_L1. clamp != 0: clamp
 * the result to [lo, hi]. */
EC_EXPORT int ec_conv2d_f32(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                            const float *weight, int64_t oc, int64_t kh, int64_t kw, int64_t sh,
                            int64_t sw, int64_t ph, int64_t pw, int op, const float *bias,
                            const float *residual, int clamp, float lo, float hi, float *y,
                            int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    if (n < 0 || c < 1 || oc < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0
        || (op != EC_CONV_MUL && op != EC_CONV_L1))
        return EC_BAD_ARGUMENT;
    const int64_t oh = (h + 2 * ph - kh) / sh + 1, ow = (w + 2 * pw - kw) / sw + 1;
    if (oh < 1 || ow < 1) return EC_BAD_ARGUMENT;
    const conv_kernel kernel = EC_PICK(path, conv_tile_scalar, conv_tile_avx2, conv_tile_avx512);
    const int tile_rows = EC_PICK(path, 4, 4, CONV_MAXR);
    const int tile_pix = EC_PICK(path, 16, 16, 64);
    const int64_t plane = oh * ow, k = c * kh * kw;
    const int64_t phases = sh < kh ? sh : kh, rows = oh + (kh - 1) / sh;
    const int64_t image = c * kw * phases * rows * ow + CONV_SLACK;
    float *buf = malloc((size_t)(n > 0 ? n * image : 1) * sizeof(float));
    int64_t *off = malloc((size_t)k * sizeof(int64_t));
    if (buf == NULL || off == NULL) {
        free(buf);
        free(off);
        return EC_OUT_OF_MEMORY;
    }
    for (int64_t ic = 0, j = 0; ic < c; ic++)
        for (int64_t ky = 0; ky < kh; ky++)
            for (int64_t kx = 0; kx < kw; kx++, j++)
                off[j] = (((ic * kw + kx) * phases + ky % sh) * rows + ky / sh) * ow;
    const conv_job job = {
        .x = x, .weight = weight, .bias = bias, .residual = residual, .y = y, .buf = buf,
        .off = off, .c = c, .h = h, .w = w, .oc = oc, .kw = kw, .sh = sh, .sw = sw, .ph = ph,
        .pw = pw, .phases = phases, .rows = rows, .ow = ow, .plane = plane, .k = k,
        .image = image, .tile_rows = tile_rows, .tile_pix = tile_pix,
        .channel_blocks = (oc + tile_rows - 1) / tile_rows,
        .pixel_blocks = (plane + tile_pix - 1) / tile_pix, .op = op, .clamp = clamp, .lo = lo,
        .hi = hi, .kernel = kernel};
    const int64_t tiles = n * job.channel_blocks * job.pixel_blocks;
    const int nthreads = ec_threads(threads);
    if (nthreads > 1 && n * oc * plane * k > 200000) {
#pragma omp parallel num_threads(nthreads)
        {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) conv_shift_image(&job, i);
#pragma omp for schedule(static)
            for (int64_t tile = 0; tile < tiles; tile++) conv_run_tile(&job, tile);
        }
    } else {  /* one thread: no parallel region (entering one costs about a microsecond) */
        for (int64_t i = 0; i < n; i++) conv_shift_image(&job, i);
        for (int64_t tile = 0; tile < tiles; tile++) conv_run_tile(&job, tile);
    }
    free(buf);
    free(off);
    return EC_OK;
}

/* The arguments of ec_conv2d_f32 that stay fixed for one layer and one input shape, so that a
 * frozen layer passes them as one pointer (a ctypes call converts each argument anew; at batch 1
 * on small maps that conversion cost as much as the convolution). Mirrored by
 * edgecompress.kernels.dispatch.DirectConvPlan: keep the field order. */
typedef struct {
    int64_t n, c, h, w, oc, kh, kw, sh, sw, ph, pw;
    const float *weight, *bias;
    float lo, hi;
    int32_t clamp, op, path, threads;
} ec_conv_f32_plan;

EC_EXPORT int ec_conv2d_f32_planned(const ec_conv_f32_plan *p, const float *x,
                                    const float *residual, float *y) {
    return ec_conv2d_f32(x, p->n, p->c, p->h, p->w, p->weight, p->oc, p->kh, p->kw, p->sh, p->sw,
                         p->ph, p->pw, p->op, p->bias, residual, p->clamp, p->lo, p->hi, y,
                         p->path, p->threads);
}
