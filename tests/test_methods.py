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
