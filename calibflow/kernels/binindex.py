"""Numba kernels: bin index of nested-rectangular schemes and fused selection + histogram fill.

A nested scheme (a tree of :class:`TreeNode`, such as :class:`calibflow.binning.scheme.Node`) is flattened into arrays, :class:`FlatTree`;
the kernels walk it with one binary search (or one multiplication, for uniform edges) per level and row.
A bin's index is the sum of the per-interval ``offset`` along the row's path, so a subtree shared by
several parents (a product binning) is stored once. Plain-numpy references: ``BinningScheme.locate_reference``
for the index, :func:`fill_bins_reference` for the fill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numba
import numpy as np


class TreeNode(Protocol):
    """One level of a nested scheme as :func:`flatten` reads it (the kernels import nothing from
    :mod:`calibflow.binning`; its ``Node`` is one): ``variable`` cut at ``edges``, then ``children``
    per interval, or None for a leaf level."""

    @property
    def variable(self) -> str: ...

    @property
    def edges(self) -> tuple[float, ...]: ...

    @property
    def children(self) -> Sequence[TreeNode] | None: ...


class FlatTree(NamedTuple):
    """Arrays of a flattened scheme; the last node is the root.

    Node ``k`` cuts column ``var[k]`` at ``edges[edge_start[k]:edge_start[k + 1]]``; its intervals are
    ``edge_start[k] - k + j`` (j = 0 .. n_edges - 2). Interval ``i`` adds ``offset[i]`` to the bin index and
    continues in node ``child[i]``, or ends there when ``child[i] < 0``. ``inv_width[k]`` is
    n_intervals / (hi - lo) for (nearly) uniform edges, else 0 (binary search).
    """

    var: np.ndarray  # int64 (n_nodes,)
    edge_start: np.ndarray  # int64 (n_nodes + 1,)
    edges: np.ndarray  # float64 (n_edges_total,)
    inv_width: np.ndarray  # float64 (n_nodes,)
    offset: np.ndarray  # int64 (n_intervals_total,)
    child: np.ndarray  # int64 (n_intervals_total,)


@dataclass(frozen=True)
class FlatScheme:
    """A flattened scheme: the arrays, the column name of each variable id and the number of bins."""

    tree: FlatTree
    variables: tuple[str, ...]
    n_bins: int


@dataclass(frozen=True)
class Cut:
    """Keep rows with ``lo <= column < hi`` (NaN never passes); infinite ends leave a side open."""

    variable: str
    lo: float = -np.inf
    hi: float = np.inf


def _is_uniform(e: np.ndarray) -> bool:
    if not np.all(np.isfinite(e)):
        return False
    return bool(np.allclose(e, np.linspace(e[0], e[-1], e.size), rtol=0.0, atol=1e-9 * (e[-1] - e[0])))


def flatten(root: TreeNode) -> FlatScheme:
    """Flatten a node tree for the kernels (root = last node).

    Equal subtrees (same variable, edges and children) are stored once, so a product binning takes one
    node per variable.
    """
    variables: list[str] = []  # in order of first appearance, outer first
    ids: dict[tuple, int] = {}  # structural key -> node id (post-order)
    var, edge_start, edges, inv_width, offset, child = [], [0], [], [], [], []
    n_leaves: list[int] = []

    def visit(node: TreeNode) -> int:
        if node.variable not in variables:
            variables.append(node.variable)
        kids = None if node.children is None else tuple(visit(c) for c in node.children)
        key = (node.variable, node.edges, kids)
        if key in ids:
            return ids[key]
        e = np.asarray(node.edges, dtype=np.float64)
        var.append(variables.index(node.variable))
        inv_width.append((e.size - 1) / (e[-1] - e[0]) if _is_uniform(e) else 0.0)
        # a first edge of -inf becomes the lowest float, so that x = -inf is out of range (like NaN and
        # +inf, which no range [lo, hi) contains)
        edges.append(np.where(e == -np.inf, np.finfo(np.float64).min, e))
        edge_start.append(edge_start[-1] + e.size)
        if kids is None:
            n_leaves.append(e.size - 1)
            offset.append(np.arange(e.size - 1))
            child.append(np.full(e.size - 1, -1))
        else:
            n_leaves.append(sum(n_leaves[k] for k in kids))
            offset.append(np.concatenate([[0], np.cumsum([n_leaves[k] for k in kids])[:-1]]))
            child.append(np.array(kids))
        ids[key] = len(var) - 1
        return ids[key]

    visit(root)
    tree = FlatTree(
        var=np.array(var, dtype=np.int64),
        edge_start=np.array(edge_start, dtype=np.int64),
        edges=np.concatenate(edges),
        inv_width=np.array(inv_width, dtype=np.float64),
        offset=np.concatenate(offset).astype(np.int64),
        child=np.concatenate(child).astype(np.int64),
    )
    return FlatScheme(tree, tuple(variables), n_leaves[-1])


BLOCK = 256  # rows per block of the kernel: selection, then the tree walk level by level
LINEAR_MAX = 128  # up to this many edges (non-uniform), count the edges below x: faster than a search
LINEAR_MAX_UNIFORM = 24  # the same for uniform edges (else one multiplication)
U = np.uint64  # array indices known to be >= 0 are cast to uint64: no negative-index wraparound code


@numba.njit(cache=True, nogil=True)
def _interval(edges: np.ndarray, e0: int, e1: int, inv_width: float, steps: int, x: float) -> int:
    """Index j with edges[e0 + j] <= x < edges[e0 + j + 1], or -1 outside [edges[e0], edges[e1 - 1]) or NaN.

    ``inv_width`` > 0: uniform edges, one multiplication; else up to ``LINEAR_MAX`` edges the count of
    edges <= x, beyond a branchless binary search of ``steps`` (>= log2 of the number of intervals).
    """
    if not (x >= edges[U(e0)] and x < edges[U(e1 - 1)]):  # also NaN
        return -1
    if inv_width > 0.0:
        j = min(int((x - edges[U(e0)]) * inv_width), e1 - e0 - 2)
        while x < edges[U(e0 + j)]:  # correct rounding: the edges array is the truth
            j -= 1
        while x >= edges[U(e0 + j + 1)]:
            j += 1
        return j
    j = 0
    if e1 - e0 <= LINEAR_MAX:
        for k in range(e0 + 1, e1 - 1):
            j += x >= edges[U(k)]
        return j
    size = e1 - e0 - 1
    for _ in range(steps):
        half = size >> 1  # 0 once the interval is found: j stays
        j += half * (x >= edges[U(e0 + j + half)])
        size -= half
    return j


@numba.njit(cache=True, nogil=True)
def _intervals_of_block(
    col: np.ndarray,
    rows: np.ndarray,
    m: int,
    edges: np.ndarray,
    e0: int,
    e1: int,
    inv_width: float,
    steps: int,
    xs: np.ndarray,
    js: np.ndarray,
) -> None:
    """``js[r]`` = interval of ``col[rows[r]]`` among ``edges[e0:e1]`` (-1 outside) for the m rows of a block.

    Few edges: count the edges below each value edge by edge, SIMD over the rows without branches;
    else :func:`_interval` row by row.
    """
    for r in range(m):
        xs[r] = col[U(rows[r])]
    if e1 - e0 > (LINEAR_MAX_UNIFORM if inv_width > 0.0 else LINEAR_MAX):
        for r in range(m):
            js[r] = _interval(edges, e0, e1, inv_width, steps, xs[r])
        return
    lo, hi = edges[U(e0)], edges[U(e1 - 1)]
    js[:m] = 0
    for k in range(e0 + 1, e1 - 1):
        ek = edges[U(k)]
        for r in range(m):
            js[r] += xs[r] >= ek
    for r in range(m):
        js[r] = js[r] if (xs[r] >= lo) & (xs[r] < hi) else -1


@numba.njit(cache=True, nogil=True)
def _search_steps(edge_start: np.ndarray) -> int:
    """Binary-search iterations enough for the node with the most intervals."""
    most = np.max(edge_start[1:] - edge_start[:-1]) - 1
    steps = 0
    while (1 << steps) < most:
        steps += 1
    return steps


@numba.njit(cache=True, nogil=True)
def _is_chain(edge_start: np.ndarray, child: np.ndarray) -> bool:
    """True when every interval of node k continues in node k - 1 and node 0 is a leaf (a product)."""
    for k in range(edge_start.size - 1):
        for i in range(edge_start[k] - k, edge_start[k + 1] - k - 1):
            if child[i] != k - 1:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _select(
    cols: tuple,
    cut_var: np.ndarray,
    cut_lo: np.ndarray,
    cut_hi: np.ndarray,
    mask: np.ndarray,
    start: int,
    stop: int,
    ok: np.ndarray,
    rows: np.ndarray,
) -> int:
    """Write the selected rows of [start, stop) to ``rows``; returns their number (no branches per row)."""
    size = stop - start
    if mask.size > 0:
        ok[:size] = mask[start:stop]
    else:
        ok[:size] = True
    for c in range(cut_var.size):
        col = cols[cut_var[c]]  # one tuple lookup per block and cut: slow per row
        lo, hi = cut_lo[c], cut_hi[c]
        for i in range(size):
            x = col[U(start + i)]
            ok[i] &= (x >= lo) & (x < hi)
    m = 0
    for i in range(size):
        rows[m] = start + i
        m += ok[i]
    return m


@numba.njit(cache=True, nogil=True)
def walk_kernel(
    cols: tuple,
    tree: FlatTree,
    cut_var: np.ndarray,
    cut_lo: np.ndarray,
    cut_hi: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray,
    index: np.ndarray,
    sumw: np.ndarray,
    sumw2: np.ndarray,
) -> None:
    """Bin index of every row and/or per-bin sums of the selected rows, in one pass over ``cols``.

    ``cols``: float64 columns by variable id (cut columns after the binning ones). A row is selected
    when ``mask[i]`` (no mask if empty) and ``cut_lo[c] <= cols[cut_var[c]][i] < cut_hi[c]`` for every
    cut ``c``. When ``index`` is not empty, it receives each row's bin (-1: out of range, NaN or not
    selected); when ``sumw`` is not empty, selected in-range rows add ``weights[i]`` (1 if ``weights``
    is empty) to ``sumw`` and its square to ``sumw2``.

    Rows go in blocks: the selected rows of a block are listed without branches, then walked down the
    tree one level at a time for the whole block, so that the searches of different rows overlap. A
    product (a chain of nodes) is walked node by node; any other tree in passes, each taking one
    column (the variable of the first row still walking) and advancing the rows whose node cuts it.
    """
    use_w = weights.size > 0
    var, edge_start, edges, inv_width, offset, child = tree  # local arrays: no refcounting in the loops
    chain = _is_chain(edge_start, child)
    steps = _search_steps(edge_start)
    ok = np.empty(BLOCK, dtype=np.bool_)
    rows = np.empty(BLOCK, dtype=np.int64)
    node = np.empty(BLOCK, dtype=np.int64)
    bins = np.empty(BLOCK, dtype=np.int64)
    js = np.empty(BLOCK, dtype=np.int64)
    xs = np.empty(BLOCK, dtype=np.float64)
    n = cols[0].size
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        m = _select(cols, cut_var, cut_lo, cut_hi, mask, start, stop, ok, rows)
        bins[:m] = 0
        if chain:
            for nd in range(var.size - 1, -1, -1):
                e0 = edge_start[nd]
                _intervals_of_block(
                    cols[var[nd]], rows, m, edges, e0, edge_start[nd + 1], inv_width[nd], steps, xs, js
                )
                for r in range(m):
                    b = bins[r]
                    bins[r] = -1 if (js[r] < 0) | (b < 0) else b + offset[U(e0 - nd + max(js[r], 0))]
        else:
            node[:m] = var.size - 1  # the root
            first = 0  # rows before ``first`` are done
            while True:
                while first < m and node[first] < 0:
                    first += 1
                if first == m:
                    break
                v = var[U(node[first])]
                col = cols[v]
                for r in range(first, m):
                    nd = node[r]
                    if nd < 0 or var[U(nd)] != v:
                        continue
                    e0 = edge_start[U(nd)]
                    j = _interval(edges, e0, edge_start[U(nd + 1)], inv_width[U(nd)], steps, col[U(rows[r])])
                    k = U(e0 - nd + max(j, 0))
                    bins[r] = -1 if j < 0 else bins[r] + offset[k]
                    node[r] = -1 if j < 0 else child[k]
        if index.size > 0:
            index[start:stop] = -1
            for r in range(m):
                index[U(rows[r])] = bins[r]
        if sumw.size > 0:
            for r in range(m):
                b = bins[r]
                if b >= 0:
                    w = weights[U(rows[r])] if use_w else 1.0
                    sumw[U(b)] += w
                    sumw2[U(b)] += w * w


def _column_tuple(columns: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Contiguous float64 columns in the order of ``names``; KeyError naming a missing column."""
    out = []
    for name in names:
        if name not in columns:
            raise KeyError(f"variable {name!r} is not a column of the input")
        out.append(np.ascontiguousarray(columns[name], dtype=np.float64))
    sizes = {c.size for c in out}
    if len(sizes) > 1:
        raise ValueError(f"columns {list(names)} have different lengths {[c.size for c in out]}")
    return tuple(out)


def locate(flat: FlatScheme, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bin index (int64) of every row of ``columns`` in ``flat``; -1 out of range or not finite."""
    index, _, _ = _run(flat, columns, (), None, None, want_index=True, sumw=None, sumw2=None)
    return index


def fill_bins(
    flat: FlatScheme,
    columns: Mapping[str, np.ndarray],
    cuts: Sequence[Cut] = (),
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    sumw: np.ndarray | None = None,
    sumw2: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin sum of weights and of squared weights of the rows passing ``mask`` and ``cuts``.

    ``sumw``/``sumw2`` (float64, (n_bins,)) are added to when given, else created. One pass; float64
    columns are not copied.
    """
    _, sumw, sumw2 = _run(flat, columns, cuts, mask, weights, want_index=False, sumw=sumw, sumw2=sumw2)
    return sumw, sumw2


def _run(
    flat: FlatScheme,
    columns: Mapping[str, np.ndarray],
    cuts: Sequence[Cut],
    mask: np.ndarray | None,
    weights: np.ndarray | None,
    want_index: bool,
    sumw: np.ndarray | None,
    sumw2: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert the inputs, call :func:`walk_kernel`; returns (index, sumw, sumw2)."""
    names = list(flat.variables) + [c.variable for c in cuts if c.variable not in flat.variables]
    cols = _column_tuple(columns, names)
    n = cols[0].size
    m = np.zeros(0, dtype=np.bool_) if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    w = np.zeros(0) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    for what, given, a in (("mask", mask, m), ("weights", weights, w)):
        if given is not None and a.size != n:
            raise ValueError(f"{what} has {a.size} rows, the columns {n}")
    index = np.empty(n if want_index else 0, dtype=np.int64)
    if not want_index:
        sumw = np.zeros(flat.n_bins) if sumw is None else sumw
        sumw2 = np.zeros(flat.n_bins) if sumw2 is None else sumw2
        for what, a in (("sumw", sumw), ("sumw2", sumw2)):
            if a.shape != (flat.n_bins,) or a.dtype != np.float64 or not a.flags.c_contiguous:
                raise ValueError(f"{what} must be a contiguous float64 array of shape ({flat.n_bins},)")
    none = np.zeros(0)
    walk_kernel(
        cols,
        flat.tree,
        np.array([names.index(c.variable) for c in cuts], dtype=np.int64),
        np.array([c.lo for c in cuts], dtype=np.float64),
        np.array([c.hi for c in cuts], dtype=np.float64),
        m,
        w,
        index,
        none if sumw is None else sumw,
        none if sumw2 is None else sumw2,
    )
    return index, none if sumw is None else sumw, none if sumw2 is None else sumw2


def fill_bins_reference(
    bin_index: np.ndarray,
    n_bins: int,
    columns: Mapping[str, np.ndarray],
    cuts: Sequence[Cut] = (),
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-numpy version of :func:`fill_bins`, given each row's bin index (e.g. from ``locate_reference``)."""
    sel = bin_index >= 0
    if mask is not None:
        sel &= np.asarray(mask, dtype=bool)
    for c in cuts:
        x = np.asarray(columns[c.variable], dtype=np.float64)
        sel &= (x >= c.lo) & (x < c.hi)
    w = np.ones(bin_index.size) if weights is None else np.asarray(weights, dtype=np.float64)
    sumw = np.bincount(bin_index[sel], weights=w[sel], minlength=n_bins).astype(np.float64)
    sumw2 = np.bincount(bin_index[sel], weights=w[sel] ** 2, minlength=n_bins).astype(np.float64)
    return sumw, sumw2
