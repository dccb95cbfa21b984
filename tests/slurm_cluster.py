"""A single-node Slurm on localhost for the batch tests: munged, slurmctld and slurmd in the foreground, state under
a temporary folder; only the processes it started are stopped.

Without the Debian packages slurmctld, slurmd, slurm-client and munge (installed by .ci/run) the tests that
use :func:`start_cluster` are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_PROGRAMS = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
SBIN = ("/usr/sbin", "/usr/bin")


@dataclass
class Run:
    """One finished ``calibflow run``: exit code, output and the Slurm jobs it submitted (in order)."""

    returncode: int
    stdout: str
    stderr: str
    jobs: list[dict[str, str]]


def which(name: str) -> str | None:
    """Path of the Slurm or munge program ``name`` (also in sbin folders outside PATH), or None."""
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons do: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SlurmCluster:
    """munged + slurmctld + slurmd on localhost, configured and kept under ``root``; ``options`` are slurm.conf
    lines ``key=value`` set over the defaults (e.g. memory enforcement)."""

    CTLD_PORT, SLURMD_PORT = 6817, 6818

    def __init__(self, root: Path, options: dict[str, str] | None = None, memory_mb: int = 1000) -> None:
        self.root = root
        self.options = options or {}
        self.memory_mb = memory_mb
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        r = self.root
        text = f"""\
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
NodeName=calibnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=calib Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0] not in self.options]
        self.conf.write_text("\n".join(lines + [f"{k}={v}" for k, v in self.options.items()]) + "\n")

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 (kept open for the process's life)
        self.procs.append(
            subprocess.Popen(
                [which(name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        )
        log.close()

    def start(self) -> None:
        """Bring the cluster up and wait until the node is idle (about a second)."""
        for d in ("munge", "state", "spool"):
            (self.root / d).mkdir(parents=True)
        self._write_config()
        m = self.root / "munge"
        subprocess.run(
            [which("mungekey"), "--create", "--keyfile", str(m / "munge.key")],
            check=True,
            capture_output=True,
        )
        self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--socket={m}/munge.socket",
            f"--key-file={m}/munge.key",
            f"--pid-file={m}/munged.pid",
            f"--log-file={m}/munged.log",
            f"--seed-file={m}/seed",
        )
        self._wait(lambda: (m / "munge.socket").exists(), "munged socket")
        self._spawn("slurmctld", "-D", "-i")
        self._spawn("slurmd", "-D", "-N", "calibnode")
        self._wait(self._node_idle, "an idle Slurm node")

    def _node_idle(self) -> bool:
        out = subprocess.run([which("sinfo"), "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
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
        out = subprocess.run(
            [which("scontrol"), "show", "jobs", "-o"],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        ).stdout
        return [
            dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")
        ]

    def stop(self) -> None:
        """Cancel remaining jobs, then stop the daemons this object started (and only those)."""
        subprocess.run([which("scancel"), "--user", "root"], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextmanager
def running_cluster(
    root: Path, options: dict[str, str] | None = None, memory_mb: int = 1000
) -> Iterator[SlurmCluster]:
    """A running single-node Slurm under ``root`` (skips the test when Slurm is not installed, the user is not root
    or its ports are taken); stopped on exit."""
    missing = [p for p in SLURM_PROGRAMS if which(p) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed (missing {', '.join(missing)}; "
            "apt-get install slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root")
    busy = [p for p in (SlurmCluster.CTLD_PORT, SlurmCluster.SLURMD_PORT) if not _port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are in use (another Slurm?)")
    cluster = SlurmCluster(root, options, memory_mb)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
