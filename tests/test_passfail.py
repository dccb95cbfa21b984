"""Binned simultaneous pass/fail fits: fused kernel, recovery of toy truth, retries and pulls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from iminuit import Minuit
from scipy import stats

from calibflow.fit.diagnostics import FitQuality, poisson_pulls
from calibflow.fit.passfail import (
    PassFailModel,
    apply_overrides,
    binned_cost,
    fit_pass_fail,
    fit_yield,
    hesse_done_by_migrad,
    make_minuit,
    seed_covariance,
    shifted,
    starting_values,
)
from tests.hessian_reference import check_errors

LO, HI = 2900.0, 3300.0
EDGES = np.linspace(LO, HI, 101)
TRUTH = {"eff": 0.8, "n_sig": 6000.0, "n_bkg_pass": 2000.0, "n_bkg_fail": 5000.0, "mu": 3097.0, "sigma": 12.0}


def _fractions(dist: stats.rv_continuous) -> np.ndarray:
    c = dist.cdf(EDGES)
    return np.diff(c) / (c[-1] - c[0])


def expected_counts(eff: float = TRUTH["eff"], n_sig: float = TRUTH["n_sig"], sigma_fail: float = 12.0,
                    n_bkg_pass: float = TRUTH["n_bkg_pass"], n_bkg_fail: float = TRUTH["n_bkg_fail"]):
    """Truth ν per bin from scipy: Crystal Ball signal (α=1.5, n=4), exponential backgrounds."""
    sig_p = _fractions(stats.crystalball(1.5, 4.0, 3097.0, 12.0))
    sig_f = _fractions(stats.crystalball(1.5, 4.0, 3097.0, sigma_fail))
    bkg_p = _fractions(stats.expon(loc=LO, scale=250.0))
    bkg_f = _fractions(stats.expon(loc=LO, scale=600.0))
    return n_sig * eff * sig_p + n_bkg_pass * bkg_p, n_sig * (1 - eff) * sig_f + n_bkg_fail * bkg_f


def test_fused_kernel_equals_generic_cost() -> None:
    rng = np.random.default_rng(3)
    nu_p, nu_f = expected_counts()
    hp, hf = rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float)
    sp, sf = rng.uniform(0.5, 1.5, hp.size), rng.uniform(0.5, 1.5, hf.size)
    for sig, bkg, shift in [("crystalball", "exponential", False), ("double_crystalball", "chebyshev2", True),
                            ("double_gauss", "bernstein3", True), ("gauss", "linear", False)]:
        model = PassFailModel.create(sig, bkg, LO, HI, fail_width_shift=shift)
        generic = dataclasses.replace(model, signal=dataclasses.replace(model.signal, code=-1))
        assert model.fused and not generic.fused
        start, _ = apply_overrides(model, starting_values(model, EDGES, hp, hf), None)
        x = np.array([start[n][0] for n in model.names])
        if shift:
            x[-1] = 2.0
        fused, slow = binned_cost(model, EDGES, hp, hf, sp, sf)(x), binned_cost(generic, EDGES, hp, hf, sp, sf)(x)
        assert fused == pytest.approx(slow, rel=1e-10), (sig, bkg)


@pytest.mark.parametrize("slope", [0.004, -0.004, 0.03])
def test_fused_exponential_is_normalised_for_rising_and_falling_slopes(slope: float) -> None:
    """The fused kernel's exponential fractions sum to 1 for either sign of the slope (a rising background
    once summed to e^(-k(W-Δ)) and inflated its yield: seen in the fit gallery, issue 15)."""
    rng = np.random.default_rng(4)
    nu_p, nu_f = expected_counts()
    hp, hf = rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float)
    ones = np.ones_like(hp)
    model = PassFailModel.create("crystalball", "exponential", LO, HI)
    generic = dataclasses.replace(model, background=dataclasses.replace(model.background, code=-1))
    start, _ = apply_overrides(model, starting_values(model, EDGES, hp, hf), None)
    x = np.array([start[n][0] for n in model.names])
    x[model.names.index("slope_pass")] = x[model.names.index("slope_fail")] = slope
    fused, slow = binned_cost(model, EDGES, hp, hf, ones, ones)(x), binned_cost(generic, EDGES, hp, hf, ones, ones)(x)
    assert fused == pytest.approx(slow, rel=1e-10)


def test_fit_recovers_asimov_truth_and_reports_attempts() -> None:
    nu_p, nu_f = expected_counts()
    r = fit_pass_fail(EDGES, nu_p, nu_f)
    assert r.status == "ok" and r.n_attempts == 1 and r.accepted == 0 and r.signal_model == "crystalball"
    assert r.efficiency == pytest.approx(TRUTH["eff"], abs=1e-4)
    assert r.n_sig == pytest.approx(TRUTH["n_sig"], rel=1e-3)
    assert r.values["sigma"] == pytest.approx(12.0, rel=1e-3)
    assert r.chi2 == pytest.approx(0.0, abs=1e-3) and r.ndof == 2 * 100 - 10
    # binomial-like error: sqrt(eff(1-eff)/N) inflated by the background
    assert 0.8 * np.sqrt(0.8 * 0.2 / 6000) < r.err_up < 3 * np.sqrt(0.8 * 0.2 / 6000)
    assert r.attempts[0]["status"] == "ok" and r.to_dict()["n_attempts"] == 1


def test_weighted_histograms_give_the_unweighted_result() -> None:
    rng = np.random.default_rng(5)
    nu_p, nu_f = expected_counts()
    hp, hf = rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float)
    plain = fit_pass_fail(EDGES, hp, hf)
    w = fit_pass_fail(EDGES, 2 * hp, 2 * hf, 4 * hp, 4 * hf)
    assert w.efficiency == pytest.approx(plain.efficiency, abs=0.01 * plain.err_up)  # Migrad tolerance
    assert w.err_up == pytest.approx(plain.err_up, rel=1e-2)
    assert w.n_sig == pytest.approx(2 * plain.n_sig, rel=1e-3)


def test_fail_width_shift_recovers_wider_fail_peak() -> None:
    nu_p, nu_f = expected_counts(sigma_fail=16.0, n_sig=20000.0)
    r = fit_pass_fail(EDGES, nu_p, nu_f, fail_width_shift=True)
    assert r.status == "ok"
    assert r.values["dsigma_fail"] == pytest.approx(4.0, abs=0.05)
    assert r.efficiency == pytest.approx(TRUTH["eff"], abs=1e-3)
    # without the shift the same data bias ε or fit badly
    r0 = fit_pass_fail(EDGES, nu_p, nu_f)
    assert abs(r0.efficiency - TRUTH["eff"]) > 5 * abs(r.efficiency - TRUTH["eff"])


@pytest.mark.parametrize(("signal", "background"), [("gauss", "chebyshev2"), ("double_gauss", "bernstein2"),
                                                    ("johnsonsu", "exponential"), ("voigt", "cms")])
def test_other_models_measure_the_efficiency(signal: str, background: str) -> None:
    rng = np.random.default_rng(11)
    nu_p, nu_f = expected_counts(n_sig=20000.0)
    r = fit_pass_fail(EDGES, rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float), signal=signal,
                      background=background, minos=False)
    assert r.efficiency == pytest.approx(TRUTH["eff"], abs=4 * r.err_up + 0.01), r.status


def test_pathological_bin_is_retried_then_flagged() -> None:
    rng = np.random.default_rng(7)
    nu_p, nu_f = expected_counts(n_sig=15.0, n_bkg_pass=150000.0, n_bkg_fail=200000.0)
    r = fit_pass_fail(EDGES, rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float))
    assert r.n_attempts == 3
    assert [a["label"] for a in r.attempts] == ["initial", "strategy2_sideband_starts", "simpler_signal:gauss"]
    assert r.status != "ok"
    assert all(a["status"] != "ok" for a in r.attempts)
    assert r.status.startswith(r.attempts[r.accepted]["status"])  # plus MINOS problems, if any


def test_no_retry_when_disabled() -> None:
    rng = np.random.default_rng(7)
    nu_p, nu_f = expected_counts(n_sig=15.0, n_bkg_pass=150000.0, n_bkg_fail=200000.0)
    r = fit_pass_fail(EDGES, rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float),
                      quality=FitQuality(retry=False), minos=False)
    assert r.n_attempts == 1 and r.status != "ok"


def test_parameter_overrides_and_errors() -> None:
    nu_p, nu_f = expected_counts()
    r = fit_pass_fail(EDGES, nu_p, nu_f, parameters={"mu": {"value": 3097.0, "fixed": True}}, minos=False)
    # a fixed parameter has error 0, not Minuit's step size (issue 16); the free ones keep theirs
    assert r.values["mu"] == 3097.0 and r.errors["mu"] == 0.0 and r.errors["sigma"] > 0
    with pytest.raises(ValueError, match=r"fit.parameters.bogus: not a parameter.*n_sig"):
        fit_pass_fail(EDGES, nu_p, nu_f, parameters={"bogus": {"value": 1.0}})


def test_default_fixed_parameter_floats_with_limits() -> None:
    model = PassFailModel.create("gauss", "argus", LO, HI)
    start, fixed = apply_overrides(model, starting_values(model, EDGES, *expected_counts()), None)
    assert {"m0_pass", "m0_fail", "p_pass", "p_fail"} <= fixed
    start, fixed = apply_overrides(model, start, {"m0_pass": {"limits": (3300.0, 3500.0)}})
    assert "m0_pass" not in fixed and start["m0_pass"][1] == (3300.0, 3500.0)


def test_poisson_pulls_reference() -> None:
    n, nu = np.array([0.0, 4.0, 100.0]), np.array([1.0, 4.0, 81.0])
    expected = [-np.sqrt(2.0), 0.0, np.sqrt(2 * (81 - 100 + 100 * np.log(100 / 81)))]
    np.testing.assert_allclose(poisson_pulls(n, nu), expected)


def test_binned_pulls_of_efficiency() -> None:
    """100 toys with known truth: the pull of ε (MINOS errors) has mean ≈ 0 and width ≈ 1."""
    rng = np.random.default_rng(2024)
    nu_p, nu_f = expected_counts(n_sig=3000.0, n_bkg_pass=1500.0, n_bkg_fail=3000.0)
    pulls = []
    for _ in range(100):
        r = fit_pass_fail(EDGES, rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float))
        d = r.efficiency - TRUTH["eff"]
        pulls.append(d / (r.err_down if d > 0 else r.err_up))
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.25
    assert 0.8 < pulls.std(ddof=1) < 1.2


@pytest.mark.parametrize(("signal", "background"), [("crystalball", "exponential"), ("gauss", "chebyshev2"),
                                                    ("johnsonsu", "exponential"), ("double_gauss", "bernstein2")])
def test_errors_agree_with_finite_difference_hessian(signal: str, background: str) -> None:
    """HESSE errors (Migrad's closing HESSE, no second one) and MINOS on ε against independent references
    (:mod:`tests.hessian_reference`) at the reported minimum, over toys of 2k–30k signal."""
    rng = np.random.default_rng(21)
    checked = 0
    for _ in range(4):
        nu_p, nu_f = expected_counts(n_sig=float(rng.integers(2000, 30000)))
        hp, hf = rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float)
        r = fit_pass_fail(EDGES, hp, hf, signal=signal, background=background)
        model = PassFailModel.create(r.signal_model, background, LO, HI)
        cost = binned_cost(model, EDGES, hp, hf, np.ones_like(hp), np.ones_like(hf))
        checked += check_errors(cost, model.names, r.values, r.errors, model.default_fixed, (r.err_down, r.err_up))
    assert checked >= 3


def _binned_minuit(strategy: int) -> Minuit:
    nu_p, nu_f = expected_counts()
    model = PassFailModel.create("crystalball", "exponential", LO, HI)
    start, fixed = apply_overrides(model, starting_values(model, EDGES, nu_p, nu_f), None)
    ones = np.ones_like(nu_p)
    return make_minuit(binned_cost(model, EDGES, nu_p, nu_f, ones, ones), model, start, fixed, strategy)


def test_closing_hesse_of_migrad_is_detected() -> None:
    """Strategy 1 ends with HESSE here (its covariance is reported without a second HESSE); strategy 0 does not."""
    m = _binned_minuit(1)
    m.migrad()
    assert hesse_done_by_migrad(m) and m.accurate
    m0 = _binned_minuit(0)
    m0.migrad()
    assert not hesse_done_by_migrad(m0)


def test_seeded_covariance_saves_migrad_calls() -> None:
    """Migrad started with a converged fit's covariance (as the unbinned fit from its binned prefit) needs
    fewer calls than from a diagonal guess, and reaches the same minimum."""
    pre = _binned_minuit(0)
    pre.migrad()
    fresh, seeded = _binned_minuit(1), _binned_minuit(1)
    fresh.values = pre.values
    assert seed_covariance(seeded, pre)
    for m in (fresh, seeded):  # start away from the minimum
        m.values["n_sig"] += 3 * pre.errors["n_sig"]
        m.values["sigma"] -= 2 * pre.errors["sigma"]
    fresh.migrad()
    seeded.migrad()
    assert seeded.valid and seeded.fval == pytest.approx(fresh.fval, abs=1e-3)
    assert seeded.nfcn < fresh.nfcn


def test_shifted_cost_keeps_minimum_and_curvature() -> None:
    cost = binned_cost(PassFailModel.create("gauss", "exponential", LO, HI), EDGES, *expected_counts(),
                       np.ones(100), np.ones(100))
    x0 = np.array([6000.0, 0.8, 2000.0, 5000.0, 3097.0, 12.0, -0.004, -0.0017])
    c = shifted(cost, x0, level=10.0)
    assert c(x0) == 10.0 and c(1.01 * x0) - 10.0 == pytest.approx(cost(1.01 * x0) - cost(x0), abs=1e-9)


def test_fixed_efficiency_with_minos_has_zero_error() -> None:
    """ε fixed with MINOS on: MINOS runs on free parameters only (it used to raise ``KeyError: 'eff'``), and ε's
    error is 0 (it used to be its step size, 0.01)."""
    nu_p, nu_f = expected_counts()
    r = fit_pass_fail(EDGES, nu_p, nu_f, parameters={"eff": {"value": 0.8, "fixed": True}}, minos=True)
    assert r.status == "ok" and r.efficiency == 0.8
    assert r.err_down == r.err_up == r.errors["eff"] == 0.0
    assert r.n_sig == pytest.approx(TRUTH["n_sig"], rel=1e-3) and r.n_sig_err > 0
    # with ε fixed, N_pass = 0.8 N exactly: its error is 0.8 σ(N)
    assert r.n_pass_err == pytest.approx(0.8 * r.n_sig_err, rel=1e-9)
    assert r.n_fail_err == pytest.approx(0.2 * r.n_sig_err, rel=1e-9)


def test_pass_and_fail_yields_cover_in_toys() -> None:
    """N_pass = N·ε and N_fail = N·(1−ε) with errors from the (N, ε) covariance: over 80 toys of known truth
    their pulls have mean ≈ 0, width ≈ 1, and the errors equal the toys' spread."""
    rng = np.random.default_rng(16)
    nu_p, nu_f = expected_counts(n_sig=3000.0, n_bkg_pass=1500.0, n_bkg_fail=3000.0)
    truth = {"n_pass": 3000.0 * 0.8, "n_fail": 3000.0 * 0.2}
    values: dict[str, list[float]] = {k: [] for k in truth}
    errors: dict[str, list[float]] = {k: [] for k in truth}
    for _ in range(80):
        r = fit_pass_fail(EDGES, rng.poisson(nu_p).astype(float), rng.poisson(nu_f).astype(float), minos=False)
        for k in truth:
            values[k].append(getattr(r, k))
            errors[k].append(getattr(r, f"{k}_err"))
    for k, t in truth.items():
        v, e = np.array(values[k]), np.array(errors[k])
        pulls = (v - t) / e
        assert abs(pulls.mean()) < 0.35, (k, pulls.mean())
        assert 0.8 < pulls.std(ddof=1) < 1.2, (k, pulls.std(ddof=1))
        assert np.median(e) == pytest.approx(v.std(ddof=1), rel=0.2), k


def test_fit_yield_recovers_truth() -> None:
    """One mass spectrum (a yield): the Asimov histogram gives N_sig exactly with χ² ≈ 0 on this histogram's
    bins alone; ε is fixed (error 0), the fail category is empty; toys' pulls of N_sig cover."""
    nu, _ = expected_counts()  # the pass category: 4800 signal over 2000 background, one exponential
    r = fit_yield(EDGES, nu)
    assert r.status == "ok"
    assert r.n_sig == pytest.approx(TRUTH["n_sig"] * TRUTH["eff"], rel=1e-3)
    assert r.values["n_bkg_pass"] == pytest.approx(TRUTH["n_bkg_pass"], rel=1e-3) and r.values["n_bkg_fail"] == 0
    assert r.chi2 == pytest.approx(0.0, abs=1e-3) and r.ndof == 100 - 7  # n_sig, n_bkg, mu, sigma, α, n, slope
    assert r.errors["eff"] == 0.0 and r.errors["slope_fail"] == 0.0 and r.err_up == 0.0
    rng = np.random.default_rng(4)
    gauss = 1500.0 * _fractions(stats.norm(3097.0, 12.0)) + 3000.0 * _fractions(stats.expon(loc=LO, scale=250.0))
    pulls = []
    for _ in range(60):
        t = fit_yield(EDGES, rng.poisson(gauss).astype(float), signal="gauss")
        pulls.append((t.n_sig - 1500.0) / t.n_sig_err)
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.4 and 0.75 < pulls.std(ddof=1) < 1.25, (pulls.mean(), pulls.std(ddof=1))


def test_fit_yield_keeps_efficiency_fixed_whatever_the_user_sets() -> None:
    """The parameters of a shared fit section (e.g. ε for the pass/fail samples) cannot free ε or the fail
    background of a yield fit; their limits and starts of other parameters still apply."""
    nu, _ = expected_counts()
    r = fit_yield(EDGES, nu, parameters={"eff": {"value": 0.5}, "n_bkg_fail": {"limits": (0.0, 10.0)},
                                         "mu": {"value": 3097.0, "fixed": True}})
    assert r.values["eff"] == 1.0 and r.values["n_bkg_fail"] == 0.0 and r.values["mu"] == 3097.0
    assert r.n_sig == pytest.approx(TRUTH["n_sig"] * TRUTH["eff"], rel=1e-3)
