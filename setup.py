"""Build of the optional C kernels (everything else is in pyproject.toml).

The kernels are a plain C shared library loaded with ctypes, so building needs a C compiler but
no torch headers. A failed build is not an error: edgecompress then runs its PyTorch reference
path and says so once at run time.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP = ["-fopenmp"]
KERNELS = "edgecompress/kernels"


class OptionalBuildExt(build_ext):
    """Try with OpenMP, then without, then give up with a warning."""

    def build_extension(self, ext: Extension) -> None:
        for use_openmp in (True, False):
            if not use_openmp:
                ext.extra_compile_args = [a for a in ext.extra_compile_args if a not in OPENMP]
                ext.extra_link_args = [a for a in ext.extra_link_args if a not in OPENMP]
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # compiler missing or failing: fall back
                error = exc
        print(f"WARNING: edgecompress C kernels were not built ({error}); "
              "the PyTorch reference path will be used.")


setup(
    ext_modules=[
        Extension(
            "edgecompress.kernels._kernels",
            # one file per operation (kernels.h lists them); a change to a header rebuilds too
            # (MANIFEST.in ships the headers in the sdist)
            sources=[f"{KERNELS}/{name}.c" for name in (
                "cpu", "pack", "im2col", "gemm_w1a1", "gemm_w1a1_store", "gemm_w1a32",
                "gemm_lowbit", "signswish", "attention", "attention_pack", "conv_f32", "adder_grad",
                "block_epilogue", "pool_branches", "euclid_patch", "max_pool", "int8_conv")],
            depends=[f"{KERNELS}/kernels.h", f"{KERNELS}/gemm_w1a1.h", f"{KERNELS}/im2col.h"],
            extra_compile_args=["-O3", "-std=c11", "-fvisibility=hidden", *OPENMP],
            extra_link_args=OPENMP,
            libraries=["m"],
            optional=True,  # a failed build leaves no library to copy in place, and that is fine
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
