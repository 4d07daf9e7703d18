"""The precontracted (inference) form of a TT weight: its cores multiplied, once, into the few
larger factors that y = W x needs at run time, up to W itself when that is cheapest.

The training layer contracts x with every core in turn (one small product per core); for a
frozen weight the products among cores can be done ahead (at freezing and loading; the file
still holds only the cores), leaving fewer, larger run-time products. Each way of doing so is a
:class:`Plan` with an exact cost per row:

- ``dense``: all cores multiplied into W (N x M stored transposed); y = x W^T + b, one product
  of N M multiply-adds per row. A candidate for both modes: at high rank a TT can cost more per
  row than W.
- MPS ``two-sided``: the input-side cores merged into L (N x r_e), the output-side ones into
  R (r_e x M); y = (x L) R + b, two products of N r_e + r_e M multiply-adds per row.
- MPO ``right-to-left`` / ``left-to-right``: the cores carry input and output modes together,
  so no two-sided split exists; the chain is cut into G >= 2 groups of neighbouring cores, each
  merged into one core (r_{g-1}, M_g, N_g, r_g), and x meets the groups one matrix product per
  group (:func:`~.layout.left_matmul`), from the last group (sum_g N_1..N_g r_{g-1} r_g
  M_g..M_G multiply-adds per row: inputs absorbed before outputs grow) or from the first
  (sum_g M_1..M_g r_{g-1} r_g N_g..N_G), whichever the cost picks. One group is ``dense``.

The rule (:func:`choose`): for ``rows`` rows a plan costs its multiply-adds, ``rows x`` those
per row, counted :data:`FACTORED_MAC_WEIGHT` times for every plan but ``dense``, plus
:data:`PRODUCT_MACS` per run-time product (the fixed cost of a product call, which matters at
batch 1 and fades with the batch); among the plans holding at most M N numbers at run time
(never more than W), the cheapest runs (ties: fewer numbers, then the listed order). A frozen
layer builds the plans that win for some batch size (:func:`envelope`, usually one, at most a
few) and picks among them per call by the number of rows.

All plans are exact: the same sums as the training form in another order (float rounding
differs by a few units in the last place; tests bound it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...registry import Registry
from .layout import TTLayout, _merge_left, _merge_right, left_matmul

#: the fixed cost of one run-time matrix product, in multiply-adds: about 4 us on one CPU thread
#: at batch 1, where a dense 200 x 800 product (160,000 multiply-adds) takes about 20 us
PRODUCT_MACS = 32_768
#: how many times a multiply-add of a factored plan counts against one of the dense product: the
#: factored products are small and narrow (widths of tens), which one CPU thread runs at about
#: half the rate of the one large product of W (measured at batch 32 on the 200 x 800 gate
#: matrix: 15-27 against 36 GMAC/s; at batch 1 their extra reshapes cost about as much)
FACTORED_MAC_WEIGHT = 2

Shape = tuple[int, int, int, int]  # a merged MPO core (r, M_g, N_g, r')
Ranges = tuple[tuple[int, int], ...]  # groups of cores as (start, end) ranges


@dataclass(frozen=True)
class Plan:
    """One way of running y = W x from precontracted factors, with its exact cost: ``kind``
    (see the module docstring), the MPO core ``ranges`` merged into each group (() otherwise),
    multiply-adds per row, run-time products and numbers held."""

    kind: str
    ranges: Ranges
    macs: int
    products: int
    numel: int

    @property
    def weighted_macs(self) -> int:
        """Multiply-adds per row as the cost counts them (see the module docstring)."""
        return self.macs * (1 if self.kind == "dense" else FACTORED_MAC_WEIGHT)

    def cost(self, rows: int) -> int:
        """The cost the plans are compared by for ``rows`` rows (see the module docstring)."""
        return rows * self.weighted_macs + PRODUCT_MACS * self.products


#: per mode, every plan of a layout (the dense one included)
PLANS: Registry[Callable[[TTLayout], list[Plan]]] = Registry("tensor-train mode")


def dense_plan(in_features: int, out_features: int) -> Plan:
    """The plan of a dense in x out matrix (of a TT weight, or of nn.Linear)."""
    size = in_features * out_features
    return Plan("dense", (), size, 1, size)


@PLANS.register("mps")
def mps_plans(layout: TTLayout) -> list[Plan]:
    """The two-sided form and W."""
    r, n, m = layout.bonds[len(layout.in_factors)], layout.in_features, layout.out_features
    return [Plan("two-sided", (), n * r + r * m, 2, n * r + r * m), dense_plan(n, m)]


@PLANS.register("mpo")
def mpo_plans(layout: TTLayout) -> list[Plan]:
    """Every cut of the chain into >= 2 groups (2^(d-1) - 1 of them) in both directions, and W."""
    out = []
    for ranges, shapes in mpo_groupings(layout):
        if len(ranges) > 1:
            numel = sum(math.prod(s) for s in shapes)
            out += [Plan(kind, ranges, sweep_macs(shapes, kind), len(ranges), numel)
                    for kind in SWEEPS]
    return out + [dense_plan(layout.in_features, layout.out_features)]


def candidates(layout: TTLayout) -> list[Plan]:
    """The plans a frozen layer may run: those holding at most M N numbers."""
    return [p for p in PLANS.get(layout.mode)(layout)
            if p.numel <= layout.in_features * layout.out_features]


def choose(plans: Sequence[Plan], rows: int) -> Plan:
    """The plan of least :meth:`Plan.cost` for ``rows`` rows (ties: fewer numbers, then the
    first listed)."""
    best = plans[0]
    for plan in plans[1:]:
        if (plan.cost(rows), plan.numel) < (best.cost(rows), best.numel):
            best = plan
    return best


def envelope(plans: Sequence[Plan]) -> list[Plan]:
    """The plans :func:`choose` picks for some number of rows >= 1, in ``plans``' order. The
    costs are lines in ``rows``, so the choice can change only where two of them cross: it is
    enough to look at 1 and at the integers on either side of each crossing."""
    rows = {1}
    for a, b in itertools.combinations(plans, 2):
        slopes = a.weighted_macs - b.weighted_macs
        if slopes:
            cross = PRODUCT_MACS * (b.products - a.products) / slopes
            if cross > 1:
                rows |= {math.floor(cross), math.floor(cross) + 1}
    chosen = {choose(plans, n) for n in rows}
    return [p for p in plans if p in chosen]


# --- MPO groupings -----------------------------------------------------------------------------

def mpo_groupings(layout: TTLayout) -> list[tuple[Ranges, tuple[Shape, ...]]]:
    """Every cut of the chain into groups of neighbouring cores (2^(d-1) of them): the groups'
    (start, end) core ranges and merged shapes (r, M_g, N_g, r')."""
    d, r = len(layout.in_factors), layout.bonds
    out = []
    for count in range(d):
        for cuts in itertools.combinations(range(1, d), count):
            bounds = (0, *cuts, d)
            shapes = tuple((r[s], math.prod(layout.out_factors[s:t]),
                            math.prod(layout.in_factors[s:t]), r[t])
                           for s, t in zip(bounds, bounds[1:]))
            out.append((tuple(zip(bounds, bounds[1:])), shapes))
    return out


def sweep_macs(shapes: Sequence[Shape], kind: str) -> int:
    """Multiply-adds per row of the sweep ``kind`` over merged cores of ``shapes``
    (r, M_g, N_g, r'): from the last group sum_g N_1..N_g r r' M_g..M_G, from the first
    sum_g M_1..M_g r r' N_g..N_G."""
    done, rest = (2, 1) if kind == "right-to-left" else (1, 2)  # modes met / still to meet
    return sum(math.prod(s[done] for s in shapes[:g + 1]) * a * b
               * math.prod(s[rest] for s in shapes[g:])
               for g, (a, _, _, b) in enumerate(shapes))


def merge_mpo(cores: Sequence[Tensor]) -> Tensor:
    """Neighbouring MPO cores (r, m_k, n_k, r') as one core (r, m_1..m_k, n_1..n_k, r')."""
    merged = cores[0]
    for core in cores[1:]:
        a, m, n, _ = merged.shape
        _, m2, n2, b = core.shape
        merged = torch.einsum("amnc,cpqb->ampnqb", merged, core).reshape(a, m * m2, n * n2, b)
    return merged


# --- the run-time factors of each plan kind ----------------------------------------------------

class Kernel:
    """The run-time factors of one plan (:attr:`factors`) and y = W x with them."""

    factors: list[Tensor]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """W x + bias for ``x`` (rows, N) -> (rows, M)."""
        raise NotImplementedError


KERNELS: Registry[Callable[[TTLayout, Sequence[Tensor], Plan], Kernel]] = Registry(
    "precontracted plan kind")


@KERNELS.register("dense")
class DenseKernel(Kernel):
    """y = x W^T + b (nn.Linear's product), W (M, N) formed from the cores."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor], plan: Plan) -> None:
        self.weight = layout.dense(cores).contiguous()
        self.factors = [self.weight]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, self.weight, bias)


@KERNELS.register("two-sided")
class TwoSidedKernel(Kernel):
    """MPS y = (x L) R + b with L (N, r_e) and R (r_e, M)."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor], plan: Plan) -> None:
        e = len(layout.in_factors)
        self.left = _merge_left(cores[:e]).contiguous()
        self.right = _merge_right(cores[e:]).contiguous()
        self.factors = [self.left, self.right]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        z = x @ self.left
        return torch.addmm(bias, z, self.right) if bias is not None else z @ self.right


@KERNELS.register("right-to-left")
class RightToLeftKernel(Kernel):
    """MPO sweep from the last group: the state (rows N_1..N_{g-1}, N_g r_g, M_{g+1}..M_G)
    meets group g's matrix (r_{g-1} M_g, N_g r_g); the last group (r, M_G, N_G, 1) is met by all
    rows at once as (N_G, r M_G)."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor], plan: Plan) -> None:
        merged = [merge_mpo(cores[s:t]) for s, t in plan.ranges]
        self.shapes = [tuple(c.shape) for c in merged]
        self.out_features = layout.out_features
        *rest, last = merged
        self.mats = [c.reshape(c.shape[0] * c.shape[1], -1).contiguous() for c in rest]
        self.last = last.reshape(last.shape[0] * last.shape[1], -1).T.contiguous()
        self.factors = [*self.mats, self.last]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.shape[0]
        s = x.reshape(-1, self.last.shape[0]) @ self.last  # (rows N_<G, r M_G)
        suffix = self.shapes[-1][1]
        for mat, (_, m, n, b) in zip(reversed(self.mats), reversed(self.shapes[:-1])):
            s = left_matmul(mat, s.reshape(-1, n * b, suffix))
            suffix *= m
        y = s.reshape(rows, self.out_features)
        return y + bias if bias is not None else y


@KERNELS.register("left-to-right")
class LeftToRightKernel(Kernel):
    """MPO sweep from the first group: the state (rows M_1..M_{g-1}, r_{g-1} N_g,
    N_{g+1}..N_G) meets group g's matrix (M_g r_g, r_{g-1} N_g); the last group, with nothing
    after it, is one product of all rows as (rows M_<G, r N_G) by (r N_G, M_G)."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor], plan: Plan) -> None:
        merged = [merge_mpo(cores[s:t]) for s, t in plan.ranges]
        self.shapes = [tuple(c.shape) for c in merged]
        self.out_features = layout.out_features
        *rest, last = merged
        self.mats = [c.permute(1, 3, 0, 2).reshape(c.shape[1] * c.shape[3], -1).contiguous()
                     for c in rest]
        self.last = last.permute(0, 2, 1, 3).reshape(-1, last.shape[1]).contiguous()
        self.factors = [*self.mats, self.last]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.shape[0]
        t = x.reshape(rows, 1, -1)
        for mat, (a, _, n, _) in zip(self.mats, self.shapes):
            t = left_matmul(mat, t.reshape(-1, a * n, t.shape[-1] // n))
        y = t.reshape(-1, self.last.shape[0]) @ self.last  # (rows M_<G, M_G)
        y = y.reshape(rows, self.out_features)
        return y + bias if bias is not None else y


SWEEPS = ("right-to-left", "left-to-right")


class Precontracted:
    """The run-time form of one TT weight: the kernels of the plans that win for some number
    of rows (:func:`envelope`, or ``plans`` when given), and y = W x by the one :func:`choose`
    picks for the rows of each call."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor],
                 plans: Sequence[Plan] | None = None) -> None:
        self.plans = envelope(candidates(layout)) if plans is None else list(plans)
        self.layout, self.cores = layout, list(cores)
        self.dense = dense_plan(layout.in_features, layout.out_features)
        with torch.no_grad():
            self.kernels = [KERNELS.get(p.kind)(layout, cores, p) for p in self.plans]
        self._by_rows: dict[int, Kernel] = {}
        self._weight: Tensor | None = None

    def plan(self, rows: int) -> Plan:
        """The plan run for ``rows`` rows."""
        return choose(self.plans, rows)

    def kernel(self, rows: int) -> Kernel:
        """The kernel run for ``rows`` rows."""
        kernel = self._by_rows.get(rows)
        if kernel is None:
            kernel = self._by_rows[rows] = self.kernels[self.plans.index(self.plan(rows))]
        return kernel

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """W x + bias for ``x`` (rows, N) -> (rows, M)."""
        return self.kernel(x.shape[0])(x, bias)

    def dense_weight(self) -> Tensor:
        """W (M, N): the dense plan's, or formed on the first call (for a fused LSTM kernel)."""
        if self._weight is None:
            dense = [k for k in self.kernels if isinstance(k, DenseKernel)]
            with torch.no_grad():
                self._weight = (dense[0] if dense else DenseKernel(
                    self.layout, self.cores, self.dense)).weight
        return self._weight

    def macs(self, rows: int) -> int:
        """Multiply-adds of W x for ``rows`` rows (bias excluded)."""
        return rows * self.plan(rows).macs

    @property
    def factors(self) -> list[Tensor]:
        return [f for kernel in self.kernels for f in kernel.factors]

    @property
    def numel(self) -> int:
        """Numbers held at run time (compare with the dense M N)."""
        return sum(f.numel() for f in self.factors)


def precontract(layout: TTLayout, cores: Sequence[Tensor]) -> Precontracted:
    """The run-time form of the TT weight with ``layout`` and ``cores``."""
    return Precontracted(layout, cores)
