"""The fused numba loop of flat-tuple cuts and outputs equals the numpy path (its reference) bit for bit."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibflow.config import parse_config
from calibflow.expr import ExprError, compile_expression
from calibflow.io.root import write_ttree
from calibflow.io.store import read_columns, read_metadata
from calibflow.kernels import fused
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import PASS, prep_spec
from calibflow.prep.steps import cut_flow, fused_loop, output_columns

from .conftest import demo_dict

DTYPES = {"f4": np.float32, "f8": np.float64, "i4": np.int32, "i8": np.int64, "u1": np.uint8, "u4": np.uint32,
          "b": np.bool_}
SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0, np.nan, np.inf, -np.inf, 1e30, -7.25, 255.0, 2.0**31]


def _columns(rng: np.random.Generator, n: int, extreme: bool = True) -> dict[str, np.ndarray]:
    """One column per dtype, with special values (NaN, ±inf, ±0, extremes) mixed in; the 64-bit integers near
    their limits (products and sums overflow) if ``extreme``, else small."""
    floats = rng.normal(0, 3, n)
    floats = np.where(rng.random(n) < 0.3, rng.choice(SPECIAL, n), floats)
    ints = rng.integers(-300, 300, n)
    ints[rng.random(n) < 0.1] = 2**31 - 1
    small = rng.integers(-300, 300, n)
    return {"f4": floats.astype(np.float32), "f8": floats[::-1].copy(), "i4": ints.astype(np.int32),
            "i8": ints[::-1] * 3_000_000_000 if extreme else small,
            "u1": (ints % 256).astype(np.uint8), "u4": np.abs(ints).astype(np.uint32),
            "u8": ints.astype(np.uint64) * np.uint64(2**40 + 3) if extreme else np.abs(small).astype(np.uint64) + 7,
            "b": rng.random(n) < 0.5}


def _numpy_path(stages, columns, cols, n):
    """The numpy path of prep: cut flow and outputs (the reference)."""
    flow = {f"s{i}": 0 for i in range(len(stages))}
    keep = cut_flow(cols, n, [(f"s{i}", e.where, e.evaluate) for i, e in enumerate(stages)], flow)
    return output_columns(cols, n, keep, columns), np.array(list(flow.values()))


def _fused_path(stages, columns, cols, n, masked=False, start=None):
    selection = fused_loop(stages, columns, cols, masked=masked)
    return selection if selection is None else selection.run(cols, n, start)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (so -0.0 differs from 0.0), except that every NaN equals every NaN (the sign and
    payload of a NaN are not specified by IEEE 754 arithmetic, and differ between SIMD and scalar code)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype.kind != "f":
        return np.array_equal(a, b)
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.uint8), b[~nan].view(np.uint8)))


def _assert_same(stage_texts, column_texts, cols):
    """Both paths give the same columns (values, NaNs, signed zeros and dtypes: :func:`_same_bits`) and cut
    flow; returns whether the fused loop took the expressions, or None where numpy refuses them (e.g. '&' on
    floats, an integer overflow), after checking that the loop refuses them too (does not take them, or
    reports the overflow: prep then lets numpy report it)."""
    n = len(cols["f8"])
    stages = [compile_expression(t) for t in stage_texts]
    columns = {name: compile_expression(t) for name, t in column_texts.items()}
    try:
        ref_out, ref_flow = _numpy_path(stages, columns, cols, n)
    except ExprError as exc:
        try:
            got = _fused_path(stages, columns, cols, n)
        except (fused.FusedOverflow, ExprError):
            got = None
        assert got is None, (stage_texts, column_texts, "numpy refuses it, the loop does not", str(exc))
        return None
    got = _fused_path(stages, columns, cols, n)
    if got is None:
        return False
    out, flow = got
    assert flow.tolist() == ref_flow.tolist(), (stage_texts, flow, ref_flow)
    for name, ref in ref_out.items():
        assert out[name].dtype == ref.dtype, (column_texts[name], out[name].dtype, ref.dtype)
        assert _same_bits(out[name], ref), column_texts[name]
    return True


SUPPORTED = [
    "f8 + f4", "f4 * 2.5", "f4 - 1", "i4 + 7", "i4 * i4", "i8 - i4", "u1 + 1", "f8 / i4", "i4 / 3", "u4 - 5",
    "i4 // 7", "i4 % 7", "i8 % -5", "i8 * i8 * i8", "-i8", "abs(i8 * 4)", "u8 * u8", "u8 - 7", "i8 << 20", "f4 ** 2", "i4 ** 2", "i4 & 6", "(i4 & 2) != 0", "u1 | 3", "i4 ^ i8",
    "b & (i4 > 0)", "i4 << 3", "i4 >> 2", "-f4", "-i4", "~i4", "~b", "not b", "+f8", "abs(f4)", "abs(i4)",
    "sqrt(f8)", "sqrt(f4)", "sqrt(i4)", "min(f8, f4)", "max(f4, 1.5, i4)", "min(i4, 3)", "clip(f8, -1, 2.5)",
    "where(b, f4, 2.5)", "where(i4 > 0, i4, 0)", "isfinite(f8)", "isfinite(i4)", "f4 > 2.1", "f4 <= 2.1",
    "1 < f8 < 2", "i4 == 1", "u1 > 200", "b == True", "f8 != f8", "f8 > 0 and i4 < 5", "b or f8 > 1",
    "not (f4 > 0)", "f8 * pi", "abs(f8 - 3.5) < 1e30", "f8 > -1e308", "i4 / 0", "f8 / 0", "1", "2.5",
    "f8 < 100000000000000000000", "i8 < 2**64", "(u1 > 9) + (i4 > 0) + b", "u1 + u1 > 300", "-b", "abs(b)",
    "i4 * i4 // 7", "i8 - 2**62 < 0",
]
UNSUPPORTED = ["i8 // -1", "exp(f8)", "log(f4)", "sin(f8)", "f8 ** 3", "i4 // i4", "f8 % 2", "i4 << i4", "u1 > 300",
               "i8 < u4 * 9223372036854775807", "delta_phi(f8, f4)", "arctan2(f8, f4)"]


@pytest.mark.parametrize("text", SUPPORTED)
def test_each_supported_operation_equals_numpy(text: str) -> None:
    cols = _columns(np.random.default_rng(1), 4000, extreme=False)
    assert _assert_same([text], {"v": text, PASS: text}, cols) is True


OVERFLOWING = ["i8 * i8 * i8", "u8 * u8", "i8 + i8", "i8 - i8 * 3", "u8 + u8", "i8 << 40", "u8 << 40", "i8 ** 2",
               "abs(i8 * 4) < 1", "-u8"]


@pytest.mark.parametrize("text", OVERFLOWING)
def test_integer_overflow_is_refused_by_both_paths(text: str) -> None:
    """numpy raises 'integer overflow' where a row's exact integer result does not fit 64 bits; the loop
    translates the same operations and reports the overflow (prep then lets numpy say where). Without such
    rows (negating unsigned integers always overflows), both give the same results."""
    cols = _columns(np.random.default_rng(1), 4000)
    with pytest.raises(ExprError, match="integer overflow"):
        _numpy_path([compile_expression(text)], {}, cols, 4000)
    with pytest.raises(fused.FusedOverflow):
        _fused_path([compile_expression(text)], {}, cols, 4000)
    small = _columns(np.random.default_rng(1), 4000, extreme=False)
    assert _assert_same([text], {"v": text}, small) is (None if text == "-u8" else True)


@pytest.mark.parametrize(("text", "ok", "overflowing"), [
    ("i8 * i8", [3037000499, -3037000499, 2**31, -(2**31)], [3037000500, -3037000500, 2**32 - 1]),
    ("i8 * -1", [2**63 - 1, -(2**63) + 1, 0], [-(2**63)]),
    ("i8 + 2**62", [2**62 - 1, -(2**63)], [2**62]),
    ("i8 - 1", [-(2**63) + 1], [-(2**63)]),
    ("abs(i8)", [-(2**63) + 1], [-(2**63)]),
    ("i8 << 2", [2**61 - 1, -(2**61)], [2**61, -(2**61) - 1]),
    ("i8 ** 2", [-3037000499], [3037000500]),
])
def test_the_same_rows_overflow_in_both_paths_at_the_limits(text: str, ok: list[int], overflowing: list[int]) -> None:
    """At the edge of int64, where the float estimate of the exact result is not decisive: each overflowing
    value makes both paths refuse the chunk, the others give equal results."""
    cols = _columns(np.random.default_rng(11), len(ok), extreme=False)
    cols["i8"] = np.array(ok, np.int64)
    assert _assert_same([f"({text}) != 0"], {"v": text}, cols) is True
    for value in overflowing:
        cols["i8"] = np.array([*ok, value], np.int64)
        cols = {k: (v if k == "i8" else np.resize(v, len(ok) + 1)) for k, v in cols.items()}
        assert _assert_same([f"({text}) != 0"], {"v": text}, cols) is None
        with pytest.raises(fused.FusedOverflow):
            _fused_path([compile_expression(f"({text}) != 0")], {}, cols, len(ok) + 1)


@pytest.mark.parametrize("text", UNSUPPORTED)
def test_operations_that_numpy_rounds_otherwise_stay_with_numpy(text: str) -> None:
    """exp/log/trig (libm and numpy's SIMD code differ in the last bit), general powers, integer division
    by a column, shifts by a column, literals outside the column's range: None, the caller keeps numpy."""
    cols = _columns(np.random.default_rng(2), 100)
    assert _assert_same([text], {"v": text}, cols) in (False, None)


def test_stages_count_the_cut_flow_in_order_and_aliases_expand() -> None:
    cols = _columns(np.random.default_rng(3), 10000)
    aliases = {"x": "f8 * 2", "big": "x > 1"}
    stages = [compile_expression("big", aliases), compile_expression("i4 % 3 == 0"), compile_expression("b")]
    columns = {"x": compile_expression("x", aliases), PASS: compile_expression("u1 > 100")}
    (ref, ref_flow), (out, flow) = _numpy_path(stages, columns, cols, 10000), _fused_path(stages, columns, cols, 10000)
    assert flow.tolist() == ref_flow.tolist() and ref_flow[0] > ref_flow[1] > ref_flow[2] > 0
    assert np.array_equal(out["x"], ref["x"]) and np.array_equal(out[PASS], ref[PASS]) and out[PASS].dtype == bool


def test_a_start_mask_rejects_rows_before_the_stages() -> None:
    cols = _columns(np.random.default_rng(4), 5000)
    start = np.random.default_rng(5).random(5000) < 0.5
    stages, columns = [compile_expression("f8 > 0")], {"v": compile_expression("f4")}
    out, flow = _fused_path(stages, columns, cols, 5000, masked=True, start=start)
    keep = start & (cols["f8"] > 0)
    assert flow.tolist() == [keep.sum()] and np.array_equal(out["v"], cols["f4"][keep], equal_nan=True)


_LEAVES = st.sampled_from(["f4", "f8", "i4", "i8", "u1", "u4", "u8", "b", "0", "1", "2", "-3", "2.5", "0.1", "pi", "1e30"])


def _expressions(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _LEAVES
    sub = _expressions(depth - 1)
    binary = st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "&", "|", "//", "%", "<", ">=", "==", "!=",
                                             "and", "or"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(st.sampled_from(["-", "not ", "~", "abs", "sqrt", "isfinite"]), sub).map(
        lambda t: f"({t[0]}({t[1]}))")
    calls = st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
    where = st.tuples(sub, sub, sub).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})")
    square = sub.map(lambda s: f"({s}) ** 2")
    return st.one_of(sub, binary, unary, calls, where, square)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=_expressions(2), value=_expressions(2), seed=st.integers(0, 2**16), extreme=st.booleans())
def test_random_expressions_equal_numpy(cut: str, value: str, seed: int, extreme: bool) -> None:
    """Random expressions over every column dtype (NaN, ±inf, ±0, integers that may overflow): where the fused
    loop takes them, its cut flow and outputs equal numpy's bit for bit; where numpy refuses them (an integer
    overflow), so does the loop."""
    cols = _columns(np.random.default_rng(seed), 300, extreme)
    _assert_same([cut], {"v": value, PASS: value}, cols)


def test_kernels_are_cached_on_disk_and_compiled_privately_where_the_cache_is_read_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cols = _columns(np.random.default_rng(6), 100)
    cache = tmp_path / "kernels"
    monkeypatch.setenv("CALIBFLOW_KERNEL_CACHE", str(cache))
    fused._load.cache_clear()
    assert _assert_same(["f8 > 0.125"], {"v": "f4 + 0.125"}, cols)
    sources = list(cache.glob("calibflow_fused_*.py"))
    assert len(sources) == 1 and "0.125" in sources[0].read_text()
    machine_code = Path(os.environ["NUMBA_CACHE_DIR"])  # the one folder of every kernel (calibflow.kernels.cache)
    assert list(machine_code.rglob(f"{sources[0].stem}.kernel-*.nbi"))  # numba's index of the cached machine code
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CALIBFLOW_KERNEL_CACHE", str(blocked / "kernels"))
    fused._load.cache_clear()
    assert _assert_same(["f8 > 0.25"], {"v": "f4 + 0.25"}, cols)
    assert not (blocked / "kernels").exists()
    fused._load.cache_clear()


def _prepared(tmp_path: Path, spec, src: Path, name: str, fused_env: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CALIBFLOW_FUSED", fused_env)
    out = tmp_path / name
    flow = prepare_file(str(src), spec, str(out), step_size=3000)
    return flow, read_columns(out), read_metadata(out)


def test_prepare_file_gives_the_same_file_with_and_without_the_fused_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flat tuple with a golden-JSON lumi mask, event cuts and candidate cuts, several chunks."""
    rng = np.random.default_rng(7)
    n = 20000
    write_ttree(tmp_path / "in.root", {
        "run": rng.choice(np.array([1, 2], np.uint32), n), "luminosityBlock": rng.integers(1, 40, n).astype(np.uint32),
        "Jpsi_M": rng.uniform(2900, 3300, n), "tag_PT": rng.exponential(2.0, n).astype(np.float32),
        "tag_isMuon": rng.integers(0, 2, n).astype(np.int32), "probe_P": rng.uniform(0, 100, n),
        "probe_ETA": rng.uniform(1.5, 5.5, n).astype(np.float32), "probe_Assoc": rng.integers(0, 2, n).astype(np.int32),
        "toy_true_eff": rng.uniform(size=n), "toy_is_signal": rng.integers(0, 2, n).astype(np.int32)})
    (tmp_path / "golden.json").write_text(json.dumps({"1": [[1, 10], [20, 30]], "2": [[5, 39]]}))
    d = demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["in.root"]
    d["samples"]["data"]["lumi_mask"] = "golden.json"
    d["selection"]["event"] = "tag_PT > 0.5"
    spec = prep_spec(parse_config(d), "data", base_dir=str(tmp_path))
    fast = _prepared(tmp_path, spec, tmp_path / "in.root", "fused.h5", "1", monkeypatch)
    slow = _prepared(tmp_path, spec, tmp_path / "in.root", "numpy.h5", "0", monkeypatch)
    assert fast[0] == slow[0] and fast[0]["lumi"] < n and fast[0]["event"] < fast[0]["lumi"]
    assert fast[0] == fast[2]["cutflow"]
    assert set(fast[1]) == set(slow[1]) and all(np.array_equal(fast[1][k], slow[1][k]) for k in fast[1])
    assert all(fast[1][k].dtype == slow[1][k].dtype for k in fast[1])
    assert os.environ["CALIBFLOW_FUSED"] == "0"  # the numpy run above really ran without the loop


def test_a_kernel_that_does_not_compile_falls_back_to_numpy_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever numba refuses (here: a template broken on purpose) costs speed, never the run."""
    cols = _columns(np.random.default_rng(8), 100)
    monkeypatch.setenv("CALIBFLOW_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(fused, "_HEADER", fused._HEADER + "\n@numba.njit\ndef _broken(x):\n    return x.nope\n")
    broken = fused._source
    monkeypatch.setattr(fused, "_source", lambda *a: (broken(*a)[0].replace("j += k", "j += _broken(k)"),
                                                      broken(*a)[1]))
    with pytest.warns(RuntimeWarning, match="fused loop did not compile"):
        assert _fused_path([compile_expression("f8 > 0")], {"v": compile_expression("f4")}, cols, 100) is None


def test_string_comparisons_stay_with_numpy_and_never_reach_the_source() -> None:
    """A string comparison keeps the whole selection on numpy; a string literal is refused before its repr
    could enter the generated source, whatever it is compared with."""
    cols = {**_columns(np.random.default_rng(9), 100), "Type": np.array(["GG", "x"] * 50, dtype=object)}
    for text in ['Type == "GG"', 'Type in ("GG", "x")', 'Type not in ["GG"]', 'f8 > 0 and Type != "x"']:
        assert fused_loop([compile_expression(text)], {"v": compile_expression("f8")}, cols) is None
        assert fused_loop([compile_expression("f8 > 0")], {PASS: compile_expression(text)}, cols) is None
    translator = fused._Translator({"f8": "x0"}, {"f8": np.dtype("f8")})
    for tree in [ast.Constant("GG"), ast.Constant(b"GG"), compile_expression('f8 == "GG"').tree]:
        with pytest.raises(fused._Unsupported):
            translator.value(tree)


def test_string_columns_read_as_awkward_do_not_stop_the_loop_of_numeric_expressions() -> None:
    import awkward as ak

    cols = {**_columns(np.random.default_rng(10), 100), "Type": ak.Array(["GG", "x"] * 50)}
    selection = fused_loop([compile_expression("f8 > 0")], {"v": compile_expression("f4")}, cols)
    assert selection is not None and "Type" not in selection.branches
    out, flow = selection.run(cols, 100)
    assert flow.tolist() == [int((cols["f8"] > 0).sum())]
    assert np.array_equal(out["v"], cols["f4"][cols["f8"] > 0], equal_nan=True)
