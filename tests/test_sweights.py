"""sWeights against the ``sweights`` package (summation method and covariance correction), toy truth and
a toy pull study; the sPlot fit cache shared by working points."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sweights import SWeight, cov_correct

import calibflow.fit.sweights as sw
from calibflow.config import FitConfig
from calibflow.fit.histograms import BinCandidates
from calibflow.fit.measure import measure_bin
from calibflow.fit.sweights import (
    SPlotFit,
    fit_and_sweight,
    sandwich_efficiency,
    splot_fit,
    sweight,
    sweights_from_fit,
)

LO, HI = 5000.0, 5600.0
SIG = stats.norm(5280.0, 20.0)
BKG = stats.expon(loc=LO, scale=400.0)


def _truncated_pdf(dist: stats.rv_continuous):
    norm = np.diff(dist.cdf([LO, HI]))[0]
    return lambda x: dist.pdf(x) / norm


def _sample(rng: np.random.Generator, n_sig: int, n_bkg: int) -> tuple[np.ndarray, np.ndarray]:
    """Masses and a control variable: N(1, 0.2) for signal, U(0, 3) for background (independent of mass)."""
    def draw(dist: stats.rv_continuous, n: int) -> np.ndarray:
        a, b = dist.cdf([LO, HI])
        return dist.ppf(rng.uniform(a, b, n))

    m = np.concatenate([draw(SIG, n_sig), draw(BKG, n_bkg)])
    t = np.concatenate([rng.normal(1.0, 0.2, n_sig), rng.uniform(0.0, 3.0, n_bkg)])
    return m, t


def test_equal_to_sweights_package_summation() -> None:
    rng = np.random.default_rng(1)
    m, _ = _sample(rng, 3000, 7000)
    pdfs = {"signal": _truncated_pdf(SIG), "background": _truncated_pdf(BKG)}
    yields = {"signal": 3050.0, "background": 6950.0}
    ours = sweights_from_fit(m, yields, pdfs)
    ref = SWeight(m, pdfs=[pdfs["signal"], pdfs["background"]], yields=[yields["signal"], yields["background"]],
                  discvarranges=((LO, HI),), method="summation", compnames=("signal", "background"), checks=False)
    np.testing.assert_allclose(ours["signal"], ref.get_weight(0, m), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours["background"], ref.get_weight(1, m), rtol=1e-6, atol=1e-9)


def test_fit_and_sweight_recovers_control_distribution() -> None:
    rng = np.random.default_rng(2)
    m, t = _sample(rng, 4000, 8000)
    m = np.append(m, [LO - 1.0, HI + 1.0])  # outside the range: weight 0
    t = np.append(t, [1.0, 1.0])
    r = fit_and_sweight(m, "gauss", "exponential", LO, HI)
    assert r.status == "ok"
    ws = r.weights["signal"]
    assert ws[-2:].tolist() == [0.0, 0.0]
    # Σ w_s = fitted N_s at the extended-ML minimum; α estimates the yield covariance
    assert ws.sum() == pytest.approx(r.fit.yields["signal"], rel=1e-4)
    # (α: shapes fixed, so at most the fit's error, which includes the shape parameters)
    assert 0.9 * r.fit.errors["n_sig"] < np.sqrt(r.covariance[0, 0]) <= 1.001 * r.fit.errors["n_sig"]
    np.testing.assert_allclose((ws + r.weights["background"])[:-2], 1.0, rtol=1e-3)
    # sWeighted control variable reproduces the signal's N(1, 0.2)
    mean = np.sum(ws * t) / ws.sum()
    assert mean == pytest.approx(1.0, abs=0.02)
    assert np.sum(ws * (t - mean) ** 2) / ws.sum() == pytest.approx(0.04, rel=0.25)  # noisy: U(0, 3) background


# --- variance of the sWeighted efficiency ---------------------------------------------------------
KNOWN_SHAPES = {"mu": {"value": 5280.0, "fixed": True}, "sigma": {"value": 20.0, "fixed": True},
                "slope_pass": {"value": -1.0 / 400.0, "fixed": True}}


def _with_pass(rng: np.random.Generator, n_sig: int, n_bkg: int, eff_sig: float, eff_bkg: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Masses and pass decisions: signal passes with ``eff_sig``, background with ``eff_bkg``."""
    m, _ = _sample(rng, n_sig, n_bkg)
    return m, np.concatenate([rng.uniform(size=n_sig) < eff_sig, rng.uniform(size=n_bkg) < eff_bkg])


def _central_derivative(pdf, var: int, point: list, data: np.ndarray) -> np.ndarray:
    """∂pdf/∂point[var] by a central difference (stands in for ``sweights.covariance._partial_derivative``,
    whose scipy.differentiate call rejects per-candidate arrays with scipy ≥ 1.15)."""
    h = 1e-6 * max(abs(point[var]), 1e-3)
    up, down = list(point), list(point)
    up[var] += h
    down[var] -= h
    return (pdf(data, *up) - pdf(data, *down)) / (2.0 * h)


def _cov_correct_error(fit: SPlotFit, m: np.ndarray, passed: np.ndarray) -> float:
    """σ(ε) from ``sweights.cov_correct``: the weighted fit of a Bernoulli pdf h(pass; ε) (MLE Σw_pass/Σw)
    corrected for the sWeights' estimated W matrix (Langenbruch, EPJC 82 (2022) 393, Eq. 51)."""
    r = sweight(fit, m)
    w = r.weights["signal"]
    eff = float(w[passed].sum() / w.sum())
    pdfs = fit.pdfs()
    yields = [fit.yields["signal"], fit.yields["background"]]
    wm = np.linalg.inv(r.covariance)
    w_vals = [wm[0, 0], wm[1, 0], wm[1, 1]]  # the package's order: (0, 0), (1, 0), (1, 1)

    def w_signal(wss: float, wsb: float, wbb: float, gs: np.ndarray, gb: np.ndarray) -> np.ndarray:
        return (wbb * gs - wsb * gb) / (wss * wbb - wsb**2) / (yields[0] * gs + yields[1] * gb)

    def dw(i: int):
        def f(*args: float) -> np.ndarray:
            return _central_derivative(lambda _, *a: w_signal(*a), i, list(args), np.empty(0))
        return f

    def bernoulli(t: np.ndarray, e: float) -> np.ndarray:
        return np.where(t > 0.5, e, 1.0 - e)

    cov = cov_correct(bernoulli, [pdfs["signal"], pdfs["background"]], passed.astype(float), m, w, yields, [eff],
                      np.array([[eff * (1 - eff) / w.sum()]]), [dw(0), dw(1), dw(2)], w_vals)
    return float(np.sqrt(cov[0, 0]))


@pytest.mark.parametrize(("n_sig", "n_bkg", "eff_sig", "eff_bkg"), [(1000, 4000, 0.1, 0.9), (2000, 2000, 0.9, 0.1)])
def test_sandwich_equals_cov_correct_for_known_shapes(monkeypatch: pytest.MonkeyPatch, n_sig: int, n_bkg: int,
                                                      eff_sig: float, eff_bkg: float) -> None:
    """With fixed shapes the stacked (yields, W, ε) sandwich is the sweights package's corrected covariance
    (two estimators of one asymptotic variance: a few per mille apart); ignoring the fitted yields is not."""
    import sweights.covariance

    monkeypatch.setattr(sweights.covariance, "_partial_derivative", _central_derivative)
    m, passed = _with_pass(np.random.default_rng(3), n_sig, n_bkg, eff_sig, eff_bkg)
    fit = splot_fit(m, "gauss", "exponential", LO, HI, parameters=KNOWN_SHAPES)
    assert fit.status == "ok" and fit.free == ["n_sig", "n_bkg_pass"]
    ours = sandwich_efficiency(fit, m, passed)
    reference = _cov_correct_error(fit, m, passed)
    assert np.sqrt(ours.variance) == pytest.approx(reference, rel=0.03)
    no_yields = SPlotFit(**{**fit.to_dict(), "free": [], "sandwich_free": None, "hessian": None})
    yields_fixed = sandwich_efficiency(no_yields, m, passed)
    assert abs(np.sqrt(yields_fixed.variance) / reference - 1) > 0.05


def test_sweighted_efficiency_pulls_cover_with_floating_shapes() -> None:
    """Toy pull study: 150 toys of a bin whose background passes far more often than the signal (a misID
    measurement), mass shapes floating. Sandwich pulls against the generated ε: mean within ±0.2 (2.4σ of
    the mean of 150 pulls) and width within [0.85, 1.15] (2.6σ)."""
    rng = np.random.default_rng(11)
    eff_sig = 0.15
    pulls = []
    for _ in range(150):
        m, passed = _with_pass(rng, int(rng.poisson(500)), int(rng.poisson(1500)), eff_sig, 0.6)
        fit = splot_fit(m, "gauss", "exponential", LO, HI)
        assert fit.status == "ok"
        s = sandwich_efficiency(fit, m, passed)
        pulls.append((s.efficiency - eff_sig) / np.sqrt(s.variance))
    p = np.array(pulls)
    assert abs(p.mean()) < 0.2, p.mean()
    assert 0.85 <= p.std(ddof=1) <= 1.15, p.std(ddof=1)


def test_second_working_point_reuses_the_splot_fit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second pass column reads the cached mass fit (no new fit) and equals a fresh computation."""
    m, _ = _sample(np.random.default_rng(5), 1500, 3000)
    score = np.random.default_rng(6).uniform(size=m.size)
    fit_cfg = FitConfig(signal="gauss", background="exponential")
    calls = []
    real = sw.fit_extended
    monkeypatch.setattr(sw, "fit_extended", lambda *a, **k: calls.append(1) or real(*a, **k))

    def cands(cut: float) -> BinCandidates:
        return BinCandidates(m, score > cut, np.ones_like(m), False, LO, HI)

    cache = str(tmp_path / "splot.json")
    first = measure_bin("sweights", fit_cfg, cands=cands(0.3), splot_cache=cache)
    assert len(calls) == 1 and not first["splot_reused"]
    second = measure_bin("sweights", fit_cfg, cands=cands(0.7), splot_cache=cache)
    assert len(calls) == 1 and second["splot_reused"]
    fresh = measure_bin("sweights", fit_cfg, cands=cands(0.7))
    assert len(calls) == 2
    for key in ("efficiency", "err_down", "err_up", "n_pass", "n_fail"):
        assert second[key] == pytest.approx(fresh[key], rel=1e-12), key
    assert second["efficiency"] != pytest.approx(first["efficiency"], rel=0.05)


def test_sweights_yields_against_the_sweights_package() -> None:
    """Method ``sweights`` reports the fitted signal yield with its error, and the passing and failing signal
    yields Σw_s with the sPlot errors √Σw_s², both equal to the ``sweights`` package's weights of the fit."""
    rng = np.random.default_rng(8)
    m, t = _sample(rng, 2500, 5000)
    passed = t < 1.1
    fit_cfg = FitConfig(signal="gauss", background="exponential")
    r = measure_bin("sweights", fit_cfg, cands=BinCandidates(m, passed, np.ones_like(m), False, LO, HI))
    sp = splot_fit(m, "gauss", "exponential", LO, HI)
    pdfs = sp.pdfs()
    ref = SWeight(m, pdfs=[pdfs["signal"], pdfs["background"]], yields=[sp.yields["signal"], sp.yields["background"]],
                  discvarranges=((LO, HI),), method="summation", compnames=("signal", "background"), checks=False)
    w = ref.get_weight(0, m)
    assert r["n_sig"] == pytest.approx(sp.values["n_sig"], rel=1e-9) and r["n_sig_err"] == sp.errors["n_sig"] > 0
    assert r["n_pass"] == pytest.approx(w[passed].sum(), rel=1e-5)
    assert r["n_fail"] == pytest.approx(w[~passed].sum(), rel=1e-5)
    assert r["n_pass_err"] == pytest.approx(np.sqrt(np.sum(w[passed] ** 2)), rel=1e-5)
    assert r["n_fail_err"] == pytest.approx(np.sqrt(np.sum(w[~passed] ** 2)), rel=1e-5)
