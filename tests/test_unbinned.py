"""Unbinned pass/fail fits: cost against iminuit's ExtendedUnbinnedNLL, weights, toy pulls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from iminuit.cost import ExtendedUnbinnedNLL
from scipy import stats

from calibflow.fit.passfail import PassFailModel
from calibflow.fit.unbinned import _prepare, fit_extended, fit_pass_fail_unbinned, unbinned_cost
from tests.hessian_reference import check_errors, fd_covariance, tolerance

LO, HI = 2900.0, 3300.0
SIGNAL = stats.crystalball(1.5, 4.0, 3097.0, 12.0)


def _truncated(dist: stats.rv_continuous, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of ``dist`` restricted to [LO, HI] by inverse transform."""
    a, b = dist.cdf([LO, HI])
    return dist.ppf(rng.uniform(a, b, n))


def candidates(rng: np.random.Generator, n_sig: int = 3000, eff: float = 0.8, n_bkg_pass: int = 1500,
               n_bkg_fail: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Pass and fail masses: Crystal Ball signal with efficiency ``eff``, exponential backgrounds."""
    sig = _truncated(SIGNAL, rng.poisson(n_sig), rng)
    passed = rng.random(sig.size) < eff
    bp = _truncated(stats.expon(loc=LO, scale=250.0), rng.poisson(n_bkg_pass), rng)
    bf = _truncated(stats.expon(loc=LO, scale=600.0), rng.poisson(n_bkg_fail), rng)
    return np.concatenate([sig[passed], bp]), np.concatenate([sig[~passed], bf])


def test_cost_equals_iminuit_extended_unbinned_nll() -> None:
    rng = np.random.default_rng(1)
    mp, mf = candidates(rng)
    model = PassFailModel.create("johnsonsu", "exponential", LO, HI)
    x = np.array([4000.0, 0.7, 1200.0, 2500.0, 3095.0, 20.0, -0.2, 1.8, -0.004, -0.0015])

    def scaled(cat: str):
        n_s = x[0] * (x[1] if cat == "pass" else 1 - x[1])
        n_b, k = (x[2], x[8]) if cat == "pass" else (x[3], x[9])
        jsu = stats.johnsonsu(x[6], x[7], x[4], x[5])
        norm_s = np.diff(jsu.cdf([LO, HI]))[0]
        norm_b = (np.exp(k * (HI - LO)) - 1) / k

        def f(m: np.ndarray) -> tuple[float, np.ndarray]:
            lam = n_s * jsu.pdf(m) / norm_s + n_b * np.exp(k * (m - LO)) / norm_b
            return n_s + n_b, np.log(lam)

        return f

    reference = ExtendedUnbinnedNLL(mp, scaled("pass"), log=True) + ExtendedUnbinnedNLL(mf, scaled("fail"), log=True)
    ours = unbinned_cost(model, mp, np.ones_like(mp), mf, np.ones_like(mf))
    assert not model.fused
    assert ours(x) == pytest.approx(reference(), rel=1e-11)


def test_fused_kernel_equals_generic_cost() -> None:
    rng = np.random.default_rng(2)
    mp, mf = candidates(rng)
    wp, wf = rng.uniform(0.5, 2, mp.size), rng.uniform(0.5, 2, mf.size)
    model = PassFailModel.create("crystalball", "chebyshev2", LO, HI, fail_width_shift=True)
    generic = dataclasses.replace(model, background=dataclasses.replace(model.background, code=-1))
    x = np.array([3000.0, 0.8, 1500.0, 3000.0, 3097.0, 12.0, 1.5, 4.0, -0.3, 0.1, -0.2, 0.05, 3.0])
    assert unbinned_cost(model, mp, wp, mf, wf)(x) == pytest.approx(
        unbinned_cost(generic, mp, wp, mf, wf)(x), rel=1e-11)


@pytest.mark.parametrize("signal", ["gauss", "crystalball", "double_crystalball", "double_gauss"])
def test_vectorised_kernel_equals_generic_cost_on_unsorted_candidates(signal: str) -> None:
    """Sorted-region kernels (both Crystal Ball tails, core, exponential) against the per-candidate logpdf path."""
    rng = np.random.default_rng(6)
    mp, mf = candidates(rng)
    rng.shuffle(mp)
    wp, wf = rng.uniform(0.5, 2, mp.size), np.ones(mf.size)
    model = PassFailModel.create(signal, "exponential", LO, HI)
    generic = dataclasses.replace(model, background=dataclasses.replace(model.background, code=-1))
    sig = {"gauss": [3097.0, 12.0], "crystalball": [3097.0, 12.0, 1.5, 4.0], "double_gauss": [3097.0, 10.0, 25.0, 0.7],
           "double_crystalball": [3097.0, 12.0, 1.2, 3.0, 1.8, 6.0]}[signal]
    x = np.array([3000.0, 0.8, 1500.0, 3000.0, *sig, -0.004, -0.0015])
    assert model.fused and not generic.fused
    assert unbinned_cost(model, mp, wp, mf, wf)(x) == pytest.approx(unbinned_cost(generic, mp, wp, mf, wf)(x), rel=1e-12)


def test_fit_recovers_truth_and_agrees_with_binned_model() -> None:
    rng = np.random.default_rng(3)
    mp, mf = candidates(rng, n_sig=20000, n_bkg_pass=5000, n_bkg_fail=10000)
    r = fit_pass_fail_unbinned(mp, mf, LO, HI)
    assert r.status == "ok" and r.signal_model == "crystalball"
    assert r.efficiency == pytest.approx(0.8, abs=3 * r.err_up)
    assert r.values["sigma"] == pytest.approx(12.0, abs=3 * r.errors["sigma"])
    assert r.n_sig == pytest.approx(20000, abs=3 * r.n_sig_err)
    assert r.chi2 / r.ndof < 1.5


def test_weighted_fit_uses_sumw2_errors() -> None:
    rng = np.random.default_rng(4)
    mp, mf = candidates(rng)
    plain = fit_pass_fail_unbinned(mp, mf, LO, HI)
    ones = fit_pass_fail_unbinned(mp, mf, LO, HI, np.ones_like(mp), np.ones_like(mf))
    doubled = fit_pass_fail_unbinned(mp, mf, LO, HI, np.full(mp.size, 2.0), np.full(mf.size, 2.0))
    assert ones.efficiency == pytest.approx(plain.efficiency, abs=1e-3 * plain.err_up)
    for name, err in plain.errors.items():  # unit weights: the HESSE errors
        assert ones.errors[name] == pytest.approx(err, rel=0.05), name  # HESSE with vs without limits
    # constant weights 2: same information on ε, yields and their errors doubled
    assert doubled.efficiency == pytest.approx(plain.efficiency, abs=0.01 * plain.err_up)
    assert doubled.err_up == pytest.approx(plain.errors["eff"], rel=0.05)
    assert doubled.n_sig == pytest.approx(2 * plain.n_sig, rel=1e-3)
    assert doubled.n_sig_err == pytest.approx(2 * plain.n_sig_err, rel=0.1)


def test_extended_single_sample_fit() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([_truncated(SIGNAL, 4000, rng), _truncated(stats.expon(loc=LO, scale=300.0), 6000, rng),
                        [LO - 10.0, HI + 5.0]])
    fit = fit_extended(x, LO, HI)
    assert fit.status == "ok"
    assert sum(fit.yields.values()) == pytest.approx(10000.0, rel=1e-4)  # extended ML: Σ yields = N
    assert fit.yields["signal"] == pytest.approx(4000.0, abs=3 * fit.yield_errors["signal"])
    grid = np.linspace(LO, HI, 20001)
    for f in fit.pdfs().values():
        assert np.trapezoid(f(grid), grid) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(("signal", "background"), [("crystalball", "exponential"), ("gauss", "chebyshev2"),
                                                    ("double_gauss", "exponential")])
def test_errors_agree_with_finite_difference_hessian(signal: str, background: str) -> None:
    """HESSE errors (shifted cost, Migrad seeded by the binned prefit) and MINOS on ε against independent
    references (:mod:`tests.hessian_reference`) at the reported minimum, toys of 2k–10k signal."""
    rng = np.random.default_rng(31)
    checked = 0
    for _ in range(3):
        mp, mf = candidates(rng, n_sig=int(rng.integers(2000, 10000)))
        r = fit_pass_fail_unbinned(mp, mf, LO, HI, signal=signal, background=background)
        model = PassFailModel.create(r.signal_model, background, LO, HI)
        cost = unbinned_cost(model, *_prepare(mp, None, LO, HI), *_prepare(mf, None, LO, HI))
        checked += check_errors(cost, model.names, r.values, r.errors, model.default_fixed, (r.err_down, r.err_up))
    assert checked >= 2


def test_large_sample_errors_agree_with_finite_difference_hessian() -> None:
    """100k candidates (cost ≈ −1e6 at the minimum, where HESSE of the unshifted cost is several % off)."""
    rng = np.random.default_rng(8)
    x = np.concatenate([_truncated(SIGNAL, 50_000, rng), _truncated(stats.expon(loc=LO, scale=400.0), 50_000, rng)])
    fit = fit_extended(x, LO, HI)
    model = fit.model
    fixed = {"eff", "n_bkg_fail", *(n for n in model.names if n.endswith("_fail"))}
    cost = unbinned_cost(model, *_prepare(x, None, LO, HI), np.empty(0), np.empty(0))
    assert cost(np.array([fit.values[n] for n in model.names])) < -1e6
    assert check_errors(cost, model.names, fit.values, fit.errors, fixed)


def test_weighted_errors_agree_with_finite_difference_sandwich() -> None:
    """SumW2 errors √diag(V·H₂·V) against V and H₂ from the finite-difference reference."""
    rng = np.random.default_rng(12)
    mp, mf = candidates(rng, n_sig=6000)
    wp, wf = rng.uniform(0.5, 2, mp.size), rng.uniform(0.5, 2, mf.size)
    r = fit_pass_fail_unbinned(mp, mf, LO, HI, wp, wf)
    model = PassFailModel.create(r.signal_model, "exponential", LO, HI)
    (p, w_p), (f, w_f) = _prepare(mp, wp, LO, HI), _prepare(mf, wf, LO, HI)
    x = np.array([r.values[n] for n in model.names])
    free = range(len(model.names))
    scale = np.array([r.errors[n] for n in model.names])
    v = fd_covariance(unbinned_cost(model, p, w_p, f, w_f), x, free, scale, 0.2)
    h2 = np.linalg.inv(fd_covariance(unbinned_cost(model, p, w_p**2, f, w_f**2), x, free, scale, 0.2))
    ref = np.sqrt(np.diag(v @ h2 @ v))
    for name, e in zip(model.names, ref, strict=True):
        assert abs(r.errors[name] / e - 1) < tolerance(name), (name, r.errors[name], e)


@pytest.mark.slow
def test_unbinned_pulls_of_efficiency() -> None:
    """40 toys: pull of ε (MINOS errors) with mean ≈ 0 (±0.35, the ±0.25 of 100 toys scaled) and width ≈ 1."""
    rng = np.random.default_rng(99)
    pulls = []
    for _ in range(40):
        mp, mf = candidates(rng, n_sig=800, n_bkg_pass=300, n_bkg_fail=600)
        r = fit_pass_fail_unbinned(mp, mf, LO, HI)
        d = r.efficiency - 0.8
        pulls.append(d / (r.err_down if d > 0 else r.err_up))
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.35
    assert 0.75 < pulls.std(ddof=1) < 1.25


def test_yield_method_binned_and_unbinned_agree() -> None:
    """``method: yield`` fits every candidate of the bin, passing or not: the unbinned fit of the candidates and
    the binned fit of their histogram give the same signal yield (well within its error), which is near the
    true signal count; no efficiency; a bin is low_statistics by its total candidates."""
    from calibflow.config import FitConfig
    from calibflow.fit.histograms import BinCandidates, BinHistograms
    from calibflow.fit.measure import measure_bin

    rng = np.random.default_rng(21)
    sig = _truncated(stats.norm(3097.0, 12.0), 2000, rng)
    bkg = _truncated(stats.expon(loc=LO, scale=300.0), 4000, rng)
    m = np.concatenate([sig, bkg])
    passed = rng.random(m.size) < 0.3
    edges = np.linspace(LO, HI, 101)
    counts = np.stack([np.histogram(m[passed], edges)[0], np.histogram(m[~passed], edges)[0]]).astype(float)
    fit = FitConfig(signal="gauss", background="exponential", min_candidates=5000)
    binned = measure_bin("yield", fit, hist=BinHistograms(edges, counts, counts.copy(), False))
    unbinned = measure_bin("yield", fit.model_copy(update={"binned": False}),
                           cands=BinCandidates(m, passed, np.ones_like(m), False, LO, HI))
    for r in (binned, unbinned):
        assert r["method"] == "yield" and r["status"] == "ok"  # 6000 candidates in total: not low statistics
        assert np.isnan(r["efficiency"]) and np.isnan(r["n_pass"]) and r["errors"]["eff"] == 0.0
        assert abs(r["n_sig"] - 2000) < 3 * r["n_sig_err"]
    assert unbinned["n_sig"] == pytest.approx(binned["n_sig"], abs=0.2 * binned["n_sig_err"])
    assert unbinned["n_sig_err"] == pytest.approx(binned["n_sig_err"], rel=0.05)
    few = measure_bin("yield", fit.model_copy(update={"min_candidates": 7000}),
                      hist=BinHistograms(edges, counts, counts.copy(), False))
    assert few["status"] == "low_statistics"
