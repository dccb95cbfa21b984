"""Coverage columns of the nominal tables (config ``coverage``; docs/fits.md, "Coverage").

From the per-bin coverage records (:func:`calibflow.fit.coverage.bin_coverage`): each row of
``efficiencies.csv`` gets :data:`COLUMNS` of its ε toys, each row of ``scale_factors.csv`` those of the paired
toys' scale factors (:func:`sf_summary`). A bin whose coverage is off gets the flag
``coverage_off:<reasons>`` (reasons ``under_coverage``, ``over_coverage``, ``pull_width`` joined by ``+``): in
``fit_status`` of its efficiency row (so the scale factor's ``status``, made from the two rows' statuses, shows
it too), and as a part ``coverage_off:sf_<reasons>`` of ``status`` for the scale factor's own toys. Bins without
toys (a skipped method or bin) have NaN columns and ``coverage_toys`` 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableSequence
from typing import Any

import numpy as np

from calibflow.fit.coverage import Summary, summarise
from calibflow.tables.rows import Row, ratio_errors

COVERAGE_OFF = "coverage_off"
"""The flag of a bin whose coverage is off (:func:`calibflow.fit.coverage.off_reasons`)."""
COLUMNS = ("coverage", "coverage_err", "coverage_pull_mean", "coverage_pull_mean_err", "coverage_pull_width",
           "coverage_pull_width_err", "coverage_toys", "coverage_failed")
"""Per row: coverage of the ±1σ interval and its binomial error, pull mean and width with their errors, the
number of toys and of failed toys."""
Records = Mapping[tuple[str, int], Mapping[str, Any]]


def columns(summary: Summary | None) -> Row:
    """:data:`COLUMNS` of the toys' ``summary`` (None: no toys)."""
    if summary is None or not summary.n_toys:
        return {**dict.fromkeys(COLUMNS[:-2], math.nan), "coverage_toys": 0, "coverage_failed": 0}
    return {"coverage": summary.coverage, "coverage_err": summary.coverage_err,
            "coverage_pull_mean": summary.pull_mean, "coverage_pull_mean_err": summary.pull_mean_err,
            "coverage_pull_width": summary.pull_width, "coverage_pull_width_err": summary.pull_width_err,
            "coverage_toys": summary.n_toys, "coverage_failed": summary.n_failed}


def flag(summary: Summary | None, prefix: str = "") -> str:
    """``coverage_off:<reasons>`` when ``summary`` is off ('' otherwise); ``prefix`` before each reason."""
    if summary is None or not summary.off:
        return ""
    return f"{COVERAGE_OFF}:" + "+".join(f"{prefix}{r}" for r in summary.reason.split(",") if r)


def add_efficiency_coverage(rows: MutableSequence[Row], records: Records) -> None:
    """Add :data:`COLUMNS` to the rows of an efficiency table and ``coverage_off`` to the ``fit_status`` of the
    bins whose ε coverage is off (in place)."""
    for row in rows:
        rec = records.get((row["sample"], row["bin"]))
        summary = Summary.from_dict(rec, "eff_") if rec is not None else None
        row.update(columns(summary))
        tag = flag(summary)
        if tag:
            row["fit_status"] = tag if row["fit_status"] == "ok" else f"{row['fit_status']},{tag}"


def add_scale_factor_coverage(rows: MutableSequence[Row], records: Records) -> None:
    """Add :data:`COLUMNS` of the paired toys to the rows of a scale-factor table and a ``coverage_off:sf_...``
    part to the ``status`` of the bins whose scale-factor coverage is off (in place)."""
    for row in rows:
        data, mc = records.get((row["data"], row["bin"])), records.get((row["mc"], row["bin"]))
        summary = sf_summary(data, mc) if data is not None and mc is not None else None
        row.update(columns(summary))
        tag = flag(summary, "sf_")
        if tag:
            row["status"] = tag if row["status"] == "ok" else f"{row['status']}|{tag}"


def sf_summary(data: Mapping[str, Any], mc: Mapping[str, Any]) -> Summary | None:
    """Scale-factor coverage of paired toys of a data and a simulation bin's records: toy i's ratio ε_d,i/ε_m,i
    with the interval the tables give it (:func:`calibflow.tables.rows.ratio_errors`) against ε₀_d/ε₀_m (None
    when either has no toys)."""
    n = min(len(data["efficiency"]), len(mc["efficiency"]))
    eff_m0 = float(mc["generating_efficiency"])
    if n == 0 or not eff_m0:
        return None
    sf, down, up = np.full(n, math.nan), np.full(n, math.nan), np.full(n, math.nan)
    for i in range(n):
        d = [float(data[k][i]) for k in ("efficiency", "err_down", "err_up")]
        m = [float(mc[k][i]) for k in ("efficiency", "err_down", "err_up")]
        if all(map(math.isfinite, d + m)) and m[0]:
            sf[i] = d[0] / m[0]
            down[i], up[i] = ratio_errors(*d, *m)
    return summarise(float(data["generating_efficiency"]) / eff_m0, sf, down, up)
