"""Provenance of published results (issue 15, item 9): the exact config is published with its hash and the
calibflow version; a changed description or label re-exports without refitting; a second config with the same
``name`` stops with exit 2 unless ``--overwrite``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from calibflow import __version__
from calibflow.plan import Plan
from tasks import ExportTables
from tasks.cli import main
from tasks.runner import RunReport, build

from .conftest import tiny_demo_dict


def run(config: Path, result_dir: Path) -> RunReport:
    """Build the whole graph of ``config`` with one worker; the run must succeed."""
    plan = Plan.create(config, result_dir)
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1)
    assert report.ok, report.failed
    return report


def workdir(result_dir: Path) -> Path:
    """The published folder of the tiny calibration (its ``name``) under ``result_dir``."""
    return result_dir / tiny_demo_dict()["name"]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny calibration run once: (config, result folder)."""
    tmp = tmp_path_factory.mktemp("provenance")
    cfg = tmp / "tiny.yaml"
    cfg.write_text("# the exact bytes are published, comments included\n" + yaml.safe_dump(tiny_demo_dict()))
    run(cfg, tmp / "res")
    return cfg, tmp / "res"


def test_published_files_record_the_exact_config_and_version(published: tuple[Path, Path]) -> None:
    cfg, res = published
    work = workdir(res)
    assert (work / "config.yaml").read_bytes() == cfg.read_bytes()
    meta = json.loads((work / "calibration.json").read_text())["metadata"]
    assert meta["config_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert meta["config_path"] == str(cfg.resolve())
    assert meta["calibflow_version"] == __version__
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["config"] == str(cfg.resolve())
    assert "config.yaml" in manifest["files"]


@pytest.mark.parametrize("change", ["description", "labels", "comment"])
def test_presentation_changes_re_export_only(change: str, published: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, res = published
    original = cfg.read_text()
    d = yaml.safe_load(original)
    if change == "description":
        d["description"] = "a new description"
    elif change == "labels":
        d["binning"]["variables"][0].update(label="$p$", unit="GeV")
        d["mass"].update(label="$m(\\mu\\mu)$", unit="MeV")
    try:
        cfg.write_text(original + "# edited\n" if change == "comment" else yaml.safe_dump(d))
        report = run(cfg, res)
        assert dict(report.tasks_ran) == {"ExportTables": 1}, "only the exports run again"
        meta = json.loads((workdir(res) / "calibration.json").read_text())["metadata"]
        assert meta["config_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
        if change == "description":
            assert meta["config"]["description"] == "a new description"
        if change == "labels":
            assert meta["config"]["binning"]["variables"][0]["unit"] == "GeV"
    finally:
        cfg.write_text(original)
        run(cfg, res)  # the module's published state again


def test_same_name_from_another_config_stops_with_exit_2(published: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg, res = published
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text())
    before = (workdir(res) / "manifest.json").read_text()
    assert main(["run", str(other), "--workers", "1", "--result-dir", str(res), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(other.resolve()) in err and str(cfg.resolve()) in err and "--overwrite" in err
    assert (workdir(res) / "manifest.json").read_text() == before, "nothing was touched"


def test_overwrite_replaces_another_configs_results(published: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, res = published
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text())
    try:
        assert main(["run", str(other), "--workers", "1", "--result-dir", str(res), "--quiet", "--overwrite"]) == 0
        manifest = json.loads((workdir(res) / "manifest.json").read_text())
        assert manifest["config"] == str(other.resolve())
        meta = json.loads((workdir(res) / "calibration.json").read_text())["metadata"]
        assert meta["config_path"] == str(other.resolve())
    finally:
        assert main(["run", str(cfg), "--workers", "1", "--result-dir", str(res), "--quiet", "--overwrite"]) == 0
