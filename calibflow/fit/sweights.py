"""sPlot weights from a fit of a discriminating variable (classic inverse-covariance method).

With N_k the fitted yields and f_k the pdfs normalised on the fit range, for candidates x_e:

    W_kj = Σ_e f_k(x_e)·f_j(x_e) / (Σ_l N_l f_l(x_e))²,    α = W⁻¹,
    w_k(x) = Σ_j α_kj f_j(x) / Σ_l N_l f_l(x)

(Pivk & Le Diberder 2005; the ``summation`` method of the ``sweights`` package). Σ_e w_k(x_e) = N_k
when the N_k maximise the extended likelihood; α estimates the covariance of the yields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibflow.fit.diagnostics import FitQuality
from calibflow.fit.models import Shape
from calibflow.fit.unbinned import ExtendedFit, fit_extended

Pdf = Callable[[np.ndarray], np.ndarray]


def sweight_matrix(x: np.ndarray, yields: Mapping[str, float], pdfs: Mapping[str, Pdf]) -> tuple[np.ndarray, np.ndarray]:
    """(α = W⁻¹, the matrix of pdf values f_k(x_e) with shape (components, candidates)), order of ``yields``."""
    names = list(yields)
    missing = [k for k in names if k not in pdfs]
    if missing:
        raise ValueError(f"sweights: no pdf for component(s) {', '.join(missing)}")
    xa = np.asarray(x, dtype=float)
    f = np.stack([np.asarray(pdfs[k](xa), dtype=float) for k in names])
    n = np.array([yields[k] for k in names], dtype=float)
    denom = n @ f
    g = f / denom
    return np.linalg.inv(g @ g.T), f


def sweights_from_fit(x: np.ndarray, yields: Mapping[str, float], pdfs: Mapping[str, Pdf]) -> dict[str, np.ndarray]:
    """sWeights of every component at the candidates ``x``: {name: w_k(x_e)} (dimensionless).

    ``yields``: fitted yields by component name; ``pdfs``: callables returning the normalised density
    of each component (same names).
    """
    alpha, f = sweight_matrix(x, yields, pdfs)
    n = np.array(list(yields.values()), dtype=float)
    w = alpha @ f / (n @ f)
    return {k: w[i] for i, k in enumerate(yields)}


@dataclass
class SWeightResult:
    """sWeights per component, the yield covariance α = W⁻¹ and the underlying fit."""

    weights: dict[str, np.ndarray]
    covariance: np.ndarray
    fit: ExtendedFit

    @property
    def status(self) -> str:
        """Status of the discriminating-variable fit (``ok`` or its problems)."""
        return self.fit.status


def fit_and_sweight(
    x: np.ndarray,
    signal: str | Shape,
    background: str | Shape,
    lo: float,
    hi: float,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    quality: FitQuality | None = None,
) -> SWeightResult:
    """Extended unbinned fit of ``x`` on [lo, hi] (signal + background), then sWeights of both components.

    Candidates outside [lo, hi] get weight 0 (they are not part of the fit).
    """
    xa = np.asarray(x, dtype=float)
    fit = fit_extended(xa, lo, hi, signal, background, parameters=parameters, strategy=strategy, quality=quality)
    inside = (xa >= lo) & (xa <= hi)
    pdfs = fit.pdfs()
    alpha, _ = sweight_matrix(xa[inside], fit.yields, pdfs)
    weights = {k: np.zeros_like(xa) for k in fit.yields}
    for k, w in sweights_from_fit(xa[inside], fit.yields, pdfs).items():
        weights[k][inside] = w
    return SWeightResult(weights, alpha, fit)
