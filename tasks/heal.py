"""Self-healing batch jobs: infrastructure failures told from the task's own, and the resources of a retry.

A job that ended without its task having finished died for an infrastructure reason when the batch system
says it was killed (Slurm: ``CANCELLED``, ``NODE_FAIL``, ``OUT_OF_MEMORY``, ``TIMEOUT``, ``PREEMPTED``,
``BOOT_FAIL``, ``DEADLINE``; HTCondor: removed or held) or when it left no ``result.json`` (killed before it
could write one: a memory limit enforced by killing the job, a lost node, a crash of Python). A task that
failed inside its job (a Python exception: ``result.json`` says ``FAILED``) failed for a physics or config
reason: resubmitting it would fail again, so it is not. :class:`tasks.batch.JobResultMixin` resubmits the
former up to ``resources.<family>.retries`` times, each time with the memory and time of :func:`scaled`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import luigi.scheduler

from calibflow.config import TaskResources

RETRY_FACTOR = 1.5
"""Memory and time of a retry: the previous attempt's times this."""
RETRY_CAP = 4.0
"""Memory and time never exceed the configured request times this (the third retry asks ×3.375, the fourth ×4)."""
INFRA_STATES = frozenset(
    {
        "CANCELLED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "TIMEOUT",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REMOVED",
        "HELD",
    }
)
"""Final job states (Slurm's, and HTCondor's removed/held) that mean the job was killed, not the task failed."""
_OOM_MARKS = ("exceeded memory limit", "out of memory", "oom-kill", "oom_kill", "memory limit exceeded")
"""Lines of a job's stderr saying the batch system killed it for its memory (Slurm's OverMemoryKill, cgroups)."""


def scaled(res: TaskResources, attempt: int) -> TaskResources:
    """``res`` for resubmission ``attempt`` (0: the first submission): memory (MB) and time (minutes) times
    :data:`RETRY_FACTOR` per retry, at most :data:`RETRY_CAP` times the configured value; unset ones stay unset."""
    if attempt <= 0:
        return res
    factor = min(RETRY_FACTOR**attempt, RETRY_CAP)
    update = {k: math.ceil(v * factor) for k in ("memory_mb", "time_minutes") if (v := getattr(res, k))}
    return res.model_copy(update=update)


def describe_resources(res: TaskResources) -> str:
    """``memory 300 MB, time 15 min`` (what is set)."""
    parts = ([f"memory {res.memory_mb} MB"] if res.memory_mb else []) + (
        [f"time {res.time_minutes} min"] if res.time_minutes else []
    )
    return ", ".join(parts) or "default resources"


def job_state(process: Any) -> str:
    """The batch system's last known state of the job of ``process`` (a b2luigi batch process), e.g.
    ``CANCELLED``; '' when unknown. Read from b2luigi's status caches, filled when the job's status was asked."""
    from b2luigi.batch.processes import htcondor, lsf, slurm

    ids = [*(getattr(process, "_batch_job_ids", None) or []), getattr(process, "_batch_job_id", None)]
    for module in (slurm, htcondor, lsf):
        cache = module._batch_job_status_cache
        for job in ids:
            state = cache.get(job) if job is not None else None
            if state is None:
                continue
            if isinstance(state, tuple):  # HTCondor: (status, user log)
                state = state[0]
            return str(getattr(state, "name", None) or getattr(state, "value", state)).upper()
    return ""


def memory_killed(stderr_path: str) -> bool:
    """Whether the job's stderr (its last 8 kB) says the batch system killed it for exceeding its memory."""
    try:
        with open(stderr_path, "rb") as f:
            f.seek(max(0, os.path.getsize(stderr_path) - 8192))
            tail = f.read().decode(errors="replace").lower()
    except OSError:
        return False
    return any(mark in tail for mark in _OOM_MARKS)


def infrastructure_failure(
    state: str, result: dict[str, Any] | None, complete: Callable[[], bool], oom: bool
) -> str | None:
    """Why an ended job died for an infrastructure reason (e.g. ``CANCELLED``, ``FAILED, memory limit
    exceeded``, ``COMPLETED, no result.json``), or None: the task yielded new dependencies, failed in the job
    (``result`` says ``FAILED``: not resubmitted) or finished (``complete()``: never resubmitted)."""
    status = (result or {}).get("status")
    if status in (luigi.scheduler.FAILED, luigi.scheduler.PENDING) or complete():
        return None
    state = state or "UNKNOWN"
    if oom:
        return f"{state}, memory limit exceeded"
    if status == luigi.scheduler.DONE:
        return f"{state}, outputs missing after the job"
    return state if state in INFRA_STATES else f"{state}, no result.json"
