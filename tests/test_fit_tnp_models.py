"""Issue 18 (items 3, 5): the tag-and-probe shapes (CB + Gaussian, double Voigtian, RooCMSShape, threshold, ARGUS as
numba kernels), the extra fail Gaussian, per-bin ``fit.overrides`` and the goodness-of-fit statistics.

References are independent of the code under test: scipy densities and special functions, ``scipy.integrate.quad``
for normalisations, toys sampled with numpy/scipy and fitted back (pulls over a few seeds), ``scipy.stats`` for the
χ² and Kolmogorov-Smirnov p-values, and the content keys of the plan without overrides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import integrate, special, stats

from calibflow.config import FitConfig, FitOverride
from calibflow.fit import models as M
from calibflow.fit.diagnostics import FitQuality, chi2_pvalue, ks_test
from calibflow.fit.passfail import FAIL_GAUSS, PassFailModel, fit_pass_fail
from calibflow.fit.unbinned import fit_pass_fail_unbinned
from calibflow.hashing import key_dump

LO, HI = 2900.0, 3300.0
Z_LO, Z_HI = 60.0, 120.0


def _cb_gauss_ref(x: np.ndarray) -> np.ndarray:
    return 0.6 * stats.crystalball(1.2, 4.0, 3097.0, 12.0).pdf(x) + 0.4 * stats.norm(3097.0, 30.0).pdf(x)


def _double_voigt_ref(x: np.ndarray) -> np.ndarray:
    t = np.asarray(x, dtype=float) - 3097.0
    return 0.7 * special.voigt_profile(t, 8.0, 4.0) + 0.3 * special.voigt_profile(t, 25.0, 4.0)


# name -> (kind, parameters, independent density up to a constant)
CASES: dict[str, tuple[str, tuple[float, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "cb_gauss": ("signal", (3097.0, 12.0, 1.2, 4.0, 30.0, 0.6), _cb_gauss_ref),
    "double_voigt": ("signal", (3097.0, 8.0, 25.0, 4.0, 0.7), _double_voigt_ref),
    "cms_turn_on": ("background", (3000.0, 0.05, 0.02),
                    lambda x: special.erfc(0.05 * (3000.0 - x)) * np.exp(-0.02 * (x - 3000.0))),
    "cms_steep": ("background", (2700.0, 0.001, 0.5),  # (γ/2β)² = 62500: e^((γ/2β)²) overflows, the kernel does not
                  lambda x: special.erfcx(0.001 * (2700.0 - x)) * np.exp(-(0.001 * (2700.0 - x)) ** 2
                                                                       - 0.5 * (x - 2700.0) + 0.5 * 300.0)),
    "dstar_threshold_a0": ("background", (2850.0, 0.0, 0.01), lambda x: np.exp(-0.01 * (x - 2850.0))),
    "argus_p": ("background", (3350.0, 8.0, 1.5),
                lambda x: x * (1 - (x / 3350.0) ** 2) ** 1.5 * np.exp(-32.0 * (1 - (x / 3350.0) ** 2))),
}
SHAPE_OF = {"cms_turn_on": "cms", "cms_steep": "cms", "dstar_threshold_a0": "dstar_threshold", "argus_p": "argus"}


def _quad(f: Callable[[float], float], a: float, b: float) -> float:
    return integrate.quad(f, a, b, points=[3000.0, 3097.0], limit=400, epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_shapes_normalised_and_equal_to_references(case: str) -> None:
    kind, p, ref = CASES[case]
    shape = M.get_shape(kind, SHAPE_OF.get(case, case))
    pdf = lambda u: M.normalised_pdf(shape, np.array([u]), LO, HI, *p)[0]  # noqa: E731
    assert _quad(pdf, LO, HI) == pytest.approx(1.0, rel=1e-7)
    for a, b in [(LO, 3060.0), (3060.0, 3120.0), (3085.0, HI)]:
        frac = np.diff(M.normalised_cdf(shape, np.array([a, b]), LO, HI, *p))[0]
        assert frac == pytest.approx(_quad(pdf, a, b), rel=1e-7, abs=1e-12)
    x = np.linspace(LO, HI, 41)
    np.testing.assert_allclose(M.normalised_pdf(shape, x, LO, HI, *p), ref(x) / _quad(ref, LO, HI), rtol=1e-7,
                               atol=1e-300)


def test_kernel_special_functions_against_scipy() -> None:
    for x in [0.0, 1e-3, 0.5, 3.0, 10.0, 25.9, 26.1, 40.0, 1e3, 1e6]:
        assert M.erfcx(x) == pytest.approx(special.erfcx(x), rel=1e-12)
    for s in [0.01, 0.5, 1.0, 1.7, 3.5, 12.0]:
        for b in [1e-3, 0.3, 2.0]:
            for y in [1e-6, 0.1, 1.0, 5.0, 30.0, 400.0]:
                expected = math.exp(special.gammaln(s) - s * math.log(b)) * special.gammainc(s, b * y)
                assert M.gamma_integral(s, b, y) == pytest.approx(expected, rel=1e-11), (s, b, y)
        assert M.gamma_integral(s, 0.0, 2.0) == pytest.approx(2.0**s / s, rel=1e-14)


def test_new_kernel_shapes_are_fused_and_voigts_are_not() -> None:
    for bkg in ("cms", "argus", "dstar_threshold"):
        assert PassFailModel.create("cb_gauss", bkg, LO, HI).fused
    assert not PassFailModel.create("double_voigt", "cms", LO, HI).fused
    assert not PassFailModel.create("cb_gauss", "exponential", LO, HI, fail_gauss=True).fused


# --------------------------------------------------------------------------------------------------
# toys fitted back
# --------------------------------------------------------------------------------------------------
def _rejection(rng: np.random.Generator, density: Callable[[np.ndarray], np.ndarray], n: int, lo: float,
               hi: float) -> np.ndarray:
    grid = np.linspace(lo, hi, 2001)
    top = 1.2 * float(np.max(density(grid)))
    out: list[np.ndarray] = []
    while sum(a.size for a in out) < n:
        x = rng.uniform(lo, hi, 4 * n)
        out.append(x[rng.uniform(0.0, top, x.size) < density(x)])
    return np.concatenate(out)[:n]


def _in_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return x[(x >= lo) & (x <= hi)]


def _pulls(r: Any, truth: dict[str, float]) -> dict[str, float]:
    return {k: (r.values[k] - v) / r.errors[k] for k, v in truth.items()}


def _cb_gauss_toy(rng: np.random.Generator, n: int, mu: float = 3097.0) -> np.ndarray:
    k = rng.binomial(n, 0.6)
    cb = stats.crystalball(1.2, 4.0, mu, 12.0).rvs(size=3 * k, random_state=rng)
    x = np.concatenate([_in_range(cb, LO, HI)[:k], rng.normal(mu, 30.0, 3 * n)])
    return rng.permutation(_in_range(x, LO, HI)[:n])


def _exp_toy(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    u = rng.uniform(size=n)
    return LO + np.log1p(u * np.expm1(slope * (HI - LO))) / slope


@pytest.mark.parametrize("binned", [True, False], ids=["binned", "unbinned"])
def test_cb_gauss_toys_fit_back(binned: bool) -> None:
    truth = {"eff": 0.8, "mu": 3097.0, "sigma": 12.0, "sigma_gauss": 30.0, "frac": 0.6}
    pulls = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        sig = _cb_gauss_toy(rng, 20000)
        passed = rng.uniform(size=sig.size) < truth["eff"]
        mp = np.concatenate([sig[passed], _exp_toy(rng, 4000, -0.004)])
        mf = np.concatenate([sig[~passed], _exp_toy(rng, 8000, -0.002)])
        fixed = {"alpha": {"value": 1.2, "fixed": True}, "n": {"value": 4.0, "fixed": True}}
        if binned:
            edges = np.linspace(LO, HI, 161)
            r = fit_pass_fail(edges, np.histogram(mp, edges)[0].astype(float), np.histogram(mf, edges)[0].astype(float),
                              signal="cb_gauss", parameters=fixed, minos=False)
        else:
            r = fit_pass_fail_unbinned(mp, mf, LO, HI, signal="cb_gauss", parameters=fixed, minos=False)
        assert r.status == "ok" and r.signal_model == "cb_gauss", r.status
        truth["eff"] = float(passed.mean())
        pulls.append(_pulls(r, truth))
    assert all(abs(v) < 3.5 for p in pulls for v in p.values()), [{k: round(v, 2) for k, v in p.items()} for p in pulls]
    assert abs(np.mean([p["eff"] for p in pulls])) < 2.0


def test_double_voigt_over_cms_toys_fit_back() -> None:
    truth = {"eff": 0.85, "mu": 91.19, "sigma": 1.2, "sigma_wide": 3.5, "frac": 0.6}
    gamma = 1.25  # the Z's half width, fixed as users do

    def cms(x: np.ndarray) -> np.ndarray:
        return special.erfc(0.05 * (75.0 - x)) * np.exp(-0.05 * (x - 75.0))  # β within the default ≤ 4.8/w

    pulls = []
    for seed in range(3):
        rng = np.random.default_rng(200 + seed)
        n = 30000
        wide = rng.uniform(size=4 * n) > truth["frac"]
        x = truth["mu"] + np.where(wide, truth["sigma_wide"], truth["sigma"]) * rng.normal(size=4 * n)
        sig = _in_range(x + gamma * rng.standard_cauchy(4 * n), Z_LO, Z_HI)[:n]
        passed = rng.uniform(size=sig.size) < truth["eff"]
        mp = np.concatenate([sig[passed], _rejection(rng, cms, 3000, Z_LO, Z_HI)])
        mf = np.concatenate([sig[~passed], _rejection(rng, cms, 6000, Z_LO, Z_HI)])
        edges = np.linspace(Z_LO, Z_HI, 121)
        r = fit_pass_fail(edges, np.histogram(mp, edges)[0].astype(float), np.histogram(mf, edges)[0].astype(float),
                          signal="double_voigt", background="cms", parameters={"gamma": {"value": gamma, "fixed": True}},
                          minos=False)
        assert r.status == "ok" and r.signal_model == "double_voigt", r.status
        truth["eff"] = float(passed.mean())
        pulls.append(_pulls(r, truth))
        assert chi2_pvalue(r.chi2, r.ndof) == r.chi2_pvalue > 1e-4
    # σ, σ_wide and frac are strongly correlated and their HESSE errors not parabolic: over seeds 200-209 the σ_wide
    # pulls have a width of 1.7 (ε: mean 0.4, width 1.0; μ: width 1.3), two of ten beyond 3.3; hence 4 for them
    limit = {"eff": 3.5, "mu": 3.5, "sigma": 4.0, "sigma_wide": 4.0, "frac": 4.0}
    assert all(abs(v) < limit[k] for p in pulls for k, v in p.items()), pulls


@pytest.mark.parametrize("binned", [True, False], ids=["binned", "unbinned"])
def test_dstar_threshold_toys_fit_back(binned: bool) -> None:
    lo, hi, m0 = 139.57, 155.0, 139.57  # D* − D0 mass difference (MeV) from the threshold (the pion mass)
    truth = {"eff": 0.9, "mu": 145.45, "sigma": 0.5, "a_pass": 0.6, "b_pass": 0.15, "a_fail": 0.6, "b_fail": 0.15}
    pulls = []
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        sig = rng.normal(truth["mu"], truth["sigma"], 15000)
        passed = rng.uniform(size=sig.size) < truth["eff"]
        bkg = stats.gamma(1.6, loc=m0, scale=1 / 0.15).rvs(size=60000, random_state=rng)
        bkg = _in_range(bkg, lo, hi)
        mp = np.concatenate([sig[passed], bkg[:8000]])
        mf = np.concatenate([sig[~passed], bkg[8000:20000]])
        params = {"m0_pass": {"value": m0, "fixed": True}, "m0_fail": {"value": m0, "fixed": True}}
        if binned:
            edges = np.linspace(lo, hi, 155)
            r = fit_pass_fail(edges, np.histogram(mp, edges)[0].astype(float), np.histogram(mf, edges)[0].astype(float),
                              signal="gauss", background="dstar_threshold", parameters=params, minos=False)
        else:
            r = fit_pass_fail_unbinned(mp, mf, lo, hi, signal="gauss", background="dstar_threshold", parameters=params,
                                       minos=False)
        assert r.status == "ok", r.status
        truth["eff"] = float(passed.mean())
        pulls.append(_pulls(r, truth))
    assert all(abs(v) < 3.5 for p in pulls for v in p.values()), [{k: round(v, 2) for k, v in p.items()} for p in pulls]


@pytest.mark.parametrize("binned", [True, False], ids=["binned", "unbinned"])
def test_fail_gauss_recovers_the_efficiency(binned: bool) -> None:
    """A fail signal with an extra wide Gaussian (20 % of it): ε from the fit with ``fail_gauss`` is unbiased."""
    pulls = []
    for seed in range(3):
        rng = np.random.default_rng(400 + seed)
        n_pass, n_core_fail, n_extra = 16000, 3200, 800
        mp = np.concatenate([rng.normal(3097.0, 12.0, n_pass), _exp_toy(rng, 4000, -0.004)])
        mf = np.concatenate([rng.normal(3097.0, 12.0, n_core_fail), rng.normal(3090.0, 45.0, 3 * n_extra)])
        mf = np.concatenate([_in_range(mf[:n_core_fail], LO, HI), _in_range(mf[n_core_fail:], LO, HI)[:n_extra],
                             _exp_toy(rng, 8000, -0.002)])
        truth = {"eff": n_pass / (n_pass + n_core_fail + n_extra), "frac_gauss_fail": n_extra / (n_core_fail + n_extra),
                 "sigma_gauss_fail": 45.0, "sigma": 12.0}
        if binned:
            edges = np.linspace(LO, HI, 161)
            r = fit_pass_fail(edges, np.histogram(mp, edges)[0].astype(float), np.histogram(mf, edges)[0].astype(float),
                              signal="gauss", fail_gauss=True, minos=False)
        else:
            r = fit_pass_fail_unbinned(mp, mf, LO, HI, signal="gauss", fail_gauss=True, minos=False)
        assert r.status == "ok" and set(FAIL_GAUSS) <= set(r.values), r.status
        pulls.append(_pulls(r, truth))
    assert all(abs(v) < 3.5 for p in pulls for v in p.values()), [{k: round(v, 2) for k, v in p.items()} for p in pulls]


def test_fail_gauss_components_add_up_and_only_touch_the_fail_signal() -> None:
    plain = PassFailModel.create("gauss", "exponential", LO, HI)
    extra = PassFailModel.create("gauss", "exponential", LO, HI, fail_gauss=True)
    assert extra.names == [*plain.names, *FAIL_GAUSS]
    x0 = np.array([1000.0, 0.8, 200.0, 300.0, 3097.0, 12.0, -0.003, -0.002])
    x1 = np.concatenate([x0, [3080.0, 40.0, 0.25]])
    edges = np.linspace(LO, HI, 81)
    c0, c1 = plain.components(edges, x0), extra.components(edges, x1)
    for k in (0, 1, 3):
        np.testing.assert_allclose(c1[k], c0[k])
    g = np.diff(stats.norm(3080.0, 40.0).cdf(edges)) / np.diff(stats.norm(3080.0, 40.0).cdf([LO, HI]))[0]
    np.testing.assert_allclose(c1[2], 0.75 * c0[2] + 0.25 * 200.0 * g, rtol=1e-8)
    assert c1[2].sum() == pytest.approx(200.0)


# --------------------------------------------------------------------------------------------------
# goodness of fit
# --------------------------------------------------------------------------------------------------
def test_chi2_pvalue_against_scipy() -> None:
    for chi2, ndof in [(12.0, 10), (30.0, 20), (250.0, 150), (0.0, 3)]:
        assert chi2_pvalue(chi2, ndof) == pytest.approx(stats.chi2.sf(chi2, ndof), rel=1e-12)
    assert chi2_pvalue(31.41, 20) == pytest.approx(0.04999, abs=1e-4)  # a table value: χ²_0.05(20) = 31.41
    assert math.isnan(chi2_pvalue(5.0, 0)) and math.isnan(chi2_pvalue(math.inf, 5))


def test_ks_against_scipy() -> None:
    rng = np.random.default_rng(5)
    x = np.sort(rng.normal(0.1, 1.0, 400))
    ref = stats.kstest(x, "norm", method="exact")
    d, p = ks_test(stats.norm.cdf(x))
    assert d == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-9)
    # weights: unit weights change nothing; weight 2 on every point is the sample twice over (n_eff = n)
    assert ks_test(stats.norm.cdf(x), np.ones(x.size)) == pytest.approx((d, p))
    assert ks_test(stats.norm.cdf(x), np.full(x.size, 2.0)) == pytest.approx((d, p))
    assert all(math.isnan(v) for v in ks_test(np.array([])))


def test_fit_results_carry_gof_and_flag_below_min_pvalue() -> None:
    rng = np.random.default_rng(6)
    sig = _cb_gauss_toy(rng, 40000)  # a wide Gaussian under the peak: a single Gaussian fits it badly
    mp, mf = np.concatenate([sig[:30000], _exp_toy(rng, 5000, -0.003)]), np.concatenate([sig[30000:],
                                                                                          _exp_toy(rng, 9000, -0.002)])
    edges = np.linspace(LO, HI, 161)
    hp, hf = np.histogram(mp, edges)[0].astype(float), np.histogram(mf, edges)[0].astype(float)
    strict = FitQuality(min_pvalue=1e-3, retry=False, max_chi2_ndof=100.0)
    good = fit_pass_fail(edges, hp, hf, signal="cb_gauss", quality=strict)
    bad = fit_pass_fail(edges, hp, hf, signal="gauss", quality=strict)
    assert good.chi2_pvalue == pytest.approx(stats.chi2.sf(good.chi2, good.ndof)) and good.chi2_pvalue > 1e-3
    assert good.status == "ok" and good.ks == {}
    assert bad.chi2_pvalue < 1e-3 and "low_gof_pvalue" in bad.status
    assert "low_gof_pvalue" not in fit_pass_fail(edges, hp, hf, signal="gauss",
                                                 quality=FitQuality(retry=False, max_chi2_ndof=100.0)).status
    ub_good = fit_pass_fail_unbinned(mp, mf, LO, HI, signal="cb_gauss", quality=strict, minos=False)
    ub_bad = fit_pass_fail_unbinned(mp, mf, LO, HI, signal="gauss", quality=strict, minos=False)
    assert set(ub_good.ks) == {"d_pass", "pvalue_pass", "d_fail", "pvalue_fail"}
    assert min(ub_good.ks["pvalue_pass"], ub_good.ks["pvalue_fail"]) > 1e-3 and ub_good.status == "ok"
    assert ub_bad.ks["pvalue_pass"] < 1e-3 and "low_gof_pvalue:ks_p" in ub_bad.status
    # the KS statistic of the pass category is that of scipy against the fitted mixture's cdf
    model = PassFailModel.create("cb_gauss", "exponential", LO, HI)
    x = np.array([ub_good.values[n] for n in model.names])
    s_p, b_p, _, _ = model.components(np.array([LO, HI]), x)

    def cdf(m: np.ndarray) -> np.ndarray:
        ps, _, pb, _ = model.split(x)
        return (s_p[0] * M.normalised_cdf(model.signal, m, LO, HI, *ps)
                + b_p[0] * M.normalised_cdf(model.background, m, LO, HI, *pb)) / (s_p[0] + b_p[0])

    assert ub_good.ks["d_pass"] == pytest.approx(stats.kstest(mp, cdf).statistic, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# per-bin overrides
# --------------------------------------------------------------------------------------------------
BOUNDS = (("p", 20.0, 30.0), ("eta", 2.0, 2.25))


def test_override_selectors() -> None:
    o = FitOverride(bins=[3, {"p": (20.0, 50.0)}], parameters={"sigma": {"fixed": True}})
    assert o.selects(3, (("p", 2.0, 3.0),)) and o.selects(7, BOUNDS)
    assert not o.selects(7, (("p", 10.0, 30.0), ("eta", 2.0, 2.25)))  # only partly inside
    with pytest.raises(ValueError, match="'pt' is not a binning variable"):
        FitOverride(bins=[{"pt": (1.0, 2.0)}], parameters={"sigma": {}}).selects(0, BOUNDS)
    for bad in ([-1], [{}], [{"p": (3.0, 2.0)}], [True]):
        with pytest.raises(ValueError):
            FitOverride(bins=bad, parameters={"sigma": {"fixed": True}})


def test_for_bin_merges_parameters_key_by_key() -> None:
    fit = FitConfig(parameters={"sigma": {"value": 13.0, "limits": (4.0, 40.0)}, "n": {"value": 5.0, "fixed": True}},
                    overrides=[{"bins": [{"p": (20.0, 200.0)}], "parameters": {"sigma": {"limits": (8.0, 30.0)}}},
                               {"bins": [7], "parameters": {"n": {"fixed": False, "limits": (2.0, 50.0)}}}])
    hard = fit.for_bin(7, BOUNDS)
    assert hard.overrides == []
    assert hard.parameters["sigma"].model_dump() == {"value": 13.0, "limits": (8.0, 30.0), "fixed": False}
    assert hard.parameters["n"].model_dump() == {"value": 5.0, "limits": (2.0, 50.0), "fixed": False}
    plain = FitConfig(parameters=fit.parameters)
    assert key_dump(fit.for_bin(0, (("p", 2.0, 3.0), ("eta", 2.0, 2.25)))) == key_dump(plain)


def test_new_fit_options_at_their_defaults_leave_the_fit_dump_unchanged() -> None:
    dump = key_dump(FitConfig())
    assert not {"fail_gauss", "overrides", "gof"} & set(dump)
    assert {"fail_gauss", "gof"} <= set(key_dump(FitConfig(fail_gauss=True, gof={"min_pvalue": 1e-3})))


def test_overrides_change_only_the_selected_bins_fit_keys(write_config: Callable[..., Path], tmp_path: Path) -> None:
    from calibflow.plan import Plan
    from tests.conftest import demo_dict

    d = demo_dict()
    base = Plan.create(write_config(d, "base.yaml"), tmp_path / "r")
    d["fit"]["overrides"] = [{"bins": [1, {"p": [50, 200]}], "parameters": {"sigma": {"limits": [6, 25]}}}]
    tuned = Plan.create(write_config(d, "tuned.yaml"), tmp_path / "r")
    scheme = base.scheme()
    assert scheme is not None
    keys = [b.key for b in scheme.bins]
    selected = {b.index for b in scheme.bins if b.index == 1 or b.bounds[0][1] >= 50}
    assert len(selected) == 13
    for sample, fitted in (("data", True), ("mc", False)):  # the demo counts its simulation: no fit, no change
        assert (d["samples"][sample].get("method", "fit") == "fit") is fitted
        before, after = base.fit_keys(sample, keys), tuned.fit_keys(sample, keys)
        changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
        assert changed == (selected if fitted else set()), sample
    assert tuned.fit_config(keys[1]).parameters["sigma"].limits == (6.0, 25.0)
    assert tuned.fit_config(keys[0]) == base.config.fit
    tuned.check_models()
    d["fit"]["overrides"][0]["parameters"] = {"sigmaa": {"limits": [6, 25]}}
    with pytest.raises(Exception, match="sigmaa"):
        Plan.create(write_config(d, "typo.yaml"), tmp_path / "r").check_models()


def test_gof_table_columns_from_new_and_older_results() -> None:
    from calibflow.tables.rows import GOF_COLUMNS, gof_columns

    new = {"chi2": 180.0, "ndof": 150, "chi2_pvalue": 0.0473, "ks": {"d_pass": 0.01, "pvalue_pass": 0.2,
                                                                       "d_fail": 0.02, "pvalue_fail": 0.03}}
    assert gof_columns(new) == {"chi2": 180.0, "ndof": 150, "chi2_pvalue": 0.0473, "ks_pvalue": 0.03}
    old = gof_columns({"chi2": 180.0, "ndof": 150})  # a result written before the p-values existed
    assert old["chi2_pvalue"] == pytest.approx(stats.chi2.sf(180.0, 150), rel=1e-12) and math.isnan(old["ks_pvalue"])
    counted = gof_columns({"efficiency": 0.9})
    assert tuple(counted) == GOF_COLUMNS and all(math.isnan(counted[k]) for k in ("chi2", "chi2_pvalue", "ks_pvalue"))


def test_measure_bin_passes_the_new_options_and_records_gof() -> None:
    from calibflow.fit.histograms import BinHistograms
    from calibflow.fit.measure import measure_bin

    rng = np.random.default_rng(8)
    sig = _cb_gauss_toy(rng, 30000)
    mp, mf = np.concatenate([sig[:24000], _exp_toy(rng, 5000, -0.003)]), np.concatenate([sig[24000:],
                                                                                          _exp_toy(rng, 9000, -0.002)])
    edges = np.linspace(LO, HI, 161)
    h = np.stack([np.histogram(mp, edges)[0], np.histogram(mf, edges)[0]]).astype(float)
    hist = BinHistograms(edges, h, h.copy(), False)
    strict = {"gof": {"min_pvalue": 1e-3}, "max_chi2_ndof": 100.0}
    bad = measure_bin("fit", FitConfig(signal="gauss", **strict), hist)
    good = measure_bin("fit", FitConfig(signal="cb_gauss", fail_gauss=True, **strict), hist)
    assert "low_gof_pvalue" in bad["status"] and bad["chi2_pvalue"] < 1e-3
    assert set(FAIL_GAUSS) <= set(good["values"]) and good["chi2_pvalue"] > 1e-3, good["status"]
    assert good["chi2_pvalue"] == pytest.approx(stats.chi2.sf(good["chi2"], good["ndof"]))


def _background_free_pass(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned Z-like toy: 4000 passing and 1000 failing Gaussian signal candidates (ε = 0.8 expected), no
    background in the pass category, 1500 RooCMSShape background candidates (turn-on at 70 GeV) in the fail category."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(60.0, 120.0, 61)
    sp, sf = rng.normal(91.0, 2.5, rng.poisson(4000)), rng.normal(91.0, 2.5, rng.poisson(1000))
    bf = _rejection(rng, lambda x: special.erfc(0.05 * (70.0 - x)) * np.exp(-0.04 * (x - 70.0)), 1500, 60.0, 120.0)
    return edges, np.histogram(sp, edges)[0].astype(float), np.histogram(np.concatenate([sf, bf]), edges)[0].astype(float)


def test_cms_cannot_take_the_peak_and_empty_categories_get_their_shape_fixed() -> None:
    """RooCMSShape over a category without background: with the old limits (turn-on as sharp as w/500) the background
    took the peak (ε = 0.00 ± 0.00 in 8 of 20 such toys); with egm_tnp_analysis's β ≤ 0.08 GeV⁻¹ it cannot, and the
    retry that fixes the unconstrained pass background shape (and its yield, where it sits at 0) gives valid minima
    with accurate covariances whose ε errors are the data's
    (binomial ⊕ the fail background: ≈ 0.0063 here), not HESSE's of a flat direction."""
    assert M.get_shape("background", "cms").start(60.0, 120.0, 91.0, 2.5)["beta"][1][1] == pytest.approx(0.08)
    effs, frozen = [], 0
    for seed in range(12):
        edges, hp, hf = _background_free_pass(seed)
        r = fit_pass_fail(edges, hp, hf, signal="gauss", background="cms", minos=False)
        label = r.attempts[r.accepted]["label"]
        assert r.attempts[r.accepted]["valid"] and "covariance_not_accurate" not in r.status, (seed, r.status)
        assert 0.0055 < r.err_down < 0.008, (seed, r.err_down)
        if label.startswith("background_shape_fixed"):
            frozen += 1
            assert label.startswith("background_shape_fixed:alpha_pass+beta_pass+gamma_pass")  # (+n_bkg_pass at 0)
            assert all(r.errors[f"{p}_pass"] == 0.0 for p in ("alpha", "beta", "gamma"))
            assert ("n_bkg_pass" in label) == (r.values["n_bkg_pass"] == 0.0)
            assert r.values["n_bkg_pass"] < 0.1 * hp.sum()
        effs.append((r.efficiency - 0.8) / r.err_down)
    assert frozen >= 6
    assert abs(np.mean(effs)) < 3.0 / math.sqrt(len(effs)) and np.std(effs) < 1.6, effs


def test_no_shape_is_fixed_where_the_background_is_measured() -> None:
    """:func:`frozen_background` fixes nothing in a category whose background is ≥ 10 % of its candidates."""
    from calibflow.fit.passfail import frozen_background, run_attempts  # noqa: F401  (the retry's rule)

    edges, hp, hf = _background_free_pass(3)
    r = fit_pass_fail(edges, hp, hf, signal="gauss", background="cms", minos=False)
    assert not any(a["label"].startswith("background_shape_fixed") and "fail" in a["label"] for a in r.attempts)
    assert r.values["n_bkg_fail"] > 0.1 * hf.sum()


def test_the_shape_fixing_retry_starts_from_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry that fixes a background shape starts every free parameter at the best minimum so far, not at the
    user's ``value`` (which only the first attempts start from); the user's fixed values stay fixed."""
    import calibflow.fit.passfail as pf

    starts: list[dict] = []
    make = pf.make_minuit

    def recording(cost, model, start, fixed, strategy, *a, **k):  # type: ignore[no-untyped-def]
        starts.append({n: v for n, (v, _) in start.items()})
        return make(cost, model, start, fixed, strategy, *a, **k)

    monkeypatch.setattr(pf, "make_minuit", recording)
    edges, hp, hf = _background_free_pass(0)
    user = {"sigma": {"value": 5.5}, "mu": {"value": 91.0, "fixed": True}}
    r = fit_pass_fail(edges, hp, hf, signal="gauss", background="cms", minos=False, parameters=user)
    labels = [a["label"] for a in r.attempts]
    k = next(i for i, lab in enumerate(labels) if lab.startswith("background_shape_fixed"))
    assert starts[0]["sigma"] == 5.5 and starts[k]["mu"] == 91.0
    assert starts[k]["sigma"] != 5.5 and starts[k]["sigma"] == pytest.approx(2.5, rel=0.1)  # the minimum's σ

