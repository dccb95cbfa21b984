"""Cut-and-count efficiencies with exact (Clopper-Pearson) and other binomial intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

ONE_SIGMA = 0.682689492137086  # two-sided coverage of ±1σ


@dataclass(frozen=True)
class CountResult:
    """Efficiency k/n with its interval ``[efficiency - err_down, efficiency + err_up]``."""

    efficiency: float
    err_down: float
    err_up: float
    passed: float
    total: float


def clopper_pearson(k: float, n: float, cl: float = ONE_SIGMA) -> tuple[float, float]:
    """Exact central binomial interval for ``k`` successes in ``n`` trials at coverage ``cl``.

    Non-integer k, n (effective counts of weighted samples) are accepted; the beta quantiles are
    continuous in them.
    """
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - cl
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def count_efficiency(
    sumw_pass: float, sumw_total: float, sumw2_total: float | None = None, cl: float = ONE_SIGMA
) -> CountResult:
    """Efficiency of weighted or unweighted counts with a Clopper-Pearson interval.

    For weighted counts the interval uses the effective number of entries
    n_eff = (Σw)²/Σw² and k_eff = ε·n_eff. Unweighted: pass ``sumw2_total=None`` or equal to the sum.
    """
    if sumw_total <= 0:
        return CountResult(float("nan"), float("nan"), float("nan"), sumw_pass, sumw_total)
    eff = sumw_pass / sumw_total
    n_eff = sumw_total if not sumw2_total else sumw_total**2 / sumw2_total
    lo, hi = clopper_pearson(np.clip(eff, 0.0, 1.0) * n_eff, n_eff, cl)
    return CountResult(float(eff), float(max(eff - lo, 0.0)), float(max(hi - eff, 0.0)), sumw_pass, sumw_total)
