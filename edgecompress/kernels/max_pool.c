/*
 * Max-pooling of float32 channels-last maps (n, h, w, c), what torch's max_pool2d computes
 * (dilation 1, no ceil mode): each output value starts at -infinity and takes, in row-major
 * window order over the in-map taps (zero padding is never a candidate), every value v with
 *
 *     v > max  or  v is NaN,
 *
 * so the result is bit for bit torch's (a NaN propagates, the first of equal values such as
 * -0 and +0 is kept). A ResNet stem's 3x3 / 2 pool of a channels-last map: torch's
 * channels-last kernel keeps an index per value beside the maximum; this one does not.
 */
#include "kernels.h"
#include <math.h>

typedef struct {
    int64_t h, w, c, kh, kw, sh, sw, ph, pw, oh, ow;
} pool_shape;

/* the window of output pixel (i, j): rows ya..yb-1, columns xa..xb-1 of the map */
#define WINDOW                                                                                \
    const int64_t y0 = i * g->sh - g->ph, x0 = j * g->sw - g->pw;                             \
    const int64_t ya = y0 < 0 ? 0 : y0, yb = y0 + g->kh > g->h ? g->h : y0 + g->kh;           \
    const int64_t xa = x0 < 0 ? 0 : x0, xb = x0 + g->kw > g->w ? g->w : x0 + g->kw;

/* channels k .. k + n - 1 (n <= CB) of output pixel (i, j) by the rule above, value by value
 * (plain C: the compiler vectorizes the channel loop in the AVX builds) */
#define CB 64
#define POOL_CHANNELS                                                                         \
    {                                                                                         \
        WINDOW                                                                                \
        float m[CB];                                                                          \
        for (int64_t q = 0; q < n; q++) m[q] = -INFINITY;                                     \
        for (int64_t y = ya; y < yb; y++)                                                     \
            for (int64_t x = xa; x < xb; x++) {                                               \
                const float *p = in + (y * g->w + x) * g->c + k;                              \
                for (int64_t q = 0; q < n; q++) {                                             \
                    const float v = p[q];                                                     \
                    m[q] = (v > m[q] || v != v) ? v : m[q];                                   \
                }                                                                             \
            }                                                                                 \
        for (int64_t q = 0; q < n; q++) o[q] = m[q];                                          \
    }

static void channels_scalar(const float *in, const pool_shape *g, int64_t i, int64_t j,
                            int64_t k, int64_t n, float *o) POOL_CHANNELS

typedef void (*row_fn)(const float *, const pool_shape *, int64_t, float *);

/* output row i of one image: in (h, w, c), out (oh, ow, c) */
static void row_scalar(const float *in, const pool_shape *g, int64_t i, float *out) {
    for (int64_t j = 0; j < g->ow; j++)
        for (int64_t k = 0; k < g->c; k += CB)
            channels_scalar(in, g, i, j, k, g->c - k < CB ? g->c - k : CB,
                            out + (i * g->ow + j) * g->c + k);
}

#ifdef EC_X86
__attribute__((target("avx2")))
static void channels_avx2(const float *in, const pool_shape *g, int64_t i, int64_t j,
                          int64_t k, int64_t n, float *o) POOL_CHANNELS

/* AVX2 (the AVX-512 path too): 32 channels at a time in four registers. VMAXPS(v, m) is
 * "v > m ? v : m", the rule above but for a NaN v (it keeps m); the block's values are also
 * summed, and a block whose sum is NaN (a NaN among its values, or infinities of both signs)
 * is done again by the exact loop. The rest of the channels (c mod 32): the exact loop. */
__attribute__((target("avx2")))
static void row_avx2(const float *in, const pool_shape *g, int64_t i, float *out) {
    const int64_t c = g->c, c32 = c - c % 32;
    for (int64_t j = 0; j < g->ow; j++) {
        WINDOW
        float *o = out + (i * g->ow + j) * c;
        for (int64_t k = 0; k < c32; k += 32) {
            __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (int64_t y = ya; y < yb; y++)
                for (int64_t x = xa; x < xb; x++) {
                    const float *p = in + (y * g->w + x) * c + k;
                    const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8),
                                 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
                    m0 = _mm256_max_ps(v0, m0); s0 = _mm256_add_ps(s0, v0);
                    m1 = _mm256_max_ps(v1, m1); s1 = _mm256_add_ps(s1, v1);
                    m2 = _mm256_max_ps(v2, m2); s2 = _mm256_add_ps(s2, v2);
                    m3 = _mm256_max_ps(v3, m3); s3 = _mm256_add_ps(s3, v3);
                }
            const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
            if (_mm256_movemask_ps(_mm256_cmp_ps(s, s, _CMP_UNORD_Q))) {
                channels_avx2(in, g, i, j, k, 32, o + k);
                continue;
            }
            _mm256_storeu_ps(o + k, m0);
            _mm256_storeu_ps(o + k + 8, m1);
            _mm256_storeu_ps(o + k + 16, m2);
            _mm256_storeu_ps(o + k + 24, m3);
        }
        if (c32 < c) channels_avx2(in, g, i, j, c32, c - c32, o + c32);
    }
}
#endif

/* x: (n, h, w, c), out: (n, oh, ow, c), both contiguous; shape: h, w, c, kh, kw, sh, sw, ph,
 * pw, oh, ow (the caller checked them: oh, ow >= 1, every window holds a tap of the map). */
EC_EXPORT int ec_max_pool2d(const float *x, int64_t n, const int64_t *shape, float *out,
                            int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const pool_shape g = {shape[0], shape[1], shape[2], shape[3], shape[4], shape[5],
                          shape[6], shape[7], shape[8], shape[9], shape[10]};
    if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0
        || 2 * g.ph > g.kh || 2 * g.pw > g.kw || g.oh < 1 || g.ow < 1)
        return EC_BAD_ARGUMENT;
    const row_fn row = EC_PICK(path, row_scalar, row_avx2, row_avx2);
    const int64_t rows = n * g.oh;
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) \
    if (rows * g.ow * g.c > 16384)
    for (int64_t t = 0; t < rows; t++)
        row(x + (t / g.oh) * g.h * g.w * g.c, &g, t % g.oh,
            out + (t / g.oh) * g.oh * g.ow * g.c);
    return EC_OK;
}
