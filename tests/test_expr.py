"""Tests for calibflow.expr: the safe expression compiler."""

from __future__ import annotations

import ast
import itertools
import math
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calibflow.expr import (
    FUNCTIONS,
    ExprError,
    Expression,
    MissingBranchError,
    compile_expression,
    referenced_branches,
)

RNG = np.random.default_rng(20240607)


def ev(text: str, aliases: Mapping[str, str] | None = None, **columns: Any) -> Any:
    return compile_expression(text, aliases).evaluate(columns)


def random_jagged(n_events: int = 200, max_len: int = 5, low: float = 0.0, high: float = 100.0) -> ak.Array:
    counts = RNG.integers(0, max_len + 1, size=n_events)
    flat = RNG.uniform(low, high, size=counts.sum())
    return ak.unflatten(flat, counts)


def as_list(x: Any) -> list:
    return ak.to_list(x) if isinstance(x, ak.Array) else np.asarray(x).tolist()


# --------------------------------------------------------------------------------------------
# arithmetic, comparisons, logic, bitwise


A = np.array([1.5, -2.0, 3.0, 0.25, 7.0])
B = np.array([2.0, 4.0, -1.5, 0.5, 3.0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b", A + B),
        ("a - b", A - B),
        ("a * b", A * B),
        ("a / b", A / B),
        ("a // b", A // B),
        ("a % b", A % B),
        ("a ** 2", A**2),
        ("-a + +b", -A + B),
        ("1 + 2 * a ** 2 / 4", 1 + 2 * A**2 / 4),
        ("(a + b) * 3.5e-1", (A + B) * 0.35),
        ("a == b", A == B),
        ("a != b", A != B),
        ("a < b", A < B),
        ("a <= b", A <= B),
        ("a > b", A > B),
        ("a >= b", A >= B),
        ("-1 < a < 2", (A > -1) & (A < 2)),
        ("0 <= a < b <= 4", (A >= 0) & (A < B) & (B <= 4)),
        ("a > 0 and b > 0", (A > 0) & (B > 0)),
        ("a > 0 or b > 0", (A > 0) | (B > 0)),
        ("not a > 0", ~(A > 0)),
        ("a > 0 and b > 0 or not a > 2", ((A > 0) & (B > 0)) | ~(A > 2)),
        ("a * pi", A * math.pi),
    ],
)
def test_arithmetic_and_logic_on_flat_arrays(text: str, expected: np.ndarray) -> None:
    result = ev(text, a=A, b=B)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, expected, rtol=1e-15)
    assert result.dtype == expected.dtype


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 // 2 + 7 % 2", 4),
        ("2 ** 10", 1024),
        ("True and False", False),
        ("True or False", True),
        ("not False", True),
        ("1 < 2 < 3", True),
        ("1 < 3 < 2", False),
        ("~5 & 0xFF", ~5 & 0xFF),
        ("6 ^ 3", 5),
        ("1 << 4 | 1", 17),
        ("256 >> 4", 16),
        ("1 and 0", False),
    ],
)
def test_python_scalars(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_bitwise_on_integer_branches() -> None:
    bits = np.array([0, 1, 2, 3, 6, 255], dtype=np.int32)
    np.testing.assert_array_equal(ev("(bits & 2) != 0", bits=bits), (bits & 2) != 0)
    np.testing.assert_array_equal(ev("bits | 8", bits=bits), bits | 8)
    np.testing.assert_array_equal(ev("bits ^ 1", bits=bits), bits ^ 1)
    np.testing.assert_array_equal(ev("~bits", bits=bits), ~bits)
    np.testing.assert_array_equal(ev("(bits >> 1) << 2", bits=bits), (bits >> 1) << 2)
    assert ev("bits & 2", bits=bits).dtype == np.int32  # python constants do not promote


def test_bitwise_on_jagged_trigger_bits() -> None:
    bits = ak.Array([[1, 2, 3], [], [8, 10]])
    result = ev("any((TrigObj_filterBits & 2) != 0)", TrigObj_filterBits=bits)
    assert as_list(result) == [True, False, True]


def test_float32_cut_keeps_dtype() -> None:
    pt = np.array([10.0, 30.0], dtype=np.float32)
    assert ev("pt * 1.5", pt=pt).dtype == np.float32


def test_division_by_zero_is_silent() -> None:
    with np.errstate(all="raise"):
        result = ev("a / b + log(c)", a=np.array([1.0, 0.0]), b=np.array([0.0, 0.0]), c=np.array([0.0, 1.0]))
    assert np.isneginf(result[0]) or np.isnan(result[0])
    assert np.isnan(result[1])


def test_bitwise_on_floats_is_reported_with_position() -> None:
    expr = compile_expression("(x & 2) != 0", where="selection.tag")
    with pytest.raises(ExprError, match=r"^selection\.tag: cannot evaluate '&'.* at column 4: ") as info:
        expr.evaluate({"x": np.arange(3.0)})
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# functions


X = np.array([0.1, 0.5, 1.0, 2.0, 9.0])


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("abs", np.abs),
        ("sqrt", np.sqrt),
        ("log", np.log),
        ("log10", np.log10),
        ("exp", np.exp),
        ("sin", np.sin),
        ("cos", np.cos),
        ("tan", np.tan),
        ("sinh", np.sinh),
        ("cosh", np.cosh),
        ("tanh", np.tanh),
        ("arcsinh", np.arcsinh),
        ("isfinite", np.isfinite),
    ],
)
def test_unary_functions(name: str, reference: Any) -> None:
    with np.errstate(all="ignore"):
        expected_flat = reference(X - 0.5)
        jagged = ak.Array([[0.5, 1.5], [], [2.5]])
        expected = [reference(v - 0.5) for v in ak.flatten(jagged).tolist()]
    np.testing.assert_allclose(ev(f"{name}(x - 0.5)", x=X), expected_flat, rtol=1e-14)
    np.testing.assert_allclose(ak.flatten(ev(f"{name}(j - 0.5)", j=jagged)), expected, rtol=1e-14)


def test_arccosh_and_arctan2() -> None:
    np.testing.assert_allclose(ev("arccosh(x + 1)", x=X), np.arccosh(X + 1))
    y = X[::-1] - 3
    np.testing.assert_allclose(ev("arctan2(y, x)", x=X, y=y), np.arctan2(y, X))
    np.testing.assert_allclose(ev("atan2(y, x)", x=X, y=y), np.arctan2(y, X))


def test_min_max_where_clip_flat() -> None:
    np.testing.assert_array_equal(ev("min(a, b)", a=A, b=B), np.minimum(A, B))
    np.testing.assert_array_equal(ev("max(a, b)", a=A, b=B), np.maximum(A, B))
    np.testing.assert_array_equal(ev("max(a, b, 2)", a=A, b=B), np.maximum(np.maximum(A, B), 2))
    np.testing.assert_array_equal(ev("where(a > b, a, -b)", a=A, b=B), np.where(A > B, A, -B))
    np.testing.assert_array_equal(ev("clip(a, 0, 2)", a=A), np.clip(A, 0, 2))
    np.testing.assert_array_equal(ev("isfinite(a / (b - b))", a=A, b=B), np.zeros(5, dtype=bool))


def test_where_and_clip_jagged() -> None:
    pt = ak.Array([[30.0, 20.0], [], [26.0, 5.0, 50.0]])
    met = np.array([25.0, 10.0, 27.0])
    result = ev("where(pt > met, pt, met)", pt=pt, met=met)
    assert as_list(result) == [[30.0, 25.0], [], [27.0, 27.0, 50.0]]
    assert as_list(ev("clip(pt, 10, 40)", pt=pt)) == [[30.0, 20.0], [], [26.0, 10.0, 40.0]]
    assert as_list(ev("min(pt, met)", pt=pt, met=met)) == [[25.0, 20.0], [], [26.0, 5.0, 27.0]]


# --------------------------------------------------------------------------------------------
# jagged reductions and broadcasting


def test_reductions_against_brute_force() -> None:
    pt = random_jagged()
    eta = ak.unflatten(RNG.uniform(-3, 3, size=int(ak.sum(ak.num(pt)))), ak.num(pt))
    cols = {"Electron_pt": pt, "Muon_eta": eta}
    events = list(zip(pt.tolist(), eta.tolist(), strict=True))

    assert as_list(ev("count(Electron_pt > 25) == 1", **cols)) == [
        sum(p > 25 for p in ps) == 1 for ps, _ in events
    ]
    assert as_list(ev("any(abs(Muon_eta) < 2.4)", **cols)) == [
        any(abs(e) < 2.4 for e in es) for _, es in events
    ]
    assert as_list(ev("all(Electron_pt > 10)", **cols)) == [all(p > 10 for p in ps) for ps, _ in events]
    assert as_list(ev("count(Electron_pt)", **cols)) == [len(ps) for ps, _ in events]
    np.testing.assert_allclose(ev("sum(Electron_pt)", **cols), [sum(ps) for ps, _ in events])
    np.testing.assert_allclose(ev("max(Electron_pt)", **cols), [max(ps, default=-np.inf) for ps, _ in events])
    np.testing.assert_allclose(ev("min(Electron_pt)", **cols), [min(ps, default=np.inf) for ps, _ in events])
    assert as_list(ev("sum(Electron_pt > 50)", **cols)) == [sum(p > 50 for p in ps) for ps, _ in events]


def test_reductions_have_no_missing_values() -> None:
    pt = ak.Array([[], [3.0]])
    for text in ("max(pt)", "min(pt)", "sum(pt)", "count(pt)", "any(pt > 1)", "all(pt > 1)"):
        assert not ak.any(ak.is_none(ev(text, pt=pt))), text
    assert as_list(ev("max(pt) > 1", pt=pt)) == [False, True]


def test_reductions_on_regular_numpy_2d() -> None:
    m = np.array([[1.0, 5.0], [3.0, 2.0]])
    np.testing.assert_array_equal(ev("max(m)", m=m), [5.0, 3.0])
    np.testing.assert_array_equal(ev("count(m > 2)", m=m), [1, 1])


@pytest.mark.parametrize("text", ["sum(x)", "any(x > 1)", "count(x)", "max(x)", "all(x > 0)"])
def test_reduction_of_flat_column_is_an_error(text: str) -> None:
    with pytest.raises(ExprError, match=r"reduces a jagged collection per event .* at column 1"):
        ev(text, x=np.arange(3.0))


def test_flat_jagged_broadcasting() -> None:
    muon_pt = random_jagged(n_events=50)
    met_pt = RNG.uniform(0, 100, size=50)
    for text in ("Muon_pt > MET_pt", "MET_pt < Muon_pt", "not (Muon_pt <= MET_pt)"):
        result = ev(text, Muon_pt=muon_pt, MET_pt=met_pt)
        assert as_list(result) == [
            [p > m for p in ps] for ps, m in zip(muon_pt.tolist(), met_pt, strict=True)
        ]
    counts = ev("count(Muon_pt > MET_pt) >= 1 and MET_pt > 20", Muon_pt=muon_pt, MET_pt=met_pt)
    expected = [
        sum(p > m for p in ps) >= 1 and m > 20 for ps, m in zip(muon_pt.tolist(), met_pt, strict=True)
    ]
    assert as_list(counts) == expected


def test_record_array_columns() -> None:
    events = ak.zip({"Muon_pt": random_jagged(n_events=20), "MET_pt": RNG.uniform(0, 50, 20)}, depth_limit=1)
    result = compile_expression("any(Muon_pt > MET_pt)").evaluate(events)
    assert len(result) == 20
    with pytest.raises(MissingBranchError, match="'Jet_pt'"):
        compile_expression("Jet_pt > 1").evaluate(events)


# --------------------------------------------------------------------------------------------
# physics helpers


def brute_delta_phi(p1: float, p2: float) -> float:
    d = p1 - p2
    while d >= math.pi:
        d -= 2 * math.pi
    while d < -math.pi:
        d += 2 * math.pi
    return d


def four_vector(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz


def test_delta_phi_against_brute_force() -> None:
    phi1 = RNG.uniform(-10, 10, size=500)
    phi2 = RNG.uniform(-10, 10, size=500)
    result = ev("delta_phi(p1, p2)", p1=phi1, p2=phi2)
    expected = [brute_delta_phi(a, b) for a, b in zip(phi1, phi2, strict=True)]
    np.testing.assert_allclose(result, expected, atol=1e-12)
    assert np.all((result >= -math.pi) & (result < math.pi))
    edges = ev("delta_phi(p1, 0)", p1=np.array([math.pi, -math.pi, 3 * math.pi, 0.0, -1e-17]))
    assert np.all((edges >= -math.pi) & (edges < math.pi))
    np.testing.assert_allclose(edges[:4], [-math.pi, -math.pi, -math.pi, 0.0], atol=1e-12)


def test_delta_r_flat_and_jagged() -> None:
    eta1, phi1, eta2, phi2 = (RNG.uniform(-3, 3, size=100) for _ in range(4))
    expected = [
        math.hypot(e1 - e2, brute_delta_phi(p1, p2))
        for e1, p1, e2, p2 in zip(eta1, phi1, eta2, phi2, strict=True)
    ]
    np.testing.assert_allclose(
        ev("delta_r(a, b, c, d)", a=eta1, b=phi1, c=eta2, d=phi2), expected, atol=1e-12
    )

    jet_eta = ak.Array([[0.0, 1.0], [], [2.0]])
    jet_phi = ak.Array([[0.0, 3.0], [], [-3.0]])
    tag = {"tag_eta": np.array([0.5, 0.0, 2.0]), "tag_phi": np.array([-3.0, 0.0, 3.0])}
    result = ev("delta_r(jet_eta, jet_phi, tag_eta, tag_phi)", jet_eta=jet_eta, jet_phi=jet_phi, **tag)
    expected_j = [
        [math.hypot(e - te, brute_delta_phi(p, tp)) for e, p in zip(es, ps, strict=True)]
        for es, ps, te, tp in zip(
            jet_eta.tolist(), jet_phi.tolist(), tag["tag_eta"], tag["tag_phi"], strict=True
        )
    ]
    np.testing.assert_allclose(ak.flatten(result), list(itertools.chain(*expected_j)), atol=1e-12)
    assert ak.num(result).tolist() == [2, 0, 1]


def test_inv_mass_against_explicit_four_vectors() -> None:
    n = 300
    kin = {
        "pt1": RNG.uniform(5, 200, n),
        "eta1": RNG.uniform(-2.5, 2.5, n),
        "phi1": RNG.uniform(-math.pi, math.pi, n),
        "m1": RNG.uniform(0, 5, n),
        "pt2": RNG.uniform(5, 200, n),
        "eta2": RNG.uniform(-2.5, 2.5, n),
        "phi2": RNG.uniform(-math.pi, math.pi, n),
        "m2": RNG.uniform(0, 5, n),
    }
    e1, px1, py1, pz1 = four_vector(kin["pt1"], kin["eta1"], kin["phi1"], kin["m1"])
    e2, px2, py2, pz2 = four_vector(kin["pt2"], kin["eta2"], kin["phi2"], kin["m2"])
    expected = np.sqrt((e1 + e2) ** 2 - (px1 + px2) ** 2 - (py1 + py2) ** 2 - (pz1 + pz2) ** 2)
    result = ev("inv_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2)", **kin)
    np.testing.assert_allclose(result, expected, rtol=1e-9)


def test_inv_mass_analytic_cases() -> None:
    # back-to-back at eta=0: M = 2 E = 2 sqrt(p^2 + m^2)
    m = ev("inv_mass(40, 0, 0, 0.105658, 40, 0, pi, 0.105658)")
    assert m == pytest.approx(2 * math.sqrt(40**2 + 0.105658**2), rel=1e-12)
    # massless, back-to-back in the transverse plane with different eta: M^2 = 2 pt1 pt2 (cosh deta + 1)
    m = ev("inv_mass(30, 1.2, 0.4, 0, 50, -0.3, 0.4 - pi, 0)")
    assert m == pytest.approx(math.sqrt(2 * 30 * 50 * (math.cosh(1.5) + 1)), rel=1e-12)
    # identical massless vectors: zero, never nan
    assert ev("inv_mass(30, 1.2, 0.4, 0, 30, 1.2, 0.4, 0)") == pytest.approx(0.0, abs=1e-5)


def test_inv_mass_float32_jagged_pairs_with_tag() -> None:
    probe_pt = ak.values_astype(ak.Array([[45.0, 10.0], [], [40.0]]), np.float32)
    zeros = ak.zeros_like(probe_pt)
    cols = {
        "Muon_pt": probe_pt,
        "Muon_eta": zeros,
        "Muon_phi": zeros + np.float32(math.pi),
        "tag_pt": np.array([45.0, 1.0, 40.0], dtype=np.float32),
    }
    result = ev("inv_mass(Muon_pt, Muon_eta, Muon_phi, 0, tag_pt, 0, 0, 0)", **cols)
    np.testing.assert_allclose(ak.flatten(result), [90.0, 2 * math.sqrt(450.0), 80.0], rtol=1e-6)
    assert ak.flatten(result).layout.dtype == np.float64


def test_mt_and_pt_sum() -> None:
    pt1, pt2 = RNG.uniform(0, 100, 200), RNG.uniform(0, 100, 200)
    phi1, phi2 = RNG.uniform(-4, 4, 200), RNG.uniform(-4, 4, 200)
    cols = {"pt1": pt1, "pt2": pt2, "phi1": phi1, "phi2": phi2}
    np.testing.assert_allclose(
        ev("mt(pt1, phi1, pt2, phi2)", **cols), np.sqrt(2 * pt1 * pt2 * (1 - np.cos(phi1 - phi2))), rtol=1e-12
    )
    vec = np.array([pt1 * np.cos(phi1) + pt2 * np.cos(phi2), pt1 * np.sin(phi1) + pt2 * np.sin(phi2)])
    np.testing.assert_allclose(
        ev("pt_sum(pt1, phi1, pt2, phi2)", **cols), np.linalg.norm(vec, axis=0), rtol=1e-12
    )
    assert ev("mt(40, 0, 40, pi)") == pytest.approx(80.0)
    assert ev("pt_sum(40, 0, 40, pi)") == pytest.approx(0.0, abs=1e-12)


def test_physics_docstrings_document_units() -> None:
    for name in ("inv_mass", "mt", "pt_sum"):
        assert "GeV" in FUNCTIONS[name].impl.__doc__
    for name in ("delta_phi", "delta_r", "mt"):
        assert "rad" in FUNCTIONS[name].impl.__doc__


# --------------------------------------------------------------------------------------------
# aliases and branches


def test_alias_expansion_and_branches() -> None:
    aliases = {
        "lead_pt": "max(Muon_pt)",
        "tight": "lead_pt > 25 and met > 20",
        "met": "MET_pt",
        "unused": "Jet_pt > 1",
    }
    expr = compile_expression("tight and count(Muon_pt > met) >= 1", aliases)
    assert expr.branches == frozenset({"Muon_pt", "MET_pt"})
    muon_pt = ak.Array([[30.0, 10.0], [22.0], []])
    met = np.array([25.0, 30.0, 40.0])
    assert as_list(expr.evaluate({"Muon_pt": muon_pt, "MET_pt": met})) == [True, False, False]


def test_names_are_branches_unless_function_constant_or_alias() -> None:
    expr = compile_expression("sqrt(x) + pi * y + count(z > 0) + True", {"y": "w * 2"})
    assert expr.branches == frozenset({"x", "w", "z"})


def test_alias_and_branch_fetched_once_per_evaluation() -> None:
    class CountingColumns(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data
            self.calls: list[str] = []

        def __getitem__(self, key: str) -> Any:
            self.calls.append(key)
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    cols = CountingColumns({"x": np.arange(4.0)})
    expr = compile_expression("s * s + x", {"s": "x + 1"})
    np.testing.assert_array_equal(expr.evaluate(cols), (np.arange(4.0) + 1) ** 2 + np.arange(4.0))
    assert cols.calls == ["x"]


@pytest.mark.parametrize(
    ("aliases", "cycle"),
    [
        ({"a": "b + 1", "b": "c * 2", "c": "a"}, "a -> b -> c -> a"),
        ({"a": "a + 1"}, "a -> a"),
        ({"a": "x + b", "b": "sqrt(b)"}, "b -> b"),
    ],
)
def test_alias_cycles(aliases: dict[str, str], cycle: str) -> None:
    with pytest.raises(ExprError, match=f"alias cycle: {cycle}"):
        compile_expression("a > 0", aliases, where="selection.tag")


def test_error_inside_alias_names_alias_and_config_key() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("lead > 25", {"lead": "sqr(Muon_pt)"}, where="selection.tag")
    assert str(info.value) == (
        "selection.tag -> alias 'lead': unknown function 'sqr' (did you mean 'sqrt'?) at column 1: 'sqr(Muon_pt)'"
    )


@pytest.mark.parametrize("name", ["sqrt", "pi", "__x__", "not a name", "True"])
def test_invalid_alias_names(name: str) -> None:
    with pytest.raises(ExprError, match=r"^aliases\."):
        compile_expression("x", {name: "1"})


def test_numeric_alias_value() -> None:
    assert ev("x * scale", {"scale": 2.5}, x=np.array([2.0])).tolist() == [5.0]  # type: ignore[dict-item]


def test_referenced_branches() -> None:
    aliases = {"lead": "max(Muon_pt)", "dr": "delta_r(Muon_eta, Muon_phi, tag_eta, tag_phi)"}
    result = referenced_branches(["lead > 20", "any(dr < 0.4)", "MET_pt > 10"], aliases)
    assert result == frozenset({"Muon_pt", "Muon_eta", "Muon_phi", "tag_eta", "tag_phi", "MET_pt"})
    assert referenced_branches([]) == frozenset()
    assert referenced_branches("a + b") == frozenset({"a", "b"})


def test_missing_column_is_keyerror_naming_branch() -> None:
    expr = compile_expression("x > 1 and Muon_pt < 2", where="selection.probe")
    with pytest.raises(KeyError) as info:
        expr.evaluate({"x": np.ones(3)})
    err = info.value
    assert isinstance(err, MissingBranchError)
    assert isinstance(err, ExprError)
    assert err.branch == "Muon_pt"
    assert str(err) == (
        "selection.probe: branch 'Muon_pt' not found in the input columns at column 11: 'x > 1 and Muon_pt < 2'"
    )


def test_expression_dataclass() -> None:
    expr = compile_expression("a + 1")
    assert expr == Expression(text="a + 1", branches=frozenset({"a"}))
    assert hash(expr) == hash(Expression(text="a + 1", branches=frozenset({"a"})))
    with pytest.raises(AttributeError):
        expr.text = "b"  # type: ignore[misc]
    assert Expression(text="a * 2", branches=frozenset({"a"})).evaluate({"a": np.array([2])}).tolist() == [4]


# --------------------------------------------------------------------------------------------
# rejections


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("probe.pt > 3", "attribute access is not allowed", 7),
        ("np.sum(x)", "attribute access is not allowed", 4),
        ("x.__class__", "attribute access is not allowed", 3),
        ("import os", "imports are not allowed", 1),
        ("from os import path", "imports are not allowed", 1),
        ("__class__", "dunder name '__class__' is not allowed", 1),
        ("__import__('os')", "dunder name '__import__' is not allowed", 1),
        ("lambda: 1", "lambda expressions are not allowed", 1),
        ("x + [i for i in y]", "comprehensions are not allowed", 5),
        ("{k: 1 for k in y}", "comprehensions are not allowed", 1),
        ("any(i > 1 for i in y)", "generator expressions are not allowed", 4),
        ("open('f')", "function 'open' is not allowed", 1),
        ("x + eval(y)", "function 'eval' is not allowed", 5),
        ("exec(y)", "function 'exec' is not allowed", 1),
        ("sqrt(x=1)", "keyword arguments are not allowed", 6),
        ("sqrt(**d)", "keyword argument unpacking", 6),
        ("max(*x)", "starred arguments are not allowed", 5),
        ("x + 'mu'", "strings are not allowed", 5),
        ("x == b'mu'", "bytes literals are not allowed", 6),
        ("x < 'mu'", "strings can only be compared with '==', '!=', 'in' or 'not in'", 3),
        ("f'{x}' == y", "f-strings are not allowed", 1),
        ("{1: 2}", "dict literals are not allowed", 1),
        ("x + [1, 2]", "list literals are not allowed", 5),
        ("{1, 2}", "set literals are not allowed", 1),
        ("(1, 2)", "tuple literals are not allowed", 1),
        ("x, y", "tuple literals are not allowed", 1),
        ("(y := 1) > 0", "assignment expressions (':=') are not allowed", 4),
        ("a if c else b", "use where(cond, a, b)", 3),
        ("x = 1", "assignment is not allowed", 3),
        ("x += 1", "assignment is not allowed", 3),
        ("x; y", "only a single expression is allowed", 2),
        ("pass", "statements are not allowed", 1),
        ("if x: y", "statements are not allowed", 1),
        ("x is None", "'is' comparisons are not allowed", 3),
        ("x is not y", "'is not' comparisons are not allowed", 3),
        ("x in y", "'in' takes a tuple or list of string literals", 6),
        ("x not in y", "'in' takes a tuple or list of string literals", 10),
        ("x > (1 +", "syntax error", 5),
        ("x > > 1", "syntax error: invalid syntax", 5),
        ("sqrt(1, 2)", "sqrt() takes 1 argument (2 given)", 1),
        ("x + delta_r(a, b, c)", "delta_r() takes 4 arguments (3 given)", 5),
        ("min()", "min() takes at least 1 argument (0 given)", 1),
        ("sqr(x)", "unknown function 'sqr' (did you mean 'sqrt'?)", 1),
        ("x + deltaR(a, b, c, d)", "unknown function 'deltaR' (did you mean 'delta_r'?)", 5),
        ("frobnicate(x)", "unknown function 'frobnicate'", 1),
        ("Muon_pt(1)", "unknown function 'Muon_pt'", 1),
        ("Muon_pt[0] > 3", "subscripts are not supported", 8),
        ("Muon_pt[:, 0] > 3", "subscripts are not supported", 8),
        ("x @ y", "'@' is not allowed", 3),
        ("sqrt > 1", "function 'sqrt' must be called", 1),
        ("x == None", "constant None is not allowed", 6),
        ("2j", "constant 2j is not allowed", 1),
        ("  x.y", "attribute access is not allowed", 5),
        ("(yield)", "'yield' is not allowed", 2),
    ],
)
def test_rejected(text: str, message: str, column: int) -> None:
    with pytest.raises(ExprError) as info:
        compile_expression(text, where="selection.probe")
    err = info.value
    assert message in err.message
    assert err.column == column, str(err)
    assert err.where == "selection.probe"
    text_repr = repr(text)
    assert str(err) == f"selection.probe: {err.message} at column {column}: {text_repr}"
    assert "\n" not in str(err)


def test_error_format_exact() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("probe.pt > 3", where="selection.probe")
    assert str(info.value) == "selection.probe: attribute access is not allowed at column 7: 'probe.pt > 3'"
    assert info.value.caret == "probe.pt > 3\n      ^"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "\n", "# only a comment"])
def test_empty_expression(text: str) -> None:
    with pytest.raises(ExprError, match=r"^cuts\.x: empty expression"):
        compile_expression(text, where="cuts.x")


def test_non_string_expression() -> None:
    with pytest.raises(ExprError, match="must be a string"):
        compile_expression(3)  # type: ignore[arg-type]


def test_multiline_text_gives_one_line_error_with_flat_column() -> None:
    text = "Muon_pt > 20 and\n  probe.eta < 2"
    with pytest.raises(ExprError) as info:
        compile_expression(text, where="selection.probe")
    assert "\n" not in str(info.value)
    assert info.value.column == 26
    flat = text.replace("\n", " ")
    assert flat[info.value.column - 1 :].startswith("eta")
    # line breaks inside a parenthesised / folded YAML expression are fine
    assert ev("(x > 1\n and x < 3)", x=np.array([2.0, 5.0])).tolist() == [True, False]


def test_non_ascii_column_counts_characters() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("η + x.y")
    assert info.value.column == 7


def test_error_pickles() -> None:
    err = ExprError("attribute access is not allowed", "selection.probe", 7, "probe.pt > 3")
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err)
    missing = pickle.loads(pickle.dumps(MissingBranchError("x", "w", 1, "x")))
    assert isinstance(missing, KeyError)
    assert str(missing) == "w: branch 'x' not found in the input columns at column 1: 'x'"


def test_module_never_calls_eval_exec_or_compile() -> None:
    source = Path(__file__).resolve().parents[1] / "calibflow" / "expr.py"
    tree = ast.parse(source.read_text())
    forbidden = {"eval", "exec", "compile", "__import__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in forbidden, f"line {node.lineno}: {node.func.id}()"


# --------------------------------------------------------------------------------------------
# property tests

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=30).flatmap(
        lambda n: st.tuples(*(hnp.arrays(np.float64, n, elements=finite) for _ in range(4)))
    )
)
def test_property_formula_matches_numpy(arrays: tuple[np.ndarray, ...]) -> None:
    a, b, c, d = arrays
    result = compile_expression("a*b + abs(c) > 1 and not (d < 0)").evaluate({"a": a, "b": b, "c": c, "d": d})
    np.testing.assert_array_equal(result, ((a * b + np.abs(c)) > 1) & ~(d < 0))


BRANCH_POOL = [f"br{i}" for i in range(6)]


@st.composite
def alias_chains(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    """Random acyclic alias graphs: alias i references earlier aliases and/or branches."""
    n_aliases = draw(st.integers(min_value=0, max_value=6))
    graph: dict[str, list[str]] = {}
    for i in range(n_aliases):
        candidates = [f"al{j}" for j in range(i)] + BRANCH_POOL
        graph[f"al{i}"] = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4))
    top = draw(st.lists(st.sampled_from(list(graph) + BRANCH_POOL), min_size=1, max_size=4))
    return graph, top


@settings(max_examples=80, deadline=None)
@given(alias_chains(), st.integers(min_value=0, max_value=2**31 - 1))
def test_property_alias_chains_branches_and_values(
    chain: tuple[dict[str, list[str]], list[str]], seed: int
) -> None:
    graph, top = chain
    aliases = {name: "(" + " + ".join(refs) + ") * 2 - 1" for name, refs in graph.items()}
    text = " + ".join(top)

    def closure(refs: list[str]) -> set[str]:
        out: set[str] = set()
        for ref in refs:
            out |= closure(graph[ref]) if ref in graph else {ref}
        return out

    expected_branches = closure(top)
    expr = compile_expression(text, aliases)
    assert expr.branches == expected_branches
    assert referenced_branches([text], aliases) == expected_branches

    rng = np.random.default_rng(seed)
    columns = {name: rng.integers(-5, 5, size=7) for name in expected_branches}

    def value(ref: str) -> np.ndarray:
        if ref in graph:
            return sum((value(r) for r in graph[ref]), np.zeros(7, dtype=np.int64)) * 2 - 1
        return columns[ref]

    expected = sum((value(r) for r in top), np.zeros(7, dtype=np.int64))
    np.testing.assert_array_equal(expr.evaluate(columns), expected)
