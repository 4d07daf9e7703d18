/*
 * The window of one output pixel of a binary convolution over packed channels-last pixels
 * (im2col.c), shared by the im2col kernel and the implicit-GEMM convolution (gemm_w1a1.c),
 * which reads the windows in place and gathers only the ones that overlap the zero padding.
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

/* The first pixel word of output pixel r's window (its top-left tap) when the window lies inside
 * the image, else NULL: then the window overlaps the padding. */
const uint64_t *ec_window_inside(const conv_window *g, const uint64_t *px, int64_t r);

/* The all-valid mask row: kh * kw groups of cw words with the channel bits set (malloc'd). */
uint64_t *ec_window_full_mask(const conv_window *g);

/* Im2col row r (kh * kw * cw words, (kernel row, kernel column, channel) order) into dst and,
 * when mdst is not NULL, its validity mask: padding taps get 0 words and a 0 mask. */
void ec_window_row(const conv_window *g, const uint64_t *px, int64_t r, uint64_t *dst,
                   uint64_t *mdst);

#endif /* EDGECOMPRESS_IM2COL_H */
