"""Measure the efficiency of one bin by the sample's method (see :class:`calibflow.config.Sample`).

``fit`` uses the bin's pass/fail mass histograms (binned) or its candidates (``fit.binned: false``);
``count`` and ``sweighted`` use the histogram sums; ``sweights`` fits the bin's candidates' mass (once
for all pass columns, see ``splot_cache``) and sums their sWeights, with the sandwich variance by
default (``fit.sweights_variance``). The result is a JSON-ready dict with efficiency, err_down, err_up, n_pass,
n_fail (signal yields), status, the bin's candidates per category (:func:`candidate_counts`) and, for fits,
the parameters and attempts.

A fitted bin (methods ``fit`` and ``sweights``) with fewer than ``fit.min_candidates`` candidates in pass or
fail is still fitted, but its status starts with ``low_statistics`` (followed by the fit's own problems, if
any): its result is kept in the tables, flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibflow.config import FitConfig
from calibflow.fit.counting import count_efficiency, sweighted_efficiency_from_sums
from calibflow.fit.diagnostics import FitQuality
from calibflow.fit.histograms import BinCandidates, BinHistograms

NEEDS_CANDIDATES = ("sweights",)
SPLOT_VERSION = 1
"""Version of the cached sPlot fit record (:class:`calibflow.fit.sweights.SPlotFit`), part of its key."""
SPLOT_SETTINGS = ("signal", "background", "parameters", "strategy", "max_chi2_ndof", "min_significance")
"""The fit settings that determine a ``sweights`` mass fit (not the pass column, nor the variance)."""
FITTED = ("fit", "sweights")
"""Methods that fit the mass; their bins with fewer than ``fit.min_candidates`` are ``low_statistics``."""
LOW_STATISTICS = "low_statistics"


def needs_candidates(method: str, fit: FitConfig) -> bool:
    """Whether the method reads per-bin candidates (else the per-bin histograms)."""
    return method in NEEDS_CANDIDATES or (method == "fit" and not fit.binned)


def splot_settings(fit: FitConfig) -> dict[str, Any]:
    """The part of ``fit`` that determines the sPlot mass fit of method ``sweights`` (its cache key)."""
    return {k: getattr(fit, k) for k in SPLOT_SETTINGS}


def _fit_options(fit: FitConfig) -> dict[str, Any]:
    return {
        "signal": fit.signal,
        "background": fit.background,
        "parameters": {k: v.model_dump() for k, v in fit.parameters.items()},
        "strategy": fit.strategy,
        "fail_width_shift": fit.fail_width_shift,
        "quality": FitQuality(max_chi2_ndof=fit.max_chi2_ndof, min_significance=fit.min_significance),
    }


def _effective(sumw: float, sumw2: float, weighted: bool) -> float:
    """Candidates of a category: the count (unweighted), else Kish's effective number (Σw)²/Σw²."""
    if not weighted:
        return float(sumw)
    return float(sumw * sumw / sumw2) if sumw2 > 0 else 0.0


def candidate_counts(hist: BinHistograms | None = None, cands: BinCandidates | None = None) -> tuple[float, float]:
    """(pass, fail) candidates of a bin in the mass range: counts for unweighted samples, the effective
    numbers (Σw)²/Σw² for weighted ones (what the statistical power of a weighted fit corresponds to)."""
    if hist is not None:
        sw, sw2 = hist.sumw.sum(axis=1), hist.sumw2.sum(axis=1)
        return _effective(sw[0], sw2[0], hist.weighted), _effective(sw[1], sw2[1], hist.weighted)
    assert cands is not None
    out = []
    for sel in (cands.passed, ~cands.passed):
        w = cands.weight[sel]
        out.append(_effective(float(w.sum()), float((w * w).sum()), True) if cands.weighted else float(sel.sum()))
    return out[0], out[1]


def with_low_statistics(status: str) -> str:
    """``status`` with ``low_statistics`` first (``ok`` alone becomes ``low_statistics``)."""
    return ",".join([LOW_STATISTICS, *(t for t in status.split(",") if t not in ("ok", LOW_STATISTICS))])


def _empty(method: str) -> dict[str, Any]:
    nan = float("nan")
    return {"method": method, "efficiency": nan, "err_down": nan, "err_up": nan, "n_pass": 0.0, "n_fail": 0.0,
            "status": "empty_bin"}


def _count(method: str, c: Any, status: str = "ok") -> dict[str, Any]:
    return {"method": method, "efficiency": c.efficiency, "err_down": c.err_down, "err_up": c.err_up,
            "n_pass": c.passed, "n_fail": c.total - c.passed, "status": status}


def measure_bin(
    method: str,
    fit: FitConfig,
    hist: BinHistograms | None = None,
    cands: BinCandidates | None = None,
    interval: str = "clopper_pearson",
    splot_cache: str | None = None,
) -> dict[str, Any]:
    """Efficiency of one bin from its histograms (``hist``) or candidates (``cands``).

    ``splot_cache``: JSON path of the bin's sPlot mass fit (method ``sweights``), read if present, else
    written, so that working points differing only in the pass column fit the mass once. The result has
    ``candidates_pass``/``candidates_fail`` (:func:`candidate_counts`); a fitted bin with fewer than
    ``fit.min_candidates`` in either is ``low_statistics``.
    """
    n_pass, n_fail = candidate_counts(hist, cands)
    out = _measure(method, fit, hist, cands, interval, splot_cache)
    if method in FITTED and out["status"] != "empty_bin" and min(n_pass, n_fail) < fit.min_candidates:
        out["status"] = with_low_statistics(out["status"])
    return {**out, "candidates_pass": n_pass, "candidates_fail": n_fail}


def _measure(method: str, fit: FitConfig, hist: BinHistograms | None, cands: BinCandidates | None, interval: str,
             splot_cache: str | None) -> dict[str, Any]:
    """The result of :func:`measure_bin` before the low-statistics check."""
    if (hist is not None and float(hist.sumw.sum()) <= 0) or (cands is not None and cands.mass.size == 0):
        return _empty(method)
    if method == "count":
        assert hist is not None
        w2 = float(hist.sumw2.sum()) if hist.weighted else None
        return _count(method, count_efficiency(float(hist.sumw[0].sum()), float(hist.sumw.sum()), w2, interval=interval))
    if method == "sweighted":
        assert hist is not None
        c = sweighted_efficiency_from_sums(float(hist.sumw[0].sum()), float(hist.sumw2[0].sum()),
                                           float(hist.sumw.sum()), float(hist.sumw2.sum()))
        return _count(method, c, "ok" if 0.0 <= c.efficiency <= 1.0 else "efficiency_outside_0_1")
    if method == "sweights":
        from calibflow.fit.sweights import cached_splot_fit, splot_fit, sweights_efficiency

        assert cands is not None
        opts = _fit_options(fit)
        sp, reused = cached_splot_fit(splot_cache, lambda: splot_fit(
            cands.mass, opts["signal"], opts["background"], cands.lo, cands.hi, parameters=opts["parameters"],
            strategy=fit.strategy, quality=opts["quality"]))
        c = sweights_efficiency(sp, cands.mass, cands.passed, cands.weight, variance=fit.sweights_variance)
        status = sp.status if 0.0 <= c.efficiency <= 1.0 else f"{sp.status},efficiency_outside_0_1"
        return {**_count(method, c, status), "variance": fit.sweights_variance, "values": dict(sp.values),
                "yields": sp.yields, "splot_reused": reused}
    if cands is not None:
        from calibflow.fit.unbinned import fit_pass_fail_unbinned

        wp = cands.weight[cands.passed] if cands.weighted else None
        wf = cands.weight[~cands.passed] if cands.weighted else None
        r = fit_pass_fail_unbinned(cands.mass[cands.passed], cands.mass[~cands.passed], cands.lo, cands.hi, wp, wf,
                                   minos=fit.minos, **_fit_options(fit))
    else:
        from calibflow.fit.passfail import fit_pass_fail

        assert hist is not None
        r = fit_pass_fail(hist.edges, hist.sumw[0], hist.sumw[1], hist.sumw2[0] if hist.weighted else None,
                          hist.sumw2[1] if hist.weighted else None, minos=fit.minos, **_fit_options(fit))
    out = {"method": method, **r.to_dict()}
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}
