"""What a calibration's result folder holds for the current keys, per stage: ``calibflow status CONFIG``
without a central scheduler.

Walks the graph ``calibflow run`` would build (each task's ``requires``, and the fits of the tables once the
binning exists) and asks every task whether its outputs exist; a task without them that recorded a failure
(``tasks.base``: the one-line reason and the key of the outputs it was to make) counts as failed while those
outputs are still the wanted ones, else as missing. FitBin counts bins (one result each), the other stages
tasks. Nothing runs and nothing is written, except that an output failing its quick integrity check is
removed as in every ``complete()`` (``tasks.base.intact``: a corrupt file counts as missing); the keys are those of the config and inputs as they are now, in
the options (``--skip-bad-files``, ``--limit``, ``--max-files``) of the latest ``calibflow run`` (its run file,
named by ``runs/latest.json``; :meth:`calibflow.plan.Plan.in_latest_modes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import luigi

from calibflow.ops.status import FOLDER_COLUMNS, StageCounts
from calibflow.plan import Plan
from tasks.base import CalibTask, describe, recorded_failure


@dataclass
class FolderStatus:
    """Outputs per stage (exist, failed, missing), the failed tasks (label, reason) and the stages whose tasks
    are not known yet (the fits, before the binning exists)."""

    counts: StageCounts = field(
        default_factory=lambda: StageCounts(columns=FOLDER_COLUMNS, sum_column="outputs"))
    failed: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def graph(plan: Plan) -> list[CalibTask]:
    """Every task of the calibration that the current result folder lets one know of, each once (the fits
    only where the binning of their variant exists; what they read in any case)."""
    from tasks import ExportTables
    from tasks.fit import FitBin, fit_params, fit_tasks
    from tasks.tables import EfficiencyTable

    seen: dict[str, CalibTask] = {}
    stack: list[CalibTask] = [ExportTables(config=plan.config_path, result_dir=plan.result_dir,
                                           run_file=plan.run_file)]
    while stack:
        task = stack.pop()
        if task.task_id in seen:
            continue
        seen[task.task_id] = task
        stack += luigi.task.flatten(task.requires())
        if not isinstance(task, EfficiencyTable):
            continue
        if os.path.exists(task.plan.binning_path()):
            stack += [*fit_tasks(task), *task.closure_histograms()]
        else:  # the fits are not known yet, what they read is: the samples' histograms and prepared tuples
            samples = task.plan.config.samples
            first_fits = [FitBin(sample=s, bin_index=0, **fit_params(task, s)) for s in samples]
            stack += [d for fit in first_fits for d in luigi.task.flatten(fit.requires())]
    return list(seen.values())


def _current_failure(task: CalibTask) -> str | None:
    """The reason of the failure ``task`` recorded, if it was to make the outputs wanted now."""
    recorded = recorded_failure(task.plan, task)
    if recorded is None:
        return None
    reason, outputs = recorded
    return reason if outputs is None or outputs == task.outputs_key() else None


def _made(task: CalibTask) -> tuple[int, int]:
    """(outputs wanted, outputs that exist) of ``task``: its bins for FitBin, else 1 and whether complete."""
    from tasks.fit import FitBin

    if isinstance(task, FitBin):
        paths = task.result_paths()
        return len(paths), sum(os.path.exists(p) for p in paths)
    return 1, int(task.complete())


def folder_status(plan: Plan) -> FolderStatus:
    """The outputs of ``plan``'s calibration per stage, for the current keys."""
    from tasks.tables import EfficiencyTable

    out = FolderStatus()
    tasks = graph(plan)
    for task in tasks:
        wanted, made = _made(task)
        out.counts.count(task.task_family, "exist", made)
        if made == wanted:
            continue
        reason = _current_failure(task)
        if reason is not None:
            out.failed.append((describe(task), reason))
        out.counts.count(task.task_family, "missing" if reason is None else "failed", wanted - made)
    if any(isinstance(t, EfficiencyTable) and not os.path.exists(t.plan.binning_path()) for t in tasks):
        out.unknown.append("FitBin")
    out.failed.sort()
    return out
