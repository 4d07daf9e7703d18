"""What every compressed layer tells the rest of the library about itself.

The model summary, the freezer and the trainer's diagnostics read these attributes instead of
checking layer classes, so a new layer family only has to set them.
"""

from __future__ import annotations

from torch import nn

#: Operation kinds of the model summary: name -> what one counted operation is.
OP_KINDS = {
    "mac": "multiply-accumulate (a general multiplication and an addition)",
    "add": "add or subtract only (binary weights with full-precision inputs)",
    "xnor-popcount": "XNOR and population count (binary weights and inputs)",
    "shift-add": "bit shift and add (power-of-two weights)",
    "squared-diff": "subtract, square, accumulate (EuclidNet; a squarer, no multiplier)",
    "abs-diff": "subtract, absolute value, accumulate (AdderNet's L1 distance)",
}


#: bits of a float parameter (and of a weight whose layer states no ``weight_bits``)
FLOAT_BITS = 32


def precision_key(module: nn.Module) -> str:
    """The summary's precision label of ``module``: ``w<weight_bits>a<input_bits>``, FLOAT_BITS
    for an attribute it does not set (``w32a32``: float)."""
    return (f"w{int(getattr(module, 'weight_bits', FLOAT_BITS))}"
            f"a{int(getattr(module, 'input_bits', FLOAT_BITS))}")


def params_by_bits(module: nn.Module, own_only: bool = False,
                   seen: set[int] | None = None) -> dict[int, int]:
    """``module``'s parameters by stored bit width: its ``edgecompress_params()`` when it has
    one, else the tensor named ``weight`` at ``weight_bits`` (FLOAT_BITS without) and the rest at
    FLOAT_BITS (``own_only``: its own parameters, not its children's). ``seen``: ids of
    parameters counted before (tied weights are counted once), updated."""
    if hasattr(module, "edgecompress_params"):
        return {int(b): int(n) for b, n in module.edgecompress_params().items()}
    weight_bits = int(getattr(module, "weight_bits", FLOAT_BITS))
    seen = set() if seen is None else seen
    out: dict[int, int] = {}
    for pname, p in module.named_parameters(recurse=not own_only):
        if id(p) not in seen:
            seen.add(id(p))
            bits = weight_bits if pname == "weight" else FLOAT_BITS
            out[bits] = out.get(bits, 0) + p.numel()
    return out


class CompressedLayer(nn.Module):
    """Mixin for layers whose deployed weights (or consumed activations) are low precision.

    Attributes
    ----------
    weight_bits:
        Bits per weight once the layer is deployed (1 for binary, 3 for 3-bit shift, 32 for float).
        Only the tensor named ``weight`` is counted at this precision; biases and other parameters
        stay 32-bit.
    input_bits:
        Bits of the activations the layer multiplies its weights with (1 when inputs are
        binarized, 32 otherwise).
    op_kind:
        The operation the deployed layer runs per (input, weight) pair, one of
        :data:`OP_KINDS`. By default derived from the bits: binary weights are ``"add"``
        (add/subtract by the sign) or, with binary inputs too, ``"xnor-popcount"``; anything
        else is ``"mac"``. Layers of other operations (shift, distance) set it.
    """

    weight_bits: int = 32
    input_bits: int = 32

    @property
    def op_kind(self) -> str:
        if self.weight_bits == 1:
            return "xnor-popcount" if self.input_bits == 1 else "add"
        return "mac"

    def discrete_weight(self):
        """The deployed weight codes without scaling (e.g. sign(theta) for a binary layer), used
        by training diagnostics to count weights that changed value. Low-bit layers override
        it; float layers have none."""
        raise NotImplementedError(f"{type(self).__name__} has no discrete weights")
