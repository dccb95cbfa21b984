"""Every per-bin method through the task graph on the small toy: binned and unbinned fits, sWeights,
sWeighted counting, counting intervals; all close on the toy truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibflow.plan import Plan
from calibflow.tables.rows import read_csv
from tasks import ExportTables
from tasks.runner import build

from .conftest import small_demo_dict


def _run(d: dict, write_config, tmp_path: Path) -> Path:
    plan = Plan.create(write_config(d, f"{d['name']}.yaml"), tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=2)
    assert report.ok, report.failed
    return Path(plan.workdir)


def _data_pulls(out: Path) -> np.ndarray:
    return np.array([r["pull"] for r in read_csv(out / "closure.csv")
                     if r["quantity"] == "efficiency" and r["sample"] == "data"])


@pytest.mark.parametrize("method", ["unbinned", "sweights"])
def test_method_closes_on_toy(method: str, write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    d["name"] = f"m_{method}"
    if method == "unbinned":
        d["fit"]["binned"] = False
    else:
        d["samples"]["data"]["method"] = "sweights"
    out = _run(d, write_config, tmp_path)
    eff = [r for r in read_csv(out / "efficiencies.csv") if r["sample"] == "data"]
    assert len(eff) == 6 and all(r["method"] == ("fit" if method == "unbinned" else "sweights") for r in eff)
    assert all(r["fit_status"] == "ok" for r in eff), [r["fit_status"] for r in eff]
    pulls = _data_pulls(out)
    assert np.all(np.abs(pulls) < 3.5), pulls


def test_unbinned_and_binned_agree(write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    d["name"] = "binned"
    binned = {r["bin"]: r for r in read_csv(_run(d, write_config, tmp_path) / "efficiencies.csv") if r["sample"] == "data"}
    d["name"], d["fit"]["binned"] = "unbinned", False
    unbinned = {r["bin"]: r for r in read_csv(_run(d, write_config, tmp_path) / "efficiencies.csv")
                if r["sample"] == "data"}
    for b, r in binned.items():
        # same data: the two estimates differ by much less than their statistical error
        assert abs(r["efficiency"] - unbinned[b]["efficiency"]) < 0.3 * r["err_up"], b


def test_sweighted_column_and_intervals(write_config, tmp_path: Path) -> None:
    """`sweighted` on a constant weight column equals plain counting; Wilson interval is used when asked."""
    d = small_demo_dict()
    d["name"] = "sweighted"
    d["samples"]["mc"]["interval"] = "wilson"
    # a second simulation sample counted through the sWeight path, with unit weights
    d["samples"]["data"] = {"role": "mc", "method": "sweighted", "weight": "probe_TRUEID_match * 0 + 1",
                            "cut": "probe_TRUEID_match == 1"}
    d["toy"]["samples"]["data"] = {"candidates": 30000, "files": 1}
    d["reference"] = "mc"
    out = _run(d, write_config, tmp_path)
    from scipy.stats import binomtest

    rows = read_csv(out / "efficiencies.csv")
    for r in rows:
        k, n = round(r["n_pass"]), round(r["n_pass"] + r["n_fail"])
        assert r["efficiency"] == pytest.approx(k / n, rel=1e-12)
        if r["sample"] == "data":  # PIDCalib variance with unit weights = binomial variance
            assert r["err_up"] == pytest.approx(np.sqrt(k / n * (1 - k / n) / n), rel=1e-9)
        else:
            ci = binomtest(k, n).proportion_ci(confidence_level=0.682689492137086, method="wilson")
            assert r["efficiency"] - r["err_down"] == pytest.approx(ci.low, rel=1e-9)
            assert r["efficiency"] + r["err_up"] == pytest.approx(ci.high, rel=1e-9)


def _truth_signal(out: Path, sample: str) -> np.ndarray:
    """Per bin the toy's true signal candidates in the mass range (the histograms' closure truth)."""
    import h5py

    (path,) = (out / "hists").glob(f"{sample}-*[0-9a-f].h5")
    with h5py.File(path) as h5:
        return h5["truth_n"][...]


def test_yield_only_calibration_through_the_graph(write_config, tmp_path: Path) -> None:
    """``method: yield`` with ``pass`` left out: a signal yield per bin with its error (close to the toy's true
    signal count), a systematic on the yield, no efficiency and no scale factor; every export copes."""
    import json

    d = small_demo_dict()
    d["name"] = "yields"
    del d["pass"]
    for s in d["samples"].values():
        s["method"] = "yield"
    d["systematics"] = {"sources": [{"name": "sigmodel", "vary": {"fit": {"signal": "gauss",
                                                                           "parameters": {"n": None}}}}]}
    out = _run(d, write_config, tmp_path)
    rows = read_csv(out / "efficiencies.csv")
    assert len(rows) == 12 and {r["method"] for r in rows} == {"yield"}
    assert all(r["fit_status"] == "ok" for r in rows), [r["fit_status"] for r in rows]
    for r in rows:
        assert all(np.isnan(r[k]) for k in ("efficiency", "err_down", "err_up", "n_pass", "n_fail")), r
        assert r["n_sig"] > 300 and 0 < r["n_sig_err"] < 0.1 * r["n_sig"]
        # the systematic columns are the yield's
        assert r["sigmodelUp"] - r["n_sig"] == pytest.approx(r["n_sig"] - r["sigmodelDown"])
        assert r["total_up"] == pytest.approx(np.hypot(r["n_sig_err"], r["syst"]))
    data = sorted((r for r in rows if r["sample"] == "data"), key=lambda r: r["bin"])
    truth = _truth_signal(out, "data")
    pulls = np.array([(r["n_sig"] - t) / r["n_sig_err"] for r, t in zip(data, truth, strict=True)])
    assert np.all(np.abs(pulls) < 3), pulls  # fitted yield vs true signal count (a narrower spread: see docs)
    assert not (out / "scale_factors.csv").exists() and not (out / "corrections.json").exists()
    assert not (out / "closure.csv").exists()  # the closure table is of efficiencies
    master = json.loads((out / "calibration.json").read_text())
    assert master["tables"]["efficiencies"][0]["n_sig"] == rows[0]["n_sig"]
    assert "yield_data" in (out / "corrections_root.txt").read_text()
    assert "## data signal yield" in (out / "tables.md").read_text()
    assert (out / "plots" / "yield_map_data.png").exists() and not list((out / "plots").glob("efficiency_*"))
    report = (out / "report.md").read_text()
    assert "signal yield data:" in report and "every sample measures a signal yield" in report


def test_sweighted_needs_no_mass_section(write_config, tmp_path: Path) -> None:
    """``sweighted`` fits nothing: without a ``mass`` section every candidate of a bin counts (no mass window),
    here with unit weights: k/n of the prepared candidates, with the binomial error."""
    from calibflow.io.store import read_columns
    from calibflow.prep.spec import PASS, WEIGHT

    d = small_demo_dict()
    d["name"] = "no_mass"
    del d["mass"], d["fit"], d["closure"]
    d["samples"]["data"].update(method="sweighted", weight="probe_P * 0 + 1")
    out = _run(d, write_config, tmp_path)
    rows = {r["bin"]: r for r in read_csv(out / "efficiencies.csv") if r["sample"] == "data"}
    cols = [read_columns(p) for p in sorted((out / "prep" / "data").glob("*.h5"))]
    p, eta, passed = (np.concatenate([c[k] for c in cols]) for k in ("p", "eta", PASS))
    assert all(np.all(c[WEIGHT] == 1.0) for c in cols)
    for r in rows.values():
        sel = (p >= r["p_lo"]) & (p < r["p_hi"]) & (eta >= r["eta_lo"]) & (eta < r["eta_hi"])
        k, n = int(np.sum(passed[sel])), int(np.sum(sel))
        assert (r["n_pass"], r["n_pass"] + r["n_fail"]) == (k, n) and r["fit_status"] == "ok"
        assert r["err_up"] == pytest.approx(np.sqrt(k / n * (1 - k / n) / n), rel=1e-9)
