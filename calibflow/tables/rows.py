"""Efficiency, scale-factor and closure tables as lists of flat row dicts, with CSV I/O.

Errors are asymmetric: a value v has the interval [v − err_down, v + err_up]. Scale-factor errors
combine the relative errors of data and simulation in quadrature, taking for each side of the ratio
the error of the numerator in the same direction and of the denominator in the opposite one; the
statistical errors from data alone and from simulation alone are kept as separate columns.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from calibflow.binning.scheme import BinningScheme
from calibflow.io.store import atomic_path

Row = dict[str, Any]


def bin_columns(scheme: BinningScheme, index: int) -> Row:
    """``{<var>_lo: ..., <var>_hi: ...}`` of bin ``index``."""
    out: Row = {}
    for var, lo, hi in scheme.bins[index].bounds:
        out[f"{var}_lo"] = lo
        out[f"{var}_hi"] = hi
    return out


YIELD_COLUMNS = ("n_sig", "n_sig_err", "n_pass", "n_pass_err", "n_fail", "n_fail_err")
"""Signal yields with their errors, per row of ``efficiencies.csv`` (``calibflow.fit.measure.YIELD_FIELDS``)."""
YIELD_METHOD = "yield"
"""The method of rows holding a signal yield and no efficiency (``calibflow.fit.measure.YIELD``)."""
GOF_COLUMNS = ("chi2", "ndof", "chi2_pvalue", "ks_pvalue")
"""Goodness of fit per row (docs/fits.md, "Goodness of fit"): the fit's χ² and ndof, P(χ²_ndof ≥ χ²), and the
smaller Kolmogorov-Smirnov p-value of the pass and fail categories (unbinned fits); NaN where not measured."""


def gof_columns(r: Mapping[str, Any]) -> Row:
    """:data:`GOF_COLUMNS` of a per-bin result; results written before the p-values existed get the χ² p-value
    from their χ² and ndof."""
    chi2, ndof = float(r.get("chi2", math.nan)), r.get("ndof", math.nan)
    p = r.get("chi2_pvalue")
    if p is None and math.isfinite(chi2) and isinstance(ndof, int) and ndof > 0:
        from scipy.special import chdtrc

        p = float(chdtrc(ndof, max(chi2, 0.0)))
    ks = [float(v) for k, v in (r.get("ks") or {}).items() if k.startswith("pvalue") and math.isfinite(float(v))]
    return {"chi2": chi2, "ndof": ndof, "chi2_pvalue": math.nan if p is None else float(p),
            "ks_pvalue": min(ks, default=math.nan)}


def efficiency_rows(scheme: BinningScheme, results: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[Row]:
    """One row per (sample, bin) from per-bin results with the signal yields and their errors
    (:data:`YIELD_COLUMNS`: fitted, or Σw ± √Σw² when counted), efficiency, err_down/up, status and the goodness of
    fit (:data:`GOF_COLUMNS`); a row of method ``yield`` has NaN efficiency, errors and pass/fail yields."""
    rows = []
    for (sample, index), r in sorted(results.items()):
        rows.append(
            {
                "sample": sample,
                "bin": index,
                **bin_columns(scheme, index),
                "method": r["method"],
                **{k: r.get(k, math.nan) for k in YIELD_COLUMNS},  # NaN: a result made without yields
                "efficiency": r["efficiency"],
                "err_down": r["err_down"],
                "err_up": r["err_up"],
                "fit_status": r["status"],
                **gof_columns(r),
            }
        )
    return rows


def ratio_errors(num: float, num_down: float, num_up: float, den: float, den_down: float, den_up: float) -> tuple[float, float]:
    """(down, up) errors of num/den from asymmetric errors of both, relative errors in quadrature."""
    if num == 0 or den == 0:
        return math.nan, math.nan
    r = num / den
    down = abs(r) * math.hypot(num_down / num, den_up / den)
    up = abs(r) * math.hypot(num_up / num, den_down / den)
    return down, up


def scale_factor_rows(eff: Sequence[Row], data: str, mc: str) -> list[Row]:
    """Data/simulation ratio per bin for the samples ``data`` and ``mc`` of an efficiency table."""
    by = {(r["sample"], r["bin"]): r for r in eff}
    rows = []
    for (sample, index), d in sorted(by.items()):
        if sample != data or (mc, index) not in by:
            continue
        m = by[(mc, index)]
        sf = d["efficiency"] / m["efficiency"] if m["efficiency"] else math.nan
        down, up = ratio_errors(d["efficiency"], d["err_down"], d["err_up"], m["efficiency"], m["err_down"], m["err_up"])
        data_down, data_up = ratio_errors(d["efficiency"], d["err_down"], d["err_up"], m["efficiency"], 0.0, 0.0)
        mc_down, mc_up = ratio_errors(d["efficiency"], 0.0, 0.0, m["efficiency"], m["err_down"], m["err_up"])
        bounds = {k: v for k, v in d.items() if k.endswith(("_lo", "_hi"))}
        status = "ok" if d["fit_status"] == "ok" and m["fit_status"] == "ok" else f"{d['fit_status']}|{m['fit_status']}"
        rows.append(
            {
                "data": data,
                "mc": mc,
                "bin": index,
                **bounds,
                "eff_data": d["efficiency"],
                "eff_mc": m["efficiency"],
                "scale_factor": sf,
                "err_down": down,
                "err_up": up,
                "stat_data_down": data_down,
                "stat_data_up": data_up,
                "stat_mc_down": mc_down,
                "stat_mc_up": mc_up,
                "status": status,
            }
        )
    return rows


def pull(measured: float, truth: float, err_down: float, err_up: float) -> float:
    """(measured − truth)/σ with σ the error on the side of the truth."""
    sigma = err_up if truth > measured else err_down
    return (measured - truth) / sigma if sigma > 0 else math.nan


def closure_rows(
    eff: Sequence[Row], sf: Sequence[Row], truth: Mapping[tuple[str, int], float]
) -> list[Row]:
    """Per-bin truth, measurement and pull for efficiencies and scale factors (toys only)."""
    rows: list[Row] = []
    for r in eff:
        t = truth.get((r["sample"], r["bin"]))
        if t is None or r.get("method") == YIELD_METHOD:
            continue
        rows.append(
            {"quantity": "efficiency", "sample": r["sample"], "bin": r["bin"], "true": t, "measured": r["efficiency"],
             "pull": pull(r["efficiency"], t, r["err_down"], r["err_up"])}
        )
    for r in sf:
        td, tm = truth.get((r["data"], r["bin"])), truth.get((r["mc"], r["bin"]))
        if td is None or tm is None or tm == 0:
            continue
        t = td / tm
        rows.append(
            {"quantity": "scale_factor", "sample": f"{r['data']}/{r['mc']}", "bin": r["bin"], "true": t,
             "measured": r["scale_factor"], "pull": pull(r["scale_factor"], t, r["err_down"], r["err_up"])}
        )
    return rows


def write_csv(path: str | os.PathLike[str], rows: Iterable[Row]) -> None:
    """Write rows (same keys, in order of the first row) to ``path`` atomically."""
    rows = list(rows)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: str | os.PathLike[str]) -> list[Row]:
    """Read a CSV written by :func:`write_csv`, converting numeric fields to int or float."""

    def conv(v: str) -> Any:
        for t in (int, float):
            try:
                return t(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        return [{k: conv(v) for k, v in r.items()} for r in csv.DictReader(f)]
