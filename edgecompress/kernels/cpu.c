/*
 * Run-time choice of the instruction-set path: every kernel has a portable scalar body and, on
 * x86, AVX2 and / or AVX-512 bodies compiled with target attributes; the CPU decides which ones
 * may run.
 */
#include "kernels.h"

int ec_cpu_path(void) {
#ifdef EC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
        return EC_PATH_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("popcnt"))
        return EC_PATH_AVX2;
#endif
    return EC_PATH_SCALAR;
}

int ec_resolve_path(int path) {
    const int best = ec_cpu_path();
    if (path < 0) return best;
    return path <= best ? path : -1;
}

/* The best path, for Python: 0 = scalar, 1 = AVX2, 2 = AVX-512 VPOPCNTDQ. */
EC_EXPORT int ec_best_path(void) { return ec_cpu_path(); }
