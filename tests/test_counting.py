"""Binomial intervals against scipy's binomtest/beta quantiles; sWeighted efficiencies; counted bins with
signed weights against PIDCalib2's formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from calibflow.config import FitConfig
from calibflow.fit.counting import (
    ONE_SIGMA,
    binomial_interval,
    clopper_pearson,
    count_efficiency,
    jeffreys,
    sweighted_efficiency,
    wilson,
)
from calibflow.fit.histograms import BinHistograms
from calibflow.fit.measure import measure_bin

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


# --- measured bins with signed weights (issue 16, items 7 and 8) --------------------------------------------
def _hist(pass_w: list[float], fail_w: list[float], weighted: bool = True) -> BinHistograms:
    """One bin's histograms of the given candidate weights (one mass bin), with its negative-weight counts."""
    pw, fw = np.asarray(pass_w, dtype=float), np.asarray(fail_w, dtype=float)
    sumw = np.array([[pw.sum()], [fw.sum()]])
    sumw2 = np.array([[np.sum(pw**2)], [np.sum(fw**2)]])
    return BinHistograms(np.array([0.0, 1.0]), sumw, sumw2, weighted,
                         np.array([np.sum(pw < 0), np.sum(fw < 0)], dtype=float))


def _pidcalib2(pw: list[float], fw: list[float]) -> tuple[float, float]:
    """PIDCalib2's ε and error: passing/total, √|((1−2ε)Σw²_pass + ε²Σw²_total)/(Σw_total)²|
    (``pidcalib2.utils.binomial_uncertainty``)."""
    p, t = np.asarray(pw), np.concatenate([pw, fw])
    eff = p.sum() / t.sum()
    return eff, float(np.sqrt(abs(((1 - 2 * eff) * np.sum(p**2) + eff**2 * np.sum(t**2)) / t.sum() ** 2)))


def test_sweighted_keeps_nonpositive_weight_sums_flagged() -> None:
    """Σw ≤ 0 with candidates present: Σw_pass/Σw kept as PIDCalib2 keeps it, flagged, the weight sums as the
    yields; only a bin without candidates is ``empty_bin``, and Σw = 0 exactly has no ratio."""
    pw, fw = [0.9, -0.4, 0.8], [-0.9, -0.7, -0.6, 0.2]  # Σw_pass = 1.3, Σw = -0.7
    r = measure_bin("sweighted", FitConfig(), hist=_hist(pw, fw))
    eff, err = _pidcalib2(pw, fw)
    assert r["status"] == "nonpositive_weight_sum,efficiency_outside_0_1"
    assert r["efficiency"] == pytest.approx(eff, rel=1e-12) and r["err_up"] == r["err_down"] == pytest.approx(err)
    assert r["n_pass"] == pytest.approx(1.3) and r["n_fail"] == pytest.approx(-2.0)
    assert r["n_sig"] == pytest.approx(-0.7) and r["n_sig_err"] == pytest.approx(np.sqrt(np.sum(np.square(pw + fw))))
    # both sums negative: ε in [0, 1], still flagged for its sum
    both = measure_bin("sweighted", FitConfig(), hist=_hist([-0.5, 0.1], [-0.3]))
    assert both["status"] == "nonpositive_weight_sum" and both["efficiency"] == pytest.approx(0.4 / 0.7)
    zero = measure_bin("sweighted", FitConfig(), hist=_hist([0.5], [-0.5]))
    assert zero["status"] == "nonpositive_weight_sum" and np.isnan(zero["efficiency"]) and zero["n_pass"] == 0.5
    empty = measure_bin("sweighted", FitConfig(), hist=_hist([], []))
    assert empty["status"] == "empty_bin" and empty["n_pass"] == 0.0 and np.isnan(empty["efficiency"])


def test_count_refuses_binomial_intervals_with_negative_weights() -> None:
    """``count`` meeting a negative weight: ε = Σw_pass/Σw with PIDCalib2's error (as ``sweighted``), flagged
    ``negative_weights`` (the issue's case: ε = 1.088 with a Clopper-Pearson err_up of 0)."""
    pw, fw = [1.0] * 10 + [0.88], [0.5, -1.5]  # Σw_pass = 10.88, Σw = 9.88: ε = 1.101
    counted = measure_bin("count", FitConfig(), hist=_hist(pw, fw))
    sweighted = measure_bin("sweighted", FitConfig(), hist=_hist(pw, fw))
    eff, err = _pidcalib2(pw, fw)
    assert counted["status"] == "negative_weights,efficiency_outside_0_1"
    assert counted["efficiency"] == pytest.approx(eff) and counted["err_up"] == pytest.approx(err) and err > 0
    for key in ("efficiency", "err_down", "err_up", "n_pass", "n_fail", "n_sig", "n_sig_err"):
        assert counted[key] == sweighted[key], key
    # a negative weight inside [0, 1] is flagged too: the interval of effective counts would be meaningless
    inside = measure_bin("count", FitConfig(), hist=_hist([1.0, 1.0, -0.2], [1.0, 1.0]))
    assert inside["status"] == "negative_weights" and inside["efficiency"] == pytest.approx(1.8 / 3.8)
    # positive weights keep the Clopper-Pearson interval of the effective counts, and the counts as yields
    plain = measure_bin("count", FitConfig(), hist=_hist([2.0, 1.0], [1.0, 1.0, 1.0]))
    ref = count_efficiency(3.0, 6.0, 8.0)
    assert plain["status"] == "ok" and (plain["efficiency"], plain["err_up"]) == (ref.efficiency, ref.err_up)
    assert (plain["n_pass"], plain["n_pass_err"], plain["n_fail"]) == (3.0, np.sqrt(5.0), 3.0)


def test_negative_weights_are_counted_per_bin_and_category(tmp_path) -> None:
    """Weighted histograms store the candidates with a negative weight in the mass range, per bin and
    category; unweighted files hold none and read back as zeros."""
    import h5py

    from calibflow.binning.scheme import BinningScheme
    from calibflow.config import MassConfig
    from calibflow.fit.histograms import fill_histograms, read_bins
    from calibflow.prep.spec import MASS, PASS, WEIGHT

    x = np.array([0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5])
    mass = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 99.0, 10.0])  # the sixth is outside the mass range
    passed = np.array([True, True, False, True, False, False, False])
    weight = np.array([-1.0, 0.5, -0.2, 1.0, -0.3, -5.0, -0.1])
    scheme = BinningScheme.product([("x", np.array([0.0, 1.0, 2.0]))])
    paths = {}
    for name, cols in (("w", {WEIGHT: weight}), ("u", {})):
        paths[name] = str(tmp_path / f"{name}.h5")
        with h5py.File(paths[name], "w") as h5:
            for k, v in {"x": x, MASS: mass, PASS: passed, **cols}.items():
                h5[f"columns/{k}"] = v
    mass_cfg = MassConfig(variable="m", range=(0.0, 20.0), bins=4)
    fill_histograms([paths["w"]], scheme, mass_cfg, str(tmp_path / "hw.h5"))
    fill_histograms([paths["u"]], scheme, mass_cfg, str(tmp_path / "hu.h5"))
    bins = read_bins(str(tmp_path / "hw.h5"), 0, 2)
    assert bins[0].negative.tolist() == [1.0, 1.0] and bins[1].negative.tolist() == [0.0, 2.0]
    assert all(b.negative.tolist() == [0.0, 0.0] for b in read_bins(str(tmp_path / "hu.h5"), 0, 2))
    assert measure_bin("count", FitConfig(), hist=bins[1])["status"].startswith("negative_weights")


def test_summary_line_says_what_to_do_about_negative_weights() -> None:
    from calibflow.tables.fitstatus import count_statuses

    line = count_statuses("nominal", "mc", ["ok", "negative_weights", "negative_weights,efficiency_outside_0_1"]).line()
    assert line.startswith("1 ok, 2 flagged (2 negative_weights: set method: sweighted, 1 efficiency_outside_0_1)")
