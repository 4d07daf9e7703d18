"""The tensor-train (TT) format of a weight matrix W (M x N): shapes, costs, contractions.

A weight W of ``out_features`` M = m_1...m_d rows and ``in_features`` N = n_1...n_e columns is
stored as a chain of small cores. Row index i = (i_1..i_d) and column index j = (j_1..j_e) are
read in row-major order (i_1, j_1 most significant), as ``W.reshape(m_1..m_d, n_1..n_e)`` does.
The ranks r_1..r_{D-1} are the sizes of the bonds between consecutive cores (r_0 = r_D = 1).

- MPO, the TT-matrix of Novikov et al. 2015 ("Tensorizing neural networks"): d = e cores G_k of
  shape (r_{k-1}, m_k, n_k, r_k), W[i, j] = G_1[:, i_1, j_1, :] ... G_d[:, i_d, j_d, :].
  Parameters: sum_k r_{k-1} m_k n_k r_k.
- MPS (Murua et al. 2020, arXiv 2006.05442): the plain TT of W viewed as a tensor whose modes are
  the column factors followed by the row factors, (s_1..s_D) = (n_1..n_e, m_1..m_d), each core
  A_k of shape (r_{k-1}, s_k, r_k) carrying one index: W[i, j] = A_1[:, j_1, :] ... A_e[:, j_e, :]
  A_{e+1}[:, i_1, :] ... A_D[:, i_d, :]. Parameters: sum_k r_{k-1} s_k r_k. y = W x contracts x
  with the input-side cores (down to one rank-r_e vector per batch row), then expands it through
  the output-side cores.

The largest useful rank of bond k is min(s_1...s_k, s_{k+1}...s_D) (the ranks of the matrix
unfoldings of W; MPO's s_k = m_k n_k). An int ``ranks`` is that rank on every bond, capped at each
bond's bound; a list is checked exactly (each bond at most its bound and at most its neighbour
times the mode between them, which no TT can exceed).

y = W x never forms W: each contraction *order* (:attr:`TTLayout.orders`) has an exact
multiply-add count (:meth:`TTLayout.flops`, 2 FLOPs per multiply-add, bias excluded) and the
layer runs the cheapest for its batch size (:meth:`TTLayout.best_order`). The TT-SVD of
Oseledets 2011 ("Tensor-train decomposition") turns a dense W into cores (:meth:`decompose`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ...errors import ConversionError
from ...registry import Registry

Factorization = tuple[tuple[int, ...], tuple[int, ...]]


# --- factorization and ranks -------------------------------------------------------------------

def default_cores(size: int) -> int:
    """Cores for one side of size ``size`` when the factorization is automatic: factors near 8,
    2 to 4 of them (2 up to 64, 3 up to 512, 4 above)."""
    return min(4, max(2, math.ceil(math.log2(max(size, 2)) / 3)))


def factorize(size: int, parts: int) -> tuple[int, ...]:
    """``size`` as ``parts`` balanced factors in non-increasing order: its prime factors, largest
    first, each multiplied into the smallest factor so far (ones when ``size`` has fewer than
    ``parts`` prime factors, e.g. a prime)."""
    factors = [1] * parts
    for p in sorted(_primes(size), reverse=True):
        smallest = min(range(parts), key=factors.__getitem__)
        factors[smallest] *= p
    return tuple(sorted(factors, reverse=True))


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def auto_factorization(in_features: int, out_features: int, mode: str) -> Factorization:
    """The factorization used when none is given: each side into :func:`default_cores` balanced
    factors. MPS drops factors of 1 (a prime size is one core on its side); MPO pairs the sides
    core by core, so both get the larger side's count and a prime is padded with ones."""
    if LAYOUTS.get(mode).mode == "mpo":
        d = max(default_cores(in_features), default_cores(out_features))
        return factorize(in_features, d), factorize(out_features, d)
    sides = [tuple(f for f in factorize(n, default_cores(n)) if f > 1) or (1,)
             for n in (in_features, out_features)]
    return sides[0], sides[1]


def check_factorization(in_features: int, out_features: int, factorization: Any,
                        mode: str) -> Factorization:
    """``factorization`` as (input factors, output factors) of positive ints whose products are
    ``in_features`` and ``out_features`` (the same number on both sides for MPO)."""
    accepted = ("a pair (input factors, output factors) of lists of positive ints whose "
                f"products are in_features={in_features} and out_features={out_features}")
    if (not isinstance(factorization, (list, tuple)) or len(factorization) != 2
            or not all(isinstance(side, (list, tuple)) and side and all(
                isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in side)
                for side in factorization)):
        raise ConversionError(f"factorization {factorization!r} is not {accepted}")
    fin, fout = (tuple(side) for side in factorization)
    for side, factors, size in (("input", fin, in_features), ("output", fout, out_features)):
        if math.prod(factors) != size:
            raise ConversionError(f"factorization {factorization!r}: the {side} factors "
                                  f"{factors} multiply to {math.prod(factors)}, not {side}"
                                  f" size {size}; expected {accepted}")
    if LAYOUTS.get(mode).mode == "mpo" and len(fin) != len(fout):
        raise ConversionError(f"factorization {factorization!r}: mode 'mpo' pairs input and "
                              f"output factors core by core, so both sides need the same "
                              f"number of factors (got {len(fin)} and {len(fout)}; pad with 1)")
    return fin, fout


def rank_bounds(modes: Sequence[int]) -> tuple[int, ...]:
    """The largest rank of each bond of a chain with core mode sizes ``modes``:
    min(s_1...s_k, s_{k+1}...s_D)."""
    return tuple(min(math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, len(modes)))


def resolve_ranks(ranks: Any, modes: Sequence[int]) -> tuple[int, ...]:
    """The bond ranks for cores with mode sizes ``modes`` (see the module docstring)."""
    bounds = rank_bounds(modes)
    accepted = (f"a positive int (capped at each bond's bound) or a list of {len(bounds)} "
                f"positive ints, one per bond, at most {list(bounds)}")
    if isinstance(ranks, int) and not isinstance(ranks, bool):
        if ranks < 1:
            raise ConversionError(f"ranks={ranks} is not {accepted}")
        return tuple(min(ranks, b) for b in bounds)
    if (not isinstance(ranks, (list, tuple)) or len(ranks) != len(bounds) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks)):
        raise ConversionError(f"ranks={ranks!r} is not {accepted} (core modes {list(modes)})")
    full = (1, *ranks, 1)
    for k, r in enumerate(ranks):
        if r < 1 or r > bounds[k]:
            raise ConversionError(f"ranks={list(ranks)}: rank {r} of bond {k + 1} is outside "
                                  f"1..{bounds[k]} (the TT-rank bound for core modes "
                                  f"{list(modes)}); expected {accepted}")
    for k, r in enumerate(ranks):
        if r > full[k] * modes[k] or r > modes[k + 1] * full[k + 2]:
            raise ConversionError(
                f"ranks={list(ranks)}: rank {r} of bond {k + 1} exceeds what its neighbours "
                f"can reach (left rank x mode = {full[k] * modes[k]}, mode x right rank = "
                f"{modes[k + 1] * full[k + 2]}); core modes {list(modes)}")
    return tuple(ranks)


# --- the two layouts ---------------------------------------------------------------------------

class TTLayout:
    """The cores of one TT weight: their shapes, parameter count, the contraction orders of
    y = W x with their exact cost, the contractions themselves, the dense W and the TT-SVD.
    Subclasses are the modes, registered by name in :data:`LAYOUTS`."""

    mode: ClassVar[str]
    orders: ClassVar[tuple[str, ...]]

    def __init__(self, in_factors: Sequence[int], out_factors: Sequence[int],
                 ranks: Any) -> None:
        self.in_factors, self.out_factors = tuple(in_factors), tuple(out_factors)
        self.in_features, self.out_features = math.prod(in_factors), math.prod(out_factors)
        self.ranks = resolve_ranks(ranks, self.modes)
        self.bonds = (1, *self.ranks, 1)  # r_0 .. r_D

    @property
    def factorization(self) -> Factorization:
        return self.in_factors, self.out_factors

    @property
    def modes(self) -> tuple[int, ...]:
        """The mode size of each core in the chain."""
        raise NotImplementedError

    @property
    def core_shapes(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.core_shapes)

    def flops(self, order: str, batch: int) -> int:
        """FLOPs (2 per multiply-add) of y = W x for ``batch`` rows in ``order``."""
        raise NotImplementedError

    def best_order(self, batch: int) -> str:
        """The cheapest order for ``batch`` rows (the first listed on a tie)."""
        best, cost = self.orders[0], self.flops(self.orders[0], batch)
        for order in self.orders[1:]:  # a loop, not min(key=...), which torch.compile rejects
            if self.flops(order, batch) < cost:
                best, cost = order, self.flops(order, batch)
        return best

    def check_order(self, order: str) -> str:
        if order not in self.orders:
            raise ConversionError(f"unknown contraction order {order!r} for mode "
                                  f"{self.mode!r}; available: {', '.join(self.orders)}")
        return order

    def contract(self, x: Tensor, cores: Sequence[Tensor], order: str) -> Tensor:
        """W x for each row of ``x`` (B, N) -> (B, M)."""
        raise NotImplementedError

    def dense(self, cores: Sequence[Tensor]) -> Tensor:
        """The (M, N) matrix the cores represent."""
        raise NotImplementedError

    def decompose(self, weight: Tensor) -> list[Tensor]:
        """Cores of the TT-SVD of ``weight`` (M, N) truncated to this layout's ranks."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(factorization={self.factorization}, "
                f"ranks={self.ranks})")


LAYOUTS: Registry[type[TTLayout]] = Registry("tensor-train mode")


@LAYOUTS.register("mps")
class MPSLayout(TTLayout):
    """MPS: input-side cores (r, n_k, r') then output-side cores (r, m_k, r').

    Orders: each side is either swept with the batch ("batch": the rows meet the cores one at a
    time) or its cores are first multiplied into one matrix ("cores": N x r_e on the input side,
    r_e x M on the output side; a cost independent of the batch, then one matmul per side)."""

    mode = "mps"
    orders = ("batch-first", "input-cores-first", "output-cores-first", "cores-first")

    @property
    def modes(self) -> tuple[int, ...]:
        return self.in_factors + self.out_factors

    @property
    def core_shapes(self) -> list[tuple[int, ...]]:
        r = self.bonds
        return [(r[k], s, r[k + 1]) for k, s in enumerate(self.modes)]

    def _sides(self, order: str) -> tuple[bool, bool]:
        """(input side cores first, output side cores first)."""
        self.check_order(order)
        return order in ("input-cores-first", "cores-first"), order in ("output-cores-first",
                                                                       "cores-first")

    def flops(self, order: str, batch: int) -> int:
        merge_in, merge_out = self._sides(order)
        e, r = len(self.in_factors), self.bonds
        n, m = self.in_factors, self.out_factors
        macs = 0
        if merge_in:  # L (n_1..n_{k-1}, r_{k-1}) @ A_k, then x @ L
            macs += sum(math.prod(n[:k]) * r[k] * n[k] * r[k + 1] for k in range(1, e))
            macs += batch * self.in_features * r[e]
        else:  # (B, r_{k-1}, n_k, n_{k+1}..) with A_k over (r_{k-1}, n_k)
            macs += sum(batch * r[k] * n[k] * r[k + 1] * math.prod(n[k + 1:]) for k in range(e))
        d = len(m)
        if merge_out:  # A_{e+j} @ R (r, m_{j+1}..m_d), then z @ R
            macs += sum(r[e + j] * m[j] * r[e + j + 1] * math.prod(m[j + 1:])
                        for j in range(d - 1))
            macs += batch * r[e] * self.out_features
        else:  # (B, m_1..m_{j-1}, r) with A_{e+j} over r
            macs += sum(batch * math.prod(m[:j]) * r[e + j] * m[j] * r[e + j + 1]
                        for j in range(d))
        return 2 * macs

    def contract(self, x: Tensor, cores: Sequence[Tensor], order: str) -> Tensor:
        merge_in, merge_out = self._sides(order)
        e = len(self.in_factors)
        z = x @ _merge_left(cores[:e]) if merge_in else _sweep_in(x, cores[:e])
        return z @ _merge_right(cores[e:]) if merge_out else _sweep_out(z, cores[e:])

    def dense(self, cores: Sequence[Tensor]) -> Tensor:
        return _merge_left(cores).reshape(self.in_features, self.out_features).T

    def decompose(self, weight: Tensor) -> list[Tensor]:
        return tt_svd(weight.T, self.modes, self.ranks)


@LAYOUTS.register("mpo")
class MPOLayout(TTLayout):
    """MPO: cores (r, m_k, n_k, r'), each carrying one row and one column factor.

    Orders: the batch meets the cores from the first ("left-to-right", turning n_k into m_k one
    core at a time) or from the last ("right-to-left"); their costs differ when the factors are
    unbalanced. Multiplying all cores first would form W, which is never done."""

    mode = "mpo"
    orders = ("left-to-right", "right-to-left")

    @property
    def modes(self) -> tuple[int, ...]:
        return tuple(m * n for m, n in zip(self.out_factors, self.in_factors))

    @property
    def core_shapes(self) -> list[tuple[int, ...]]:
        r = self.bonds
        return [(r[k], m, n, r[k + 1])
                for k, (m, n) in enumerate(zip(self.out_factors, self.in_factors))]

    def flops(self, order: str, batch: int) -> int:
        self.check_order(order)
        n, m, r = self.in_factors, self.out_factors, self.bonds
        if order == "left-to-right":  # (B, m_1..m_{k-1}, r, n_k, n_{k+1}..)
            macs = sum(math.prod(m[:k]) * math.prod(n[k + 1:]) * r[k] * n[k] * m[k] * r[k + 1]
                       for k in range(len(n)))
        else:  # (B, n_1..n_{k-1}, n_k, r, m_{k+1}..)
            macs = sum(math.prod(n[:k]) * math.prod(m[k + 1:]) * r[k] * n[k] * m[k] * r[k + 1]
                       for k in range(len(n)))
        return 2 * batch * macs

    def contract(self, x: Tensor, cores: Sequence[Tensor], order: str) -> Tensor:
        self.check_order(order)
        rows = x.shape[0]
        if order == "left-to-right":
            t = x.reshape(rows, 1, -1)  # (B m-prefix, r n_k, n-rest)
            for core in cores:  # (m_k r', r n_k) @ each (r n_k, n-rest)
                a, m, n, b = core.shape
                mat = core.permute(1, 3, 0, 2).reshape(m * b, a * n)
                t = left_matmul(mat, t.reshape(-1, a * n, t.shape[-1] // n))
        else:
            t = x.reshape(rows, -1, 1)  # (B n-prefix, n_k r, m-suffix)
            for core in reversed(cores):  # (r m_k, n_k r') @ each (n_k r', m-suffix)
                b, m, n, a = core.shape
                t = left_matmul(core.reshape(b * m, n * a), t.reshape(-1, n * a, t.shape[-1]))
                t = t.reshape(t.shape[0], b, m * t.shape[-1])
        return t.reshape(rows, self.out_features)

    def dense(self, cores: Sequence[Tensor]) -> Tensor:
        d = len(cores)
        merged = _merge_left([c.reshape(c.shape[0], -1, c.shape[-1]) for c in cores])
        interleaved = merged.reshape(*(s for mn in zip(self.out_factors, self.in_factors)
                                       for s in mn))
        return interleaved.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(
            self.out_features, self.in_features)

    def decompose(self, weight: Tensor) -> list[Tensor]:
        d = len(self.in_factors)
        w = weight.reshape(*self.out_factors, *self.in_factors)
        w = w.permute(*(i for k in range(d) for i in (k, d + k)))  # (m_1, n_1, m_2, n_2, ...)
        cores = tt_svd(w, self.modes, self.ranks)
        return [c.reshape(c.shape[0], m, n, c.shape[-1])
                for c, m, n in zip(cores, self.out_factors, self.in_factors)]


def tt_layout(in_features: int, out_features: int, factorization: Any, ranks: Any,
              mode: str) -> TTLayout:
    """The validated layout of a TT weight; ``factorization`` None means
    :func:`auto_factorization`."""
    if not isinstance(mode, str):
        raise ConversionError(f"mode must be one of {', '.join(LAYOUTS)}, got {mode!r}")
    cls = LAYOUTS.get(mode)
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConversionError(f"{name} must be a positive int, got {size!r}")
    if factorization is None:
        factorization = auto_factorization(in_features, out_features, mode)
    fin, fout = check_factorization(in_features, out_features, factorization, mode)
    return cls(fin, fout, ranks)


# --- contractions shared by the layouts --------------------------------------------------------

def left_matmul(mat: Tensor, t: Tensor) -> Tensor:
    """``mat`` (P, Q) times each matrix of ``t`` (B, Q, R): (B, P, R), by the fastest of three
    ways on one CPU thread (measured): one mm when B = 1 or R = 1 (no copies); for narrow
    matrices (R < 16) einsum, which folds the B matrices into one product (torch's bmm runs
    many small narrow products slowly); else bmm on ``mat`` expanded with stride 0."""
    rows, _, width = t.shape
    if rows == 1:
        return (mat @ t[0]).unsqueeze(0)
    if width == 1:
        return (t.view(rows, -1) @ mat.T).unsqueeze(-1)
    if width < 16:
        return torch.einsum("pq,bqr->bpr", mat, t)
    return torch.bmm(mat.expand(rows, -1, -1), t)


def _sweep_in(x: Tensor, cores: Sequence[Tensor]) -> Tensor:
    """(B, n_1..n_e) through cores (r, n_k, r') from the first: -> (B, r_e)."""
    rows = x.shape[0]
    t = x.reshape(rows, 1, -1)  # (B, r, n-rest)
    for core in cores:  # (r', r n_k) @ each (r n_k, n-rest)
        a, n, b = core.shape
        t = left_matmul(core.reshape(a * n, b).T, t.reshape(rows, a * n, -1))
    return t.reshape(rows, -1)


def _sweep_out(z: Tensor, cores: Sequence[Tensor]) -> Tensor:
    """(B, r) through cores (r, m_k, r') from the first: -> (B, m_1..m_d)."""
    rows = z.shape[0]
    t = z.reshape(rows, -1)  # (B m-prefix, r)
    for core in cores:
        a, m, b = core.shape
        t = (t @ core.reshape(a, m * b)).reshape(-1, b)
    return t.reshape(rows, -1)


def _merge_left(cores: Sequence[Tensor]) -> Tensor:
    """Cores (r, s_k, r') with r_0 = 1 multiplied from the first: (s_1..s_k, r_k)."""
    merged = cores[0].reshape(-1, cores[0].shape[-1])
    for core in cores[1:]:
        a, s, b = core.shape
        merged = (merged @ core.reshape(a, s * b)).reshape(-1, b)
    return merged


def _merge_right(cores: Sequence[Tensor]) -> Tensor:
    """Cores (r, s_k, r') ending with r_D = 1 multiplied from the last: (r_first, s_1..s_d)."""
    merged = cores[-1].reshape(cores[-1].shape[0], -1)
    for core in reversed(cores[:-1]):
        a, s, b = core.shape
        merged = (core.reshape(a * s, b) @ merged).reshape(a, -1)
    return merged


def frobenius_norm(cores: Sequence[Tensor]) -> Tensor:
    """||W||_F of the TT with ``cores`` (any layout: each core read as (r, modes, r')), by
    transfer matrices E_k = sum G_k (x) G_k, never forming W."""
    transfer = cores[0].new_ones(1, 1)
    for core in cores:
        g = core.reshape(core.shape[0], -1, core.shape[-1])
        transfer = torch.einsum("ac,asb,csd->bd", transfer, g, g)
    return transfer.reshape(()).sqrt()


def tt_svd(tensor: Tensor, modes: Sequence[int], ranks: Sequence[int]) -> list[Tensor]:
    """TT-SVD (Oseledets 2011, Algorithm 1) of ``tensor`` (any shape, read as modes ``modes``)
    with bond ranks ``ranks``: unfold, keep the leading ``r_k`` singular vectors as core k, carry
    S V^T on. Exact when every rank is at least the rank of its unfolding. The cores are then
    rescaled to equal Frobenius norms (their product is unchanged), so that no core carries the
    whole scale into training."""
    full = (1, *ranks, 1)
    cores, rest = [], tensor.reshape(1, -1)
    for k, s in enumerate(modes[:-1]):
        u, sv, vh = torch.linalg.svd(rest.reshape(full[k] * s, -1), full_matrices=False)
        r = full[k + 1]
        cores.append(u[:, :r].reshape(full[k], s, r))
        rest = sv[:r, None] * vh[:r]
    cores.append(rest.reshape(full[-2], modes[-1], 1))
    norms = torch.stack([c.norm() for c in cores])
    if bool((norms > 0).all()):
        mean = norms.log().mean().exp()
        cores = [c * (mean / nrm) for c, nrm in zip(cores, norms)]
    return cores


# --- the analytic cost model -------------------------------------------------------------------

def tt_params(factorization: Factorization, ranks: Any, mode: str = "mps") -> int:
    """Parameters of the TT cores (no bias) of the weight with ``factorization`` (input factors,
    output factors), ``ranks`` (an int, capped per bond, or a list) in ``mode``:
    MPO sum_k r_{k-1} m_k n_k r_k, MPS sum_k r_{k-1} s_k r_k."""
    fin, fout = factorization
    return tt_layout(math.prod(fin), math.prod(fout), factorization, ranks, mode).params


def tt_flops(factorization: Factorization, ranks: Any, mode: str = "mps", batch: int = 1,
             order: str | None = None) -> int:
    """FLOPs (2 per multiply-add) of y = W x for ``batch`` rows in ``order`` (None: the cheapest
    for ``batch``, the one the layer runs); the bias addition is not included. The formulas are
    in :meth:`MPSLayout.flops` and :meth:`MPOLayout.flops`."""
    fin, fout = factorization
    layout = tt_layout(math.prod(fin), math.prod(fout), factorization, ranks, mode)
    return layout.flops(order if order is not None else layout.best_order(batch), batch)
