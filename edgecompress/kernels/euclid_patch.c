/*
 * The per-patch term of EuclidNet's GEMM form, y = conv(x, w) - theta/2 ||x_patch||^2, for the
 * convolution's input x (n, c, h, w) in g groups of cg = c / g channels and its output y
 * (n, g co, oh, ow); kernel (kh, kw), stride (sh, sw), zero padding (ph, pw) with ph < kh,
 * pw < kw, dilation 1. With half = theta / 2:
 *
 * forward, in place on y (one pass over x, one over y):
 *   s[i, j, p]       = sum over the group's channels k ascending of x[i, j cg + k, p]^2
 *                      (from the first square, each square rounded, then added)
 *   P[i, j, oy, ox]  = sum over ky < kh, then kx < kw, of s[i, j, oy sh + ky - ph, ox sw + kx - pw]
 *                      (from 0; taps outside the image add nothing), as torch's
 *                      avg_pool2d(s, ..., divisor_override=1) computes it
 *   y[i, j co + o]   = y - half * P[i, j]        (the product rounded, then subtracted)
 *
 * backward, the term's input gradient from the output's gradient gy (same shape as y):
 *   q[i, j, oy, ox]  = -(sum over o ascending of gy[i, j co + o, oy, ox]) * half
 *   r[i, j, y, x]    = sum of q over the output pixels whose window holds (y, x), in the order
 *                      torch's avg_pool2d_backward adds them (output pixels ascending)
 *   gx[i, j cg + k]  = r[i, j] * (2 x[i, j cg + k])   (what autograd's pow backward computes)
 *
 * Every operation is separate and rounded (ISO C: no contraction), so every build gives the
 * same floats; reference.euclid_patch_reference / euclid_patch_grad_reference are the same
 * operations in torch. A tap outside the image is read as +0 from a zero-padded copy: s is a
 * sum of squares (never -0) and a sum of the q's that starts at +0 never becomes -0, so adding
 * +0 leaves it as skipping the tap would. x, y, gy and gx may each be held channels-last
 * (n, h, w, c); gx takes x's layout.
 *
 * Portable C (the compiler vectorizes the plane loops); OpenMP over images, then over planes.
 */
#include "kernels.h"

typedef struct {
    int64_t n, c, g, h, w, co, oh, ow, kh, kw, sh, sw, ph, pw;
} patch_geometry;

static int geometry_ok(const patch_geometry *d) {
    return d->n >= 0 && d->g >= 1 && d->c >= d->g && d->c % d->g == 0 && d->co >= 1 &&
           d->h >= 1 && d->w >= 1 && d->kh >= 1 && d->kw >= 1 && d->sh >= 1 && d->sw >= 1 &&
           d->ph >= 0 && d->pw >= 0 && d->ph < d->kh && d->pw < d->kw && d->oh >= 1 &&
           d->ow >= 1 && (d->oh - 1) * d->sh + d->kh <= d->h + 2 * d->ph &&
           (d->ow - 1) * d->sw + d->kw <= d->w + 2 * d->pw;
}

/* Sums over consecutive groups of `per` channels of one image t (channels of `plane` values;
 * channels-last: pixels of `total` channels), each value v mapped to v * v (squares) or v:
 * out (groups, plane). */
static void channel_sums(const float *t, int last, int64_t total, int64_t per, int64_t groups,
                         int64_t plane, int squares, float *out) {
    if (!last) {
        for (int64_t j = 0; j < groups; j++) {
            float *d = out + j * plane;
            const float *src = t + j * per * plane;
            if (squares)
                for (int64_t p = 0; p < plane; p++) d[p] = src[p] * src[p];
            else
                for (int64_t p = 0; p < plane; p++) d[p] = src[p];
            for (int64_t k = 1; k < per; k++) {
                const float *row = src + k * plane;
                if (squares)
                    for (int64_t p = 0; p < plane; p++) d[p] = d[p] + row[p] * row[p];
                else
                    for (int64_t p = 0; p < plane; p++) d[p] = d[p] + row[p];
            }
        }
        return;
    }
    for (int64_t p = 0; p < plane; p++) {
        const float *px = t + p * total;
        for (int64_t j = 0; j < groups; j++) {
            const float *v = px + j * per;
            float acc = squares ? v[0] * v[0] : v[0];
            for (int64_t k = 1; k < per; k++) acc = acc + (squares ? v[k] * v[k] : v[k]);
            out[j * plane + p] = acc;
        }
    }
}

/* half * P of one plane s (h, w) -> out (oh, ow), through a zero-padded copy pad. */
static void window_sums(const float *s, const patch_geometry *d, float *pad, float half,
                        float *out) {
    const int64_t wp = d->w + 2 * d->pw;
    memset(pad, 0, (size_t)((d->h + 2 * d->ph) * wp) * sizeof(float));
    for (int64_t y = 0; y < d->h; y++)
        memcpy(pad + (y + d->ph) * wp + d->pw, s + y * d->w, (size_t)d->w * sizeof(float));
    for (int64_t oy = 0; oy < d->oh; oy++) {
        float *row = out + oy * d->ow;
        for (int64_t ox = 0; ox < d->ow; ox++) row[ox] = 0.0f;
        for (int64_t ky = 0; ky < d->kh; ky++) {
            const float *src = pad + (oy * d->sh + ky) * wp;
            for (int64_t kx = 0; kx < d->kw; kx++) {
                if (d->sw == 1)
                    for (int64_t ox = 0; ox < d->ow; ox++) row[ox] = row[ox] + src[ox + kx];
                else
                    for (int64_t ox = 0; ox < d->ow; ox++)
                        row[ox] = row[ox] + src[ox * d->sw + kx];
            }
        }
        for (int64_t ox = 0; ox < d->ow; ox++) row[ox] = half * row[ox];
    }
}

/* The transposed window sums of one plane q (oh, ow) -> r (h, w), in avg_pool2d_backward's
 * order: for an input pixel, the output pixels holding it ascending, i.e. ky descending, then
 * kx descending. q is first spread into a zero plane dq with the stride's gaps and a border
 * of k - 1 (the taps outside the output read zeros). */
static void window_transpose(const float *q, const patch_geometry *d, float *dq, float *r) {
    const int64_t dh = (d->oh - 1) * d->sh + 1 + 2 * (d->kh - 1);
    const int64_t dw = (d->ow - 1) * d->sw + 1 + 2 * (d->kw - 1);
    memset(dq, 0, (size_t)(dh * dw) * sizeof(float));
    for (int64_t oy = 0; oy < d->oh; oy++)
        for (int64_t ox = 0; ox < d->ow; ox++)
            dq[(oy * d->sh + d->kh - 1) * dw + ox * d->sw + d->kw - 1] = q[oy * d->ow + ox];
    for (int64_t y = 0; y < d->h; y++) {
        float *row = r + y * d->w;
        for (int64_t x = 0; x < d->w; x++) row[x] = 0.0f;
        /* input row y meets output row oy at tap ky when oy sh + ky - ph = y; rows of dq past
         * the output's last (y + ph - ky beyond (oh - 1) sh) are zeros or absent */
        for (int64_t ky = d->kh - 1; ky >= 0; ky--) {
            const int64_t dy = y + d->ph - ky + d->kh - 1;
            if (dy >= dh) continue;  /* a zero row */
            const float *src = dq + dy * dw;
            for (int64_t kx = d->kw - 1; kx >= 0; kx--) {
                const int64_t off = d->pw - kx + d->kw - 1;  /* dq column of input column 0 */
                int64_t hi = dw - off;  /* columns x < hi exist in dq */
                if (hi > d->w) hi = d->w;
                for (int64_t x = 0; x < hi; x++) row[x] = row[x] + src[x + off];
            }
        }
    }
}

/* y rewritten, x read; both (n, c, h, w) / (n, g co, oh, ow) or channels-last. */
EC_EXPORT int ec_euclid_patch(float *y, int y_last, const float *x, int x_last, int64_t n,
                              int64_t c, int64_t g, int64_t h, int64_t w, int64_t co,
                              int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw, float half, int threads) {
    const patch_geometry d = {n, c, g, h, w, co, oh, ow, kh, kw, sh, sw, ph, pw};
    if (!geometry_ok(&d)) return EC_BAD_ARGUMENT;
    const int64_t plane = oh * ow, in_plane = h * w, channels = g * co;
    float *terms = malloc((size_t)(n * g * plane) * sizeof(float));
    if (!terms) return EC_OUT_OF_MEMORY;
    int failed = 0;
#pragma omp parallel num_threads(ec_threads(threads)) if (n * c * in_plane > 32768)
    {
        float *s = malloc((size_t)(g * in_plane + (h + 2 * ph) * (w + 2 * pw)) * sizeof(float));
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++)
            if (s) {
                channel_sums(x + i * c * in_plane, x_last, c, c / g, g, in_plane, 1, s);
                for (int64_t j = 0; j < g; j++)
                    window_sums(s + j * in_plane, &d, s + g * in_plane, half,
                                terms + (i * g + j) * plane);
            }
        free(s);
        /* (the loop's implicit barrier: every term is written) */
        if (!failed && !y_last) {
#pragma omp for schedule(static)
            for (int64_t q = 0; q < n * channels; q++) {  /* q = (i g + j) co + o */
                float *dst = y + q * plane;
                const float *t = terms + (q / co) * plane;
                for (int64_t k = 0; k < plane; k++) dst[k] = dst[k] - t[k];
            }
        } else if (!failed) {
#pragma omp for schedule(static)
            for (int64_t q = 0; q < n * plane; q++) {  /* q = i plane + pixel */
                float *dst = y + q * channels;
                const float *t = terms + (q / plane) * g * plane + q % plane;
                for (int64_t j = 0; j < g; j++) {
                    const float v = t[j * plane];
                    for (int64_t o = 0; o < co; o++) dst[j * co + o] = dst[j * co + o] - v;
                }
            }
        }
    }
    free(terms);
    return failed ? EC_OUT_OF_MEMORY : EC_OK;
}

/* gx written (x's shape and layout) from gy (y's shape) and x. */
EC_EXPORT int ec_euclid_patch_grad(const float *gy, int gy_last, const float *x, int x_last,
                                   float *gx, int64_t n, int64_t c, int64_t g, int64_t h,
                                   int64_t w, int64_t co, int64_t oh, int64_t ow, int64_t kh,
                                   int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                   float half, int threads) {
    const patch_geometry d = {n, c, g, h, w, co, oh, ow, kh, kw, sh, sw, ph, pw};
    if (!geometry_ok(&d)) return EC_BAD_ARGUMENT;
    const int64_t plane = oh * ow, in_plane = h * w, cg = c / g;
    const int64_t dq = ((oh - 1) * sh + 2 * kh - 1) * ((ow - 1) * sw + 2 * kw - 1);
    float *r = malloc((size_t)(n * g * in_plane) * sizeof(float));
    if (!r) return EC_OUT_OF_MEMORY;
    int failed = 0;
#pragma omp parallel num_threads(ec_threads(threads)) if (n * c * in_plane > 32768)
    {
        float *q = malloc((size_t)(g * plane + dq) * sizeof(float));
        if (!q) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++)
            if (q) {
                channel_sums(gy + i * g * co * plane, gy_last, g * co, co, g, plane, 0, q);
                for (int64_t k = 0; k < g * plane; k++) q[k] = -q[k] * half;
                for (int64_t j = 0; j < g; j++)
                    window_transpose(q + j * plane, &d, q + g * plane,
                                     r + (i * g + j) * in_plane);
            }
        free(q);
        if (!failed && !x_last) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n * c; t++) {  /* t = i c + j cg + k */
                const float *src = x + t * in_plane, *rr = r + (t / cg) * in_plane;
                float *dst = gx + t * in_plane;
                for (int64_t p = 0; p < in_plane; p++) dst[p] = rr[p] * (2.0f * src[p]);
            }
        } else if (!failed) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n * in_plane; t++) {  /* t = i plane + pixel */
                const float *src = x + t * c, *rr = r + (t / in_plane) * g * in_plane
                                                      + t % in_plane;
                float *dst = gx + t * c;
                for (int64_t j = 0; j < g; j++) {
                    const float v = rr[j * in_plane];
                    for (int64_t k = 0; k < cg; k++)
                        dst[j * cg + k] = v * (2.0f * src[j * cg + k]);
                }
            }
        }
    }
    free(r);
    return failed ? EC_OUT_OF_MEMORY : EC_OK;
}
