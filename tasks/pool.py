"""Run luigi tasks in a pool of long-lived worker processes instead of one fork per task.

luigi forks a new process for every task when it has more than one worker; for per-bin fits that take
milliseconds, the fork (and the copy-on-write of the parent's pages that follows) costs more than the
fit. :class:`PoolTaskProcess` stands in for luigi's task process: it sends the task to a pool forked
once per run (after the kernels were warmed up) where luigi's own task-process logic runs it and puts
the result on the worker's result queue, inherited by the pool processes at fork time.
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import multiprocessing.pool
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import luigi
import luigi.task
import luigi.worker

_RESULT_QUEUE: Any = None
"""The luigi worker's result queue, set before the pool forks (inherited by its processes)."""


class _NullReporter:
    """Status reporter of pooled tasks: tracking URLs, messages and progress stay in the pool process."""

    scheduler_messages = None

    def __getattr__(self, name: str) -> Any:
        """Every ``update_*``/``decrease_*`` call of luigi's reporter is accepted and ignored."""
        return lambda *args, **kwargs: None


class _Held:
    """A result queue that holds luigi's task result until the task process's context has closed."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        """Keep ``item`` (sent on by :func:`_run`)."""
        self.items.append(item)


def _run(task: luigi.Task, worker_id: str, context: str | None, options: dict[str, Any]) -> None:
    """In a pool process: run ``task`` with luigi's task-process logic; its result goes on the inherited queue
    once the context (:class:`tasks.base.TaskLog`) has closed, so that a run never ends before its tasks' logs
    have their end lines (luigi puts the result inside the context)."""
    held = _Held()
    process = luigi.worker.ContextManagedTaskProcess(context, task, worker_id, held, _NullReporter(),
                                                     use_multiprocessing=False, **options)
    try:
        process.run()
    finally:
        for item in held.items:
            _RESULT_QUEUE.put(item)


def preload_modules(tasks: Iterable[luigi.Task]) -> list[str | KernelWarmUp]:
    """What to load before the pool forks for the tasks to run (``tasks``: those not complete), rather than
    once per pool process: the modules the tasks import (their classes' ``pool_preload``; ``calibflow.fit.measure``
    pulls in scipy.stats, about a second, which a run of tuple preparation alone need not pay), sorted; an entry
    ``module:function`` names a set-up function to call as well (``calibflow.kernels.warm:warm_up``: numba's
    start-up). Then one :class:`KernelWarmUp` per calibration whose tasks call numba kernels (:func:`kernel_stages`)."""
    tasks = list(tasks)
    modules: list[str | KernelWarmUp] = sorted({m for t in tasks for m in getattr(type(t), "pool_preload", ())})
    stages: dict[tuple[str, str, str, str], set[str]] = {}
    for t in tasks:
        found = kernel_stages(t)
        if found:  # per calibration and variant (variants may fit other shapes)
            stages.setdefault((t.config, t.result_dir, t.variant, t.run_file), set()).update(found)
    return modules + [KernelWarmUp(*key, frozenset(s)) for key, s in sorted(stages.items())]


def kernel_stages(task: luigi.Task) -> set[str]:
    """Stages of :data:`calibflow.ops.warmup.STAGES` whose kernels ``task`` (not complete) calls: its class's
    ``kernel_stages``, and for a task yielding dynamic dependencies (the tables: fits once the binning exists),
    those of the tasks it will yield that are not complete (its ``pending_kernel_stages()``; where that fails, e.g.
    on a damaged binning file, the task itself reports it when it runs: none)."""
    found = set(getattr(type(task), "kernel_stages", ()))
    pending = getattr(task, "pending_kernel_stages", None)
    try:
        return found | (pending() if pending is not None else set())
    except Exception:
        logging.getLogger("calibflow.warmup").debug("kernel stages of %s not known", task, exc_info=True)
        return found


def pending_stages(tasks: Iterable[luigi.Task]) -> set[str]:
    """Kernel stages (:func:`kernel_stages`) of those of ``tasks`` that are not complete and of their requirements
    that are not complete (for :meth:`pending_kernel_stages` of tasks with dynamic dependencies)."""
    found: set[str] = set()
    for t in tasks:
        if not t.complete():
            found |= kernel_stages(t) | pending_stages(luigi.task.flatten(t.requires()))
    return found


@dataclass(frozen=True)
class KernelWarmUp:
    """Load the kernels of ``stages`` of the calibration of the tasks' parameters (``config``, ``result_dir``,
    ``variant``, ``run_file``) before the fork (:func:`calibflow.ops.warmup.warm_up`)."""

    config: str
    result_dir: str
    variant: str
    run_file: str
    stages: frozenset[str]

    def __call__(self) -> list[str]:
        from calibflow.ops.warmup import warm_up
        from calibflow.plan import Plan

        return warm_up(Plan(self.config, self.result_dir, self.variant, self.run_file), self.stages)


def _preload(entry: str | KernelWarmUp) -> None:
    """Import the module of a :func:`preload_modules` entry; call its function if it names one (or the entry
    itself, a :class:`KernelWarmUp`)."""
    if callable(entry):
        entry()
        return
    module, _, function = entry.partition(":")
    imported = importlib.import_module(module)
    if function:
        getattr(imported, function)()


class TaskPool:
    """A fork-once pool of ``processes`` workers sharing the luigi worker's result queue; the modules
    ``preload`` are imported (and set-up functions called) first (see :func:`preload_modules`)."""

    def __init__(self, processes: int, result_queue: Any, preload: Iterable[str | KernelWarmUp] = ()) -> None:
        global _RESULT_QUEUE
        _RESULT_QUEUE = result_queue
        for entry in preload:
            _preload(entry)
        gc.freeze()  # the pool processes' garbage collectors then leave the parent's pages alone (no copies);
        # no gc.collect() first: it costs ~60 ms in a process with calibflow's imports, for little garbage
        self._pool = multiprocessing.get_context("fork").Pool(processes)

    def submit(self, process: luigi.worker.TaskProcess, context: str | None) -> PoolTaskProcess:
        """Send luigi's task process ``process`` to the pool; return its stand-in."""
        options = {"worker_timeout": process.worker_timeout, "check_unfulfilled_deps": process.check_unfulfilled_deps,
                   "check_complete_on_run": process.check_complete_on_run}
        result = self._pool.apply_async(_run, (process.task, process.worker_id, context, options))
        return PoolTaskProcess(process, result)

    def close(self) -> None:
        """Stop the pool processes."""
        self._pool.terminate()
        self._pool.join()


class PoolTaskProcess:
    """What luigi's worker needs of a task process, for a task running in a :class:`TaskPool`."""

    use_multiprocessing = False  # luigi then calls run(), which only waits for nothing: the pool runs it

    def __init__(self, process: luigi.worker.TaskProcess, result: multiprocessing.pool.AsyncResult) -> None:
        self.task = process.task
        self.worker_timeout = process.worker_timeout
        self.timeout_time = process.timeout_time
        self.status_reporter = _NullReporter()
        self._result = result
        self._started = time.time()

    def run(self) -> None:
        """Nothing to do here: the pool runs the task and reports on the result queue."""

    def is_alive(self) -> bool:
        return not self._result.ready()

    @property
    def exitcode(self) -> int | None:
        if not self._result.ready():
            return None
        return 0 if self._result.successful() else 1

    def terminate(self) -> None:
        """A pooled task cannot be stopped alone; the pool is terminated with the run."""
