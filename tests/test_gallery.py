"""Fit figures, fit galleries and low statistics (issue 15, items 3 and 4).

Figures are checked through their matplotlib objects (series, labels, units), the gallery through its HTML
and files, low statistics through the per-bin results and the tables; the task graph shows where figures
are drawn (beside the fits), that labels never refit, that re-binning leaves no stale figure and that a
failing figure never fails the tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from calibflow.binning.scheme import BinningScheme
from calibflow.config import FitConfig, parse_config
from calibflow.fit.gallery import GalleryEntry, file_stems, meaning, plain_label, write_gallery
from calibflow.fit.histograms import BinCandidates, BinHistograms
from calibflow.fit.measure import candidate_counts, measure_bin, with_low_statistics
from calibflow.fit.plots import (
    FINE_BINS,
    FigureText,
    bin_title,
    data_intervals,
    display_factor,
    fit_figure,
    garwood,
    plot_bin_fit,
    safe_plot_bin_fit,
)
from calibflow.plan import Plan

from .conftest import small_demo_dict

LO, HI, BINS = 2950.0, 3250.0, 100
EDGES = np.linspace(LO, HI, BINS + 1)


def toy_hist(n_sig: int, n_bkg: int, eff: float, seed: int = 1, weight: float | None = None) -> BinHistograms:
    """Pass/fail histograms of a J/psi-like toy: Gaussian peak (3097, 12) and a falling exponential."""
    rng = np.random.default_rng(seed)
    sig = rng.normal(3097.0, 12.0, n_sig)
    bkg = LO + rng.exponential(300.0, n_bkg)
    passed = np.concatenate([rng.random(n_sig) < eff, rng.random(n_bkg) < 0.3])
    mass = np.concatenate([sig, bkg])
    w = np.ones_like(mass) if weight is None else np.full_like(mass, weight)
    sumw = np.array([np.histogram(mass[sel], EDGES, weights=w[sel])[0] for sel in (passed, ~passed)])
    sumw2 = np.array([np.histogram(mass[sel], EDGES, weights=w[sel] ** 2)[0] for sel in (passed, ~passed)])
    return BinHistograms(edges=EDGES, sumw=sumw, sumw2=sumw2, weighted=weight is not None)


FIT = FitConfig(signal="gauss", background="exponential", parameters={"mu": {"value": 3097, "limits": [3070, 3120]}})


# --- low statistics ------------------------------------------------------------------------------
def test_a_bin_with_few_candidates_is_fitted_and_flagged_low_statistics() -> None:
    hist = toy_hist(12, 1, 0.8, seed=3)
    n_pass, n_fail = hist.sumw.sum(axis=1)
    r = measure_bin("fit", FIT, hist=hist)
    assert r["status"].split(",")[0] == "low_statistics"
    assert np.isfinite(r["efficiency"]) and r["n_attempts"] >= 1  # still fitted
    assert (r["candidates_pass"], r["candidates_fail"]) == (n_pass, n_fail) == (float(n_pass), float(n_fail))
    rich = measure_bin("fit", FIT, hist=toy_hist(4000, 3000, 0.8, seed=4))
    assert rich["status"] == "ok" and rich["candidates_pass"] > 50
    # counting does not fit: no low-statistics flag, but the counts are recorded
    counted = measure_bin("count", FIT, hist=hist)
    assert counted["status"] == "ok" and counted["candidates_fail"] == n_fail
    # the threshold is the config's
    assert measure_bin("fit", FIT.model_copy(update={"min_candidates": 0}), hist=hist)["status"].split(",")[0] != \
        "low_statistics"


def test_sweights_fits_are_flagged_too() -> None:
    rng = np.random.default_rng(2)
    mass = np.concatenate([rng.normal(3097.0, 12.0, 60), LO + rng.uniform(0.0, HI - LO, 30)])
    passed = rng.random(mass.size) < 0.7
    r = measure_bin("sweights", FIT, cands=BinCandidates(mass, passed, np.ones(mass.size), False, LO, HI))
    assert r["status"].split(",")[0] == "low_statistics"
    assert (r["candidates_pass"], r["candidates_fail"]) == (float(passed.sum()), float((~passed).sum()))


def test_low_statistics_comes_first_and_keeps_the_fit_problems() -> None:
    assert with_low_statistics("ok") == "low_statistics"
    assert with_low_statistics("at_limit:sigma,minos_failed") == "low_statistics,at_limit:sigma,minos_failed"
    assert with_low_statistics("low_statistics") == "low_statistics"


def test_weighted_candidates_count_as_their_effective_number() -> None:
    """Kish's (Σw)²/Σw²: equal weights give the raw count, whatever the weight."""
    hist = toy_hist(300, 200, 0.7, seed=5, weight=0.25)
    raw = toy_hist(300, 200, 0.7, seed=5).sumw.sum(axis=1)
    assert candidate_counts(hist) == pytest.approx(tuple(raw))
    w = np.array([1.0, 3.0, 1.0, 3.0])
    cands = BinCandidates(np.full(4, 3097.0), np.array([True, True, False, False]), w, True, LO, HI)
    assert candidate_counts(cands=cands) == pytest.approx((16 / 10, 16 / 10))
    plain = BinCandidates(np.full(4, 3097.0), np.array([True, True, True, False]), np.ones(4), False, LO, HI)
    assert candidate_counts(cands=plain) == (3.0, 1.0)


# --- data intervals and display ------------------------------------------------------------------
def test_garwood_intervals_never_reach_below_zero() -> None:
    n = np.array([0.0, 1.0, 4.0, 25.0])
    lo, hi = garwood(n)
    a = (1 - 0.6826894921370859) / 2
    ref_lo = np.where(n > 0, stats.chi2.ppf(a, 2 * n) / 2, 0.0)
    ref_hi = stats.chi2.ppf(1 - a, 2 * (n + 1)) / 2
    assert lo == pytest.approx(ref_lo) and hi == pytest.approx(ref_hi)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1.8410, abs=1e-4)
    # weighted: Garwood on the effective counts, scaled back (weights of 2: twice the interval)
    wlo, whi = data_intervals(2 * n, 4 * n)
    assert wlo[1:] == pytest.approx(2 * lo[1:]) and whi[1:] == pytest.approx(2 * hi[1:])
    assert wlo[0] == 0.0 and whi[0] == pytest.approx(hi[0])  # an empty weighted bin: scale 1


def test_sparse_bins_are_shown_in_merged_mass_bins() -> None:
    assert display_factor(5000, 100) == 1
    assert display_factor(212, 100) == 2  # ≥ 3 per shown bin: 1.4 → the next divisor of 100
    assert display_factor(90, 100) == 4  # 3.3 → 4
    assert display_factor(10, 100) == 4  # at least 25 shown bins
    assert display_factor(0, 7) == 1  # a prime number of bins cannot be merged


# --- the figure ----------------------------------------------------------------------------------
def _lines(ax) -> dict[str, object]:
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def blocks(image: np.ndarray, k: int = 16) -> np.ndarray:
    """Means of ``image`` over k x k pixel blocks."""
    h, w = (n // k * k for n in image.shape)
    return image[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def intervals(panel) -> np.ndarray:
    """(lo, hi) of each data point's interval, from the panel's error line (x, x, NaN per point)."""
    x, y = (np.asarray(v).reshape(-1, 3) for v in panel.errors.get_data())
    assert np.all(x[:, 0] == x[:, 1]) and np.all(np.isnan(y[:, 2]))
    return y[:, :2]


def test_figure_shows_data_model_components_pulls_labels_and_units(tmp_path: Path) -> None:
    from PIL import Image

    hist = toy_hist(3000, 2500, 0.8, seed=7)
    r = measure_bin("fit", FIT, hist=hist)
    text = FigureText("data, bin 3: $p$ ∈ [10, 20) GeV", "$m(\\mu^+\\mu^-)$", "MeV", "LHCb Preliminary")
    path = tmp_path / "fig.png"
    plot_bin_fit(str(path), hist, r, "exponential", False, text, min_candidates=50)
    fig = fit_figure()
    assert len(fig.fig.axes) == 4
    for c, panel in enumerate(fig.panels):
        lines = _lines(panel.ax)
        assert set(lines) == {"data", "fit", "signal", "background"}
        x, y = lines["data"].get_data()
        assert np.allclose(x, 0.5 * (EDGES[1:] + EDGES[:-1]))
        assert np.allclose(np.nan_to_num(y), hist.sumw[c])
        total, sig, bkg = (np.asarray(lines[k].get_data()[1]) for k in ("fit", "signal", "background"))
        assert np.allclose(total, sig + bkg) and sig.max() > bkg.max() > 0
        # the model integrates to the fitted yields: curves are counts per 3 MeV bin on a finer grid
        assert total.sum() * BINS / FINE_BINS == pytest.approx(hist.sumw[c].sum(), rel=0.02)
        top = panel.ax.get_ylim()[1]
        assert top > y[~np.isnan(y)].max() and top > total.max()
        ticks = panel.tick_labels
        assert ticks.labels[0] == "0" and len(ticks.labels) >= 3 and ticks.values[-1] <= top
        assert [float(t) for t in ticks.labels] == ticks.values
        assert np.asarray(panel.ticks.get_data()[1]).reshape(-1, 3)[:, 0].tolist() == ticks.values
        segs = intervals(panel)
        assert len(segs) == BINS and segs[:, 0].min() >= 0.0 and np.all(segs[:, 1] > segs[:, 0])
        assert panel.ylabel.get_text() == "candidates / 3 MeV"
        assert panel.pax.get_xlabel() == "$m(\\mu^+\\mu^-)$ [MeV]"
        pulls = panel.pulls.get_data().values
        assert pulls.shape == (BINS,) and 0.5 < np.std(pulls) < 1.6
        assert panel.note.get_text() == f"{hist.sumw[c].sum():.0f} candidates"
    assert fig.title.get_text() == text.title and fig.brand.get_text() == "LHCb Preliminary"
    assert fig.summary.get_text().startswith(f"ε = {r['efficiency']:.4f} −")
    assert fig.status.get_text() == "status: ok"
    with Image.open(path) as im:
        assert im.size == (800, 496) and im.mode == "RGBA"
        assert np.array_equal(np.asarray(im), np.asarray(fig.canvas.buffer_rgba()))  # the PNG is what was drawn


def test_the_figure_is_reused_and_a_low_statistics_bin_says_so(tmp_path: Path) -> None:
    first = fit_figure()
    n_artists = [len(ax.get_children()) for ax in first.fig.axes]
    hist = toy_hist(12, 1, 0.8, seed=3)
    r = measure_bin("fit", FIT, hist=hist)
    plot_bin_fit(str(tmp_path / "low.png"), hist, r, "exponential", False, FigureText("low"), min_candidates=50)
    fig = fit_figure()
    assert fig is first and [len(ax.get_children()) for ax in fig.fig.axes] == n_artists  # updated, not re-made
    assert fig.status.get_text().startswith("status: low_statistics")
    n_fail = hist.sumw[1].sum()
    note = fig.panels[1].note
    assert note.get_text() == f"{n_fail:.0f} candidates < 50: low statistics" and note.get_color() != "k"
    # few candidates: shown in 25 merged bins of 12 (mass unit), the intervals of empty ones from 0 to 1.84
    panel = fig.panels[1]
    assert panel.ylabel.get_text() == "candidates / 12"
    x, y = _lines(panel.ax)["data"].get_data()
    assert len(x) == 25 and np.nansum(y) == n_fail
    empty = intervals(panel)[np.nan_to_num(y) == 0]
    assert len(empty) and np.all(empty[:, 0] == 0.0) and empty[:, 1] == pytest.approx(1.841, abs=1e-3)


def test_fast_text_looks_like_matplotlibs_and_falls_back_to_it(tmp_path: Path, monkeypatch) -> None:
    """The figure's text path (FreeType in one call per text, cached) draws what matplotlib's own does, and a
    matplotlib without what it needs makes it step aside for good, the figure still drawn."""
    from PIL import Image

    import calibflow.fit.plots as plots

    hist = toy_hist(800, 600, 0.8, seed=9)
    r = measure_bin("fit", FIT, hist=hist)
    text = FigureText("data, bin 7: $p$ ∈ [10, 20) GeV, $\\eta$ ∈ [2, 2.25)", "$m$", "MeV", "LHCb")
    images = {}
    for fast in (True, False):
        monkeypatch.setattr(plots._Renderer, "fast", fast)
        plot_bin_fit(str(tmp_path / f"{fast}.png"), hist, r, "exponential", False, text)
        with Image.open(tmp_path / f"{fast}.png") as im:
            images[fast] = np.asarray(im.convert("L"), dtype=float)
    ink = {k: (v < 128).sum() for k, v in images.items()}
    assert abs(ink[True] - ink[False]) < 0.03 * ink[False]
    # the same texts at the same places: 16 x 16 pixel blocks differ by anti-aliasing only (a title left out
    # differs by ~45 grey levels of 255)
    assert np.abs(blocks(images[True]) - blocks(images[False])).max() < 15

    def missing(*args: object) -> None:
        raise TypeError("no such API")

    monkeypatch.setattr(plots._Renderer, "fast", True)
    monkeypatch.setattr(plots._Renderer, "cache", {})
    monkeypatch.setattr(plots._Renderer, "metrics", {})
    monkeypatch.setattr(plots, "get_hinting_flag", missing)
    plot_bin_fit(str(tmp_path / "fallback.png"), hist, r, "exponential", False, text)
    assert plots._Renderer.fast is False
    with Image.open(tmp_path / "fallback.png") as im:
        assert np.abs(blocks(np.asarray(im.convert("L"), dtype=float)) - blocks(images[False])).max() < 1


def test_unbinned_weighted_fits_are_drawn_from_their_candidates(tmp_path: Path) -> None:
    """An unbinned fit is drawn from its candidates, histogrammed in mass.bins; weighted data say so."""
    rng = np.random.default_rng(11)
    mass = np.concatenate([rng.normal(3097.0, 12.0, 1500), LO + rng.exponential(300.0, 1500)])
    mass = mass[(mass >= LO) & (mass < HI)]
    passed = rng.random(mass.size) < 0.7
    w = rng.uniform(0.5, 1.5, mass.size)
    cands = BinCandidates(mass, passed, w, True, LO, HI)
    r = measure_bin("fit", FIT.model_copy(update={"binned": False}), cands=cands)
    plot_bin_fit(str(tmp_path / "u.png"), cands, r, "exponential", False, FigureText("u", unit := "MeV"), 60)
    panel = fit_figure().panels[0]
    x, y = _lines(panel.ax)["data"].get_data()
    assert len(x) == 60 and np.nansum(y) == pytest.approx(w[passed].sum())
    assert panel.ylabel.get_text() == "weighted candidates / 5" and unit == "MeV"
    assert r["candidates_pass"] == pytest.approx(w[passed].sum() ** 2 / (w[passed] ** 2).sum())


def test_an_empty_result_shows_the_data_alone(tmp_path: Path) -> None:
    hist = toy_hist(0, 0, 0.5)
    r = measure_bin("fit", FIT, hist=hist)
    assert r["status"] == "empty_bin"
    plot_bin_fit(str(tmp_path / "empty.png"), hist, r, "exponential", False, FigureText("empty"))
    assert (tmp_path / "empty.png").stat().st_size > 0
    assert len(_lines(fit_figure().panels[0].ax)["fit"].get_data()[0]) == 0


def test_a_failing_figure_is_reported_not_raised(tmp_path: Path) -> None:
    hist = toy_hist(500, 500, 0.8)
    good = measure_bin("fit", FIT, hist=hist)
    bad = {**good, "signal_model": "no_such_shape"}
    fig, err = tmp_path / "f.png", tmp_path / "f.plot-error.txt"
    reason = safe_plot_bin_fit(str(fig), str(err), hist, bad, "exponential", False, FigureText("x"))
    assert reason is not None and "no_such_shape" in reason
    assert err.read_text().strip() == reason and not fig.exists()
    assert safe_plot_bin_fit(str(fig), str(err), hist, good, "exponential", False, FigureText("x")) is None
    assert fig.exists() and not err.exists()


# --- gallery -------------------------------------------------------------------------------------
def test_file_stems_are_readable_and_unique() -> None:
    scheme = BinningScheme.product({"p": [2, 10, 20, 200], "eta": [2.0, 2.25, 3.0]})
    stems = file_stems(scheme.bins)
    assert stems[:2] == ["p_2-10_eta_2.00-2.25", "p_2-10_eta_2.25-3.00"]
    assert "p_10-20_eta_2.25-3.00" in stems and len(set(stems)) == len(stems)
    odd = BinningScheme.product({"x": [-1.5, -0.123456789, 1.0]})
    assert file_stems(odd.bins) == ["x_-1.500000--0.123457", "x_-0.123457-1.000000"]
    assert plain_label(scheme.bins[0], {"p": "GeV"}) == "p ∈ [2, 10) GeV, eta ∈ [2, 2.25)"
    assert bin_title(scheme.bins[0]) == "p ∈ [2, 10), eta ∈ [2, 2.25)"


def _entry(i: int, status: str, figure: Path | None, error: str | None = None) -> GalleryEntry:
    return GalleryEntry(i, f"p ∈ [{i}, {i + 1})", f"p_{i}-{i + 1}", status, 0.9, 0.01, 0.02, 100.0, 40.0,
                        str(figure) if figure else None, error)


def test_gallery_lists_flagged_bins_first_and_keeps_no_stale_figure(tmp_path: Path) -> None:
    png = tmp_path / "keyed.png"
    png.write_bytes(b"\x89PNG fake")
    folder = tmp_path / "gallery"
    entries = [_entry(0, "ok", png), _entry(1, "low_statistics", png), _entry(2, "ok", None, "ValueError: boom"),
               _entry(3, "at_limit:sigma,bad_gof:chi2/ndof=4.1", png), _entry(4, "ok", png)]
    written = write_gallery(str(folder), "demo: fits of data (nominal)", entries)
    assert sorted(Path(p).name for p in written) == ["index.html", "p_0-1.png", "p_1-2.png", "p_3-4.png",
                                                     "p_4-5.png"]
    page = (folder / "index.html").read_text()
    order = [page.index(f'id="bin{i}"') for i in (1, 2, 3, 0, 4)]
    assert order == sorted(order)  # flagged (status or figure error) by bin index, then the rest
    assert "5 bins: 2 ok, 3 flagged (1 low statistics, 1 figure error(s))" in page
    assert "figure failed: ValueError: boom" in page
    assert meaning("low_statistics") in page and "a shape parameter sits at its limit" in page
    assert 'href="p_3-4.png"' in page and 'src="p_3-4.png"' in page
    assert "http" not in page and "<script" not in page  # self-contained
    write_gallery(str(folder), "demo", entries[:2])  # re-binned: fewer bins
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "p_0-1.png", "p_1-2.png"]


def test_plots_and_labels_never_enter_a_fit_key(tmp_path: Path, write_config) -> None:
    d = small_demo_dict()
    plan = Plan.create(write_config(d, "a.yaml"), tmp_path / "r")
    d["fit"]["plots"] = "none"
    d["mass"]["label"] = "$m$"
    other = Plan.create(write_config(d, "b.yaml"), tmp_path / "r")
    keys = [b.key for b in plan.scheme().bins]
    assert plan.fit_keys("data", keys) == other.fit_keys("data", keys)
    assert plan.figure_key() != other.figure_key()
    assert parse_config(small_demo_dict()).fit.plots == "all"


# --- in the task graph ---------------------------------------------------------------------------
def _build(cfg: Path, result_dir: Path, workers: int = 2):
    from tasks import ExportTables
    from tasks.runner import build

    plan = Plan.create(cfg, result_dir)
    return plan, build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=workers)


def gallery_dict() -> dict:
    """The small demo (3 x 2 bins) with fit.min_candidates high enough to flag some bins, few exports."""
    d = small_demo_dict()
    d["fit"]["min_candidates"] = 300
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": False}
    return d


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`gallery_dict` built once; returns its config file."""
    import yaml

    cfg = tmp_path_factory.mktemp("gallery") / "small.yaml"
    cfg.write_text(yaml.safe_dump(gallery_dict(), sort_keys=False))
    _, report = _build(cfg, cfg.parent / "res")
    assert report.ok, report.failed
    return cfg


def test_every_fitted_bin_gets_a_figure_and_low_statistics_reaches_the_tables(gallery_run: Path) -> None:
    cfg = gallery_run
    plan = Plan.create(cfg, cfg.parent / "res")
    keys = plan.bin_keys()
    figures = plan.figure_paths("data", keys)
    assert all(Path(f).exists() for f in figures)  # drawn beside the results, by FitBin:
    logs = "".join(p.read_text() for p in (Path(plan.workdir) / "logs" / "FitBin").glob("*.log"))
    assert f"fit figures drawn: {len(keys)}, 0 failed" in logs
    assert not any(Path(f).exists() for f in plan.figure_paths("mc", keys))  # counted: no fit, no figure
    with open(Path(plan.workdir) / "efficiencies.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["sample"] == "data"]
    statuses = [r["fit_status"] for r in rows]
    results = [json.loads(Path(p).read_text()) for p in plan.fit_paths("data", keys)]
    low = [min(r["candidates_pass"], r["candidates_fail"]) < 300 for r in results]
    assert any(low) and not all(low)
    assert [s.startswith("low_statistics") for s in statuses] == low
    gallery = Path(plan.gallery_dir("data"))
    names = sorted(p.name for p in gallery.iterdir())
    assert names == sorted(["index.html", *(f"{s}.png" for s in file_stems(plan.load_scheme().bins))])
    page = (gallery / "index.html").read_text()
    flagged = [i for i, is_low in enumerate(low) if is_low]
    ok = [i for i, is_low in enumerate(low) if not is_low]
    assert max(page.index(f'id="bin{i}"') for i in flagged) < min(page.index(f'id="bin{i}"') for i in ok)
    assert not (Path(plan.workdir) / "gallery" / "nominal" / "mc").exists()


def test_relabelling_redraws_without_refitting_and_rebinning_leaves_no_stale_figure(gallery_run: Path) -> None:
    import yaml

    cfg, d = gallery_run, gallery_dict()
    plan = Plan.create(cfg, cfg.parent / "res")
    gallery = Path(plan.gallery_dir("data"))
    before = {p.name: p.read_bytes() for p in gallery.glob("*.png")}
    d["mass"]["label"] = "$m_{\\mu\\mu}$"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan, report = _build(cfg, cfg.parent / "res")
    assert report.ok and report.ran.get("FitBin", 0) == 0  # labels are no part of a fit
    after = {p.name: p.read_bytes() for p in gallery.glob("*.png")}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)  # redrawn at export
    assert all(Path(f).exists() for f in plan.figure_paths("data", plan.bin_keys()))
    d["binning"]["variables"][0]["edges"] = [2, 6, 200]
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan, report = _build(cfg, cfg.parent / "res")
    assert report.ok, report.failed
    names = sorted(p.name for p in gallery.glob("*.png"))
    assert names == sorted(f"{s}.png" for s in file_stems(plan.load_scheme().bins)) and len(names) == 4
    d["fit"]["plots"] = "none"  # no gallery: the published one goes, and nothing is refitted
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan, report = _build(cfg, cfg.parent / "res")
    assert report.ok and report.ran.get("FitBin", 0) == 0
    assert not [p for p in gallery.parent.parent.rglob("*") if p.is_file()]


def test_a_failing_figure_never_fails_the_tables(tmp_path: Path, monkeypatch) -> None:
    import yaml

    import calibflow.fit.plots

    d = {**gallery_dict(), "name": "broken_figures"}
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))

    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(calibflow.fit.plots, "plot_bin_fit", broken)
    plan, report = _build(cfg, tmp_path / "res", workers=1)  # in this process: the patch applies
    assert report.ok, report.failed
    assert (Path(plan.workdir) / "efficiencies.csv").exists()
    keys = plan.bin_keys()
    errors = [Path(plan.plot_error_path(f)) for f in plan.figure_paths("data", keys)]
    assert all(e.read_text().strip() == "RuntimeError: no ink" for e in errors)
    page = (Path(plan.gallery_dir("data")) / "index.html").read_text()
    assert page.count("figure failed: RuntimeError: no ink") == len(keys)
    logs = "".join(p.read_text() for p in (Path(plan.workdir) / "logs" / "FitBin").glob("*.log"))
    assert "figure failed: RuntimeError: no ink" in logs
