"""Robust configs and outputs (issue 17, items 4, 5, 6 and 14): duplicate YAML keys, alias bombs, text that is
not UTF-8, non-finite numbers and sizes that cannot fit in memory are config errors at load time (exit 2, one
line); every JSON file calibflow writes is strict JSON (NaN as ``null``, ±inf as ``"inf"``/``"-inf"``), read
back as NaN where calibflow computes with it."""

from __future__ import annotations

import glob
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from calibflow.config import (
    MAX_ALIAS_NODES,
    MAX_BINS,
    MAX_HISTOGRAM_CELLS,
    MAX_NAME,
    MAX_NESTING,
    ConfigError,
    load_config,
    load_yaml,
    parse_config,
)
from calibflow.io import jsonio

from .conftest import DEMO, ROOT, tiny_demo_dict
from .test_cli import run_cli
from .test_fuzz_config import bomb, put


def strict_json(text: str) -> Any:
    """``json.loads`` that rejects ``NaN``, ``Infinity`` and ``-Infinity`` as strict readers do."""

    def reject(token: str) -> Any:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=reject)


def load_error(tmp_path: Path, text: str | bytes) -> str:
    """The one-line ConfigError of loading ``text`` as a config file."""
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def demo_text() -> str:
    return DEMO.read_text()


# --- item 4: duplicate keys -------------------------------------------------------------------------------
def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    text = demo_text().replace("pass: probe_Assoc == 1\n", "pass: probe_Assoc == 1\npass: probe_Assoc == 0\n")
    line = demo_text().splitlines().index("pass: probe_Assoc == 1") + 1
    expected = (f"pass: given twice in one mapping (lines {line} and {line + 1}); "
                "YAML would keep the last, remove one")
    assert load_error(tmp_path, text).endswith(expected)


def test_nested_and_flow_duplicates_are_errors(tmp_path: Path) -> None:
    text = demo_text().replace("    cut: probe_TRUEID_match == 1\n",
                               "    cut: probe_TRUEID_match == 1\n    cut: probe_TRUEID_match == 0\n")
    assert "samples.mc.cut: given twice in one mapping" in load_error(tmp_path, text)
    text = demo_text().replace("mu: {value: 3097, limits: [3070, 3120]}", "mu: {value: 3097, value: 3000}")
    assert "fit.parameters.mu.value: given twice" in load_error(tmp_path, text)
    assert "[True]: given twice" in load_error(tmp_path, "true: 1\nyes: 2\n")  # the same key, spelt twice


def test_merge_keys_may_override_and_the_lhcb_recipe_loads_as_before(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert load_yaml(tmp_path / "m.yaml") == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}
    recipe = ROOT / "task_configs" / "lhcb_tracking_jpsi.yaml"
    assert "<<: *" in recipe.read_text()
    assert load_yaml(recipe) == yaml.safe_load(recipe.read_text())
    for path in glob.glob(str(ROOT / "task_configs" / "*.yaml")):
        load_config(path)


# --- item 5: alias bombs, recursion, nesting --------------------------------------------------------------
@pytest.mark.parametrize("where", ["toy.options", "vary"])
def test_an_alias_bomb_is_an_error_at_once(tmp_path: Path, where: str) -> None:
    d = tiny_demo_dict()
    if where == "toy.options":
        d["toy"]["options"] = "BOMB"
    else:
        d["systematics"] = {"sources": [{"name": "a", "vary": "BOMB"}]}
    text = yaml.safe_dump(d, sort_keys=False).replace("BOMB", bomb(9, 9))  # 9**9 = 387M items
    t0 = time.perf_counter()
    message = load_error(tmp_path, text)
    assert time.perf_counter() - t0 < 1.0
    assert re.search(r"aliases \(\*name\) expand the document from \d+ to 4\d\d,\d{3},\d{3} nodes; at most "
                     f"{MAX_ALIAS_NODES:,} more are allowed", message), message


def test_aliases_that_share_a_little_are_fine(tmp_path: Path) -> None:
    source = ("    - {name: eta_binning, vary: {binning: {variables: [{name: p, edges: [2, 200]}, "
              "{name: eta, edges: *eta}]}}}\n")
    text = demo_text().replace("edges: [2.0, 2.25", "edges: &eta [2.0, 2.25").replace(
        "  sources:\n", "  sources:\n" + source)
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(tmp_path / "c.yaml").systematics.sources[0].name == "eta_binning"


def test_recursive_aliases_and_deep_nesting_are_errors(tmp_path: Path) -> None:
    message = load_error(tmp_path, "a: &a [1, *a]\n")
    assert "a[1]: line 1: an alias refers to a node that contains it" in message
    deep = "a: " + "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5) + "\n"
    assert f"line 1: nested more than {MAX_NESTING} levels deep" in load_error(tmp_path, deep)
    deeper = "a: " + "[" * 5000 + "]" * 5000 + "\n"  # deeper than Python's recursion limit
    assert f"nested more than {MAX_NESTING} levels deep" in load_error(tmp_path, deeper)
    expanded = "a: &a " + "[" * 30 + "]" * 30 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert "(aliases expanded)" in load_error(tmp_path, expanded)


# --- item 6: load-time errors that used to escape ---------------------------------------------------------
def test_text_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    raw = demo_text().replace("Toy J/psi", "Toy J/\u03c8").encode().replace("\u03c8".encode(), b"\xe9")
    line = raw[: raw.index(b"\xe9")].count(b"\n") + 1
    assert raw.splitlines()[line - 1].index(b"\xe9") == len("description: Toy J/")
    expected = f": line {line}, column 20: not UTF-8 text (byte 0xe9); save the config as UTF-8"
    assert expected in load_error(tmp_path, raw)
    assert "special characters are not allowed" in load_error(tmp_path, "name: a\x00b\n")


def test_values_yaml_cannot_construct_are_errors_with_a_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: x\nseed: !!int abc\n")
    assert "line 2, column 7: YAML error: cannot read int 'abc'" in message
    (tmp_path / "d.yaml").write_text("a: 2024-02-30\n")
    assert load_yaml(tmp_path / "d.yaml") == {"a": "2024-02-30"}  # no implicit dates: text stays text


def _edited(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    d = tiny_demo_dict()
    edit(d)
    return d


def _variable(**kw: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d["binning"]["variables"][0].update(edges=None, **kw)


NOT_AT_LOAD: dict[str, tuple[tuple[Any, ...], str]] = {
    "NaN bin edges": (("binning", "variables", 0, "edges"), "[2, .nan, 200]"),
    "±1e400 mass range": (("mass", "range"), "[-1e400, 1.0e+400]"),
    "infinite mass range": (("mass", "range"), "[-.inf, .inf]"),
    "mass range overflowing": (("mass", "range"), "[-1.0e+308, 1.0e+308]"),
    "10^11 mass bins": (("mass", "bins"), "100000000000"),
    "NaN fit start": (("fit", "parameters", "mu", "value"), ".nan"),
}
"""Key path -> YAML text of a value that failed late (or was taken as infinite) before issue 17."""

AT_LOAD: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "uniform 10^11": (_variable(range=[2, 200], uniform=10**11),
                      f"binning.variables[0].uniform: Input should be less than or equal to {MAX_BINS}"),
    "fine bins": (lambda d: [v.update(edges=None, range=[2, 5], uniform=1000)
                             for v in d["binning"]["variables"]],
                  f"binning.variables: 1000 x 1000 = 1,000,000 fine bins; at most {MAX_BINS:,} are allowed"),
    "histogram cells": (lambda d: d["mass"].update(bins=MAX_HISTOGRAM_CELLS),
                        f"mass.bins: 2 fine bins x {MAX_HISTOGRAM_CELLS:,} mass bins = 20,000,000 histogram "
                        "cells"),
    "toy file": (lambda d: d["toy"]["samples"]["data"].update(candidates=10**11),
                 "toy.samples.data: 100,000,000,000 candidates in 1 file(s) are more than 5,000,000 per "
                 "file"),
    "toy files": (lambda d: d["toy"]["samples"]["data"].update(files=10**9),
                  "toy.samples.data.files: Input should be less than or equal to 10000"),
    "empty toy files": (lambda d: d["toy"]["samples"]["data"].update(candidates=2, files=3),
                        "toy.samples.data: 2 candidates cannot fill 3 files"),
    "negative seed": (lambda d: d["toy"].update(seed=-1),
                      "toy.seed: Input should be greater than or equal to 0"),
    "NaN toy option": (lambda d: d["toy"].update(options={"width": [1.0, math.nan]}),
                       "toy.options: width[1]: nan is not a finite number"),
    "overflowing range": (_variable(range=[-1e308, 1e308], uniform=10),
                          "[-1e+308, 1e+308] is wider than the largest"),
    "limits": (lambda d: d["fit"]["parameters"].update(mu={"value": 3097, "limits": [3120, 3070]}),
               "fit.parameters.mu: limits must be [low, high] with low < high"),
    "start outside limits": (lambda d: d["fit"]["parameters"].update(mu={"value": 1e308,
                                                                         "limits": [3070, 3120]}),
                             "fit.parameters.mu: value 1e+308 is outside the limits [3070, 3120]"),
    "boolean number": (lambda d: d["toy"]["samples"]["mc"].update(candidates=True),
                       "toy.samples.mc.candidates: true and false are not numbers"),
    "boolean edge": (lambda d: d["binning"]["variables"][0].update(edges=[2, True, 200]),
                     "binning.variables[0].edges: true and false are not numbers"),
    "name ..": (lambda d: d.update(name=".."), "name: '..' is not a folder name"),
    "long name": (lambda d: d.update(name="x" * 300),
                  f"name: String should have at most {MAX_NAME} characters"),
    "long source name": (lambda d: d.update(systematics={"sources": [{"name": "s" * 300, "vary": {}}]}),
                         f"systematics.sources[0].name: String should have at most {MAX_NAME} characters"),
    "sample path": (lambda d: d["samples"].update({"../mc": d["samples"].pop("mc")}),
                    "samples.../mc: a sample name holds letters, digits, '_', '.' and '-' (not first)"),
}


@pytest.mark.parametrize("kind", list(NOT_AT_LOAD))
def test_load_time_errors_through_the_command(kind: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, value = NOT_AT_LOAD[kind]
    d = tiny_demo_dict()
    put(d, path, "VALUE")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False).replace("VALUE", value))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "c.yaml", "--result-dir", "res")
    assert code == 2 and err.count("\n") == 1 and err.startswith("calibflow: error: c.yaml: "), (out, err)
    assert not (tmp_path / "res").exists()  # before any task, before the result folder


@pytest.mark.parametrize("kind", list(AT_LOAD))
def test_sizes_and_numbers_are_checked_at_load(kind: str) -> None:
    edit, message = AT_LOAD[kind]
    with pytest.raises(ConfigError) as info:
        parse_config(_edited(edit), source="c.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_toy_options_a_generator_does_not_take_are_one_line(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_edited(lambda d: d["toy"].update(options={"width": 2})),
                                                    sort_keys=False))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("run", "c.yaml", "--result-dir", "res")
    assert code == 2, err
    assert err == ("calibflow: error: c.yaml: toy.options: the jpsi_tag_and_probe generator takes no "
                   "options, got ['width']\n")


def test_apply_configs_reject_duplicate_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text("tree: T\ntree: U\ncalibrators: []\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("apply", "a.yaml", "x.root", "--output-dir", "out")
    assert code == 2 and "a.yaml: tree: given twice in one mapping (lines 1 and 2)" in err, err


# --- item 14: strict JSON ---------------------------------------------------------------------------------
def test_strict_json_convention_round_trips() -> None:
    record = {"a": math.nan, "b": [math.inf, -math.inf, 1.5, np.float32("nan"), np.float64(2.0)], "c": "text",
              "d": (1, None), "e": {"f": float("-inf")}}
    text = jsonio.dumps(record)
    assert strict_json(text) == {"a": None, "b": ["inf", "-inf", 1.5, None, 2.0], "c": "text", "d": [1, None],
                                 "e": {"f": "-inf"}}
    back = jsonio.numbers(strict_json(text))
    assert math.isnan(back["a"]) and back["b"][:3] == [math.inf, -math.inf, 1.5] and math.isnan(back["d"][1])
    assert math.isnan(jsonio.numbers(json.loads('{"x": NaN}'))["x"])  # records from before the convention


def test_master_table_and_its_metadata_are_strict_json(tmp_path: Path) -> None:
    from calibflow.tables.rows import write_csv
    from calibflow.tables.write import EFFICIENCIES, MASTER_H5, MASTER_JSON, write_master

    row = {"sample": "data", "bin": 0, "efficiency": math.nan, "syst": math.inf}
    write_csv(tmp_path / EFFICIENCIES, [row])
    write_master(str(tmp_path), {"limits": math.nan, "config": {"x": -math.inf}})
    master = strict_json((tmp_path / MASTER_JSON).read_text())
    assert master["tables"]["efficiencies"][0]["efficiency"] is None
    assert master["tables"]["efficiencies"][0]["syst"] == "inf"
    assert master["metadata"] == {"limits": None, "config": {"x": "-inf"}}
    with h5py.File(tmp_path / MASTER_H5) as h5:
        assert strict_json(h5.attrs["metadata"])["limits"] is None


def test_splot_cache_is_strict_json_and_reads_back_nan(tmp_path: Path) -> None:
    from calibflow.fit.sweights import SPlotFit, cached_splot_fit

    fit = SPlotFit("gauss", "exponential", 0.0, 1.0, {"n_sig": 5.0}, {"n_sig": math.nan}, ["n_sig"], "failed",
                   attempts=[{"chi2": math.nan}], hessian=[[1.0, math.inf]])
    path = str(tmp_path / "s.json")
    cached_splot_fit(path, lambda: fit)
    strict_json(Path(path).read_text())
    back, reused = cached_splot_fit(path, lambda: pytest.fail("the cache is read"))
    assert reused and math.isnan(back.errors["n_sig"]) and math.isnan(back.chi2)
    assert back.hessian == [[1.0, math.inf]]
    assert math.isnan(back.attempts[0]["chi2"]) and back.sandwich_free is None


def test_correctionlib_json_stays_valid(tmp_path: Path) -> None:
    import correctionlib

    from calibflow.binning.scheme import BinningScheme
    from calibflow.export.correctionlib import build_correction, write_correction_set

    scheme = BinningScheme.product([("p", [2.0, 10.0, 200.0])])
    path = tmp_path / "corrections.json"
    write_correction_set(path, [build_correction("sf", scheme, {"nominal": {0: 1.0, 1: 0.98}})])
    strict_json(path.read_text())
    assert correctionlib.CorrectionSet.from_file(str(path))["sf"].evaluate(5.0, "nominal") == 1.0


@pytest.fixture(scope="module")
def empty_bin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo with a momentum bin beyond the toy's (p < 200): NaN efficiencies in its fit results."""
    folder = tmp_path_factory.mktemp("empty_bin")
    d = tiny_demo_dict()
    d["name"] = "empty_bin"
    d["binning"]["variables"][0]["edges"] = [2, 10, 200, 300]
    d["outputs"] = {"correctionlib": False, "plots": False, "root": False}  # correctionlib: finite values
    (folder / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    code, out, err = run_cli("run", str(folder / "c.yaml"), "--result-dir", str(folder / "res"),
                             "--workers", "1", "--quiet")
    assert code == 0, (out, err)
    return folder / "res" / "empty_bin"


def test_every_json_of_a_run_is_strict(empty_bin_run: Path) -> None:
    files = sorted(empty_bin_run.rglob("*.json"))
    assert {p.parent.parent.name for p in files} >= {"fits"} and (empty_bin_run / "manifest.json") in files
    for path in files:
        strict_json(path.read_text())
    results = [json.loads(p.read_text()) for p in (empty_bin_run / "fits" / "data").glob("*.json")]
    assert [r["efficiency"] for r in results if r["status"] == "empty_bin"] == [None]


def test_tables_read_null_results_back_as_nan(empty_bin_run: Path) -> None:
    from calibflow.tables.rows import read_csv

    rows = {(r["sample"], r["bin"]): r for r in read_csv(empty_bin_run / "efficiencies.csv")}
    assert math.isnan(rows[("data", 2)]["efficiency"]) and math.isnan(rows[("mc", 2)]["err_up"])
    assert rows[("data", 2)]["fit_status"] == "empty_bin" and 0.5 < rows[("data", 0)]["efficiency"] < 1
    scale = {r["bin"]: r for r in read_csv(empty_bin_run / "scale_factors.csv")}
    assert math.isnan(scale[2]["scale_factor"]) and 0.5 < scale[0]["scale_factor"] < 1.5


def test_extreme_but_valid_parameter_limits_flag_the_fit_instead_of_crashing(tmp_path) -> None:
    """Found by the fuzz test: sigma limits [1e-300, 1e308] divided by zero inside the numba chi2 kernel (python
    error model: ZeroDivisionError, exit 1). The kernels use numpy's error model: the fit is flagged, exit 0."""
    import yaml

    from tasks.cli import main
    from tests.conftest import tiny_demo_dict

    d = tiny_demo_dict()
    d["fit"]["parameters"]["sigma"] = {"value": 13, "limits": [1e-300, 1e308]}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    assert main(["run", str(cfg), "--workers", "1", "--result-dir", str(tmp_path / "r"), "--quiet"]) == 0
