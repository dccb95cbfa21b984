"""The progress of a run: one counter for the whole task graph, shown as plain lines or as a live bar.

The worker (:class:`tasks.runner.CalibWorker`) reports tasks to run, started, finished and yielding new
tasks; :func:`make_progress` picks how to show them: a live ``rich`` bar on a terminal
(:class:`tasks.livebar.BarProgress`), plain lines otherwise (CI, batch jobs, a pipe or a file), nothing
for ``--quiet``.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from typing import TextIO

import luigi
import luigi.scheduler

from tasks.base import describe, failure_reason


def events_read(task: luigi.Task) -> int | None:
    """Candidates read by a tuple-preparation task (from its output's cut flow), else None."""
    if task.task_family != "PrepareTuple":
        return None
    path = getattr(task.output(), "path", "")
    if not os.path.exists(path):
        return None
    from calibflow.io.store import read_metadata

    return int(read_metadata(path).get("cutflow", {}).get("read", 0))


def yields_tasks(task: luigi.Task) -> bool:
    """Whether ``task`` may add tasks to the run when it runs (its ``run`` is a generator: luigi's dynamic
    dependencies)."""
    return inspect.isgeneratorfunction(type(task).run)


class Progress:
    """The run's progress, shown nowhere (``--quiet``); :class:`LineProgress` and the live bar show it.

    One counter for the whole run: tasks finished (done or failed) out of the tasks to run. The total grows
    when a task yields new tasks (dynamic dependencies) and is marked as such (``12/41+``) while a task that
    may yield (:func:`yields_tasks`) has not finished. Also kept: the running tasks with their start times,
    and the candidates read by tuple preparation. Used as a context manager around the run.
    """

    def __init__(self) -> None:
        self.to_run: set[str] = set()
        self.finished_ids: set[str] = set()
        self.complete_before: set[str] = set()
        self.may_yield: set[str] = set()
        self.running: dict[str, tuple[str, float]] = {}
        """Per running task id: its label and start (``time.perf_counter()``, s)."""
        self.prep_total: set[str] = set()
        self.prep_done = 0
        self.events = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.may_yield.clear()  # the run is over: the total is final

    @property
    def growing(self) -> bool:
        """Whether the total may still grow."""
        return bool(self.may_yield)

    @property
    def counter(self) -> str:
        """``done/total``, with a ``+`` while the total may still grow."""
        return f"{len(self.finished_ids)}/{len(self.to_run)}" + ("+" if self.growing else "")

    def prep_note(self) -> str:
        """``prep 2/5 files, 400000 events``: tuple preparation so far."""
        return (f"prep {self.prep_done}/{len(self.prep_total)}{'+' if self.growing else ''} files, "
                f"{self.events} events")

    def scheduled(self, task: luigi.Task, status: str) -> None:
        """The graph holds ``task`` with luigi ``status``: PENDING (to run) or DONE (complete already)."""
        if status == luigi.scheduler.DONE:
            self.complete_before.add(task.task_id)
        if status != luigi.scheduler.PENDING or task.task_id in self.to_run:
            return
        self.to_run.add(task.task_id)
        if yields_tasks(task):
            self.may_yield.add(task.task_id)
        if task.task_family == "PrepareTuple":
            self.prep_total.add(task.task_id)
        self._update()

    def started_task(self, task: luigi.Task) -> None:
        """``task`` starts (locally or as a job)."""
        self.running[task.task_id] = (describe(task), time.perf_counter())
        self._update()

    def finished(self, task: luigi.Task, status: str, new_deps: Sequence[str] = ()) -> None:
        """``task`` ended with luigi ``status``; PENDING: it yielded the tasks ``new_deps`` (ids) and runs
        again once they are done."""
        label, start = self.running.pop(task.task_id, (describe(task), time.perf_counter()))
        seconds = time.perf_counter() - start
        if status == luigi.scheduler.PENDING:
            needed = [d for d in new_deps if d not in self.complete_before and d not in self.finished_ids]
            self._event(f"{label} needs {len(needed)} more task(s)")
            self._update()
            return
        self.finished_ids.add(task.task_id)
        self.may_yield.discard(task.task_id)
        failed = status == luigi.scheduler.FAILED
        line = f"{label} {'FAILED' if failed else 'done'} in {seconds:.1f} s"
        if failed and hasattr(task, "plan"):
            line += f": {failure_reason(task.plan, task)}"
        n = events_read(task) if status == luigi.scheduler.DONE else None
        if n is not None:
            self.prep_done += 1
            self.events += n
            line += f": {n} events read ({self.prep_note()})"
        self._event(line, failed)
        self._update()

    def _event(self, text: str, failed: bool = False) -> None:
        """Show one event: a task finished (``failed``: it failed) or yielded new tasks."""

    def _update(self) -> None:
        """Show the current state."""


class LineProgress(Progress):
    """Plain lines, one per finished task or yield, for logs, CI and batch jobs:
    ``[12/41+] FitBin(sample=data, bin_index=0, bin_count=20) done in 0.4 s``."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def _event(self, text: str, failed: bool = False) -> None:
        total = len(self.to_run)
        plus = "+" if self.growing else ""
        print(f"[{len(self.finished_ids):>{len(str(total))}}/{total}{plus}] {text}", file=self.stream, flush=True)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal that can redraw a bar (not ``TERM=dumb``)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def make_progress(stream: TextIO | None, title: str = "calibflow") -> Progress:
    """A live bar titled ``title`` when ``stream`` is a terminal, plain lines otherwise, nothing for None."""
    if stream is None:
        return Progress()
    if is_terminal(stream):
        from tasks.livebar import BarProgress

        return BarProgress(stream, title)
    return LineProgress(stream)
