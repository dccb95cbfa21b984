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
from pathlib import Path

import pytest

from .conftest import small_demo_dict

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


def _setup(tmp_path: Path, cluster: SlurmCluster, **settings: object) -> tuple[Path, dict[str, str]]:
    """A small toy config and an environment whose settings.json submits to Slurm."""
    d = small_demo_dict()
    d["outputs"] = {"correctionlib": True, "plots": False}
    d["resources"] = {"default": {"memory_mb": 200, "time_minutes": 30, "cpus": 1}, "FitBin": {"time_minutes": 10}}
    cfg = tmp_path / "small.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    (tmp_path / "settings.json").write_text(json.dumps({"batch_system": "slurm", "job_status_cache_ttl": 1,
                                                        **settings}))
    return cfg, {**cluster.env, "B2LUIGI_SETTINGS_JSON": str(tmp_path / "settings.json")}


def _calibflow(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "calibflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_every_task_runs_as_a_slurm_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path, slurm)
    before = {j["JobId"] for j in slurm.jobs()}
    out = _calibflow(["run", str(cfg), "--batch", "--result-dir", str(tmp_path / "res")], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    ran = re.search(r"(\d+) task\(s\) run, 0 reused, 0 failed", out.stdout)
    assert ran, out.stdout
    n_tasks = int(ran.group(1))

    jobs = [j for j in slurm.jobs() if j["JobId"] not in before]
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [(j["JobName"], j["JobState"]) for j in jobs]
    per_family = Counter(j["JobName"].removeprefix("calibflow-") for j in jobs)
    # every task is one job; a task with dynamic dependencies runs once more after them
    assert per_family["EfficiencyTable"] == 2
    assert sum(per_family.values()) == n_tasks + 1
    assert per_family["FitBin"] == 12 and per_family["PrepareTuple"] == 3
    # the resources section reached sbatch: 200 MB for every job, 10 minutes for the fits
    fit = next(j for j in jobs if j["JobName"] == "calibflow-FitBin")
    prep = next(j for j in jobs if j["JobName"] == "calibflow-PrepareTuple")
    assert fit["TimeLimit"] == "00:10:00" and prep["TimeLimit"] == "00:30:00"
    assert prep["MinMemoryNode"] == "200M"

    # each task's own log says which Slurm job ran it
    logs = sorted((tmp_path / "res" / "small_demo" / "logs").glob("*/*.log"))
    assert len(logs) == n_tasks
    job_ids = {j["JobId"] for j in jobs}
    for log in logs:
        text = log.read_text()
        found = re.findall(r"batch job (\d+)\)", text)
        assert found and set(found) <= job_ids, (log, text)

    # the tables equal those of a local run
    local = _calibflow(["run", str(cfg), "--workers", "2", "--result-dir", str(tmp_path / "local")], env, tmp_path)
    assert local.returncode == 0, local.stderr
    for name in ("efficiencies.csv", "scale_factors.csv", "corrections.json"):
        assert (tmp_path / "res/small_demo" / name).read_bytes() == (tmp_path / "local/small_demo" / name).read_bytes()


@pytest.mark.slow
def test_a_dead_batch_job_is_reported_and_rerun(slurm: SlurmCluster, tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path, slurm)
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "calibflow.cli", "run", str(cfg), "--batch", "--result-dir", str(res)]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        prep = [j for j in slurm.jobs() if j["JobName"] == "calibflow-PrepareTuple" and j["JobState"] in
                ("PENDING", "RUNNING")]
        if prep:
            victim = prep[0]["JobId"]
            subprocess.run([_which("scancel"), victim], env=env, check=True)
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=600)
    assert victim is not None, "no PrepareTuple job was seen"
    assert run.returncode == 1, stdout + stderr
    assert re.search(rf"FAILED PrepareTuple\S*: batch job {victim} ended before the task finished", stderr), stderr
    assert not list(res.rglob("*.tmp-*"))

    again = _calibflow(["run", str(cfg), "--batch", "--result-dir", str(res)], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"\d+ task\(s\) run, \d+ reused, 0 failed \(.*1 PrepareTuple", again.stdout), again.stdout
    assert (res / "small_demo" / "efficiencies.csv").exists()
