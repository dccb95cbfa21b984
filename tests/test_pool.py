"""Multi-worker runs execute tasks in a fork-once pool: same results as one worker, failures reported."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import ClassVar

from calibflow.plan import Plan
from tasks import ExportTables
from tasks.runner import build

from .conftest import small_demo_dict


def _run(d: dict, write_config, res: Path, workers: int):
    plan = Plan.create(write_config(d, f"{d['name']}.yaml"), res)
    return plan, build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=workers)


def test_two_workers_equal_one_worker(write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    plan1, one = _run(d, write_config, tmp_path / "one", 1)
    plan2, two = _run(d, write_config, tmp_path / "two", 2)
    assert one.ok and two.ok, (one.failed, two.failed)
    assert one.ran == two.ran
    for name in ("efficiencies.csv", "scale_factors.csv"):
        assert (Path(plan1.workdir) / name).read_bytes() == (Path(plan2.workdir) / name).read_bytes()  # NaN too
    assert not multiprocessing.active_children()  # the pool is gone with the run


def test_failure_in_a_pooled_task_is_reported(write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    d["pass"] = "probe_Assoc & 1.5"  # a bitwise test on a float: fails when evaluated
    _, report = _run(d, write_config, tmp_path / "res", 2)
    assert not report.ok
    assert any("PrepareTuple" in task and "&" in reason for task, reason in report.failed), report.failed
    assert not multiprocessing.active_children()


def test_the_pool_preloads_only_what_the_scheduled_tasks_import(write_config, tmp_path: Path) -> None:
    """A run of tuple preparation alone does not import the fitting code (scipy.stats, ~1 s) nor load the fit
    kernels before forking."""
    from tasks import FitBin, PrepareTuple
    from tasks.pool import KernelWarmUp, preload_modules

    plan = Plan.create(write_config(small_demo_dict(), "pre.yaml"), tmp_path / "res")
    common = {"config": plan.config_path, "result_dir": plan.result_dir}
    prep = [PrepareTuple(sample="data", index=i, **common) for i in range(2)]
    warm = "calibflow.kernels.warm:warm_up"

    def kernels(*stages: str) -> KernelWarmUp:
        return KernelWarmUp(plan.config_path, plan.result_dir, "", "", frozenset(stages))

    assert preload_modules(prep) == [warm, "calibflow.prep.prepare", kernels("prep")]
    assert preload_modules([*prep, FitBin(sample="data", bin_index=0, **common)]) == [
        "calibflow.fit.measure", "calibflow.fit.plots", warm, "calibflow.prep.prepare", kernels("prep", "fits")]
    assert preload_modules([ExportTables(**common)]) == []


_FORK_AFTER = """
import multiprocessing, sys
from tasks.pool import _preload
_preload(sys.argv[1])

def child(conn):
    from calibflow.kernels.warm import warm_up
    conn.send(warm_up())

receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
p = multiprocessing.get_context("fork").Process(target=child, args=(send,))
p.start()
print(receive.recv())
p.join()
"""


def test_numba_set_up_before_the_fork_is_inherited_by_pool_processes() -> None:
    """The preload entry ``module:function`` is called in the parent: a process forked afterwards finds
    numba set up, while one forked after a mere import still pays numba's start-up (fresh interpreters)."""
    import subprocess
    import sys

    def child_seconds(entry: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FORK_AFTER, entry], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).parents[1])
        return float(out.stdout.split()[-1])

    assert child_seconds("calibflow.kernels.warm:warm_up") < 0.05
    assert child_seconds("calibflow.kernels.warm") > 0.1


class ClosesSlowly:
    """A task-process context whose exit takes a while and says so in a shared list (as TaskLog's end line)."""

    closed: ClassVar[list[str]] = []

    def __init__(self, process: object) -> None:
        self.process = process

    def __enter__(self) -> ClosesSlowly:
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        time.sleep(0.2)
        ClosesSlowly.closed.append("closed")


def test_a_pooled_task_reports_only_after_its_context_closed() -> None:
    """luigi puts a task's result inside the task-process context: the pool holds it until the context (the
    task's log with its end line) has closed, so that a run never ends before its logs are complete."""
    import luigi

    import tasks.pool as pool

    class Done(luigi.Task):
        def run(self) -> None:
            pass

        def complete(self) -> bool:
            return bool(ClosesSlowly.closed)

    class Queue:
        def __init__(self) -> None:
            self.seen: list[tuple[object, list[str]]] = []

        def put(self, item: object) -> None:
            self.seen.append((item[1], list(ClosesSlowly.closed)))

    queue, ClosesSlowly.closed = Queue(), []
    before, pool._RESULT_QUEUE = pool._RESULT_QUEUE, queue
    try:
        pool._run(Done(), "w", f"{__name__}.ClosesSlowly", {"check_complete_on_run": False})
    finally:
        pool._RESULT_QUEUE = before
    assert queue.seen == [("DONE", ["closed"])]
