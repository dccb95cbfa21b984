"""Real batch submission: a single-node Slurm on localhost runs every task of a small calibration as a job.

The cluster (munged, slurmctld, slurmd, all in the foreground, state under a temporary folder) is started
by the fixture and only those processes are stopped. Without the Debian packages slurmctld, slurmd,
slurm-client and munge (installed by .ci/run) the tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
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

SLURM_PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
SBIN = ("/usr/sbin", "/usr/bin")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons do: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SlurmCluster:
    """munged + slurmctld + slurmd on localhost, configured and kept under ``root``."""

    CTLD_PORT, SLURMD_PORT = 6817, 6818

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        r = self.root
        self.conf.write_text(f"""\
ClusterName=calibflowtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.CTLD_PORT}
SlurmdPort={self.SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=calibnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=1000 State=UNKNOWN
PartitionName=calib Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 (kept open for the process's life)
        self.procs.append(subprocess.Popen([_which(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))
        log.close()

    def start(self) -> None:
        """Bring the cluster up and wait until the node is idle (about a second)."""
        for d in ("munge", "state", "spool"):
            (self.root / d).mkdir(parents=True)
        self._write_config()
        m = self.root / "munge"
        subprocess.run([_which("mungekey"), "--create", "--keyfile", str(m / "munge.key")], check=True,
                       capture_output=True)
        self._spawn("munged", "--foreground", "--force", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                    f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/seed")
        self._wait(lambda: (m / "munge.socket").exists(), "munged socket")
        self._spawn("slurmctld", "-D", "-i")
        self._spawn("slurmd", "-D", "-N", "calibnode")
        self._wait(self._node_idle, "an idle Slurm node")

    def _node_idle(self) -> bool:
        out = subprocess.run([_which("sinfo"), "-h", "-o", "%t"], capture_output=True, text=True,
                             env=self.env)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait(self, ok, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f.read_text(errors="replace")[-800:] for f in self.root.glob("*.out"))
                raise RuntimeError(f"Slurm bring-up: no {what} (exited: {dead})\n{logs}")
            time.sleep(0.1)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld remembers (finished ones too, for MinJobAge), as key=value dicts."""
        out = subprocess.run([_which("scontrol"), "show", "jobs", "-o"], capture_output=True, text=True,
                             env=self.env, check=True).stdout
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]

    def stop(self) -> None:
        """Cancel remaining jobs, then stop the daemons this object started (and only those)."""
        subprocess.run([_which("scancel"), "--user", "root"], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node Slurm (skips when Slurm is not installed or its ports are taken)."""
    missing = [p for p in SLURM_PROGRAMS if _which(p) is None]
    if missing:
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}; "
                    "apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root")
    busy = [p for p in (SlurmCluster.CTLD_PORT, SlurmCluster.SLURMD_PORT) if not _port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are in use (another Slurm?)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


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
class Run:
    """One finished ``calibflow run``: exit code, output and the Slurm jobs it submitted."""

    returncode: int
    stdout: str
    stderr: str
    jobs: list[dict[str, str]]


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
            subprocess.run([_which("scancel"), victim], env=env, check=True)
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
