"""Batch-job entry point: run one calibflow task inside a batch job.

b2luigi submits ``python -m tasks.entry --batch-runner --task-id ID --family F --params JSON`` (see
:func:`tasks.batch.configure_submission`). The task is rebuilt from its family and string parameters
(config path, result folder, sample, index, ...), checked against the task id, and run by luigi's own
task process, so its log, dependency checks, dynamic dependencies, ``on_success`` and ``on_failure``
behave as in a local run. The outcome goes to ``result.json`` for the submitting process; the exit code
is 0 unless the task failed. With ``--job-dir`` or ``--transfer`` the task runs in a job folder of its own
(:mod:`tasks.stage`): inputs copied in, outputs copied back, ``result.json`` last.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
from collections.abc import Sequence
from typing import Any

import luigi
import luigi.scheduler
import luigi.worker

import tasks
from calibflow.kernels.cache import numba_extensions_of
from tasks import stage
from tasks.batch import result_path, write_result


class _NoReporter:
    """Status reporter for a task running outside a worker: messages and progress are dropped."""

    scheduler_messages = None

    def update_tracking_url(self, tracking_url: str) -> None:
        """Ignored."""

    def update_status_message(self, message: str) -> None:
        """Ignored."""

    def update_progress_percentage(self, percentage: float) -> None:
        """Ignored."""

    def decrease_running_resources(self, decrease_resources: dict[str, int]) -> None:
        """Ignored."""


def rebuild(family: str, params_json: str, task_id: str) -> luigi.Task:
    """The task of ``family`` with the given string parameters; ValueError if its id is not ``task_id``."""
    tasks.register_all()
    try:
        cls = luigi.task_register.Register.get_task_cls(family)
        params: dict[str, Any] = json.loads(params_json)
        task = cls.from_str_params(params)
    except (luigi.task_register.TaskClassException, ValueError, TypeError) as exc:
        raise ValueError(f"cannot rebuild task {family} from {params_json}: {exc}") from None
    if task.task_id != task_id:
        raise ValueError(f"rebuilt task id {task.task_id} differs from the submitted {task_id}")
    return task


def run_task(task: luigi.Task) -> tuple[str, Any, list[str], list[Any]]:
    """Run ``task`` like a luigi worker does, in this process: (status, explanation, missing, new deps); the
    explanation is a failure reason, or what ``on_success`` returned (JSON-ready)."""
    results: queue.Queue[tuple[Any, ...]] = queue.Queue()
    process = luigi.worker.ContextManagedTaskProcess(
        "tasks.base.TaskLog", task, "batch-job", results, _NoReporter(), use_multiprocessing=False,
        check_unfulfilled_deps=True, check_complete_on_run=True,
    )
    process.run()
    _, status, explanation, missing, new_deps = results.get_nowait()
    return status, explanation or "", list(missing or []), list(new_deps or [])


MAX_STAGED_RERUNS = 5
"""Reruns of a staged task in its job after it yielded tasks whose outputs already exist in the result folder."""


def run_staged(task: luigi.Task, job_dir: str, transfer: bool, keep: bool) -> tuple[str, list[Any]]:
    """Run ``task`` in a job folder of its own (:mod:`tasks.stage`: under ``job_dir``, or the sandbox with
    ``transfer``): inputs in, the task, its result and outputs back; (status, new dependencies)."""
    with stage.job_folder(task, job_dir, transfer, keep) as folder:
        staged = stage.stage_in(task, transfer)
        status, explanation, missing, new_deps = run_task(task)
        for _ in range(MAX_STAGED_RERUNS):  # what it yielded exists already: copy it in, go on in this job
            more = stage.stage_finished(task, new_deps) if status == luigi.scheduler.PENDING and not transfer else {}
            if not more:
                break
            staged.update(more)
            status, explanation, missing, new_deps = run_task(task)
        write_result(task, status, explanation, missing, new_deps)  # in the job folder, sent back last
        record = stage.send_back(task, staged, result_path(task), transfer)
    print(f"tasks.entry: worked in {folder}: {len(record['in'])} file(s) in, {len(record['out'])} back")
    return status, new_deps


def main(argv: Sequence[str] | None = None) -> int:
    """Run the task named on the command line; exit code 1 when it failed, 2 for a bad command line."""
    p = argparse.ArgumentParser(prog="python -m tasks.entry", description="Run one calibflow task (batch job).")
    p.add_argument("--batch-runner", action="store_true", help="set by b2luigi (ignored)")
    p.add_argument("--task-id", required=True, help="luigi task id")
    p.add_argument("--family", required=True, help="task family, e.g. PrepareTuple")
    p.add_argument("--params", required=True, help="task parameters as a JSON object of strings")
    p.add_argument("--job-dir", default="", help="work in a new folder under this one, copying inputs in and back")
    p.add_argument("--transfer", action="store_true", help="work in the sandbox: inputs.tar in, outputs.tar out")
    p.add_argument("--keep-job-dir", action="store_true", help="keep the job folder (debugging)")
    args = p.parse_args(argv)
    try:
        task = rebuild(args.family, args.params, args.task_id)
    except ValueError as exc:
        print(f"tasks.entry: error: {exc}", file=sys.stderr)
        return 2
    numba_extensions_of()  # calibflow's process: no other package's numba extension (vector's: ~0.45 s)
    if args.job_dir or args.transfer:
        status, new_deps = run_staged(task, args.job_dir, args.transfer, args.keep_job_dir)
    else:
        status, explanation, missing, new_deps = run_task(task)
        write_result(task, status, explanation, missing, new_deps)
    print(f"tasks.entry: {task.task_id}: {status}" + (f" ({len(new_deps)} new dependencies)" if new_deps else ""))
    return 1 if status == luigi.scheduler.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
