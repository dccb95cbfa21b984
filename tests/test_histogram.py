"""Per-bin pass/fail mass histogram kernel against its numpy reference and hand-made numbers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibflow.kernels.histogram import fill_pass_fail, fill_pass_fail_reference


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_bins=st.integers(1, 6), n_mass=st.integers(1, 40))
def test_fill_pass_fail_equals_reference(seed: int, n_bins: int, n_mass: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    lo, hi = 2.9, 3.3
    bin_index = rng.integers(-1, n_bins, n)
    passed = rng.random(n) < 0.6
    mass = rng.uniform(2.8, 3.4, n)
    mass[:20] = np.linspace(lo, hi, n_mass + 1)[rng.integers(0, n_mass + 1, 20)]  # exactly on mass edges
    weight = rng.uniform(-0.5, 2.0, n)
    sumw = np.zeros((n_bins, 2, n_mass))
    sumw2 = np.zeros((n_bins, 2, n_mass))
    fill_pass_fail(bin_index, passed, mass, weight, lo, hi, sumw, sumw2)
    ref_w, ref_w2 = fill_pass_fail_reference(bin_index, passed, mass, weight, lo, hi, n_bins, n_mass)
    # the kernel bins by (m - lo) * n / (hi - lo), the reference by linspace edges: equal up to rounding
    # of values on an edge, which moves a row by one mass bin; the totals per bin and category agree
    np.testing.assert_allclose(sumw.sum(axis=2), ref_w.sum(axis=2), atol=1e-9)
    np.testing.assert_allclose(sumw2.sum(axis=2), ref_w2.sum(axis=2), atol=1e-9)
    sel = np.arange(n) >= 20  # rows not placed on an edge: equal bin by bin
    sumw[:] = 0.0
    sumw2[:] = 0.0
    fill_pass_fail(bin_index[sel], passed[sel], mass[sel], weight[sel], lo, hi, sumw, sumw2)
    ref_w, ref_w2 = fill_pass_fail_reference(
        bin_index[sel], passed[sel], mass[sel], weight[sel], lo, hi, n_bins, n_mass
    )
    np.testing.assert_allclose(sumw, ref_w, atol=1e-9)
    np.testing.assert_allclose(sumw2, ref_w2, atol=1e-9)


def test_fill_pass_fail_known_numbers() -> None:
    bin_index = np.array([0, 0, 1, -1, 1, 0])
    passed = np.array([True, False, True, True, False, True])
    mass = np.array([3.05, 3.15, 3.0, 3.1, 3.25, 3.3])  # 3.3 == hi: outside
    weight = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    sumw = np.zeros((2, 2, 3))
    sumw2 = np.zeros((2, 2, 3))
    fill_pass_fail(bin_index, passed, mass, weight, 3.0, 3.3, sumw, sumw2)
    expected = np.zeros((2, 2, 3))
    expected[0, 0, 0] = 1.0
    expected[0, 1, 1] = 2.0
    expected[1, 0, 0] = 3.0
    expected[1, 1, 2] = 5.0
    np.testing.assert_allclose(sumw, expected)
    np.testing.assert_allclose(sumw2, expected**2)
