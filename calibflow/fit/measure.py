"""Measure one bin by the sample's method (see :class:`calibflow.config.Sample`).

``fit`` uses the bin's pass/fail mass histograms (binned) or its candidates (``fit.binned: false``);
``yield`` fits the mass of all the bin's candidates (pass and fail together) for a signal yield, with no
efficiency; ``sideband`` subtracts the sidebands of the bin's histograms (``fit.sideband``, symmetric
errors); ``count`` and ``sweighted`` use the histogram sums; ``sweights`` fits the bin's candidates' mass
(once for all pass columns, see ``splot_cache``) and sums their sWeights, with the sandwich variance by
default (``fit.sweights_variance``). The result is a JSON-ready dict with efficiency, err_down, err_up, the
signal yields with their errors (:data:`YIELD_FIELDS`), status, the bin's candidates per category
(:func:`candidate_counts`) and, for fits, the parameters and attempts. A yield without an efficiency (method
``yield``) leaves efficiency, its errors and the pass/fail yields NaN.

A fitted bin (methods ``fit``, ``sweights``, ``yield``) with fewer than ``fit.min_candidates`` candidates in pass or
fail (``yield``: in total) is still fitted, but its status starts with ``low_statistics`` (followed by the fit's
own problems, if any): its result is kept in the tables, flagged.

Weights (docs/fits.md, "Weights and signs"): a bin without candidates in the mass range is ``empty_bin``.
With signed weights (sWeights) Σw ≤ 0 is possible with candidates present: ``sweighted`` keeps
Σw_pass/Σw there, as PIDCalib2 does, flagged ``nonpositive_weight_sum``; ``count`` meeting any negative
weight gives the same estimate and errors as ``sweighted``, flagged ``negative_weights`` (binomial intervals
need non-negative weights); fits are not attempted on Σw ≤ 0 (``nonpositive_weight_sum``, NaN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from calibflow.config import SIDEBAND, TISTOS, FitConfig
from calibflow.fit.counting import CountResult, count_efficiency, sweighted_efficiency_from_sums
from calibflow.fit.diagnostics import FitQuality
from calibflow.fit.histograms import BinCandidates, BinHistograms

NEEDS_CANDIDATES = ("sweights", TISTOS)
YIELD = "yield"
"""The method measuring a signal yield (one mass spectrum per bin, no pass/fail and no efficiency)."""
YIELD_FIELDS = ("n_sig", "n_sig_err", "n_pass", "n_pass_err", "n_fail", "n_fail_err")
"""Signal yields of every result (fits: fitted; counting: Σw with √Σw²), in the order of the tables."""
SPLOT_VERSION = 2
"""Version of the cached sPlot fit record (:class:`calibflow.fit.sweights.SPlotFit`), part of its key (2: fixed
parameters with error 0)."""
SPLOT_SETTINGS = ("signal", "background", "parameters", "strategy", "max_chi2_ndof", "min_significance")
"""The fit settings that determine a ``sweights`` mass fit (not the pass column, nor the variance)."""
FITTED = ("fit", "sweights", YIELD)
"""Methods that fit the mass; their bins with fewer than ``fit.min_candidates`` are ``low_statistics``."""
LOW_STATISTICS = "low_statistics"
EMPTY_BIN = "empty_bin"
NEGATIVE_WEIGHTS = "negative_weights"
NONPOSITIVE_WEIGHT_SUM = "nonpositive_weight_sum"
OUTSIDE_0_1 = "efficiency_outside_0_1"
NO_SIGNAL = "no_signal_after_subtraction"
"""Method sideband: the subtracted signal yield of pass and fail together is not positive (no efficiency);
method tistos: a count the efficiency divides by is zero."""


def needs_candidates(method: str, fit: FitConfig) -> bool:
    """Whether the method reads per-bin candidates (else the per-bin histograms)."""
    return method in NEEDS_CANDIDATES or (method in ("fit", YIELD) and not fit.binned)


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
        "fail_gauss": fit.fail_gauss,
        "quality": FitQuality(max_chi2_ndof=fit.max_chi2_ndof, min_significance=fit.min_significance,
                              min_pvalue=fit.gof.min_pvalue),
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


def _not_measured(method: str, status: str, sums: tuple[float, float, float, float] | None = None) -> dict[str, Any]:
    """A bin without a measurement (``empty_bin``, or a fit not attempted): NaN efficiency, the weight sums
    ``sums`` (Σw_pass, Σw²_pass, Σw_fail, Σw²_fail) as yields (0 without)."""
    nan = float("nan")
    out = {"method": method, "efficiency": nan, "err_down": nan, "err_up": nan,
           **_sum_yields(sums or (0.0, 0.0, 0.0, 0.0)), "status": status}
    return _without_efficiency(out) if method == YIELD else out


def _sum_yields(sums: tuple[float, float, float, float]) -> dict[str, float]:
    """Yield fields of summed weights (Σw_pass, Σw²_pass, Σw_fail, Σw²_fail): Σw with error √Σw²."""
    sw_p, sw2_p, sw_f, sw2_f = sums
    return {"n_sig": sw_p + sw_f, "n_sig_err": math.sqrt(max(sw2_p + sw2_f, 0.0)), "n_pass": sw_p,
            "n_pass_err": math.sqrt(max(sw2_p, 0.0)), "n_fail": sw_f, "n_fail_err": math.sqrt(max(sw2_f, 0.0))}


def _without_efficiency(out: dict[str, Any]) -> dict[str, Any]:
    """A yield-only result: no efficiency, no pass/fail split (NaN)."""
    nan = float("nan")
    return {**out, "efficiency": nan, "err_down": nan, "err_up": nan, "n_pass": nan, "n_pass_err": nan,
            "n_fail": nan, "n_fail_err": nan}


def _sideband(fit: FitConfig, hist: BinHistograms | None) -> dict[str, Any]:
    """Result of method ``sideband`` (:mod:`calibflow.fit.sideband`) on the bin's histograms."""
    from calibflow.fit.sideband import sideband_subtract

    if hist is None or fit.sideband is None:
        raise ValueError("method sideband needs the bin's histograms and fit.sideband")
    sb = fit.sideband
    r = sideband_subtract(hist, sb.signal, sb.sidebands, sb.background)
    tags = [] if r.n_pass + r.n_fail > 0 else [NO_SIGNAL]
    tags += [OUTSIDE_0_1] if math.isfinite(r.efficiency) and not 0.0 <= r.efficiency <= 1.0 else []
    return {"method": SIDEBAND, "efficiency": r.efficiency, "err_down": r.error, "err_up": r.error,
            **_sum_yields((r.n_pass, r.var_pass, r.n_fail, r.var_fail)),
            "alpha": r.alpha, "alpha_err": math.sqrt(r.var_alpha), "status": ",".join(tags) or "ok"}


def _tistos(fit: FitConfig, cands: BinCandidates | None, interval: str) -> dict[str, Any]:
    """Result of method ``tistos`` (:mod:`calibflow.fit.tistos`) on the bin's candidates: the efficiency of
    ``fit.tistos.efficiency`` with its error, all three efficiencies (propagated errors) and the class counts.
    ε_TOS and ε_TIS are binomial ratios (TIS&TOS among TIS, among TOS): they get the sample's ``interval`` as
    method ``count`` does (effective counts when weighted; propagated when a weight is negative); ε_Trig gets
    the propagated, symmetric error. Yields: pass/fail are TIS&TOS and TIS-only (``tos``), TIS&TOS and TOS-only
    (``tis``), triggered and the estimated untriggered N_Tot − N_Trig (``trigger``)."""
    from calibflow.fit.tistos import TisTosCounts, tistos_efficiencies

    if cands is None or fit.tistos is None or len(cands.flags) < 3:
        raise ValueError("method tistos needs the bin's candidates with their TIS, TOS and trigger decisions")
    weight = cands.weight if cands.weighted else None
    counts = TisTosCounts.from_flags(cands.flags["tis"], cands.flags["tos"], cands.flags["trigger"], weight)
    r = tistos_efficiencies(counts)
    (a, b, c, d), (va, vb, vc, vd) = counts.sumw, counts.sumw2
    which = fit.tistos.efficiency
    eff, err = {"tos": (r.eff_tos, r.err_tos), "tis": (r.eff_tis, r.err_tis), "trigger": (r.eff_trig, r.err_trig)}[which]
    err_down = err_up = err
    if which != "trigger" and not (cands.weighted and np.any(cands.weight < 0)):
        other, v_other = (a, va) if which == "tos" else (b, vb)
        ci = count_efficiency(c, c + other, vc + v_other if cands.weighted else None, interval=interval)
        err_down, err_up = ci.err_down, ci.err_up
    if which == "trigger":
        n_trig = a + b + c + d
        n_tot = n_trig / r.eff_trig if r.eff_trig > 0 else math.nan
        n_pass, v_pass, n_fail, v_fail = n_trig, va + vb + vc + vd, n_tot - n_trig, math.nan
    else:
        other, v_other = (a, va) if which == "tos" else (b, vb)
        n_pass, v_pass, n_fail, v_fail = c, vc, other, v_other
    tags = [] if math.isfinite(eff) else [NO_SIGNAL]
    tags += [OUTSIDE_0_1] if math.isfinite(eff) and not 0.0 <= eff <= 1.0 else []
    return {"method": TISTOS, "efficiency": eff, "err_down": err_down, "err_up": err_up,
            **_sum_yields((n_pass, v_pass, n_fail, v_fail)),
            "eff_tos": r.eff_tos, "err_tos": r.err_tos, "eff_tis": r.eff_tis, "err_tis": r.err_tis,
            "eff_trigger": r.eff_trig, "err_trigger": r.err_trig, "n_tis_only": a, "n_tos_only": b,
            "n_tis_and_tos": c, "n_neither": d, "status": ",".join(tags) or "ok"}


def _count(method: str, c: CountResult, sums: tuple[float, float, float, float], tags: list[str]) -> dict[str, Any]:
    """Result of a counted bin; ``tags``: its flag reasons (none: ``ok``)."""
    return {"method": method, "efficiency": c.efficiency, "err_down": c.err_down, "err_up": c.err_up,
            **_sum_yields(sums), "status": ",".join(tags) or "ok"}


def _weight_tags(c: CountResult, sum_all: float) -> list[str]:
    """Flags of an efficiency of signed weights: Σw ≤ 0, and ε outside [0, 1]."""
    tags = [NONPOSITIVE_WEIGHT_SUM] if sum_all <= 0 else []
    return tags + ([OUTSIDE_0_1] if math.isfinite(c.efficiency) and not 0.0 <= c.efficiency <= 1.0 else [])


def weight_sums(hist: BinHistograms | None = None,
                cands: BinCandidates | None = None) -> tuple[float, float, float, float]:
    """(Σw_pass, Σw²_pass, Σw_fail, Σw²_fail) of a bin's histograms or candidates (counts when unweighted)."""
    if hist is not None:
        sw, sw2 = hist.sumw.sum(axis=1), hist.sumw2.sum(axis=1)
        return float(sw[0]), float(sw2[0]), float(sw[1]), float(sw2[1])
    assert cands is not None
    w = cands.weight if cands.weighted else np.ones(cands.mass.size)
    wp, wf = w[cands.passed], w[~cands.passed]
    return float(wp.sum()), float((wp * wp).sum()), float(wf.sum()), float((wf * wf).sum())


def measure_bin(
    method: str,
    fit: FitConfig,
    hist: BinHistograms | None = None,
    cands: BinCandidates | None = None,
    interval: str = "clopper_pearson",
    splot_cache: str | None = None,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Efficiency of one bin from its histograms (``hist``) or candidates (``cands``).

    ``reference`` (method ``fit``): ``template``, the reference simulation's histograms of the bin
    (``fit.signal: template``), and ``constraint``, its simulation fit's result (``fit.constrain``); see
    :func:`calibflow.fit.constraints.reference_options`.

    ``splot_cache``: JSON path of the bin's sPlot mass fit (method ``sweights``), read if present, else
    written, so that working points differing only in the pass column fit the mass once. The result has
    ``candidates_pass``/``candidates_fail`` (:func:`candidate_counts`); a fitted bin with fewer than
    ``fit.min_candidates`` in either is ``low_statistics``.
    """
    n_pass, n_fail = candidate_counts(hist, cands)
    out = _measure(method, fit, hist, cands, interval, splot_cache, reference)
    fewest = n_pass + n_fail if method == YIELD else min(n_pass, n_fail)
    if method in FITTED and out["status"] != EMPTY_BIN and fewest < fit.min_candidates:
        out["status"] = with_low_statistics(out["status"])
    return {**out, "candidates_pass": n_pass, "candidates_fail": n_fail}


def _measure(method: str, fit: FitConfig, hist: BinHistograms | None, cands: BinCandidates | None, interval: str,
             splot_cache: str | None, reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result of :func:`measure_bin` before the low-statistics check."""
    if (hist is not None and hist.empty) or (cands is not None and cands.mass.size == 0):
        return _not_measured(method, EMPTY_BIN)
    if method == SIDEBAND:
        return _sideband(fit, hist)
    if method == TISTOS:
        return _tistos(fit, cands, interval)
    if method in ("count", "sweighted"):
        assert hist is not None
        sums = weight_sums(hist)
        sw_p, sw2_p, sw_f, sw2_f = sums
        sw, sw2 = sw_p + sw_f, sw2_p + sw2_f
        if method == "count" and not hist.negative.any():
            c = count_efficiency(sw_p, sw, sw2 if hist.weighted else None, interval=interval)
            return _count(method, c, sums, [])
        # signed weights: PIDCalib2's estimate and variance, kept where Σw <= 0 (NaN only for Σw = 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ε outside [0, 1]: the status says it, in the tables and the summary
            c = sweighted_efficiency_from_sums(sw_p, sw2_p, sw, sw2)
        tags = [NEGATIVE_WEIGHTS] if method == "count" else []
        return _count(method, c, sums, tags + _weight_tags(c, sw))
    sums = weight_sums(hist, cands)
    if sums[0] + sums[2] <= 0:
        return _not_measured(method, NONPOSITIVE_WEIGHT_SUM, sums)
    if method == "sweights":
        from calibflow.fit.sweights import (
            cached_splot_fit,
            signal_weight_errors,
            splot_fit,
            sweights_efficiency,
        )

        assert cands is not None
        opts = _fit_options(fit)
        sp, reused = cached_splot_fit(splot_cache, lambda: splot_fit(
            cands.mass, opts["signal"], opts["background"], cands.lo, cands.hi, parameters=opts["parameters"],
            strategy=fit.strategy, quality=replace(opts["quality"], min_pvalue=0.0)))  # gof: not in its cache key
        weight = cands.weight if cands.weighted else None
        c = sweights_efficiency(sp, cands.mass, cands.passed, weight, variance=fit.sweights_variance)
        status = sp.status if 0.0 <= c.efficiency <= 1.0 else f"{sp.status},{OUTSIDE_0_1}"
        err_pass, err_fail = signal_weight_errors(sp, cands.mass, cands.passed, weight)
        yields = {"n_sig": sp.values["n_sig"], "n_sig_err": sp.errors["n_sig"], "n_pass": c.passed,
                  "n_pass_err": err_pass, "n_fail": c.total - c.passed, "n_fail_err": err_fail}
        return {"method": method, "efficiency": c.efficiency, "err_down": c.err_down, "err_up": c.err_up, **yields,
                "status": status, "variance": fit.sweights_variance, "values": dict(sp.values),
                "yields": sp.yields, "splot_reused": reused}
    opts = _fit_options(fit)
    if method == YIELD:
        opts.pop("fail_width_shift")
        opts.pop("fail_gauss")
        if cands is not None:
            from calibflow.fit.unbinned import fit_extended

            r = fit_extended(cands.mass, cands.lo, cands.hi, weights=cands.weight if cands.weighted else None,
                             **opts).result
        else:
            from calibflow.fit.passfail import fit_yield

            assert hist is not None
            r = fit_yield(hist.edges, hist.sumw.sum(axis=0), hist.sumw2.sum(axis=0) if hist.weighted else None,
                          **opts)
        return _clean(_without_efficiency({"method": method, **r.to_dict()}))
    from calibflow.fit.constraints import reference_options

    more, extra, problem = reference_options(fit, opts["parameters"], **(reference or {}))
    if problem:
        return {**_not_measured(method, problem, sums), **extra}
    opts.update(more)
    if cands is not None:
        from calibflow.fit.unbinned import fit_pass_fail_unbinned

        wp = cands.weight[cands.passed] if cands.weighted else None
        wf = cands.weight[~cands.passed] if cands.weighted else None
        r = fit_pass_fail_unbinned(cands.mass[cands.passed], cands.mass[~cands.passed], cands.lo, cands.hi, wp, wf,
                                   minos=fit.minos, **opts)
    else:
        from calibflow.fit.passfail import fit_pass_fail

        assert hist is not None
        r = fit_pass_fail(hist.edges, hist.sumw[0], hist.sumw[1], hist.sumw2[0] if hist.weighted else None,
                          hist.sumw2[1] if hist.weighted else None, minos=fit.minos, **opts)
    return _clean({"method": method, **r.to_dict(), **extra})


def _clean(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with numpy floats as Python floats (JSON)."""
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}
