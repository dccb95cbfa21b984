"""Building blocks shared by the toy generators: spectra, mass shapes and classifier-like scores whose
pass probability is known in closed form.

Scores (PID likelihood ratios, classifier outputs) are modelled as ``score = σ(Δ)`` with σ the
logistic function and ``Δ = μ(x, y) + s·L``, ``L`` a standard logistic variate. The probability that
a candidate passes ``score > c`` is then exactly ``σ((μ − logit c)/s)`` (:func:`pass_probability`),
which the generators store per candidate as toy truth for closure tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import uproot

TOY_COMPRESSION = uproot.ZSTD(1)
"""Compression of the toy files: ZSTD level 1 writes random doubles ~6x faster than ZLIB (uproot reads
it through cramjam, one of its own dependencies)."""


def logistic(x: np.ndarray | float) -> np.ndarray:
    """σ(x) = 1/(1 + e^−x), computed without overflow."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float))))


def logit(c: float) -> float:
    """Inverse of :func:`logistic`, for 0 < c < 1."""
    if not 0.0 < c < 1.0:
        raise ValueError(f"a score cut must lie in (0, 1), got {c}")
    return float(np.log(c / (1.0 - c)))


@dataclass(frozen=True)
class Response:
    """Mean log-likelihood ratio μ of a score versus two kinematic variables ``x`` and ``y``:

    μ = a0 + a_x·x + a_logx·ln x + a_y·y + a_y2·y², with spread ``scale`` (see module docstring).
    For PID ``x`` is the momentum (GeV) and ``y`` = cos θ; for a track classifier ``x`` = pT (GeV), ``y`` = η.
    """

    a0: float
    a_x: float = 0.0
    a_logx: float = 0.0
    a_y: float = 0.0
    a_y2: float = 0.0
    scale: float = 1.0

    def mean(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """μ(x, y) (dimensionless)."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return self.a0 + self.a_x * x + self.a_logx * np.log(x) + self.a_y * y + self.a_y2 * y * y

    def pass_probability(self, x: np.ndarray, y: np.ndarray, cut: float) -> np.ndarray:
        """Exact probability that ``score > cut`` at (x, y)."""
        return pass_probability(self.mean(x, y), self.scale, cut)

    def sample(self, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One score in (0, 1) per (x, y)."""
        return score(rng, self.mean(x, y), self.scale)


def score(rng: np.random.Generator, mu: np.ndarray, scale: float) -> np.ndarray:
    """Scores σ(μ + scale·L), L standard logistic, one per element of ``mu``."""
    mu = np.asarray(mu, dtype=float)
    return logistic(mu + scale * rng.logistic(size=mu.shape))


def pass_probability(mu: np.ndarray, scale: float, cut: float) -> np.ndarray:
    """P(σ(μ + scale·L) > cut) = σ((μ − logit cut)/scale)."""
    return logistic((np.asarray(mu, dtype=float) - logit(cut)) / scale)


def gamma_on(rng: np.random.Generator, n: int, shape: float, scale: float, lo: float, hi: float) -> np.ndarray:
    """``n`` samples of a Gamma(shape, scale) spectrum shifted to start at ``lo`` and truncated at ``hi``
    (e.g. momenta in GeV); values beyond ``hi`` are drawn again."""
    out = lo + rng.gamma(shape, scale, n)
    bad = np.flatnonzero(out > hi)
    while bad.size:
        out[bad] = lo + rng.gamma(shape, scale, bad.size)
        bad = bad[out[bad] > hi]
    return out


def beta_on(rng: np.random.Generator, n: int, lo: float, hi: float, a: float, b: float) -> np.ndarray:
    """``n`` samples of lo + (hi − lo)·Beta(a, b) (e.g. cos θ or η distributions)."""
    return lo + (hi - lo) * rng.beta(a, b, n)


def double_gauss(rng: np.random.Generator, mu: float, sigma: np.ndarray, wide: float, frac: float) -> np.ndarray:
    """Peak of a double Gaussian: core width ``sigma`` (array, unit of the mass) with probability ``frac``,
    else ``wide``·sigma."""
    sigma = np.asarray(sigma, dtype=float)
    core = rng.uniform(size=sigma.shape) < frac
    return rng.normal(mu, np.where(core, sigma, wide * sigma))


def linear_on(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """``n`` samples of the density ∝ 1 + slope·t on [lo, hi], t ∈ [−1, 1] the scaled position (|slope| < 1)."""
    if not abs(slope) < 1.0:
        raise ValueError(f"linear_on: |slope| must be < 1, got {slope}")
    u = rng.uniform(size=n)
    if abs(slope) < 1e-9:
        t = 2.0 * u - 1.0
    else:
        t = (np.sqrt(1.0 - 2.0 * slope * (1.0 - 0.5 * slope - 2.0 * u)) - 1.0) / slope
    return lo + 0.5 * (hi - lo) * (t + 1.0)


def threshold_on(rng: np.random.Generator, n: int, m0: float, hi: float, power: float) -> np.ndarray:
    """``n`` samples of the density ∝ (x − m0)^power on [m0, hi] (e.g. the D* ΔM combinatorial background)."""
    return m0 + (hi - m0) * rng.uniform(size=n) ** (1.0 / (power + 1.0))


def pick(rng: np.random.Generator, n: int, choices: dict[str, float]) -> np.ndarray:
    """``n`` labels drawn from ``choices`` (label -> probability, summing to 1)."""
    labels = list(choices)
    return np.asarray(labels)[rng.choice(len(labels), size=n, p=list(choices.values()))]


def by_label(labels: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
    """Per element, the value of ``values[labels[i]]`` (arrays of the length of ``labels``)."""
    out = np.empty(len(labels))
    for label, v in values.items():
        sel = labels == label
        out[sel] = np.asarray(v)[sel]
    return out


def toy_options(generator: str, options: Mapping[str, Any], defaults: Mapping[str, float]) -> dict[str, float]:
    """``defaults`` updated with ``options`` (``toy.options`` of a config); ValueError names unknown keys."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"toy.options: the {generator} generator takes {', '.join(sorted(defaults))}; "
                         f"unknown: {', '.join(unknown)}")
    return {k: float(options.get(k, v)) for k, v in defaults.items()}
