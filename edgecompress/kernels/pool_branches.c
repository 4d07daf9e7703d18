/*
 * BinaryViT's pooling branches on channel-last tokens, one pass: for every token (h, w) of an
 * H x W grid and channel c,
 *
 *   out = (((0 + s0 P31) + s1 P13) + s2 P51) + s3 P15
 *
 * with Pkh kw the stride-1 average pool of kernel kh x kw centred on the token, zero padding not
 * counted: the sum of the in-grid values in row-major window order, starting from 0, divided
 * by their count -- what torch's avg_pool2d(count_include_pad=False) computes -- and every
 * product and sum rounded separately in that order (ISO C: no contraction), as the training
 * form's torch expression. With a base tensor b the result is b + out (the transformer block's
 * ``y + branches(x)``, one more rounded addition in the same pass). The body is plain C over
 * contiguous channels; the AVX2 / AVX-512
 * builds of it only let the compiler use wider vectors (the same IEEE operations per value).
 */
#include "kernels.h"

/* one row h of a grid. Channels are processed in blocks of CB with the channel loop innermost
 * (so it vectorizes); each value still gets its sums and products in the order above. */
#define CB 64
#define WINDOW_SUM(acc, lo, hi, step)                                                         \
    {                                                                                         \
        for (int64_t jj = 0; jj < n; jj++) acc[jj] = 0.0f;                                    \
        for (int64_t i = lo; i <= hi; i++) {                                                  \
            const float *src = xt + (i - (step == 1 ? w : h)) * (step == 1 ? c : ww * c) + j; \
            for (int64_t jj = 0; jj < n; jj++) acc[jj] = acc[jj] + src[jj];                   \
        }                                                                                     \
    }
#define POOL_BODY                                                                             \
    {                                                                                         \
        float p[CB], v[CB];                                                                   \
        for (int64_t w = 0; w < ww; w++) {                                                    \
            const float *xt = x + (h * ww + w) * c;                                           \
            float *o = out + (h * ww + w) * c;                                                \
            const float *bt = base ? base + (h * ww + w) * c : NULL;                          \
            int64_t h0 = h - 1 < 0 ? 0 : h - 1, h1 = h + 1 >= hh ? hh - 1 : h + 1;            \
            int64_t w0 = w - 1 < 0 ? 0 : w - 1, w1 = w + 1 >= ww ? ww - 1 : w + 1;            \
            int64_t H0 = h - 2 < 0 ? 0 : h - 2, H1 = h + 2 >= hh ? hh - 1 : h + 2;            \
            int64_t W0 = w - 2 < 0 ? 0 : w - 2, W1 = w + 2 >= ww ? ww - 1 : w + 2;            \
            const float n31 = (float)(h1 - h0 + 1), n13 = (float)(w1 - w0 + 1);              \
            const float n51 = (float)(H1 - H0 + 1), n15 = (float)(W1 - W0 + 1);              \
            for (int64_t j = 0; j < c; j += CB) {                                             \
                const int64_t n = c - j < CB ? c - j : CB;                                    \
                WINDOW_SUM(p, h0, h1, 0)                                                      \
                for (int64_t jj = 0; jj < n; jj++) v[jj] = 0.0f + s[0] * (p[jj] / n31);       \
                WINDOW_SUM(p, w0, w1, 1)                                                      \
                for (int64_t jj = 0; jj < n; jj++) v[jj] = v[jj] + s[1] * (p[jj] / n13);      \
                WINDOW_SUM(p, H0, H1, 0)                                                      \
                for (int64_t jj = 0; jj < n; jj++) v[jj] = v[jj] + s[2] * (p[jj] / n51);      \
                WINDOW_SUM(p, W0, W1, 1)                                                      \
                for (int64_t jj = 0; jj < n; jj++) v[jj] = v[jj] + s[3] * (p[jj] / n15);      \
                if (bt)                                                                       \
                    for (int64_t jj = 0; jj < n; jj++) o[j + jj] = bt[j + jj] + v[jj];        \
                else                                                                          \
                    for (int64_t jj = 0; jj < n; jj++) o[j + jj] = v[jj];                     \
            }                                                                                 \
        }                                                                                     \
    }

typedef void (*row_fn)(const float *, int64_t, int64_t, int64_t, int64_t, const float *,
                       const float *, float *);

static void row_scalar(const float *x, int64_t hh, int64_t ww, int64_t c, int64_t h, const float *s,
                        const float *base, float *out) {
    POOL_BODY
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void row_avx2(const float *x, int64_t hh, int64_t ww, int64_t c, int64_t h, const float *s,
                      const float *base, float *out) {
    POOL_BODY
}

__attribute__((target("avx512f")))
static void row_avx512(const float *x, int64_t hh, int64_t ww, int64_t c, int64_t h, const float *s,
                        const float *base, float *out) {
    POOL_BODY
}
#endif

/* x: n grids of hh x ww tokens of c floats, grid i at x + i * x_stride; out likewise at
 * out + i * out_stride, and base (or NULL) at base + i * out_stride; s: the 4 branch scales
 * (3x1, 1x3, 5x1, 1x5). */
EC_EXPORT int ec_pool_branches(const float *x, int64_t x_stride, int64_t n, int64_t hh,
                               int64_t ww, int64_t c, const float *s, const float *base,
                               float *out, int64_t out_stride, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const row_fn row = EC_PICK(path, row_scalar, row_avx2, row_avx512);
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) if (n * hh * ww * c > 16384)
    for (int64_t t = 0; t < n * hh; t++)
        row(x + (t / hh) * x_stride, hh, ww, c, t % hh, s,
            base ? base + (t / hh) * out_stride : NULL, out + (t / hh) * out_stride);
    return EC_OK;
}
