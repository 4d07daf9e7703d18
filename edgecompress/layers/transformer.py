"""Binary vision-transformer building blocks of BinaryViT (Le & Li, CVPR 2023 Workshops,
arXiv 2306.16678), each usable on its own.

- :class:`LearnableThresholdSign`: ``sign(x + b)`` with a learnable per-channel threshold and the
  ApproxSign backward (ReActNet's RSign, Liu et al. 2020; Bi-Real Net's ApproxSign, Liu et al.
  2018).
- :class:`CenteredBinaryLinear`: weights ``alpha * F(W - rowmean(W))`` with a per-row scale.
- :class:`RPReLU`: ``PReLU(x - g) + z`` per channel (ReActNet).
- :class:`BinaryLinearBlock`: learnable shift -> binary linear -> BatchNorm -> + real-valued
  shortcut -> RPReLU, what BinaryViT puts around every binary linear (the BatchNorm normalises
  the channels of every token, instead of a LayerNorm).
- :class:`ZeroOrAlpha`: the attention probabilities quantized to {0, a} with a learnable a.
- :class:`PoolingBranches`: BinaryViT's scaled average-pooling branches over the token grid.
- :class:`AttentionCore`: softmax(q k^T / sqrt(d)) v over heads, binary (q, k, v in {-1, +1},
  probabilities in {0, a}) or float; it reports its matrix products by precision to
  :func:`edgecompress.summary`.

Tokens are channel-last: ``(batch, tokens, channels)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelConfigError
from ..quantizers import QuantizerPair, method_pair, pair
from .base import CompressedLayer


class LearnableThresholdSign(nn.Module):
    """Binary activation with a learnable per-channel threshold (ReActNet's RSign).

    Forward:  y = sign(x + b), in {-1, +1} (sign(0) = +1), b of shape (channels,), initialised 0.
    Backward: dL/dx = B'(x + b) * dL/dy and dL/db = sum over the other dims of the same, where B'
    is the ``backward`` quantizer's derivative; the default ApproxSign (Bi-Real Net) gives
    B'(u) = 2 + 2u on [-1, 0), 2 - 2u on [0, 1], 0 elsewhere. Any registered elementary
    quantizer name (``"clip"``, ``"signswish"``, ...) replaces it.
    ``channel_dim``: the channel axis (-1 for tokens, 1 for images).
    """

    def __init__(self, channels: int, backward: str = "approxsign", channel_dim: int = -1) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.bias = nn.Parameter(torch.zeros(channels))
        self.quantizer = pair("sign", backward)

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return self.quantizer(x + self.bias.view(shape))


class CenteredBinaryLinear(CompressedLayer, nn.Linear):
    """Linear layer with mean-centred binary weights and a per-row scale (BinaryViT's weights).

    Forward:  y = A(x) W_b^T with W_b = alpha * F(C), C = W - rowmean(W),
              alpha = mean_j |C_ij| per output row (detached); A the optional input quantizer.
    Backward: dL/dC = B'(C) * dL/dF (the weight quantizer pair's rule; the default ``bnn`` pair
              passes the gradient where |C| <= 1, i.e. straight through clamp(C, -1, 1)), then
              through the centring: dL/dW = dL/dC - rowmean(dL/dC).
    ``weight_quantizer`` is any :class:`~edgecompress.quantizers.QuantizerPair`, e.g.
    ``method_pair("bnn++")``. No bias (as in the paper's binary linears).

    It is its own class, not a :class:`~edgecompress.layers.BinaryLinear`: its deployed weights
    are the signs of the *centred* weights, which the packed binary layers do not know about.
    """

    weight_bits = 1

    def __init__(self, in_features: int, out_features: int, *,
                 weight_quantizer: QuantizerPair | None = None,
                 input_quantizer: nn.Module | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=False)
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None \
            else method_pair("bnn")
        self.input_quantizer = input_quantizer

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return 1 if self.input_quantizer is not None else 32

    def centered_weight(self) -> Tensor:
        """W - rowmean(W) (differentiable)."""
        return self.weight - self.weight.mean(dim=1, keepdim=True)

    def quantized_weight(self) -> Tensor:
        """alpha * F(W - rowmean(W)), the effective weight of the forward pass."""
        centered = self.centered_weight()
        alpha = centered.abs().mean(dim=1, keepdim=True).detach()
        return self.weight_quantizer(centered) * alpha

    def discrete_weight(self) -> Tensor:
        """sign(W - rowmean(W)), the binary codes (no scale)."""
        with torch.no_grad():
            return self.weight_quantizer.hard(self.centered_weight())

    def forward(self, x: Tensor) -> Tensor:
        """``A(x) F(C)^T * alpha``: the same as ``F.linear(A(x), quantized_weight())`` in exact
        arithmetic and for the gradients, but with +-1 inputs and weights the product is an
        exact integer in float32 whatever the summation order, and the scale one rounding
        after it: what the packed layer's XOR-popcount GEMM computes, bit for bit."""
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        centered = self.centered_weight()
        alpha = centered.abs().mean(dim=1).detach()
        return F.linear(x, self.weight_quantizer(centered)) * alpha

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, weight_quantizer={self.weight_quantizer!r}, "
                f"binary_inputs={self.input_quantizer is not None}")


class RPReLU(nn.Module):
    """ReActNet's RPReLU (Liu et al., ECCV 2020), per channel (last dim):

    Forward:  y = PReLU_beta(x - g) + z, i.e. (x - g) + z where x >= g, beta (x - g) + z below.
    Backward: dy/dx = 1 where x >= g, beta below; dy/dg = -dy/dx; dy/dz = 1;
              dy/dbeta = (x - g) where x < g, 0 elsewhere.
    g, z start at 0 and beta at 0.25 (PReLU's default).
    """

    def __init__(self, channels: int, slope: float = 0.25) -> None:
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), float(slope)))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return _PReLU.apply(x - self.shift_in, self.slope) + self.shift_out


class _PReLU(torch.autograd.Function):
    """PReLU over the last dim: u where u >= 0, slope * u below, in a few arithmetic passes
    (torch.where on CPU is ~14x a multiply, and took a large share of a binary ViT's training
    step). Backward: du = g where u >= 0, slope * g below; dslope = the sum over the leading
    dims of g u below (zero elsewhere). Against ``torch.where(u >= 0, u, slope * u)`` under
    autograd (finite values): the same floats forward and for du; dslope is the same sum, but
    its order follows the memory layout of the products, so for a non-contiguous incoming
    gradient (e.g. k's, which attention uses transposed) it can differ in the last bits, and
    (with the other parameters' gradients that sum du) a training run's numbers drift apart
    over the epochs as float rounding does."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, slope: Tensor) -> Tensor:
        ctx.save_for_backward(u, slope)
        return u.clamp_min(0.0) + slope * u.clamp_max(0.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        u, slope = ctx.saved_tensors
        below = (u < 0).to(grad.dtype)
        above = 1 - below
        du = grad * (above + below * slope) if ctx.needs_input_grad[0] else None
        dslope = ((grad * below) * u).sum_to_size(slope.shape) if ctx.needs_input_grad[1] \
            else None
        return du, dslope


#: a binarization method's name, or a mapping with its name and options (:func:`weight_pair`)
WeightMethod = str | Mapping[str, Any]


def weight_pair(method: WeightMethod) -> QuantizerPair:
    """The weight quantizer pair of ``method``: a binarization method's name (``"bnn++"``) or a
    mapping with its ``name`` and the options of :func:`edgecompress.quantizers.method_pair`
    (``{"name": "bnn++", "mu": {"kind": "linear", "start": 0, "end": 1.5}, "prox":
    "proxquant"}``), as a recipe's ``model.weight_method`` writes it; a bad one is a
    :class:`ModelConfigError` naming it."""
    spec = {"name": method} if isinstance(method, str) else dict(method)
    if not isinstance(spec.get("name"), str):
        raise ModelConfigError(f"weight_method must be a method name or a mapping with a 'name', "
                               f"got {method!r}")
    try:
        return method_pair(spec.pop("name"), **spec)
    except (TypeError, ValueError) as exc:  # unknown method, quantizer or parameter
        raise ModelConfigError(f"weight_method {method!r}: {exc}") from None


class BinaryLinearBlock(nn.Module):
    """What BinaryViT puts around each binary linear (ReActNet-style):

        y = RPReLU(BN(W_b sign(x + b)) + shortcut(x))

    The shortcut is real-valued: the identity when in == out, the input repeated k times when
    out = k * in, the mean of its k repeats when in = k * out (our reading for the MLP's
    widening and narrowing layers); callers with another shortcut (patch merging) pass it to
    :meth:`forward`. ``weight_method``: the binarization method of the weights, see
    :func:`weight_pair` (e.g. ``"bnn"``, ``"bnn++"`` or ``{"name": "pc", "mu": 0.5}``).
    """

    def __init__(self, in_features: int, out_features: int,
                 weight_method: WeightMethod = "bnn") -> None:
        super().__init__()
        big, small = max(in_features, out_features), min(in_features, out_features)
        if big % small:
            raise ModelConfigError(
                f"binary linear block {in_features} -> {out_features}: one width must be a "
                f"multiple of the other for the real-valued shortcut")
        self.in_features, self.out_features = in_features, out_features
        self.linear = CenteredBinaryLinear(
            in_features, out_features, weight_quantizer=weight_pair(weight_method),
            input_quantizer=LearnableThresholdSign(in_features))
        # a torch.nn BatchNorm1d on the (tokens, channels) rows: frozen models keep it as it is
        # (a leaf layer of the traced graph, not folded: the frozen outputs stay bit-exact)
        self.norm = nn.BatchNorm1d(out_features)
        self.act = RPReLU(out_features)

    def shortcut(self, x: Tensor) -> Tensor:
        if self.out_features >= self.in_features:
            return torch.cat([x] * (self.out_features // self.in_features), dim=-1)
        k = self.in_features // self.out_features
        return x.unflatten(-1, (k, self.out_features)).mean(dim=-2)

    def forward(self, x: Tensor, shortcut: Tensor | None = None) -> Tensor:
        residual = self.shortcut(x) if shortcut is None else shortcut
        y = self.linear(x)
        y = self.norm(y.reshape(-1, self.out_features)).reshape(y.shape)
        return self.act(y + residual)


class _RoundSTE(torch.autograd.Function):
    """round(x) forward, identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


class ZeroOrAlpha(nn.Module):
    """Attention probabilities quantized to {0, a} with a learnable a (BinaryViT).

    Forward:  y = a * round(clamp(p / a, 0, 1)), so y = a where p >= a / 2, else 0.
    Backward (round straight-through, as LSQ, Esser et al. 2020, without its gradient scale):
              dy/dp = 1 where 0 <= p / a <= 1, 0 elsewhere;
              dy/da = round(p / a) - p / a where 0 <= p / a <= 1, 1 where p / a > 1, 0 below.
    a starts at 0.005.
    """

    def __init__(self, alpha: float = 0.005) -> None:
        super().__init__()
        if alpha <= 0:
            raise ModelConfigError(f"ZeroOrAlpha: alpha must be > 0, got {alpha!r}")
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def codes(self, p: Tensor) -> Tensor:
        """round(clamp(p / a, 0, 1)), in {0, 1} (the forward is ``codes(p) * a``)."""
        return _RoundSTE.apply(torch.clamp(p / self.alpha, 0.0, 1.0))

    def forward(self, p: Tensor) -> Tensor:
        return self.codes(p) * self.alpha


class AttentionCore(nn.Module):
    """Multi-head scaled dot-product attention on projected tokens q (B, N, C), k and v (B, S, C):

        out = merge_heads(P v_h), P = Q(softmax(q_h k_h^T / sqrt(C / heads)))

    Binary (``binary=True``): q, k and v are binarized by :class:`LearnableThresholdSign`
    (thresholds start at 0: plain sign; the thresholds are our reading, the paper binarizes
    q, k, v to +-1), so q k^T is XNOR-popcount work; with ``quantize_probs`` Q is
    :class:`ZeroOrAlpha` and P v is add-only ({0, a} times +-1), otherwise Q is the identity.
    Float: no quantization at all. The summary counts these products by precision through
    :meth:`edgecompress_macs`.
    """

    def __init__(self, dim: int, heads: int, binary: bool = False,
                 quantize_probs: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ModelConfigError(f"heads {heads} does not divide the width dim {dim}")
        self.dim, self.heads, self.binary = dim, heads, binary
        self.quantize_probs = binary and quantize_probs
        self.scale = (dim // heads) ** -0.5
        if binary:
            self.q_sign = LearnableThresholdSign(dim)
            self.k_sign = LearnableThresholdSign(dim)
            self.v_sign = LearnableThresholdSign(dim)
        self.probs_quantizer = ZeroOrAlpha() if self.quantize_probs else nn.Identity()

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.binary:
            q, k, v = self.q_sign(q), self.k_sign(k), self.v_sign(v)
        q, k, v = self._split(q), self._split(k), self._split(v)
        probs = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        if self.quantize_probs:  # (codes @ v) * a: an exact integer product, then one rounding
            out = (self.probs_quantizer.codes(probs) @ v) * self.probs_quantizer.alpha
        else:
            out = probs @ v
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)

    #: the summary's operation kind of each product (see :meth:`edgecompress_macs`)
    op_kind = {"w1a1": "xnor-popcount", "u1a1": "add", "w1a32": "add", "w32a32": "mac"}

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        """Per sample: q k^T and P v, each N x S x C multiply-accumulates. Keys: ``w1a1``
        (+-1 x +-1, XNOR-popcount), ``u1a1`` ({0, a} x +-1, add-only), ``w1a32`` (float
        probabilities x +-1, add/subtract), ``w32a32`` (float)."""
        q, k = inputs[0], inputs[1]
        product = q.shape[1] * k.shape[1] * q.shape[2]
        if not self.binary:
            return {"w32a32": 2 * product}
        return {"w1a1": product, ("u1a1" if self.quantize_probs else "w1a32"): product}

    def extra_repr(self) -> str:
        return f"heads={self.heads}, binary={self.binary}, quantize_probs={self.quantize_probs}"


class PoolingBranches(nn.Module):
    """sum_i s_i * avgpool_i(x) over the token grid, kernels 3x1, 1x3, 5x1, 1x5, stride 1,
    zero padding not counted in the mean, s_i learnable from 0 (BinaryViT's change 2). The CLS
    token (if any, first) gets 0."""

    KERNELS = ((3, 1), (1, 3), (5, 1), (1, 5))

    def __init__(self, grid: tuple[int, int], cls_token: bool) -> None:
        super().__init__()
        self.grid, self.skip = grid, int(cls_token)
        self.scales = nn.Parameter(torch.zeros(len(self.KERNELS)))

    def forward(self, x: Tensor) -> Tensor:
        image = x[:, self.skip:].transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)
        out = sum(self.scales[i] * F.avg_pool2d(image, k, 1, (k[0] // 2, k[1] // 2),
                                                count_include_pad=False)
                  for i, k in enumerate(self.KERNELS))
        out = out.flatten(2).transpose(1, 2)
        return F.pad(out, (0, 0, self.skip, 0))
