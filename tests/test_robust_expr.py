"""Robustness of expressions (issue 17, items 1, 7 and 13): long and deep expressions, integers that would wrap,
and the kernel cache that must not run planted files."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibflow.config import parse_config
from calibflow.expr import MAX_CHAIN, MAX_DEPTH, MAX_LENGTH, ExprError, compile_expression
from calibflow.io.root import write_ttree
from calibflow.io.store import read_columns
from calibflow.kernels import fused
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import PrepExpressionError, prep_spec
from calibflow.prep.steps import fused_loop

from .conftest import demo_dict, tiny_demo_dict

N = 3000


def _branches(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "Jpsi_M": rng.uniform(2900, 3300, n), "tag_PT": rng.exponential(2.0, n),
        "tag_isMuon": rng.integers(0, 2, n).astype(np.int32), "probe_P": rng.uniform(0, 100, n),
        "probe_ETA": rng.uniform(1.5, 5.5, n), "probe_Assoc": rng.integers(0, 2, n).astype(np.int32),
        "nA": rng.integers(0, 256, n).astype(np.uint8), "nB": rng.integers(0, 256, n).astype(np.uint8),
        "big": rng.integers(-(2**62), 2**62, n), "toy_true_eff": rng.uniform(size=n),
        "toy_is_signal": rng.integers(0, 2, n).astype(np.int32),
    }


def _spec(tmp_path: Path, aliases: dict[str, str] | None = None, **selection: str):
    d = demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["in.root"]
    d["aliases"].update(aliases or {})
    d["selection"].update(selection)
    return prep_spec(parse_config(d), "data", base_dir=str(tmp_path))


def _prepare_both(tmp_path: Path, spec, monkeypatch: pytest.MonkeyPatch, n: int = N) -> tuple[Any, Any]:
    """(cut flow, columns) of the file prepared with the fused loop, and with numpy only: asserted equal."""
    if not (tmp_path / "in.root").exists():
        write_ttree(tmp_path / "in.root", _branches(n))
    got = []
    for mode in ("1", "0"):
        monkeypatch.setenv("CALIBFLOW_FUSED", mode)
        out = tmp_path / f"out{mode}.h5"
        got.append((prepare_file(str(tmp_path / "in.root"), spec, str(out), step_size=1000), read_columns(out)))
    (flow, cols), (ref_flow, ref_cols) = got
    assert flow == ref_flow and set(cols) == set(ref_cols)
    assert all(np.array_equal(cols[k], ref_cols[k]) and cols[k].dtype == ref_cols[k].dtype for k in cols)
    return flow, cols


def _fusable(text: str, aliases: dict[str, str] | None = None) -> bool:
    cols = {k: v[:10] for k, v in _branches(10).items()}
    return fused_loop([compile_expression(text, aliases)], {}, cols) is not None


def _sum(n: int, names: tuple[str, ...] = ("probe_P", "probe_ETA", "tag_PT")) -> str:
    return " + ".join(names[i % len(names)] for i in range(n))


# --- item 1: long expressions ------------------------------------------------------------------------------
def test_a_200_term_sum_is_prepared_by_the_fused_loop_equal_to_numpy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the generated loop nested 200 parentheses (SyntaxError), and every file was a bad input file."""
    text = f"{_sum(200)} > 3000"
    assert _fusable(text)
    flow, _ = _prepare_both(tmp_path, _spec(tmp_path, pair=text), monkeypatch)
    b = _branches()
    total = sum(b[n] for n in ("probe_P", "probe_ETA", "tag_PT") for _ in range(67))[:N] - b["tag_PT"]
    assert flow["pair"] == int(((total > 3000) & _kept_before_pair(b)).sum()) > 0


def _kept_before_pair(b: dict[str, np.ndarray]) -> np.ndarray:
    return ((b["tag_PT"] > 1.0) & (b["tag_isMuon"] == 1) & (b["probe_P"] > 2) & (b["probe_ETA"] > 2)
            & (b["probe_ETA"] < 5))


def test_an_alias_of_a_250_term_sum_compiles_and_is_prepared_equal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: an uncaught RecursionError (copying the alias's syntax tree), 3000 lines of traceback."""
    aliases = {"s": _sum(250), "twice": "s - s / 2"}
    e = compile_expression("twice > 1900", aliases)
    assert e.branches == {"probe_P", "probe_ETA", "tag_PT"} and _fusable("twice > 1900", aliases)
    flow, _ = _prepare_both(tmp_path, _spec(tmp_path, aliases, pair="twice > 1900"), monkeypatch)
    assert 0 < flow["pair"] < flow["probe"]


def test_limits_are_load_time_errors_of_one_line_naming_the_key(write_config: Callable[..., Path]) -> None:
    """A 1 MB 'and' chain (before: RecursionError after a minute, reported as bad input files): `calibflow run`
    exits 2 at once with one line naming the config, the key and the limit."""
    d = tiny_demo_dict()
    d["selection"]["probe"] = " and ".join(f"probe_P > {i % 7}" for i in range(80_000))
    assert len(d["selection"]["probe"]) > 1_000_000
    path = write_config(d)
    from tasks.cli import main

    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", str(path), "--result-dir", str(path.parent / "results")])
    assert code == 2 and time.perf_counter() - start < 30
    assert err.getvalue().count("\n") == 1 and len(err.getvalue()) < 300, err.getvalue()[:500]
    assert f"selection.probe: expression is {len(d['selection']['probe']):,} characters long (the limit is " \
           f"{MAX_LENGTH:,})" in err.getvalue()


@pytest.mark.parametrize(("text", "aliases", "message"), [
    ("x > " + "1" * (MAX_LENGTH + 1), {}, f"characters long (the limit is {MAX_LENGTH:,})"),
    ("a0 > 1", {f"a{i}": f"a{i + 1} + a{i + 1}" for i in range(40)} | {"a40": "x"},
     f"characters long with its aliases written out (the limit is {MAX_LENGTH:,})"),
    ("abs(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH, {}, f"nested {MAX_DEPTH + 1} levels deep (the limit is {MAX_DEPTH};"),
    ("a > 1", {"a": "abs(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)},
     f"nested {MAX_DEPTH + 2} levels deep with its aliases written out"),
    (" + ".join(["x"] * (MAX_CHAIN + 1)), {}, f"a chain of {MAX_CHAIN + 1:,} operands of binary operators"),
    (" * ".join(["x"] * 5000), {}, "too long a chain of operators to be parsed"),
    ("-" * 5000 + "x", {}, "too deeply nested or has too long a chain"),
    ("(" * 300 + "x" + ")" * 300, {}, "syntax error: too many nested parentheses"),
])
def test_beyond_a_limit_is_one_expression_error(text: str, aliases: dict[str, str], message: str) -> None:
    """Each limit gives an ExprError of one short line with the key path, quickly (an alias doubling 40 times
    would be a tree of 2**40 names written out), never a RecursionError."""
    start = time.perf_counter()
    with pytest.raises(ExprError) as info:
        compile_expression(text, aliases, where="selection.pair")
    assert time.perf_counter() - start < 5
    line = str(info.value)
    assert line.startswith("selection.pair") and message in line and "\n" not in line and len(line) < 400, line


def test_an_error_in_a_long_expression_shows_the_part_around_it() -> None:
    text = " and ".join(["probe_P > 1"] * 3000) + " and lgo(probe_P) > 0"
    with pytest.raises(ExprError) as info:
        compile_expression(text, where="selection.tag")
    line = str(info.value)
    assert line.startswith("selection.tag: unknown function 'lgo' (did you mean 'log'?) at column ")
    assert "lgo(probe_P) > 0'" in line and f"of {len(text):,})" in line and len(line) < 300, line


def test_the_limits_themselves_are_fine() -> None:
    """At each limit: compiled, evaluated, and (without powers) taken by the fused loop."""
    cols = {k: v[:10] for k, v in _branches(10).items()}
    texts = [" + ".join(["probe_P"] * MAX_CHAIN), "abs(" * (MAX_DEPTH - 1) + "probe_P" + ")" * (MAX_DEPTH - 1),
             " and ".join(["probe_P > 1"] * (MAX_LENGTH // 16))]
    for text in texts:
        e = compile_expression(text)
        assert np.asarray(e.evaluate(cols)).shape == (10,)
    cols = {k: v[:10] for k, v in _branches(10).items()}
    assert fused_loop([], {"v": compile_expression(texts[1])}, cols) is not None
    assert not _fusable(texts[2])  # more operations than the loop takes: numpy, silently (documented)


def _nested(template: str, levels: int, leaf: str = "probe_P") -> str:
    text = leaf
    for _ in range(levels - 1):
        text = template.format(text)
    return text


def _deep_call(frames: int, fn: Callable[[], Any]) -> Any:
    return fn() if frames == 0 else _deep_call(frames - 1, fn)


def test_walks_of_expressions_at_the_depth_limit_leave_half_the_stack() -> None:
    """Every shape of nesting at the depth limit (calls, unary operators, right-nested operators, powers,
    comparisons, aliases of aliases) is compiled, evaluated and translated by the fused loop from a stack
    already half the recursion limit deep."""
    cols = {k: v[:10] for k, v in _branches(10).items()}
    cases: list[tuple[str, dict[str, str]]] = [
        (_nested(t, MAX_DEPTH), {}) for t in ("abs({})", "-{}", "probe_P + ({})", "probe_P ** {}",
                                              "where(tag_isMuon, {}, probe_P)", "probe_P < ({})")]
    cases.append((_nested("not {}", MAX_DEPTH, "tag_isMuon"), {}))
    cases.append(("a31", {"a0": "probe_P"} | {f"a{k}": f"abs(a{k - 1})" for k in range(1, 32)}))

    def walk(text: str, aliases: dict[str, str]) -> None:
        e = compile_expression(text, aliases)
        e.evaluate(cols)
        fused_loop([], {"v": e}, cols)

    for text, aliases in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RecursionError in the loop's generation would warn
            _deep_call(sys.getrecursionlimit() // 2, lambda t=text, a=aliases: walk(t, a))


# --- item 1: any failure of the fused path falls back to numpy --------------------------------------------
@pytest.mark.parametrize(("target", "exc", "message"), [
    ("_source", RecursionError("maximum recursion depth exceeded"), "could not be generated"),
    ("_load", SyntaxError("too many nested parentheses"), "did not compile"),
    ("_load", OSError("disk full"), "did not compile"),
])
def test_any_failure_of_the_fused_loop_falls_back_to_numpy_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, exc: Exception, message: str) -> None:
    """Before, only numba's own errors fell back; anything else made every file a bad input file."""
    spec = _spec(tmp_path)
    write_ttree(tmp_path / "in.root", _branches())

    def fail(*args: Any) -> Any:
        raise exc

    monkeypatch.setattr(fused, target, fail)
    with pytest.warns(RuntimeWarning, match=f"fused loop {message}, numpy is used instead"):
        flow = prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "out.h5"))
    assert flow["probe"] == int(_kept_before_pair(_branches()).sum())


def test_a_loop_failing_on_a_chunk_hands_the_chunk_to_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    _, ref = _prepare_both(tmp_path, spec, monkeypatch)
    monkeypatch.setenv("CALIBFLOW_FUSED", "1")

    run = fused.FusedSelection.run

    def broken(self: fused.FusedSelection, columns: Any, n: int, start: Any = None) -> Any:
        if n > 1:  # not the one-row run that compiles the kernel
            raise MemoryError("no room")
        return run(self, columns, n, start)

    monkeypatch.setattr(fused.FusedSelection, "run", broken)
    with pytest.warns(RuntimeWarning, match="fused loop failed on a chunk, numpy is used for it"):
        prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "again.h5"), step_size=1000)
    cols = read_columns(tmp_path / "again.h5")
    assert all(np.array_equal(cols[k], ref[k]) for k in ref)


# --- item 7: integers never wrap silently ------------------------------------------------------------------
def test_2_to_the_64_is_a_float_and_selects_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 2**64 evaluated to 0 (int64 wrapped), so `p < 2**64` selected nothing, with exit code 0."""
    assert compile_expression("2**64").evaluate({}) == 2.0**64
    assert compile_expression("2**63").evaluate({}) == 2**63  # still an integer: fits uint64
    assert compile_expression("-2**63").evaluate({}) == -(2**63)
    assert compile_expression("1 << 5000").evaluate({}) == np.inf
    assert compile_expression("a * a", {"a": "2**32"}).evaluate({}) == 2.0**64  # aliases of constants too
    flow, _ = _prepare_both(tmp_path, _spec(tmp_path, pair="probe_P < 2**64 and big < 2**64"), monkeypatch)
    assert flow["pair"] == flow["probe"] > 0


@pytest.mark.parametrize("text", ["big * 4 > 0", "big + big + big > 0", "big - -(2**62) * 2 > 0",
                                  "abs(big * 3) > 0", "big ** 2 > 0", "(big << 2) > 0", "-(big * 2 + big) > 0"])
def test_an_overflowing_integer_expression_is_an_expression_error_with_both_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """An overflow on any row of a file: a PrepExpressionError (a config problem, never a bad input file) naming
    the key and the operator, the same with and without the fused loop."""
    spec = _spec(tmp_path, pair=text)
    write_ttree(tmp_path / "in.root", _branches())
    errors = []
    for mode in ("1", "0"):
        monkeypatch.setenv("CALIBFLOW_FUSED", mode)
        with pytest.raises(PrepExpressionError) as info:
            prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / f"out{mode}.h5"), step_size=1000)
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "selection.pair: integer overflow in " in errors[0], errors
    assert "compute in floating point instead" in errors[0]


def test_narrow_integers_and_booleans_compute_in_64_bits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8-bit counters summed do not wrap at 256; booleans added count (numpy alone: `or`)."""
    b = _branches()
    e = compile_expression("nA + nB")
    assert np.array_equal(e.evaluate(b), b["nA"].astype(np.int64) + b["nB"]) and e.evaluate(b).max() > 255
    counted = compile_expression("(probe_P > 50) + (tag_PT > 1) + (tag_isMuon == 1)").evaluate(b)
    assert counted.max() == 3
    flow, _ = _prepare_both(tmp_path, _spec(tmp_path, pair="nA + nB > 300 and (probe_P > 50) + (tag_PT > 1) >= 2"),
                            monkeypatch)
    expected = _kept_before_pair(b) & (b["nA"].astype(int) + b["nB"] > 300) & (b["probe_P"] > 50)
    assert flow["pair"] == int(expected.sum()) > 0


# --- item 13: the kernel cache runs only what calibflow wrote -----------------------------------------------
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "kernels"
    monkeypatch.setenv("CALIBFLOW_KERNEL_CACHE", str(folder))
    fused._load.cache_clear()
    fused._trusted_folder.cache_clear()
    yield folder
    fused._load.cache_clear()
    fused._trusted_folder.cache_clear()


def _selection(threshold: float = 0.375) -> tuple[fused.FusedSelection, dict[str, np.ndarray]]:
    cols = {k: v[:100] for k, v in _branches(100).items()}
    selection = fused_loop([compile_expression(f"probe_P > {threshold}")], {"v": compile_expression("tag_PT")}, cols)
    assert selection is not None
    return selection, cols


def _check(selection: fused.FusedSelection, cols: dict[str, np.ndarray], threshold: float = 0.375) -> None:
    out, flow = selection.run(cols, 100)
    keep = cols["probe_P"] > threshold
    assert flow.tolist() == [keep.sum()] and np.array_equal(out["v"], cols["tag_PT"][keep])


def test_a_new_cache_folder_is_private_whatever_the_umask(cache: Path) -> None:
    old = os.umask(0o002)
    try:
        selection, cols = _selection()
    finally:
        os.umask(old)
    _check(selection, cols)
    for folder in (cache, cache / "__pycache__"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (source,) = cache.glob("calibflow_fused_*.py")
    assert source.read_text() == selection.source and stat.S_IMODE(source.stat().st_mode) == 0o600


@pytest.mark.parametrize("plant", ["file", "link"])
def test_a_planted_kernel_file_is_not_run_but_replaced_and_rebuilt(cache: Path, tmp_path: Path, plant: str) -> None:
    selection, cols = _selection()
    (source,) = cache.glob("calibflow_fused_*.py")
    marker = tmp_path / "planted-code-ran"
    planted = f"open({str(marker)!r}, 'w').close()\n{selection.source}"
    if plant == "file":
        source.write_text(planted)
    else:
        (tmp_path / "elsewhere.py").write_text(planted)
        source.unlink()
        source.symlink_to(tmp_path / "elsewhere.py")
    fused._load.cache_clear()
    with pytest.warns(RuntimeWarning, match="did not hold the source it is named after; replaced"):
        again, _ = _selection()
    assert not marker.exists()
    assert not source.is_symlink() and source.read_text() == selection.source
    _check(again, cols)


@pytest.mark.parametrize(("mode", "who"), [(0o777, "others"), (0o770, "its group"), (0o1777, "others")])
def test_a_cache_folder_others_can_write_is_refused(cache: Path, mode: int, who: str) -> None:
    """A folder others can write (even sticky, like /tmp) could hold planted kernels or numba caches (pickles):
    a warning, and the kernels are compiled in a private temporary folder, as for an unwritable one."""
    cache.mkdir()
    cache.chmod(mode)
    with pytest.warns(RuntimeWarning, match=f"kernel cache {cache} is writable by {who}, so it is not used"):
        selection, cols = _selection(0.625)
    _check(selection, cols, 0.625)
    assert not list(cache.glob("*.py")) and not (cache / "__pycache__").exists()
    cache.chmod(0o700)
    fused._trusted_folder.cache_clear()
    fused._load.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check(_selection(0.625)[0], cols, 0.625)
    assert list(cache.glob("*.py"))


def test_a_group_writable_numba_cache_inside_is_refused(cache: Path) -> None:
    (cache / "__pycache__").mkdir(parents=True)
    cache.chmod(0o700)
    (cache / "__pycache__").chmod(0o775)
    with pytest.warns(RuntimeWarning, match="__pycache__ is writable by its group"):
        _check(*_selection(0.875), 0.875)


def test_a_longer_chain_is_split_into_aliases() -> None:
    """The advice of the chain limit: 3000 terms as three aliases of 999 terms and their sum."""
    parts = {f"s{i}": _sum(MAX_CHAIN - 1) for i in range(3)}
    e = compile_expression("s0 + s1 + s2 > 0", parts)
    cols = _branches(20)
    expected = sum(cols[n] for n in ("probe_P", "probe_ETA", "tag_PT") for _ in range(333)) * 3 > 0
    assert e.branches == {"probe_P", "probe_ETA", "tag_PT"} and np.array_equal(e.evaluate(cols), expected)
