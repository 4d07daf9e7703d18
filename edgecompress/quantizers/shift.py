"""Power-of-two ("shift") weight parametrizations: DeepShift-Q, DeepShift-PS, S3 and DenseShift.

A parametrization owns the latent tensors of one layer's weight and computes the weight the
forward pass uses, with the gradient its paper prescribes (DeepShift: Elhoushi et al., CVPRW 2021;
S3: Li et al. 2021; DenseShift: Li et al., ICCV 2023; confirmed against the authors' released
code):

=============  ==========================================  ====================================
method         forward value                               backward
=============  ==========================================  ====================================
deepshift-q    Sgn(W) 2^round(log2 clamp(|W|, 2^p, 1))     identity to W (STE); W projected
                                                           into range in place (authors' code)
deepshift-ps   sign(round(S)) 2^round(clamp(P))           dS = g;  dP = ln2 2^p s g
s3             Sgn(Ws) B01(Wz) 2^shift(W1..)               STE through each binarizer, exact
                                                           chain rule through products, 2^shift
denseshift     Sgn(Ws) 2^S(T1..)  (never 0)                through s sqrt(S + 1) (surrogate)
=============  ==========================================  ====================================

B01(x) = 1 if x > 0 else 0 and Sgn(x) = +1 if x >= 0 else -1, both with the identity as their
straight-through gradient. ``bits`` is the storage per weight, an int in ``BITS`` = 2..6 (not
a bool or a float: anything else is a ConversionError listing the valid widths);
:meth:`ShiftParametrization.value_set` lists the values each method can produce, ascending (the
packed layers store each weight as its index in that list):

- deepshift-q, b bits: +-2^p for p in {0, -1, ..., -(2^(b-1) - 1)}: exactly 2^b values, 1 sign
  bit and b - 1 exponent bits, no zero. A latent exactly 0 takes the sign +1 (Sgn, not
  torch.sign's 0), so it gives +2^p_min: the value set stays closed and every weight fits its b
  bits. Here we depart from the authors' code on purpose: its torch.sign gives 0 there, a value
  its own b-bit encoding (1 sign bit, no zero) cannot hold.
- deepshift-ps, b bits: 0 and +-2^p for p in {0, ..., -(2^(b-1) - 2)} (s = 0 encodes zero); the
  latent P itself is kept in that range (the spec's "latent P clamped"): projected in place
  before every training forward, so it cannot drift beyond a bound it already sits at.
- s3, b bits: 0 and +-2^k for k in {0, ..., K}, K = 2^(b-1) - 2 shift latents nested as
  shift = B01(W1) (1 + B01(W2) (1 + ... (1 + B01(WK)))) (the number of leading latents that
  are > 0). 3 bits: K = 2, shift = B01(W1)(B01(W2) + 1), exactly the paper's {0, +-1, +-2,
  +-4}. 2 bits: K = 0, the ternary sign x sparse {0, +-1}. Our generalisation: 4 bits: K = 6.
- denseshift, N bits: +-2^k for k in {0, ..., 2^(N-1) - 1} with 2^(N-1) - 1 latents T_i and
  S_i = (S_{i-1} + 1) B01(T_i), S_0 = 0 (S = the number of trailing latents that are > 0).
  3 bits: {+-1, +-2, +-4, +-8} (the paper's); 2, 4, 5 and 6 bits are our reading of the
  paper's N-bit rule.

Value sets per width (weights the code of a b-bit layer can hold; zero counted once):

====  ===================  ======================  =====================  ==================
bits  deepshift-q          deepshift-ps            s3                     denseshift
====  ===================  ======================  =====================  ==================
2     +-{1, 2^-1} (4)      0, +-1 (3)              0, +-1 (3)             +-{1, 2} (4)
3     +-{1 .. 2^-3} (8)    0, +-{1 .. 2^-2} (7)    0, +-{1 .. 4} (7)      +-{1 .. 8} (8)
4     +-{1 .. 2^-7} (16)   0, +-{1 .. 2^-6} (15)   0, +-{1 .. 2^6} (15)   +-{1 .. 2^7} (16)
5     +-{1 .. 2^-15} (32)  0, +-{1 .. 2^-14} (31)  0, +-{1 .. 2^14} (31)  +-{1 .. 2^15} (32)
6     +-{1 .. 2^-31} (64)  0, +-{1 .. 2^-30} (63)  0, +-{1 .. 2^30} (63)  +-{1 .. 2^31} (64)
====  ===================  ======================  =====================  ==================

("+-{1 .. 2^-3}" is every power of two from 1 down to 2^-3, with both signs; the count of
values is in brackets. Every set has at most 2^b values, so a weight fits its b-bit code. At 5
and 6 bits S3 and DenseShift have 2^(b-1) - 2 and 2^(b-1) - 1 shift latents per weight: 14 / 15
at 5 bits and 30 / 31 at 6 bits, each a full float tensor while training.)

Initialisations (``init=``): "paper" uses each paper's (deepshift-q copies the float weights;
deepshift-ps S ~ U(-1, 1) and P ~ U(-10, -1) clamped into range for a conv, P uniform over the
whole range [-(2^(b-1) - 2), 0] for a linear layer, as the authors' code does per layer type;
s3 every latent ~ N(0, sqrt(2 / (k k C_out))), C_out for a linear layer; denseshift every latent
~ N(0, 1e-3)); "low-variance" is DenseShift's N(0, 1e-3) for every latent, for any method;
"from-float" derives the latents from the float weights (deepshift-q: the weights; deepshift-ps:
as the authors' conversion, S = sign(w) (0 for a weight exactly 0) and P = round(log2 |w|)
clamped into range, with no normalisation, so a weight below 2^p_lo in magnitude keeps the
smallest power and only an exact 0 gives 0; s3 / denseshift: sign latent = the weights, the
others from the magnitude code of |w| / max|w|, +-0.5 per binarizer); "low-variance-from-float"
(s3 and denseshift, whose latents code a weight by their signs alone) is "from-float" with
each latent scaled to root-mean-square 1e-3: the float weights' power-of-two values, with
latents as small as the low-variance init's, so that fine-tuning flips them as easily.

Transfer learning (a pretrained float model converted, :mod:`edgecompress.transfer`): the spec
gives DenseShift's low-variance init as "all latents ~ N(0, 1e-3)" and claims it helps
transfer, but does not say whether the converted layers then keep anything of the pretrained
weights. Both readings are here: "low-variance" draws the latents afresh (the converted layers
start random; the float layers, BatchNorms included, keep the pretrained weights), and
"low-variance-from-float" keeps the pretrained weights' values in small latents. "from-float"
(pretrained values in +-0.5 latents) is the usual start of quantization from a pretrained
model.

Rounding to a power of two (:func:`round_log2`): the nearest integer to log2 |w|, decided exactly
(|w| against the boundary 2^(k + 1/2), on the float's integer mantissa). A float is never exactly
on a boundary (sqrt 2 is irrational), so there are no ties and no tie rule. The authors' code
computes torch.round(ln|w| / ln 2) in float32, which puts a few float32 values next to a
boundary on the wrong side (up to two per boundary between 2^-8 and 1, more farther from 1); we
do not reproduce that.

Method options (``**options``, per method; :meth:`ShiftParametrization.check_options`):
deepshift-q takes ``clamp_latent`` (bool, default True: the authors' in-place projection of W;
False: W is left free and only the forward's copy is clamped, the behaviour with which the
DeepShift-Q rows of docs/shift.md were measured). The other methods take none.

Papers: Elhoushi et al., DeepShift (CVPRW 2021, arXiv 1905.13298); Li et al., S3 (NeurIPS 2021,
arXiv 2107.03453); Li et al., DenseShift (ICCV 2023, arXiv 2208.09708). DeepShift-Q and -PS
follow the authors' released code (github.com/mostafaelhoushi/DeepShift: pytorch/deepshift/
modules_q.py, modules.py, convert.py, utils.py) where the paper leaves details open, except
where stated above.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConversionError

BITS = (2, 3, 4, 5, 6)
INITS = ("paper", "low-variance", "from-float", "low-variance-from-float")
#: DenseShift's low-variance initialisation: every latent ~ N(0, LOW_VARIANCE_STD)
LOW_VARIANCE_STD = 1e-3
LN2 = math.log(2.0)


def _as_int(bits: object) -> int | None:
    """``bits`` as an int, or None if it is not an integer. A bool or a float such as 3.0 is
    not one: ``3.0 in BITS`` and ``True in (1, 2)`` hold in Python, and such a width would fail
    later with a raw TypeError."""
    return int(bits) if isinstance(bits, Integral) and not isinstance(bits, bool) else None


def _why_not_int(bits: object) -> str:
    return "" if _as_int(bits) is not None else f" (a {type(bits).__name__}; an int is required)"


def check_bits(bits: object, owner: str) -> int:
    """``bits`` as an int among ``BITS``, else a ConversionError naming ``owner`` and listing
    the valid widths."""
    value = _as_int(bits)
    if value in BITS:
        return value  # type: ignore[return-value]
    raise ConversionError(f"{owner}: bits must be one of {BITS}, got {bits!r}{_why_not_int(bits)}")


ACTIVATION_BITS = range(2, 17)


def check_activation_bits(bits: object) -> int:
    """``activation_bits`` as an int in 2..16, else a ConversionError."""
    value = _as_int(bits)
    if value in ACTIVATION_BITS:
        return value  # type: ignore[return-value]
    raise ConversionError(f"activation_bits must be an int in 2..16, got {bits!r}"
                          f"{_why_not_int(bits)}")


def ste(value: Tensor, latent: Tensor) -> Tensor:
    """``value`` in the forward pass, the identity to ``latent`` in the backward pass.

    Written ``value + (latent - latent.detach())``: the added term is exactly 0, so the forward
    value is exactly ``value`` (``latent + (value - latent)`` can be off by a rounding), which
    keeps every weight an exact power of two and lets the packed model match bit for bit."""
    return value.detach() + (latent - latent.detach())


def b01(x: Tensor) -> Tensor:
    """B01(x) = 1 if x > 0 else 0, straight-through (identity) gradient."""
    return ste((x > 0).to(x.dtype), x)


def sgn(x: Tensor) -> Tensor:
    """Sgn(x) = +1 if x >= 0 else -1, straight-through (identity) gradient."""
    return ste(torch.where(x >= 0, 1.0, -1.0).to(x.dtype), x)


def _sqrt_half_mantissa(dtype: torch.dtype) -> tuple[int, int]:
    """(p, T) for a float dtype with p significand bits: T = floor(2^(p - 1/2)), so that a
    mantissa m in [1/2, 1) written as the integer M = m 2^p is above 1/sqrt 2 iff M > T
    (M > 2^(p - 1/2) iff M^2 > 2^(2p - 1), an odd power of two and so never a square)."""
    p = 1 - round(math.log2(torch.finfo(dtype).eps))
    return p, math.isqrt(2 ** (2 * p - 1))


def round_log2(x: Tensor) -> Tensor:
    """The integer nearest to log2(x) for positive finite x, decided exactly; same dtype as x.

    With x = m 2^e, m in [1/2, 1) (frexp; subnormals are normalised), log2 x = e + log2 m and
    log2 m is in [-1, 0): the answer is e when m > 1/sqrt 2 and e - 1 otherwise. The comparison
    is done on m's integer significand (see :func:`_sqrt_half_mantissa`), so it is exact for
    every value, where round(log2(x)) in float32 puts a few values next to each boundary
    2^(k + 1/2) on the wrong side. No float equals a boundary, so no tie rule is needed."""
    p, threshold = _sqrt_half_mantissa(x.dtype)
    mantissa, exponent = torch.frexp(x)
    significand = (mantissa * 2.0 ** p).to(torch.int64)  # exact: a power-of-two scaling
    return (exponent.to(x.dtype) - 1 + (significand > threshold).to(x.dtype))


class ShiftParametrization(nn.Module):
    """The latent tensors of one weight and the map to its power-of-two values.

    ``forward()`` returns the weight for the forward pass (differentiable in the latents),
    ``hard()`` the discrete values, ``penalty()`` a loss term (0 unless the method has one; the
    layer's ``regularizer()`` hands it to the trainer).
    """

    method: str = ""
    #: True if the latents code the weight by their signs alone (each binarizer's input), so
    #: rescaling them keeps every value: the condition of init "low-variance-from-float"
    sign_coded: bool = False
    latent_names: tuple[str, ...] = ()
    options: dict[str, bool] = {}
    """The method's own options and their defaults (each a bool)."""

    def __init__(self, shape: Sequence[int], bits: int, init: str = "paper",
                 float_weight: Tensor | None = None, **options: bool) -> None:
        super().__init__()
        bits = check_bits(bits, self.method)
        for name, value in self.check_options(options).items():
            setattr(self, name, value)
        if init not in INITS:
            raise ConversionError(f"{self.method}: init must be one of {INITS}, got {init!r}")
        if init.endswith("from-float") and float_weight is None:
            raise ConversionError(f"{self.method}: init={init!r} needs the float weights")
        if init == "low-variance-from-float" and not self.sign_coded:
            coded = ", ".join(m for m, c in PARAMETRIZATIONS.items() if c.sign_coded)
            raise ConversionError(f"{self.method}: init='low-variance-from-float' needs latents "
                                  f"that code the weight by their signs alone ({coded}); "
                                  f"{self.method}'s latents carry the magnitude itself")
        if float_weight is not None and tuple(float_weight.shape) != tuple(shape):
            raise ConversionError(f"{self.method}: float weights of shape "
                                  f"{tuple(float_weight.shape)} do not match the latent shape "
                                  f"{tuple(shape)}")
        self.bits, self.shape, self.init = bits, tuple(shape), init
        for name in self.latent_names:
            self.register_parameter(name, nn.Parameter(torch.zeros(self.shape)))
        with torch.no_grad():
            if init == "low-variance":
                for name in self.latent_names:
                    getattr(self, name).normal_(0.0, LOW_VARIANCE_STD)
            elif init.endswith("from-float"):
                w = float_weight.detach()  # type: ignore[union-attr]
                # in the float weights' own precision (float64 stays float64), at least float32
                self._init_from_float(w.to(torch.promote_types(w.dtype, torch.float32)))
                if init == "low-variance-from-float":
                    self._shrink_latents()
            else:
                self._init_paper(float_weight)

    def _shrink_latents(self) -> None:
        """Scale each latent to root-mean-square LOW_VARIANCE_STD (signs, hence the weight
        values, unchanged): the from-float values with the low-variance init's small latents."""
        for name in self.latent_names:
            latent = getattr(self, name)
            rms = latent.square().mean().sqrt()
            if rms > 0:
                latent.mul_(LOW_VARIANCE_STD / rms)

    @classmethod
    def check_options(cls, options: dict[str, object]) -> dict[str, bool]:
        """``options`` completed with the defaults of :attr:`options`; a ConversionError names
        an option the method does not take, or a value that is not a bool."""
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            takes = ", ".join(cls.options) or "no method options"
            raise ConversionError(f"{cls.method}: unknown option(s) {', '.join(unknown)}; "
                                  f"it takes {takes}")
        for name, value in options.items():
            if not isinstance(value, bool):
                raise ConversionError(f"{cls.method}: {name} must be True or False, got "
                                      f"{value!r}")
        return {**cls.options, **options}  # type: ignore[dict-item]

    @classmethod
    def value_set(cls, bits: int) -> list[float]:
        """The values the method's ``bits``-bit weights can take, ascending (the packed
        layers' codes are indices into this list)."""
        return sorted(cls._values(check_bits(bits, cls.method)))

    @classmethod
    def _values(cls, bits: int) -> list[float]:
        raise NotImplementedError

    def _init_paper(self, float_weight: Tensor | None) -> None:
        raise NotImplementedError

    def _init_from_float(self, w: Tensor) -> None:
        raise NotImplementedError

    def hard(self) -> Tensor:
        """The discrete weight values (no autograd)."""
        with torch.no_grad():
            return self.forward().detach()

    def penalty(self) -> Tensor:
        return self._first().new_zeros(())

    def _projecting(self) -> bool:
        """True in a training forward that builds a graph: the only forward in which
        DeepShift's latents are projected into range in place (eval, no-grad, freezing and
        export leave the latents untouched; the forward value is the same either way)."""
        return self.training and torch.is_grad_enabled()

    def latent_weight(self) -> Tensor:
        """The latent tensor that carries the sign (for histograms)."""
        return self._first()

    def _first(self) -> Tensor:
        return getattr(self, self.latent_names[0])

    def extra_repr(self) -> str:
        options = "".join(f", {name}={getattr(self, name)}" for name in self.options)
        return f"bits={self.bits}, shape={self.shape}, init={self.init!r}{options}"


def _fan_out(shape: Sequence[int]) -> int:
    """k * k * C_out for a conv weight (C_out, C_in, k, k); C_out for a linear one."""
    return shape[0] * math.prod(shape[2:]) if len(shape) > 2 else shape[0]


def _magnitude_code(w: Tensor, levels: int) -> Tensor:
    """Integer k in [0, levels - 1] with 2^k closest (in log2) to |w| / max|w| * 2^(levels-1)."""
    top = w.abs().max().clamp_min(1e-12)
    k = round_log2((w.abs() / top).clamp_min(1e-12)) + (levels - 1)
    return k.clamp(0, levels - 1)


class DeepShiftQ(ShiftParametrization):
    """DeepShift-Q (Elhoushi et al., arXiv 1905.13298): latent float W,

    forward   w = Sgn(W) 2^round_log2(clamp(|W|, 2^p_min, 1)),  p_min = -(2^(b-1) - 1)
    backward  dL/dW = dL/dw (straight-through: rounding and clamping as the identity)

    As in the authors' code (Conv2dShiftQ / LinearShiftQ.forward), W itself is projected in
    place before every training forward: |W| > 1 becomes +-1 and 0 < |W| < 2^p_min becomes
    +-2^p_min, with its sign, and 0 stays 0 (no gradient flows through the projection). So W
    cannot drift past the range and must come back from beyond it before its value can change.
    ``clamp_latent=False`` leaves W free and clamps only the forward's copy (same forward values,
    different training): the behaviour the DeepShift-Q rows of docs/shift.md were measured with.
    Sgn(0) = +1, so W = 0 gives +2^p_min (the authors' torch.sign gives 0, outside the b-bit
    set). Rounding is exact at the boundaries 2^(k + 1/2) (:func:`round_log2`)."""

    method = "deepshift-q"
    latent_names = ("weight",)
    options = {"clamp_latent": True}
    clamp_latent: bool

    @classmethod
    def p_min(cls, bits: int) -> int:
        return -(2 ** (bits - 1) - 1)

    @classmethod
    def _values(cls, bits: int) -> list[float]:
        mags = [2.0 ** p for p in range(cls.p_min(bits), 1)]
        return [-m for m in mags] + mags

    def _init_paper(self, float_weight: Tensor | None) -> None:
        if float_weight is not None:
            self.weight.copy_(float_weight)
        elif self.weight.dim() >= 2:  # torch's default for Linear / Conv2d
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            self.weight.uniform_(-1.0, 1.0)

    def _init_from_float(self, w: Tensor) -> None:
        self.weight.copy_(w)

    def _clamp_magnitude(self, w: Tensor) -> Tensor:
        return w.abs().clamp(2.0 ** self.p_min(self.bits), 1.0)

    def forward(self) -> Tensor:
        w = self.weight
        if self.clamp_latent and self._projecting():
            with torch.no_grad():  # torch.sign keeps 0 at 0, as the authors' projection does
                w.copy_(torch.sign(w) * self._clamp_magnitude(w))
        sign = torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)  # Sgn: 0 -> +1, see above
        value = sign * torch.exp2(round_log2(self._clamp_magnitude(w.detach())))
        return ste(value, w)


class _DeepShiftPSFunction(torch.autograd.Function):
    """w = s 2^p from the rounded shift p and the ternary sign s; backward: dS = g,
    dP = ln2 2^p s g (DeepShift-PS's unsymmetric gradient)."""

    @staticmethod
    def forward(ctx, shift: Tensor, sign_latent: Tensor, lo: float) -> Tensor:  # type: ignore[override]
        p = torch.round(shift.clamp(lo, 0.0))
        s = torch.sign(torch.round(sign_latent))
        ctx.save_for_backward(p, s)
        return s * torch.exp2(p)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        p, s = ctx.saved_tensors
        return grad * LN2 * torch.exp2(p) * s, grad, None


class DeepShiftPS(ShiftParametrization):
    """DeepShift-PS (Elhoushi et al., arXiv 1905.13298): latent shift P and latent sign S,

    forward   p = round(clamp(P, p_lo, 0)), p_lo = -(2^(b-1) - 2);  s = sign(round(S)) in
              {-1, 0, +1};  w = s 2^p  (round: half to even, torch.round, as the authors' code)
    backward  dL/dS = g (not g 2^p);  dL/dP = ln2 2^p s g  (rounding as the identity)

    As in the authors' code (Conv2dShift / LinearShift.forward), P itself is clamped in place
    into [p_lo, 0] before every training forward (a projection, no gradient); S is left free.
    Init "paper" as the authors' reset_parameters, per layer type: S ~ U(-1, 1); P ~ U(-10, -1)
    (then clamped) for a conv, P ~ U(p_lo, 0) for a linear layer (a weight of 2 dimensions).
    Init "from-float" as their convert_to_shift: P = round_log2(|w|) clamped into [p_lo, 0]
    (a weight exactly 0 gets P = p_lo), S = sign(w) (0 for 0); no normalisation by max|w|."""

    method = "deepshift-ps"
    latent_names = ("shift", "sign")

    @classmethod
    def p_lo(cls, bits: int) -> int:
        return -(2 ** (bits - 1) - 2)

    @classmethod
    def _values(cls, bits: int) -> list[float]:
        mags = [2.0 ** p for p in range(cls.p_lo(bits), 1)]
        return [-m for m in mags] + [0.0] + mags

    def latent_weight(self) -> Tensor:
        return self.sign

    def _init_paper(self, float_weight: Tensor | None) -> None:
        lo = self.p_lo(self.bits)
        if len(self.shape) > 2:  # a conv weight
            self.shift.uniform_(-10.0, -1.0).clamp_(lo, 0.0)
        else:
            self.shift.uniform_(lo, 0.0)
        self.sign.uniform_(-1.0, 1.0)

    def _init_from_float(self, w: Tensor) -> None:
        # round then clamp = clamp then round (both monotone, the bounds are powers of two);
        # clamping first keeps zeros and subnormals away from round_log2
        self.shift.copy_(round_log2(w.abs().clamp(2.0 ** self.p_lo(self.bits), 1.0)))
        self.sign.copy_(torch.sign(w))

    def forward(self) -> Tensor:
        lo = float(self.p_lo(self.bits))
        if self._projecting():
            with torch.no_grad():
                self.shift.clamp_(lo, 0.0)
        return _DeepShiftPSFunction.apply(self.shift, self.sign, lo)


class S3(ShiftParametrization):
    """S3 sign-sparse-shift reparametrization: latents W_sign, W_sparse and K shift latents,

    shift = B01(W_1) (1 + B01(W_2) (1 + ... (1 + B01(W_K))))   (3 bits, K = 2:
            B01(W_1) (B01(W_2) + 1) in {0, 1, 2})
    w     = Sgn(W_sign) B01(W_sparse) 2^shift                   (3 bits: {0, +-1, +-2, +-4})

    Backward: straight-through through every binarizer, the exact chain rule through the
    products and through 2^shift (d 2^shift / d shift = ln2 2^shift). Regularizer (added to the
    training loss): alpha sum max(-W_sparse, 0), alpha = 1e-5, which pushes weights to stay dense.
    """

    method = "s3"
    sign_coded = True
    alpha = 1e-5

    def __init__(self, shape: Sequence[int], bits: int, init: str = "paper",
                 float_weight: Tensor | None = None, **options: bool) -> None:
        bits = check_bits(bits, self.method)
        k = 2 ** (bits - 1) - 2
        self.latent_names = ("w_sign", "w_sparse") + tuple(f"w_shift{i + 1}" for i in range(k))
        super().__init__(shape, bits, init, float_weight, **options)

    @classmethod
    def _values(cls, bits: int) -> list[float]:
        mags = [2.0 ** k for k in range(2 ** (bits - 1) - 1)]
        return [-m for m in mags] + [0.0] + mags

    def _init_paper(self, float_weight: Tensor | None) -> None:
        std = math.sqrt(2.0 / _fan_out(self.shape))
        for name in self.latent_names:
            getattr(self, name).normal_(0.0, std)

    def _init_from_float(self, w: Tensor) -> None:
        self.w_sign.copy_(w)
        self.w_sparse.fill_(0.5)
        shifts = self.latent_names[2:]
        code = _magnitude_code(w, len(shifts) + 1)  # 0 .. K
        for i, name in enumerate(shifts):  # thermometer: latent i on iff code > i
            getattr(self, name).copy_(torch.where(code > i, 0.5, -0.5))

    def forward(self) -> Tensor:
        shift = torch.zeros_like(self.w_sign)
        for name in reversed(self.latent_names[2:]):
            shift = b01(getattr(self, name)) * (1.0 + shift)
        return sgn(self.w_sign) * b01(self.w_sparse) * torch.exp2(shift)

    def penalty(self) -> Tensor:
        return self.alpha * torch.relu(-self.w_sparse).sum()


class DenseShift(ShiftParametrization):
    """DenseShift (zero-free): latents W_sign and T_1..T_L, L = 2^(N-1) - 1,

    S_0 = 0, S_i = (S_{i-1} + 1) B01(T_i), S = S_L;  s = Sgn(W_sign)
    forward value w = s 2^S                  (3 bits: {+-1, +-2, +-4, +-8}, never 0)
    backward through the sign-scale surrogate
        w = s sqrt(S + 1) + stopgrad(s 2^S - s sqrt(S + 1))
    (binarizers straight-through). Low-variance init: every latent ~ N(0, 1e-3). No regularizer.
    """

    method = "denseshift"
    sign_coded = True

    def __init__(self, shape: Sequence[int], bits: int, init: str = "paper",
                 float_weight: Tensor | None = None, **options: bool) -> None:
        bits = check_bits(bits, self.method)
        levels = 2 ** (bits - 1) - 1
        self.latent_names = ("w_sign",) + tuple(f"w_t{i + 1}" for i in range(levels))
        super().__init__(shape, bits, init, float_weight, **options)

    @classmethod
    def _values(cls, bits: int) -> list[float]:
        mags = [2.0 ** k for k in range(2 ** (bits - 1))]
        return [-m for m in mags] + mags

    def _init_paper(self, float_weight: Tensor | None) -> None:
        for name in self.latent_names:
            getattr(self, name).normal_(0.0, 1e-3)

    def _init_from_float(self, w: Tensor) -> None:
        self.w_sign.copy_(w)
        levels = self.latent_names[1:]
        code = _magnitude_code(w, len(levels) + 1)  # 0 .. L: the last `code` latents on
        for i, name in enumerate(levels):
            getattr(self, name).copy_(torch.where(len(levels) - i <= code, 0.5, -0.5))

    def forward(self) -> Tensor:
        s = sgn(self.w_sign)
        level = torch.zeros_like(self.w_sign)
        for name in self.latent_names[1:]:
            level = (level + 1.0) * b01(getattr(self, name))
        surrogate = s * torch.sqrt(level + 1.0)
        # forward exactly s 2^S, gradient of the surrogate (its added term is exactly 0)
        return (s * torch.exp2(level)).detach() + (surrogate - surrogate.detach())


PARAMETRIZATIONS: dict[str, type[ShiftParametrization]] = {
    cls.method: cls for cls in (DeepShiftQ, DeepShiftPS, S3, DenseShift)}
SHIFT_METHODS = tuple(PARAMETRIZATIONS)
