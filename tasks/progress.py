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


def entries_read(task: luigi.Task) -> tuple[int, str] | None:
    """Entries read by a tuple-preparation task and what they are (from the cut flow of one of its outputs:
    the task reads its file once for all its preparations): ``events`` where candidates are paired from them
    (NanoAOD), ``candidates`` for a flat tuple (one per row); else None (another task, or an input left out as
    bad)."""
    if task.task_family != "PrepareTuple":
        return None
    path = next((t.path for t in luigi.task.flatten(task.output()) if os.path.exists(t.path)), None)
    if path is None:
        return None
    from calibflow.io.store import read_metadata
    from calibflow.prep.spec import read_unit

    flow = read_metadata(path).get("cutflow", {})
    return int(flow.get("read", 0)), read_unit(flow)


def prep_input(task: luigi.Task) -> str:
    """The input file a tuple-preparation task reads (for every variant; two samples may list one file)."""
    return task.plan.input_files(task.sample)[task.index]


def preparations(task: luigi.Task) -> int:
    """The prepared tuples a tuple-preparation task is to make (one per distinct preparation of its file that
    is missing; 1 for a task that does not say)."""
    to_make = getattr(task, "to_make", None)
    return len(to_make()) if callable(to_make) else 1


def yields_tasks(task: luigi.Task) -> bool:
    """Whether ``task`` may add tasks to the run when it runs (its ``run`` is a generator: luigi's dynamic
    dependencies)."""
    return inspect.isgeneratorfunction(type(task).run)


class Progress:
    """The run's progress, shown nowhere (``--quiet``); :class:`LineProgress` and the live bar show it.

    One counter for the whole run: tasks finished (done or failed) out of the tasks to run. The total grows
    when a task yields new tasks (dynamic dependencies) and is marked as such (``12/41+``) while a task that
    may yield (:func:`yields_tasks`) has not finished. Also kept: the running tasks with their start times,
    and tuple preparation: its input files (one file may be prepared for several variants) and the entries
    read (once per file read). Used as a context manager around the run.
    """

    def __init__(self) -> None:
        self.to_run: set[str] = set()
        self.finished_ids: set[str] = set()
        self.complete_before: set[str] = set()
        self.may_yield: set[str] = set()
        self.running: dict[str, tuple[str, float]] = {}
        """Per running task id: its label and start (``time.perf_counter()``, s)."""
        self.prep_total: dict[str, str] = {}
        """Per tuple-preparation task to run (id): its input file."""
        self.prep_count: dict[str, int] = {}
        """Per tuple-preparation task to run (id): the prepared tuples it makes."""
        self.prep_done: set[str] = set()
        """Tuple-preparation tasks done (ids)."""
        self.read: dict[str, int] = {}
        """Entries read by tuple preparation, per unit (``candidates``, ``events``)."""

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
        """``prep 2/5 files, 400000 candidates``: tuple preparation so far, counted in input files (a file is
        done when every task reading it is), with the prepared tuples where a file makes several (``prep 1/2
        files (3/4 preparations)``: variants with another selection), and the entries read (once per read)."""
        plus = "+" if self.growing else ""
        tasks: dict[str, set[str]] = {}
        for task_id, path in self.prep_total.items():
            tasks.setdefault(path, set()).add(task_id)
        done = sum(ids <= self.prep_done for ids in tasks.values())
        note = f"prep {done}/{len(tasks)}{plus} files"
        total = sum(self.prep_count.values())
        if total != len(tasks):
            made = sum(self.prep_count[t] for t in self.prep_done)
            note += f" ({made}/{total}{plus} preparations)"
        return ", ".join([note, *(f"{n} {unit}" for unit, n in self.read.items())])

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
            self.prep_total[task.task_id] = prep_input(task)
            self.prep_count[task.task_id] = preparations(task)
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
        if task.task_id in self.prep_total and status == luigi.scheduler.DONE:
            self.prep_done.add(task.task_id)
            read = entries_read(task)
            if read is not None:
                self.read[read[1]] = self.read.get(read[1], 0) + read[0]
                line += f": {read[0]} {read[1]} read"
            line += f" ({self.prep_note()})"
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
