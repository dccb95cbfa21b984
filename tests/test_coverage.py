"""Coverage of the per-bin intervals (issue 18 item 6): toys of a known model cover 68.3 %, an under-covering
procedure is flagged, the scale-factor coverage pairs the toys as the tables combine errors, and
``calibflow coverage`` runs end to end on the small demo, reuses its records and exits 0/1/2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibflow.config import ConstrainConfig, FitConfig
from calibflow.export.coverage import CSV, HTML, MARKDOWN, PNG, is_flagged, sf_summary
from calibflow.fit.coverage import (
    NOMINAL,
    bin_coverage,
    is_off,
    off_reasons,
    pulls,
    summarise,
    toy_candidates,
    toy_counts,
    toy_histograms,
    toy_seed,
    toy_sideband,
    toy_sweights,
    toy_tistos,
)
from calibflow.fit.histograms import BinCandidates, BinHistograms
from calibflow.fit.measure import measure_bin
from calibflow.tables.rows import pull, ratio_errors, read_csv

from .conftest import small_demo_dict


def within_3_sigma(c: float, n: int) -> bool:
    return abs(c - NOMINAL) < 3.0 * math.sqrt(NOMINAL * (1.0 - NOMINAL) / n)


def counted_bin(n: int, k: int) -> BinHistograms:
    """A bin of n candidates, k passing, in one mass bin."""
    return BinHistograms(np.array([3000.0, 3200.0]), np.array([[k], [n - k]], dtype=float),
                         np.array([[k], [n - k]], dtype=float), False)


def fitted_bin(seed: int = 3, n_sig: int = 20000, eff: float = 0.8) -> BinHistograms:
    """Pass/fail histograms of a Gaussian peak on exponential backgrounds (100 mass bins)."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(2900.0, 3300.0, 101)
    sig = rng.normal(3097.0, 12.0, n_sig)
    passed = rng.random(n_sig) < eff
    hp = np.histogram(np.concatenate([sig[passed], 2900.0 + rng.exponential(300.0, 4000)]), edges)[0]
    hf = np.histogram(np.concatenate([sig[~passed], 2900.0 + rng.exponential(500.0, 8000)]), edges)[0]
    h = np.stack([hp, hf]).astype(float)
    return BinHistograms(edges, h, h.copy(), False)


GAUSS = FitConfig(signal="gauss", background="exponential")


def test_fitted_bin_of_a_known_model_covers_68_percent() -> None:
    """300 toys of a large-statistics binned fit: coverage within 3σ of 68.27 %, pulls centred with width 1."""
    hist = fitted_bin()
    result = measure_bin("fit", GAUSS, hist=hist)
    assert result["status"] == "ok"
    rec = bin_coverage("fit", GAUSS, result, 300, 11, hist=hist)
    assert rec["skipped"] == "" and rec["eff_n_failed"] == 0 and len(rec["efficiency"]) == 300
    assert within_3_sigma(rec["eff_coverage"], 300), rec["eff_coverage"]
    assert abs(rec["eff_pull_mean"]) < 3 * rec["eff_pull_mean_err"] and 0.85 < rec["eff_pull_width"] < 1.15
    assert not rec["eff_off"]


def test_counted_bin_covers_and_clopper_pearson_does_not_undercover() -> None:
    rec = bin_coverage("count", FitConfig(), measure_bin("count", FitConfig(), hist=counted_bin(20000, 15000)),
                       400, 5, hist=counted_bin(20000, 15000))
    assert rec["eff_coverage"] >= NOMINAL - 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / 400)
    assert within_3_sigma(rec["eff_coverage"], 400) and not rec["eff_off"]


def test_weighted_counted_bin_draws_effective_counts() -> None:
    """Weights of 0.5: toys of the effective number of candidates, each of weight 0.5; the interval covers."""
    hist = counted_bin(20000, 15000)
    weighted = BinHistograms(hist.edges, hist.sumw * 0.5, hist.sumw2 * 0.25, True)
    result = measure_bin("count", FitConfig(), hist=weighted)
    toys = toy_counts(result, weighted, 5, np.random.default_rng(0))
    assert all(t.sumw.sum() == pytest.approx(10000.0) and np.allclose(t.sumw2, t.sumw * 0.5) for t in toys)
    rec = bin_coverage("count", FitConfig(), result, 300, 9, hist=weighted)
    assert within_3_sigma(rec["eff_coverage"], 300) and rec["eff_n_failed"] == 0


def _halved(*args: Any, **kwargs: Any) -> dict[str, Any]:
    r = measure_bin(*args, **kwargs)
    return {**r, "err_down": r["err_down"] / 2, "err_up": r["err_up"] / 2}


def test_errors_scaled_down_by_two_are_flagged() -> None:
    """A procedure whose intervals are half as wide covers ≈ 38 %, with pulls of width ≈ 2: coverage_off."""
    hist = counted_bin(20000, 15000)
    result = measure_bin("count", FitConfig(), hist=hist)
    rec = bin_coverage("count", FitConfig(), result, 300, 5, hist=hist, measure=_halved)
    assert rec["eff_coverage"] < 0.5 and rec["eff_pull_width"] > 1.6 and rec["eff_off"]
    assert rec["eff_reason"] == "under_coverage,pull_width"


def test_a_bin_with_almost_no_signal_is_checked_without_failing_the_task() -> None:
    """The issue's case: little signal over background; toys run (some may fail), the record is complete."""
    hist = fitted_bin(seed=8, n_sig=25, eff=0.877)
    result = measure_bin("fit", GAUSS, hist=hist)
    rec = bin_coverage("fit", GAUSS, result, 20, 3, hist=hist)
    assert len(rec["efficiency"]) == 20 and rec["eff_n_toys"] == 20
    assert 0 <= rec["eff_n_failed"] <= 20


def test_pull_convention_is_that_of_the_closure_table() -> None:
    value, down, up = np.array([0.5, 0.9, 0.7]), np.array([0.1, 0.2, 0.1]), np.array([0.4, 0.1, 0.3])
    expected = [pull(v, 0.7, d, u) for v, d, u in zip(value, down, up, strict=True)]
    assert np.allclose(pulls(0.7, value, down, up), expected)
    assert pulls(0.7, value, down, up)[0] == pytest.approx(-0.5)  # below the truth: the upper error


def test_flag_rule() -> None:
    assert not is_off(NOMINAL, 100, 1.0, 0.07)
    assert is_off(0.5, 100, 1.0, 0.07)  # 3.9 binomial σ low
    assert is_off(0.9, 100, 1.0, 0.07)  # over-coverage is off too
    assert is_off(NOMINAL, 1000, 1.3, 0.03)  # too wide
    assert not is_off(NOMINAL, 20, 1.3, 0.2)  # too few toys to tell
    assert not is_off(math.nan, 0, math.nan, math.nan)
    assert off_reasons(0.9, 100, 0.7, 0.05) == ["over_coverage", "pull_width"]
    s = summarise(0.5, np.array([0.5, 0.5, math.nan]), np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1]))
    assert s.n_failed == 1 and s.coverage == 1.0 and s.pull_width == 0.0 and not math.isfinite(s.pull_width_err)


def test_scale_factor_coverage_combines_errors_as_the_tables() -> None:
    rng = np.random.default_rng(2)
    n = 400
    d0, m0, sd, sm = 0.8, 0.9, 0.02, 0.01

    def record(e0: float, s: float) -> dict[str, Any]:
        e = rng.normal(e0, s, n)
        return {"generating_efficiency": e0, "efficiency": list(e), "err_down": [s] * n, "err_up": [s] * n}

    data, mc = record(d0, sd), record(m0, sm)
    s = sf_summary(data, mc)
    assert s is not None and within_3_sigma(s.coverage, n) and 0.85 < s.pull_width < 1.15
    inside = 0
    for d, m in zip(data["efficiency"], mc["efficiency"], strict=True):  # the tables' interval of each toy
        down, up = ratio_errors(d, sd, sd, m, sm, sm)
        inside += d / m - down <= d0 / m0 <= d / m + up
    assert s.coverage == inside / n
    assert sf_summary(data, {**mc, "efficiency": []}) is None


def test_weighted_and_unbinned_toys_keep_the_observed_yields() -> None:
    hist = fitted_bin()
    result = measure_bin("fit", GAUSS, hist=hist)
    rng = np.random.default_rng(1)
    weighted = BinHistograms(hist.edges, hist.sumw * 0.5, hist.sumw2 * 0.25, True)
    toys = toy_histograms({**result, "values": {**result["values"],
                                                **{k: result["values"][k] * 0.5 for k in
                                                   ("n_sig", "n_bkg_pass", "n_bkg_fail")}}},
                          GAUSS, weighted, 50, rng)
    totals = np.array([t.sumw.sum() for t in toys])
    assert abs(totals.mean() - weighted.sumw.sum()) < 3 * totals.std() / math.sqrt(50) + 1.0
    assert np.allclose(toys[0].sumw2, toys[0].sumw * 0.5)  # each toy candidate of weight 1/s = 0.5
    cands = BinCandidates(np.linspace(2900.0, 3299.0, 10), np.arange(10) % 2 == 0, np.ones(10), False,
                          2900.0, 3300.0)
    sets = list(toy_candidates(result, GAUSS, cands, 3, rng))
    n = np.array([c.mass.size for c in sets])
    assert np.all(np.abs(n - hist.sumw.sum()) < 5 * math.sqrt(hist.sumw.sum()))
    assert all(c.mass.min() >= 2900.0 and c.mass.max() < 3300.0 for c in sets)
    assert abs(np.mean([c.passed.sum() for c in sets]) - hist.sumw[0].sum()) < 5 * math.sqrt(hist.sumw.sum())


def test_unbinned_fit_toys_are_refitted_unbinned() -> None:
    """Candidates drawn from an unbinned fit's model go through the unbinned fit again (``cands``)."""
    rng = np.random.default_rng(4)
    sig, bkg = rng.normal(3097.0, 12.0, 3000), 2900.0 + rng.uniform(0.0, 400.0, 3000)
    mass = np.concatenate([sig, bkg])
    passed = np.concatenate([rng.random(3000) < 0.7, rng.random(3000) < 0.4])
    cands = BinCandidates(mass, passed, np.ones(mass.size), False, 2900.0, 3300.0)
    fit = GAUSS.model_copy(update={"binned": False})
    seen: list[str] = []

    def measure(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(next(iter(kwargs.keys() - {"interval"})))
        return measure_bin(*args, **kwargs)

    result = measure_bin("fit", fit, cands=cands)
    rec = bin_coverage("fit", fit, result, 4, 2, cands=cands, measure=measure)
    assert seen == ["cands"] * 4 and rec["eff_n_failed"] == 0 and sum(rec["toy_statuses"].values()) == 4


def test_bins_without_a_model_are_skipped_with_the_reason() -> None:
    rec = bin_coverage("yield", FitConfig(), {"efficiency": math.nan, "status": "ok"}, 10, 1)
    assert rec["n_toys"] == 0 and "method yield" in rec["skipped"] and not rec["eff_off"]
    rec = bin_coverage("fit", FitConfig(), {"efficiency": math.nan, "status": "empty_bin"}, 10, 1)
    assert "empty_bin" in rec["skipped"]
    rec = bin_coverage("sideband", FitConfig(), {"efficiency": 0.5, "status": "ok"}, 10, 1)  # no histograms given
    assert rec["skipped"] == "no generative model: ValueError: method sideband needs the bin's histograms"
    rec = bin_coverage("sweights", GAUSS, {"efficiency": 0.5, "status": "ok", "values": {}}, 10, 1,
                       cands=BinCandidates(np.ones(3), np.ones(3, bool), np.ones(3), True, 0.0, 2.0))
    assert "weighted candidates" in rec["skipped"]
    assert toy_seed("a") != toy_seed("b") and toy_seed("a") == toy_seed("a")


# ------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small demo run once (config path, result folder)."""
    import yaml

    from tasks.cli import main

    tmp = tmp_path_factory.mktemp("coverage")
    d = small_demo_dict()
    d["outputs"] = {"plots": False}
    cfg = tmp / "small.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(cfg), "--workers", "2", "--result-dir", str(tmp / "res"), "--quiet"]) == 0
    return cfg, tmp / "res"


def test_command_end_to_end_then_reuse(small_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from calibflow.plan import Plan
    from tasks.cli import main
    from tasks.coverage import CoverageTable
    from tasks.runner import build

    cfg, res = small_run
    args = ["coverage", str(cfg), "--toys", "6", "--workers", "2", "--result-dir", str(res), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "12 CoverageBin results" in out and "data: 6 bin(s) x 6 toys" in out
    plan = Plan.create(cfg, res).in_latest_modes(record=False)
    top = CoverageTable(toys=6, seed=1, config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file)
    folder = Path(top.output().path).parent
    assert all((folder / f).is_file() for f in (CSV, PNG, HTML, MARKDOWN))
    rows = read_csv(folder / CSV)
    assert len(rows) == 12 and {r["method"] for r in rows} == {"fit", "count"}
    assert all(r["n_toys"] == 6 for r in rows)
    data = [r for r in rows if r["sample"] == "data"]
    assert all(r["sf_mc"] == "mc" and 0 <= r["coverage_sf"] <= 1 for r in data)
    assert all(is_flagged(r) == bool(r["off_reason"]) for r in rows)
    # a rerun reuses everything; without the table, only the table is remade: no toy refitted
    text = (folder / CSV).read_text()
    (folder / CSV).unlink()
    report = build(plan, [top], 2)
    assert report.ok and report.ran["CoverageBin"] == 0 and report.ran["CoverageTable"] == 1
    assert (folder / CSV).read_text() == text
    assert main(args) == 0 and "0 task(s) run" in capsys.readouterr().out


def test_command_exit_codes(small_run: tuple[Path, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.cli import main

    cfg, res = small_run
    assert main(["coverage", str(cfg), "--toys", "0", "--result-dir", str(res)]) == 2
    assert main(["coverage", str(cfg), "--result-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "run 'calibflow run' first" in err and len(err.strip().splitlines()[-1]) > 0
    assert main(["coverage", str(tmp_path / "missing.yaml")]) == 2


def test_a_failing_bin_fails_the_command_with_exit_1(small_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import calibflow.fit.coverage
    from tasks.cli import main

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("toy generator broken")

    monkeypatch.setattr(calibflow.fit.coverage, "bin_coverage", broken)
    cfg, res = small_run
    assert main(["coverage", str(cfg), "--toys", "3", "--workers", "1", "--result-dir", str(res), "--quiet"]) == 1
    assert "toy generator broken" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ every method
def covers(rec: dict[str, Any], n: int) -> None:
    """The record of ``n`` toys covers 68.27 % within 3 binomial σ, no toy failed, pulls of unit width."""
    assert rec["skipped"] == "" and rec["eff_n_toys"] == n and rec["eff_n_failed"] == 0, rec["skipped"]
    assert within_3_sigma(rec["eff_coverage"], n), rec["eff_coverage"]
    assert 0.8 < rec["eff_pull_width"] < 1.2 and not rec["eff_off"], (rec["eff_pull_width"], rec["eff_reason"])


def test_sweighted_bin_covers() -> None:
    """Method sweighted: binomial toys of the effective counts, measured with the sWeighted (PIDCalib2) variance."""
    hist = counted_bin(5000, 3500)
    rec = bin_coverage("sweighted", FitConfig(), measure_bin("sweighted", FitConfig(), hist=hist), 300, 4, hist=hist)
    covers(rec, 300)


SIDEBAND_EDGES = np.linspace(2950.0, 3250.0, 101)


@pytest.mark.parametrize("background", ["flat", "fitted"])
def test_sideband_bin_covers(background: str) -> None:
    """A Gaussian peak on a falling background, subtracted in the windows: Poisson toys of the observed counts."""
    rng = np.random.default_rng(6)
    sig = rng.normal(3097.0, 12.0, 4000)
    bkg = 2950.0 + rng.exponential(400.0, 12000)
    bkg = bkg[bkg < 3250.0]
    h = np.zeros((2, 100))
    for m, eff in ((sig, 0.8), (bkg, 0.4)):
        passed = rng.random(m.size) < eff
        h += np.stack([np.histogram(m[passed], SIDEBAND_EDGES)[0], np.histogram(m[~passed], SIDEBAND_EDGES)[0]])
    hist = BinHistograms(SIDEBAND_EDGES, h, h.copy(), False)
    fit = FitConfig(sideband={"signal": [3070, 3124], "sidebands": [[2962, 3016], [3178, 3232]],
                              "background": background})
    result = measure_bin("sideband", fit, hist=hist)
    assert result["status"] == "ok"
    covers(bin_coverage("sideband", fit, result, 300, 2, hist=hist), 300)
    toy = next(iter(toy_sideband(hist, 1, np.random.default_rng(0))))
    assert toy.sumw.shape == hist.sumw.shape and np.all(toy.sumw[hist.sumw == 0] == 0)


def tistos_bin(n: int = 6000, weight: float | None = None, seed: int = 3) -> BinCandidates:
    """Triggered candidates: TIS with probability 0.4, TOS 0.7, independent; 5 % triggered by neither."""
    rng = np.random.default_rng(seed)
    tis, tos = rng.random(n) < 0.4, rng.random(n) < 0.7
    trig = tis | tos | (rng.random(n) < 0.05)
    tis, tos = tis[trig], tos[trig]
    k = int(trig.sum())
    w = np.full(k, weight if weight else 1.0)
    return BinCandidates(np.full(k, 3100.0), tis & tos, w, weight is not None, 2950.0, 3250.0,
                         {"tis": tis, "tos": tos, "trigger": np.ones(k, bool)})


@pytest.mark.parametrize("which, weight", [("tos", None), ("tis", None), ("trigger", None), ("tos", 0.5)])
def test_tistos_bin_covers(which: str, weight: float | None) -> None:
    """Poisson toys of the four disjoint classes, for each efficiency of the method (weighted: scaled Poisson)."""
    cands = tistos_bin(weight=weight)
    fit = FitConfig(tistos={"tis": "TIS", "tos": "TOS", "efficiency": which})
    result = measure_bin("tistos", fit, cands=cands)
    assert result["status"] == "ok"
    rec = bin_coverage("tistos", fit, result, 400, 8, cands=cands)
    covers(rec, 400)
    if weight is not None:  # each toy candidate weighs 1/s = 0.5, the class sums keep the observed scale
        toy = next(iter(toy_tistos(cands, 1, np.random.default_rng(0))))
        assert np.allclose(toy.weight, 0.5) and abs(toy.weight.sum() - cands.weight.sum()) < 5 * math.sqrt(cands.weight.size)


def test_sweights_bin_covers() -> None:
    """Method sweights: candidates of the sPlot fit's signal and background, passing with ε and the observed
    background pass fraction; every toy fitted for its sWeights again (sandwich variance)."""
    rng = np.random.default_rng(5)
    sig, bkg = rng.normal(3097.0, 12.0, 1500), 2900.0 + rng.exponential(300.0, 3000)
    bkg = bkg[bkg < 3300.0]
    mass = np.concatenate([sig, bkg])
    passed = np.concatenate([rng.random(sig.size) < 0.75, rng.random(bkg.size) < 0.3])
    cands = BinCandidates(mass, passed, np.ones(mass.size), False, 2900.0, 3300.0)
    result = measure_bin("sweights", GAUSS, cands=cands)
    assert result["status"] == "ok"
    toys = list(toy_sweights(result, GAUSS, cands, 20, np.random.default_rng(1)))
    n_pass = np.mean([t.passed.sum() for t in toys])
    assert abs(n_pass - passed.sum()) < 4 * math.sqrt(passed.sum() / 20)  # the background pass fraction kept
    covers(bin_coverage("sweights", GAUSS, result, 150, 3, cands=cands), 150)


def _template_bin(seed: int = 4) -> tuple[BinHistograms, BinHistograms]:
    """(data, simulation) histograms: a radiative-tail peak (simulation: 100k pass, 50k fail) and in the data the
    same peak smeared by 3 MeV, ε = 0.8, on exponential backgrounds."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(2950.0, 3250.0, 101)

    def peak(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.75, rng.normal(3097.0, 9.0, n), 3097.0 - rng.exponential(30.0, n))

    mc = np.stack([np.histogram(peak(k), edges)[0] for k in (100_000, 50_000)]).astype(float)
    sig = peak(8000) + rng.normal(0.0, 3.0, 8000)
    passed = rng.random(8000) < 0.8
    data = np.stack([np.histogram(np.concatenate([sig[passed], 2950.0 + rng.exponential(250.0, 2000)]), edges)[0],
                     np.histogram(np.concatenate([sig[~passed], 2950.0 + rng.exponential(150.0, 4000)]), edges)[0]])
    return BinHistograms(edges, data.astype(float), data.astype(float), False), BinHistograms(edges, mc, mc.copy(), False)


def test_template_fit_covers() -> None:
    """fit.signal template: toys from the fitted model with the bin's templates, refitted with the same templates."""
    hist, mc = _template_bin()
    fit = FitConfig(signal="template", background="exponential", template={"from": "mc"})
    reference = {"template": mc}
    result = measure_bin("fit", fit, hist=hist, reference=reference)
    assert result["status"] == "ok"
    seen: list[bool] = []

    def measure(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs.get("reference") is reference)
        return measure_bin(*args, **kwargs)

    rec = bin_coverage("fit", fit, result, 150, 6, hist=hist, reference=reference, measure=measure)
    assert all(seen) and len(seen) == 150
    covers(rec, 150)


def test_constrained_fit_covers() -> None:
    """fit.constrain: the toys are refitted with the same constraint (centre and width of the simulation fit)."""
    hist = fitted_bin(seed=9, n_sig=6000)
    mc = fitted_bin(seed=10, n_sig=40000)
    simulation = measure_bin("fit", GAUSS, hist=mc)
    fit = GAUSS.model_copy(update={"constrain": ConstrainConfig(**{"from": "mc", "parameters": ["sigma"]})})
    reference = {"constraint": simulation}
    result = measure_bin("fit", fit, hist=hist, reference=reference)
    assert result["status"] == "ok" and "sigma" in result["constraints"]
    covers(bin_coverage("fit", fit, result, 200, 7, hist=hist, reference=reference), 200)


# ------------------------------------------------------------------------------------------ the tables
def _record(eff0: float, values: list[float], err: float) -> dict[str, Any]:
    n = len(values)
    rec = {"generating_efficiency": eff0, "efficiency": values, "err_down": [err] * n, "err_up": [err] * n,
           "skipped": ""}
    return {**rec, **summarise(eff0, np.array(values), np.full(n, err), np.full(n, err)).to_dict("eff_")}


def test_table_columns_and_flags() -> None:
    """Coverage columns in both tables; coverage_off in fit_status (ε) and as a status part (scale factor)."""
    from calibflow.tables.coverage import COLUMNS, add_efficiency_coverage, add_scale_factor_coverage
    from calibflow.tables.rows import scale_factor_rows

    rng = np.random.default_rng(3)
    good = list(rng.normal(0.8, 0.02, 400))
    narrow = list(rng.normal(0.9, 0.02, 400))  # errors of 0.01 for a spread of 0.02: under-covering
    records = {("data", 0): _record(0.8, good, 0.02), ("mc", 0): _record(0.9, narrow, 0.01),
               ("data", 1): {**_record(0.8, [], 0.02), "eff_n_toys": 0, "skipped": "method yield"}}
    eff = [{"sample": s, "bin": b, "efficiency": e, "err_down": 0.02, "err_up": 0.02, "fit_status": st}
           for s, b, e, st in (("data", 0, 0.8, "ok"), ("mc", 0, 0.9, "chi2"), ("data", 1, 0.8, "ok"),
                               ("mc", 1, 0.9, "ok"))]
    add_efficiency_coverage(eff, records)
    assert all(set(COLUMNS) <= r.keys() for r in eff)
    assert eff[0]["fit_status"] == "ok" and within_3_sigma(eff[0]["coverage"], 400)
    assert eff[1]["fit_status"] == "chi2,coverage_off:under_coverage+pull_width" and eff[1]["coverage_toys"] == 400
    assert eff[2]["coverage_toys"] == 0 and math.isnan(eff[2]["coverage"]) and eff[3]["coverage_toys"] == 0
    sf = scale_factor_rows(eff, "data", "mc")
    add_scale_factor_coverage(sf, records)
    assert sf[0]["status"].startswith("ok|chi2,coverage_off:under_coverage")  # the simulation's ε flag
    assert sf[0]["status"].endswith("|coverage_off:sf_under_coverage+sf_pull_width") and sf[0]["coverage"] < 0.6
    assert sf[1]["status"] == "ok" and sf[1]["coverage_toys"] == 0
    from calibflow.export.coverage import off_reasons_of, table_rows

    assert off_reasons_of(sf[0]["status"], scale_factor=True) == ["sf_under_coverage", "sf_pull_width"]
    assert off_reasons_of(sf[0]["status"]) == ["under_coverage", "pull_width"]
    rows = table_rows(eff, sf)
    assert [r["sample"] for r in rows] == ["ε data", "ε mc", "ε data", "ε mc", "scale factor data/mc",
                                          "scale factor data/mc"]
    assert [r["coverage_off"] for r in rows] == [False, True, False, False, True, False]


def test_coverage_keys_only_where_set(tmp_path: Path) -> None:
    """Without coverage the table key is that of a config without the section; with it, only the nominal
    table key (and what follows from it) changes, never a fit key."""
    import yaml

    from calibflow.plan import Plan

    d = small_demo_dict()
    d["working_points"] = {"tight": "probe_score > 0.5"}
    keys = {}
    for name, extra in (("plain", {}), ("with", {"coverage": {"toys": 50}}), ("seed", {"coverage": {"toys": 50,
                                                                                                  "seed": 2}})):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({**d, **extra}, sort_keys=False))
        plan = Plan.create(cfg, tmp_path / "res")
        wp = plan.with_variant(plan.all_variants()[0])
        keys[name] = (plan.table_key(), wp.table_key(), plan.fit_key("data", "b"), plan.coverage())
    assert keys["plain"][3] is None and keys["with"][3].toys == 50
    assert len({keys[n][0] for n in keys}) == 3  # nominal tables: toys and seed in the key
    assert len({keys[n][1] for n in keys}) == 1 and len({keys[n][2] for n in keys}) == 1  # working point, fits


# ------------------------------------------------------------------------------------------ calibflow run
@pytest.fixture(scope="module")
def run_with_coverage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small demo with ``coverage: {toys: 6}``, run once (config path, published folder)."""
    import yaml

    from tasks.cli import main

    tmp = tmp_path_factory.mktemp("run_coverage")
    d = small_demo_dict()
    d["coverage"] = {"toys": 6}
    cfg = tmp / "small.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(cfg), "--workers", "2", "--result-dir", str(tmp / "res"), "--quiet"]) == 0
    return cfg, tmp / "res" / "small_demo"


def test_run_with_coverage_fills_tables_and_report(run_with_coverage: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from calibflow.tables.coverage import COLUMNS
    from tasks.cli import main

    cfg, out = run_with_coverage
    eff, sf = read_csv(out / "efficiencies.csv"), read_csv(out / "scale_factors.csv")
    assert len(eff) == 12 and all(r["coverage_toys"] == 6 and set(COLUMNS) <= r.keys() for r in eff)
    assert all(0 <= r["coverage"] <= 1 for r in eff) and all(r["coverage_toys"] == 6 for r in sf)
    off = [r for r in eff if "coverage_off:" in str(r["fit_status"])]
    assert all(r["coverage"] < 0.3 or r["coverage"] == 1 or r["coverage_pull_width"] > 1.2
               or r["coverage_pull_width"] < 0.8 for r in off)
    import json

    master = json.loads((out / "calibration.json").read_text())
    assert "coverage" in master["tables"]["efficiencies"][0]
    page = (out / "report.html").read_text()
    section = page[page.index('<section id="coverage">'):]
    section = section[: section.index("</section>")]
    assert "data: 6 bin(s) x 6 toys" in section and "scale factor data/mc" in section
    assert "plots/coverage.png" in section and (out / "plots" / "coverage.png").is_file()
    assert "## Coverage" in (out / "report.md").read_text()
    capsys.readouterr()  # a rerun (nothing to do) closes with the coverage lines
    assert main(["run", str(cfg), "--workers", "1", "--result-dir", str(out.parent), "--quiet"]) == 0
    closing = capsys.readouterr().out
    assert "coverage of the ±1σ intervals by toys" in closing and "  ε mc: 6 bin(s) x 6 toys" in closing
    # calibflow coverage takes the config's toys and seed: the run's records, no toy made again
    from calibflow.plan import Plan
    from tasks.coverage import CoverageTable
    from tasks.runner import build

    plan = Plan.create(cfg, out.parent).in_latest_modes(record=False)
    top = CoverageTable(toys=6, seed=1, config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file)
    report = build(plan, [top], 1)
    assert report.ok and report.ran["CoverageBin"] == 0 and report.ran["CoverageTable"] == 1
    capsys.readouterr()
    assert main(["coverage", str(cfg), "--workers", "1", "--result-dir", str(out.parent), "--quiet"]) == 0
    assert "data: 6 bin(s) x 6 toys" in capsys.readouterr().out


def test_report_without_coverage_says_how(small_run: tuple[Path, Path]) -> None:
    _, res = small_run
    page = (res / "small_demo" / "report.html").read_text()
    section = page[page.index('<section id="coverage">'):]
    assert "no coverage columns (set coverage: {toys: N}" in section[: section.index("</section>")]
    assert "coverage" not in read_csv(res / "small_demo" / "efficiencies.csv")[0]


def test_run_covers_template_and_constrained_fits(tmp_path: Path) -> None:
    """Through the graph: CoverageBin passes each data bin's templates and constraint fit to its toys' fits."""
    import yaml

    from tasks.cli import main

    d = small_demo_dict()
    d["fit"] = {"signal": "template", "background": "exponential", "template": {"from": "mc"},
                "constrain": {"from": "mc", "parameters": ["smear_fail"]}}
    d["outputs"]["plots"] = False
    d["coverage"] = {"toys": 4}
    cfg = tmp_path / "template.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(cfg), "--workers", "2", "--result-dir", str(tmp_path / "res"), "--quiet"]) == 0
    data = [r for r in read_csv(tmp_path / "res" / "small_demo" / "efficiencies.csv") if r["sample"] == "data"]
    assert len(data) == 6 and all(r["coverage_toys"] == 4 and r["coverage_failed"] == 0 for r in data)
