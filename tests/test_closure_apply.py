"""Closure after applying the corrections (config ``closure_after_apply``, issue 20 item 7): the simulation reweighted
by the per-candidate scale factor of corrections.json reproduces data per bin; checked against the tables by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from calibflow.export.report import pull_stats
from calibflow.tables.rows import read_csv
from tasks.cli import main
from tests.conftest import small_demo_dict, tiny_demo_dict


def _run(tmp: Path, d: dict[str, Any]) -> Path:
    path = tmp / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(path), "--workers", "2", "--quiet", "--result-dir", str(tmp / "res")]) == 0
    return tmp / "res" / d["name"]


@pytest.fixture(scope="module")
def independent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo toy in 6 × 4 bins with a second, independent and weighted simulation sample as the closure
    sample."""
    d = small_demo_dict()
    d["name"] = "closure_apply"
    d["toy"]["samples"]["data"]["candidates"] = 60000
    d["toy"]["samples"]["mc_closure"] = {"candidates": 30000, "files": 1}
    d["samples"]["mc_closure"] = {**d["samples"]["mc"], "weight": "0.5 + 0.25 * probe_ETA"}  # weighted
    d["reference"] = "mc"
    d["binning"]["variables"][0]["edges"] = [2, 4, 6, 10, 15, 30, 200]
    d["binning"]["variables"][1]["edges"] = [2.0, 3.0, 3.5, 4.0, 5.0]
    d["closure_after_apply"] = {"sample": "mc_closure"}
    d["outputs"] = {"correctionlib": True, "plots": False}
    return _run(tmp_path_factory.mktemp("closure_apply"), d)


def test_corrected_simulation_by_hand_and_pulls(independent: Path) -> None:
    rows = read_csv(independent / "closure_after_apply.csv")
    eff = {(r["sample"], r["bin"]): r for r in read_csv(independent / "efficiencies.csv")}
    sf = {r["bin"]: r for r in read_csv(independent / "scale_factors.csv")}
    assert len(rows) == len(sf) == 24
    for r in rows:
        k, s, e = r["bin"], sf[r["bin"]], eff[("mc_closure", r["bin"])]
        # a constant scale factor per bin: Σ_pass SF / N = SF · ε' (ε' the closure sample's counted efficiency)
        assert r["eff_mc"] == pytest.approx(e["efficiency"], rel=1e-12)
        assert r["eff_mc_corrected"] == pytest.approx(s["scale_factor"] * e["efficiency"], rel=1e-10)
        assert r["eff_data"] == pytest.approx(eff[("data", k)]["efficiency"], rel=1e-12)
        # σ_corr² = Σ w²(pass·SF − ε_c)² / (Σw)² from the counts' Σw and √Σw² (all and passing) of the table
        n, p, c, f = e["n_sig"], e["efficiency"], r["eff_mc_corrected"], s["scale_factor"]
        sig_corr = math.sqrt(f * f * e["n_pass_err"] ** 2 - 2 * c * f * e["n_pass_err"] ** 2
                             + c * c * e["n_sig_err"] ** 2) / n
        stat_mc = p * 0.5 * (s["stat_mc_down"] + s["stat_mc_up"])
        assert r["eff_mc_corrected_err"] == pytest.approx(math.hypot(sig_corr, stat_mc), rel=1e-8)
        second = (p / eff[("mc", k)]["efficiency"] - 1) * r["eff_data_err"]
        pull = (r["eff_mc_corrected"] - r["eff_data"]) / math.hypot(r["eff_mc_corrected_err"], second)
        assert r["pull"] == pytest.approx(pull, rel=1e-10)
    weighted = [eff[("mc_closure", r["bin"])] for r in rows]
    assert all(abs(e["n_sig"] - e["n_sig_err"] ** 2) > 1 for e in weighted)  # Σw ≠ Σw²: the weights are used
    stats = pull_stats("closure", [r["pull"] for r in rows])
    assert stats.consistent, stats  # N(0, 1): the correction closes on an independent sample


def test_report_links_the_closure_after_apply(independent: Path) -> None:
    report = (independent / "report.md").read_text()
    assert "### After applying the corrections" in report
    assert "after applying: mc_closure corrected to data: pulls mean" in report
    assert "(closure_after_apply.csv)" in report and "![" in report and "plots/closure_after_apply.png" in report
    files = json.loads((independent / "manifest.json").read_text())["files"]
    assert {"closure_after_apply.csv", "plots/closure_after_apply.png"} <= set(files)
    assert (independent / "plots" / "closure_after_apply.png").stat().st_size > 1000


def test_reference_sample_itself_closes_exactly(tmp_path: Path) -> None:
    d = tiny_demo_dict()
    d["name"] = "closure_self"
    d["closure_after_apply"] = True
    out = _run(tmp_path, d)
    rows = read_csv(out / "closure_after_apply.csv")
    assert {r["sample"] for r in rows} == {"mc"}
    for r in rows:
        assert r["eff_mc_corrected"] == pytest.approx(r["eff_data"], abs=1e-12)
        assert abs(r["pull"]) < 1e-9
    assert "mc corrected to data: exact" in (out / "report.md").read_text()
    del d["closure_after_apply"]  # the same tables exported again without it: no table, no report block
    _run(tmp_path, d)
    assert "closure_after_apply.csv" not in json.loads((out / "manifest.json").read_text())["files"]
    assert "After applying" not in (out / "report.md").read_text()


def test_unknown_closure_sample_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_demo_dict()
    d["closure_after_apply"] = {"sample": "mcc"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["run", str(path), "--quiet", "--result-dir", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "closure_after_apply.sample: 'mcc' is not a simulation sample (did you mean 'mc'?)" in err
