/*
 * The window of one output pixel of a binary convolution over packed channels-last pixels
 * (im2col.c), shared by the im2col kernel and the implicit-GEMM convolution (gemm_w1a1.c),
 * which reads the windows in place (from a zero-bordered copy when padded) and gathers those
 * that overlap the zero padding only where it cannot correct for it.
 */
#ifndef EDGECOMPRESS_IM2COL_H
#define EDGECOMPRESS_IM2COL_H

#include "kernels.h"

/* Geometry of a convolution over packed pixels (n, h, w, ceil(c / 64)) words. */
typedef struct {
    int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
} conv_window;

static inline int64_t conv_out_h(const conv_window *g) {
    return (g->h + 2 * g->ph - g->dh * (g->kh - 1) - 1) / g->sh + 1;
}

static inline int64_t conv_out_w(const conv_window *g) {
    return (g->w + 2 * g->pw - g->dw * (g->kw - 1) - 1) / g->sw + 1;
}

/* An output pixel: image, row, column. */
typedef struct {
    int64_t img, y, x;
} conv_pixel;

/* Output pixel r (rows of the GEMM are the output pixels in (image, row, column) order). */
static inline conv_pixel conv_pixel_of(const conv_window *g, int64_t r) {
    const int64_t oh = conv_out_h(g), ow = conv_out_w(g);
    return (conv_pixel){r / (oh * ow), r / ow % oh, r % ow};
}

/* The output pixel after p (no divisions: the GEMM walks rows in order). */
static inline void conv_pixel_next(const conv_window *g, conv_pixel *p) {
    if (++p->x < conv_out_w(g)) return;
    p->x = 0;
    if (++p->y < conv_out_h(g)) return;
    p->y = 0;
    p->img++;
}

/* The first pixel word of p's window (its top-left tap) when the window lies inside the image,
 * else NULL: then the window overlaps the padding. */
static inline const uint64_t *ec_window_inside(const conv_window *g, const uint64_t *px,
                                               conv_pixel p) {
    const int64_t y0 = p.y * g->sh - g->ph, x0 = p.x * g->sw - g->pw;
    if (y0 < 0 || y0 + (g->kh - 1) * g->dh >= g->h || x0 < 0 || x0 + (g->kw - 1) * g->dw >= g->w)
        return NULL;
    return px + ((p.img * g->h + y0) * g->w + x0) * ((g->c + 63) / 64);
}

/* The all-valid mask row: kh * kw groups of cw words with the channel bits set (malloc'd). */
uint64_t *ec_window_full_mask(const conv_window *g);

/* The im2col row of p (kh * kw * cw words, (kernel row, kernel column, channel) order) into
 * dst and, when mdst is not NULL, its validity mask: padding taps get 0 words and a 0 mask. */
void ec_window_row(const conv_window *g, const uint64_t *px, conv_pixel p, uint64_t *dst,
                   uint64_t *mdst);

/* The exported operands (im2col.c, pack.c), for the planned convolution of gemm_w1a1.c. */
int ec_pack_signs(const float *x, const float *off, int64_t rows, int64_t k, uint64_t *out,
                  int path);
int ec_pack_pixels(const float *x, int last, int64_t n, int64_t c, int64_t h, int64_t w,
                   int64_t sh, int64_t sw, int64_t oh, int64_t ow, uint64_t *out, int path,
                   int threads);
void ec_im2col_words(const uint64_t *px, int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh,
                     int64_t kw_, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                     int64_t dw, uint64_t *rows, uint64_t *mask);

#endif /* EDGECOMPRESS_IM2COL_H */
