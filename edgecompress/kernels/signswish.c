/*
 * SignSwish of BNN+ (Darabi et al. 2018) in one pass over memory, for training.
 *
 * With z = beta x and s = sigmoid(z) = 1 / (1 + exp(-z)):
 *     value:       SS(x)  = 2 s (1 + z (1 - s)) - 1
 *     gradient:    g SS'(x) = g 2 beta s (1 - s) (2 + z (1 - 2 s))
 *     ProxConnect: clip(v + mu sign(v), -1, 1) of v = SS(x), sign(v) = +1 for v >= 0
 *                  (the forward of bnn++ in one pass instead of a dozen tensor operations).
 * In PyTorch each of these is a chain of elementwise tensor operations, each a full pass over
 * memory; a W1A1 network runs them on every weight and every activation at every step.
 *
 * Three paths: 0 portable scalar (libm expf), 1 AVX2 + FMA, 2 AVX-512F.
 * The vector paths compute exp with a degree-6 polynomial on the reduced argument (relative
 * error about 2 ulp), so they agree with the scalar path and with torch to float rounding, not
 * bit for bit. OpenMP splits long arrays into chunks.
 */
#include <math.h>

#include "kernels.h"

enum { SS_VALUE = 0, SS_PROX = 1, SS_GRAD = 2 };

/* Largest |z| passed to exp: beyond it s is 0 or 1 to float precision anyway. */
#define SS_ZMAX 87.0f

static inline float ss_scalar(float x, float g, float beta, float mu, int op) {
    float z = beta * x;
    float zc = z > SS_ZMAX ? SS_ZMAX : (z < -SS_ZMAX ? -SS_ZMAX : z);
    float s = 1.0f / (1.0f + expf(-zc));
    if (op == SS_GRAD) return g * (2.0f * beta) * s * (1.0f - s) * (2.0f + z * (1.0f - 2.0f * s));
    float v = 2.0f * s * (1.0f + z * (1.0f - s)) - 1.0f;
    if (op == SS_PROX) {
        v += v >= 0.0f ? mu : -mu;
        v = v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v);
    }
    return v;
}

static void ss_run_scalar(const float *x, const float *g, float *out, int64_t n, float beta,
                          float mu, int op) {
    for (int64_t i = 0; i < n; i++) out[i] = ss_scalar(x[i], g ? g[i] : 0.0f, beta, mu, op);
}

/* exp(r) for the reduced r in [-ln2/2, ln2/2]: Cephes' expf polynomial, 1 + r + r^2 p(r). */
#define SS_P0 1.9875691500e-4f
#define SS_P1 1.3981999507e-3f
#define SS_P2 8.3334519073e-3f
#define SS_P3 4.1665795894e-2f
#define SS_P4 1.6666665459e-1f
#define SS_P5 5.0000001201e-1f
#define SS_LOG2E 1.44269504088896341f
#define SS_LN2_HI 0.693359375f
#define SS_LN2_LO -2.12194440e-4f

#ifdef EC_X86
__attribute__((target("avx2,fma")))
static inline __m256 exp_avx2(__m256 x) {  /* x in [-87, 87] */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(SS_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(SS_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(SS_LN2_LO), r);
    __m256 p = _mm256_set1_ps(SS_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SS_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SS_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SS_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SS_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SS_P5));
    __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));  /* n in [-126, 126]: a normal 2^n */
}

__attribute__((target("avx2,fma")))
static void ss_run_avx2(const float *x, const float *g, float *out, int64_t n, float beta,
                        float mu, int op) {
    const __m256 vb = _mm256_set1_ps(beta), one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    const __m256 zmax = _mm256_set1_ps(SS_ZMAX), zmin = _mm256_set1_ps(-SS_ZMAX);
    const __m256 vmu = _mm256_set1_ps(mu), sgn = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_mul_ps(vb, _mm256_loadu_ps(x + i));
        __m256 zc = _mm256_max_ps(_mm256_min_ps(z, zmax), zmin);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), zc))));
        __m256 r;
        if (op == SS_GRAD) {
            __m256 t = _mm256_fmadd_ps(z, _mm256_fnmadd_ps(two, s, one), two);  /* 2 + z (1 - 2s) */
            __m256 d = _mm256_mul_ps(_mm256_mul_ps(s, _mm256_sub_ps(one, s)), t);
            r = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(two, vb)), d);
        } else {
            r = _mm256_fmsub_ps(_mm256_mul_ps(two, s), _mm256_fmadd_ps(z, _mm256_sub_ps(one, s), one), one);
            if (op == SS_PROX) {
                /* +mu where r >= 0, -mu where r < 0 (-0.0 >= 0 holds, like sign()) */
                __m256 neg = _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_LT_OQ);
                r = _mm256_add_ps(r, _mm256_or_ps(vmu, _mm256_and_ps(neg, sgn)));
                r = _mm256_max_ps(_mm256_min_ps(r, one), _mm256_sub_ps(_mm256_setzero_ps(), one));
            }
        }
        _mm256_storeu_ps(out + i, r);
    }
    if (i < n) ss_run_scalar(x + i, g ? g + i : 0, out + i, n - i, beta, mu, op);
}

__attribute__((target("avx512f")))
static inline __m512 exp_avx512(__m512 x) {  /* x in [-87, 87] */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(SS_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(SS_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(SS_LN2_LO), r);
    __m512 p = _mm512_set1_ps(SS_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SS_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SS_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SS_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SS_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SS_P5));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

__attribute__((target("avx512f")))
static void ss_run_avx512(const float *x, const float *g, float *out, int64_t n, float beta,
                          float mu, int op) {
    const __m512 vb = _mm512_set1_ps(beta), one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    const __m512 zmax = _mm512_set1_ps(SS_ZMAX), zmin = _mm512_set1_ps(-SS_ZMAX);
    const __m512 vmu = _mm512_set1_ps(mu), nmu = _mm512_set1_ps(-mu);
    int64_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 m = (n - i) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 z = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, x + i));
        __m512 zc = _mm512_max_ps(_mm512_min_ps(z, zmax), zmin);
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), zc))));
        __m512 r;
        if (op == SS_GRAD) {
            __m512 t = _mm512_fmadd_ps(z, _mm512_fnmadd_ps(two, s, one), two);
            __m512 d = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_sub_ps(one, s)), t);
            r = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + i), _mm512_mul_ps(two, vb)), d);
        } else {
            r = _mm512_fmsub_ps(_mm512_mul_ps(two, s), _mm512_fmadd_ps(z, _mm512_sub_ps(one, s), one), one);
            if (op == SS_PROX) {
                __mmask16 neg = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_LT_OQ);
                r = _mm512_add_ps(r, _mm512_mask_blend_ps(neg, vmu, nmu));
                r = _mm512_max_ps(_mm512_min_ps(r, one), _mm512_sub_ps(_mm512_setzero_ps(), one));
            }
        }
        _mm512_mask_storeu_ps(out + i, m, r);
    }
}
#endif

typedef void (*ss_run)(const float *x, const float *g, float *out, int64_t n, float beta,
                       float mu, int op);

/* out = op(x) for n floats (g: the incoming gradient, read only for SS_GRAD; out may alias x or
 * g). Returns EC_OK, EC_BAD_ARGUMENT for an unknown op, or EC_UNSUPPORTED_PATH. */
EC_EXPORT int ec_signswish(const float *x, const float *g, float *out, int64_t n, float beta,
                           float mu, int op, int path, int threads) {
    if (op < SS_VALUE || op > SS_GRAD) return EC_BAD_ARGUMENT;
    path = ec_resolve_path(path);
    if (path < 0) return EC_UNSUPPORTED_PATH;
    const ss_run run = EC_PICK(path, ss_run_scalar, ss_run_avx2, ss_run_avx512);
    const int64_t chunk = 16384;  /* a multiple of 16: every chunk but the last is whole vectors */
    const int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) num_threads(ec_threads(threads)) if (chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t lo = c * chunk, len = (n - lo) < chunk ? (n - lo) : chunk;
        run(x + lo, g ? g + lo : 0, out + lo, len, beta, mu, op);
    }
    return EC_OK;
}
