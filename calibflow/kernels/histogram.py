"""Numba kernels filling per-bin pass/fail mass histograms in one pass, with a numpy reference."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def fill_pass_fail(
    bin_index: np.ndarray,
    passed: np.ndarray,
    mass: np.ndarray,
    weight: np.ndarray,
    lo: float,
    hi: float,
    sumw: np.ndarray,
    sumw2: np.ndarray,
) -> None:
    """Add rows to ``sumw``/``sumw2`` of shape (n_bins, 2, n_mass): category 0 = pass, 1 = fail.

    Rows with ``bin_index < 0`` or mass outside [lo, hi) are skipped. ``mass`` in the unit of lo/hi.
    """
    n_mass = sumw.shape[2]
    scale = n_mass / (hi - lo)
    for i in range(bin_index.size):
        b = bin_index[i]
        m = mass[i]
        if b < 0 or not (m >= lo and m < hi):
            continue
        j = int((m - lo) * scale)
        if j >= n_mass:
            j = n_mass - 1
        c = 0 if passed[i] else 1
        w = weight[i]
        sumw[b, c, j] += w
        sumw2[b, c, j] += w * w


def fill_pass_fail_reference(
    bin_index: np.ndarray, passed: np.ndarray, mass: np.ndarray, weight: np.ndarray, lo: float, hi: float, n_bins: int, n_mass: int
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-numpy version of :func:`fill_pass_fail` returning new (sumw, sumw2) arrays."""
    edges = np.linspace(lo, hi, n_mass + 1)
    sel = (bin_index >= 0) & (mass >= lo) & (mass < hi)
    cat = np.where(passed, 0, 1)
    sample = np.column_stack([bin_index[sel], cat[sel], mass[sel]])
    bins = [np.arange(n_bins + 1) - 0.5, np.array([-0.5, 0.5, 1.5]), edges]
    sumw, _ = np.histogramdd(sample, bins=bins, weights=weight[sel])
    sumw2, _ = np.histogramdd(sample, bins=bins, weights=weight[sel] ** 2)
    return sumw, sumw2
