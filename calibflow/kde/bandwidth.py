"""Kernel bandwidths per dimension from a weighted sample: Scott's or Silverman's rule with Kish's effective N.

The kernel is a product of 1-D Gaussians (diagonal bandwidth matrix). For dimension ``d`` of a sample of
``D`` dimensions with weighted standard deviation ``s_d`` (negative sWeights allowed; the variance is
clipped at 0) and Kish effective size ``n_eff = (sum w)^2 / sum w^2``:

* ``scott``:     ``sigma_d = s_d * n_eff ** (-1 / (D + 4))`` (scipy's ``gaussian_kde`` factor);
* ``silverman``: ``sigma_d = s_d * (4 / ((D + 2) * n_eff)) ** (1 / (D + 4))``.

Then ``sigma_d`` is multiplied by a per-dimension scale (the templates' ``bandwidthDown``/``Up`` variations
use 0.5 and 2). The bandwidth is in the unit of the dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Rule = Literal["scott", "silverman"]
RULES: tuple[str, ...] = ("scott", "silverman")


def kish_neff(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 for an empty or zero-weight sample)."""
    w = np.asarray(weights, dtype=float)
    sw2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sw2 if sw2 > 0 else 0.0


def weighted_std(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted standard deviation of each column of ``points`` (N, D); negative variances clipped at 0."""
    w = np.asarray(weights, dtype=float)
    sw = w.sum()
    if sw <= 0:
        raise ValueError("the sum of weights is not positive: no density to estimate")
    mean = w @ points / sw
    var = w @ (points - mean) ** 2 / sw
    return np.sqrt(np.clip(var, 0.0, None))


def rule_factor(rule: Rule, n_eff: float, dims: int) -> float:
    """The factor multiplying the standard deviations for ``rule`` (see the module docstring)."""
    if n_eff <= 0:
        raise ValueError("effective sample size is 0: no bandwidth")
    if rule == "scott":
        return float(n_eff ** (-1.0 / (dims + 4)))
    if rule == "silverman":
        return float((4.0 / ((dims + 2) * n_eff)) ** (1.0 / (dims + 4)))
    raise ValueError(f"unknown bandwidth rule {rule!r} (known: {', '.join(RULES)})")


def bandwidths(
    points: np.ndarray, weights: np.ndarray, rule: Rule = "scott", scale: float | Sequence[float] = 1.0
) -> np.ndarray:
    """Per-dimension Gaussian kernel widths (unit of each dimension) of the weighted sample ``points`` (N, D)."""
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    factor = rule_factor(rule, kish_neff(weights), points.shape[1])
    return weighted_std(points, weights) * factor * np.broadcast_to(np.asarray(scale, dtype=float), points.shape[1])
