/*
 * Operands of a binary convolution. It runs as the W1A1 GEMM (gemm_w1a1.c) on im2col rows in
 * (kernel row, kernel column, channel) order with the channels of one input pixel packed in
 * cw = ceil(C / 64) words (pack.c's encoding): a row is the kh * kw groups of cw words of the
 * pixels under the kernel. The weights are packed in the same order (see pack_conv_weights in
 * Python). Unused channel bits are 0 on both sides, so they add nothing; pixels in the zero
 * padding get 0 words and a 0 mask.
 */
#include "kernels.h"

/* x: (n, c, h, w) float -> out: (n, h, w, cw) words, bit 1 where x < 0. */
EC_EXPORT void ec_pack_channels(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                uint64_t *out) {
    const int64_t cw = (c + 63) / 64, hw = h * w;
#pragma omp parallel for schedule(static) if (n * c * hw > 65536)
    for (int64_t img = 0; img < n; img++) {
        uint64_t *o = out + img * hw * cw;
        memset(o, 0, (size_t)(hw * cw) * sizeof(uint64_t));
        for (int64_t ch = 0; ch < c; ch++) {
            const float *plane = x + (img * c + ch) * hw;
            const uint64_t bit = (uint64_t)1 << (ch & 63);
            const int64_t word = ch >> 6;
            for (int64_t p = 0; p < hw; p++)
                if (plane[p] < 0.0f) o[p * cw + word] |= bit;
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
    const int64_t cw = (c + 63) / 64;
    const int64_t oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    const int64_t ow = (w + 2 * pw - dw * (kw_ - 1) - 1) / sw + 1;
    const int64_t row_words = kh * kw_ * cw;
    const uint64_t last = (c & 63) ? (((uint64_t)1 << (c & 63)) - 1) : ~(uint64_t)0;
    /* the mask row of a window inside the image (if malloc fails: the checked path for all) */
    uint64_t *full = mask ? malloc((size_t)row_words * sizeof(uint64_t)) : NULL;
    if (full)
        for (int64_t q = 0; q < row_words; q++) full[q] = (q % cw == cw - 1) ? last : ~(uint64_t)0;
#pragma omp parallel for schedule(static) if (n * oh * ow * row_words > 8192)
    for (int64_t line = 0; line < n * oh; line++) {   /* one output row of one image */
        const int64_t img = line / oh, oy = line % oh;
        const int64_t y0 = oy * sh - ph;
        const int rows_inside = y0 >= 0 && y0 + (kh - 1) * dh < h;
        for (int64_t ox = 0; ox < ow; ox++) {
            const int64_t r = line * ow + ox;
            const int64_t x0 = ox * sw - pw;
            uint64_t *dst = rows + r * row_words;
            uint64_t *mdst = mask ? mask + r * row_words : NULL;
            if (rows_inside && x0 >= 0 && x0 + (kw_ - 1) * dw < w && (!mdst || full)) {
                for (int64_t i = 0; i < kh; i++) {
                    const uint64_t *src = px + ((img * h + y0 + i * dh) * w + x0) * cw;
                    uint64_t *d = dst + i * kw_ * cw;
                    if (dw == 1) {
                        for (int64_t q = 0; q < kw_ * cw; q++) d[q] = src[q];
                    } else {
                        for (int64_t j = 0; j < kw_; j++)
                            for (int64_t q = 0; q < cw; q++) d[j * cw + q] = src[j * dw * cw + q];
                    }
                }
                if (mdst) memcpy(mdst, full, (size_t)row_words * sizeof(uint64_t));
                continue;
            }
            for (int64_t i = 0; i < kh; i++) {
                const int64_t y = y0 + i * dh;
                const int inside_y = y >= 0 && y < h;
                for (int64_t j = 0; j < kw_; j++) {
                    const int64_t xx = x0 + j * dw;
                    const int64_t off = (i * kw_ + j) * cw;
                    if (!inside_y || xx < 0 || xx >= w) {
                        for (int64_t q = 0; q < cw; q++) dst[off + q] = 0;
                        if (mdst)
                            for (int64_t q = 0; q < cw; q++) mdst[off + q] = 0;
                    } else {
                        const uint64_t *src = px + ((img * h + y) * w + xx) * cw;
                        for (int64_t q = 0; q < cw; q++) dst[off + q] = src[q];
                        if (mdst) {
                            for (int64_t q = 0; q < cw - 1; q++) mdst[off + q] = ~(uint64_t)0;
                            mdst[off + cw - 1] = last;
                        }
                    }
                }
            }
        }
    }
    free(full);
}

