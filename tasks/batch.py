"""Batch submission through b2luigi: per-task resources, job commands, job results and status polling.

b2luigi runs a task in a batch job by re-executing ``<executable> <main script> --batch-runner --task-id
ID``. The ``calibflow`` console script is not a script b2luigi can re-execute with a task graph, so jobs
run ``python -m tasks.entry`` instead (see :mod:`tasks.entry`), which rebuilds the task from its family
and parameters, runs it like a luigi worker (dynamic dependencies included) and writes ``result.json``.
The submitting process reads that file when the job ends (:class:`JobResultMixin`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import b2luigi
import luigi
import luigi.scheduler
from b2luigi.batch.cache import BatchJobStatusCache
from b2luigi.batch.processes import JobStatus, htcondor, lsf, slurm
from b2luigi.batch.workers import BatchSystems

from calibflow.config import TaskResources
from calibflow.io.store import atomic_path
from calibflow.ops.scheduler import SetupError

RESULT_FILE = "result.json"
DEFAULT_STATUS_TTL = 10.0
"""Seconds a batch job status is cached (``job_status_cache_ttl`` in settings.json; b2luigi's is 120)."""

_PROCESSES = {
    BatchSystems.slurm: slurm.SlurmProcess,
    BatchSystems.htcondor: htcondor.HTCondorProcess,
    BatchSystems.lsf: lsf.LSFProcess,
}
_STATUS_MODULES = (slurm, htcondor, lsf)


# --- per-task settings ----------------------------------------------------------------------------
def slurm_resources(res: TaskResources) -> dict[str, str]:
    """``#SBATCH`` options for ``res`` (memory in MB, time in minutes, cpus per task)."""
    out = {}
    if res.memory_mb:
        out["mem"] = f"{res.memory_mb}M"
    if res.time_minutes:
        out["time"] = str(res.time_minutes)
    if res.cpus:
        out["cpus-per-task"] = str(res.cpus)
    return out


def htcondor_resources(res: TaskResources) -> dict[str, str]:
    """HTCondor submit-file commands for ``res`` (``+MaxRuntime`` in seconds, as used at many sites)."""
    out = {}
    if res.memory_mb:
        out["request_memory"] = f"{res.memory_mb} MB"
    if res.time_minutes:
        out["+MaxRuntime"] = str(60 * res.time_minutes)
    if res.cpus:
        out["request_cpus"] = str(res.cpus)
    return out


def job_command_args(task: luigi.Task) -> list[str]:
    """Arguments after ``--task-id`` that let :mod:`tasks.entry` rebuild ``task`` (shell-quoted)."""
    import shlex

    params = json.dumps(task.to_str_params(), sort_keys=True)
    return ["--family", shlex.quote(task.task_family), "--params", shlex.quote(params)]


def configure_submission(status_ttl: float | None = None) -> None:
    """Make b2luigi submit ``python -m tasks.entry`` jobs from the current folder; set the status cache TTL.

    ``status_ttl`` defaults to ``job_status_cache_ttl`` of settings.json, else 10 s.
    """
    b2luigi.set_setting("executable", [sys.executable, "-m", "tasks.entry"])
    b2luigi.set_setting("add_filename_to_cmd", False)
    b2luigi.set_setting("working_dir", os.getcwd())
    value = status_ttl if status_ttl is not None else b2luigi.get_setting("job_status_cache_ttl", DEFAULT_STATUS_TTL)
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = -1.0
    if not ttl > 0:
        raise SetupError(f"settings.json: job_status_cache_ttl must be a positive number of seconds, got {value!r}")
    for module in _STATUS_MODULES:
        module._batch_job_status_cache = _status_cache(type(module._batch_job_status_cache), ttl)


def _status_cache(cls: type[BatchJobStatusCache], ttl: float) -> BatchJobStatusCache:
    """A fresh job-status cache of b2luigi's class ``cls`` whose entries expire after ``ttl`` seconds."""
    from cachetools import TTLCache

    cache = cls.__new__(cls)
    TTLCache.__init__(cache, maxsize=100000, ttl=ttl)
    cache._job_ids = []
    return cache


# --- job results ----------------------------------------------------------------------------------
def result_path(task: luigi.Task) -> str:
    """Where the job of ``task`` writes its result (in b2luigi's per-task folder)."""
    return os.path.join(task.get_task_file_dir(), RESULT_FILE)


def write_result(task: luigi.Task, status: str, explanation: Any, missing: list[str], new_deps: list[Any]) -> None:
    """Record the outcome of running ``task`` in a job (atomically)."""
    path = result_path(task)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({"status": status, "explanation": explanation, "missing": missing, "new_deps": new_deps}, f)


def read_result(task: luigi.Task) -> dict[str, Any] | None:
    """The result written by the job of ``task``, or None when the job wrote none."""
    try:
        with open(result_path(task)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class JobResultMixin:
    """Mixed into b2luigi's batch processes: report what the job's ``result.json`` says.

    b2luigi only knows whether the job ended well; the result file adds dynamic dependencies (the job
    yielded tasks that are not complete: they are scheduled and the task is submitted again), the
    failure reason and a check that the outputs exist.
    """

    task: Any
    _terminated: bool
    _result_queue: Any

    def start_job(self) -> None:
        """Forget the result of an earlier job of this task, then submit."""
        if os.path.exists(result_path(self.task)):
            os.remove(result_path(self.task))
        super().start_job()  # type: ignore[misc]

    def is_alive(self) -> bool:
        """False once the job has ended (its outcome is then on the result queue)."""
        if self._terminated:
            return False
        state = self.get_job_status()  # type: ignore[attr-defined]
        if state in (JobStatus.running, JobStatus.idle):
            return True
        self._terminated = True
        self._report(state == JobStatus.successful)
        return False

    def _report(self, job_ok: bool) -> None:
        result = read_result(self.task) or {}
        status, explanation = self._outcome(result, job_ok)
        self._result_queue.put((self.task.task_id, status, explanation, result.get("missing", []),
                                result.get("new_deps", []) if status == luigi.scheduler.PENDING else []))

    def _outcome(self, result: dict[str, Any], job_ok: bool) -> tuple[str, Any]:
        """(luigi status, explanation) of the ended job; failures the job could not record are recorded."""
        status = result.get("status")
        if status == luigi.scheduler.DONE and self.task.complete():
            return status, result.get("explanation") or ""  # e.g. the results made (tasks.base.RESULTS_MADE)
        if status == luigi.scheduler.PENDING and job_ok:
            return status, ""
        if status == luigi.scheduler.FAILED:  # the task failed in the job, which recorded the reason
            return status, result.get("explanation") or "failed (see the task log)"
        if status == luigi.scheduler.DONE:
            reason = "the batch job finished but the task's outputs are missing"
        else:
            job = getattr(self, "_batch_job_id", None)
            reason = f"batch job {job} ended before the task finished (see {self.task.get_log_file_dir()})"
        self.task.record_failure(reason)
        return luigi.scheduler.FAILED, reason


@functools.cache
def process_class(system: BatchSystems) -> type | None:
    """b2luigi's process class of ``system`` with :class:`JobResultMixin`, or None (run locally)."""
    base = _PROCESSES.get(system)
    return None if base is None else type(f"Calib{base.__name__}", (JobResultMixin, base), {})
