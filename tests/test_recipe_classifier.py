"""classifier_wp recipe end to end on its CI-size toy: exact counts against numpy, closure, ROC, purity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.tables.rows import read_csv

from .recipe_helpers import (
    assert_closes,
    bin_index,
    efficiencies,
    pulls,
    recipe,
    run,
    shrink,
    strictly_decreasing,
    toy_inputs,
)

EDGES = {"pt": [0.5, 0.8, 1.2, 1.7, 2.5, 3.5, 5.0, 8.0, 15.0, 50.0],  # 9 x 9 bins: 162 closure pulls
         "eta": [-2.5, -1.8, -1.2, -0.6, -0.2, 0.2, 0.6, 1.2, 1.8, 2.5]}
N_BINS = 81
CUTS = {"loose": 0.2, "medium": 0.5, "tight": 0.8, "very_tight": 0.95}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = shrink(recipe("classifier_wp"), {"signal": 60000, "background": 60000}, EDGES)
    return run(d, tmp_path_factory.mktemp("classifier"))


def _numpy_counts(out: Path, sample: str, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """(passing, total) per bin of ``sample`` counted directly in its generated file."""
    with uproot.open(toy_inputs(out, sample)[0]) as f:
        t = f["tracks"].arrays(["trk_pt", "trk_eta", "trk_score", "trk_nHits", "trk_isMatched"], library="np")
    keep = (t["trk_pt"] > 0.5) & (np.abs(t["trk_eta"]) < 2.5) & (t["trk_nHits"] >= 5)
    keep &= t["trk_isMatched"] == (1 if sample == "signal" else 0)
    idx = bin_index([EDGES["pt"], EDGES["eta"]], [t["trk_pt"], t["trk_eta"]])
    keep &= idx >= 0
    n_bins = (len(EDGES["pt"]) - 1) * (len(EDGES["eta"]) - 1)
    total = np.bincount(idx[keep], minlength=n_bins)
    passing = np.bincount(idx[keep & (t["trk_score"] > cut)], minlength=n_bins)
    return passing, total


@pytest.mark.parametrize("wp", sorted(CUTS))
def test_counts_equal_numpy(out: Path, wp: str) -> None:
    eff = efficiencies(out, wp)
    for sample in ("signal", "background"):
        passing, total = _numpy_counts(out, sample, CUTS[wp])
        for b in range(len(total)):
            r = eff[(sample, b)]
            assert (r["n_pass"], r["n_pass"] + r["n_fail"]) == (passing[b], total[b]), (sample, wp, b)
            assert r["efficiency"] == pytest.approx(passing[b] / total[b], rel=1e-12)


def test_closure_of_nominal_cut(out: Path) -> None:
    p = pulls(out)
    assert p.size == 2 * N_BINS
    assert_closes(p)


def test_closure_only_for_the_nominal_cut(out: Path) -> None:
    """The toy truth is the pass probability of the nominal cut: working points get no closure table."""
    assert (out / "closure.csv").exists()
    assert not any((out / "wp" / wp / "closure.csv").exists() for wp in CUTS)


def test_roc_tighter_is_lower_for_both_classes(out: Path) -> None:
    roc = read_csv(out / "roc.csv")
    order = sorted(CUTS, key=CUTS.get)
    for b in sorted({r["bin"] for r in roc}, key=str):
        rows = {r["working_point"]: r for r in roc if r["bin"] == b}
        for key in ("eff_signal", "eff_background"):
            values = [rows[wp][key] for wp in order]
            # per bin a tight cut can leave no background (ties at 0); integrated, strictly lower
            ok = strictly_decreasing(values) if b == "inclusive" else values == sorted(values, reverse=True)
            assert ok and values[0] > values[-1], (b, key, values)


def test_purity_rises_with_the_cut(out: Path) -> None:
    """Purity n_pass(signal)/(n_pass(signal) + n_pass(background)) from the tables, integrated over bins."""
    purity = []
    for wp in sorted(CUTS, key=CUTS.get):
        eff = efficiencies(out, wp)
        s = sum(r["n_pass"] for (smp, _), r in eff.items() if smp == "signal")
        b = sum(r["n_pass"] for (smp, _), r in eff.items() if smp == "background")
        ps, _ = _numpy_counts(out, "signal", CUTS[wp])
        pb, _ = _numpy_counts(out, "background", CUTS[wp])
        assert s / (s + b) == pytest.approx(ps.sum() / (ps.sum() + pb.sum()), rel=1e-12)
        purity.append(s / (s + b))
    assert strictly_decreasing(purity[::-1]), purity
    assert purity[-1] > 0.95
