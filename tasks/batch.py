"""Batch submission through b2luigi: per-task resources, job commands, job results and status polling.

b2luigi runs a task in a batch job by re-executing ``<executable> <main script> --batch-runner --task-id
ID``. The ``calibflow`` console script is not a script b2luigi can re-execute with a task graph, so jobs
run ``python -m tasks.entry`` instead (see :mod:`tasks.entry`), which rebuilds the task from its family
and parameters, runs it like a luigi worker (dynamic dependencies included) and writes ``result.json``.
The submitting process reads that file when the job ends (:class:`JobResultMixin`), resubmits a job that
died for an infrastructure reason (:mod:`tasks.heal`) and, without a shared file system, prepares and
receives the files of a staged job (:mod:`tasks.stage`).
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
from tasks import heal, stage

RESULT_FILE = "result.json"
DEFAULT_STATUS_TTL = {BatchSystems.slurm: 20.0, BatchSystems.lsf: 20.0, BatchSystems.htcondor: 60.0}
"""Seconds a batch job status is cached per batch system (``job_status_cache_ttl`` in settings.json): one
``squeue``/``bjobs``/``condor_q`` for all jobs per period, at most this late to see a job end (b2luigi's own
is 120 s for HTCondor); 10 s suits a small cluster, 60-120 s a cluster shared by thousands of jobs."""
ENV_KEYS = ("venv", "container", "python", "binds")
"""Keys of ``batch_env`` in settings.json: the jobs' Python environment."""

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
    """Arguments after ``--task-id`` that let :mod:`tasks.entry` rebuild ``task`` (shell-quoted), and where the
    job works without a shared file system (:func:`staging`)."""
    import shlex

    params = json.dumps(task.to_str_params(), sort_keys=True)
    job_dir, transfer, keep = staging()
    return (["--family", shlex.quote(task.task_family), "--params", shlex.quote(params)]
            + (["--job-dir", shlex.quote(job_dir)] if job_dir and not transfer else [])
            + (["--transfer"] if transfer else []) + (["--keep-job-dir"] if keep else []))


def staging() -> tuple[str, bool, bool]:
    """settings.json's ``batch_job_dir`` (jobs work in a folder of their own under it: '' = in the result
    folder), ``batch_transfer`` (HTCondor file transfer instead of a shared file system) and
    ``batch_keep_job_dir`` (keep each job's folder, for debugging)."""
    return (str(b2luigi.get_setting("batch_job_dir", "") or ""), bool(b2luigi.get_setting("batch_transfer", False)),
            bool(b2luigi.get_setting("batch_keep_job_dir", False)))


def staged() -> bool:
    """Whether jobs work in a job folder of their own (:mod:`tasks.stage`), not in the result folder."""
    job_dir, transfer, _ = staging()
    return bool(job_dir) or transfer


def transfer_files(task: luigi.Task) -> list[str]:
    """b2luigi's ``transfer_files`` of ``task``: its :data:`tasks.stage.INPUTS_TAR` with ``batch_transfer``."""
    return [os.path.join(task.get_task_file_dir(), stage.INPUTS_TAR)] if staging()[1] else []


def transfer_outputs() -> dict[str, str]:
    """HTCondor commands bringing a transfer-mode job's outputs back into its batch folder (none otherwise)."""
    return {"transfer_output_files": f"{stage.OUTPUTS_TAR},{RESULT_FILE}"} if staging()[1] else {}


def job_executable(env: dict[str, Any]) -> list[str]:
    """The command running :mod:`tasks.entry` in a job, from settings.json's ``batch_env``: ``{}`` the submitting
    Python (same path on the node), ``{"venv": DIR}`` ``DIR/bin/python``, ``{"container": IMAGE}`` ``apptainer
    exec [--bind B ...] IMAGE python3`` (``python``: another interpreter in the image; ``binds``: folders to
    mount). calibflow must be installed in that environment."""
    unknown = sorted(set(env) - set(ENV_KEYS))
    if unknown or ("venv" in env and "container" in env):
        raise SetupError(f"settings.json: batch_env takes one of venv or container (and python, binds), got {env}")
    if "venv" in env:
        python = [os.path.join(os.path.expandvars(env["venv"]), "bin", "python")]
    elif "container" in env:
        binds = [a for b in env.get("binds", []) for a in ("--bind", b)]
        python = ["apptainer", "exec", *binds, env["container"], env.get("python", "python3")]
    else:
        python = [env.get("python", sys.executable)]
    return [*python, "-m", "tasks.entry"]


def configure_submission(system: BatchSystems, status_ttl: float | None = None) -> None:
    """Make b2luigi submit ``python -m tasks.entry`` jobs in the environment of ``batch_env``, from the current
    folder (staged jobs: from their own folder); set the status cache TTL.

    ``status_ttl`` defaults to ``job_status_cache_ttl`` of settings.json, else :data:`DEFAULT_STATUS_TTL`.
    """
    env = b2luigi.get_setting("batch_env", {}) or {}
    if not isinstance(env, dict):
        raise SetupError(f"settings.json: batch_env must be an object such as {{\"venv\": \"/path\"}}, got {env!r}")
    b2luigi.set_setting("executable", job_executable(env))
    b2luigi.set_setting("add_filename_to_cmd", False)
    b2luigi.set_setting("working_dir", "." if staged() else os.getcwd())
    default = DEFAULT_STATUS_TTL.get(system, 20.0)
    value = status_ttl if status_ttl is not None else b2luigi.get_setting("job_status_cache_ttl", default)
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
    """Mixed into b2luigi's batch processes: report what the job's ``result.json`` says, resubmit a job that died
    for an infrastructure reason, stage the files of a job without a shared file system.

    b2luigi only knows whether the job ended well; the result file adds dynamic dependencies (the job
    yielded tasks that are not complete: they are scheduled and the task is submitted again), the
    failure reason and a check that the outputs exist. A job killed by the infrastructure (:mod:`tasks.heal`)
    is submitted again, up to ``resources.<family>.retries`` times, with more memory and time.
    """

    task: Any
    _terminated: bool
    _result_queue: Any
    resubmitted: list[tuple[luigi.Task, str]] | None = None
    """Set by the worker: (task, what happened) per resubmission, for the run report."""
    _infra = ""

    def start_job(self) -> None:
        """Forget the result of an earlier job of this task, prepare a staged job's inputs, then submit."""
        if os.path.exists(result_path(self.task)):
            os.remove(result_path(self.task))
        if staged():
            stage.prepare(self.task, dynamic_deps(self.task), staging()[1])
        if isinstance(getattr(self, "_batch_job_ids", None), list):  # HTCondor keeps every id it submitted
            self._batch_job_ids = []
        super().start_job()  # type: ignore[misc]

    def is_alive(self) -> bool:
        """False once the job has ended (its outcome is then on the result queue) and was not resubmitted."""
        if self._terminated:
            return False
        state = self.get_job_status()  # type: ignore[attr-defined]
        if state in (JobStatus.running, JobStatus.idle) and heal.job_state(self) != "PREEMPTED":
            return True  # (b2luigi counts Slurm's PREEMPTED as running; without a requeue it is the end)
        stage.receive(self.task)  # a transfer-mode job's outputs
        if self._resubmit():
            return True
        self._terminated = True
        self._report(state == JobStatus.successful)
        return False

    def _job_id(self) -> Any:
        return getattr(self, "_batch_job_id", None) or (getattr(self, "_batch_job_ids", None) or [None])[-1]

    def _resubmit(self) -> bool:
        """Submit the task again if its job died for an infrastructure reason and retries are left."""
        task = self.task
        result = read_result(task)
        oom = heal.memory_killed(os.path.join(task.get_log_file_dir(), "stderr"))
        why = heal.infrastructure_failure(heal.job_state(self), result, lambda: task.complete(), oom)
        if why is None:
            return False
        attempt, retries = task.batch_attempt, task.plan.config.resources_for(task.task_family).retries or 0
        tried = f"; after {attempt} retr{'y' if attempt == 1 else 'ies'}" if attempt else ""
        self._infra = (f"batch job {self._job_id()} ended before the task finished ({why}{tried}; "
                       f"see {task.get_log_file_dir()})")
        if attempt >= retries:
            return False
        task.batch_attempt = attempt + 1
        note = (f"batch job {self._job_id()} ended {why}: resubmitted (retry {attempt + 1} of {retries}, "
                f"{heal.describe_resources(task.batch_resources)})")
        _log(task, note)
        if self.resubmitted is not None:
            self.resubmitted.append((task, note))
        self.start_job()
        return True

    def _report(self, job_ok: bool) -> None:
        result = read_result(self.task) or {}
        status, explanation = self._outcome(result, job_ok)
        new_deps = result.get("new_deps", []) if status == luigi.scheduler.PENDING else []
        self.task.batch_dynamic = [*getattr(self.task, "batch_dynamic", []), *new_deps]
        self._result_queue.put((self.task.task_id, status, explanation, result.get("missing", []), new_deps))

    def _outcome(self, result: dict[str, Any], job_ok: bool) -> tuple[str, Any]:
        """(luigi status, explanation) of the ended job; failures the job could not record are recorded."""
        status = result.get("status")
        if status == luigi.scheduler.PENDING and job_ok:
            return status, ""
        if status == luigi.scheduler.FAILED:  # the task failed in the job, which recorded the reason
            return status, result.get("explanation") or "failed (see the task log)"
        if self.task.complete():  # finished (a job killed after its outputs were complete is not rerun)
            return luigi.scheduler.DONE, result.get("explanation") or ""  # e.g. tasks.base.RESULTS_MADE
        if status == luigi.scheduler.DONE:
            reason = "the batch job finished but the task's outputs are missing"
        else:
            reason = self._infra or (f"batch job {self._job_id()} ended before the task finished "
                                     f"(see {self.task.get_log_file_dir()})")
        self.task.record_failure(reason)
        return luigi.scheduler.FAILED, reason


def dynamic_deps(task: luigi.Task) -> list[luigi.Task]:
    """The tasks ``task`` yielded in its earlier jobs of this run (their outputs are inputs of its next job)."""
    return [luigi.task_register.load_task(module, family, params)
            for module, family, params in getattr(task, "batch_dynamic", [])]


def _log(task: luigi.Task, line: str) -> None:
    """Append ``line`` to the task's own log (tasks.base.TaskLog's format), if it has one."""
    import time

    path = getattr(task, "log_path", None)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')},000 WARNING calibflow.batch: {line}\n")


@functools.cache
def process_class(system: BatchSystems) -> type | None:
    """b2luigi's process class of ``system`` with :class:`JobResultMixin`, or None (run locally)."""
    base = _PROCESSES.get(system)
    return None if base is None else type(f"Calib{base.__name__}", (JobResultMixin, base), {})
