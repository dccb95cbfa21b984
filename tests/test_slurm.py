"""Real batch submission: a single-node Slurm on localhost runs every task of a small calibration as a job.

The cluster (munged, slurmctld, slurmd, all in the foreground, state under a temporary folder:
:mod:`tests.slurm_cluster`) is started by the fixture and only those processes are stopped. Without the Debian
packages slurmctld, slurmd, slurm-client and munge (installed by .ci/run) the tests are skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_demo_dict
from .slurm_cluster import Run, SlurmCluster, running_cluster, which


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node Slurm (skips when Slurm is not installed or its ports are taken)."""
    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def _setup(tmp_path: Path, cluster: SlurmCluster) -> tuple[Path, dict[str, str]]:
    """A tiny toy config and an environment whose settings.json submits to the test Slurm."""
    d = tiny_demo_dict()
    d["resources"] = {"default": {"memory_mb": 200, "time_minutes": 30, "cpus": 1}, "FitBin": {"time_minutes": 10}}
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    (tmp_path / "settings.json").write_text(json.dumps({"batch_system": "slurm", "job_status_cache_ttl": 1}))
    return cfg, {**cluster.env, "B2LUIGI_SETTINGS_JSON": str(tmp_path / "settings.json")}


def _calibflow(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


@dataclass
class BatchRuns:
    """A batch run whose PrepareTuple job was cancelled, the batch rerun, and a local reference run."""

    killed: Run
    victim: str
    rerun: Run
    local: Run
    result_dir: Path


def _task_started(job: dict[str, str]) -> bool:
    """Whether the task of a pending or running job has started (its log names the job)."""
    if job["JobState"] not in ("PENDING", "RUNNING"):
        return True
    batch_dir = Path(job["StdOut"]).parent  # <workdir>/logs/batch/<task id>/stdout
    log = batch_dir.parent.parent / "PrepareTuple" / f"{batch_dir.name}.log"
    return log.exists() and f"batch job {job['JobId']})" in log.read_text()


def _finish(proc: subprocess.Popen[str], cluster: SlurmCluster, before: set[str]) -> Run:
    stdout, stderr = proc.communicate(timeout=600)
    return Run(proc.returncode, stdout, stderr, [j for j in cluster.jobs() if j["JobId"] not in before])


@pytest.fixture(scope="module")
def runs(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> BatchRuns:
    """Run a tiny calibration with --batch, cancel its first PrepareTuple job, rerun it; run it locally."""
    tmp = tmp_path_factory.mktemp("batch")
    cfg, env = _setup(tmp, slurm)
    res = tmp / "res"
    before = {j["JobId"] for j in slurm.jobs()}
    proc = _calibflow(["run", str(cfg), "--batch", "--result-dir", str(res)], env, tmp)
    victim = ""
    deadline = time.monotonic() + 120
    while not victim and time.monotonic() < deadline and proc.poll() is None:
        prep = [j for j in slurm.jobs() if j["JobName"] == "calibflow-PrepareTuple" and not _task_started(j)]
        if prep:
            victim = prep[0]["JobId"]
            subprocess.run([which("scancel"), victim], env=env, check=True)
        time.sleep(0.02)
    killed = _finish(proc, slurm, before)
    before |= {j["JobId"] for j in killed.jobs}
    rerun = _finish(_calibflow(["run", str(cfg), "--batch", "--result-dir", str(res)], env, tmp), slurm, before)
    local = _finish(_calibflow(["run", str(cfg), "--workers", "2", "--result-dir", str(tmp / "local")], env, tmp),
                    slurm, before | {j["JobId"] for j in rerun.jobs})
    return BatchRuns(killed, victim, rerun, local, res)


def _ran(run: Run) -> int:
    m = re.search(r"(\d+) task\(s\) run, \d+ reused, 0 failed", run.stdout)
    assert m, run.stdout + run.stderr
    return int(m.group(1))


@pytest.mark.slow
def test_a_dead_batch_job_is_reported(runs: BatchRuns) -> None:
    assert runs.victim, "no running PrepareTuple job was seen"
    assert runs.killed.returncode == 1, runs.killed.stdout + runs.killed.stderr
    assert re.search(rf"FAILED PrepareTuple\([^)]*\): batch job {runs.victim} ended before the task finished",
                     runs.killed.stderr), runs.killed.stderr
    states = {j["JobId"]: j["JobState"] for j in runs.killed.jobs}
    assert states.pop(runs.victim) == "CANCELLED"
    assert set(states.values()) == {"COMPLETED"}


@pytest.mark.slow
def test_the_rerun_submits_what_is_missing_as_slurm_jobs(runs: BatchRuns) -> None:
    assert runs.rerun.returncode == 0, runs.rerun.stdout + runs.rerun.stderr
    n = _ran(runs.rerun)
    assert "1 PrepareTuple" in runs.rerun.stdout  # the cancelled one, and only it
    per_family = Counter(j["JobName"].removeprefix("calibflow-") for j in runs.rerun.jobs)
    assert {j["JobState"] for j in runs.rerun.jobs} == {"COMPLETED"}
    # one job per task run; EfficiencyTable twice: its first job yields the fits it still needs
    assert sum(per_family.values()) == n + 1 and per_family["EfficiencyTable"] == 2
    assert per_family["PrepareTuple"] == 1 and per_family["GenerateToys"] == 0


@pytest.mark.slow
def test_every_task_ran_in_a_completed_slurm_job(runs: BatchRuns) -> None:
    completed = {j["JobId"] for j in runs.killed.jobs + runs.rerun.jobs if j["JobState"] == "COMPLETED"}
    logs = sorted((runs.result_dir / "small_demo" / "logs").glob("*/*.log"))
    families = {log.parent.name for log in logs}
    assert families >= {"GenerateToys", "PrepareTuple", "MakeBinning", "FillHistograms", "FitBin", "ExportTables"}
    for log in logs:
        last_start = [ln for ln in log.read_text().splitlines() if " start " in ln][-1]
        job = re.search(r"batch job (\d+)\)", last_start)
        assert job and job.group(1) in completed, (log, last_start)


@pytest.mark.slow
def test_config_resources_reach_sbatch(runs: BatchRuns) -> None:
    jobs = runs.killed.jobs + runs.rerun.jobs
    fit = next(j for j in jobs if j["JobName"] == "calibflow-FitBin")
    prep = next(j for j in jobs if j["JobName"] == "calibflow-PrepareTuple")
    assert fit["TimeLimit"] == "00:10:00" and prep["TimeLimit"] == "00:30:00"
    assert fit["MinMemoryNode"] == prep["MinMemoryNode"] == "200M"
    assert prep["NumCPUs"] == "1"


@pytest.mark.slow
def test_batch_tables_equal_local_tables_and_no_temporaries(runs: BatchRuns) -> None:
    assert runs.local.returncode == 0, runs.local.stderr
    assert not runs.local.jobs  # the local run submitted nothing
    for name in ("efficiencies.csv", "scale_factors.csv", "corrections.json"):
        batch = (runs.result_dir / "small_demo" / name).read_bytes()
        assert batch == (runs.result_dir.parent / "local" / "small_demo" / name).read_bytes(), name
    assert not list(runs.result_dir.rglob("*.tmp-*"))


@pytest.mark.parametrize(("settings", "args", "message"), [
    ({"batch_system": "local"}, ["--batch"], "--batch: batch_system in settings.json is 'local'"),
    ({"batch_system": "slurm", "job_status_cache_ttl": "soon"}, ["--batch"],
     "settings.json: job_status_cache_ttl must be a positive number of seconds, got 'soon'"),
    ({"batch_system": "slurm"}, ["--batch", "--workers", "0"], "--workers 0: give at least 1"),
])
def test_bad_batch_setup_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], settings: dict[str, object],
                                             args: list[str], message: str) -> None:
    from tasks.cli import main

    (tmp_path / "settings.json").write_text(json.dumps(settings))
    monkeypatch.setenv("B2LUIGI_SETTINGS_JSON", str(tmp_path / "settings.json"))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    assert main(["run", str(cfg), "--result-dir", str(tmp_path / "res"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"calibflow: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "res" / "small_demo" / "logs" / "batch").exists()  # nothing was submitted
