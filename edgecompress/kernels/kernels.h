/*
 * Shared prologue of the edgecompress C kernels: one shared library (_kernels*.so, built by
 * setup.py from the .c files next to this header) loaded from Python with ctypes (_loader.py).
 *
 *   cpu.c               which instruction-set path this CPU runs
 *   pack.c              float rows -> packed sign bits (also per attention head, in place)
 *   im2col.c            packed pixels and im2col rows of a binary convolution
 *   gemm_w1a1.c         XNOR/XOR-popcount GEMM on packed +-1 rows (W1A1), weight panels; a
 *                       batch of same-shape GEMMs (binary attention's q k^T per head); the
 *                       implicit-GEMM convolution, and a frozen layer's planned convolution
 *                       (packing, gathering and GEMM in one call)
 *   gemm_w1a1_store.c   its fused store epilogues (int32, affine/residual/clamp, packed signs)
 *   gemm_w1a32.c        sign-select GEMM: +-1 weights times float activations (W1A32)
 *   gemm_lowbit.c       2-4-bit weight codes, decoded through a value table in registers,
 *                       times float activations (shift and uniform n-bit layers at batch <= 16)
 *   attention.c         {0, a} x +-1 product of binary attention (AND-popcount on bit masks)
 *   attention_pack.c    its operands packed straight from the floats: the {0, a} probability
 *                       masks and the values' signs along the keys
 *   signswish.c         BNN+'s SignSwish in one pass, for training
 *   conv_f32.c          float32 direct convolution (3x3 / 1x1 ...) with a fused epilogue;
 *                       also AdderNet's L1 form (-sum |x - w| per output)
 *   adder_grad.c        AdderNet's input gradient of that L1 form (HardTanh of w - x)
 *   block_epilogue.c    BatchNorm + shortcut + RPReLU after a binary linear (BinaryViT's block)
 *   pool_branches.c     BinaryViT's four scaled average-pooling branches on channel-last tokens
 *   max_pool.c          float32 max-pooling of channels-last maps (a ResNet stem's 3x3 / 2 pool)
 *   int8_conv.c         integer convolution of <= 8-bit weight and input codes (uniform n-bit
 *                       layers with quantized inputs): AVX-512 VNNI, AVX2 vpmaddwd, scalar
 *   euclid_patch.c      EuclidNet's per-patch ||x||^2 term, subtracted in place from the conv
 *                       output with the per-channel b - theta/2 ||w||^2; its input gradient
 *
 * Conventions of every exported function (EC_EXPORT; everything else is hidden):
 *   - path: EC_PATH_SCALAR, EC_PATH_AVX2 or EC_PATH_AVX512, or < 0 for the best this CPU runs;
 *     a function with a path argument resolves it with ec_resolve_path and picks its body with
 *     EC_PICK, so a path the CPU cannot run is refused, never executed;
 *   - threads: OpenMP threads, <= 0 for the OpenMP default (ec_threads);
 *   - an int result is EC_OK or a negative EC_* status below; _loader.py turns each status into
 *     its Python exception (keep the two lists in step).
 */
#ifndef EDGECOMPRESS_KERNELS_H
#define EDGECOMPRESS_KERNELS_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EC_X86 1
#endif

#define EC_EXPORT __attribute__((visibility("default")))

enum { EC_PATH_SCALAR = 0, EC_PATH_AVX2 = 1, EC_PATH_AVX512 = 2 };

enum {
    EC_OK = 0,
    EC_UNSUPPORTED_PATH = -1,  /* the requested path is not one this CPU (or build) can run */
    EC_OUT_OF_MEMORY = -2,     /* a work buffer could not be allocated */
    EC_BAD_ARGUMENT = -3,      /* an argument outside its range (the Python wrappers check first) */
};

/* The best path this CPU runs: AVX-512 needs AVX512F and VPOPCNTDQ, AVX2 needs AVX2, FMA and
 * POPCNT. */
int ec_cpu_path(void);

/* path < 0 -> ec_cpu_path(); a path this CPU runs -> itself; anything else -> -1. */
int ec_resolve_path(int path);

/* The body of a resolved path: EC_PICK(path, f_scalar, f_avx2, f_avx512). The vector bodies
 * exist only on x86 (a kernel without its own AVX2 body names the scalar one twice). */
#ifdef EC_X86
#define EC_PICK(path, scalar, avx2, avx512) \
    ((path) == EC_PATH_AVX512 ? (avx512) : (path) == EC_PATH_AVX2 ? (avx2) : (scalar))
#else
#define EC_PICK(path, scalar, avx2, avx512) (scalar)
#endif

#ifdef EC_X86
/* AVX2 has no vector popcount: the bit count of every byte of v, by a nibble lookup table
 * (shared by the XOR-popcount GEMM and the binary attention kernel). */
__attribute__((target("avx2")))
static inline __m256i popcnt_bytes256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

#endif

/* The number of set bits of x, in portable code: the SWAR sum (a dozen integer operations).
 * Code compiled for no particular CPU gets no POPCNT instruction, and __builtin_popcountll
 * there is a library call several times slower; the paths' own code (target attributes) uses
 * the instruction. */
static inline int ec_popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
}

/* OpenMP threads for a requested count (<= 0: the OpenMP default). */
static inline int ec_threads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

#endif /* EDGECOMPRESS_KERNELS_H */
