"""sWeights against the ``sweights`` package (summation method) and toy truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sweights import SWeight

from calibflow.fit.sweights import fit_and_sweight, sweights_from_fit

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
    assert 0.9 * r.fit.yield_errors["signal"] < np.sqrt(r.covariance[0, 0]) <= 1.001 * r.fit.yield_errors["signal"]
    np.testing.assert_allclose((ws + r.weights["background"])[:-2], 1.0, rtol=1e-3)
    # sWeighted control variable reproduces the signal's N(1, 0.2)
    mean = np.sum(ws * t) / ws.sum()
    assert mean == pytest.approx(1.0, abs=0.02)
    assert np.sum(ws * (t - mean) ** 2) / ws.sum() == pytest.approx(0.04, rel=0.25)  # noisy: U(0, 3) background
