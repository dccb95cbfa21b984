"""Benchmark: the cost of batch jobs, 100 FitBin jobs on a single-node Slurm on localhost.

    python benchmarks/batch.py [--jobs N] [--job-dir DIR]

Starts the test suite's single-node Slurm (``tests/slurm_cluster.py``: munged, slurmctld, slurmd as root; stopped
afterwards), builds a small toy calibration up to its histograms locally, then runs N FitBin tasks (one bin each,
N/2 bins of data fitted and N/2 of simulation counted) as Slurm jobs through calibflow's runner, with
``job_status_cache_ttl`` 1 s (``--job-dir``: staged jobs working under DIR, docs/operations.md). Measured:

* **to submit**: the time the submitting process spends in submissions (writing the job's scripts, staging
  lists, ``sbatch``), summed over the N jobs;
* **overhead per job**: the job slots' time not spent in the tasks themselves, per job:
  ``(wall time × slots - Σ task time) / N``, with slots the node's CPUs (one CPU a job) and the task time from
  each task's log (its start and end lines). It holds Slurm's launch, the job's Python start-up and imports,
  the status polling and the submission.

The last line printed is ``batch: <s> s to submit, <o> s overhead per job``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import small_demo_dict  # noqa: E402
from tests.slurm_cluster import running_cluster  # noqa: E402

P_EDGES = [2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 50, 80, 120, 200]
"""Up to 15 p bins (a divisor of N/2); the eta bins make up the rest of N/2 bins per sample."""


def config(jobs: int) -> dict:
    """A small toy calibration with ``jobs`` / 2 bins per sample and a FitBin task per bin."""
    d = small_demo_dict()
    per_sample = max(jobs // 2, 1)
    n_p = max(k for k in range(1, len(P_EDGES)) if per_sample % k == 0)  # p bins x eta bins = per_sample
    n_eta = per_sample // n_p
    d["binning"]["variables"][0]["edges"] = P_EDGES[: n_p + 1]
    d["binning"]["variables"][1]["edges"] = [round(2.0 + 3.0 * k / n_eta, 6) for k in range(n_eta + 1)]
    d["toy"]["samples"] = {"data": {"candidates": 60000, "files": 1}, "mc": {"candidates": 40000, "files": 1}}
    d["outputs"] = {"plots": False}
    d["fit"] = {**d.get("fit", {}), "plots": "none"}
    d["resources"] = {
        "default": {"memory_mb": 500, "time_minutes": 10, "cpus": 1},
        "FitBin": {"bins_per_task": 1},
    }
    return d


def task_seconds(log: Path) -> float:
    """The time a task took in its last attempt (its log's last start and end lines)."""
    stamps = [
        (ln.split(" INFO ")[0], " start " in ln)
        for ln in log.read_text().splitlines()
        if " calibflow.task: start " in ln or " calibflow.task: end " in ln
    ]
    start = [t for t, is_start in stamps if is_start][-1]
    end = [t for t, is_start in stamps if not is_start][-1]
    fmt = "%Y-%m-%d %H:%M:%S,%f"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100, help="FitBin jobs (default 100)")
    p.add_argument("--job-dir", default="", help="staged jobs working in folders under this one")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("ERROR: the benchmark's Slurm runs its daemons as root")

    from b2luigi.batch.processes.slurm import SlurmProcess

    from calibflow.plan import Plan
    from tasks import FillHistograms, FitBin, MakeBinning
    from tasks.fit import fit_params
    from tasks.runner import build

    tmp = Path(tempfile.mkdtemp(prefix="calibflow-batch-bench-"))
    cfg = tmp / "bench.yaml"
    cfg.write_text(yaml.safe_dump(config(args.jobs), sort_keys=False))
    plan = Plan.create(cfg, tmp / "res").start_run()
    common = {"config": plan.config_path, "result_dir": plan.result_dir, "run_file": plan.run_file}
    before = [MakeBinning(**common), *(FillHistograms(sample=s, **common) for s in plan.config.samples)]
    t0 = time.perf_counter()
    ready = build(plan, before, workers=2)
    if not ready.ok:
        raise SystemExit(f"ERROR: the local stages failed: {ready.failed}")
    print(
        f"histograms of {len(plan.load_scheme())} bins per sample made locally in {time.perf_counter() - t0:.1f} s"
    )
    n = len(plan.load_scheme())
    fits = [
        FitBin(sample=s, bin_index=i, **fit_params(MakeBinning(**common), s))
        for s in plan.config.samples
        for i in range(n)
    ]

    submitting = [0.0]
    real_start = SlurmProcess.start_job

    def timed_start(self: SlurmProcess) -> None:  # the time spent in sbatch (and writing its scripts)
        t = time.perf_counter()
        real_start(self)
        submitting[0] += time.perf_counter() - t

    SlurmProcess.start_job = timed_start  # type: ignore[method-assign]
    settings = {"batch_system": "slurm", "job_status_cache_ttl": 1}
    if args.job_dir:
        settings["batch_job_dir"] = args.job_dir
    (tmp / "settings.json").write_text(json.dumps(settings))
    os.environ["B2LUIGI_SETTINGS_JSON"] = str(tmp / "settings.json")
    with running_cluster(tmp / "slurm") as cluster:
        os.environ["SLURM_CONF"] = str(cluster.conf)
        slots = os.cpu_count() or 1
        t0 = time.perf_counter()
        report = build(plan, fits, workers=args.jobs, batch_mode=True)
        wall = time.perf_counter() - t0
        jobs = [j for j in cluster.jobs() if j["JobName"] == "calibflow-FitBin"]
    if not report.ok or len(jobs) != len(fits):
        raise SystemExit(f"ERROR: {len(jobs)} job(s) for {len(fits)} tasks; failed: {report.failed}")
    logs = [Path(t.log_path) for t in fits]
    busy = sum(task_seconds(log) for log in logs)
    overhead = (wall * slots - busy) / len(fits)
    states = sorted({j["JobState"] for j in jobs})
    print(
        f"{len(fits)} FitBin jobs ({', '.join(states)}) on {slots} slot(s) in {wall:.1f} s; tasks {busy:.1f} s in all "
        f"({busy / len(fits):.2f} s each)" + (f"; staged under {args.job_dir}" if args.job_dir else "")
    )
    print(f"batch: {submitting[0]:.2f} s to submit, {overhead:.2f} s overhead per job")


if __name__ == "__main__":
    main()
