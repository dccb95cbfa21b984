"""Trigger efficiencies by the TIS/TOS method (LHCb-PUB-2014-039, the TISTOS method of LHCb's TriggerCalib).

A candidate is TOS (triggered on signal) when the signal alone fires the trigger, TIS (triggered independently
of signal) when the rest of the event does. If TIS and TOS are independent within a bin of the signal's
kinematics, ε_TOS = N_TIS&TOS / N_TIS and ε_TIS = N_TIS&TOS / N_TOS, and the efficiency of the whole trigger
decision is ε_Trig = N_Trig / N_Tot with N_Tot = N_TIS·N_TOS / N_TIS&TOS.

The counts overlap, so their errors are correlated. They are propagated from the four disjoint classes of
triggered candidates, independent Poisson counts (weighted: variance Σw²): a = TIS only, b = TOS only,
c = TIS and TOS, d = triggered but neither TIS nor TOS. Then N_TIS = a + c, N_TOS = b + c, N_Trig = a + b + c + d
and ε_TOS = c/(a + c), ε_TIS = c/(b + c) (binomial: its variance is a·c/(a + c)³ in both forms),
ε_Trig = (a + b + c + d)·c / ((a + c)(b + c)) with its variance Σ_k (∂ε/∂n_k)²·Var n_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TisTosCounts:
    """Weighted counts (Σw, Σw²) of the four disjoint classes: TIS only, TOS only, both, neither (triggered)."""

    sumw: tuple[float, float, float, float]
    sumw2: tuple[float, float, float, float]

    @classmethod
    def from_flags(cls, tis: np.ndarray, tos: np.ndarray, triggered: np.ndarray | None = None,
                   weight: np.ndarray | None = None) -> TisTosCounts:
        """Counts of candidates with boolean ``tis``, ``tos`` and ``triggered`` flags (``triggered``: the
        decision whose efficiency is wanted; None: TIS or TOS) and ``weight`` (None: 1 each)."""
        tis, tos = np.asarray(tis, bool), np.asarray(tos, bool)
        trig = tis | tos if triggered is None else np.asarray(triggered, bool)
        if np.any((tis | tos) & ~trig):
            raise ValueError("a candidate is TIS or TOS but not triggered: TIS and TOS are kinds of triggered "
                             "candidates (check the trigger decision's expression)")
        w = np.ones(len(tis)) if weight is None else np.asarray(weight, float)
        classes = (tis & ~tos, tos & ~tis, tis & tos, trig & ~tis & ~tos)
        return cls(tuple(float(w[m].sum()) for m in classes), tuple(float((w[m] ** 2).sum()) for m in classes))


@dataclass(frozen=True)
class TisTosResult:
    """ε_TOS, ε_TIS and ε_Trig with their (symmetric, propagated) errors; NaN where a count is zero."""

    eff_tos: float
    err_tos: float
    eff_tis: float
    err_tis: float
    eff_trig: float
    err_trig: float


def _propagate(gradient: np.ndarray, variances: np.ndarray) -> float:
    return float(math.sqrt(max(float(np.sum(gradient**2 * variances)), 0.0)))


def tistos_efficiencies(counts: TisTosCounts) -> TisTosResult:
    """ε_TOS, ε_TIS and ε_Trig of ``counts`` with errors propagated from the disjoint classes."""
    a, b, c, d = counts.sumw
    var = np.asarray(counts.sumw2, dtype=float)
    nan = math.nan
    n_tis, n_tos = a + c, b + c
    if n_tis <= 0 or n_tos <= 0 or c <= 0:
        eff_tos = c / n_tis if n_tis > 0 else nan
        eff_tis = c / n_tos if n_tos > 0 else nan
        return TisTosResult(eff_tos, nan, eff_tis, nan, nan, nan)
    eff_tos, eff_tis = c / n_tis, c / n_tos
    g_tos = np.array([-c / n_tis**2, 0.0, a / n_tis**2, 0.0])
    g_tis = np.array([0.0, -c / n_tos**2, b / n_tos**2, 0.0])
    n_trig = a + b + c + d
    eff_trig = n_trig * c / (n_tis * n_tos)
    g_trig = np.array([
        c / (n_tis * n_tos) - eff_trig / n_tis,
        c / (n_tis * n_tos) - eff_trig / n_tos,
        (n_trig + c) / (n_tis * n_tos) - eff_trig / n_tis - eff_trig / n_tos,
        c / (n_tis * n_tos),
    ])
    return TisTosResult(eff_tos, _propagate(g_tos, var), eff_tis, _propagate(g_tis, var),
                        eff_trig, _propagate(g_trig, var))
