"""calibflow merge (issue 20 item 6): eras and working points in one CorrectionSet, their luminosity-weighted
combination and the per-era consistency χ², checked with correctionlib's evaluator against the eras' own tables and
hand computations."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import correctionlib
import numpy as np
import pytest
import yaml

from calibflow.tables.rows import read_csv
from tasks.cli import main
from tests.conftest import tiny_demo_dict

LUMI = {"2022": 30.0, "2023": 10.0}


def _era_config(name: str, seed: int, stat: str = "merged") -> dict[str, Any]:
    d = tiny_demo_dict()
    d["name"], d["toy"]["seed"] = name, seed
    d["outputs"]["correctionlib"] = {"stat": stat}
    d["working_points"] = {"tight": "probe_Assoc == 1 and probe_score > 0.3"}
    d["systematics"] = {"sources": [{"name": "sigmodel", "vary": {"fit": {"signal": "gauss", "parameters": {"n": None}}}}]}
    d["outputs"]["report"] = False
    return d


@pytest.fixture(scope="module")
def eras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two eras (toys of different seeds) with a working point, a systematic source and per-bin statistical
    categories (both forms in the first, per-bin only in the second), and a third calibration with other bins, run
    into one result folder."""
    base = tmp_path_factory.mktemp("merge")
    other = _era_config("era_c", 13)
    other["binning"]["variables"][0]["edges"] = [2, 8, 200]
    eras = (("era_a", _era_config("era_a", 11, "both")), ("era_b", _era_config("era_b", 12, "per_bin")), ("era_c", other))
    for name, d in eras:
        (base / f"{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        assert main(["run", str(base / f"{name}.yaml"), "--workers", "2", "--quiet", "--result-dir",
                     str(base / "res")]) == 0
    assert main(["run", str(base / "era_a.yaml"), "--quiet", "--limit", "8000", "--result-dir", str(base / "quick")]) == 0
    return base


def _merge(base: Path, name: str, **extra: Any) -> Path:
    cfg = {"name": name, "eras": [
        {"era": 2022, "result": "res/era_a", "lumi": LUMI["2022"], "run_range": [100, 200]},
        {"era": 2023, "result": "res/era_b", "lumi": LUMI["2023"], "run_range": [250, 300]}],
        "working_points": ["nominal", "tight"], **extra}
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _centres(rows: list[dict]) -> list[tuple[float, float]]:
    return [(0.5 * (r["p_lo"] + r["p_hi"]), 0.5 * (r["eta_lo"] + r["eta_hi"])) for r in rows]


def _tables(base: Path, era: str, wp: str) -> list[dict]:
    folder = base / "res" / era / ("" if wp == "nominal" else f"wp/{wp}")
    return read_csv(folder / "scale_factors.csv")


def test_an_era_named_by_its_config(eras: Path) -> None:
    """``config:`` instead of ``result:``: the published results of that config under the merge's result folder."""
    path = _merge(eras, "by_config")
    cfg = yaml.safe_load(path.read_text())
    cfg["eras"][0] = {"era": 2022, "config": "era_a.yaml", "lumi": LUMI["2022"]}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(path), "--result-dir", str(eras / "res")]) == 0
    by_config = read_csv(eras / "res" / "merged" / "by_config" / "combined_scale_factors.csv")
    assert main(["merge", str(_merge(eras, "by_result")), "--result-dir", str(eras / "res")]) == 0
    by_result = read_csv(eras / "res" / "merged" / "by_result" / "combined_scale_factors.csv")
    assert by_config == by_result


def test_the_merge_is_published_as_a_set(eras: Path) -> None:
    """A rerun builds a new set and switches to it; the old build folder goes, the published files stay whole."""
    path = _merge(eras, "as_set")
    assert main(["merge", str(path), "--result-dir", str(eras / "res")]) == 0
    out = eras / "res" / "merged" / "as_set"
    first = os.readlink(out / "current")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"] == str(path) and "corrections.json" in manifest["files"]
    assert main(["merge", str(path), "--result-dir", str(eras / "res")]) == 0
    assert os.readlink(out / "current") != first and len(os.listdir(out / "work")) == 1
    assert correctionlib.CorrectionSet.from_file(str(out / "corrections.json"))["as_set_combined"]


def test_eras_and_working_points_in_one_correction(eras: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(_merge(eras, "by_era")), "--result-dir", str(eras / "res")]) == 0
    assert "tight: per-era consistency chi2/ndof" in capsys.readouterr().out
    cset = correctionlib.CorrectionSet.from_file(str(eras / "res" / "merged" / "by_era" / "corrections.json"))
    assert sorted(cset.keys()) == ["by_era", "by_era_combined"]
    assert [i.name for i in cset["by_era"].inputs] == ["era", "working_point", "p", "eta", "syst"]
    for era, folder in (("2022", "era_a"), ("2023", "era_b")):
        for wp in ("nominal", "tight"):
            rows = _tables(eras, folder, wp)
            own = correctionlib.CorrectionSet.from_file(
                str(eras / "res" / folder / ("" if wp == "nominal" else f"wp/{wp}") / "corrections.json"))[folder]
            for r, (p, eta) in zip(rows, _centres(rows), strict=True):
                got = cset["by_era"].evaluate(era, wp, p, eta, "nominal")
                assert got == pytest.approx(r["scale_factor"], rel=1e-12)
                if era == "2022":
                    assert cset["by_era"].evaluate(era, wp, p, eta, "statUp") == pytest.approx(
                        r["scale_factor"] + r["err_up"], rel=1e-12)
                for syst in ("up", "down", "sigmodelUp", "systDown", "stat_data_bin0_up", "stat_mc_bin1_down"):
                    assert cset["by_era"].evaluate(era, wp, p, eta, syst) == own.evaluate(p, eta, syst)
                assert cset["by_era"].evaluate(era, wp, p, eta, f"stat_data_bin{r['bin']}_up") == pytest.approx(
                    r["scale_factor"] + r["stat_data_up"], rel=1e-12)
    with pytest.raises(Exception, match=r"statUp|syst"):  # era 2023 has per-bin categories only
        cset["by_era"].evaluate("2023", "tight", p, eta, "statUp")


def test_luminosity_weighted_combination_by_hand(eras: Path) -> None:
    assert main(["merge", str(_merge(eras, "comb")), "--result-dir", str(eras / "res")]) == 0
    comb = correctionlib.CorrectionSet.from_file(str(eras / "res" / "merged" / "comb" / "corrections.json"))["comb_combined"]
    assert [i.name for i in comb.inputs] == ["working_point", "p", "eta", "syst"]
    w = np.array([LUMI["2022"], LUMI["2023"]]) / 40.0
    for wp in ("nominal", "tight"):
        a, b = _tables(eras, "era_a", wp), _tables(eras, "era_b", wp)
        for ra, rb, (p, eta) in zip(a, b, _centres(a), strict=True):
            sf = np.array([ra["scale_factor"], rb["scale_factor"]])
            nominal = float(w @ sf)
            stat_up = math.sqrt((w[0] * ra["err_up"]) ** 2 + (w[1] * rb["err_up"]) ** 2)
            stat_down = math.sqrt((w[0] * ra["err_down"]) ** 2 + (w[1] * rb["err_down"]) ** 2)
            syst = float(w @ [ra["syst"], rb["syst"]])
            shift = float(w @ ([ra["sigmodelDown"], rb["sigmodelDown"]] - sf))
            assert comb.evaluate(wp, p, eta, "nominal") == pytest.approx(nominal, rel=1e-12)
            assert comb.evaluate(wp, p, eta, "statUp") == pytest.approx(nominal + stat_up, rel=1e-12)
            assert comb.evaluate(wp, p, eta, "statDown") == pytest.approx(nominal - stat_down, rel=1e-12)
            assert comb.evaluate(wp, p, eta, "systUp") == pytest.approx(nominal + syst, rel=1e-12)
            assert comb.evaluate(wp, p, eta, "sigmodelDown") == pytest.approx(nominal + shift, rel=1e-12)
            assert comb.evaluate(wp, p, eta, "up") == pytest.approx(nominal + math.hypot(stat_up, syst), rel=1e-12)


def test_consistency_chi2_by_hand(eras: Path) -> None:
    assert main(["merge", str(_merge(eras, "chi")), "--result-dir", str(eras / "res")]) == 0
    out = eras / "res" / "merged" / "chi"
    chi2 = read_csv(out / "chi2.csv")
    for wp in ("nominal", "tight"):
        a, b = _tables(eras, "era_a", wp), _tables(eras, "era_b", wp)
        mine = [r for r in chi2 if r["working_point"] == wp]
        total = 0.0
        for ra, rb, r in zip(a, b, mine, strict=False):
            v = np.array([ra["scale_factor"], rb["scale_factor"]])
            s = np.array([ra["err_down"] + ra["err_up"], rb["err_down"] + rb["err_up"]]) / 2
            expect = (v[0] - v[1]) ** 2 / (s[0] ** 2 + s[1] ** 2)  # two eras: χ² of their difference
            assert r["chi2"] == pytest.approx(expect, rel=1e-10)
            assert r["pvalue"] == pytest.approx(math.erfc(math.sqrt(expect / 2)), rel=1e-9)  # 1 dof
            total += expect
        last = mine[-1]
        assert (last["bin"], last["ndof"]) == ("total", len(a))
        assert last["chi2"] == pytest.approx(total, rel=1e-10)
        if len(a) == 2:  # 2 dof: p = exp(−χ²/2)
            assert last["pvalue"] == pytest.approx(math.exp(-total / 2), rel=1e-9)
    report = (out / "report.md").read_text()
    assert "Consistency: tight" in report and "plots/merge_tight.png" in report
    assert (out / "plots" / "merge_nominal.png").stat().st_size > 1000
    assert "<html" in (out / "report.html").read_text()


def test_run_axis(eras: Path) -> None:
    assert main(["merge", str(_merge(eras, "runs", axis="run")), "--result-dir", str(eras / "res")]) == 0
    c = correctionlib.CorrectionSet.from_file(str(eras / "res" / "merged" / "runs" / "corrections.json"))["runs"]
    assert [i.name for i in c.inputs][:2] == ["run", "working_point"]
    a, b = _tables(eras, "era_a", "tight"), _tables(eras, "era_b", "tight")
    p, eta = _centres(a)[0]
    assert c.evaluate(100, "tight", p, eta, "nominal") == pytest.approx(a[0]["scale_factor"], rel=1e-12)
    assert c.evaluate(199, "tight", p, eta, "nominal") == pytest.approx(a[0]["scale_factor"], rel=1e-12)
    assert c.evaluate(250, "tight", p, eta, "nominal") == pytest.approx(b[0]["scale_factor"], rel=1e-12)
    for run in (220, 99, 300):  # in the gap between the eras, before the first, after the last: errors
        with pytest.raises(Exception):  # noqa: B017 - correctionlib raises RuntimeError or IndexError
            c.evaluate(run, "tight", p, eta, "nominal")


@pytest.mark.parametrize(("change", "message"), [
    ({"eras": [{"era": 2022, "result": "res/era_a", "lumi": 30}, {"era": 2024, "result": "res/era_c", "lumi": 5}]},
     r"eras\[1\].result: binning of .*era_c differs from eras\[0\]'s"),
    ({"working_points": ["nominal", "tigth"]}, r"working_points: 'tigth' is not a working point .*did you mean 'tight'"),
    ({"axis": "run", "eras": [{"era": 1, "result": "res/era_a", "lumi": 1, "run_range": [1, 10]},
                              {"era": 2, "result": "res/era_b", "lumi": 1, "run_range": [5, 20]}]},
     r"eras\[1\].run_range: \[5, 20\] overlaps \[1, 10\]"),
    ({"axis": "run", "eras": [{"era": 1, "result": "res/era_a", "lumi": 1},
                              {"era": 2, "result": "res/era_b", "lumi": 1}]}, r"eras\[0\].run_range: needed with axis: run"),
    ({"eras": [{"era": 1, "result": "res/nothing", "lumi": 1}, {"era": 2, "result": "res/era_b", "lumi": 1}]},
     r"eras\[0\].result: .*nothing holds no published scale_factors.csv"),
    ({"eras": [{"era": 1, "result": "res/era_a", "lumi": 1}, {"era": 2, "result": "quick/era_a", "lumi": 1}]},
     r"eras\[1\].result: quick/era_a holds the results of a quick try"),
    ({"eras": [{"era": 1, "result": "res/era_a", "lumi": 0}, {"era": 2, "result": "res/era_b", "lumi": 1}]},
     r"eras\[0\].lumi: "),
    ({"axes": "run"}, r"axes: unknown key \(did you mean 'axis'\?\)"),
    ({"axis": "runs"}, r"axis: Input should be 'era' or 'run'"),
    ({"eras": [{"era": 1, "result": "res/era_a", "lumi": 1}, {"era": 1, "result": "res/era_b", "lumi": 1}]},
     r"eras\[1\].era: '1' given twice"),
    ({"eras": [{"era": 1, "result": "res/era_a", "config": "era_a.yaml", "lumi": 1},
               {"era": 2, "result": "res/era_b", "lumi": 1}]}, r"eras\[0\]: .*give either result .* or config"),
    ({"eras": [{"era": 1, "lumi": 1}, {"era": 2, "result": "res/era_b", "lumi": 1}]}, r"eras\[0\]: .*either result"),
    ({"eras": [{"era": 1, "config": "nothing.yaml", "lumi": 1}, {"era": 2, "result": "res/era_b", "lumi": 1}]},
     r"eras\[0\].config: .*nothing.yaml: config file not found"),
    ({"eras": [{"era": 1, "config": "era_c.yaml", "lumi": 1}, {"era": 2, "result": "res/era_b", "lumi": 1}]},
     r"eras\[1\].result: binning of res/era_b differs from eras\[0\]'s"),
])
def test_bad_merge_configs_are_one_line_errors(eras: Path, capsys: pytest.CaptureFixture[str], change: dict,
                                               message: str) -> None:
    path = _merge(eras, "bad")
    cfg = yaml.safe_load(path.read_text()) | change
    path.write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(path), "--result-dir", str(eras / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml: " in err
    import re

    assert re.search(message, err), err
