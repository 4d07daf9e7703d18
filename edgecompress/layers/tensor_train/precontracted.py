"""The precontracted (inference) form of a TT weight: its cores multiplied, once, into the few
larger factors that y = W x needs at run time, never into W itself.

The training layer contracts x with every core in turn (one small product per core, the
cheapest order per batch size); for a frozen weight the products among cores can be done ahead,
leaving fewer, larger run-time products, which matters most at batch 1 where each product costs
a fixed few microseconds:

- MPS: the input-side cores merge into L (N x r_e), the output-side ones into R (r_e x M);
  y = (x L) R + b: two products, N r_e + r_e M multiply-adds per row, as many numbers stored.
- MPO: the cores carry input and output modes together, so no two-sided split exists; the
  chain is cut into G groups of neighbouring cores, each merged into one core
  (r, M_g, N_g, r'), and x meets the groups from the last to the first, one matrix product per
  group (:func:`~.layout.left_matmul`): sum_g N_1..N_g r_{g-1} r_g M_g..M_G multiply-adds per
  row. The cuts are those of least :func:`plan_cost` among the groupings storing fewer
  numbers than W (always allowed: one group per core, the training cores themselves).

Both are exact: the same sums as the training form in another order (float rounding differs
by a few units in the last place; tests bound it).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ...registry import Registry
from .layout import TTLayout, _merge_left, _merge_right, left_matmul

#: the fixed cost of one run-time matrix product, in multiply-adds: about 4 us on one CPU thread
#: at batch 1, where a dense 200 x 800 product (160,000 multiply-adds) takes about 20 us
PRODUCT_MACS = 32_768

Shape = tuple[int, int, int, int]  # a merged MPO core (r, M_g, N_g, r')
Ranges = tuple[tuple[int, int], ...]  # groups of cores as (start, end) ranges


class Precontracted:
    """The run-time factors of one TT weight (:attr:`factors`, float tensors) and y = W x."""

    factors: list[Tensor]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """W x + bias for ``x`` (rows, N) -> (rows, M)."""
        raise NotImplementedError

    def macs(self, rows: int) -> int:
        """Multiply-adds of W x for ``rows`` rows (bias excluded)."""
        raise NotImplementedError

    @property
    def numel(self) -> int:
        """Numbers held at run time (compare with the dense M N)."""
        return sum(f.numel() for f in self.factors)


PRECONTRACTED: Registry[Callable[[TTLayout, Sequence[Tensor]], Precontracted]] = Registry(
    "precontracted tensor-train form")


def precontract(layout: TTLayout, cores: Sequence[Tensor]) -> Precontracted:
    """The run-time form of the TT weight with ``layout`` and ``cores``."""
    return PRECONTRACTED.get(layout.mode)(layout, cores)


@PRECONTRACTED.register("mps")
class MPSPrecontracted(Precontracted):
    """y = (x L) R + b with L (N, r_e) and R (r_e, M) (see the module docstring)."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor]) -> None:
        e = len(layout.in_factors)
        with torch.no_grad():
            self.left = _merge_left(cores[:e]).contiguous()
            self.right = _merge_right(cores[e:]).contiguous()
        self.factors = [self.left, self.right]

    def __call__(self, x: Tensor, bias: Tensor | None) -> Tensor:
        z = x @ self.left
        return torch.addmm(bias, z, self.right) if bias is not None else z @ self.right

    def macs(self, rows: int) -> int:
        return rows * self.left.shape[1] * (self.left.shape[0] + self.right.shape[1])


def merge_mpo(cores: Sequence[Tensor]) -> Tensor:
    """Neighbouring MPO cores (r, m_k, n_k, r') as one core (r, m_1..m_k, n_1..n_k, r')."""
    merged = cores[0]
    for core in cores[1:]:
        a, m, n, _ = merged.shape
        _, m2, n2, b = core.shape
        merged = torch.einsum("amnc,cpqb->ampnqb", merged, core).reshape(a, m * m2, n * n2, b)
    return merged


def plan_macs(shapes: Sequence[Shape]) -> int:
    """Multiply-adds per row of the right-to-left sweep over merged cores of ``shapes``
    (r, M_g, N_g, r'): sum_g N_1..N_g r r' M_g..M_G."""
    return sum(math.prod(s[2] for s in shapes[:g + 1]) * a * b
               * math.prod(s[1] for s in shapes[g:])
               for g, (a, _, _, b) in enumerate(shapes))


def plan_cost(shapes: Sequence[Shape]) -> int:
    """The cost a grouping is chosen by: multiply-adds of one row plus :data:`PRODUCT_MACS` per
    run-time product (batch 1, the per-token case, where the fixed cost matters most)."""
    return plan_macs(shapes) + PRODUCT_MACS * len(shapes)


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


def best_grouping(layout: TTLayout) -> Ranges:
    """The core ranges of least :func:`plan_cost` among the groupings storing fewer numbers
    than W, or one group per core (ties: fewer stored numbers, then the first)."""
    dense = layout.in_features * layout.out_features
    best, key = None, None
    for ranges, shapes in mpo_groupings(layout):
        stored = sum(math.prod(s) for s in shapes)
        if stored >= dense and len(ranges) < len(layout.in_factors):
            continue
        k = (plan_cost(shapes), stored)
        if key is None or k < key:
            best, key = ranges, k
    assert best is not None  # one group per core is always a candidate
    return best


@PRECONTRACTED.register("mpo")
class MPOPrecontracted(Precontracted):
    """Right-to-left sweep over merged groups of cores (see the module docstring): the state
    (rows N_1..N_{g-1}, N_g r_g, M_{g+1}..M_G) meets group g's matrix (r_{g-1} M_g, N_g r_g).
    ``ranges``: the groups as (start, end) core ranges (None: :func:`best_grouping`)."""

    def __init__(self, layout: TTLayout, cores: Sequence[Tensor],
                 ranges: Ranges | None = None) -> None:
        self.ranges = best_grouping(layout) if ranges is None else tuple(ranges)
        with torch.no_grad():
            merged = [merge_mpo(cores[s:t]) for s, t in self.ranges]
        self.shapes = [tuple(c.shape) for c in merged]
        self.out_features = layout.out_features
        # the last group (r, M_G, N_G, 1) is met first, by all rows at once: (N_G, r M_G)
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

    def macs(self, rows: int) -> int:
        return rows * plan_macs(self.shapes)
