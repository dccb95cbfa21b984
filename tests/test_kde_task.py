"""The KDE tasks and ``calibflow kde``: keyed template files (reused, rebuilt on change), the common runner's
summary and exit codes (0, 1 with one line per failed task, 2 with one line for a bad config), the outputs
rebuilt when removed, published as one set (``calibflow verify`` checks it), and never in a calibration's
folder."""

from __future__ import annotations

import contextlib
import io
import json
import os
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
        assert build(plan, [task]).ok
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
    assert paths.h5 == str(tmp_path / "out" / "kaons" / "work" / "kde" / f"kaon_data-{task.key()}.h5")
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
    (workdir / manifest["files"][2]).unlink()  # a published template removed: the set is published again
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")
    assert code == 0 and "1 task(s) run" in stdout and (workdir / manifest["files"][2]).is_file()
    (workdir / "work" / manifest["files"][2]).unlink()  # the template itself removed: made again, then the set
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")
    assert code == 0 and "2 task(s) run" in stdout and (workdir / "work" / manifest["files"][2]).is_file()


def test_kde_outputs_are_published_as_one_set(inputs: Path) -> None:
    """The outputs go to a set ``.published/<n>-<report key>/`` (hard links to the work folder), ``current``
    points to it, the names a reader opens are links into ``current``; a changed template publishes a new set and
    the stable names follow at once; the manifest records the kind, the config and every file's SHA-256."""
    from calibflow.export.publish import CURRENT, PUBLISHED, SHA256, published_dir
    from calibflow.io.integrity import sha256_file

    cfg = _config(inputs, 50)
    out = inputs / "out"
    assert run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")[0] == 0
    workdir = out / "kaons"
    plan = KdePlan.create(cfg, out)
    first = published_dir(str(workdir))
    assert first is not None and os.path.basename(first) == f"1-{plan.report_key()}"
    assert os.readlink(workdir / CURRENT) == os.path.join(PUBLISHED, f"1-{plan.report_key()}")
    for name in ("kde", "report.html", "report.md", "manifest.json"):
        assert os.readlink(workdir / name) == os.path.join(CURRENT, name)
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["kind"] == "kde" and manifest["config"] == str(cfg) and manifest["key"] == plan.report_key()
    assert manifest["config_sha256"] == plan.config_sha256()
    assert sorted(manifest[SHA256]) == sorted(manifest["files"])
    assert all(sha256_file(os.path.join(first, f)) == d for f, d in manifest[SHA256].items())
    latest = os.path.join(first, "kde", "kaon_data.h5")
    assert os.path.samefile(latest, plan.template_paths("kaon_data").latest)  # a hard link, no copy
    assert os.path.samefile(workdir / "kde" / "kaon_data.h5", latest)  # the path apply configs use
    key = read_templates(latest)[1]["key"]

    cfg_60 = _config(inputs, 60)  # a changed template: a new set, the stable names follow it
    assert run_cli("kde", str(cfg_60), "--result-dir", str(out), "--quiet")[0] == 0
    second = published_dir(str(workdir))
    assert second is not None and os.path.basename(second).startswith("2-") and os.path.isdir(first)
    assert read_templates(str(workdir / "kde" / "kaon_data.h5"))[1]["key"] != key
    assert read_templates(latest)[1]["key"] == key  # the previous set is left as it was, for its readers
    assert not any(".tmp-" in p for p in os.listdir(workdir / PUBLISHED))


def test_calibflow_verify_checks_a_kde_config(inputs: Path) -> None:
    """``calibflow verify KDE_CONFIG``: the templates' checksums and the published files against manifest.json;
    ``--repair`` removes a corrupt template and unpublishes a changed set, which ``calibflow kde`` makes again."""
    cfg = _config(inputs, 50)
    out = str(inputs / "out")
    assert run_cli("kde", str(cfg), "--result-dir", out, "--quiet")[0] == 0
    code, stdout, _ = run_cli("verify", str(cfg), "--result-dir", out)
    assert code == 0 and "kaons: 2 intermediate file(s) intact" in stdout, stdout
    workdir = Path(out) / "kaons"
    report = workdir / "report.md"
    report.write_text(report.read_text() + "edited\n")  # in place: the published bytes change
    code, stdout, _ = run_cli("verify", str(cfg), "--result-dir", out, "--repair")
    assert code == 1 and "CORRUPT" in stdout and "report.md: published file differs" in stdout, stdout
    assert "unpublished: 'calibflow kde' publishes them again" in stdout
    assert not (workdir / "current").exists()
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", out, "--quiet")
    assert code == 0 and "1 task(s) run" in stdout
    assert run_cli("verify", str(cfg), "--result-dir", out)[0] == 0
    template = Path(KdePlan.create(cfg, out).template_paths("kaon_data").h5)
    data = bytearray(template.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the middle of the density
    template.write_bytes(bytes(data))
    code, stdout, _ = run_cli("verify", str(cfg), "--result-dir", out, "--repair")
    assert code == 1 and f"CORRUPT {template}" in stdout and "1 of 2 intermediate file(s) corrupt" in stdout, stdout
    assert not template.exists()
    code, stdout, _ = run_cli("kde", str(cfg), "--result-dir", out, "--quiet")
    assert code == 0 and "2 task(s) run" in stdout and template.exists()


def _calibration(tmp_path: Path, name: str) -> Path:
    """The demo's calibration config renamed ``name``."""
    demo = Path(__file__).resolve().parents[1] / "calibflow" / "data" / "demo.yaml"
    path = tmp_path / "calib.yaml"
    path.write_text(demo.read_text().replace("name: demo_jpsi", f"name: {name}"))
    return path


def test_kde_and_calibration_configs_never_share_a_folder(inputs: Path) -> None:
    """A KDE config and a calibration config of the same name and result folder: whichever comes second is
    refused with one line naming both configs (exit 2), before it writes anything; --overwrite does not help."""
    from calibflow.plan import LATEST_RUN, RUNS

    cfg = _config(inputs, 50)
    out = inputs / "out"
    calib = _calibration(inputs, "kaons")
    assert run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")[0] == 0
    before = sorted(os.listdir(out / "kaons"))
    for extra in ((), ("--overwrite",)):
        code, stdout, err = run_cli("run", str(calib), "--result-dir", str(out), "--quiet", *extra)
        assert code == 2 and not stdout and len(err.splitlines()) == 1, err
        assert str(calib) in err and str(cfg) in err and "name 'kaons' is taken" in err and "KDE outputs" in err
    assert sorted(os.listdir(out / "kaons")) == before  # no run file, nothing else written

    other = inputs / "other"  # a calibration's folder (its latest run recorded) and then a KDE config
    runs = other / "kaons" / RUNS
    runs.mkdir(parents=True)
    (runs / "abc.json").write_text(json.dumps({"config": str(calib)}))
    (runs / LATEST_RUN).write_text(json.dumps({"run_file": "abc.json"}))
    code, stdout, err = run_cli("kde", str(cfg), "--result-dir", str(other), "--quiet")
    assert code == 2 and not stdout and len(err.splitlines()) == 1, err
    assert str(calib) in err and str(cfg) in err and "calibration results" in err
    assert sorted(os.listdir(other / "kaons")) == [RUNS]


def test_a_kde_folder_is_recognised_before_and_after_it_publishes(inputs: Path) -> None:
    """Before its first set (tasks failed), a KDE config's folder is known by its record; a published
    calibration's manifest (no ``kind``) is a calibration's."""
    from calibflow.export.publish import publish_set
    from calibflow.kde.plan import calibration_of, kde_config_of

    cfg = _config(inputs, 50, pid="K_nosuch")  # the task fails: nothing is published
    out = inputs / "out"
    assert run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")[0] == 1
    workdir = str(out / "kaons")
    assert kde_config_of(workdir) == str(cfg) and calibration_of(workdir) is None
    calib = inputs / "cal"
    calib.mkdir()
    publish_set(str(calib), "k", {}, {"key": "k", "config": "/x/calib.yaml", "config_sha256": "0", "files": []})
    assert calibration_of(str(calib)) == "/x/calib.yaml" and kde_config_of(str(calib)) is None
    assert calibration_of(str(inputs / "nothing")) is None and kde_config_of(str(inputs / "nothing")) is None


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


def test_build_takes_any_task_plan(inputs: Path) -> None:
    """``tasks.runner.build`` is typed for :class:`tasks.base.TaskPlan` (result folder, config name), which a
    calibration's plan and a KDE config's plan both are: no ``type: ignore`` where ``calibflow kde`` calls it."""
    import inspect

    from calibflow.plan import Plan
    from tasks import cli
    from tasks.base import TaskPlan

    assert isinstance(KdePlan.create(_config(inputs, 50), inputs / "out"), TaskPlan)
    assert isinstance(Plan.create(_calibration(inputs, "calib"), inputs / "out"), TaskPlan)
    assert inspect.signature(build).parameters["plan"].annotation == "TaskPlan"
    assert "type: ignore" not in inspect.getsource(cli.cmd_kde)


@pytest.mark.parametrize("point", ["publish:built", "publish:linked", "publish:switched"])
def test_a_killed_kde_publication_leaves_one_whole_set(inputs: Path, point: str) -> None:
    """``calibflow kde`` killed (SIGKILL of its process group) at each step of publishing a changed template: the
    stable names give the previous set or the new one, whole and matching its manifest; a rerun publishes the new
    one."""
    import subprocess
    import sys

    from calibflow.export.publish import KILL_AT, SHA256, published_dir
    from calibflow.io.integrity import sha256_file

    out = inputs / "out"
    assert run_cli("kde", str(_config(inputs, 50)), "--result-dir", str(out), "--quiet")[0] == 0
    workdir = out / "kaons"
    old = json.loads((workdir / "manifest.json").read_text())["key"]
    cfg = _config(inputs, 60)
    env = {**os.environ, KILL_AT: point}
    proc = subprocess.run([sys.executable, "-m", "tasks.cli", "kde", str(cfg), "--result-dir", str(out), "--quiet",
                           "--workers", "1"], env=env, start_new_session=True, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    folder = published_dir(str(workdir))
    assert folder is not None
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["key"] == (KdePlan.create(cfg, out).report_key() if point == "publish:switched" else old)
    for rel, digest in manifest[SHA256].items():  # through the stable names: one set, whole
        assert sha256_file(str(workdir / rel)) == digest == sha256_file(os.path.join(folder, rel))
    assert run_cli("kde", str(cfg), "--result-dir", str(out), "--quiet")[0] == 0
    assert json.loads((workdir / "manifest.json").read_text())["key"] == KdePlan.create(cfg, out).report_key()
    assert run_cli("verify", str(cfg), "--result-dir", str(out))[0] == 0
