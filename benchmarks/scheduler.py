"""Benchmark: scheduling overhead per task, luigi's local scheduler vs. a central luigid.

    python benchmarks/scheduler.py [--tasks N] [--port P]

Builds N trivial tasks (no output files; ``run`` marks the task done in memory) under one wrapper task,
with calibflow's runner and worker (one worker, tasks run in-process), first with a local scheduler,
then with a luigid started on localhost for the measurement and stopped afterwards. The time includes
scheduling the graph, running every task and the completion checks. The last line printed is
``scheduler: <ms> ms/task local, <ms> ms/task central``.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time

import luigi

from calibflow.ops import scheduler
from tasks.runner import SchedulerAddress, run_tasks

DONE: set[tuple[str, int]] = set()


class Trivial(luigi.Task):
    """Does nothing; complete once run in this process (per benchmark round)."""

    round = luigi.Parameter()
    i = luigi.IntParameter()

    def complete(self) -> bool:
        return (self.round, self.i) in DONE

    def run(self) -> None:
        DONE.add((self.round, self.i))


class AllTrivial(luigi.WrapperTask):
    """Requires ``n`` trivial tasks."""

    round = luigi.Parameter()
    n = luigi.IntParameter()

    def requires(self):
        return [Trivial(round=self.round, i=i) for i in range(self.n)]


def ms_per_task(n: int, round_name: str, address: SchedulerAddress | None) -> float:
    """Milliseconds per task to schedule and run ``n`` trivial tasks."""
    t0 = time.perf_counter()
    result = run_tasks([AllTrivial(round=round_name, n=n)], workers=1, scheduler=address)
    seconds = time.perf_counter() - t0
    if not result.scheduling_succeeded or len(DONE) < n:
        raise SystemExit(f"ERROR: the {round_name} round did not run all {n} tasks")
    DONE.clear()
    return 1e3 * seconds / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000, help="number of trivial tasks (default 1000)")
    p.add_argument("--port", type=int, help="port for the benchmark's luigid (default: a free one)")
    args = p.parse_args()
    port = args.port
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

    local = ms_per_task(args.tasks, "local", None)
    print(f"local scheduler:   {local:7.2f} ms/task")
    with tempfile.TemporaryDirectory(prefix="calibflow-bench-luigid-") as state:
        srv = scheduler.start(port, state)
        try:
            central = ms_per_task(args.tasks, "central", SchedulerAddress("localhost", srv.port))
        finally:
            scheduler.stop(state)
    print(f"central scheduler: {central:7.2f} ms/task (luigid on port {srv.port})")
    print(f"scheduler: {local:.1f} ms/task local, {central:.1f} ms/task central")


if __name__ == "__main__":
    main()
