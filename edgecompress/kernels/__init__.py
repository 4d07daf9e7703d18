"""Fast CPU kernels for low-bit models, each with a slow reference in plain PyTorch.

Binary kernels (C, built by the package's own build and loaded with ctypes):

- :func:`pack_signs`: float rows -> 1 bit per value (bit 1 = -1, bit 0 = +1), 64 per word,
  rows padded with 0 bits to whole words;
- :func:`binary_gemm`: ``C[m, n] = valid(m) - 2 popcount((A[m] ^ B[n]) & mask[m])``, i.e. the
  dot product of +-1 rows restricted to the valid positions (all positions without a mask);
  :func:`binary_gemm_affine` and :func:`binary_gemm_signs` fuse a per-column affine step (and a
  residual and clamp, or the packing of the signs) into its store;
- :func:`im2col_signs` / :func:`im2col_words`: the packed operands of a binary convolution;
  :func:`binary_conv` runs its GEMM as an implicit GEMM on the packed pixels (no im2col rows),
  bit for bit the same; :class:`BinaryConvPlan` makes packing, gathering and GEMM of one
  frozen layer's input one C call whose fixed arguments are converted once;
- :func:`w1a32_gemm`: +-1 weights times float activations by sign selection;
- :func:`lowbit_gemm`: 2-4-bit weight codes (:func:`lowbit_panels`) decoded through a value
  table in registers, times float activations (shift and uniform n-bit layers at small batch);
- binary attention: :func:`binary_gemm_groups` (q k^T of every sample and head on the W1A1
  GEMM) and :func:`mask_matmul` (``P v`` for P in {0, a} as bit masks and v in {-1, +1}: AND
  and popcount), their operands packed straight from the floats (:func:`pack_head_signs`,
  :func:`pack_prob_masks`, :func:`pack_value_columns`).

Float kernel: :func:`conv2d_direct`, a float32 direct convolution (1x1 / 3x3, stride 1 / 2)
vectorized along output pixels, so its cost follows the channel counts (pruned networks get
faster), with bias, residual and clamp fused into its store (:func:`conv2d_torch` computes the
same by torch's convolution, for where torch is faster or the library is missing). With
``op="l1"`` it computes AdderNet's -sum |x - w| instead of the products, and
:func:`l1_linear` the same for a linear layer's rows; :func:`adder_input_grad` is AdderNet's
input gradient of that L1 form (the published HardTanh rule), for training.
:func:`euclid_patch` is EuclidNet's per-patch term, ``(y + shift) - theta/2
sum-pool(||x||^2)`` written in place into the output of a convolution without bias (the
per-channel shift b - theta/2 ||w||^2 given, or computed from the weights:
:func:`euclid_shift_reference` gives its order), and :func:`euclid_patch_grad` its input
gradient, written or added in place into the convolution's (training and inference);
:class:`EuclidPatchPlan` is their geometry checked and converted once, for layers that call
them on every forward.

The kernels dispatch at run time to AVX-512, AVX2 or portable scalar code (force one with
``path=``) and use OpenMP threads. If the library was not built, every function runs its
reference implementation and a warning says so once. Packed words are stored in int64 tensors
(the same 64 bits as uint64).

Training kernel: :func:`signswish`, the value, bnn++ forward and gradient of BNN+'s SignSwish in
one pass each, used by the quantizers on float32 CPU tensors in eager mode (their PyTorch
formulas are the reference, and what torch.compile sees).

Modules: ``_loader`` finds and loads the library (and says once when it is missing),
``reference`` defines the packed formats and the slow references, ``dispatch`` holds the kernel
functions (checks, C call or reference), ``ops`` wraps some of them as torch custom operators for
torch.compile / torch.export. The C sources are one file per operation around ``kernels.h``.
This package only re-exports.
"""

from ._loader import PATHS, available, supported_paths
from .dispatch import (SIGNSWISH_OPS, _set_gemm_block_bytes, _set_pad_correction,
                       adder_input_grad, binary_conv,
                       binary_gemm,
                       binary_gemm_affine, binary_gemm_groups, block_epilogue, pool_branches,
                       max_pool2d, max_pool2d_usable, INT8_CONV_MAX_K, int8_conv,
                       int8_conv_panels, int8_conv_vnni,
                       euclid_patch, euclid_patch_grad, EuclidPatchPlan, binary_gemm_signs,
                       BinaryConvPlan, conv_tap_popcounts,
                       conv2d_direct,
                       DirectConvPlan, conv2d_direct_supports, conv2d_direct_usable,
                       conv2d_torch, CONV_OPS, exporting, recording, l1_linear, conv_output_size,
                       im2col_signs, im2col_words, LOWBIT_BITS, LOWBIT_MAX_ROWS, lowbit_gemm,
                       lowbit_panels, mask_matmul, pack_head_signs, pack_prob_masks,
                       pack_value_columns,
                       pack_conv_weights, pack_panels, pack_pixels, pack_signs, sign_panels,
                       signswish, signswish_usable, w1a32_gemm)
from .reference import (PANEL, adder_input_grad_reference, binary_gemm_affine_reference,
                        binary_gemm_reference,
                        block_epilogue_reference, pool_branches_reference,
                        euclid_patch_reference, euclid_patch_grad_reference, subtract_planes,
                        euclid_shift_reference, int8_conv_reference,
                        binary_gemm_groups_reference, binary_gemm_signs_reference,
                        conv2d_direct_reference, im2col_signs_reference,
                        lowbit_codes_reference, lowbit_gemm_reference, mask_matmul_reference,
                        pack_head_signs_reference, pack_prob_masks_reference,
                        pack_value_columns_reference,
                        pack_signs_reference, unpack_bits_reference, unpack_signs_reference,
                        w1a32_gemm_reference, words)

__all__ = ["available", "supported_paths", "words", "signswish", "signswish_usable",
           "pack_signs", "pack_panels", "binary_gemm",
           "binary_gemm_affine", "binary_gemm_affine_reference", "binary_gemm_signs",
           "binary_gemm_signs_reference", "pack_pixels", "im2col_words", "sign_panels",
           "w1a32_gemm", "w1a32_gemm_reference", "LOWBIT_BITS", "LOWBIT_MAX_ROWS",
           "lowbit_panels", "lowbit_gemm", "lowbit_gemm_reference", "lowbit_codes_reference",
           "binary_gemm_groups",
           "binary_gemm_groups_reference", "mask_matmul", "mask_matmul_reference",
           "pack_head_signs", "pack_head_signs_reference", "pack_prob_masks",
           "pack_prob_masks_reference", "pack_value_columns", "pack_value_columns_reference",
           "block_epilogue", "block_epilogue_reference", "pool_branches", "max_pool2d",
           "max_pool2d_usable", "INT8_CONV_MAX_K", "int8_conv", "int8_conv_panels",
           "int8_conv_vnni",
           "int8_conv_reference",
           "pool_branches_reference", "euclid_patch", "euclid_patch_reference", "EuclidPatchPlan",
           "euclid_patch_grad",
           "euclid_patch_grad_reference", "subtract_planes", "euclid_shift_reference",
           "conv2d_direct", "DirectConvPlan", "conv2d_direct_supports", "conv2d_direct_usable",
           "conv2d_torch", "conv2d_direct_reference", "CONV_OPS", "l1_linear", "exporting",
           "recording",
           "adder_input_grad", "adder_input_grad_reference",
           "pack_conv_weights", "im2col_signs", "binary_conv", "BinaryConvPlan",
           "conv_tap_popcounts",
           "im2col_signs_reference",
           "conv_output_size",
           "pack_signs_reference", "unpack_signs_reference", "binary_gemm_reference"]
