"""Run a task graph with luigi and summarise what ran, what was reused and what failed (and why).

One worker class serves every mode: a local or a central scheduler (``luigid``), tasks run locally or
submitted as batch jobs (b2luigi: Slurm, HTCondor, LSF). It reports the run's progress
(:mod:`tasks.progress`: a live bar on a terminal, plain lines otherwise), waits for tasks of the same
calibration that another invocation is running (central scheduler), and the report counts what this
invocation ran, reused, saw run by others, and what failed (by the tasks' readable labels) with the reason.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import luigi
import luigi.interface
import luigi.rpc
import luigi.scheduler
import luigi.worker
from b2luigi.batch.workers import BatchSystems, SendJobWorker
from luigi.execution_summary import _summary_dict

from calibflow.io.integrity import CorruptIntermediate
from calibflow.io.store import pid_alive
from calibflow.kernels.cache import numba_extensions_of
from calibflow.ops.scheduler import SetupError
from tasks import batch
from tasks.base import RESULTS_MADE, TaskPlan, clear_tolerated, describe, failure_reason, mark_tolerated
from tasks.pool import TaskPool, preload_modules
from tasks.progress import Progress, make_progress

_TMP = re.compile(r"\.tmp-(\d+)$")
IDLE_GRACE = 10.0
"""Seconds an invocation waits, under a central scheduler, after other workers stop running its tasks."""


@dataclass(frozen=True)
class SchedulerAddress:
    """Host and port of a central luigi scheduler."""

    host: str
    port: int


@dataclass
class RunReport:
    """Outcome of one invocation: results made and reused per family, tasks run and reused per family, and one
    line per failed task.

    ``ran`` and ``reused`` count results: one per task, except FitBin, which counts bins (a FitBin task fits
    a chunk of bins, and only those whose result is missing). ``tasks_ran`` and ``tasks_reused`` count tasks.
    ``failed`` holds (task label, e.g. ``PrepareTuple(sample=data, index=0)``, one-line reason); the tasks'
    logs, with the tracebacks, are under ``log_dir``.
    """

    ok: bool
    ran: Counter[str] = field(default_factory=Counter)
    reused: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_run: int = 0
    by_others: Counter[str] = field(default_factory=Counter)
    cleaned: list[str] = field(default_factory=list)
    tasks_ran: Counter[str] = field(default_factory=Counter)
    tasks_reused: Counter[str] = field(default_factory=Counter)
    log_dir: str = ""
    resubmitted: list[tuple[str, str]] = field(default_factory=list)
    """(task label, what happened) per batch job resubmitted after an infrastructure failure (tasks.heal)."""
    tolerated: list[tuple[str, str, list[int]]] = field(default_factory=list)
    """(task label, reason, bins without a result) per FitBin failure within ``resources.FitBin.tolerance``."""

    def summary(self) -> str:
        """One line: tasks run, reused and failed (and run by another invocation), then the families run."""
        families = ", ".join(f"{self.ran[f]} {f}" + (f" results in {n} task(s)" if n != self.ran[f] else "")
                             for f, n in sorted(self.tasks_ran.items()))
        others = sum(self.by_others.values())
        return (f"{sum(self.tasks_ran.values())} task(s) run, {sum(self.tasks_reused.values())} reused, "
                f"{len(self.failed)} failed" + (f", {others} run by another invocation" if others else "")
                + (f" ({families})" if families else ""))


# --- stale temporaries ------------------------------------------------------------------------------
def clean_stale_temporaries(root: str) -> list[str]:
    """Remove ``<path>.tmp-<pid>`` files under ``root`` whose writer (``pid`` on this host) is gone.

    Writers use :func:`calibflow.io.store.atomic_path`; a killed writer leaves its temporary behind.
    Temporaries of running processes (another invocation on this host) are kept. Returns the removed paths.
    """
    removed = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            m = _TMP.search(name)
            if m and not pid_alive(int(m.group(1))):
                path = os.path.join(dirpath, name)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed


# --- worker -----------------------------------------------------------------------------------------
TASK_FAILED = "[pid %s] Worker %s failed"
"""Start of luigi's message for a failed task (``luigi.worker.TaskProcess.run``)."""


class _NoTaskTracebacks(logging.Filter):
    """Leaves out luigi's console record of a failed task (its traceback, naming the task by its full
    parameters): the task's own log keeps it, and the progress and the closing lines give the task's label
    and one-line reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TASK_FAILED)


def _quiet_task_failures() -> None:
    """Add :class:`_NoTaskTracebacks` to the console handlers of luigi's logger (set up by ``luigi.build``)."""
    for handler in logging.getLogger("luigi-interface").handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if console and not any(isinstance(f, _NoTaskTracebacks) for f in handler.filters):
            handler.addFilter(_NoTaskTracebacks())


class CalibWorker(SendJobWorker):
    """b2luigi's batch worker with progress reporting, batch-job results and patience for other workers.

    ``batch=False`` runs every task locally (whatever settings.json says), ``batch=True`` submits each
    task to the batch system of settings.json (tasks whose batch system is ``local`` run locally).
    """

    def __init__(self, *args: Any, batch: bool = False, progress: Progress | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _quiet_task_failures()
        self.batch = batch
        self.progress = progress or Progress()
        self._quiet_since: float | None = None
        self._pool: TaskPool | None = None
        self.results_made: dict[str, int] = {}
        self.resubmitted: list[tuple[luigi.Task, str]] = []
        self.tolerated: list[tuple[luigi.Task, str]] = []
        self.failure_lines: dict[str, str] = {}
        """Task id -> the last line of luigi's explanation of its failure (the exception), for a summary
        that names the reason even when the failure record could not be written (a full disk)."""
        """Per task id, the results a finished task says it made (``tasks.base.RESULTS_MADE``)."""

    def __exit__(self, *args: Any) -> Any:
        if self._pool is not None:
            self._pool.close()
        return super().__exit__(*args)

    def _create_task_process(self, task: luigi.Task) -> Any:
        self.progress.started_task(task)
        self._quiet_since = None
        local = not self.batch or (getattr(task, "publishes", False) and batch.staged())  # publish where the folder is
        cls = None if local else batch.process_class(self.detect_batch_system(task))
        if cls is None:
            process = luigi.worker.Worker._create_task_process(self, task)
            if self.worker_processes > 1 and not self.batch and not process.timeout_time:
                if self._pool is None:
                    self._pool = TaskPool(self.worker_processes, self._task_result_queue,
                                          preload_modules(t for t in self._scheduled_tasks.values() if t.task_id in self.progress.to_run))
                return self._pool.submit(process, self._config.task_process_context)
            return process
        process = cls(task=task, scheduler=self._scheduler, result_queue=self._task_result_queue,
                      worker_timeout=self._config.timeout)
        process.resubmitted = self.resubmitted
        return process

    def _add_task(self, *args: Any, **kwargs: Any) -> None:
        task = self._scheduled_tasks.get(kwargs["task_id"])
        failed = task is not None and kwargs.get("status") == luigi.scheduler.FAILED and "new_deps" in kwargs
        if failed and self._tolerate(task, _last_line(kwargs.get("expl"))):
            kwargs["status"] = luigi.scheduler.DONE  # the tables go on without its bins
        super()._add_task(*args, **kwargs)
        if task is None:
            return
        if "new_deps" in kwargs:  # the outcome of a run (else the graph holds the task: see Worker._add)
            self.progress.finished(task, kwargs["status"], kwargs["new_deps"] or [])
            made = _results_made(kwargs.get("expl"))
            if kwargs["status"] == luigi.scheduler.DONE and made is not None:
                self.results_made[task.task_id] = made
            if kwargs["status"] == luigi.scheduler.FAILED:
                self.failure_lines[task.task_id] = _last_line(kwargs.get("expl"))
        else:
            self.progress.scheduled(task, kwargs["status"])

    def _tolerate(self, task: luigi.Task, line: str) -> bool:
        """Whether the failure of ``task`` is within ``resources.FitBin.tolerance`` (the fraction of this run's
        FitBin tasks allowed to fail): then marked tolerated (tasks.base.mark_tolerated) and remembered."""
        if task.task_family != "FitBin":
            return False
        allowed = task.plan.config.resources_for("FitBin").tolerance or 0.0
        fits = sum(t.task_family == "FitBin" for t in self._scheduled_tasks.values())
        if len(self.tolerated) + 1 > allowed * fits:
            return False
        reason = failure_reason(task.plan, task, line)
        mark_tolerated(task, reason)
        self.tolerated.append((task, reason))
        return True

    def _keep_alive(self, get_work_response: Any) -> bool:
        """With a central scheduler, wait while another worker runs tasks of our calibrations.

        Our pending tasks may be waiting for another invocation's tasks (or for tasks it added as
        dynamic dependencies). The wait ends after ``IDLE_GRACE`` seconds in which no such task runs
        (the moments between two of its tasks do not count), or when nothing of ours is pending.
        """
        if get_work_response.running_tasks:  # tasks of ours, running in another worker
            self._quiet_since = None
            return True
        if get_work_response.n_pending_tasks == 0 or not isinstance(self._scheduler, luigi.rpc.RemoteScheduler):
            return False
        if self._others_run_ours():
            self._quiet_since = None
            return True
        self._quiet_since = self._quiet_since or time.monotonic()
        return time.monotonic() - self._quiet_since < IDLE_GRACE

    def _others_run_ours(self) -> bool:
        """Whether the scheduler has a RUNNING task with the config and result folder of one of ours."""
        ours = {(t.param_kwargs.get("config"), t.param_kwargs.get("result_dir")) for t in self._scheduled_tasks.values()}
        running = self._scheduler.task_list(status=luigi.scheduler.RUNNING, upstream_status="")
        if "num_tasks" in running:  # too many to list: assume some are ours
            return True
        return any((t["params"].get("config"), t["params"].get("result_dir")) in ours for t in running.values())


def _last_line(expl: str | None) -> str:
    """The last non-empty line of a failure's explanation (luigi sends the task's traceback JSON-encoded: its
    last line is the exception), or ''; a full disk says what to do."""
    try:
        text = json.loads(expl) if expl else ""
    except ValueError:
        text = expl or ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    if f"[Errno {errno.ENOSPC}]" in line:
        line += " (the disk is full: free space and rerun; what finished is kept)"
    return line


def _results_made(expl: str | None) -> int | None:
    """The number of results a task made, from the JSON explanation of its success (None if not given)."""
    try:
        value = json.loads(expl) if expl else None
    except ValueError:
        return None
    made = value.get(RESULTS_MADE) if isinstance(value, dict) else None
    return made if isinstance(made, int) else None


PRUNE_SECONDS = 10.0
"""Seconds between two prunings of the local scheduler's task graph."""


class _LocalScheduler(luigi.scheduler.Scheduler):
    """luigi's local scheduler, pruning its task graph (dead workers, failed tasks due for a retry, done
    tasks past their removal delay) every :data:`PRUNE_SECONDS` rather than on every request for work:
    pruning looks at every task, a quarter of luigi's per-task cost in graphs of a thousand tasks."""

    def __init__(self) -> None:
        super().__init__(prune_on_get_work=False, record_task_history=False)
        self._pruned_at = -PRUNE_SECONDS

    def get_work(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            self.prune()
        return super().get_work(*args, **kwargs)


class _Factory(luigi.interface._WorkerSchedulerFactory):
    """Creates :class:`CalibWorker` instances with the run's mode and progress, and the local scheduler."""

    def __init__(self, batch: bool, progress: Progress) -> None:
        self.batch = batch
        self.progress = progress

    def create_local_scheduler(self) -> _LocalScheduler:
        return _LocalScheduler()

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> CalibWorker:
        return CalibWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant,
                           batch=self.batch, progress=self.progress)


# --- running ----------------------------------------------------------------------------------------
def _configure_luigi() -> None:
    """luigi defaults for calibflow unless the user's luigi config sets them.

    No range-task autoloading (luigi's future default, silences its warning); per-task log files
    (:class:`tasks.base.TaskLog`); a short idle wait while another invocation runs our tasks.
    """
    cfg = luigi.configuration.get_config()
    for section, option, value in (("core", "autoload_range", "false"),
                                   ("worker", "task_process_context", "tasks.base.TaskLog"),
                                   ("worker", "wait_jitter", "0.5")):
        if not cfg.has_section(section):
            cfg.add_section(section)
        if not cfg.has_option(section, option):
            cfg.set(section, option, value)


def check_batch_system(task: luigi.Task) -> str:
    """The batch system ``task`` would be submitted to; SetupError if it is not Slurm, HTCondor or LSF."""
    system = SendJobWorker.detect_batch_system(None, task)  # uses only the settings, not the worker
    if batch.process_class(system) is None:
        allowed = ", ".join(s.value for s in (BatchSystems.slurm, BatchSystems.htcondor, BatchSystems.lsf))
        raise SetupError(f"--batch: batch_system in settings.json is {system.value!r} "
                         f"(or 'auto' found no batch system); use one of {allowed}")
    return system.value


def run_tasks(tasks: Sequence[luigi.Task], workers: int = 1, scheduler: SchedulerAddress | None = None,
              batch_mode: bool = False, progress: Progress | None = None) -> luigi.LuigiRunResult:
    """Run ``tasks`` (local scheduler unless ``scheduler``) showing ``progress``; return luigi's detailed
    result."""
    _configure_luigi()
    numba_extensions_of()  # calibflow's process: no other package's numba extension (vector's: ~0.45 s)
    if batch_mode:
        batch.configure_submission(SendJobWorker.detect_batch_system(None, tasks[0]))
    if workers > 1 and not batch_mode:
        # luigi forks a process per task: freeze what exists now so that no child's garbage collector
        # touches (and copies) the parent's pages — halves the cost of a small task here (no gc.collect()
        # first: ~60 ms with calibflow's imports, while the garbage it would free is small)
        gc.freeze()
    where: dict[str, Any] = ({"scheduler_host": scheduler.host, "scheduler_port": scheduler.port}
                             if scheduler else {"local_scheduler": True})
    progress = progress or Progress()
    with progress:
        return luigi.build(list(tasks), workers=workers, detailed_summary=True, log_level="WARNING",
                           worker_scheduler_factory=_Factory(batch_mode, progress), **where)


def build(plan: TaskPlan, tasks: Sequence[luigi.Task], workers: int = 1, scheduler: SchedulerAddress | None = None,
          batch_mode: bool = False, progress: TextIO | None = None) -> RunReport:
    """Run ``tasks`` of ``plan`` (a calibration's or a KDE config's: :class:`tasks.base.TaskPlan`), removing stale
    temporaries of killed runs and jobs; return the report.

    ``workers`` is the number of local processes, or of batch jobs in flight with ``batch_mode``.
    Progress goes to ``progress`` (None: silent): a live bar if it is a terminal, else plain lines.
    """
    if batch_mode:
        check_batch_system(tasks[0])
    cleaned = clean_stale_temporaries(plan.workdir) if os.path.isdir(plan.workdir) else []
    clear_tolerated(plan)  # a failure tolerated by an earlier run is tried again
    if cleaned and progress is not None:
        print(f"removed {len(cleaned)} stale temporary file(s) left by an interrupted run", file=progress)
    result = run_tasks(tasks, workers, scheduler, batch_mode, make_progress(progress, plan.config.name))
    earlier: list[luigi.LuigiRunResult] = []
    seen: set[str] = set()
    while len(earlier) < MAX_REBUILDS and (corrupt := _corrupt_inputs(plan, result) - seen):
        # the tasks that found them removed them (tasks.base): a rerun rebuilds them, then runs the tasks
        seen |= corrupt
        for reason in sorted(corrupt):
            print(f"calibflow: removed {reason}; rebuilding it", file=progress or sys.stderr)
        earlier.append(result)
        result = run_tasks(tasks, workers, scheduler, batch_mode, make_progress(progress, plan.config.name))
    cleaned += clean_stale_temporaries(plan.workdir) if os.path.isdir(plan.workdir) else []  # of killed jobs
    s = _summary_dict(result.worker)
    failed = s["failed"] | s["scheduling_error"]
    waiting = (s["still_pending_ext"] | s["still_pending_not_ext"] | s.get("upstream_failure", set())
               | s["run_by_other_worker"])
    by_others = {t for t in waiting if t not in failed and t.complete()}  # done by another invocation
    pending = waiting - by_others - failed
    ran, reused, tasks_ran = _ran(result)
    for t in s["already_done"]:
        reused[t.task_family] += _results(t)
    tasks_reused = Counter(t.task_family for t in s["already_done"])
    for before in earlier:  # what an earlier pass ran, the last one reused
        made, _, tasks = _ran(before)
        ran, reused, tasks_ran, tasks_reused = ran + made, reused - made, tasks_ran + tasks, tasks_reused - tasks
    report = RunReport(
        ok=not failed and not pending,
        ran=+ran,
        reused=+reused,
        failed=sorted(((describe(t), failure_reason(plan, t, result.worker.failure_lines.get(t.task_id)))
                       for t in failed), key=lambda f: _natural(f[0])),
        not_run=len(pending),
        by_others=Counter(t.task_family for t in by_others),
        cleaned=cleaned,
        tasks_ran=tasks_ran,
        tasks_reused=tasks_reused,
        log_dir=os.path.join(plan.workdir, "logs"),
        resubmitted=[(describe(t), note) for t, note in result.worker.resubmitted],
        tolerated=[(describe(t), reason, _missing_bins(t)) for t, reason in result.worker.tolerated],
    )
    clear_tolerated(plan)
    return report


MAX_REBUILDS = 5
"""Reruns of a graph in one invocation to rebuild corrupt intermediates its tasks found (and removed): a
damaged prepared tuple may be found only once the histograms made from it were rebuilt."""


def _corrupt_inputs(plan: TaskPlan, result: luigi.LuigiRunResult) -> set[str]:
    """The failures of a run caused by a corrupt intermediate (``<path>: <what is wrong>``)."""
    s = _summary_dict(result.worker)
    reasons = (failure_reason(plan, t, result.worker.failure_lines.get(t.task_id)) for t in s["failed"])
    mark = f"{CorruptIntermediate.__name__}: "
    return {r.split(mark, 1)[1] for r in reasons if mark in r}


def _ran(result: luigi.LuigiRunResult) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Per family, the results a run made and those its completed tasks reused (FitBin fits only the missing
    bins of its chunk), and the tasks it ran."""
    ran: Counter[str] = Counter()
    reused: Counter[str] = Counter()
    completed = _summary_dict(result.worker)["completed"]
    for t in completed:  # a task that does not say how many results it made made all of them
        n = _results(t)
        made = min(result.worker.results_made.get(t.task_id, n), n)
        ran[t.task_family] += made
        reused[t.task_family] += n - made
    return ran, reused, Counter(t.task_family for t in completed)


def _missing_bins(task: luigi.Task) -> list[int]:
    """The bins of a FitBin task without a result file."""
    return [i for i, p in zip(task.bin_indices(), task.result_paths(), strict=False) if not os.path.exists(p)]


def _natural(text: str) -> list[str | int]:
    """Sort key ordering the numbers in ``text`` by value (``bin_index=20`` before ``bin_index=100``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _results(task: luigi.Task) -> int:
    """Results ``task`` stands for in the report (:meth:`tasks.base.CalibTask.results`; 1 for other tasks)."""
    results = getattr(task, "results", None)
    return results() if callable(results) else 1

