"""Sideband subtraction and the TIS/TOS method (issue 18, item 4): hand computations, finite-difference
error propagation, and toy closure against the generated truth (pull mean and width over many toys)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibflow.fit.histograms import BinHistograms
from calibflow.fit.sideband import fitted_alpha, sideband_subtract, window_mask
from calibflow.fit.tistos import TisTosCounts, tistos_efficiencies

EDGES = np.linspace(2950.0, 3250.0, 101)  # 3 MeV bins
SIGNAL = (3070.0, 3124.0)
SIDEBANDS = [(2962.0, 2989.0), (3205.0, 3232.0)]  # symmetric about the window's centre 3097


# --- TIS/TOS -----------------------------------------------------------------------------------------------
def test_tistos_against_a_hand_computation() -> None:
    counts = TisTosCounts((30.0, 20.0, 50.0, 5.0), (30.0, 20.0, 50.0, 5.0))
    r = tistos_efficiencies(counts)
    assert r.eff_tos == pytest.approx(50 / 80) and r.eff_tis == pytest.approx(50 / 70)
    assert r.eff_trig == pytest.approx(105 * 50 / (80 * 70))  # N_Trig / (N_TIS N_TOS / N_TIS&TOS)
    assert r.err_tos == pytest.approx(math.sqrt(30 * 50 / 80**3))  # binomial: sqrt(eps (1 - eps) / N_TIS)
    assert r.err_tis == pytest.approx(math.sqrt(20 * 50 / 70**3))

    def trig(n: np.ndarray) -> float:
        a, b, c, d = n
        return (a + b + c + d) * c / ((a + c) * (b + c))

    n0, h = np.array(counts.sumw), 1e-6
    grad = np.array([(trig(n0 + h * e) - trig(n0 - h * e)) / (2 * h) for e in np.eye(4)])
    assert r.err_trig == pytest.approx(math.sqrt(float(np.sum(grad**2 * n0))), rel=1e-6)


def test_tistos_counts_from_flags_and_their_checks() -> None:
    tis = np.array([1, 1, 0, 0, 1], bool)
    tos = np.array([1, 0, 1, 0, 0], bool)
    trig = np.array([1, 1, 1, 1, 1], bool)
    c = TisTosCounts.from_flags(tis, tos, trig, weight=np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    assert c.sumw == (2.5, 3.0, 1.0, 4.0) and c.sumw2 == (4.25, 9.0, 1.0, 16.0)
    with pytest.raises(ValueError, match="TIS or TOS but not triggered"):
        TisTosCounts.from_flags(tis, tos, np.zeros(5, bool))
    empty = tistos_efficiencies(TisTosCounts((3.0, 2.0, 0.0, 0.0), (3.0, 2.0, 0.0, 0.0)))
    assert empty.eff_tos == 0.0 and math.isnan(empty.err_tos) and math.isnan(empty.eff_trig)


def test_tistos_closes_on_toys_with_independent_tis_and_tos() -> None:
    rng = np.random.default_rng(11)
    p_tis, p_tos, p_tob = 0.45, 0.7, 0.3  # TOB: triggered by neither, among the rest
    true_trig = 1 - (1 - p_tis) * (1 - p_tos) * (1 - p_tob)
    pulls = {"tos": [], "tis": [], "trig": []}
    for _ in range(400):
        n = rng.poisson(2000)
        tis, tos = rng.random(n) < p_tis, rng.random(n) < p_tos
        trig = tis | tos | (rng.random(n) < p_tob)
        r = tistos_efficiencies(TisTosCounts.from_flags(tis[trig], tos[trig], trig[trig]))
        pulls["tos"].append((r.eff_tos - p_tos) / r.err_tos)
        pulls["tis"].append((r.eff_tis - p_tis) / r.err_tis)
        pulls["trig"].append((r.eff_trig - true_trig) / r.err_trig)
    for name, values in pulls.items():
        v = np.asarray(values)
        assert abs(v.mean()) < 0.15 and 0.9 < v.std() < 1.1, (name, v.mean(), v.std())


# --- sideband subtraction ----------------------------------------------------------------------------------
def _toy(rng: np.random.Generator, eff: float, n_sig: int, n_bkg: int, slope: float = 0.0) -> BinHistograms:
    """Pass and fail histograms: a Gaussian signal (3097, 12 MeV) with efficiency ``eff`` and a background
    exp(slope·m) (flat at 0) with pass fraction 0.4."""
    sumw = np.zeros((2, len(EDGES) - 1))
    sig = rng.normal(3097.0, 12.0, rng.poisson(n_sig))
    u = rng.random(rng.poisson(n_bkg))
    lo, hi = EDGES[0], EDGES[-1]
    bkg = lo + u * (hi - lo) if slope == 0 else lo + np.log1p(u * np.expm1(slope * (hi - lo))) / slope
    for values, p in ((sig, eff), (bkg, 0.4)):
        passed = rng.random(len(values)) < p
        sumw[0] += np.histogram(values[passed], EDGES)[0]
        sumw[1] += np.histogram(values[~passed], EDGES)[0]
    return BinHistograms(EDGES, sumw, sumw.copy(), weighted=False)


def test_window_edges_must_be_histogram_edges() -> None:
    assert window_mask(EDGES, [SIGNAL]).sum() == 18
    with pytest.raises(ValueError, match=r"window edge 3071 is not an edge of the mass histogram \(nearest: 3070, 3073\)"):
        window_mask(EDGES, [(3071.0, 3124.0)])
    hist = _toy(np.random.default_rng(1), 0.8, 100, 100)
    with pytest.raises(ValueError, match="overlap"):
        sideband_subtract(hist, SIGNAL, [(3100.0, 3130.0)])


@pytest.mark.parametrize("background, slope", [("flat", 0.0), ("fitted", -0.006)])
def test_sideband_subtraction_closes_on_toys(background: str, slope: float) -> None:
    rng = np.random.default_rng(8 if slope else 18)
    eff, pulls = 0.83, []
    window_fraction = 0.9757  # of the Gaussian inside ±27 MeV = 2.25 sigma
    for _ in range(300):
        r = sideband_subtract(_toy(rng, eff, 4000, 4000, slope), SIGNAL, SIDEBANDS, background)
        pulls.append((r.efficiency - eff) / r.error)
        assert r.n_pass + r.n_fail == pytest.approx(4000 * window_fraction, rel=0.1)
    v = np.asarray(pulls)
    assert abs(v.mean()) < 0.15 and 0.9 < v.std() < 1.1, (v.mean(), v.std())


def test_a_flat_alpha_is_biased_by_a_steep_background_and_a_fitted_one_is_not() -> None:
    """With symmetric sidebands, the width ratio is exact only for a linear background: for a steep
    exponential it over-subtracts, which the fitted alpha corrects."""
    rng = np.random.default_rng(8)
    hist = _toy(rng, 0.83, 0, 400_000, slope=-0.02)  # background only: the true signal yield is 0
    flat = sideband_subtract(hist, SIGNAL, SIDEBANDS, "flat")
    fitted = sideband_subtract(hist, SIGNAL, SIDEBANDS, "fitted")
    assert flat.n_pass + flat.n_fail < -5 * math.sqrt(flat.var_pass + flat.var_fail)
    assert abs(fitted.n_pass + fitted.n_fail) < 3 * math.sqrt(fitted.var_pass + fitted.var_fail)
    lo, hi = np.array([SIGNAL[0]]), np.array([SIGNAL[1]])
    true_alpha = float((np.exp(-0.02 * hi) - np.exp(-0.02 * lo))[0] / sum(
        np.exp(-0.02 * b) - np.exp(-0.02 * a) for a, b in SIDEBANDS))
    alpha, var = fitted_alpha(EDGES, hist.sumw, SIGNAL, SIDEBANDS)
    assert alpha == pytest.approx(true_alpha, abs=4 * math.sqrt(var)) and var > 0


# --- method sideband through the task graph ------------------------------------------------------------
def test_method_sideband_closes_on_the_demo_toy(write_config, tmp_path) -> None:
    from calibflow.plan import Plan
    from calibflow.tables.rows import read_csv
    from tasks import ExportTables
    from tasks.runner import build

    from .conftest import small_demo_dict

    d = small_demo_dict()
    d["name"] = "m_sideband"
    d["samples"]["data"]["method"] = "sideband"
    d["fit"]["sideband"] = {"signal": [3055, 3139], "sidebands": [[2953, 2995], [3199, 3241]]}
    plan = Plan.create(write_config(d, "sb.yaml"), tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=1)
    assert report.ok, report.failed
    eff = [r for r in read_csv(plan.workdir + "/efficiencies.csv") if r["sample"] == "data"]
    assert len(eff) == 6 and all(r["method"] == "sideband" and r["fit_status"] == "ok" for r in eff)
    assert all(r["err_up"] == r["err_down"] > 0 for r in eff)
    pulls = np.array([r["pull"] for r in read_csv(plan.workdir + "/closure.csv")
                      if r["quantity"] == "efficiency" and r["sample"] == "data"])
    assert len(pulls) == 6 and np.all(np.abs(pulls) < 3.5), pulls


@pytest.mark.parametrize("sideband, message", [
    ({"signal": [3071, 3124], "sidebands": [[2962, 2989]]},
     "fit.sideband.signal: edge 3071 is not an edge of the mass histogram (100 bins in [2950, 3250]: nearest 3070 or 3073)"),
    ({"signal": [3070, 3124], "sidebands": [[3100, 3130]]}, "signal window and sidebands overlap"),
    ({"signal": [3070, 3124], "sidebands": [[2900, 2950]]}, "fit.sideband.sidebands[0]: edge 2900 is not an edge"),
    (None, "fit.sideband: required by method sideband (samples data)"),
])
def test_sideband_windows_are_checked_at_load(sideband, message: str, write_config) -> None:
    from calibflow.config import ConfigError, load_config

    from .conftest import small_demo_dict

    d = small_demo_dict()
    d["samples"]["data"]["method"] = "sideband"
    if sideband is not None:
        d["fit"]["sideband"] = sideband
    with pytest.raises(ConfigError) as err:
        load_config(write_config(d, "sb.yaml"))
    assert message in str(err.value)
