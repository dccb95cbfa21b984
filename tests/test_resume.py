"""Resumable runs and faults: kill -9 at several stages and rerun, stale temporaries, failed tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
import yaml

from calibflow.plan import Plan
from tasks import ExportTables
from tasks.runner import build, clean_stale_temporaries

from .conftest import tiny_demo_dict

COMPARED = ("efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json")


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_stale_temporaries_removes_only_those_of_dead_writers(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / "prep" / "data" / f"a.h5.tmp-{dead}", tmp_path / f"manifest.json.tmp-{dead}"]
    kept = [tmp_path / f"b.json.tmp-{alive}", tmp_path / "c.tmp-x", tmp_path / "d.h5", tmp_path / f"e.tmp-{dead}.bak"]
    for p in stale + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("partial")
    assert sorted(clean_stale_temporaries(str(tmp_path))) == sorted(map(str, stale))
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


def test_build_cleans_stale_temporaries_first(tmp_path: Path, write_config) -> None:
    """Temporaries left by a killed writer are gone after the next run; the results are unaffected."""
    plan = Plan.create(write_config(tiny_demo_dict()), tmp_path / "res")
    leftover = Path(plan.prep_path("data", 0) + f".tmp-{_dead_pid()}")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x89HDF half written")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 2)
    assert report.ok, report.failed
    assert report.cleaned == [str(leftover)]
    assert not leftover.exists()
    assert not list(Path(plan.workdir).rglob("*.tmp-*"))


def test_failed_task_leaves_no_output(corrupt_input_config: Path, tmp_path: Path) -> None:
    plan = Plan.create(corrupt_input_config, tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1)
    assert not report.ok
    assert [label for label, _ in report.failed] == ["PrepareTuple(sample=data, index=0)"]
    assert not os.path.exists(plan.prep_path("data", 0))
    assert os.path.exists(plan.prep_path("mc", 0))  # the healthy sample went on
    assert not list(Path(plan.workdir).rglob("*.tmp-*"))
    assert not os.path.exists(os.path.join(plan.workdir, "manifest.json"))


# --- kill -9 and resume -------------------------------------------------------------------------------
def _files(root: Path, pattern: str) -> list[Path]:
    return list(root.glob(pattern)) if root.exists() else []


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    # while tuples are prepared (a temporary or the first output of the prep stage exists)
    "prep": lambda w: bool(_files(w, "prep/*/*")),
    # after the first fit result, while the others are still being fitted
    "fits": lambda w: bool(_files(w, "fits/*/*.json")),
    # once the export task has started (its log exists) and before it has published
    "export": lambda w: bool(_files(w, "logs/ExportTables/*.log")),
}


def _run(cfg: Path, result_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", str(cfg), "--workers", "2",
                             "--result-dir", str(result_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL the run's whole process group (the run and its workers) as soon as ``ready()``."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill point:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_9_at_several_stages_then_rerun_gives_identical_tables(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    reference = _run(cfg, tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.communicate()[0]

    result_dir = tmp_path / "res"
    workdir = result_dir / "small_demo"
    for point, ready in KILL_POINTS.items():
        proc = _run(cfg, result_dir)
        _kill_when(proc, lambda ready=ready: ready(workdir))
        assert proc.returncode == -signal.SIGKILL, point
        assert not (workdir / "manifest.json").exists(), f"killed at {point}, yet published"

    final = _run(cfg, result_dir)
    out = final.communicate(timeout=600)[0]
    assert final.returncode == 0, out
    assert "0 failed" in out
    for name in COMPARED:
        assert (workdir / name).read_bytes() == (tmp_path / "reference/small_demo" / name).read_bytes(), name
    assert json.loads((workdir / "manifest.json").read_text())["files"]
    # nothing partial or temporary is left: every intermediate output is complete and readable
    assert not list(workdir.rglob("*.tmp-*"))
    for h5 in workdir.rglob("*.h5"):
        with h5py.File(h5, "r"):
            pass
    for js in (workdir / "fits").rglob("*.json"):
        assert "efficiency" in json.loads(js.read_text())
