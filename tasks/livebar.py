"""The live progress bar of a run on a terminal (``rich``; imported only when stdout is a terminal)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

from tasks.progress import Progress

MAX_LABELS = 4
"""Running tasks named under the bar (the others are counted)."""
BAR_WIDTH = 24
TITLE_WIDTH = 24
"""Characters of the bar and of the title (the calibration's name), so that the line fits 80 columns."""


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Bar(RichProgress):
    """rich's progress display with lines under the bar (tuple preparation, running tasks), each cut to the
    terminal's width."""

    notes: tuple[str, ...] = ()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for note in self.notes:
            yield Text(f"  {note}", no_wrap=True, overflow="ellipsis", style="dim")


class _Spinner(SpinnerColumn):
    """A spinner while the run goes on, nothing once it is over."""

    def render(self, task: Task) -> RenderableType:
        return Text(" ") if task.fields.get("over") else super().render(task)


class _Eta(ProgressColumn):
    """Time left at the recent rate (rich's estimate), ``≥`` while the total may still grow."""

    def render(self, task: Task) -> Text:
        if task.finished or task.fields.get("over"):
            return Text("")
        left = task.time_remaining
        when = "-:--:--" if left is None else ("≥" if task.fields.get("grows") else "") + clock(left)
        return Text(f"ETA {when}", style="progress.remaining")


class BarProgress(Progress):
    """A live bar: counter (``23/41+ tasks``), elapsed time, ETA, tuple preparation, and under it the labels
    of the running tasks; a failure is printed above the bar when it happens. The bar appears when the first
    task starts (a run with nothing to do prints nothing) and stays, final, when the run ends."""

    def __init__(self, stream: TextIO, title: str) -> None:
        super().__init__()
        # no redirection of sys.stdout/stderr: the worker pool forks while the bar is live
        title_column = Column(no_wrap=True, overflow="ellipsis", max_width=TITLE_WIDTH)
        self.bar = _Bar(_Spinner(), TextColumn("{task.description}", table_column=title_column),
                        BarColumn(bar_width=BAR_WIDTH), TextColumn("{task.fields[counter]} tasks"),
                        TimeElapsedColumn(), _Eta(table_column=Column(no_wrap=True)), console=Console(file=stream),
                        refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
        self.task = self.bar.add_task(title, total=None, counter="0/0", grows=True, over=False)
        self.live = False

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self.live:
            self.running.clear()
            self._update()
            self.bar.update(self.task, over=True)
            self.bar.stop()

    def _event(self, text: str, failed: bool = False) -> None:
        if failed:
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _update(self) -> None:
        if not self.to_run:
            return
        labels = [label for label, _ in sorted(self.running.values(), key=lambda ls: ls[1])]
        more = len(labels) - MAX_LABELS
        running = ", ".join(labels[:MAX_LABELS]) + (f" and {more} more" if more > 0 else "")
        self.bar.notes = ((self.prep_note(),) if self.prep_total else ()) + ((f"running: {running}",) if labels else ())
        self.bar.update(self.task, completed=len(self.finished_ids), total=len(self.to_run), counter=self.counter,
                        grows=self.growing)
        if not self.live and (self.running or self.finished_ids):  # the graph is known: luigi runs tasks
            self.bar.start()
            self.live = True
