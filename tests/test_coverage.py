"""Coverage of the per-bin intervals (issue 18 item 6): toys of a known model cover 68.3 %, an under-covering
procedure is flagged, the scale-factor coverage pairs the toys as the tables combine errors, and
``calibflow coverage`` runs end to end on the small demo, reuses its records and exits 0/1/2."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibflow.config import FitConfig
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


def test_methods_without_a_model_are_skipped_with_the_reason() -> None:
    rec = bin_coverage("sideband", FitConfig(), {"efficiency": 0.5, "status": "ok"}, 10, 1)
    assert rec["n_toys"] == 0 and "sideband" in rec["skipped"] and not rec["eff_off"]
    rec = bin_coverage("fit", FitConfig(), {"efficiency": math.nan, "status": "empty_bin"}, 10, 1)
    assert "empty_bin" in rec["skipped"]
    template = FitConfig.model_construct(**{**dict(FitConfig()), "signal": "template"})
    assert "template" in bin_coverage("fit", template, {"efficiency": 0.5, "status": "ok"}, 10, 1)["skipped"]
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
