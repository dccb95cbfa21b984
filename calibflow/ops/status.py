"""Task status per stage (``calibflow status``), read from the luigi central scheduler's JSON API; the
counts of a result folder (``tasks.state``, without a scheduler) use the same table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calibflow.ops.scheduler import SetupError, api

COLUMNS = ("pending", "running", "done", "failed")
FOLDER_COLUMNS = ("exist", "failed", "missing")
"""States of the outputs of a result folder (``calibflow status`` without a scheduler)."""
STAGES = ("GenerateToys", "PrepareTuple", "MakeBinning", "FillHistograms", "SplitByBin", "FitBin",
          "EfficiencyTable", "CombineTables", "ExportTables")
"""Task families in pipeline order (the rows of the table; others follow by name)."""
_STATES = {"PENDING": "pending", "UNKNOWN": "pending", "RUNNING": "running", "BATCH_RUNNING": "running",
           "DONE": "done", "FAILED": "failed", "DISABLED": "failed"}
ROOT_FAMILY = "ExportTables"


@dataclass
class StageCounts:
    """Number of tasks per state (pending, running, done, failed) of each task family."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    columns: tuple[str, ...] = COLUMNS
    sum_column: str = ""
    """Name of a first column holding each row's sum (none when empty)."""

    def add(self, family: str, status: str, n: int = 1) -> None:
        """Count ``n`` tasks of ``family`` with luigi status ``status``."""
        self.count(family, _STATES.get(status, "pending"), n)

    def count(self, family: str, column: str, n: int = 1) -> None:
        """Count ``n`` under ``column`` (one of :attr:`columns`) for ``family``."""
        self.counts.setdefault(family, Counter())[column] += n

    @property
    def total(self) -> int:
        """Number of tasks (or outputs) counted."""
        return sum(sum(c.values()) for c in self.counts.values())

    def table(self) -> str:
        """A text table: one row per stage (pipeline order), a column per state, a total row."""
        width = max([len("stage"), len("total"), *map(len, self.counts)])
        columns = [*([self.sum_column] if self.sum_column else []), *self.columns]
        lines = [f"{'stage':<{width}}  " + "  ".join(f"{c:>7}" for c in columns)]
        order = {s: i for i, s in enumerate(STAGES)}
        rows = sorted(self.counts.items(), key=lambda fc: (order.get(fc[0], len(STAGES)), fc[0]))
        total: Counter[str] = sum((c for _, c in rows), Counter())
        for name, c in [*rows, ("total", total)]:
            cells = ([sum(c.values())] if self.sum_column else []) + [c[col] for col in self.columns]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>7}" for v in cells))
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
