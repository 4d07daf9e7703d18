/*
 * AdderNet's input gradient (the published rule, not the derivative of the L1 forward of
 * conv_f32.c): for x (n, c, h, w), weight (oc, c, kh, kw), the output's gradient g
 * (n, oc, oh, ow), stride (sh, sw) and zero padding (ph, pw),
 *
 *   dx[i, c, y, x] = sum over the taps (o, ky, kx) of
 *                    g[i, o, oy, ox] * clamp(w[o, c, ky, kx] - x[i, c, y, x], -1, 1)
 *
 * where (oy, ox) is the output pixel whose patch puts tap (ky, kx) on input pixel (y, x)
 * (y = oy sh + ky - ph, x = ox sw + kx - pw); a tap with no such output pixel adds nothing, and
 * padding, having no input, gets no gradient.
 *
 * Vectorized along input pixels, never materializing the differences, one stride phase at a
 * time: the input pixels (y, x) = (yy sh + py, xx sw + px) of a phase (py, px) meet only the
 * taps with (py + ph - ky) % sh == 0 and (px + pw - kx) % sw == 0 (a quarter of them at stride
 * 2), each at the output pixel (yy + dy, xx + dx), dy = (py + ph - ky) / sh, dx = (px + pw - kx)
 * / sw. Per image and phase, the phase's inputs are gathered into a grid of hc x wc pixels
 * p = yy wc + xx (numbered across rows), and the output gradient is spread into "shifted rows"
 * (zero padded): buf[o][kx][r][xx] = g[o][r - top][xx + dx(kx)], so that for every tap of the
 * phase the gradients pixel p meets are buf[off(o, ky, kx) + p], contiguous in p
 * (off = ((o kw + kx) rows + dy + top) wc). A tile of (up to) 4 input channels x 32 pixels
 * (AVX-512; AVX2 4 x 16, scalar any), its inputs held in registers, accumulates over the taps,
 * its gradient vectors shared by its channels; the phase's gradients are then scattered back.
 *
 * Summation order (the same in every path, so they agree bit for bit with each other and with
 * reference.adder_input_grad_reference): for every dx value, acc = 0, then for o ascending,
 * ky ascending, kx ascending acc = acc + g * clamp(w - x, -1, 1) (the difference rounded, the
 * clamp min(max(d, -1), 1), the product rounded, then added: no FMA, setup.py compiles in ISO
 * C mode). Taps of other phases, and taps whose output pixel is outside the output (a zero of
 * the buffer), are skipped or add +0 or -0, which leaves acc unchanged (acc is never -0).
 */
#include "kernels.h"

#define GRAD_ROWS 4    /* input channels per tile */
#define GRAD_SLACK 64  /* floats of zeros after an image's buffer: the last tile reads past it */

typedef struct {
    const float *src;    /* the image's shifted gradient rows + the tile's first pixel */
    const int64_t *off;  /* offset of every tap (o, ky, kx) in the buffer */
    int64_t taps;        /* oc * kh * kw */
    const float *w;      /* transposed weights of the tile's first channel: w[c][tap] */
    int64_t wstride;     /* row stride of w */
    const float *x;      /* input at the tile's first channel and pixel */
    float *dx;           /* input gradient at the tile's first channel and pixel */
    int64_t plane;       /* input pixels per channel (row stride of x and dx) */
    int rows, npix;      /* input channels and valid pixels of this tile */
} grad_tile;

typedef void (*grad_kernel)(const grad_tile *t);

static inline float grad_term(float g, float w, float x) {
    float d = w - x;
    d = d > -1.0f ? d : -1.0f;
    d = d < 1.0f ? d : 1.0f;
    return g * d;
}

static void grad_tile_scalar(const grad_tile *t) {
    for (int r = 0; r < t->rows; r++)
        for (int i = 0; i < t->npix; i++) {
            const float x = t->x[r * t->plane + i];
            float acc = 0.0f;
            for (int64_t j = 0; j < t->taps; j++)
                acc = acc + grad_term(t->src[t->off[j] + i], t->w[r * t->wstride + j], x);
            t->dx[r * t->plane + i] = acc;
        }
}

#ifdef EC_X86
/* AVX2: ROWS channels x NV vectors of 8 pixels (NV <= 2) */
__attribute__((target("avx2"), always_inline))
static inline void grad_tile_avx2_fixed(const grad_tile *t, const int ROWS, const int NV) {
    const __m256 lo = _mm256_set1_ps(-1.0f), hi = _mm256_set1_ps(1.0f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask[2];
    __m256 acc[GRAD_ROWS][2], xv[GRAD_ROWS][2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++)
        mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(t->npix - 8 * v), lane);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            acc[r][v] = _mm256_setzero_ps();
            xv[r][v] = _mm256_maskload_ps(t->x + r * t->plane + 8 * v, mask[v]);
        }
    for (int64_t j = 0; j < t->taps; j++) {
        const float *s = t->src + t->off[j];
        __m256 gv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) gv[v] = _mm256_loadu_ps(s + 8 * v);
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; r++) {
            const __m256 wv = _mm256_broadcast_ss(t->w + r * t->wstride + j);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) {
                const __m256 d = _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(wv, xv[r][v]), lo),
                                               hi);
                acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(gv[v], d));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            _mm256_maskstore_ps(t->dx + r * t->plane + 8 * v, mask[v], acc[r][v]);
}

#define GRAD_AVX2_CASE(R)                                   \
    case R:                                                 \
        if (nv == 1) grad_tile_avx2_fixed(t, R, 1);         \
        else grad_tile_avx2_fixed(t, R, 2);                 \
        break;

__attribute__((target("avx2")))
static void grad_tile_avx2(const grad_tile *t) {
    const int nv = (t->npix + 7) / 8;
    switch (t->rows) {
        GRAD_AVX2_CASE(1) GRAD_AVX2_CASE(2) GRAD_AVX2_CASE(3) GRAD_AVX2_CASE(4)
        default: grad_tile_scalar(t);
    }
}

/* AVX-512: ROWS channels x NV vectors of 16 pixels (NV <= 2) */
__attribute__((target("avx512f"), always_inline))
static inline void grad_tile_avx512_fixed(const grad_tile *t, const int ROWS, const int NV) {
    const __m512 lo = _mm512_set1_ps(-1.0f), hi = _mm512_set1_ps(1.0f);
    __mmask16 mask[2];
    __m512 acc[GRAD_ROWS][2], xv[GRAD_ROWS][2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const int left = t->npix - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            acc[r][v] = _mm512_setzero_ps();
            xv[r][v] = _mm512_maskz_loadu_ps(mask[v], t->x + r * t->plane + 16 * v);
        }
    for (int64_t j = 0; j < t->taps; j++) {
        const float *s = t->src + t->off[j];
        __m512 gv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) gv[v] = _mm512_loadu_ps(s + 16 * v);
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; r++) {
            const __m512 wv = _mm512_set1_ps(t->w[r * t->wstride + j]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) {
                const __m512 d = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(wv, xv[r][v]), lo),
                                               hi);
                acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_mul_ps(gv[v], d));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            _mm512_mask_storeu_ps(t->dx + r * t->plane + 16 * v, mask[v], acc[r][v]);
}

#define GRAD_AVX512_CASE(R)                                    \
    case R:                                                    \
        if (nv == 1) grad_tile_avx512_fixed(t, R, 1);          \
        else grad_tile_avx512_fixed(t, R, 2);                  \
        break;
__attribute__((target("avx512f")))
static void grad_tile_avx512(const grad_tile *t) {
    const int nv = (t->npix + 15) / 16;
    switch (t->rows) {
        GRAD_AVX512_CASE(1) GRAD_AVX512_CASE(2) GRAD_AVX512_CASE(3) GRAD_AVX512_CASE(4)
        default: grad_tile_scalar(t);
    }
}
#endif

/* The input pixels of one stride phase (py, px): y = yy sh + py, x = xx sw + px, a grid of
 * hc x wc pixels whose taps are those with (py + ph - ky) % sh == 0 and (px + pw - kx) % sw == 0;
 * a tap reaches the output pixel (yy + dy, xx + dx) with dy = (py + ph - ky) / sh,
 * dx = (px + pw - kx) / sw. */
typedef struct {
    int64_t py, px, hc, wc;
    int64_t top, rows;  /* buffer rows: output row oy at row oy + top; rows of them */
    int64_t taps;       /* taps of this phase */
} grad_phase;

static int64_t phase_shift(int64_t p, int64_t pad, int64_t k, int64_t s) {
    const int64_t v = p + pad - k;
    return v % s == 0 ? v / s : INT64_MIN;  /* INT64_MIN: the tap misses this phase */
}

/* The shifted gradient rows of one image for a phase, then GRAD_SLACK zeros:
 * buf[o][kx][r][xx] = g[o][r - top][xx + dx(kx)] (0 outside g), for the phase's columns kx. */
static void grad_shift_rows(const float *g, int64_t oc, int64_t oh, int64_t ow, int64_t kw,
                            int64_t sw, int64_t pw, const grad_phase *ph, float *buf) {
    const int64_t block = ph->rows * ph->wc;
    memset(buf, 0, (size_t)(oc * kw * block + GRAD_SLACK) * sizeof(float));
    for (int64_t kx = 0; kx < kw; kx++) {
        const int64_t dx = phase_shift(ph->px, pw, kx, sw);
        if (dx == INT64_MIN) continue;
        /* xx in [first, last) reads inside g's row */
        const int64_t first = dx < 0 ? -dx : 0;
        const int64_t last = ow - dx < ph->wc ? ow - dx : ph->wc;
        for (int64_t o = 0; o < oc; o++)
            for (int64_t oy = 0; oy < oh && oy + ph->top < ph->rows; oy++) {
                const float *src = g + (o * oh + oy) * ow + dx;
                float *row = buf + (o * kw + kx) * block + (oy + ph->top) * ph->wc;
                if (last > first)
                    memcpy(row + first, src + first, (size_t)(last - first) * sizeof(float));
            }
    }
}

/* x (n, c, h, w), weight (oc, c, kh, kw), g (n, oc, oh, ow) with oh, ow the L1 convolution's
 * output size; dx (n, c, h, w); all contiguous float32. */
EC_EXPORT int ec_adder_input_grad(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                  const float *weight, int64_t oc, int64_t kh, int64_t kw,
                                  int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                  const float *g, float *dx, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    if (n < 0 || c < 1 || h < 1 || w < 1 || oc < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1
        || ph < 0 || pw < 0)
        return EC_BAD_ARGUMENT;
    const int64_t oh = (h + 2 * ph - kh) / sh + 1, ow = (w + 2 * pw - kw) / sw + 1;
    if (oh < 1 || ow < 1) return EC_BAD_ARGUMENT;
    const grad_kernel kernel = EC_PICK(path, grad_tile_scalar, grad_tile_avx2, grad_tile_avx512);
    const int tile_pix = EC_PICK(path, 16, 16, 32);
    const int64_t all_taps = oc * kh * kw, kk = kh * kw;
    /* the largest phase: its buffers bound every phase's */
    const int64_t hmax = (h + sh - 1) / sh, wmax = (w + sw - 1) / sw;
    const int64_t rmax = hmax + (sh + ph) / sh + (kh + sh - 1) / sh;  /* >= any phase's rows */
    const int64_t image = oc * kw * rmax * wmax + GRAD_SLACK, pixels = c * hmax * wmax;
    float *buf = malloc((size_t)(n > 0 ? n * image : 1) * sizeof(float));
    float *xs = malloc((size_t)(n > 0 ? 2 * n * pixels : 1) * sizeof(float));
    float *wt = malloc((size_t)(c * all_taps) * sizeof(float));
    int64_t *off = malloc((size_t)all_taps * sizeof(int64_t));
    if (buf == NULL || xs == NULL || wt == NULL || off == NULL) {
        free(buf);
        free(xs);
        free(wt);
        free(off);
        return EC_OUT_OF_MEMORY;
    }
    float *dxs = xs + n * pixels;
    const int nthreads = ec_threads(threads);
    for (int64_t py = 0; py < sh; py++)
        for (int64_t px = 0; px < sw; px++) {
            grad_phase phase = {py, px, (h - py + sh - 1) / sh, (w - px + sw - 1) / sw, 0, 0, 0};
            if (phase.hc < 1 || phase.wc < 1) continue;
            int64_t dy_min = 0, dy_max = 0;
            for (int64_t ky = 0; ky < kh; ky++) {
                const int64_t dy = phase_shift(py, ph, ky, sh);
                if (dy == INT64_MIN) continue;
                dy_min = dy < dy_min ? dy : dy_min;
                dy_max = dy > dy_max ? dy : dy_max;
            }
            phase.top = -dy_min;
            phase.rows = phase.hc + dy_max + phase.top;  /* <= rmax */
            for (int64_t o = 0; o < oc; o++)
                for (int64_t ky = 0; ky < kh; ky++)
                    for (int64_t kx = 0; kx < kw; kx++) {
                        const int64_t dy = phase_shift(py, ph, ky, sh);
                        if (dy == INT64_MIN || phase_shift(px, pw, kx, sw) == INT64_MIN) continue;
                        off[phase.taps] = ((o * kw + kx) * phase.rows + dy + phase.top) * phase.wc;
                        for (int64_t ic = 0; ic < c; ic++)
                            wt[ic * all_taps + phase.taps] = weight[(o * c + ic) * kk + ky * kw + kx];
                        phase.taps++;
                    }
            const int64_t plane = phase.hc * phase.wc;
            const int64_t channel_blocks = (c + GRAD_ROWS - 1) / GRAD_ROWS;
            const int64_t pixel_blocks = (plane + tile_pix - 1) / tile_pix;
            const int64_t tiles = n * channel_blocks * pixel_blocks;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && n * c * plane * phase.taps > 200000)
            {
#pragma omp for schedule(static)
                for (int64_t i = 0; i < n; i++) {
                    grad_shift_rows(g + i * oc * oh * ow, oc, oh, ow, kw, sw, pw, &phase,
                                    buf + i * image);
                    for (int64_t ic = 0; ic < c; ic++)
                        for (int64_t yy = 0; yy < phase.hc; yy++) {
                            const float *src = x + ((i * c + ic) * h + yy * sh + py) * w + px;
                            float *dst = xs + (i * c + ic) * plane + yy * phase.wc;
                            for (int64_t xx = 0; xx < phase.wc; xx++) dst[xx] = src[xx * sw];
                        }
                }
                /* tile -> (image, channel block, pixel block), pixel blocks innermost so that
                 * a block's weight rows stay in L1 while the pixels stream past */
#pragma omp for schedule(static)
                for (int64_t tile = 0; tile < tiles; tile++) {
                    const int64_t i = tile / (channel_blocks * pixel_blocks);
                    const int64_t cb = tile / pixel_blocks % channel_blocks;
                    const int64_t c0 = cb * GRAD_ROWS, p0 = tile % pixel_blocks * tile_pix;
                    grad_tile t;
                    t.src = buf + i * image + p0;
                    t.off = off;
                    t.taps = phase.taps;
                    t.w = wt + c0 * all_taps;
                    t.wstride = all_taps;
                    t.x = xs + (i * c + c0) * plane + p0;
                    t.dx = dxs + (i * c + c0) * plane + p0;
                    t.plane = plane;
                    t.rows = (int)(c - c0 < GRAD_ROWS ? c - c0 : GRAD_ROWS);
                    t.npix = (int)(plane - p0 < tile_pix ? plane - p0 : tile_pix);
                    kernel(&t);
                }
#pragma omp for schedule(static)
                for (int64_t i = 0; i < n; i++)
                    for (int64_t ic = 0; ic < c; ic++)
                        for (int64_t yy = 0; yy < phase.hc; yy++) {
                            const float *src = dxs + (i * c + ic) * plane + yy * phase.wc;
                            float *dst = dx + ((i * c + ic) * h + yy * sh + py) * w + px;
                            for (int64_t xx = 0; xx < phase.wc; xx++) dst[xx * sw] = src[xx];
                        }
            }
        }
    free(buf);
    free(xs);
    free(wt);
    free(off);
    return EC_OK;
}
