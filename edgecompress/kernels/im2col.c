/*
 * Operands of a binary convolution. It runs as the W1A1 GEMM (gemm_w1a1.c) on im2col rows in
 * (kernel row, kernel column, channel) order with the channels of one input pixel packed in
 * cw = ceil(C / 64) words (pack.c's encoding): a row is the kh * kw groups of cw words of the
 * pixels under the kernel. The weights are packed in the same order (see pack_conv_weights in
 * Python). Unused channel bits are 0 on both sides, so they add nothing; pixels in the zero
 * padding get 0 words and a 0 mask.
 */
#include "im2col.h"

/* the mask word of channel word q of a real pixel */
static inline uint64_t channel_bits(const conv_window *g, int64_t q) {
    const int64_t cw = (g->c + 63) / 64;
    if (q < cw - 1 || (g->c & 63) == 0) return ~(uint64_t)0;
    return ((uint64_t)1 << (g->c & 63)) - 1;
}

uint64_t *ec_window_full_mask(const conv_window *g) {
    const int64_t cw = (g->c + 63) / 64, row_words = g->kh * g->kw * cw;
    uint64_t *full = malloc((size_t)(row_words > 0 ? row_words : 1) * sizeof(uint64_t));
    if (full)
        for (int64_t q = 0; q < row_words; q++) full[q] = channel_bits(g, q % cw);
    return full;
}

void ec_window_row(const conv_window *g, const uint64_t *px, conv_pixel p, uint64_t *dst,
                   uint64_t *mdst) {
    const int64_t cw = (g->c + 63) / 64, img = p.img;
    const int64_t y0 = p.y * g->sh - g->ph, x0 = p.x * g->sw - g->pw;
    for (int64_t i = 0; i < g->kh; i++) {
        const int64_t y = y0 + i * g->dh;
        const int inside_y = y >= 0 && y < g->h;
        for (int64_t j = 0; j < g->kw; j++) {
            const int64_t xx = x0 + j * g->dw;
            const int64_t off = (i * g->kw + j) * cw;
            if (!inside_y || xx < 0 || xx >= g->w) {
                for (int64_t q = 0; q < cw; q++) dst[off + q] = 0;
                if (mdst)
                    for (int64_t q = 0; q < cw; q++) mdst[off + q] = 0;
            } else {
                const uint64_t *src = px + ((img * g->h + y) * g->w + xx) * cw;
                for (int64_t q = 0; q < cw; q++) dst[off + q] = src[q];
                if (mdst)
                    for (int64_t q = 0; q < cw; q++) mdst[off + q] = channel_bits(g, q);
            }
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
    const conv_window g = {n, c, h, w, kh, kw_, sh, sw, ph, pw, dh, dw};
    const int64_t cw = (c + 63) / 64, oh = conv_out_h(&g), ow = conv_out_w(&g);
    const int64_t row_words = kh * kw_ * cw;
    /* the mask row of a window inside the image (if malloc fails: the checked path for all) */
    uint64_t *full = mask ? ec_window_full_mask(&g) : NULL;
#pragma omp parallel for schedule(static) if (n * oh * ow * row_words > 8192)
    for (int64_t line = 0; line < n * oh; line++) {   /* one output row of one image */
        for (int64_t ox = 0; ox < ow; ox++) {
            const conv_pixel p = {line / oh, line % oh, ox};
            const int64_t r = line * ow + ox;
            const uint64_t *src = ec_window_inside(&g, px, p);
            uint64_t *dst = rows + r * row_words;
            uint64_t *mdst = mask ? mask + r * row_words : NULL;
            if (src == NULL || (mdst && !full)) {
                ec_window_row(&g, px, p, dst, mdst);
                continue;
            }
            for (int64_t i = 0; i < kh; i++) {
                const uint64_t *s = src + i * dh * w * cw;
                uint64_t *d = dst + i * kw_ * cw;
                if (dw == 1) {
                    for (int64_t q = 0; q < kw_ * cw; q++) d[q] = s[q];
                } else {
                    for (int64_t j = 0; j < kw_; j++)
                        for (int64_t q = 0; q < cw; q++) d[j * cw + q] = s[j * dw * cw + q];
                }
            }
            if (mdst) memcpy(mdst, full, (size_t)row_words * sizeof(uint64_t));
        }
    }
    free(full);
}
