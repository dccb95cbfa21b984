"""Binning in the task graph: re-binning refits only changed bins; data-driven optimised binnings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibflow.plan import Plan
from calibflow.tables.rows import read_csv
from tasks import ExportTables
from tasks.runner import build

from .conftest import small_demo_dict


def _build(cfg: Path, res: Path, workers: int = 2):
    plan = Plan.create(cfg, res)
    return plan, build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=workers)


def test_rebinning_refits_only_changed_bins(write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    cfg = write_config(d)
    _, first = _build(cfg, tmp_path / "res")
    assert first.ok and first.ran["FitBin"] == 12
    d["binning"]["variables"][0]["edges"] = [2, 6, 10, 15, 200]  # split p in [6, 15) only
    write_config(d)
    _, second = _build(cfg, tmp_path / "res")
    assert second.ok, second.failed
    # new bins: p in [6, 10) and [10, 15), times 2 eta bins, times 2 samples; the other 8 fits are reused
    assert second.ran["FitBin"] == 2 * 2 * 2
    assert second.ran["PrepareTuple"] == 0
    assert len(read_csv(tmp_path / "res" / "small_demo" / "efficiencies.csv")) == 16


def _optimised(name: str, min_count: float) -> dict:
    d = small_demo_dict()
    d["name"] = name
    d["binning"] = {
        "variables": [{"name": "p", "range": [2, 200], "equal_population": 8},
                      {"name": "eta", "range": [2.0, 5.0], "uniform": 6}],
        "optimise": {"min_count": min_count},
    }
    return d


def test_optimised_binning_meets_the_minimum_in_every_category(write_config, tmp_path: Path) -> None:
    plan, report = _build(write_config(_optimised("opt", 150)), tmp_path / "res")
    assert report.ok, report.failed
    scheme = plan.load_scheme()
    assert 1 < len(scheme) < 48
    eff = read_csv(Path(plan.workdir) / "efficiencies.csv")
    assert len(eff) == 2 * len(scheme)
    # every bin of every sample has at least min_count passing and failing candidates
    for sample in ("data", "mc"):
        from calibflow.io.store import read_columns

        cols = [read_columns(plan.prep_path(sample, i)) for i in range(len(plan.input_files(sample)))]
        c = {k: np.concatenate([x[k] for x in cols]) for k in ("p", "eta", "_mass", "_pass")}
        idx = scheme.locate(c)
        rng = (c["_mass"] >= 2950) & (c["_mass"] < 3250)
        for flag in (c["_pass"], ~c["_pass"]):
            counts = np.bincount(idx[(idx >= 0) & rng & flag], minlength=len(scheme))
            assert counts.min() >= 150, (sample, counts)
    data = json.loads(Path(plan.binning_path()).read_text())
    assert data["version"] == 1 and len(data["bins"]) == len(scheme)
    assert Path(plan.binning_path()).with_suffix(".png").stat().st_size > 0


def test_impossible_minimum_fails_with_counts(write_config, tmp_path: Path) -> None:
    _, report = _build(write_config(_optimised("opt_fail", 1e7)), tmp_path / "res", workers=1)
    assert not report.ok
    (task_id, reason), = report.failed
    assert "MakeBinning" in task_id
    assert "1e+07" in reason or "10000000" in reason
    assert "data _pass fail" in reason


@pytest.mark.parametrize("rule", ["uniform", "log"])
def test_static_rules_need_no_data(rule: str, write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    d["binning"]["variables"][0] = {"name": "p", "range": [2, 200], rule: 3}
    plan = Plan.create(write_config(d), tmp_path / "res")
    scheme = plan.scheme()
    assert scheme is not None and len(scheme) == 6
    e = [b.bounds[0][1] for b in scheme.bins[::2]] + [200.0]
    expected = np.linspace(2, 200, 4) if rule == "uniform" else np.geomspace(2, 200, 4)
    np.testing.assert_allclose(e, expected)
