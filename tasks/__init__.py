"""luigi/b2luigi tasks of calibflow: thin wrappers, one library call each; the ``calibflow`` command.

The task classes are imported on first use (``from tasks import ExportTables``), so that commands which
run no task (``calibflow scheduler``, ``status``, ``apply``, ``--help``) start without luigi's imports.
:func:`register_all` imports every task module (a batch job's entry point needs every family).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.fit import FillHistograms, FitBin, MakeBinning, SplitByBin
    from tasks.prep import GenerateToys, PrepareTuple
    from tasks.tables import CombineTables, EfficiencyTable, ExportTables

_MODULE_OF = {
    "CoverageBin": "tasks.coverage", "CoverageTable": "tasks.coverage",
    "ConstraintFit": "tasks.fit", "FillHistograms": "tasks.fit", "FitBin": "tasks.fit", "MakeBinning": "tasks.fit", "SplitByBin": "tasks.fit",
    "GenerateToys": "tasks.prep", "PrepareTuple": "tasks.prep",
    "CombineTables": "tasks.tables", "EfficiencyTable": "tasks.tables", "ExportTables": "tasks.tables",
}

__all__ = [
    "CombineTables", "EfficiencyTable", "ExportTables", "FillHistograms", "FitBin", "GenerateToys", "MakeBinning",
    "PrepareTuple", "SplitByBin", "register_all",
]


def register_all() -> None:
    """Import every task module, so that luigi knows every task family."""
    for module in sorted(set(_MODULE_OF.values())):
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
