"""Shapes of the discriminating variable (mass), normalised on the fit range [lo, hi].

Each shape provides an unnormalised cumulative function ``cdf(x, *params)`` (any primitive of its
density) and default starting values/limits; :func:`normalised_cdf` turns it into the fraction of the
shape inside [lo, x]. Signal parameters are shared between the pass and fail categories; background
parameters get a ``_pass``/``_fail`` suffix in the fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba_stats import crystalball, norm

Start = dict[str, tuple[float, tuple[float, float]]]


@dataclass(frozen=True)
class Shape:
    """A named 1-D shape: parameter names, primitive of the density, default starts and limits."""

    name: str
    params: tuple[str, ...]
    cdf: Callable[..., np.ndarray]
    start: Callable[[float, float, float, float], Start]


def normalised_cdf(shape: Shape, x: np.ndarray, lo: float, hi: float, *params: float) -> np.ndarray:
    """Fraction of ``shape`` on [lo, hi] that lies in [lo, x]."""
    c = shape.cdf(np.array([lo, hi], dtype=float), *params)
    norm_ = c[1] - c[0]
    if not np.isfinite(norm_) or norm_ <= 0:
        return np.full(np.shape(x), np.nan)
    return (shape.cdf(np.asarray(x, dtype=float), *params) - c[0]) / norm_


def _gauss_cdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return norm.cdf(x, mu, sigma)


def _crystalball_cdf(x: np.ndarray, mu: float, sigma: float, alpha: float, n: float) -> np.ndarray:
    return crystalball.cdf(x, alpha, n, mu, sigma)


def _exponential_cdf(x: np.ndarray, slope: float) -> np.ndarray:
    """Primitive of exp(slope·x); linear when the slope vanishes (slope in 1/unit of x)."""
    if abs(slope) < 1e-12:
        return np.asarray(x, dtype=float)
    return np.expm1(slope * np.asarray(x, dtype=float)) / slope


def _signal_start(lo: float, hi: float, peak: float, width: float) -> Start:
    w = hi - lo
    return {
        "mu": (peak, (lo, hi)),
        "sigma": (width, (w / 1000.0, w / 4.0)),
        "alpha": (1.5, (0.3, 10.0)),
        "n": (5.0, (1.01, 100.0)),
    }


def _exponential_start(lo: float, hi: float, peak: float, width: float) -> Start:
    return {"slope": (0.0, (-30.0 / (hi - lo), 30.0 / (hi - lo)))}


def _pick(start: Callable[[float, float, float, float], Start], names: tuple[str, ...]) -> Callable[..., Start]:
    def f(lo: float, hi: float, peak: float, width: float) -> Start:
        full = start(lo, hi, peak, width)
        return {k: full[k] for k in names}

    return f


SIGNALS: dict[str, Shape] = {
    "gauss": Shape("gauss", ("mu", "sigma"), _gauss_cdf, _pick(_signal_start, ("mu", "sigma"))),
    "crystalball": Shape(
        "crystalball", ("mu", "sigma", "alpha", "n"), _crystalball_cdf, _pick(_signal_start, ("mu", "sigma", "alpha", "n"))
    ),
}

BACKGROUNDS: dict[str, Shape] = {
    "exponential": Shape("exponential", ("slope",), _exponential_cdf, _exponential_start),
}


def get_shape(kind: str, name: str) -> Shape:
    """The signal or background shape called ``name``; ValueError lists the known names."""
    table = SIGNALS if kind == "signal" else BACKGROUNDS
    if name not in table:
        raise ValueError(f"fit.{kind}: unknown {kind} model {name!r}; known: {', '.join(sorted(table))}")
    return table[name]
