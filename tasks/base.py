"""Common base of calibflow tasks: the config path and result folder, the plan, atomic outputs, logs.

Every task keeps one log, ``<result_dir>/<name>/logs/<family>/<task_id>.log`` (see :class:`TaskLog`);
batch jobs keep b2luigi's files (submit script, stdout, stderr, result) in
``<result_dir>/<name>/logs/batch/<task_id>/``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import b2luigi
import luigi

from calibflow.config import ConfigError, TaskResources
from calibflow.hashing import content_key
from calibflow.io.integrity import CorruptIntermediate, check_quick
from calibflow.io.store import atomic_path
from calibflow.plan import Plan
from tasks import batch, heal, stage

RESULTS_MADE = "results_made"
"""Key of the explanation a task's ``on_success`` may return: how many of its :meth:`CalibTask.results` it
made (the others existed already); the run report counts results, not tasks."""
FOR_OUTPUTS = "for outputs "
"""Start of the second line of a failure record: the :meth:`CalibTask.outputs_key` the task failed to make."""


class NamedConfig(Protocol):
    """A config as the task layer needs it: its ``name`` (the result folder's)."""

    @property
    def name(self) -> str: ...


@runtime_checkable
class TaskPlan(Protocol):
    """What running a task graph (:func:`tasks.runner.build`) and its failure records need of a plan: the result
    folder ``workdir`` and the config's name. A calibration's :class:`calibflow.plan.Plan` and a KDE config's
    :class:`calibflow.kde.plan.KdePlan` are both."""

    @property
    def workdir(self) -> str: ...

    @property
    def config(self) -> NamedConfig: ...


class CalibTask(b2luigi.Task):
    """A task of one calibration. Parameters: absolute config path and result folder."""

    config = b2luigi.Parameter(description="absolute path of the calibration YAML")
    result_dir = b2luigi.Parameter(description="absolute path of the result folder")
    variant = b2luigi.Parameter(default="", description="systematic variation / working point ('' = nominal)")
    run_file = b2luigi.Parameter(default="", description="absolute path of the run file of calibflow run: its "
                                 "modes and input lists ('' = none: no modes, globs expanded at each call)")
    pool_preload: tuple[str, ...] = ()
    """Modules the task imports when it runs, imported once before a run's worker pool forks."""
    publishes = False
    """Whether the task publishes into the result folder (links, sets: tasks.tables.ExportTables); with a staged
    batch job folder (tasks.stage) such a task runs in the submitting process, where the result folder is."""
    batch_attempt = 0
    """Batch mode: resubmissions of this task after infrastructure failures so far (tasks.heal)."""

    @property
    def plan(self) -> Plan:
        """Keys and paths of this calibration and variant (in a staged batch job: in its job folder)."""
        return Plan(stage.local(self.config), stage.local(self.result_dir), self.variant, stage.local(self.run_file))

    def common(self) -> dict[str, str]:
        """Parameters to pass on to required tasks (same calibration, variant and run)."""
        return {"config": self.config, "result_dir": self.result_dir, "variant": self.variant,
                "run_file": self.run_file}

    def same_content(self, key_of: Callable[[Plan], object]) -> dict[str, str]:
        """Parameters of a required task whose content is ``key_of(plan)``: the variant is the first one
        with that content, so variants sharing a result require the very same task."""
        return self.in_variant(self.plan.canonical(key_of))

    def in_variant(self, variant: str) -> dict[str, str]:
        """Parameters of a required task of the same calibration and run in ``variant``."""
        return {**self.common(), "variant": variant}

    def results(self) -> int:
        """How many results this task stands for in the run report (1; a FitBin task: its bins)."""
        return 1

    def target(self, path: str) -> luigi.LocalTarget:
        """Local file target (written atomically by the library functions)."""
        return luigi.LocalTarget(path)

    def complete(self) -> bool:
        """Whether every output exists and passes the quick integrity check (:func:`intact`: a corrupt one is
        removed, so the task runs again and rebuilds it)."""
        outputs = luigi.task.flatten(self.output())
        return all([intact(t.path) for t in outputs]) if outputs else super().complete()

    def on_failure(self, exception: BaseException) -> str:
        """Record a one-line reason for the run summary, then let luigi log the traceback. A corrupt input
        found while reading is removed first: the runner reruns the graph, which rebuilds it."""
        if isinstance(exception, CorruptIntermediate):
            remove_corrupt(exception, self.plan.workdir)
        self.record_failure(f"{type(exception).__name__}: {exception}")
        return super().on_failure(exception)

    def record_failure(self, reason: str) -> None:
        """Keep the first line of ``reason`` for the run summary (removed when the task succeeds), and the key
        of the outputs it was to make: ``calibflow status`` counts the failure only while they are wanted."""
        lines = reason.strip().splitlines() or ["failed"]
        try:
            outputs = f"{FOR_OUTPUTS}{self.outputs_key()}\n"
        except Exception:  # e.g. the binning a chunk of fits needs is gone: the reason is what matters
            outputs = ""
        try:
            with atomic_path(failure_path(self.plan, record_id(self))) as tmp, open(tmp, "w") as f:
                f.write(lines[0] + "\n" + outputs)
        except OSError as exc:  # e.g. the disk is full: the run summary takes the reason from luigi instead
            logging.getLogger("calibflow.task").warning("could not record the failure of %s: %s", self.task_id, exc)

    def extra_inputs(self) -> list[str]:
        """Files the task reads besides its requirements' outputs (a staged batch job copies them in: tasks.stage)."""
        return []

    def failure_record_path(self) -> str:
        """Where the one-line reason of this task's last failure is kept (:func:`failure_path`)."""
        return failure_path(self.plan, record_id(self))

    def outputs_key(self) -> str:
        """Content key of what this task makes: its output paths, which hold the content keys."""
        return content_key(sorted(t.path for t in luigi.task.flatten(self.output())))

    # --- logs and batch submission (b2luigi looks these up on the task) -----------------------------
    @property
    def log_path(self) -> str:
        """The task's own log file."""
        return os.path.join(self.plan.workdir, "logs", self.task_family, f"{self.task_id}.log")

    def get_log_file_dir(self) -> str:
        """b2luigi: folder of the batch job's stdout and stderr."""
        return os.path.join(self.plan.workdir, "logs", "batch", self.task_id)

    def get_task_file_dir(self) -> str:
        """b2luigi: folder of the job's submit script and wrapper (also holds the job's result.json)."""
        return self.get_log_file_dir()

    @property
    def job_name(self) -> str:
        """b2luigi: batch job name."""
        return f"calibflow-{self.task_family}"

    @property
    def task_cmd_additional_args(self) -> list[str]:
        """b2luigi: arguments that let the job rebuild this task (see tasks.entry)."""
        return batch.job_command_args(self)

    @property
    def batch_resources(self) -> TaskResources:
        """The config's ``resources`` of this task's family, raised for a resubmission (:func:`tasks.heal.scaled`)."""
        return heal.scaled(self.plan.config.resources_for(self.task_family), self.batch_attempt)

    @property
    def slurm_settings(self) -> dict[str, str]:
        """b2luigi: ``#SBATCH`` options from the config's ``resources`` (merged over settings.json's)."""
        return batch.slurm_resources(self.batch_resources)

    @property
    def htcondor_settings(self) -> dict[str, str]:
        """b2luigi: HTCondor submit commands from the config's ``resources`` (and the file transfer's outputs)."""
        return {**batch.htcondor_resources(self.batch_resources), **batch.transfer_outputs()}

    @property
    def transfer_files(self) -> list[str]:
        """b2luigi (HTCondor): the inputs sent to the job, with ``batch_transfer`` (tasks.stage)."""
        return batch.transfer_files(self)

    @property
    def job_slots(self) -> str | bool:
        """b2luigi (LSF): ``bsub -n`` from ``resources.<family>.cpus`` (False: not given)."""
        cpus = self.plan.config.resources_for(self.task_family).cpus
        return str(cpus) if cpus else False

    def on_success(self) -> None:
        path = failure_path(self.plan, record_id(self))
        if os.path.exists(path):
            os.remove(path)
        return super().on_success()


def intact(path: str) -> bool:
    """Whether the intermediate ``path`` exists and passes :func:`calibflow.io.integrity.check_quick` (size
    and header); a corrupt one is removed (:func:`remove_corrupt`)."""
    try:
        check_quick(path)
    except FileNotFoundError:
        return False
    except CorruptIntermediate as exc:
        remove_corrupt(exc, os.path.dirname(path))
        return False
    return True


def remove_corrupt(exc: CorruptIntermediate, root: str) -> None:
    """Remove the corrupt intermediate of ``exc`` (if still there and under the folder ``root``: never an input
    file) with a warning naming it and the damage."""
    if os.path.commonpath([os.path.abspath(exc.path), os.path.abspath(root)]) != os.path.abspath(root):
        return
    try:
        os.remove(exc.path)
    except FileNotFoundError:
        return
    logging.getLogger("calibflow").warning("corrupt intermediate removed, to be rebuilt: %s", exc)


def describe(task: luigi.Task) -> str:
    """``Family(param=value, ...)`` without the config path, the result folder, the run file and empty
    parameters."""
    params = {k: v for k, v in task.to_str_params().items()
              if k not in ("config", "result_dir", "run_file") and v != ""}
    return f"{task.task_family}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def record_id(task: CalibTask) -> str:
    """The id of ``task`` with the modes of its run in place of its run file, naming its failure record: a run
    in other modes keeps its own records, a run in the same modes with other inputs (a new run file) sees
    those of the unchanged ones (the record's outputs key says whether a failure still counts)."""
    params = {k: v for k, v in task.to_str_params(only_significant=True).items() if k != "run_file"}
    try:
        modes = task.plan.run.text()
    except ConfigError:  # the run file is gone: the failure is still worth a record
        modes = "unknown"
    return luigi.task.task_id_str(task.task_family, {**params, **({"run_modes": modes} if modes else {})})


def failure_path(plan: TaskPlan, task_id: str) -> str:
    """Where the one-line failure reason of ``task_id`` (:func:`record_id`) is kept."""
    return os.path.join(plan.workdir, "logs", "failed", f"{task_id}.txt")


def tolerated_path(task: CalibTask) -> str:
    """The marker of a failure of ``task`` tolerated in this run (``resources.FitBin.tolerance``)."""
    return os.path.join(task.plan.workdir, "logs", "tolerated", f"{record_id(task)}.txt")


def mark_tolerated(task: CalibTask, reason: str) -> None:
    """Mark the failure of ``task`` as tolerated for the rest of this run (its dependents go on without it)."""
    with atomic_path(tolerated_path(task)) as tmp, open(tmp, "w") as f:
        f.write(reason.strip().splitlines()[0] if reason.strip() else "failed")


def tolerating(plan: TaskPlan) -> bool:
    """Whether a run is going on without tasks whose failure it tolerates (markers exist)."""
    folder = os.path.join(plan.workdir, "logs", "tolerated")
    return os.path.isdir(folder) and any(os.scandir(folder))


def clear_tolerated(plan: TaskPlan) -> None:
    """Remove the markers of tolerated failures (at the start and end of a run: later runs try again)."""
    import shutil

    shutil.rmtree(os.path.join(plan.workdir, "logs", "tolerated"), ignore_errors=True)


def recorded_failure(plan: TaskPlan, task: luigi.Task) -> tuple[str, str | None] | None:
    """The recorded failure of ``task``: (one-line reason, key of the outputs it was to make, None when not
    recorded); None when no failure is recorded (or the task succeeded since)."""
    try:
        with open(failure_path(plan, record_id(task))) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    outputs = next((ln.removeprefix(FOR_OUTPUTS) for ln in lines[1:] if ln.startswith(FOR_OUTPUTS)), None)
    return (lines[0].strip() if lines else "failed"), outputs


def failure_reason(plan: TaskPlan, task: luigi.Task, fallback: str | None = None) -> str:
    """The recorded failure reason of ``task``; when none was recorded (e.g. the disk was full), ``fallback``
    (the exception line luigi reported), else a pointer to the log."""
    recorded = recorded_failure(plan, task)
    return recorded[0] if recorded else fallback or "failed (see the log above)"


class TaskLog:
    """luigi task-process context (``[worker] task_process_context``): log the task to its own file.

    The file gets a start and an end line, every log record of level INFO and above emitted while the
    task runs (luigi's traceback of a failure included) and Python warnings. Tasks without a
    ``log_path`` are left alone.
    """

    def __init__(self, process: Any) -> None:
        self.task = process.task
        self._handler: logging.Handler | None = None
        self._t0 = 0.0
        self._log = logging.getLogger("calibflow.task")
        self._log.setLevel(logging.INFO)

    def __enter__(self) -> TaskLog:
        path = getattr(self.task, "log_path", None)
        if path is None:
            return self
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._handler = logging.FileHandler(path)
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._handler)
        logging.captureWarnings(True)
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("LSB_JOBID")
        where = f"host {socket.gethostname()}, pid {os.getpid()}" + (f", batch job {job}" if job else "")
        self._log.info("start %s, task id %s (%s)", describe(self.task), self.task.task_id, where)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handler is None:
            return
        self._log.info("end %s after %.1f s", self.task.task_id, time.perf_counter() - self._t0)
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
        self._handler = None
