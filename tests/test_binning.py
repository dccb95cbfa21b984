"""Binning schemes: product and nested trees, locate, content keys, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from calibflow.binning.scheme import BinningScheme, Node


def test_product_scheme_locate_matches_searchsorted() -> None:
    p_edges, eta_edges = [2, 5, 10, 200], [2.0, 3.0, 4.0, 5.0]
    s = BinningScheme.product([("p", p_edges), ("eta", eta_edges)])
    assert len(s) == 9 and s.variables == ("p", "eta")
    rng = np.random.default_rng(1)
    p, eta = rng.uniform(0, 250, 10000), rng.uniform(1.5, 5.5, 10000)
    idx = s.locate({"p": p, "eta": eta})
    ip, ie = np.searchsorted(p_edges, p, side="right") - 1, np.searchsorted(eta_edges, eta, side="right") - 1
    inside = (ip >= 0) & (ip < 3) & (ie >= 0) & (ie < 3)
    assert np.array_equal(idx, np.where(inside, ip * 3 + ie, -1))
    b = s.bins[4]
    assert b.bounds == (("p", 5.0, 10.0), ("eta", 3.0, 4.0))
    assert b.center == {"p": 7.5, "eta": 3.5}


def test_nested_scheme_has_own_inner_edges() -> None:
    root = Node("p", (2.0, 10.0, 100.0), (Node("eta", (2.0, 3.0, 5.0)), Node("eta", (2.0, 5.0))))
    s = BinningScheme(root)
    assert len(s) == 3
    idx = s.locate({"p": np.array([3.0, 3.0, 50.0, 150.0, 5.0]), "eta": np.array([2.5, 4.0, 4.9, 3.0, np.nan])})
    assert idx.tolist() == [0, 1, 2, -1, -1]


def test_bin_keys_depend_only_on_bounds() -> None:
    a = BinningScheme.product([("p", [2, 5, 10]), ("eta", [2.0, 5.0])])
    b = BinningScheme.product([("p", [2, 5, 20]), ("eta", [2.0, 5.0])])
    assert a.bins[0].key == b.bins[0].key
    assert a.bins[1].key != b.bins[1].key
    assert a.key != b.key


def test_json_round_trip(tmp_path) -> None:
    s = BinningScheme(Node("p", (2.0, 10.0, 100.0), (Node("eta", (2.0, 3.0, 5.0)), Node("eta", (2.0, 5.0)))))
    path = tmp_path / "b.json"
    s.save(str(path))
    t = BinningScheme.load(str(path))
    assert t.key == s.key and [b.key for b in t.bins] == [b.key for b in s.bins]


def test_invalid_nodes_are_rejected() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Node("p", (1.0, 1.0))
    with pytest.raises(ValueError, match="2 intervals but 1 children"):
        Node("p", (1.0, 2.0, 3.0), (Node("eta", (0.0, 1.0)),))
