"""The keyed KDE template task: builds HDF5 and ROOT files named by content, reuses them, rebuilds on change."""

from __future__ import annotations

import warnings
from pathlib import Path

import luigi
import numpy as np
import uproot
import yaml

from calibflow.io.root import write_ttree
from calibflow.kde.template import read_templates
from calibflow.toys.sweighted import generate
from tasks.kde import BuildTemplates


def _config(tmp_path: Path, bins: int) -> Path:
    cfg = {"aliases": {"pidK": "K_pid"}, "templates": {"kaon_data": {
        "files": ["data_*.root"], "tree": "variables",
        "spec": {"pid": "pid", "axes": {"pid": {"expr": "pidK", "lo": 0, "hi": 1, "bins": bins, "bandwidth": 0.03},
                          "p": {"expr": "K_p", "lo": 0.5, "hi": 5, "bins": 15}},
                 "weight": "sw", "alt_weight": "sw_alt"}}}}
    (tmp_path / "kde.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "kde.yaml"


def _build(cfg: Path, out: Path) -> BuildTemplates:
    task = BuildTemplates(kde_config=str(cfg), name="kaon_data", out_dir=str(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert luigi.build([task], local_scheduler=True, workers=1, log_level="WARNING")
    return task


def test_template_task_is_keyed_by_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(2):
        d = generate(20_000, True, rng)
        write_ttree(tmp_path / f"data_{i}.root", {"K_p": d["p"], "K_pid": d["pid"], "sw": d["sw"],
                                                  "sw_alt": d["sw_alt"]}, "variables")
    task = _build(_config(tmp_path, 50), tmp_path / "out")
    paths = task.paths()
    templates, meta = read_templates(paths["latest"])
    assert meta["key"] == task.key() and len(meta["files"]) == 2
    assert set(templates) == {"nominal", "bandwidthDown", "bandwidthUp", "sweightsUp", "sweightsDown"}
    assert templates["nominal"].info["candidates"] == 40_000
    assert uproot.open(paths["root"])["nominal"].values().shape == (50, 15)
    assert task.complete()
    key = task.key()
    changed = _build(_config(tmp_path, 60), tmp_path / "out")  # a new spec: a new key, a new file
    assert changed.key() != key and Path(changed.paths()["h5"]).exists() and Path(paths["h5"]).exists()
    assert read_templates(paths["latest"])[1]["key"] == changed.key()
    _config(tmp_path, 50)  # back: the keyed file exists, but the fixed-name copy is of the other key
    assert task.key() == key and not task.complete()
