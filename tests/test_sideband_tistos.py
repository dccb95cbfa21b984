"""Sideband subtraction and the TIS/TOS method (issue 18, item 4): hand computations, finite-difference
error propagation, and toy closure against the generated truth (pull mean and width over many toys)."""

from __future__ import annotations

import itertools
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


# --- method tistos through the task graph ------------------------------------------------------------------
def _tistos_file(path, n: int, seed: int) -> tuple[float, ...]:
    """A flat tuple of n candidates: p in [2, 20] GeV, TIS (probability 0.4), TOS (0.5 + 0.02 p, independent of
    TIS) and a trigger decision = TIS or TOS or (5 % of the rest); returns the true ε_TOS per p bin of EDGES_P."""
    import uproot

    rng = np.random.default_rng(seed)
    p = rng.uniform(2.0, 20.0, n)
    tis = rng.random(n) < 0.4
    tos = rng.random(n) < 0.5 + 0.02 * p
    trig = tis | tos | (rng.random(n) < 0.05)
    keep = trig  # only triggered candidates are recorded
    with uproot.recreate(path) as f:
        f["DecayTree"] = {"p": p[keep], "TIS": tis[keep].astype(np.int32), "TOS": tos[keep].astype(np.int32),
                          "Dec": trig[keep].astype(np.int32)}
    return tuple(0.5 + 0.02 * 0.5 * (lo + hi) for lo, hi in itertools.pairwise(EDGES_P))


EDGES_P = [2.0, 5.0, 10.0, 20.0]


def test_method_tistos_closes_through_the_graph(write_config, tmp_path) -> None:
    from calibflow.plan import Plan
    from calibflow.tables.rows import read_csv
    from tasks import ExportTables
    from tasks.runner import build

    truth = _tistos_file(tmp_path / "data.root", 60000, 1)
    _tistos_file(tmp_path / "mc.root", 60000, 2)
    d = {"name": "tistos", "samples": {
        "data": {"role": "data", "files": ["data.root"], "method": "tistos"},
        "mc": {"role": "mc", "files": ["mc.root"], "method": "tistos"}},
        "selection": {"probe": "p > 2"},
        "binning": {"variables": [{"name": "p", "edges": EDGES_P}]},
        "fit": {"tistos": {"tis": "TIS == 1", "tos": "TOS == 1", "trigger": "Dec == 1"}},
        "methods": {"trig": {"fit": {"tistos": {"tis": "TIS == 1", "tos": "TOS == 1", "trigger": "Dec == 1",
                                                "efficiency": "trigger"}}}},
        "outputs": {"plots": False, "report": False, "root": False, "latex": False, "markdown": False}}
    plan = Plan.create(write_config(d, "tistos.yaml"), tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=1)
    assert report.ok, report.failed
    rows = [r for r in read_csv(plan.workdir + "/efficiencies.csv") if r["sample"] == "data"]
    assert [r["method"] for r in rows] == ["tistos"] * 3 and all(r["fit_status"] == "ok" for r in rows)
    pulls = [(r["efficiency"] - t) / r["err_up"] for r, t in zip(rows, truth, strict=True)]
    # the bin-averaged truth of a linear efficiency is its value at the bin centre for a flat p
    assert all(abs(x) < 3.5 for x in pulls), pulls
    sf = read_csv(plan.workdir + "/scale_factors.csv")
    assert len(sf) == 3 and all(abs(r["scale_factor"] - 1) < 5 * r["err_up"] for r in sf)
    trig = [r for r in read_csv(plan.workdir + "/methods/trig/efficiencies.csv") if r["sample"] == "data"]
    true_trig = [1 - 0.6 * (1 - t) * 0.95 for t in truth]  # not TIS, not TOS, not the 5 %: untriggered
    pulls = [(r["efficiency"] - t) / r["err_up"] for r, t in zip(trig, true_trig, strict=True)]
    assert all(abs(x) < 3.5 for x in pulls), pulls


def test_method_tistos_needs_its_expressions(write_config) -> None:
    from calibflow.config import ConfigError, load_config

    d = {"name": "t", "samples": {"data": {"role": "data", "files": ["x.root"], "method": "tistos"}},
         "binning": {"variables": [{"name": "p", "edges": EDGES_P}]}}
    with pytest.raises(ConfigError, match=r"fit\.tistos: required by method tistos \(samples data\): give tis: and tos:"):
        load_config(write_config(d, "t.yaml"))


def test_sideband_bins_get_a_figure_with_their_windows(tmp_path) -> None:
    from calibflow.config import SidebandConfig
    from calibflow.fit.plots import FigureText, plot_bin_fit, summary_line

    hist = _toy(np.random.default_rng(3), 0.8, 2000, 2000)
    r = sideband_subtract(hist, SIGNAL, SIDEBANDS)
    result = {"method": "sideband", "efficiency": r.efficiency, "err_down": r.error, "err_up": r.error,
              "n_sig": r.n_pass + r.n_fail, "n_sig_err": 50.0, "alpha": r.alpha, "alpha_err": 0.0, "status": "ok"}
    sb = SidebandConfig(signal=SIGNAL, sidebands=SIDEBANDS)
    text = FigureText("data, bin 0", "m", "MeV", windows=(tuple(sb.signal), tuple(tuple(w) for w in sb.sidebands)))
    with_windows, plain = tmp_path / "sb.png", tmp_path / "plain.png"
    plot_bin_fit(str(with_windows), hist, result, "exponential", False, text)
    plot_bin_fit(str(plain), hist, result, "exponential", False, FigureText("data, bin 0", "m", "MeV"))
    assert with_windows.stat().st_size > 10_000 and with_windows.read_bytes() != plain.read_bytes()
    assert summary_line(result).endswith("α = 1.000 (flat background)")  # 54 MeV window, 2 x 27 MeV sidebands


@pytest.mark.parametrize("background, slope", [("flat", 0.0), ("fitted", -0.006)])
def test_sideband_figure_shows_the_subtracted_background_and_the_sideband_pulls(background: str, slope: float,
                                                                               tmp_path) -> None:
    """The sideband figure's background is what the subtraction assumes: over the window α·N_S of the category
    (what is subtracted), over the sidebands their counts, flat at N_S·(3 MeV)/(54 MeV) per bin for ``flat``; the
    pull panel shows the sideband bins' Baker-Cousins pulls against it (by hand) and nothing elsewhere."""
    from calibflow.fit.plots import FigureText, plot_bin_fit, sideband_categories

    hist = _toy(np.random.default_rng(3), 0.8, 2000, 4000, slope)
    r = sideband_subtract(hist, SIGNAL, SIDEBANDS, background)
    result = {"method": "sideband", "efficiency": r.efficiency, "err_down": r.error, "err_up": r.error,
              "alpha": r.alpha, "alpha_err": math.sqrt(r.var_alpha), "status": "ok"}
    cats = sideband_categories(hist, result, (SIGNAL, tuple(SIDEBANDS)), background)
    lo, hi = EDGES[:-1], EDGES[1:]
    side = np.zeros(lo.size, dtype=bool)
    for a, b in SIDEBANDS:
        side |= (lo >= a) & (hi <= b)
    window = (lo >= SIGNAL[0]) & (hi <= SIGNAL[1])
    for c, cat in enumerate(cats):
        n = hist.sumw[c]
        assert cat.expected is not None and cat.pull_mask is not None and len(cat.edges) == len(EDGES)
        assert cat.expected[window].sum() == pytest.approx(r.alpha * n[side].sum(), rel=1e-9)
        assert cat.expected[side].sum() == pytest.approx(n[side].sum(), rel=1e-9)
        if background == "flat":
            assert cat.expected == pytest.approx(np.full(lo.size, n[side].sum() * 3.0 / 54.0))
        assert (cat.pull_mask == side).all()
        nu = cat.expected[side]
        hand = np.sign(n[side] - nu) * np.sqrt(2 * (nu - n[side] + np.where(n[side] > 0, n[side] * np.log(n[side] / nu), 0)))
        assert np.abs(hand).max() > 0.5  # real pulls, not zeros
        from calibflow.fit.diagnostics import poisson_pulls

        assert poisson_pulls(n, cat.expected)[side] == pytest.approx(hand)
        assert cat.total is None and cat.background is not None and cat.fine_x is not None
        assert cat.fine_x.min() > SIDEBANDS[0][0] and cat.fine_x.max() < SIDEBANDS[1][1]  # sidebands and window only
    path = tmp_path / "sb.png"
    plot_bin_fit(str(path), hist, result, "exponential", False,
                 FigureText("data, bin 0", "m", "MeV", windows=(SIGNAL, tuple(SIDEBANDS)), sideband_background=background))
    assert path.stat().st_size > 10_000


def test_a_sideband_figure_leaves_the_next_fit_figure_unchanged(tmp_path) -> None:
    """One reused figure draws fits and sideband subtractions: a fit figure drawn after a sideband one (shaded
    windows, solid background line, their legend) is byte for byte the one a fresh figure draws."""
    from calibflow.config import FitConfig
    from calibflow.fit import plots
    from calibflow.fit.measure import measure_bin

    hist = _toy(np.random.default_rng(4), 0.8, 2000, 2000)
    fit = measure_bin("fit", FitConfig(signal="gauss"), hist=hist)
    sb = {"method": "sideband", "efficiency": 0.8, "err_down": 0.01, "err_up": 0.01, "alpha": 1.0, "status": "ok"}
    text = plots.FigureText("data, bin 0", "m", "MeV")
    windows = plots.FigureText("data, bin 0", "m", "MeV", windows=(SIGNAL, tuple(SIDEBANDS)))
    plots._FIGURE = None
    plots.plot_bin_fit(str(tmp_path / "fresh.png"), hist, fit, "exponential", False, text)
    plots.plot_bin_fit(str(tmp_path / "sb.png"), hist, sb, "exponential", False, windows)
    plots.plot_bin_fit(str(tmp_path / "cached.png"), hist, fit, "exponential", False, text)  # cached background
    plots._FIGURE = None
    plots.plot_bin_fit(str(tmp_path / "sb2.png"), hist, sb, "exponential", False, windows)
    plots.plot_bin_fit(str(tmp_path / "redrawn.png"), hist, fit, "exponential", False, text)  # rendered after sb
    fresh = (tmp_path / "fresh.png").read_bytes()
    assert (tmp_path / "cached.png").read_bytes() == fresh and (tmp_path / "redrawn.png").read_bytes() == fresh
    assert (tmp_path / "sb.png").read_bytes() == (tmp_path / "sb2.png").read_bytes()
