/*
 * What the W1A1 GEMM (gemm_w1a1.c) and its store epilogues (gemm_w1a1_store.c) share: the tile
 * shape and the description of the output.
 *
 * The GEMM computes tiles of R rows x PANEL columns of popcount sums; a store kernel turns one
 * tile into the requested output: C = valid - 2 popcount, as int32, or through the affine
 * epilogue as float32 and / or its packed signs.
 */
#ifndef EDGECOMPRESS_GEMM_W1A1_H
#define EDGECOMPRESS_GEMM_W1A1_H

#include "kernels.h"

#define PANEL 16  /* columns of B per panel (and per tile) */
#define R 4       /* rows of A per tile */

/* The output of ec_binary_gemm: c, or cf and / or cs (the others NULL). */
typedef struct {
    int32_t *c;                /* int32 dot products */
    float *cf;                 /* float32 affine values */
    uint64_t *cs;              /* packed signs of the affine value: bit 1 where it is < 0 */
    const float *scale, *bias; /* per column, either may be NULL (1 / 0) */
    const float *res;          /* residual added after the affine step (row stride ldc) */
    int clamp;                 /* then clamp to [lo, hi] (a fused hardtanh / ReLU) */
    float lo, hi;
    int64_t ldc, ldw;          /* row strides of c / cf (values) and of cs (words) */
} epilogue;

/* Store one R x PANEL tile of popcount sums acc, whose rows have valid[r] valid positions, at
 * (row, col); rows >= rows_left and columns >= cols are skipped. */
typedef void (*store_kernel)(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                             int64_t row, int64_t col, int rows_left, int cols);

/* The store kernel of a resolved path. */
store_kernel ec_w1a1_store_for(int path);

#endif /* EDGECOMPRESS_GEMM_W1A1_H */
