"""Binomial intervals against scipy's binomtest/beta quantiles; sWeighted efficiencies."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from calibflow.fit.counting import (
    ONE_SIGMA,
    binomial_interval,
    clopper_pearson,
    count_efficiency,
    jeffreys,
    sweighted_efficiency,
    wilson,
)

CASES = [(0, 10), (10, 10), (1, 10), (37, 50), (0, 1), (1, 1), (999, 1000), (4567, 10000)]


@pytest.mark.parametrize(("k", "n"), CASES)
def test_clopper_pearson_equals_beta_quantiles_and_binomtest(k: int, n: int) -> None:
    lo, hi = clopper_pearson(k, n)
    a = 1 - ONE_SIGMA
    assert lo == (0.0 if k == 0 else stats.beta.ppf(a / 2, k, n - k + 1))
    assert hi == (1.0 if k == n else stats.beta.ppf(1 - a / 2, k + 1, n - k))
    ci = stats.binomtest(k, n).proportion_ci(method="exact", confidence_level=ONE_SIGMA)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), CASES)
def test_wilson_equals_binomtest(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(method="wilson", confidence_level=ONE_SIGMA)
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), rel=1e-12, abs=1e-15)
    ci95 = stats.binomtest(k, n).proportion_ci(method="wilson", confidence_level=0.95)
    assert wilson(k, n, 0.95) == pytest.approx((ci95.low, ci95.high), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("k", "n"), CASES)
def test_jeffreys_equals_beta_half_quantiles(k: int, n: int) -> None:
    a = 1 - ONE_SIGMA
    b = stats.beta(k + 0.5, n - k + 0.5)
    expected = (0.0 if k == 0 else b.ppf(a / 2), 1.0 if k == n else b.ppf(1 - a / 2))
    assert jeffreys(k, n) == expected


def test_count_efficiency_intervals_and_weights() -> None:
    for interval in ("clopper_pearson", "wilson", "jeffreys"):
        c = count_efficiency(37, 50, interval=interval)
        lo, hi = binomial_interval(37, 50, interval=interval)
        assert c.efficiency == 37 / 50 and c.interval == interval
        assert (c.efficiency - c.err_down, c.efficiency + c.err_up) == pytest.approx((lo, hi))
        # constant weights 2: same effective counts, same interval
        w = count_efficiency(74, 100, 200, interval=interval)
        assert (w.err_down, w.err_up) == pytest.approx((c.err_down, c.err_up), rel=1e-12)
    with pytest.raises(ValueError, match="interval: unknown 'agresti'"):
        count_efficiency(1, 2, interval="agresti")
    assert np.isnan(count_efficiency(0, 0).efficiency)
    assert count_efficiency(10, 10).err_up == 0.0


def test_sweighted_efficiency_pidcalib_variance() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0.8, 0.4, 2000)
    passed = rng.random(w.size) < 0.7
    r = sweighted_efficiency(w[passed], w)
    eff = w[passed].sum() / w.sum()
    var_pidcalib = ((1 - 2 * eff) * np.sum(w[passed] ** 2) + eff**2 * np.sum(w**2)) / w.sum() ** 2
    # the same as the binomial propagation with separate pass and fail Σw²
    var_binom = ((1 - eff) ** 2 * np.sum(w[passed] ** 2) + eff**2 * np.sum(w[~passed] ** 2)) / w.sum() ** 2
    assert r.efficiency == pytest.approx(eff, rel=1e-14)
    assert r.err_up == r.err_down == pytest.approx(np.sqrt(var_pidcalib), rel=1e-12)
    assert var_pidcalib == pytest.approx(var_binom, rel=1e-12)
    # unit weights: the binomial error sqrt(ε(1−ε)/n)
    u = sweighted_efficiency(np.ones(30), np.ones(100))
    assert u.err_up == pytest.approx(np.sqrt(0.3 * 0.7 / 100), rel=1e-12)


def test_sweighted_efficiency_above_one_warns() -> None:
    w_all = np.array([1.0, 1.0, 1.0, -0.8])
    with pytest.warns(UserWarning, match="outside"):
        r = sweighted_efficiency(w_all[:3], w_all)
    assert r.efficiency == pytest.approx(3 / 2.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sweighted_efficiency(np.ones(3), np.ones(4))
