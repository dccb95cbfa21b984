"""Sideband subtraction: a bin's signal yields in pass and fail from a signal window and sidebands of its mass
histograms, and the efficiency with its propagated error.

Per category, N_sig = N_W − α·N_S with N_W, N_S the (weighted) counts in the signal window and the sidebands
and α the background in the window per background candidate in the sidebands:

* ``flat``: α = width(window) / width(sidebands), exact for a background linear in the mass when the
  sidebands lie symmetrically about the window (and for a flat one always);
* ``fitted``: an exponential background exp(c·m) fitted to the sideband bins of both categories together
  (binned Poisson likelihood, one slope, a normalisation per category), α = ∫_W / ∫_S of it; α's error from the
  fitted slope enters the yields' variance.

Var(N_sig) = Σw²_W + α²·Σw²_S (+ N_S²·Var α); ε = P/(P + F) with Var ε = ((1−ε)²·Var P + ε²·Var F −
2ε(1−ε)·Cov)/(P + F)², where pass and fail candidates are disjoint and only a fitted α correlates the two
yields (Cov = N_S,pass·N_S,fail·Var α). Symmetric errors; an ε outside [0, 1] (a negative yield after
subtraction) is kept and flagged by the caller. Window edges must be edges of the mass histogram.
:func:`background_counts` gives the background assumed, in any mass interval (the figures draw it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from calibflow.fit.histograms import BinHistograms

Window = tuple[float, float]


@dataclass(frozen=True)
class SidebandResult:
    """Signal yields (pass, fail) with their variances, α with its variance, and the efficiency."""

    n_pass: float
    var_pass: float
    n_fail: float
    var_fail: float
    alpha: float
    var_alpha: float
    efficiency: float
    error: float


def window_mask(edges: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Mass bins (of ``edges``) inside any of ``windows``; ValueError naming a window edge that is not a
    histogram edge (within 1e-9 of the bin width)."""
    edges = np.asarray(edges, dtype=float)
    tol = 1e-9 * float(np.min(np.diff(edges)))
    mask = np.zeros(len(edges) - 1, dtype=bool)
    for lo, hi in windows:
        for x in (lo, hi):
            if np.min(np.abs(edges - x)) > tol:
                near = edges[np.argsort(np.abs(edges - x))[:2]]
                raise ValueError(f"window edge {x:g} is not an edge of the mass histogram (nearest: "
                                 f"{', '.join(f'{e:g}' for e in sorted(near))})")
        centres = 0.5 * (edges[1:] + edges[:-1])
        mask |= (centres > lo) & (centres < hi)
    return mask


def _exp_integral(c: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """∫ exp(c·m) dm over [lo, hi] (per interval), stable for c → 0 (mass offsets keep it finite)."""
    if abs(c) < 1e-12:
        return hi - lo
    return (np.exp(c * hi) - np.exp(c * lo)) / c


def fitted_slope(edges: np.ndarray, counts: np.ndarray, signal: Window, sidebands: Sequence[Window]
                 ) -> tuple[float, float]:
    """Slope c (per mass unit) and Var c of an exponential background exp(c·m) fitted to the sideband bins of
    ``counts`` (shape (categories, mass bins)): one slope shared by the categories, a free normalisation each
    (binned Poisson likelihood, the normalisations profiled out; masses relative to the window's centre)."""
    edges = np.asarray(edges, dtype=float)
    centre = 0.5 * (signal[0] + signal[1])
    side = window_mask(edges, sidebands)
    lo_s, hi_s = edges[:-1][side] - centre, edges[1:][side] - centre
    y = np.asarray(counts, dtype=float)[:, side]

    def nll(c: float) -> float:  # ν_k = N_k·shape/Σshape
        shape = _exp_integral(c, lo_s, hi_s)
        p = shape / shape.sum()
        return -float(sum(np.sum(yk[yk > 0] * np.log(p[yk > 0])) for yk in y))

    width = float(edges[-1] - edges[0])
    best = optimize.minimize_scalar(nll, bounds=(-50.0 / width, 50.0 / width), method="bounded",
                                    options={"xatol": 1e-10 / width})
    c = float(best.x)
    h = 1e-4 / width
    curvature = (nll(c + h) - 2 * nll(c) + nll(c - h)) / (h * h)
    return c, (1.0 / curvature if curvature > 0 else math.inf)


def _windows_integral(c: float, windows: Sequence[Window], centre: float) -> float:
    """∫ exp(c·(m − centre)) dm over the union of ``windows`` (mass unit)."""
    return sum(float(_exp_integral(c, np.array([a - centre]), np.array([b - centre]))[0]) for a, b in windows)


def _alpha(c: float, signal: Window, sidebands: Sequence[Window]) -> float:
    """∫_W exp(c·m) / ∫_S exp(c·m) (masses relative to the window's centre)."""
    centre = 0.5 * (signal[0] + signal[1])
    return _windows_integral(c, [signal], centre) / _windows_integral(c, sidebands, centre)


def fitted_alpha(edges: np.ndarray, counts: np.ndarray, signal: Window, sidebands: Sequence[Window]
                 ) -> tuple[float, float]:
    """α and Var α of the exponential background of :func:`fitted_slope` (Var α from Var c, linearised)."""
    c, var_c = fitted_slope(edges, counts, signal, sidebands)
    h = 1e-4 / float(np.ptp(np.asarray(edges, dtype=float)))
    da = (_alpha(c + h, signal, sidebands) - _alpha(c - h, signal, sidebands)) / (2 * h)
    return _alpha(c, signal, sidebands), da * da * var_c


def background_counts(hist: BinHistograms, signal: Window, sidebands: Sequence[Window], background: str
                      ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The background the subtraction assumes: a function of mass intervals [lo, hi] (arrays, mass unit)
    giving per category (shape (2, len(lo))) N_S,k·∫exp(c·m)/∫_S exp(c·m), N_S,k the category's sideband counts
    (Σw) and c = 0 (``flat``) or :func:`fitted_slope` (``fitted``). Over the window it is α·N_S,k: what is
    subtracted."""
    if background not in ("flat", "fitted"):
        raise ValueError(f"sideband background {background!r}: use flat or fitted")
    centre = 0.5 * (signal[0] + signal[1])
    c = fitted_slope(hist.edges, hist.sumw, signal, sidebands)[0] if background == "fitted" else 0.0
    n_side = hist.sumw[:, window_mask(hist.edges, sidebands)].sum(axis=1)
    side = _windows_integral(c, sidebands, centre)

    def counts(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        shape = _exp_integral(c, np.asarray(lo, dtype=float) - centre, np.asarray(hi, dtype=float) - centre) / side
        return n_side[:, None] * shape[None, :]

    return counts


def sideband_subtract(hist: BinHistograms, signal: Window, sidebands: Sequence[Window],
                      background: str = "flat") -> SidebandResult:
    """Sideband-subtracted pass and fail yields of ``hist`` and the efficiency (see the module docstring)."""
    w_mask = window_mask(hist.edges, [signal])
    s_mask = window_mask(hist.edges, sidebands)
    if np.any(w_mask & s_mask):
        raise ValueError("the signal window and the sidebands overlap")
    if background == "flat":
        alpha = (signal[1] - signal[0]) / sum(b - a for a, b in sidebands)
        var_alpha = 0.0
    elif background == "fitted":
        alpha, var_alpha = fitted_alpha(hist.edges, hist.sumw, signal, sidebands)
    else:
        raise ValueError(f"sideband background {background!r}: use flat or fitted")
    yields, side = [], []
    for c in range(2):
        nw, ns = float(hist.sumw[c][w_mask].sum()), float(hist.sumw[c][s_mask].sum())
        vw, vs = float(hist.sumw2[c][w_mask].sum()), float(hist.sumw2[c][s_mask].sum())
        yields += [nw - alpha * ns, vw + alpha * alpha * vs + ns * ns * var_alpha]
        side.append(ns)
    p, vp, f, vf = yields
    cov = side[0] * side[1] * var_alpha  # both yields subtract with the same α
    total = p + f
    if total <= 0:
        eff = err = math.nan
    else:
        eff = p / total
        var = ((1 - eff) ** 2 * vp + eff**2 * vf - 2 * eff * (1 - eff) * cov) / total**2
        err = math.sqrt(max(var, 0.0))
    return SidebandResult(p, vp, f, vf, alpha, var_alpha, eff, err)
