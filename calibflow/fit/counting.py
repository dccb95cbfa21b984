"""Cut-and-count efficiencies: exact (Clopper-Pearson), Wilson and Jeffreys binomial intervals, and
sWeighted efficiencies with the PIDCalib2 variance.

Intervals are central with coverage ``cl`` (default ±1σ, 68.27 %). Weighted samples use the effective
counts n_eff = (Σw)²/Σw² and k_eff = ε·n_eff; the interval formulas are continuous in k and n.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

ONE_SIGMA = 0.682689492137086  # two-sided coverage of ±1σ


@dataclass(frozen=True)
class CountResult:
    """Efficiency k/n with its interval ``[efficiency - err_down, efficiency + err_up]``."""

    efficiency: float
    err_down: float
    err_up: float
    passed: float
    total: float
    interval: str = "clopper_pearson"


def clopper_pearson(k: float, n: float, cl: float = ONE_SIGMA) -> tuple[float, float]:
    """Exact central binomial interval for ``k`` successes in ``n`` trials at coverage ``cl``.

    Lower = B⁻¹(α/2; k, n−k+1) (0 when k = 0), upper = B⁻¹(1−α/2; k+1, n−k) (1 when k = n), with B⁻¹ the
    beta quantile (``scipy.special.betaincinv``, what ``scipy.stats.beta.ppf`` computes, without importing
    ``scipy.stats``: 0.5 s) and α = 1 − cl. Non-integer k, n (effective counts) are accepted.
    """
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - cl
    lo = 0.0 if k <= 0 else float(special.betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k >= n else float(special.betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


def wilson(k: float, n: float, cl: float = ONE_SIGMA) -> tuple[float, float]:
    """Wilson score interval (no continuity correction): (k + z²/2)/(n + z²) ± z·√(k(n−k)/n + z²/4)/(n + z²).

    z = Φ⁻¹((1+cl)/2); the bound is 0 at k = 0 and 1 at k = n (scipy's ``proportion_ci`` convention).
    """
    if n <= 0:
        return 0.0, 1.0
    z = float(special.ndtri(0.5 + 0.5 * cl))
    p = k / n
    denom = 2.0 * (n + z * z)
    centre = (2.0 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(max(4.0 * n * p * (1.0 - p) + z * z, 0.0))
    return (0.0 if k <= 0 else centre - delta), (1.0 if k >= n else centre + delta)


def jeffreys(k: float, n: float, cl: float = ONE_SIGMA) -> tuple[float, float]:
    """Jeffreys interval: beta(k+½, n−k+½) quantiles α/2 and 1−α/2, with 0 at k = 0 and 1 at k = n
    (Brown, Cai & DasGupta 2001; ROOT TEfficiency's central Bayesian interval with a Jeffreys prior)."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - cl
    lo = 0.0 if k <= 0 else float(special.betaincinv(k + 0.5, n - k + 0.5, alpha / 2))
    hi = 1.0 if k >= n else float(special.betaincinv(k + 0.5, n - k + 0.5, 1 - alpha / 2))
    return lo, hi


INTERVALS: dict[str, Callable[[float, float, float], tuple[float, float]]] = {
    "clopper_pearson": clopper_pearson,
    "wilson": wilson,
    "jeffreys": jeffreys,
}


def binomial_interval(k: float, n: float, cl: float = ONE_SIGMA, interval: str = "clopper_pearson") -> tuple[float, float]:
    """Interval ``interval`` (clopper_pearson, wilson or jeffreys) for k successes in n trials."""
    if interval not in INTERVALS:
        raise ValueError(f"interval: unknown {interval!r}; known: {', '.join(INTERVALS)}")
    return INTERVALS[interval](k, n, cl)


def count_efficiency(
    sumw_pass: float,
    sumw_total: float,
    sumw2_total: float | None = None,
    cl: float = ONE_SIGMA,
    interval: str = "clopper_pearson",
) -> CountResult:
    """Efficiency of weighted or unweighted counts with a binomial interval (default Clopper-Pearson).

    For weighted counts the interval uses the effective number of entries n_eff = (Σw)²/Σw² and
    k_eff = ε·n_eff. Unweighted: pass ``sumw2_total=None`` or equal to the sum.
    """
    if sumw_total <= 0:
        return CountResult(float("nan"), float("nan"), float("nan"), sumw_pass, sumw_total, interval)
    eff = sumw_pass / sumw_total
    n_eff = sumw_total if not sumw2_total else sumw_total**2 / sumw2_total
    lo, hi = binomial_interval(float(np.clip(eff, 0.0, 1.0)) * n_eff, n_eff, cl, interval)
    return CountResult(float(eff), float(max(eff - lo, 0.0)), float(max(hi - eff, 0.0)), sumw_pass, sumw_total,
                       interval)


def sweighted_efficiency(w_pass: np.ndarray, w_all: np.ndarray) -> CountResult:
    """Efficiency Σw_pass/Σw of sWeighted candidates with the PIDCalib2 variance (symmetric error).

    ``w_pass``: weights of the passing candidates; ``w_all``: weights of all candidates (passing ones
    included). σ²(ε) = ((1−2ε)·Σw²_pass + ε²·Σw²)/(Σw)², the binomial variance with the passing and failing
    weights' Σw² (PIDCalib2). ε outside [0, 1] or Σw < 0 (possible with negative sWeights) is kept and warned
    about (:mod:`calibflow.fit.measure` flags such bins in the tables).
    """
    wp, wa = np.asarray(w_pass, dtype=float), np.asarray(w_all, dtype=float)
    return sweighted_efficiency_from_sums(float(wp.sum()), float(np.sum(wp**2)), float(wa.sum()), float(np.sum(wa**2)))


def sweighted_efficiency_from_sums(sw_pass: float, sw2_pass: float, sw_all: float, sw2_all: float) -> CountResult:
    """:func:`sweighted_efficiency` from the sums Σw and Σw² of passing and of all candidates.

    Σw < 0 (possible with sWeights in a bin of mostly background) keeps ε = Σw_pass/Σw and its variance, as
    PIDCalib2 does; only Σw = 0 gives NaN."""
    if sw_all == 0:
        return CountResult(float("nan"), float("nan"), float("nan"), sw_pass, sw_all, "sweights")
    eff = sw_pass / sw_all
    if not 0.0 <= eff <= 1.0:
        warnings.warn(f"sWeighted efficiency {eff:.4g} outside [0, 1] (negative weights)", stacklevel=2)
    var = ((1.0 - 2.0 * eff) * sw2_pass + eff**2 * sw2_all) / sw_all**2
    err = math.sqrt(max(var, 0.0))
    return CountResult(eff, err, err, sw_pass, sw_all, "sweights")
