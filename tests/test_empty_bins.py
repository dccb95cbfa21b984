"""Empty bins in a fitted sample (issue 17, item 3): a cut that empties some or all bins, or a mass range
that holds no candidate, must neither crash a task (the flagged-fit figure once raised ``KeyError``) nor lose
what was computed: the fits are flagged ``empty_bin`` with a figure that says so, the correctionlib export
stops with one line naming the bins and the way out, and ``outputs.missing: unity`` publishes 1 ± 1 there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import correctionlib
import pytest

from calibflow.fit.plots import summary_line
from calibflow.tables.rows import read_csv

from .conftest import tiny_demo_dict
from .test_failed_runs import run_cli


def _config(write_config: Callable[[dict[str, Any], str], Path], name: str, **changes: Any) -> Path:
    d = tiny_demo_dict()
    d["name"] = name
    d["outputs"] = {"correctionlib": True, "root": True, "markdown": True, "latex": False, "plots": True,
                    "plot_formats": ["png"], "report": True, **changes.pop("outputs", {})}
    for key, value in changes.items():
        target = d
        *path, last = key.split(".")
        for k in path:
            target = target[k]
        target[last] = value
    return write_config(d, f"{name}.yaml")


def _fit_results(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "fits" / "data").glob("*.json"))]


def test_a_cut_that_empties_one_bin_is_flagged_and_named(tmp_path: Path, write_config) -> None:
    # p < 10 leaves the bin p in [10, 200) of the data without a candidate
    config = _config(write_config, "halfcut", **{"samples.data.cut": "probe_P < 10"})
    code, out, err = run_cli("run", str(config), "--result-dir", str(tmp_path / "res"), "--workers", "1", "--quiet")
    assert code == 1
    assert "no finite scale factor in 1 bin(s): bin 1 (p in [10, 200)" in out + err
    assert "outputs.missing: unity" in out + err and "Traceback" not in out + err
    assert "1 flagged (1 empty_bin)" in out
    workdir = tmp_path / "res" / "halfcut"
    statuses = sorted(r["status"] for r in _fit_results(workdir))
    assert statuses == ["empty_bin", "ok"]
    figures = sorted((workdir / "fits" / "data").glob("*.png"))
    assert len(figures) == 2 and all(f.stat().st_size > 10_000 for f in figures)  # drawn, not 0-byte
    # the figure of the empty bin says so instead of "ε = nan"
    empty = next(r for r in _fit_results(workdir) if r["status"] == "empty_bin")
    assert summary_line(empty) == "ε: no measurement (no candidates)"

    # the way out named by the error: 1 +- 1 in the empty bin, the measured bin as in the table
    config = _config(write_config, "halfcut", outputs={"missing": "unity"}, **{"samples.data.cut": "probe_P < 10"})
    code, out, err = run_cli("run", str(config), "--result-dir", str(tmp_path / "res"), "--workers", "1", "--quiet")
    assert code == 0, out + err
    assert "0 task(s) run" not in out and "FitBin" not in out.split("\n")[0]  # nothing refitted: only the export
    cset = correctionlib.CorrectionSet.from_file(str(workdir / "corrections.json"))
    corr = cset["halfcut"]
    assert "Bins without a measurement (1)" in corr.description
    assert [corr.evaluate(50.0, 3.0, s) for s in ("nominal", "up", "down", "statUp", "systDown")] == \
        [1.0, 2.0, 0.0, 2.0, 0.0]
    measured = next(r for r in read_csv(str(workdir / "scale_factors.csv")) if r["bin"] == 0)
    assert corr.evaluate(5.0, 3.0, "nominal") == pytest.approx(measured["scale_factor"], rel=1e-12)


@pytest.mark.parametrize("name, changes", [
    ("allcut", {"samples.data.cut": "probe_P < 0"}),  # a cut that removes everything
    ("emptyrange", {"mass.range": [100, 200]}),  # a mass window without any candidate (data and mc)
])
def test_every_bin_empty_fails_cleanly_and_reruns_nothing(tmp_path: Path, write_config, name: str,
                                                          changes: dict[str, Any]) -> None:
    config = _config(write_config, name, **changes)
    argv = ("run", str(config), "--result-dir", str(tmp_path / "res"), "--workers", "1", "--quiet")
    code, out, err = run_cli(*argv)
    assert code == 1 and "Traceback" not in out + err
    assert "no finite scale factor in 2 bin(s)" in out + err
    assert "0 ok, 2 flagged (2 empty_bin)" in out
    code, out, err = run_cli(*argv)  # the same failure at once: no bin is refitted ("one bin further")
    assert code == 1 and "FitBin" not in out.split("\n")[0]
