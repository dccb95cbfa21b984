"""A fitted pass/fail bin as a ratio of signal weights (calibflow.fit.linearise): the weights equal the ``sweights``
package's for the binned model, sum to the fitted yields of each category (so their ratio is the fitted efficiency),
and their bootstrap over events gives the fitted efficiencies' statistical error and the correlation of two bins
that share events (toy truth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sweights import SWeight

from calibflow.config import FitConfig
from calibflow.fit.histograms import BinHistograms
from calibflow.fit.linearise import category_signal_weights, fitted_signal_weights
from calibflow.fit.measure import measure_bin
from calibflow.tables.bootstrap import replica_efficiencies

LO, HI, NBINS = 2.9, 3.3, 80
EDGES = np.linspace(LO, HI, NBINS + 1)
SIG, BKG = stats.norm(3.097, 0.015), stats.expon(loc=LO, scale=0.5)
FIT = FitConfig(signal="gauss", background="exponential")


def _masses(rng: np.random.Generator, n_sig: int, n_bkg: int) -> tuple[np.ndarray, np.ndarray]:
    """Masses of signal and background candidates on [LO, HI) and whether each is signal."""
    s = SIG.ppf(rng.uniform(SIG.cdf(LO), SIG.cdf(HI), n_sig))
    b = BKG.ppf(rng.uniform(BKG.cdf(LO), BKG.cdf(HI), n_bkg))
    return np.concatenate([s, b]), np.r_[np.ones(n_sig, bool), np.zeros(n_bkg, bool)]


def _binned(dist: stats.rv_continuous) -> np.ndarray:
    p = np.diff(dist.cdf(EDGES))
    return p / p.sum()


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_category_weights_equal_the_sweights_package_for_the_binned_model() -> None:
    rng = np.random.default_rng(1)
    m, _ = _masses(rng, 3000, 5000)
    s, b = 3000.0 * _binned(SIG), 5000.0 * _binned(BKG)
    ours = category_signal_weights(m, EDGES, s, b)
    width = np.diff(EDGES)

    def pdf(counts: np.ndarray):  # the binned density, as linearise builds it
        return lambda x: (counts / counts.sum() / width)[np.clip(np.searchsorted(EDGES, x, "right") - 1, 0, NBINS - 1)]

    ref = SWeight(m, pdfs=[pdf(s), pdf(b)], yields=[s.sum(), b.sum()], discvarranges=((LO, HI),),
                  method="summation", compnames=("signal", "background"), checks=False)
    # the package normalises the step-function pdfs by numerical integration (scipy quad): agreement to 1e-4
    np.testing.assert_allclose(ours, ref.get_weight(0, m), rtol=1e-4, atol=1e-6)
    assert category_signal_weights(m, EDGES, s, np.zeros_like(b)).tolist() == [1.0] * m.size  # no background
    assert not category_signal_weights(m, EDGES, np.zeros_like(s), b).any()  # no signal
    assert category_signal_weights(np.array([LO - 1, HI + 1]), EDGES, s, b).tolist() == [0.0, 0.0]  # outside


def _bin(rng: np.random.Generator, eff: float, n_sig: int = 4000, n_bkg: int = 3000) -> tuple[np.ndarray, ...]:
    m, is_sig = _masses(rng, n_sig, n_bkg)
    passed = np.where(is_sig, rng.uniform(size=m.size) < eff, rng.uniform(size=m.size) < 0.5)
    return m, passed


def _fit(m: np.ndarray, passed: np.ndarray) -> dict:
    h = np.stack([np.histogram(m[passed], EDGES)[0], np.histogram(m[~passed], EDGES)[0]]).astype(float)
    return measure_bin("fit", FIT, hist=BinHistograms(EDGES, h, h.copy(), False))


def test_the_weights_of_a_fitted_bin_give_its_efficiency() -> None:
    """At the likelihood maximum each category's weights sum to its fitted signal yield: Σ_pass w / Σ w = ε."""
    m, passed = _bin(np.random.default_rng(2), 0.8)
    result = _fit(m, passed)
    w = fitted_signal_weights(m, passed, EDGES, result, FIT.background, FIT.fail_width_shift)
    assert w is not None
    assert w[passed].sum() / w.sum() == pytest.approx(result["efficiency"], abs=2e-4)
    assert w.sum() == pytest.approx(result["n_sig"], rel=2e-3)
    assert fitted_signal_weights(m, passed, EDGES, {"status": "empty"}, FIT.background, False) is None


def _pair(rng: np.random.Generator, n_sig: int = 3000, n_bkg: int = 2000) -> tuple[np.ndarray, ...]:
    """Two bins whose signal candidates come in pairs from the same events (the J/ψ's two muons; in 90 % of them
    one decision passes or fails both), plus independent background: masses, decisions, events of the two."""
    m0, _ = _masses(rng, n_sig, n_bkg)
    m1, _ = _masses(rng, n_sig, n_bkg)
    u0 = rng.uniform(size=n_sig)
    u1 = np.where(rng.uniform(size=n_sig) < 0.9, u0, rng.uniform(size=n_sig))
    p0 = np.r_[u0 < 0.8, rng.uniform(size=n_bkg) < 0.5]
    p1 = np.r_[u1 < 0.8, rng.uniform(size=n_bkg) < 0.5]
    ev0 = np.r_[np.arange(n_sig), n_sig + np.arange(n_bkg)]
    ev1 = np.r_[np.arange(n_sig), n_sig + n_bkg + np.arange(n_bkg)]  # signal pairs share their event
    return m0, p0, ev0, m1, p1, ev1


def test_the_bootstrap_of_fitted_bins_sharing_events() -> None:
    """The bootstrap of one experiment's signal weights gives each bin's fitted error and the correlation of the two
    fitted efficiencies that 60 pseudo-experiments refitted show (truth; its error ≈ (1 − ρ²)/√60 ≈ 0.07)."""
    rng = np.random.default_rng(3)
    m0, p0, ev0, m1, p1, ev1 = _pair(rng)
    r0, r1 = _fit(m0, p0), _fit(m1, p1)
    w = np.r_[fitted_signal_weights(m0, p0, EDGES, r0, "exponential", False),
              fitted_signal_weights(m1, p1, EDGES, r1, "exponential", False)]
    bins = np.r_[np.zeros(m0.size, int), np.ones(m1.size, int)]
    x = replica_efficiencies(bins, np.r_[p0, p1], np.r_[ev0, ev1], 2, w, replicas=1000, seed=4)
    cov = np.cov(x.T)
    for k, r in enumerate((r0, r1)):  # the bootstrap error agrees with the fit's (shapes fixed: within 15 %)
        assert np.sqrt(cov[k, k]) == pytest.approx(0.5 * (r["err_down"] + r["err_up"]), rel=0.15)
    rho = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    fitted = []
    for _ in range(60):
        a0, q0, _, a1, q1, _ = _pair(rng)
        fitted.append([_fit(a0, q0)["efficiency"], _fit(a1, q1)["efficiency"]])
    truth = np.corrcoef(np.array(fitted).T)[0, 1]
    assert 0.4 < truth < 0.9  # background dilutes the signal's 0.9
    assert rho == pytest.approx(truth, abs=0.15), (rho, truth)
