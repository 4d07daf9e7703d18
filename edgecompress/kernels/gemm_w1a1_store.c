/*
 * The fused store epilogues of the W1A1 GEMM (gemm_w1a1.c): one R x PANEL tile of popcount
 * sums -> C = valid - 2 popcount, written as
 *   - int32 dot products, or
 *   - float32 affine values  (float)C * scale[j] + bias[j], then + res[i, j] and a clamp to
 *     [lo, hi] (a residual addition and a hardtanh / ReLU), and / or
 *   - the signs of those values, packed like pack.c (what the next binary layer reads),
 * in the GEMM's own store loop instead of separate passes over memory.
 *
 * Multiply and add are separate operations, each rounded (no fused multiply-add: the build uses
 * ISO C, where contraction is off, and the AVX-512 body uses separate instructions), so every
 * path equals torch's  C.float() * scale + bias (+ res, .clamp)  bit for bit.
 */
#include "gemm_w1a1.h"

/* OR 16 sign bits of columns col..col+15 into row i of cs (the word is reset by the panel that
 * starts it, so cs needs no clearing; panels of a row are stored in order by one thread). */
static inline void put_signs(const epilogue *e, int64_t i, int64_t col, uint64_t bits) {
    uint64_t *word = e->cs + i * e->ldw + col / 64;
    const int shift = (int)(col % 64);
    if (shift == 0) *word = bits;
    else *word |= bits << shift;
}

static void store_scalar(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                         int64_t row, int64_t col, int rows_left, int cols) {
    for (int r = 0; r < R && r < rows_left; r++) {
        if (e->c) {
            int32_t *ci = e->c + (row + r) * e->ldc + col;
            for (int j = 0; j < cols; j++) ci[j] = valid[r] - 2 * (int32_t)acc[r][j];
        } else {
            float *fi = e->cf ? e->cf + (row + r) * e->ldc + col : NULL;
            uint64_t bits = 0;
            for (int j = 0; j < cols; j++) {
                float v = (float)(valid[r] - 2 * (int32_t)acc[r][j]);
                if (e->scale) v = v * e->scale[col + j];
                if (e->bias) v = v + e->bias[col + j];
                if (e->res) v = v + e->res[(row + r) * e->ldc + col + j];
                if (e->clamp) v = v < e->lo ? e->lo : (v > e->hi ? e->hi : v);
                if (fi) fi[j] = v;
                bits |= (uint64_t)(v < 0.0f) << j;
            }
            if (e->cs) put_signs(e, row + r, col, bits);
        }
    }
}

#ifdef EC_X86
/* AVX2 store of a full panel's float values and / or signs: the scalar store's arithmetic on 8
 * columns at a time (the int32 results, a partial panel: the scalar store). The clamp is
 * max(lo, v) then min(hi, .): with the bound first, a NaN value stays NaN as in the scalar
 * store (x86 max / min return their second operand when either is NaN). */
__attribute__((target("avx2")))
static void store_avx2(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                       int64_t row, int64_t col, int rows_left, int cols) {
    if (e->c || cols < PANEL) {
        store_scalar(e, acc, valid, row, col, rows_left, cols);
        return;
    }
    const __m256 lo = _mm256_set1_ps(e->lo), hi = _mm256_set1_ps(e->hi);
    for (int r = 0; r < R && r < rows_left; r++) {
        const __m256i vr = _mm256_set1_epi32(valid[r]);
        uint64_t bits = 0;
        for (int h = 0; h < 2; h++) {
            /* the popcount sums fit in 32 bits: the low dword of each 64-bit count, picked
             * within 128-bit halves (no lane-crossing permute: slow on AMD Zen 1) */
            const __m128 q0 = _mm_loadu_ps((const float *)&acc[r][8 * h]);
            const __m128 q1 = _mm_loadu_ps((const float *)&acc[r][8 * h + 2]);
            const __m128 q2 = _mm_loadu_ps((const float *)&acc[r][8 * h + 4]);
            const __m128 q3 = _mm_loadu_ps((const float *)&acc[r][8 * h + 6]);
            const __m256i pop = _mm256_castps_si256(_mm256_set_m128(
                _mm_shuffle_ps(q2, q3, _MM_SHUFFLE(2, 0, 2, 0)),
                _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0))));
            const int64_t j = col + 8 * h;
            __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(vr, _mm256_add_epi32(pop, pop)));
            if (e->scale) f = _mm256_mul_ps(f, _mm256_loadu_ps(e->scale + j));
            if (e->bias) f = _mm256_add_ps(f, _mm256_loadu_ps(e->bias + j));
            if (e->res) f = _mm256_add_ps(f, _mm256_loadu_ps(e->res + (row + r) * e->ldc + j));
            if (e->clamp) f = _mm256_min_ps(hi, _mm256_max_ps(lo, f));
            if (e->cf) _mm256_storeu_ps(e->cf + (row + r) * e->ldc + j, f);
            bits |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(f, _mm256_setzero_ps(),
                                                               _CMP_LT_OQ)) << (8 * h);
        }
        if (e->cs) put_signs(e, row + r, col, bits);
    }
}

/* AVX-512 store: the same arithmetic on 16 columns at once (int32 -> float conversion rounds to
 * nearest like the scalar cast; multiply and add are separate, so results are bit-identical). */
__attribute__((target("avx512f")))
static void store_avx512(const epilogue *e, int64_t acc[R][PANEL], const int32_t *valid,
                         int64_t row, int64_t col, int rows_left, int cols) {
    const __mmask16 keep = (__mmask16)((cols >= 16) ? 0xffff : ((1u << cols) - 1));
    __m512 scale = _mm512_set1_ps(1.0f), bias = _mm512_setzero_ps();
    if (e->scale) scale = _mm512_maskz_loadu_ps(keep, e->scale + col);
    if (e->bias) bias = _mm512_maskz_loadu_ps(keep, e->bias + col);
    for (int r = 0; r < R && r < rows_left; r++) {
        const __m256i lo = _mm512_cvtepi64_epi32(_mm512_loadu_si512(&acc[r][0]));
        const __m256i hi = _mm512_cvtepi64_epi32(_mm512_loadu_si512(&acc[r][8]));
        const __m512i pop = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        const __m512i v = _mm512_sub_epi32(_mm512_set1_epi32(valid[r]), _mm512_add_epi32(pop, pop));
        if (e->c) {
            _mm512_mask_storeu_epi32(e->c + (row + r) * e->ldc + col, keep, v);
        } else {
            __m512 f = _mm512_cvtepi32_ps(v);
            if (e->scale) f = _mm512_mul_ps(f, scale);
            if (e->bias) f = _mm512_add_ps(f, bias);
            if (e->res)
                f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(keep, e->res + (row + r) * e->ldc + col));
            if (e->clamp)  /* bound first: a NaN stays NaN (see store_avx2) */
                f = _mm512_min_ps(_mm512_set1_ps(e->hi), _mm512_max_ps(_mm512_set1_ps(e->lo), f));
            if (e->cf) _mm512_mask_storeu_ps(e->cf + (row + r) * e->ldc + col, keep, f);
            if (e->cs) put_signs(e, row + r, col, (uint64_t)(_mm512_cmp_ps_mask(
                                     f, _mm512_setzero_ps(), _CMP_LT_OQ) & keep));
        }
    }
}
#endif

store_kernel ec_w1a1_store_for(int path) {
    return EC_PICK(path, store_scalar, store_avx2, store_avx512);
}
