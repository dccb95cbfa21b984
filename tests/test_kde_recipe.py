"""Recipe ``belle2_pid_resample`` end to end at CI size: toys, templates of kaons and pions from sWeighted
data and truth-matched simulation, resampled and transformed simulation closing on the data in a cut scan."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from calibflow.config import load_yaml
from tasks.kde import KdeClosure, main

RECIPE = Path(__file__).resolve().parents[1] / "task_configs" / "kde" / "belle2_pid_resample.yaml"


def test_recipe_closes_at_ci_size(tmp_path: Path) -> None:
    cfg = load_yaml(RECIPE)
    cfg["toys"]["data"].update(candidates=120_000)
    cfg["toys"]["mc"].update(candidates=80_000)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main([str(tmp_path / "recipe.yaml"), "--output-dir", str(out)]) == 0
    for species in ("kaon", "pion"):
        result = json.loads((out / "closure" / species / "closure.json").read_text())
        s = result["summary"]
        assert s["resampled"]["pulls"] == 20 and s["resampled"]["max_abs"] < 3.0, s
        assert s["transformed"]["max_abs"] < 3.0 and s["transformed"]["mean_square"] < 2.0, s
        assert s["simulation"]["max_abs"] > 5.0, s  # the simulation alone does not close
        assert result["rank_correlation_transformed"] > 0.95
        assert (out / "closure" / species / "closure.png").stat().st_size > 0
        for kind in ("data", "mc"):
            assert (out / "kde" / f"{species}_{kind}.h5").exists()
    assert KdeClosure(kde_config=str(tmp_path / "recipe.yaml"), name="kaon", out_dir=str(out)).complete()
