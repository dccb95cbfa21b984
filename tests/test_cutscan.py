"""Cut scans: several working points in one run share tuple preparation and equal separate runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from calibflow.tables.rows import read_csv
from tasks.cli import main

from .conftest import small_demo_dict

WPS = {"loose": "probe_score > 0.3", "tight": "probe_score > 0.7"}


def _run(tmp: Path, d: dict) -> Path:
    path = tmp / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["run", str(path), "--workers", "2", "--result-dir", str(tmp / "res")]) == 0
    return tmp / "res" / d["name"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = small_demo_dict()
    d["name"] = "scan"
    d["working_points"] = WPS
    d["roc"] = {"signal": "data", "background": "mc"}
    return _run(tmp_path_factory.mktemp("scan"), d)


def test_scan_prepares_each_file_once(scan: Path) -> None:
    assert len(list((scan / "prep").rglob("*.h5"))) == 3


@pytest.mark.parametrize("wp", sorted(WPS))
def test_cut_scan_equals_single_cut_run(scan: Path, tmp_path: Path, wp: str) -> None:
    d = small_demo_dict()
    d["name"] = f"single_{wp}"
    d["pass"] = WPS[wp]
    single = _run(tmp_path, d)
    a = read_csv(scan / "wp" / wp / "efficiencies.csv")
    b = read_csv(single / "efficiencies.csv")
    assert len(a) == len(b) == 12
    for ra, rb in zip(a, b, strict=True):
        assert (ra["sample"], ra["bin"]) == (rb["sample"], rb["bin"])
        for k in ("efficiency", "err_down", "err_up", "n_pass", "n_fail"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-9, abs=1e-12), (wp, k)


def test_working_points_are_ordered(scan: Path) -> None:
    loose = {(r["sample"], r["bin"]): r["efficiency"] for r in read_csv(scan / "wp" / "loose" / "efficiencies.csv")}
    tight = {(r["sample"], r["bin"]): r["efficiency"] for r in read_csv(scan / "wp" / "tight" / "efficiencies.csv")}
    assert all(tight[k] < loose[k] for k in loose)


def test_roc_rows_per_bin_and_inclusive(scan: Path) -> None:
    roc = read_csv(scan / "roc.csv")
    per_bin = [r for r in roc if r["bin"] != "inclusive"]
    inclusive = [r for r in roc if r["bin"] == "inclusive"]
    assert len(per_bin) == 2 * 6 and len(inclusive) == 2
    eff = {(r["sample"], r["bin"]): r for r in read_csv(scan / "wp" / "tight" / "efficiencies.csv")}
    for r in (r for r in per_bin if r["working_point"] == "tight"):
        assert r["eff_signal"] == eff[("data", r["bin"])]["efficiency"]
        assert r["eff_background"] == eff[("mc", r["bin"])]["efficiency"]
    # the inclusive efficiency lies within the range of the per-bin ones
    for wp in WPS:
        inc = next(r for r in inclusive if r["working_point"] == wp)
        vals = [r["eff_background"] for r in per_bin if r["working_point"] == wp]
        assert min(vals) <= inc["eff_background"] <= max(vals)
    assert (scan / "plots" / "roc.png").stat().st_size > 0
