"""Common base of calibflow tasks: the config path and result folder, the plan, atomic outputs."""

from __future__ import annotations

import os

import b2luigi
import luigi

from calibflow.plan import Plan


class CalibTask(b2luigi.Task):
    """A task of one calibration. Parameters: absolute config path and result folder."""

    config = b2luigi.Parameter(description="absolute path of the calibration YAML")
    result_dir = b2luigi.Parameter(description="absolute path of the result folder")

    @property
    def plan(self) -> Plan:
        """Keys and paths of this calibration."""
        return Plan(self.config, self.result_dir)

    def common(self) -> dict[str, str]:
        """Parameters to pass on to required tasks."""
        return {"config": self.config, "result_dir": self.result_dir}

    def target(self, path: str) -> luigi.LocalTarget:
        """Local file target (written atomically by the library functions)."""
        return luigi.LocalTarget(path)

    def on_failure(self, exception: BaseException) -> str:
        """Record a one-line reason for the run summary, then let luigi log the traceback."""
        reason = f"{type(exception).__name__}: {exception}".splitlines()[0]
        path = failure_path(self.plan, self.task_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(reason + "\n")
        return super().on_failure(exception)

    def on_success(self) -> None:
        path = failure_path(self.plan, self.task_id)
        if os.path.exists(path):
            os.remove(path)
        return super().on_success()


def failure_path(plan: Plan, task_id: str) -> str:
    """Where the one-line failure reason of ``task_id`` is kept."""
    return os.path.join(plan.workdir, "logs", "failed", f"{task_id}.txt")


def failure_reason(plan: Plan, task: luigi.Task) -> str:
    """The recorded failure reason of ``task`` (or a pointer to the log when none was recorded)."""
    try:
        with open(failure_path(plan, task.task_id)) as f:
            return f.read().strip()
    except OSError:
        return "failed (see the log above)"
