"""Task status per stage, read from the luigi central scheduler's JSON API (``calibflow status``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calibflow.ops.scheduler import SetupError, api

COLUMNS = ("pending", "running", "done", "failed")
_STATES = {"PENDING": "pending", "UNKNOWN": "pending", "RUNNING": "running", "BATCH_RUNNING": "running",
           "DONE": "done", "FAILED": "failed", "DISABLED": "failed"}
ROOT_FAMILY = "ExportTables"


@dataclass
class StageCounts:
    """Number of tasks per state (pending, running, done, failed) of each task family."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, family: str, status: str) -> None:
        """Count one task of ``family`` with luigi status ``status``."""
        self.counts.setdefault(family, Counter())[_STATES.get(status, "pending")] += 1

    @property
    def total(self) -> int:
        """Number of tasks counted."""
        return sum(sum(c.values()) for c in self.counts.values())

    def table(self) -> str:
        """A text table: one row per stage, a column per state, a total row."""
        width = max([len("stage"), len("total"), *map(len, self.counts)])
        lines = [f"{'stage':<{width}}  " + "  ".join(f"{c:>7}" for c in COLUMNS)]
        rows = sorted(self.counts.items())
        total: Counter[str] = sum((c for _, c in rows), Counter())
        for name, c in [*rows, ("total", total)]:
            lines.append(f"{name:<{width}}  " + "  ".join(f"{c[col]:>7}" for col in COLUMNS))
        return "\n".join(lines)


def count(tasks: Iterable[Mapping[str, Any]]) -> StageCounts:
    """Counts of serialized scheduler tasks (each with ``name`` or ``family``, and ``status``)."""
    out = StageCounts()
    for t in tasks:
        out.add(str(t.get("family") or t.get("name") or "?"), str(t.get("status", "UNKNOWN")))
    return out


def all_tasks(host: str, port: int) -> dict[str, dict[str, Any]]:
    """Every task the scheduler knows (``/api/task_list`` without a status filter)."""
    tasks = api(host, port, "task_list", status="", upstream_status="", limit=False)
    if not isinstance(tasks, dict):
        raise SetupError(f"scheduler at {host}:{port}: unexpected /api/task_list answer")
    return tasks


def calibration_graph(host: str, port: int, config: str, result_dir: str) -> dict[str, dict[str, Any]]:
    """Tasks of one calibration: the ``/api/dep_graph`` of its ExportTables task(s); {} if none is known."""
    roots = [tid for tid, t in all_tasks(host, port).items()
             if t.get("name") == ROOT_FAMILY and t.get("params", {}).get("config") == config
             and t.get("params", {}).get("result_dir") == result_dir]
    graph: dict[str, dict[str, Any]] = {}
    for tid in roots:
        graph.update(api(host, port, "dep_graph", task_id=tid, include_done=True) or {})
    return graph
