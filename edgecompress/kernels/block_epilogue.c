/*
 * The float epilogue of a binary linear block (BinaryViT's BinaryLinearBlock), in place on
 * the rows y (M x C) of the binary GEMM's output, one pass over memory:
 *
 *   v = fma(y, a[c], b[c])            the eval-mode BatchNorm as torch's CPU kernel computes it
 *                                     (a = invstd * weight, b = bias - mean * a, one rounding)
 *   v = v + res[i, c % rc]            the real-valued shortcut (rc = C, or rc dividing C: the
 *                                     input repeated C / rc times), skipped when res is NULL;
 *   v = v + mean_g res[i, g C + c]    or, when rc = k C (a narrowing block), the mean of its k
 *                                     groups as torch's mean over them computes it: a sum from
 *                                     0 in group order (torch's CPU sum adds fewer than 16 terms
 *                                     one by one), then divided by k
 *   u = v - g[c]                      RPReLU: PReLU(v - g) + z, each operation rounded as torch
 *   y = (u >= 0 ? u : slope[c] * u) + z[c]
 *   y = out_res[i, c] + (y * s[c] + t[c])   when out_res is given: the transformer block's
 *                                     per-channel affine and residual addition after the
 *                                     attention or MLP (``x + A(f(x))``), as torch's mul, add,
 *                                     add
 *
 * Apart from the explicit fma, every operation is separate and rounded (ISO C: no contraction),
 * so every path equals the training form's torch operations bit for bit.
 */
#include <math.h>

#include "kernels.h"

typedef struct {
    const float *a, *b, *g, *slope, *z;
    const float *s, *t;  /* the block's affine after the epilogue (with an out_res only) */
} block_params;

/* Columns [c0, c0 + n) of one row; r: the shortcut values of those columns (or NULL); o: the
 * block residual of those columns (or NULL). */
static void segment_scalar(float *y, const float *r, const float *o, const block_params *p,
                           int64_t c0, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        const int64_t c = c0 + j;
        float v = fmaf(y[j], p->a[c], p->b[c]);
        if (r) v = v + r[j];
        const float u = v - p->g[c];
        float w = (u >= 0.0f ? u : p->slope[c] * u) + p->z[c];
        if (o) {
            const float scaled = w * p->s[c];
            w = o[j] + (scaled + p->t[c]);
        }
        y[j] = w;
    }
}

#ifdef EC_X86
__attribute__((target("avx2,fma")))
static void segment_avx2(float *y, const float *r, const float *o, const block_params *p,
                         int64_t c0, int64_t n) {
    int64_t j = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        const int64_t c = c0 + j;
        __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(y + j), _mm256_loadu_ps(p->a + c),
                                   _mm256_loadu_ps(p->b + c));
        if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r + j));
        const __m256 u = _mm256_sub_ps(v, _mm256_loadu_ps(p->g + c));
        const __m256 neg = _mm256_mul_ps(_mm256_loadu_ps(p->slope + c), u);
        const __m256 w = _mm256_blendv_ps(neg, u, _mm256_cmp_ps(u, zero, _CMP_GE_OQ));
        __m256 out = _mm256_add_ps(w, _mm256_loadu_ps(p->z + c));
        if (o)
            out = _mm256_add_ps(_mm256_loadu_ps(o + j),
                                _mm256_add_ps(_mm256_mul_ps(out, _mm256_loadu_ps(p->s + c)),
                                              _mm256_loadu_ps(p->t + c)));
        _mm256_storeu_ps(y + j, out);
    }
    if (j < n) segment_scalar(y + j, r ? r + j : NULL, o ? o + j : NULL, p, c0 + j, n - j);
}

__attribute__((target("avx512f")))
static void segment_avx512(float *y, const float *r, const float *o, const block_params *p,
                           int64_t c0, int64_t n) {
    for (int64_t j = 0; j < n; j += 16) {
        const int64_t c = c0 + j, left = n - j;
        const __mmask16 keep = (__mmask16)(left >= 16 ? 0xffff : ((1u << left) - 1));
        __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(keep, y + j),
                                   _mm512_maskz_loadu_ps(keep, p->a + c),
                                   _mm512_maskz_loadu_ps(keep, p->b + c));
        if (r) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, r + j));
        const __m512 u = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(keep, p->g + c));
        const __m512 neg = _mm512_mul_ps(_mm512_maskz_loadu_ps(keep, p->slope + c), u);
        const __mmask16 ge = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_GE_OQ);
        const __m512 w = _mm512_mask_blend_ps(ge, neg, u);
        __m512 out = _mm512_add_ps(w, _mm512_maskz_loadu_ps(keep, p->z + c));
        if (o)
            out = _mm512_add_ps(
                _mm512_maskz_loadu_ps(keep, o + j),
                _mm512_add_ps(_mm512_mul_ps(out, _mm512_maskz_loadu_ps(keep, p->s + c)),
                              _mm512_maskz_loadu_ps(keep, p->t + c)));
        _mm512_mask_storeu_ps(y + j, keep, out);
    }
}
#endif

/* The narrowing shortcut of one row: out[c] = (0 + res[c] + res[C + c] + ...) / k. */
static void group_mean(const float *res, int64_t c, int64_t k, float *out) {
    for (int64_t j = 0; j < c; j++) out[j] = 0.0f;
    for (int64_t g = 0; g < k; g++)
        for (int64_t j = 0; j < c; j++) out[j] = out[j] + res[g * c + j];
    const float kf = (float)k;
    for (int64_t j = 0; j < c; j++) out[j] = out[j] / kf;
}

/* y: M x C floats, rewritten; res: M x rc floats or NULL (rc divides C, or C divides rc: the
 * mean of its rc / C groups); a, b, g, slope, z: C values each; out_res: M x C floats or NULL,
 * with s, t: C values each. */
EC_EXPORT int ec_block_epilogue(float *y, const float *res, int64_t m, int64_t c, int64_t rc,
                                const float *a, const float *b, const float *g,
                                const float *slope, const float *z, const float *out_res,
                                const float *s, const float *t, int path, int threads) {
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    if ((res && (rc < 1 || (c % rc && rc % c))) || (out_res && (!s || !t)))
        return EC_BAD_ARGUMENT;
    void (*const segment)(float *, const float *, const float *, const block_params *, int64_t,
                          int64_t) = EC_PICK(path, segment_scalar, segment_avx2, segment_avx512);
    const block_params p = {a, b, g, slope, z, s, t};
    if (res && rc > c) {  /* narrowing: the mean of the groups, one row at a time */
        int failed = 0;
#pragma omp parallel num_threads(ec_threads(threads)) if (m * rc > 32768)
        {
            float *mean = malloc((size_t)c * sizeof(float));
            if (!mean) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++)
                if (mean) {
                    group_mean(res + i * rc, c, rc / c, mean);
                    segment(y + i * c, mean, out_res ? out_res + i * c : NULL, &p, 0, c);
                }
            free(mean);
        }
        return failed ? EC_OUT_OF_MEMORY : EC_OK;
    }
    const int64_t width = res ? rc : c;
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) if (m * c > 32768)
    for (int64_t i = 0; i < m; i++)
        for (int64_t c0 = 0; c0 < c; c0 += width)
            segment(y + i * c + c0, res ? res + i * rc : NULL,
                    out_res ? out_res + i * c + c0 : NULL, &p, c0, width);
    return EC_OK;
}
