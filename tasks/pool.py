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
import multiprocessing
import multiprocessing.pool
import time
from collections.abc import Iterable
from typing import Any

import luigi
import luigi.worker

_RESULT_QUEUE: Any = None
"""The luigi worker's result queue, set before the pool forks (inherited by its processes)."""


class _NullReporter:
    """Status reporter of pooled tasks: tracking URLs, messages and progress stay in the pool process."""

    scheduler_messages = None

    def __getattr__(self, name: str) -> Any:
        """Every ``update_*``/``decrease_*`` call of luigi's reporter is accepted and ignored."""
        return lambda *args, **kwargs: None


def _run(task: luigi.Task, worker_id: str, context: str | None, options: dict[str, Any]) -> None:
    """In a pool process: run ``task`` with luigi's task-process logic (result on the inherited queue)."""
    process = luigi.worker.ContextManagedTaskProcess(context, task, worker_id, _RESULT_QUEUE, _NullReporter(),
                                                     use_multiprocessing=False, **options)
    process.run()


def preload_modules(tasks: Iterable[luigi.Task]) -> list[str]:
    """Modules that ``tasks`` import when they run (their classes' ``pool_preload``), to import before the
    pool forks rather than once per pool process (``calibflow.fit.measure`` pulls in scipy.stats: about a
    second, which a run of tuple preparation alone need not pay). An entry ``module:function`` names a
    set-up function to call as well (``calibflow.kernels.warm:warm_up``: numba's start-up)."""
    return sorted({m for t in tasks for m in getattr(type(t), "pool_preload", ())})


def _preload(entry: str) -> None:
    """Import the module of a :func:`preload_modules` entry; call its function if it names one."""
    module, _, function = entry.partition(":")
    imported = importlib.import_module(module)
    if function:
        getattr(imported, function)()


class TaskPool:
    """A fork-once pool of ``processes`` workers sharing the luigi worker's result queue; the modules
    ``preload`` are imported (and set-up functions called) first (see :func:`preload_modules`)."""

    def __init__(self, processes: int, result_queue: Any, preload: Iterable[str] = ()) -> None:
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
