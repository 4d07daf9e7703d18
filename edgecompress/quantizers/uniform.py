"""Uniform n-bit quantizers (2 to 8 bits): symmetric per-channel weights and activations with a
learned (LSQ) or calibrated range.

A value is stored as an integer code q and a step s > 0 (no zero point: 0 is always exact) and
the layer computes with ``q * s``. Codes, for b bits:

- weights and signed activations: the full signed range q in [-2^(b-1), 2^(b-1) - 1], exactly
  2^b codes (4 bits: -8..7);
- unsigned activations (after a ReLU): q in [0, 2^b - 1], exactly 2^b codes.

Rounding is ``torch.round`` (half to even) and the codes are clamped to their range:
``Q(x; s) = clamp(round(x / s), q_min, q_max) * s`` (:func:`fake_quantize`; the frozen layers
compute the same expression, so they match the training form exactly).

Weights (:class:`UniformWeightQuantizer`; Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018): one step per output
channel c from the channel's largest magnitude m_c,

    s_c = m_c / 2^(b-1)          (1 for a channel of zeros)

so that every code of the full signed range is used: -m_c lands exactly on -2^(b-1) (a division
by a power of two is exact, no rounding tie decides it) and the weights above
(2^(b-1) - 1/2) s_c are clamped to 2^(b-1) - 1. Every weight is within s_c / 2 of its quantized
value except in that top half step (within s_c there). (The rule m_c / (2^(b-1) - 1/2) of
PyTorch's symmetric observers bounds every error by s_c / 2 but reaches -2^(b-1) only through
a rounding tie at -m_c, which float rounding of m_c / s_c often misses: it would not reliably
use 2^b codes.) Backward: the straight-through estimator,
dL/dw = dL/dQ(w) (s_c is treated as a constant; no weight is beyond the range it sets).

Activations (:class:`UniformActivationQuantizer`), one step for the whole tensor:

- ``range="learned"``: s is a parameter trained with LSQ's gradient (Esser et al., "Learned
  Step Size Quantization", ICLR 2020). With v = x / s,
  dQ/dx = 1 for q_min <= v <= q_max, else 0 (straight-through inside the range);
  dQ/ds = round(v) - v inside the range, q_min below it, q_max above it;
  and the step's gradient is scaled by g = 1 / sqrt(N q_max), N the number of elements of one
  sample of x (the layer's features). s starts at LSQ's 2 mean|x| / sqrt(q_max) on the first
  training batch.
- ``range="calibrated"``: s comes from the range [lo, hi] of the inputs seen while observing
  (:func:`calibrate` runs a model over calibration batches; a quantizer never calibrated observes
  the first training batch). ``observer="minmax"``: lo / hi are the smallest / largest value over
  all batches; ``observer="percentile"``: the mean over batches of each batch's
  (100 - p)-th / p-th percentile (p = ``percentile``, default 99.99), which ignores rare
  outliers. Then s = hi / (2^b - 1) unsigned, s = max(|lo|, |hi|) / 2^(b-1) signed (the
  weights' rule).
  Backward: straight-through inside the range, 0 outside (s is a constant).
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..errors import ConversionError

BITS = range(2, 9)
RANGES = ("learned", "calibrated")
OBSERVERS = ("minmax", "percentile")


def check_bits(bits: object, option: str = "bits") -> int:
    """``bits`` as an int in 2..8, else a ConversionError naming ``option`` and the value (a
    bool or a float such as 4.0 is not an int)."""
    if isinstance(bits, Integral) and not isinstance(bits, bool) and int(bits) in BITS:
        return int(bits)
    kind = "" if isinstance(bits, Integral) and not isinstance(bits, bool) else \
        f" (a {type(bits).__name__}; an int is required)"
    raise ConversionError(f"{option} must be an int in 2..8, got {bits!r}{kind}")


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """(q_min, q_max): [-2^(b-1), 2^(b-1) - 1] signed, [0, 2^b - 1] unsigned; 2^b codes."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def symmetric_step(magnitude: Tensor, bits: int) -> Tensor:
    """The step that maps [-m, m] onto the full signed range: m / 2^(b-1) (-m is code
    -2^(b-1) exactly); 1 where m = 0 (every value there is 0, any step codes it exactly)."""
    step = magnitude / 2 ** (bits - 1)
    return torch.where(magnitude > 0, step, torch.ones_like(step))


def codes(x: Tensor, step: Tensor, q_min: int, q_max: int) -> Tensor:
    """clamp(round(x / step), q_min, q_max), as floats (no autograd)."""
    return torch.round(x / step).clamp_(q_min, q_max)


def fake_quantize(x: Tensor, step: Tensor, q_min: int, q_max: int) -> Tensor:
    """Q(x) = clamp(round(x / step), q_min, q_max) * step, the value every layer computes with
    (no autograd; the quantizers add their gradients around it)."""
    return codes(x, step, q_min, q_max) * step


def _straight_through(value: Tensor, x: Tensor) -> Tensor:
    """``value`` forward, the identity to ``x`` backward; the forward is exactly ``value`` (the
    added term is exactly 0), so training and frozen layers compute the same numbers."""
    return value.detach() + (x - x.detach())


class UniformWeightQuantizer(nn.Module):
    """Symmetric per-output-channel b-bit weights (see the module docstring):
    forward Q(w) = clamp(round(w / s_c), -2^(b-1), 2^(b-1) - 1) s_c,
    s_c = max|w_c| / 2^(b-1); backward dL/dw = dL/dQ(w) (straight-through)."""

    signed = True

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = check_bits(bits)

    def step(self, weight: Tensor) -> Tensor:
        """s_c, shaped to broadcast against ``weight`` (output channel first)."""
        magnitude = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True)
        return symmetric_step(magnitude, self.bits)

    def codes(self, weight: Tensor) -> Tensor:
        """The integer codes of ``weight`` (int8) and the step per channel (1-D)."""
        step = self.step(weight)
        q = codes(weight.detach(), step, *code_range(self.bits, True))
        return q.to(torch.int8), step.reshape(-1)

    def forward(self, weight: Tensor) -> Tensor:
        value = fake_quantize(weight.detach(), self.step(weight), *code_range(self.bits, True))
        return _straight_through(value, weight)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _LSQ(torch.autograd.Function):
    """Q(x) with LSQ's gradients for x and the step (the formulas in the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, step: Tensor, q_min: int, q_max: int,  # type: ignore[override]
                grad_scale: float) -> Tensor:
        v = x / step
        ctx.save_for_backward(v)
        ctx.q_min, ctx.q_max, ctx.grad_scale = q_min, q_max, grad_scale
        return torch.round(v).clamp_(q_min, q_max) * step

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # dQ/ds = clamp(round(v), q_min, q_max) - v * [inside]: round(v) - v inside (round keeps
        # an in-range v in range), q_min below, q_max above; for finite v the same floats as
        # the case split by torch.where, in fewer passes (where is ~14x a multiply on CPU)
        (v,) = ctx.saved_tensors
        inside = (v >= ctx.q_min) & (v <= ctx.q_max)
        grad_x = grad * inside
        d_step = torch.round(v).clamp_(ctx.q_min, ctx.q_max).sub_(v * inside)
        grad_step = (grad * d_step).sum().reshape(()) * ctx.grad_scale
        return grad_x, grad_step, None, None, None


class UniformActivationQuantizer(nn.Module):
    """b-bit activations, one step for the tensor, unsigned (after a ReLU, the default) or
    signed; the step learned (LSQ) or calibrated (see the module docstring for the forward and
    backward formulas). ``step`` holds the current step (a parameter when learned, a buffer when
    calibrated) and ``initialized`` whether it has been set from data: by the first training
    batch or by :func:`calibrate`, never by an eval-mode forward (a model summary on zeros must
    not set it); until then the step is 1 and freezing the layer is an error."""

    def __init__(self, bits: int = 8, *, signed: bool = False, range: str = "learned",
                 observer: str = "minmax", percentile: float = 99.99) -> None:
        super().__init__()
        self.bits = check_bits(bits, "activation_bits")
        if not isinstance(signed, bool):
            raise ConversionError(f"activation_signed must be true or false, got {signed!r}")
        if range not in RANGES:
            raise ConversionError(f"activation_range must be one of {RANGES}, got {range!r}")
        if observer not in OBSERVERS:
            raise ConversionError(f"observer must be one of {OBSERVERS}, got {observer!r}")
        if (isinstance(percentile, bool) or not isinstance(percentile, (int, float))
                or not 50.0 < percentile <= 100.0):
            raise ConversionError(f"percentile must be a number in (50, 100], got "
                                  f"{percentile!r}")
        self.signed, self.range, self.observer = signed, range, observer
        self.percentile = float(percentile)
        self.q_min, self.q_max = code_range(self.bits, signed)
        if range == "learned":
            self.step = nn.Parameter(torch.tensor(1.0))
        else:
            self.register_buffer("step", torch.tensor(1.0))
            self.register_buffer("lo", torch.tensor(0.0))
            self.register_buffer("hi", torch.tensor(0.0))
            self.register_buffer("batches", torch.tensor(0))
        self.register_buffer("initialized", torch.tensor(False))
        self.observing = False

    def forward(self, x: Tensor) -> Tensor:
        if self.range == "calibrated":
            if self.observing or (self.training and not self.initialized):
                self.observe(x)
            value = fake_quantize(x.detach(), self.step, self.q_min, self.q_max)
            inside = (x.detach() >= self.q_min * self.step) & (x.detach() <= self.q_max * self.step)
            return value + (x - x.detach()) * inside  # forward exactly value; STE inside
        if self.training and not self.initialized:
            self._init_learned(x)
        if not (torch.is_grad_enabled() and (x.requires_grad or self.step.requires_grad)):
            return fake_quantize(x, self.step.detach(), self.q_min, self.q_max)
        features = x[0].numel() if x.dim() > 1 else x.numel()
        return _LSQ.apply(x, self.step, self.q_min, self.q_max,
                          1.0 / math.sqrt(features * self.q_max))

    @torch.no_grad()
    def _init_learned(self, x: Tensor) -> None:
        """LSQ's initial step 2 mean|x| / sqrt(q_max) from the first batch."""
        mean = x.detach().abs().mean()
        self.step.copy_(2.0 * mean / math.sqrt(self.q_max) if mean > 0 else torch.ones(()))
        self.initialized.fill_(True)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Fold one batch into the calibrated range and recompute the step from it."""
        x = x.detach().float().reshape(-1)
        if self.observer == "minmax":
            lo, hi = x.min(), x.max()
        else:
            q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0],
                             device=x.device)
            lo, hi = torch.quantile(x[:2 ** 24], q)  # torch.quantile's size limit
        n = int(self.batches)
        if n == 0:
            self.lo.fill_(lo), self.hi.fill_(hi)
        elif self.observer == "minmax":
            self.lo.clamp_(max=lo), self.hi.clamp_(min=hi)
        else:  # the running mean of the batches' percentiles
            self.lo.add_((lo - self.lo) / (n + 1)), self.hi.add_((hi - self.hi) / (n + 1))
        self.batches.add_(1)
        if self.signed:
            step = symmetric_step(torch.maximum(self.lo.abs(), self.hi.abs()), self.bits)
        else:
            hi = self.hi.clamp(min=0.0)
            step = torch.where(hi > 0, hi / self.q_max, torch.ones_like(hi))
        self.step.copy_(step)
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        observer = f", observer={self.observer!r}" if self.range == "calibrated" else ""
        return f"bits={self.bits}, {kind}, range={self.range!r}{observer}"


def calibrate(model: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Run ``model`` (in eval mode, without gradients) over ``batches`` (inputs, or (input,
    target) pairs) with every calibrated activation quantizer observing, starting from an empty
    range; returns ``model``. Post-training quantization is convert, calibrate, freeze."""
    quantizers = [m for m in model.modules()
                  if isinstance(m, UniformActivationQuantizer) and m.range == "calibrated"]
    if not quantizers:
        raise ConversionError("calibrate: the model has no calibrated activation quantizer "
                              "(convert with activation_range='calibrated')")
    was_training = model.training
    for q in quantizers:
        q.batches.zero_()
        q.observing = True
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for q in quantizers:
            q.observing = False
        model.train(was_training)
    if any(int(q.batches) == 0 for q in quantizers):
        raise ConversionError("calibrate: no batches were given")
    return model
