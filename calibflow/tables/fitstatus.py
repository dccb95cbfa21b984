"""Per-bin result statuses of a calibration, counted per variant and sample (the run's closing summary).

A bin's result (``plan.fit_path(sample, bin_key)``) has a ``status``: ``ok``; one starting with
``low_statistics`` (fewer candidates than ``fit.min_candidates``: still fitted, and counted as low statistics
whatever else the status says); or one or more comma-separated flag reasons (``chi2``, ``minos_failed``,
``at_limit:sigma``, ...), whose names before a ``:`` group the flagged bins. A bin without a result has
failed (its fit raised, or its task did not run). Imports no fit code (a summary after a no-op run stays
fast): :data:`LOW_STATISTICS` is ``calibflow.fit.measure.LOW_STATISTICS``, checked by the tests.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from calibflow.io.integrity import CorruptIntermediate
from calibflow.io.jsonio import read_record
from calibflow.plan import Plan
from calibflow.variants import NOMINAL

OK = "ok"
LOW_STATISTICS = "low_statistics"
UNREADABLE = "unreadable"
"""Flag reason of a result file that holds no result (not JSON, or no status)."""
ADVICE = {"negative_weights": "set method: sweighted"}
"""What to do about a flag reason, said with its count in the closing summary (:meth:`StatusCounts.line`)."""


def flag_reasons(status: str) -> list[str]:
    """The reasons of a flagged status, without their details: ``"at_limit:alpha,chi2"`` -> at_limit, chi2."""
    return [part.split(":", 1)[0].strip() for part in status.split(",") if part.strip()]


@dataclass
class StatusCounts:
    """Bins of one sample in one variant by the status of their result."""

    variant: str
    sample: str
    ok: int = 0
    flagged: int = 0
    low_statistics: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    """Flagged bins per reason (a bin flagged for two reasons counts under both)."""
    gallery: str | None = None
    """The sample's published fit gallery in this variant (its index.html), if it exists."""

    @property
    def bins(self) -> int:
        """Bins counted."""
        return self.ok + self.flagged + self.low_statistics + self.failed

    def add(self, status: str | None) -> None:
        """Count one bin with result status ``status`` (None: no result)."""
        if status is None:
            self.failed += 1
        elif status == OK:
            self.ok += 1
        elif LOW_STATISTICS in flag_reasons(status):
            self.low_statistics += 1
        else:
            self.flagged += 1
            self.reasons.update(dict.fromkeys(flag_reasons(status) or ["unknown"], 1))

    def line(self) -> str:
        """``150 ok, 3 flagged (2 chi2, 1 at_limit), 3 low statistics, 0 failed``; a reason with
        :data:`ADVICE` says it: ``6 flagged (6 negative_weights: set method: sweighted)``."""
        why = ", ".join(f"{n} {r}" + (f": {ADVICE[r]}" if r in ADVICE else "")
                        for r, n in sorted(self.reasons.items(), key=lambda rn: (-rn[1], rn[0])))
        return (f"{self.ok} ok, {self.flagged} flagged" + (f" ({why})" if why else "")
                + f", {self.low_statistics} low statistics, {self.failed} failed")


def count_statuses(variant: str, sample: str, statuses: Iterable[str | None]) -> StatusCounts:
    """Counts of the given bin statuses (None: a bin without a result)."""
    counts = StatusCounts(variant, sample)
    for status in statuses:
        counts.add(status)
    return counts


def result_status(path: str) -> str | None:
    """The status of the result at ``path``: None if there is none, ``unreadable`` if it is not a result."""
    try:
        result = read_record(path)
    except FileNotFoundError:
        return None
    except (CorruptIntermediate, ValueError):
        return UNREADABLE
    return str(result.get("status", UNREADABLE))


def fit_status_counts(plan: Plan) -> list[StatusCounts]:
    """Per variant (nominal first) and sample, the bins of the current binning by result status.

    Variants whose binning does not exist yet are left out, and so are the samples of a variant whose
    results are those of an earlier variant (same files: e.g. the counted simulation of a fit-model
    variation). Reads only what exists, so it also counts a run that failed partway.
    """
    out: list[StatusCounts] = []
    seen: set[tuple[str, ...]] = set()
    for v in [NOMINAL, *plan.all_variants()]:
        vplan = plan.with_variant(v)
        if not os.path.exists(vplan.binning_path()):
            continue
        keys = vplan.bin_keys()
        for sample in vplan.config.samples:
            paths = tuple(vplan.fit_paths(sample, keys))
            if paths in seen:
                continue
            seen.add(paths)
            counts = count_statuses(v or "nominal", sample, (result_status(p) for p in paths))
            index = os.path.join(vplan.gallery_dir(sample), "index.html")
            counts.gallery = index if os.path.exists(index) else None
            out.append(counts)
    return out
