"""Recipe ``belle2_pid_resample`` end to end at CI size through ``calibflow kde``: toys, templates of kaons and
pions from sWeighted data and truth-matched simulation, resampled and transformed simulation closing on the data
in a cut scan at 5 thresholds, and the report page with the closure tables and figures."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml

from calibflow.config import load_yaml
from tasks.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "task_configs" / "kde" / "belle2_pid_resample.yaml"


def test_recipe_closes_at_ci_size(tmp_path: Path) -> None:
    cfg = load_yaml(RECIPE)
    cfg["toys"]["data"].update(candidates=120_000)
    cfg["toys"]["mc"].update(candidates=80_000)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cfg))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        # one worker: the tasks run in this process. Forked workers would deadlock here after earlier tests ran the
        # OpenMP-parallel KDE kernels in this process (GNU OpenMP is not fork-safe); calibflow kde's own process
        # never runs them, so its workers are safe
        assert main(["kde", str(tmp_path / "recipe.yaml"), "--result-dir", str(tmp_path / "out"), "--workers", "1"]) == 0
    out = tmp_path / "out" / "belle2_pid_resample"
    lines = stdout.getvalue().splitlines()
    for species in ("kaon", "pion"):
        result = json.loads((out / "closure" / species / "closure.json").read_text())
        s = result["summary"]
        assert s["resampled"]["pulls"] == 20 and s["resampled"]["max_abs"] < 3.0, s
        assert s["transformed"]["max_abs"] < 3.0 and s["transformed"]["mean_square"] < 2.0, s
        assert s["simulation"]["max_abs"] > 5.0, s  # the simulation alone does not close
        assert result["rank_correlation_transformed"] > 0.95
        for png in ("closure.png", "densities.png"):
            assert (out / "closure" / species / png).stat().st_size > 10_000
        for kind in ("data", "mc"):
            assert (out / "kde" / f"{species}_{kind}.h5").exists()
        assert any(ln.startswith(f"closure {species}: closes: max |pull| resampled") for ln in lines), lines
    page = (out / "report.html").read_text()
    for sid in ("summary", "closure", "templates", "config", "outputs"):
        assert f'<section id="{sid}">' in page
    for species in ("kaon", "pion"):
        assert f'<img src="closure/{species}/closure.png"' in page
        assert f'<img src="closure/{species}/densities.png"' in page
        assert f'href="closure/{species}/closure.csv"' in page
    assert "rank correlation with simulated kaonID" in page
    md = (out / "report.md").read_text()
    assert "![kaon: efficiency of kaonID > threshold" in md and "## Templates" in md
    manifest = json.loads((out / "manifest.json").read_text())
    assert all((out / f).is_file() for f in manifest["files"])
