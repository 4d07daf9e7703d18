/*
 * The per-patch term of EuclidNet's GEMM form, y = conv(x, w) - theta/2 ||x_patch||^2, for the
 * convolution's input x (n, c, h, w) in g groups of cg = c / g channels and its output y
 * (n, g co, oh, ow); kernel (kh, kw), stride (sh, sw), zero padding (ph, pw) with ph < kh,
 * pw < kw, dilation 1. With half = theta / 2:
 *
 * forward, in place on y (one pass over x, one over y), with an optional per-channel shift
 * (the GEMM form's b - theta/2 ||w||^2, so the convolution needs no bias pass of its own),
 * given, or computed from the convolution's weight (g co rows of K = cg kh kw floats) and
 * bias (or none) as
 *   sq[j]            = sum over k < K ascending of weight[j, k]^2 (from the first square)
 *   shift[j]         = bias[j] - half * sq[j], or -(half * sq[j]) without a bias
 * and then:
 *   s[i, j, p]       = sum over the group's channels k ascending of x[i, j cg + k, p]^2
 *                      (from the first square, each square rounded, then added)
 *   P[i, j, oy, ox]  = sum over ky < kh, then kx < kw, of s[i, j, oy sh + ky - ph, ox sw + kx - pw]
 *                      (from 0; taps outside the image add nothing), as torch's
 *                      avg_pool2d(s, ..., divisor_override=1) computes it
 *   y[i, j co + o]   = y - half * P[i, j]        (the product rounded, then subtracted)
 *                      or (y + shift[j co + o]) - half * P[i, j]
 *
 * backward, the term's input gradient from the output's gradient gy (same shape as y):
 *   q[i, j, oy, ox]  = -(sum over o ascending of gy[i, j co + o, oy, ox]) * half
 *   r[i, j, y, x]    = sum of q over the output pixels whose window holds (y, x), in the order
 *                      torch's avg_pool2d_backward adds them (output pixels ascending)
 *   gx[i, j cg + k]  = r[i, j] * (2 x[i, j cg + k])   (what autograd's pow backward computes)
 *                      or, adding to a given gx, gx + r[i, j] * (2 x[i, j cg + k])
 *
 * Every operation is separate and rounded (ISO C: no contraction), so every build gives the
 * same floats; reference.euclid_patch_reference / euclid_patch_grad_reference are the same
 * operations in torch. A tap outside the image is read as +0 from a zero-padded copy: s is a
 * sum of squares (never -0) and a sum of the q's that starts at +0 never becomes -0, so adding
 * +0 leaves it as skipping the tap would. x, y, gy and gx may each be held channels-last
 * (n, h, w, c); gx takes x's layout.
 *
 * Plain C loops compiled three times (scalar, AVX2, AVX-512 targets: the compiler vectorizes
 * them along pixels, never reordering a sum), picked by path; OpenMP over images, then over
 * planes or rows.
 */
#include "kernels.h"

typedef struct {
    int64_t n, c, g, h, w, co, oh, ow, kh, kw, sh, sw, ph, pw;
} patch_geometry;

#define EC_INLINE static inline __attribute__((always_inline))

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
EC_INLINE void channel_sums(const float *t, int last, int64_t total, int64_t per, int64_t groups,
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
EC_INLINE void window_sums(const float *s, const patch_geometry *d, float *pad, float half,
                        float *out) {
    const int64_t wp = d->w + 2 * d->pw;
    memset(pad, 0, (size_t)((d->h + 2 * d->ph) * wp) * sizeof(float));
    for (int64_t y = 0; y < d->h; y++)
        memcpy(pad + (y + d->ph) * wp + d->pw, s + y * d->w, (size_t)d->w * sizeof(float));
    if (d->kh == 3 && d->kw == 3 && d->sw == 1) {  /* the common case: a sum in registers */
        for (int64_t oy = 0; oy < d->oh; oy++) {
            float *row = out + oy * d->ow;
            const float *a = pad + oy * d->sh * wp, *b = a + wp, *c = b + wp;
            for (int64_t ox = 0; ox < d->ow; ox++) {
                float t = 0.0f;
                t = t + a[ox]; t = t + a[ox + 1]; t = t + a[ox + 2];
                t = t + b[ox]; t = t + b[ox + 1]; t = t + b[ox + 2];
                t = t + c[ox]; t = t + c[ox + 1]; t = t + c[ox + 2];
                row[ox] = half * t;
            }
        }
        return;
    }
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
EC_INLINE void window_transpose(const float *q, const patch_geometry *d, float *dq, float *r) {
    const int64_t dh = (d->oh - 1) * d->sh + 1 + 2 * (d->kh - 1);
    const int64_t dw = (d->ow - 1) * d->sw + 1 + 2 * (d->kw - 1);
    memset(dq, 0, (size_t)(dh * dw) * sizeof(float));
    for (int64_t oy = 0; oy < d->oh; oy++)
        for (int64_t ox = 0; ox < d->ow; ox++)
            dq[(oy * d->sh + d->kh - 1) * dw + ox * d->sw + d->kw - 1] = q[oy * d->ow + ox];
    if (d->kh == 3 && d->kw == 3 && d->sh == 1 && d->sw == 1 && d->h + d->ph + 2 <= dh &&
        d->w + d->pw + 2 <= dw) {  /* the common case, every tap inside dq: in registers */
        for (int64_t y = 0; y < d->h; y++) {
            float *row = r + y * d->w;
            /* ky = 2, 1, 0: dq rows y + ph, + 1, + 2; kx = 2, 1, 0: columns x + pw, + 1, + 2 */
            const float *a = dq + (y + d->ph) * dw + d->pw, *b = a + dw, *c = b + dw;
            for (int64_t x = 0; x < d->w; x++) {
                float t = 0.0f;
                t = t + a[x]; t = t + a[x + 1]; t = t + a[x + 2];
                t = t + b[x]; t = t + b[x + 1]; t = t + b[x + 2];
                t = t + c[x]; t = t + c[x + 1]; t = t + c[x + 2];
                row[x] = t;
            }
        }
        return;
    }
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

/* The work units, each compiled for every path (PATCH_PATHS below). */

/* forward, image i: the terms half * P of its g planes (work: g h w + padded plane floats) */
EC_INLINE void forward_terms_body(const float *x, int x_last, const patch_geometry *d,
                                  float *work, float half, float *terms) {
    const int64_t in_plane = d->h * d->w;
    channel_sums(x, x_last, d->c, d->c / d->g, d->g, in_plane, 1, work);
    for (int64_t j = 0; j < d->g; j++)
        window_sums(work + j * in_plane, d, work + d->g * in_plane, half,
                    terms + j * d->oh * d->ow);
}

/* forward: y -= its term (y = (y + shift[channel]) - term with a shift) in image i, whose
 * terms are `terms`; unit u = a channel plane (channel u), or channels-last a row of pixels
 * (row u) */
EC_INLINE void subtract_body(float *y, int y_last, const float *terms, const float *shift,
                             const patch_geometry *d, int64_t i, int64_t u) {
    const int64_t plane = d->oh * d->ow, channels = d->g * d->co;
    if (!y_last) {
        float *dst = y + (i * channels + u) * plane;
        const float *t = terms + (u / d->co) * plane;
        if (shift) {
            const float b = shift[u];
            for (int64_t k = 0; k < plane; k++) dst[k] = (dst[k] + b) - t[k];
        } else {
            for (int64_t k = 0; k < plane; k++) dst[k] = dst[k] - t[k];
        }
        return;
    }
    const int64_t row = u * d->ow;
    for (int64_t ox = 0; ox < d->ow; ox++) {
        float *dst = y + (i * plane + row + ox) * channels;
        const float *t = terms + row + ox;
        for (int64_t j = 0; j < d->g; j++) {
            const float v = t[j * plane];
            float *out = dst + j * d->co;
            if (shift) {
                const float *b = shift + j * d->co;
                for (int64_t o = 0; o < d->co; o++) out[o] = (out[o] + b[o]) - v;
            } else {
                for (int64_t o = 0; o < d->co; o++) out[o] = out[o] - v;
            }
        }
    }
}

/* backward, image i: r of its g planes (work: g oh ow + spread plane floats) */
EC_INLINE void grad_terms_body(const float *gy, int gy_last, const patch_geometry *d,
                               float *work, float half, float *r) {
    const int64_t plane = d->oh * d->ow;
    channel_sums(gy, gy_last, d->g * d->co, d->co, d->g, plane, 0, work);
    for (int64_t k = 0; k < d->g * plane; k++) work[k] = -work[k] * half;
    for (int64_t j = 0; j < d->g; j++)
        window_transpose(work + j * plane, d, work + d->g * plane, r + j * d->h * d->w);
}

/* backward: gx = r * (2 x), or with add gx = gx + r * (2 x) (the product rounded, then added);
 * unit = a channel plane (t = i c + j cg + k), or channels-last a row of pixels (t = i h + y) */
EC_INLINE void grad_store_body(const float *x, int x_last, const float *r, float *gx, int add,
                               const patch_geometry *d, int64_t t) {
    const int64_t in_plane = d->h * d->w, cg = d->c / d->g;
    if (!x_last) {
        const float *src = x + t * in_plane, *rr = r + (t / cg) * in_plane;
        float *dst = gx + t * in_plane;
        if (add)
            for (int64_t p = 0; p < in_plane; p++) dst[p] = dst[p] + rr[p] * (2.0f * src[p]);
        else
            for (int64_t p = 0; p < in_plane; p++) dst[p] = rr[p] * (2.0f * src[p]);
        return;
    }
    const int64_t i = t / d->h, row = (t % d->h) * d->w;
    for (int64_t xx = 0; xx < d->w; xx++) {
        const int64_t pix = i * in_plane + row + xx;
        const float *src = x + pix * d->c, *rr = r + i * d->g * in_plane + row + xx;
        float *dst = gx + pix * d->c;
        for (int64_t j = 0; j < d->g; j++) {
            const float v = rr[j * in_plane];
            float *out = dst + j * cg;
            const float *in = src + j * cg;
            if (add)
                for (int64_t k = 0; k < cg; k++) out[k] = out[k] + v * (2.0f * in[k]);
            else
                for (int64_t k = 0; k < cg; k++) out[k] = v * (2.0f * in[k]);
        }
    }
}

typedef struct {
    void (*forward_terms)(const float *, int, const patch_geometry *, float *, float, float *);
    void (*subtract)(float *, int, const float *, const float *, const patch_geometry *,
                     int64_t, int64_t);
    void (*grad_terms)(const float *, int, const patch_geometry *, float *, float, float *);
    void (*grad_store)(const float *, int, const float *, float *, int, const patch_geometry *,
                       int64_t);
} patch_kernels;

#define PATCH_PATH(S, ATTR)                                                                   \
    ATTR static void forward_terms_##S(const float *x, int xl, const patch_geometry *d,      \
                                       float *work, float half, float *terms) {              \
        forward_terms_body(x, xl, d, work, half, terms);                                      \
    }                                                                                         \
    ATTR static void subtract_##S(float *y, int yl, const float *terms, const float *shift,  \
                                  const patch_geometry *d, int64_t i, int64_t u) {           \
        subtract_body(y, yl, terms, shift, d, i, u);                                          \
    }                                                                                         \
    ATTR static void grad_terms_##S(const float *gy, int gl, const patch_geometry *d,        \
                                    float *work, float half, float *r) {                     \
        grad_terms_body(gy, gl, d, work, half, r);                                            \
    }                                                                                         \
    ATTR static void grad_store_##S(const float *x, int xl, const float *r, float *gx,       \
                                    int add, const patch_geometry *d, int64_t t) {           \
        grad_store_body(x, xl, r, gx, add, d, t);                                             \
    }                                                                                         \
    static const patch_kernels patch_##S = {forward_terms_##S, subtract_##S, grad_terms_##S,  \
                                            grad_store_##S};

PATCH_PATH(scalar, )
#ifdef EC_X86
PATCH_PATH(avx2, __attribute__((target("avx2"))))
PATCH_PATH(avx512, __attribute__((target("avx512f"))))
#endif

/* The forward or backward pass: per image the terms (forward: half * P, g planes of the output
 * size; backward: r, g planes of the input size), then the pass over the output (forward:
 * y -= terms) or the input gradient (backward: gx = r * 2 x). */
typedef struct {
    float *y;        /* forward: the output, rewritten; backward: its gradient gy (read) */
    int y_last;
    const float *x;
    int x_last;
    float *gx;       /* backward: the input gradient, written (or added to) */
    int add;         /* backward: add the term to gx instead of writing it */
    const float *shift;  /* forward: per output channel, added before the term, or NULL */
    const float *weight; /* forward without a shift: the shift from these, or NULL */
    const float *bias;   /* (NULL: no bias) */
    float half;
} patch_io;

static int run_patch(const patch_geometry *d, const patch_io *io, int backward, int path,
                     int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    if (!geometry_ok(d)) return EC_BAD_ARGUMENT;
    const patch_kernels *k = EC_PICK(path, &patch_scalar, &patch_avx2, &patch_avx512);
    const int64_t n = d->n, g = d->g, plane = d->oh * d->ow, in_plane = d->h * d->w;
    const int64_t per_image = g * (backward ? in_plane : plane);
    const int64_t work_size = backward
        ? g * plane + ((d->oh - 1) * d->sh + 2 * d->kh - 1) * ((d->ow - 1) * d->sw + 2 * d->kw - 1)
        : g * in_plane + (d->h + 2 * d->ph) * (d->w + 2 * d->pw);
    const int64_t units = backward ? (io->x_last ? n * d->h : n * d->c)
                                   : (io->y_last ? n * d->oh : n * g * d->co);
    const int64_t channels = g * d->co;
    const int nt = ec_threads(threads);
    /* forward with an image per thread at least: image by image, the terms of one in the
     * thread's work; else the terms of every image, then the pass over y / gx by units */
    const int by_image = !backward && n >= nt;
    /* the terms, then (forward from a weight) the shift's channels */
    const int from_weight = !backward && !io->shift && io->weight;
    float *terms = malloc((size_t)((by_image ? 0 : n * per_image) +
                                   (from_weight ? channels : 0) + 1) * sizeof(float));
    if (!terms) return EC_OUT_OF_MEMORY;
    const float *shift = io->shift;
    if (from_weight) {  /* k outer, channels inner: independent sums, one pass over w */
        float *sq = terms + (by_image ? 0 : n * per_image);
        const int64_t len = (d->c / g) * d->kh * d->kw;
        for (int64_t j = 0; j < channels; j++) sq[j] = io->weight[j * len] * io->weight[j * len];
        for (int64_t k = 1; k < len; k++)
            for (int64_t j = 0; j < channels; j++)
                sq[j] = sq[j] + io->weight[j * len + k] * io->weight[j * len + k];
        for (int64_t j = 0; j < channels; j++)
            sq[j] = io->bias ? io->bias[j] - io->half * sq[j] : -(io->half * sq[j]);
        shift = sq;
    }
    const int64_t image_units = units / (n > 0 ? n : 1);
    int failed = 0;
#pragma omp parallel num_threads(nt) if (n * d->c * in_plane > 32768)
    {
        float *work = malloc((size_t)(work_size + (by_image ? per_image : 0)) * sizeof(float));
        if (!work) {
#pragma omp atomic write
            failed = 1;
        }
        if (by_image) {
            float *mine = work + work_size;
            /* the last images first: the convolution read and wrote them last, so parts of
             * their x and y may still be in the caches */
#pragma omp for schedule(static)
            for (int64_t r = 0; r < n; r++) {
                if (!work) continue;
                const int64_t i = n - 1 - r;
                k->forward_terms(io->x + i * d->c * in_plane, io->x_last, d, work, io->half,
                                 mine);
                for (int64_t u = 0; u < image_units; u++)
                    k->subtract(io->y, io->y_last, mine, shift, d, i, u);
            }
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                if (!work) continue;
                if (backward)
                    k->grad_terms(io->y + i * g * d->co * plane, io->y_last, d, work, io->half,
                                  terms + i * per_image);
                else
                    k->forward_terms(io->x + i * d->c * in_plane, io->x_last, d, work,
                                     io->half, terms + i * per_image);
            }
            /* (the loop's implicit barrier: every term is written) */
            if (!failed) {
#pragma omp for schedule(static)
                for (int64_t q = 0; q < units; q++) {
                    const int64_t i = q / image_units;
                    if (backward)
                        k->grad_store(io->x, io->x_last, terms, io->gx, io->add, d, q);
                    else
                        k->subtract(io->y, io->y_last, terms + i * per_image, shift, d, i,
                                    q - i * image_units);
                }
            }
        }
        free(work);
    }
    free(terms);
    return failed ? EC_OUT_OF_MEMORY : EC_OK;
}

/* The arguments that stay fixed for one layer and one input shape, passed as one pointer (a
 * ctypes call converts each argument anew: twenty of them cost as much as the term itself at
 * batch 4 on small maps). y_last is the output's layout (backward: its gradient's), x_last the
 * input's (and the input gradient's). Mirrored by edgecompress.kernels._loader.PatchPlan: keep
 * the field order. */
typedef struct {
    patch_geometry d;
    int32_t y_last, x_last, path, threads;
} ec_patch_plan;

/* y rewritten, x read; both (n, c, h, w) / (n, g co, oh, ow) or channels-last; shift (g co
 * floats) or NULL; without a shift, weight (g co, cg, kh, kw) contiguous, whose shift with bias
 * (g co floats, or NULL) is added, or NULL: no shift. */
EC_EXPORT int ec_euclid_patch_planned(const ec_patch_plan *p, float *y, const float *x,
                                      const float *shift, const float *weight,
                                      const float *bias, float half) {
    const patch_io io = {y, p->y_last, x, p->x_last, NULL, 0, shift, weight, bias, half};
    return run_patch(&p->d, &io, 0, p->path, p->threads);
}

/* gx written (x's shape and layout) from gy (y's shape) and x, or with add added to gx (say
 * the convolution's own input gradient, in x's layout). */
EC_EXPORT int ec_euclid_patch_grad_planned(const ec_patch_plan *p, const float *gy,
                                           const float *x, float *gx, int add, float half) {
    const patch_io io = {(float *)gy, p->y_last, x, p->x_last, gx, add, NULL, NULL, NULL,
                         half};  /* gy is only read */
    return run_patch(&p->d, &io, 1, p->path, p->threads);
}
