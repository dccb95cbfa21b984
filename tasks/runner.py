"""Run a task graph with luigi and summarise what ran, what was reused and what failed (and why)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import luigi
from luigi.execution_summary import _summary_dict

from calibflow.plan import Plan
from tasks.base import failure_reason


@dataclass
class RunReport:
    """Outcome of one invocation: task counts per family and one line per failed task."""

    ok: bool
    ran: Counter[str] = field(default_factory=Counter)
    reused: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_run: int = 0

    def summary(self) -> str:
        """One line: tasks run and reused, then the families that ran."""
        families = ", ".join(f"{n} {f}" for f, n in sorted(self.ran.items()))
        return f"{sum(self.ran.values())} task(s) run, {sum(self.reused.values())} reused" + (
            f" ({families})" if families else ""
        )


def _configure_luigi() -> None:
    """Opt in to luigi's future default (no range-task autoloading), silencing its deprecation warning."""
    cfg = luigi.configuration.get_config()
    if not cfg.has_section("core"):
        cfg.add_section("core")
    if not cfg.has_option("core", "autoload_range"):
        cfg.set("core", "autoload_range", "false")


def build(plan: Plan, tasks: Sequence[luigi.Task], workers: int = 1) -> RunReport:
    """Run ``tasks`` with a local scheduler and ``workers`` processes; return the report."""
    _configure_luigi()
    result = luigi.build(list(tasks), workers=workers, local_scheduler=True, detailed_summary=True,
                         log_level="WARNING")
    s = _summary_dict(result.worker)
    failed = s["failed"] | s["scheduling_error"]
    pending = s["still_pending_ext"] | s["still_pending_not_ext"] | s.get("upstream_failure", set())
    return RunReport(
        ok=not failed and not pending,
        ran=Counter(t.task_family for t in s["completed"]),
        reused=Counter(t.task_family for t in s["already_done"]),
        failed=[(t.task_id, failure_reason(plan, t)) for t in sorted(failed, key=str)],
        not_run=len(pending),
    )
