"""The KDE tasks and ``calibflow kde``: keyed template files (reused, rebuilt on change), the common runner's
summary and exit codes (0, 1 with one line per failed task, 2 with one line for a bad config), the outputs
rebuilt when removed."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from calibflow.io.root import write_ttree
from calibflow.kde.plan import KdePlan
from calibflow.kde.template import read_templates
from calibflow.toys.sweighted import generate
from tasks.cli import main
from tasks.kde import BuildTemplates
from tasks.runner import build


def _config(tmp_path: Path, bins: int, pid: str = "pidK") -> Path:
    cfg = {"name": "kaons", "aliases": {"pidK": "K_pid"}, "templates": {"kaon_data": {
        "files": ["data_*.root"], "tree": "variables",
        "spec": {"pid": "pid", "axes": {"pid": {"expr": pid, "lo": 0, "hi": 1, "bins": bins, "bandwidth": 0.03},
                          "p": {"expr": "K_p", "lo": 0.5, "hi": 5, "bins": 15}},
                 "weight": "sw", "alt_weight": "sw_alt"}}}}
    (tmp_path / "kde.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "kde.yaml"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    for i in range(2):
        d = generate(20_000, True, rng)
        write_ttree(tmp_path / f"data_{i}.root", {"K_p": d["p"], "K_pid": d["pid"], "sw": d["sw"],
                                                  "sw_alt": d["sw_alt"]}, "variables")
    return tmp_path


def _build(cfg: Path, out: Path) -> BuildTemplates:
    plan = KdePlan.create(cfg, out)
    task = BuildTemplates(config=plan.config_path, result_dir=plan.result_dir, name="kaon_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert build(plan, [task]).ok  # type: ignore[arg-type]
    return task


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_template_task_is_keyed_by_content(inputs: Path) -> None:
    tmp_path = inputs
    task = _build(_config(tmp_path, 50), tmp_path / "out")
    paths = task.plan.template_paths("kaon_data")
    assert paths.h5 == str(tmp_path / "out" / "kaons" / "kde" / f"kaon_data-{task.key()}.h5")
    templates, meta = read_templates(paths.latest)
    assert meta["key"] == task.key() and len(meta["files"]) == 2
    assert set(templates) == {"nominal", "bandwidthDown", "bandwidthUp", "sweightsUp", "sweightsDown"}
    assert templates["nominal"].info["candidates"] == 40_000
    assert uproot.open(paths.root)["nominal"].values().shape == (50, 15)
    assert task.complete()
    key = task.key()
    changed = _build(_config(tmp_path, 60), tmp_path / "out")  # a new spec: a new key, a new file
    assert changed.key() != key and Path(changed.plan.template_paths("kaon_data").h5).exists()
    assert Path(paths.h5).exists()
    assert read_templates(paths.latest)[1]["key"] == changed.key()
    _config(tmp_path, 50)  # back: the keyed file exists, but the fixed-name copy is of the other key
    assert task.key() == key and not task.complete()


def test_calibflow_kde_runs_reuses_and_rebuilds(inputs: Path) -> None:
    cfg = _config(inputs, 50)
    out = inputs / "out"
    code, stdout, err = run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")
    assert code == 0, err
    assert "kaons: 2 task(s) run, 0 reused, 0 failed (1 BuildTemplates, 1 KdeReport)" in stdout
    workdir = out / "kaons"
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["files"][:2] == ["report.html", "report.md"] and manifest["closure"] == []
    assert all((workdir / f).is_file() for f in manifest["files"])
    page = (workdir / "report.html").read_text()
    assert '<section id="templates">' in page and "no closure in the config" in page
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")
    assert code == 0 and "0 task(s) run, 1 reused" in stdout  # all done: the report is found complete
    (workdir / manifest["files"][2]).unlink()  # a template removed: made again, then the report
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")
    assert code == 0 and "2 task(s) run" in stdout and (workdir / manifest["files"][2]).is_file()


def test_calibflow_kde_exit_codes(inputs: Path) -> None:
    out = str(inputs / "out")
    cfg = _config(inputs, 50, pid="K_nosuch")  # parses, but the tuple has no such branch: the task fails
    code, stdout, err = run_cli("kde", str(cfg), "--result-dir", out, "--quiet")
    assert code == 1 and "1 failed" in stdout
    failed = [ln for ln in err.splitlines() if ln.startswith("  FAILED")]
    assert len(failed) == 1 and failed[0].startswith("  FAILED BuildTemplates(name=kaon_data): "), err
    assert "K_nosuch" in failed[0] and "logs/<family>/" in err
    cfg.write_text(cfg.read_text().replace("expr: K_nosuch", "expr: K_nosuch +"))  # does not parse
    code, stdout, err = run_cli("kde", str(cfg), "--result-dir", out)
    assert code == 2 and not stdout and len(err.splitlines()) == 1
    assert err.startswith(f"calibflow: error: {cfg}: templates.kaon_data.spec.axes.pid.expr: "), err
    cfg.write_text(cfg.read_text().replace("data_*.root", "nothing_*.root"))
    code, _, err = run_cli("kde", str(cfg), "--result-dir", out)
    assert code == 2 and "nothing matches 'nothing_*.root'" in err and len(err.splitlines()) == 1
    code, _, err = run_cli("kde", str(inputs / "missing.yaml"), "--result-dir", out)
    assert code == 2 and len(err.splitlines()) == 1 and "missing.yaml" in err
