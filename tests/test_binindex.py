"""Numba bin-index and fused selection + fill kernels against their plain-numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.kernels.binindex import Cut, fill_bins, fill_bins_reference, flatten, locate

VARS = ("a", "b", "c")


@st.composite
def edges_strategy(draw: st.DrawFn, max_intervals: int = 12) -> tuple[float, ...]:
    """Strictly increasing edges: uniform (exercises the multiply path) or from drawn values."""
    if draw(st.booleans()):
        n = draw(st.integers(1, max_intervals))
        lo = draw(st.integers(-5, 5)) / 4
        return tuple(float(x) for x in np.linspace(lo, lo + draw(st.integers(1, 8)) / 2, n + 1))
    vals = draw(st.lists(st.integers(-40, 40), min_size=2, max_size=max_intervals + 1, unique=True))
    return tuple(float(v) / 8 for v in sorted(vals))


@st.composite
def node_strategy(draw: st.DrawFn, depth: int = 0) -> Node:
    """Random nested tree; children of one node may have different edges and depths."""
    if depth == len(VARS) - 1 or draw(st.integers(0, 3)) == 0:
        return Node(VARS[depth], draw(edges_strategy()))
    edges = draw(edges_strategy(max_intervals=5))
    kids = tuple(draw(node_strategy(depth + 1)) for _ in range(len(edges) - 1))
    return Node(VARS[depth], edges, kids)


def random_columns(rng: np.random.Generator, n: int, scheme: BinningScheme) -> dict[str, np.ndarray]:
    """Points in and around the range, many exactly on edges, some NaN / ±inf."""
    all_edges = np.unique(flatten(scheme.root).tree.edges)
    cols = {}
    for v in VARS:
        x = rng.uniform(-6.0, 6.0, n)
        on_edge = rng.random(n) < 0.3
        x[on_edge] = rng.choice(all_edges, on_edge.sum())
        x[rng.random(n) < 0.02] = np.nan
        x[rng.random(n) < 0.01] = np.inf
        x[rng.random(n) < 0.01] = -np.inf
        cols[v] = x
    return cols


@settings(max_examples=120, deadline=None)
@given(root=node_strategy(), seed=st.integers(0, 2**32 - 1))
def test_locate_kernel_equals_numpy_reference(root: Node, seed: int) -> None:
    scheme = BinningScheme(root)
    cols = random_columns(np.random.default_rng(seed), 500, scheme)
    got = scheme.locate(cols)
    np.testing.assert_array_equal(got, scheme.locate_reference(cols))
    assert got.dtype == np.int64
    assert got.min() >= -1 and got.max() < len(scheme)


def test_locate_uniform_edges_with_rounding() -> None:
    """Values equal to linspace edges (0.30000000000000004 etc.) land where the edges array says."""
    edges = np.linspace(0.0, 1.0, 11)
    scheme = BinningScheme.product([("a", edges)])
    x = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [0.3, 0.7, 0.6]])
    got = scheme.locate({"a": x})
    np.testing.assert_array_equal(got, scheme.locate_reference({"a": x}))
    np.testing.assert_array_equal(got[:11], [*range(10), -1])


def test_locate_known_values_and_missing_column() -> None:
    scheme = BinningScheme(Node("a", (0.0, 1.0, 2.0), (Node("b", (0.0, 1.0)), Node("b", (0.0, 0.5, 1.0)))))
    cols = {"a": np.array([0.5, 1.5, 1.5, 2.0, np.nan, 1.0]), "b": np.array([0.2, 0.2, 0.7, 0.5, 0.5, 0.5])}
    np.testing.assert_array_equal(scheme.locate(cols), [0, 1, 2, -1, -1, 2])
    with pytest.raises(KeyError, match="'b' is not a column"):
        scheme.locate({"a": cols["a"]})


def test_flatten_shares_equal_subtrees() -> None:
    scheme = BinningScheme.product([("a", [0, 1, 2, 3]), ("b", [0, 1, 2]), ("c", [0, 5, 10, 20])])
    flat = flatten(scheme.root)
    assert flat.tree.var.size == 3  # one node per variable for a product
    assert flat.n_bins == len(scheme) == 18
    assert flat.variables == ("a", "b", "c")
    np.testing.assert_array_equal(flat.tree.inv_width > 0, [False, True, True])  # c, b, a (root last)


@settings(max_examples=80, deadline=None)
@given(
    root=node_strategy(),
    seed=st.integers(0, 2**32 - 1),
    use_mask=st.booleans(),
    use_weights=st.booleans(),
    n_cuts=st.integers(0, 2),
)
def test_fill_kernel_equals_numpy_reference(
    root: Node, seed: int, use_mask: bool, use_weights: bool, n_cuts: int
) -> None:
    scheme = BinningScheme(root)
    rng = np.random.default_rng(seed)
    cols = random_columns(rng, 400, scheme)
    cols["m"] = rng.normal(0.0, 1.0, 400)
    cuts = [Cut("m", -1.0, 1.0), Cut("a", lo=-2.0)][:n_cuts]
    mask = rng.random(400) < 0.7 if use_mask else None
    weights = rng.uniform(-0.5, 2.0, 400) if use_weights else None
    sumw, sumw2 = fill_bins(scheme.flatten(), cols, cuts, mask, weights)
    ref_w, ref_w2 = fill_bins_reference(scheme.locate_reference(cols), len(scheme), cols, cuts, mask, weights)
    np.testing.assert_allclose(sumw, ref_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sumw2, ref_w2, rtol=1e-12, atol=1e-12)


def test_fill_known_numbers_accumulates_and_checks_inputs() -> None:
    scheme = BinningScheme.product([("a", [0.0, 1.0, 2.0])])
    cols = {"a": np.array([0.5, 0.5, 1.5, 1.5, 3.0]), "m": np.array([0.0, 5.0, 0.0, np.nan, 0.0])}
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    sumw, sumw2 = fill_bins(scheme.flatten(), cols, [Cut("m", hi=1.0)], weights=w)
    np.testing.assert_array_equal(sumw, [1.0, 3.0])  # m=5 and m=nan fail the cut, a=3 is out of range
    np.testing.assert_array_equal(sumw2, [1.0, 9.0])
    fill_bins(scheme.flatten(), cols, mask=np.array([True, True, False, True, True]), sumw=sumw, sumw2=sumw2)
    np.testing.assert_array_equal(sumw, [3.0, 4.0])
    with pytest.raises(ValueError, match="mask has 2 rows, the columns 5"):
        fill_bins(scheme.flatten(), cols, mask=np.array([True, False]))
    with pytest.raises(KeyError, match="'x' is not a column"):
        fill_bins(scheme.flatten(), cols, [Cut("x")])


def test_locate_function_matches_method() -> None:
    scheme = BinningScheme.product([("a", [0.0, 0.5, 2.0]), ("b", [0.0, 1.0, 3.0])])
    cols = {"a": np.array([0.1, 1.0, 1.9]), "b": np.array([2.0, 0.5, 5.0]), "extra": np.zeros(3)}
    np.testing.assert_array_equal(locate(scheme.flatten(), cols), [1, 2, -1])
    np.testing.assert_array_equal(scheme.locate(cols), [1, 2, -1])


def test_product_and_infinite_edges() -> None:
    """Products take the node-by-node path; -inf/+inf edges keep NaN and ±inf values out of range."""
    scheme = BinningScheme.product(
        [("a", [-np.inf, 0.0, 1.0, np.inf]), ("b", [0.0, 0.5, 1.0]), ("c", [0.0, 2.0])]
    )
    rng = np.random.default_rng(4)
    cols = {v: rng.uniform(-1.0, 2.5, 2000) for v in VARS}
    cols["a"][:6] = [-np.inf, np.inf, np.nan, -1e308, 1e308, 0.0]
    got = scheme.locate(cols)
    np.testing.assert_array_equal(got, scheme.locate_reference(cols))
    assert got[:3].tolist() == [-1, -1, -1]
    inside = (cols["b"] >= 0) & (cols["b"] < 1) & (cols["c"] >= 0) & (cols["c"] < 2)
    assert np.all((got[3:6] >= 0) == inside[3:6])


@pytest.mark.parametrize("nested", [False, True])
def test_large_nodes_take_the_multiply_and_binary_search_paths(nested: bool) -> None:
    """Nodes beyond the edge-counting limits: uniform (multiply) and non-uniform (binary search)."""
    rng = np.random.default_rng(9)
    uniform = tuple(float(v) for v in np.linspace(-1.0, 1.0, 301))
    irregular = tuple(float(v) for v in np.unique(np.round(rng.uniform(-1.0, 1.0, 400), 4)))
    assert len(irregular) > 300
    if nested:  # different children: the generic walk
        root = Node("a", (-1.0, 0.0, 1.0), (Node("b", uniform), Node("b", irregular)))
    else:  # a product: the node-by-node walk
        root = BinningScheme.product([("a", irregular), ("b", uniform)]).root
    scheme = BinningScheme(root)
    cols = {v: rng.uniform(-1.1, 1.1, 20_000) for v in ("a", "b")}
    for v in ("a", "b"):  # many values exactly on edges
        cols[v][:5000] = rng.choice(np.array(irregular + uniform), 5000)
    got = scheme.locate(cols)
    np.testing.assert_array_equal(got, scheme.locate_reference(cols))
    assert np.mean(got >= 0) > 0.8 and np.unique(got).size > min(0.5 * len(scheme), 5000)
