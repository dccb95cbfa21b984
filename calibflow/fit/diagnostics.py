"""Quality checks of a fit: what makes a minimum acceptable, and per-bin pulls.

A fit is *good* when Migrad reports a valid minimum with an accurate covariance, no free shape
parameter sits at a search limit (physical bounds such as a fraction at 0 are allowed), the
goodness of fit is sane (χ²/ndof ≤ ``max_chi2_ndof``, and its p-value ≥ ``min_pvalue`` when that is set)
and the signal is significant (N_sig/σ(N_sig) ≥ ``min_significance``). Each failed check is reported as a
short problem tag.

Goodness-of-fit statistics (docs/fits.md, "Goodness of fit"): :func:`chi2_pvalue` of the binned fits'
Baker-Cousins χ² and :func:`ks_test`, the one-sample Kolmogorov-Smirnov test of an unbinned fit's
candidates against the fitted distribution of their category.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from iminuit import Minuit

LOW_GOF_PVALUE = "low_gof_pvalue"
"""Status tag of a fit whose goodness-of-fit p-value is below ``fit.gof.min_pvalue``."""


@dataclass(frozen=True)
class FitQuality:
    """Thresholds of the checks and whether failing fits are retried."""

    max_chi2_ndof: float = 3.0
    min_significance: float = 3.0
    retry: bool = True
    min_pvalue: float = 0.0  # χ² p-value below it: low_gof_pvalue (0: no check)


def chi2_pvalue(chi2: float, ndof: int) -> float:
    """P(χ²_ndof ≥ ``chi2``), the χ² distribution's survival function (NaN for ndof ≤ 0 or a non-finite χ²)."""
    if ndof <= 0 or not math.isfinite(chi2):
        return math.nan
    from scipy import stats  # 0.5 s to import: not at every config check's import of the model library

    return float(stats.chi2.sf(max(chi2, 0.0), ndof))


def ks_test(cdf: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(D, p-value) of the one-sample Kolmogorov-Smirnov test of a sample against a model, given as the
    model's cumulative distribution ``cdf`` (dimensionless, 0 to 1) at each point of the sample sorted in
    ascending order (``weights``: the points' weights, same order).

    D = sup |F_n − F| with F_n the (weighted) empirical distribution; p from the exact distribution of D for n
    points (``scipy.stats.kstwo``), n = (Σw)²/Σw² for weighted samples. Exact for a model fixed in advance; with
    fitted parameters D is smaller than that distribution assumes, so the p-value is too large (conservative).
    (NaN, NaN) for an empty sample.
    """
    f = np.asarray(cdf, dtype=float)
    if f.size == 0:
        return math.nan, math.nan
    w = np.ones_like(f) if weights is None else np.asarray(weights, dtype=float)
    total = float(w.sum())
    if total <= 0:
        return math.nan, math.nan
    above = np.cumsum(w) / total
    below = np.concatenate([[0.0], above[:-1]])
    d = float(max(np.max(above - f), np.max(f - below)))
    n = f.size if weights is None else total * total / float((w * w).sum())
    from scipy import stats

    return d, float(stats.kstwo.sf(d, max(round(n), 1)))


def at_limit(m: Minuit, names: Iterable[str], bounded: Iterable[str] = ()) -> list[str]:
    """Free parameters among ``names`` closer to a limit than max(1e-3·range, 0.1σ), except ``bounded``."""
    wanted, skip = set(names), set(bounded)
    out = []
    for p in m.params:
        if p.name not in wanted or p.name in skip or p.is_fixed or p.lower_limit is None or p.upper_limit is None:
            continue
        tol = max(1e-3 * (p.upper_limit - p.lower_limit), 0.1 * (p.error or 0.0))
        if min(p.value - p.lower_limit, p.upper_limit - p.value) < tol:
            out.append(p.name)
    return out


def poisson_pulls(n: np.ndarray, nu: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Signed square roots of the per-bin Baker-Cousins deviance (≈ (n−ν)/√ν for large counts).

    ``scale`` = Σw/Σw² per bin for weighted histograms (1 for counts).
    """
    s = np.ones_like(n) if scale is None else scale
    ns, nus = n * s, np.maximum(nu, 1e-300) * s
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 2.0 * (nus - ns + np.where(ns > 0, ns * np.log(ns / nus), 0.0))
    return np.sign(ns - nus) * np.sqrt(np.maximum(d, 0.0))


def fit_problems(m: Minuit, shape_params: Iterable[str], bounded: Iterable[str], chi2: float, ndof: int,
                 quality: FitQuality, signal_yield: str = "n_sig") -> list[str]:
    """Problem tags of a minimised and HESSE-d Minuit (empty list: the fit is good)."""
    problems = []
    if not m.valid:
        problems.append("invalid_minimum")
    if not m.accurate:
        problems.append("covariance_not_accurate")
    problems += [f"at_limit:{p}" for p in at_limit(m, shape_params, bounded)]
    if ndof > 0 and chi2 / ndof > quality.max_chi2_ndof:
        problems.append(f"bad_gof:chi2/ndof={chi2 / ndof:.2g}")
    if quality.min_pvalue > 0 and chi2_pvalue(chi2, ndof) < quality.min_pvalue:
        problems.append(f"{LOW_GOF_PVALUE}:p={chi2_pvalue(chi2, ndof):.2g}")
    n, err = float(m.values[signal_yield]), float(m.errors[signal_yield])
    if not (err > 0 and n / err >= quality.min_significance):
        problems.append("low_signal_significance")
    return problems
