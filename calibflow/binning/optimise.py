"""Binning optimisation: 1D edge helpers and nested N-D schemes merged to guaranteed minimum counts.

:func:`optimise_scheme` starts from the product of fine 1D binnings, fills one fine N-D histogram
(sum of weights and of squared weights per cell) per category in one numba pass each, and then merges
on those histograms only, outer variable first:

* the outer variable's fine intervals are grouped into the largest number of contiguous groups whose
  whole slice (all inner cells) meets the criteria in every category — fine intervals are merged only
  where a slice cannot be satisfied on its own;
* inside each group the next variable is grouped the same way, recursively, so every group gets its own
  inner edges and the result maps onto :class:`~calibflow.binning.scheme.Node` / :class:`BinningScheme`.

Every bin of the result holds at least ``min_count`` (effective) events in every category. Among the
groupings with the most groups, the one chosen maximises the product of the groups' smallest counts
(balanced groups), or, when ``Criteria.efficiency`` names pass/fail categories, the between-group
variance of the efficiency, Σ_g (Σ pass)²/(Σ all) (edges go where the efficiency changes).
``Criteria.max_intervals`` caps the number of intervals per node of a variable; with fewer intervals
than the counts allow, the efficiency score places them where they matter (toy turn-on curve: 2-3x
smaller mean squared deviation of the bin-averaged from the true efficiency, see tests/test_binopt.py).

Grouping n fine intervals of one node is an exact dynamic programme (:func:`best_partition`,
O(K n²)): meant for up to a few hundred fine intervals per variable.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.kernels.binindex import Cut, fill_bins, flatten


class BinningError(ValueError):
    """The requested binning cannot be made (e.g. too few events for even one bin)."""


# --- 1D edges -------------------------------------------------------------------------------------


def _check_range(lo: float, hi: float) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"binning range must be finite with hi > lo, got [{lo}, {hi}]")


def _checked(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    edges[0], edges[-1] = lo, hi
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"[{lo}, {hi}] is too narrow for {edges.size - 1} distinct bins")
    return edges


def uniform_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``n + 1`` equally spaced edges from ``lo`` to ``hi`` (exact ends), in the unit of lo/hi."""
    _check_range(lo, hi)
    if n < 1:
        raise ValueError(f"number of bins must be >= 1, got {n}")
    return _checked(np.linspace(lo, hi, n + 1), lo, hi)


def log_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``n + 1`` edges equally spaced in log(x) from ``lo > 0`` to ``hi`` (exact ends)."""
    _check_range(lo, hi)
    if lo <= 0:
        raise ValueError(f"log binning needs lo > 0, got {lo}")
    if n < 1:
        raise ValueError(f"number of bins must be >= 1, got {n}")
    return _checked(np.geomspace(lo, hi, n + 1), lo, hi)


def equal_population_edges(
    x: np.ndarray,
    n_bins: int | None = None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    target_count: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Edges from ``lo`` to ``hi`` (exact; required, in the unit of ``x``) with equal (weighted) population.

    Give ``n_bins``, or ``target_count`` (sum of weights per bin: ``n_bins = max(1, total // target_count)``).
    Only finite values in [lo, hi) count. Inner edges sit midway between neighbouring distinct values, at
    the value boundary whose cumulative weight is closest to k/n of the total, so many equal values never
    split and give fewer, strictly increasing bins. Deterministic: independent of the order of rows.
    """
    if lo is None or hi is None:
        raise ValueError("equal_population_edges needs the range: give lo and hi")
    _check_range(lo, hi)
    if (n_bins is None) == (target_count is None):
        raise ValueError("give exactly one of n_bins and target_count")
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape:
        raise ValueError(f"weights have shape {w.shape}, values {x.shape}")
    sel = np.isfinite(x) & (x >= lo) & (x < hi)
    values, inverse = np.unique(x[sel], return_inverse=True)
    value_w = np.bincount(inverse, weights=w[sel], minlength=values.size)
    total = value_w.sum()
    if target_count is not None:
        if target_count <= 0:
            raise ValueError(f"target_count must be > 0, got {target_count}")
        n_bins = max(1, int(total // target_count)) if total > 0 else 1
    if n_bins is None or n_bins < 1:
        raise ValueError(f"number of bins must be >= 1, got {n_bins}")
    if values.size < 2 or total <= 0:
        return np.array([lo, hi], dtype=np.float64)
    cum = np.cumsum(value_w)[:-1]  # weight at or below each boundary between values[i] and values[i+1]
    targets = total * np.arange(1, n_bins) / n_bins
    pos = np.clip(np.searchsorted(cum, targets), 0, cum.size - 1)
    below = np.clip(pos - 1, 0, cum.size - 1)
    pick = np.where(np.abs(cum[below] - targets) <= np.abs(cum[pos] - targets), below, pos)
    boundary = np.unique(pick)
    left, right = values[boundary], values[boundary + 1]
    mid = 0.5 * (left + right)
    inner = np.where(mid > left, mid, right)  # adjacent floats: the edge must stay above the left value
    return np.concatenate([[lo], inner, [hi]]).astype(np.float64)


# --- N-D optimisation -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Category:
    """One sample that will be fitted (e.g. data pass): its columns, optional weights and selection.

    Rows count when ``mask`` (if given) is true and every cut passes.
    """

    name: str
    columns: Mapping[str, np.ndarray]
    weights: np.ndarray | None = None
    mask: np.ndarray | None = None
    cuts: tuple[Cut, ...] = ()


@dataclass(frozen=True)
class Criteria:
    """What every bin must satisfy, in every category, and how groupings are chosen.

    ``min_count``: minimum per bin of the effective count (Σw)²/Σw² when ``use_effective`` (the plain
    count for unit weights), else of Σw. ``max_intervals``: at most this many intervals per node of a
    variable. ``efficiency``: (pass, fail) category-name pairs; when given, edges are placed where their
    efficiency changes most instead of balancing the counts.
    """

    min_count: float = 100.0
    use_effective: bool = True
    max_intervals: Mapping[str, int] = field(default_factory=dict)
    efficiency: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.min_count > 0:
            raise ValueError(f"Criteria.min_count must be > 0, got {self.min_count}")
        bad = {k: v for k, v in self.max_intervals.items() if v < 1}
        if bad:
            raise ValueError(f"Criteria.max_intervals must be >= 1, got {bad}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for content keys)."""
        return {
            "min_count": self.min_count,
            "use_effective": self.use_effective,
            "max_intervals": dict(sorted(self.max_intervals.items())),
            "efficiency": [list(p) for p in self.efficiency],
        }


@dataclass(frozen=True, eq=False)
class FineHistograms:
    """Fine N-D histograms of all categories: ``sumw``/``sumw2`` of shape (n_categories, n_0, n_1, ...)."""

    fine: tuple[tuple[str, np.ndarray], ...]
    names: tuple[str, ...]
    sumw: np.ndarray
    sumw2: np.ndarray


def effective_count(sumw: np.ndarray, sumw2: np.ndarray) -> np.ndarray:
    """(Σw)²/Σw² elementwise; 0 where Σw <= 0 or Σw² = 0."""
    sumw, sumw2 = np.asarray(sumw, dtype=np.float64), np.asarray(sumw2, dtype=np.float64)
    ok = (sumw > 0) & (sumw2 > 0)
    return np.where(ok, sumw**2 / np.where(ok, sumw2, 1.0), 0.0)


def _count(sumw: np.ndarray, sumw2: np.ndarray, use_effective: bool) -> np.ndarray:
    return effective_count(sumw, sumw2) if use_effective else np.asarray(sumw, dtype=np.float64)


def _product_node(fine: Sequence[tuple[str, np.ndarray]]) -> Node:
    """Product of the fine binnings as a node chain (each level's child shared by all its intervals)."""
    node: Node | None = None
    for var, e in reversed(fine):
        kids = None if node is None else (node,) * (len(e) - 1)
        node = Node(var, tuple(float(v) for v in e), kids)
    assert node is not None
    return node


def _check_fine(fine: Sequence[tuple[str, Sequence[float]]]) -> tuple[tuple[str, np.ndarray], ...]:
    if not fine:
        raise ValueError("no binning variables given")
    names = [v for v, _ in fine]
    if len(set(names)) != len(names):
        raise ValueError(f"binning variables must be distinct, got {names}")
    out = []
    for var, e in fine:
        arr = np.asarray(e, dtype=np.float64)
        if arr.ndim != 1 or arr.size < 2 or np.any(np.diff(arr) <= 0) or not np.all(np.isfinite(arr)):
            raise ValueError(f"fine edges of {var!r} must be finite and strictly increasing, got {list(e)}")
        out.append((var, arr))
    return tuple(out)


def fill_fine(fine: Sequence[tuple[str, Sequence[float]]], categories: Sequence[Category]) -> FineHistograms:
    """Fill the fine product histogram of every category (one numba pass over each category's rows)."""
    fine_arr = _check_fine(fine)
    names = tuple(c.name for c in categories)
    if not categories:
        raise ValueError("no categories given")
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be distinct, got {list(names)}")
    flat = flatten(_product_node(fine_arr))
    shape = tuple(e.size - 1 for _, e in fine_arr)
    sumw = np.zeros((len(categories), flat.n_bins))
    sumw2 = np.zeros((len(categories), flat.n_bins))
    for i, cat in enumerate(categories):
        missing = [v for v in flat.variables + tuple(c.variable for c in cat.cuts) if v not in cat.columns]
        if missing:
            raise KeyError(f"category {cat.name!r} has no column {missing[0]!r}")
        fill_bins(flat, cat.columns, cat.cuts, cat.mask, cat.weights, sumw[i], sumw2[i])
    return FineHistograms(fine_arr, names, sumw.reshape(-1, *shape), sumw2.reshape(-1, *shape))


def optimise_scheme(
    fine: Sequence[tuple[str, Sequence[float]]],
    categories: Sequence[Category],
    criteria: Criteria | None = None,
) -> BinningScheme:
    """Nested scheme from the fine (variable, edges) binnings (outer first) meeting ``criteria`` everywhere.

    Raises :class:`BinningError` when the whole range does not meet the criteria in some category.
    """
    return optimise_histograms(fill_fine(fine, categories), criteria or Criteria())


def optimise_histograms(hists: FineHistograms, criteria: Criteria) -> BinningScheme:
    """Like :func:`optimise_scheme`, from already filled fine histograms (no pass over events)."""
    unknown = sorted({v for v in criteria.max_intervals if v not in {var for var, _ in hists.fine}})
    if unknown:
        raise ValueError(f"Criteria.max_intervals names unknown variables {unknown}")
    pairs = []
    for p, f in criteria.efficiency:
        for name in (p, f):
            if name not in hists.names:
                raise ValueError(
                    f"Criteria.efficiency names category {name!r}; categories are {list(hists.names)}"
                )
        pairs.append((hists.names.index(p), hists.names.index(f)))
    total = _count(
        hists.sumw.reshape(len(hists.names), -1).sum(axis=1),
        hists.sumw2.reshape(len(hists.names), -1).sum(axis=1),
        criteria.use_effective,
    )
    if np.any(total < criteria.min_count):
        kind = "effective" if criteria.use_effective else "(sum of weights)"
        have = ", ".join(f"{n!r}: {c:.6g}" for n, c in zip(hists.names, total, strict=True))
        short = [n for n, c in zip(hists.names, total, strict=True) if c < criteria.min_count]
        raise BinningError(
            f"too few events for even one bin: over the whole range the categories hold {have} {kind} "
            f"events, but every bin needs at least min_count={criteria.min_count:g} in every category; "
            f"short: {', '.join(map(repr, short))}"
        )
    return BinningScheme(_Merger(hists, criteria, pairs).node(0, ()))


class _Merger:
    """Recursive grouping of the fine intervals, outer variable first (see the module docstring)."""

    def __init__(self, hists: FineHistograms, criteria: Criteria, pairs: list[tuple[int, int]]) -> None:
        self.h = hists
        self.criteria = criteria
        self.pairs = pairs

    def node(self, level: int, region: tuple[slice, ...]) -> Node:
        """Node of variable ``level`` over the fine cells ``region`` of the outer variables."""
        var, edges = self.h.fine[level]
        sumw = self._marginal(self.h.sumw, level, region)
        sumw2 = self._marginal(self.h.sumw2, level, region)
        cap = self.criteria.max_intervals.get(var, edges.size - 1)
        cuts = group_intervals(sumw, sumw2, self.criteria, cap, self.pairs)
        if cuts.size == 0:  # the region as a whole met the criteria one level up, up to rounding
            cuts = np.array([0, edges.size - 1])
        children = None
        if level + 1 < len(self.h.fine):
            children = tuple(
                self.node(level + 1, (*region, slice(int(a), int(b)))) for a, b in itertools.pairwise(cuts)
            )
        return Node(var, tuple(float(v) for v in edges[cuts]), children)

    @staticmethod
    def _marginal(h: np.ndarray, level: int, region: tuple[slice, ...]) -> np.ndarray:
        """(n_categories, n_fine[level]) sums over ``region`` of the outer and all of the inner variables."""
        sub = h[(slice(None), *region)]
        return sub.sum(axis=tuple(a for a in range(1, sub.ndim) if a != level + 1))


def _segment_sums(x: np.ndarray) -> np.ndarray:
    """S[..., a, b] = sum of x[..., a:b] (0 for b <= a), summed left to right from a."""
    n = x.shape[-1]
    out = np.zeros((*x.shape[:-1], n + 1, n + 1))
    for a in range(n):
        out[..., a, a + 1 :] = np.cumsum(x[..., a:], axis=-1)
    return out


def group_intervals(
    sumw: np.ndarray,
    sumw2: np.ndarray,
    criteria: Criteria,
    max_groups: int,
    pairs: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Cut positions 0 = c_0 < ... < c_K = n grouping n fine intervals; empty if no grouping is valid.

    ``sumw``/``sumw2``: (n_categories, n). Every group meets ``criteria`` in every category; K is the
    largest feasible number <= ``max_groups``; among those groupings the score of :func:`best_partition`
    is maximal (see the module docstring; ``pairs`` = (pass, fail) rows for the efficiency score).
    """
    s, s2 = _segment_sums(sumw), _segment_sums(sumw2)
    worst = _count(s, s2, criteria.use_effective).min(axis=0)  # (n + 1, n + 1): smallest category count
    n = sumw.shape[1]
    upper = np.triu(np.ones((n + 1, n + 1), dtype=bool), 1)
    feasible = upper & (worst >= criteria.min_count)
    if pairs:
        value = np.zeros((n + 1, n + 1))
        for p, f in pairs:
            t = s[p] + s[f]
            value += np.where(t > 0, s[p] ** 2 / np.where(t > 0, t, 1.0), 0.0)
    else:
        value = np.log(np.where(feasible, worst, 1.0))
    return best_partition(feasible, value, max_groups)


@numba.njit(cache=True)
def best_partition(feasible: np.ndarray, value: np.ndarray, max_groups: int) -> np.ndarray:
    """Contiguous grouping of n items maximising first the number of groups (<= ``max_groups``), then Σ value.

    ``feasible[a, b]``/``value[a, b]`` ((n + 1, n + 1)) describe the group of items a .. b - 1. Returns the
    cut positions (c_0 = 0, ..., c_K = n), or an empty array when no grouping into feasible groups exists.
    Ties keep the grouping whose last cut is smallest (deterministic).
    """
    n = feasible.shape[0] - 1
    kmax = min(max_groups, n)
    reach = np.zeros((kmax + 1, n + 1), dtype=np.bool_)
    score = np.zeros((kmax + 1, n + 1))
    arg = np.full((kmax + 1, n + 1), -1, dtype=np.int64)
    reach[0, 0] = True
    for k in range(1, kmax + 1):
        for b in range(k, n + 1):
            for a in range(k - 1, b):
                if reach[k - 1, a] and feasible[a, b]:
                    s = score[k - 1, a] + value[a, b]
                    if not reach[k, b] or s > score[k, b]:
                        reach[k, b] = True
                        score[k, b] = s
                        arg[k, b] = a
    for k in range(kmax, 0, -1):
        if reach[k, n]:
            cuts = np.empty(k + 1, dtype=np.int64)
            cuts[k] = n
            for g in range(k, 0, -1):
                cuts[g - 1] = arg[g, cuts[g]]
            return cuts
    return np.empty(0, dtype=np.int64)


def best_partition_reference(
    feasible: np.ndarray, value: np.ndarray, max_groups: int
) -> tuple[int, float] | None:
    """Brute force over all 2^(n-1) groupings: (number of groups, Σ value) of the best, or None."""
    n = feasible.shape[0] - 1
    best: tuple[int, float] | None = None
    for inner in itertools.product([False, True], repeat=n - 1):
        cuts = [0, *(i + 1 for i, c in enumerate(inner) if c), n]
        groups = list(itertools.pairwise(cuts))
        if len(groups) > max_groups or not all(feasible[a, b] for a, b in groups):
            continue
        cand = (len(groups), float(sum(value[a, b] for a, b in groups)))
        if best is None or cand > best:
            best = cand
    return best


def bin_counts(
    scheme: BinningScheme, categories: Sequence[Category], use_effective: bool = True
) -> np.ndarray:
    """(n_categories, n_bins) counts per bin: effective (Σw)²/Σw² or Σw, as the criteria use them."""
    flat = scheme.flatten()
    out = np.zeros((len(categories), len(scheme)))
    for i, cat in enumerate(categories):
        sumw, sumw2 = fill_bins(flat, cat.columns, cat.cuts, cat.mask, cat.weights)
        out[i] = _count(sumw, sumw2, use_effective)
    return out
