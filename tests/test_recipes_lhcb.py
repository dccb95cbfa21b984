"""LHCb tracking recipe (task_configs/lhcb_tracking_jpsi.yaml): the ``hit_match`` preparation feature against
the shared-hit kernel's python reference, the toy's truth, and the recipe end to end on its toy (closure,
exact simulation counts, products of methods).

Closure (issue #8): the three methods' 2-D tables are measured on disjoint candidates, so their pulls are
independent; pooled they are ≥ 150 and must pass the strict bands of :func:`tests.recipe_helpers.assert_closes`
(|mean| < 0.2, width in [0.8, 1.2]), the data fits alone as well as with the counted simulation. The 1-D tables
re-bin the same candidates: pooled over the methods, each binning is held to the bands widened by 2/√N.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from calibflow.config import ConfigError, parse_config
from calibflow.expr import ExprError
from calibflow.io.store import read_columns
from calibflow.kernels.matching import shared_fraction_match_reference
from calibflow.kernels.pairing import offsets_from_counts
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import PASS, prep_key, prep_spec
from calibflow.prep.steps import shared_hit_fraction
from calibflow.tables.rows import read_csv
from calibflow.toys.lhcb import generate_tracking, match_probability, min_shared
from calibflow.toys.nanoaod import write_tree

from .conftest import ROOT
from .recipe_helpers import assert_closes, assert_closes_widened, recipe

RECIPES = ROOT / "task_configs"
OFF = {k: False for k in ("correctionlib", "root", "markdown", "latex", "plots", "report")}


# --- helpers shared with tests/test_recipes_cms.py ------------------------------------------------------
recipe_dict = recipe
"""A shipped recipe as a dict (fresh copy), its relative lumi masks made absolute."""


def run_recipe(d: Mapping[str, Any], folder: Path) -> Path:
    """Run the config ``d`` with one worker (fastest on a loaded machine) and return its output folder."""
    from tasks.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(dict(d), sort_keys=False))
    assert main(["run", str(path), "--workers", "1", "--result-dir", str(folder / "results"), "--quiet"]) == 0
    return folder / "results" / d["name"]


def efficiency_pulls(path: Path, samples: Sequence[str] | None = None) -> np.ndarray:
    """The efficiency pulls of a closure.csv (of ``samples`` only, if given)."""
    return np.array([r["pull"] for r in read_csv(path)
                     if r["quantity"] == "efficiency" and (samples is None or r["sample"] in samples)], dtype=float)


def bin_index(rows: Sequence[Mapping[str, Any]], values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bin of every entry of ``values`` (name -> array) given the bounds ``<name>_lo/_hi`` of the table rows of
    one sample (half-open intervals); -1 outside every bin."""
    n = len(next(iter(values.values())))
    out = np.full(n, -1)
    for r in rows:
        inside = np.ones(n, bool)
        for name, v in values.items():
            inside &= (v >= r[f"{name}_lo"]) & (v < r[f"{name}_hi"])
        out[inside] = r["bin"]
    return out


def assert_counts(table: Sequence[Mapping[str, Any]], sample: str, values: Mapping[str, np.ndarray],
                  passed: np.ndarray) -> None:
    """The table's n_pass and n_fail of ``sample`` equal the counts of ``passed`` per bin of ``values``."""
    rows = [r for r in table if r["sample"] == sample]
    index = bin_index(rows, values)
    for r in rows:
        sel = index == r["bin"]
        assert (r["n_pass"], r["n_fail"]) == (int(passed[sel].sum()), int((~passed[sel]).sum())), (sample, r["bin"])
        assert r["efficiency"] == pytest.approx(passed[sel].mean(), rel=1e-12)


# --- hit_match: shared-hit fractions against the kernel's python reference ------------------------------
def random_hits(rng: np.random.Generator, rows: int) -> tuple[ak.Array, ak.Array, ak.Array]:
    """Per row: probe hit IDs (with duplicates and empty probes), the targets' hits concatenated and the
    hits per target track (rows without targets included); IDs drawn from a small range so that they share."""
    n_probe = rng.integers(0, 8, rows)
    n_tracks = rng.integers(0, 4, rows)
    per_track = rng.integers(0, 9, int(n_tracks.sum()))
    probe = ak.unflatten(rng.integers(0, 12, int(n_probe.sum())).astype(np.int32), n_probe)
    hits_per_row = np.diff(np.concatenate([[0], np.cumsum(per_track)])[offsets_from_counts(n_tracks)])
    target = ak.unflatten(rng.integers(0, 12, int(per_track.sum())).astype(np.int32), hits_per_row)
    return probe, target, ak.unflatten(per_track.astype(np.int32), n_tracks)


def reference_fraction(probe: ak.Array, target: ak.Array, counts: ak.Array) -> np.ndarray:
    """Shared fraction per row by the plain-python reference kernel (one probe per row)."""
    flat_counts = ak.to_numpy(ak.flatten(counts))
    _, fraction = shared_fraction_match_reference(
        np.arange(len(probe) + 1), offsets_from_counts(ak.to_numpy(ak.num(probe))), ak.to_numpy(ak.flatten(probe)),
        offsets_from_counts(ak.to_numpy(ak.num(counts))), offsets_from_counts(flat_counts),
        ak.to_numpy(ak.flatten(target)), 0.0)
    return fraction


def test_shared_hit_fraction_matches_reference() -> None:
    probe, target, counts = random_hits(np.random.default_rng(1), 3000)
    want = reference_fraction(probe, target, counts)
    got = shared_hit_fraction(probe, target, counts)
    assert np.array_equal(got, want)
    assert 0 < np.count_nonzero(want == 0) < len(want) and np.any(want == 1.0)  # the cases are all there
    # doubly jagged targets (one list per track) give the same
    nested = ak.unflatten(ak.flatten(target), ak.flatten(counts), axis=0)
    assert np.array_equal(shared_hit_fraction(probe, ak.unflatten(nested, ak.num(counts)), None), want)


def test_shared_hit_fraction_checks_its_inputs() -> None:
    probe, target, counts = random_hits(np.random.default_rng(2), 50)
    bad = ak.Array([[*c, 1] if len(c) else [1] for c in ak.to_list(counts)])
    with pytest.raises(ExprError, match=r"hit_match\[3\]: target_counts do not add up"):
        shared_hit_fraction(probe, target, bad, where="hit_match[3]")
    with pytest.raises(ExprError, match="must be doubly jagged"):
        shared_hit_fraction(probe, target, None)


def hit_config(extra_cuts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A flat-ntuple config with a hit match; the fraction is also a binning column (to compare it)."""
    return {
        "name": "hits",
        "samples": {"d": {"role": "data", "files": ["hits.root"], "tree": "T", "method": "count"}},
        "hit_match": [{"probe_hits": "probe_hitIDs", "target_hits": "long_hitIDs", "target_counts": "long_nHits",
                       "as": "probe_matchFraction"}],
        "selection": dict(extra_cuts or {}),
        "pass": "probe_matchFraction >= 0.5",
        "binning": {"variables": [{"name": "frac", "expression": "probe_matchFraction", "edges": [0, 1.01]},
                                  {"name": "x", "edges": [0, 1]}]},
    }


@pytest.fixture(scope="module")
def hit_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    rng = np.random.default_rng(3)
    probe, target, counts = random_hits(rng, 4000)
    branches = {"x": rng.uniform(0, 1, 4000), "probe_hitIDs": probe, "long_hitIDs": target,
                "long": ak.zip({"nHits": counts}), "unused": rng.normal(size=4000)}
    folder = tmp_path_factory.mktemp("hits")
    write_tree(folder / "hits.root", branches, "T", basket_rows=1500)
    return folder, {"x": branches["x"], "fraction": reference_fraction(probe, target, counts)}


@pytest.mark.parametrize("cuts", [{}, {"probe": "x > 0.3"}, {"probe": "x > 0.3", "pair": "probe_matchFraction > 0.2"}])
def test_prepare_flat_ntuple_with_hit_match(hit_file, tmp_path: Path, cuts: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The prepared fraction and pass column equal the reference on every kept row; a stage before the first
    one reading the fraction restricts the kernel's work to its survivors without changing the result."""
    folder, ref = hit_file
    spec = prep_spec(parse_config(hit_config(cuts)), "d", str(folder))
    assert spec.branches == ["long_hitIDs", "long_nHits", "probe_hitIDs", "x"]
    assert spec.first_hit_match_stage == (1 if "pair" in cuts else len(cuts))
    from calibflow.prep import steps

    seen: list[int] = []
    original = steps.shared_hit_fraction
    monkeypatch.setattr(steps, "shared_hit_fraction", lambda p, *a, **k: seen.append(len(p)) or original(p, *a, **k))
    flow = prepare_file(str(folder / "hits.root"), spec, str(tmp_path / "out.h5"), step_size=1000)
    keep = ref["x"] > 0.3 if cuts else np.ones(4000, bool)
    assert sum(seen) == keep.sum()  # only rows surviving the stages before the fraction is needed
    keep &= ref["fraction"] > 0.2 if "pair" in cuts else True
    got = read_columns(tmp_path / "out.h5")
    assert flow["read"] == 4000 and len(got["frac"]) == keep.sum()
    assert np.array_equal(got["frac"], ref["fraction"][keep])
    assert np.array_equal(got[PASS], ref["fraction"][keep] >= 0.5)


def test_hit_match_config_errors_and_key() -> None:
    d = hit_config()
    key = prep_key(prep_spec(parse_config(d), "d"), __file__)
    d2 = copy.deepcopy(d)
    d2["hit_match"][0]["as"] = "probe_frac2"
    d2["pass"] = "probe_frac2 >= 0.5"
    d2["binning"]["variables"][0]["expression"] = "probe_frac2"
    assert prep_key(prep_spec(parse_config(d2), "d"), __file__) != key
    d2["hit_match"].append(dict(d2["hit_match"][0]))
    with pytest.raises(ConfigError, match=r"hit_match\[1\]\.as: 'probe_frac2' is given twice"):
        parse_config(d2)
    d["pairing"] = {"collection": "Muon", "tag": "Muon_pt > 1", "probe": "Muon_pt > 1"}
    with pytest.raises(ConfigError, match="hit_match: works on flat ntuples"):
        parse_config(d)
    d = hit_config()
    d["hit_match"][0]["oops"] = 1
    with pytest.raises(ConfigError, match=r"hit_match\[0\]\.oops: unknown key"):
        parse_config(d)


# --- the toy ------------------------------------------------------------------------------------------
def test_min_shared_follows_the_floating_point_cut() -> None:
    n = np.arange(1, 40)
    k = min_shared(n, 0.7)
    assert np.all(k / n >= 0.7) and np.all((k - 1) / n < 0.7)
    assert min_shared(np.array([10]), 0.7)[0] == 7  # 0.7 * 10 = 7.000000000000001 in floating point
    assert match_probability(np.array([5]), 0.9, 0.7)[0] == pytest.approx(0.9**5 + 5 * 0.9**4 * 0.1)


def test_toy_truth_is_the_pass_probability() -> None:
    """Per method, the fraction of signal probes passing the nominal cut (shared fraction >= 0.7 by the python
    reference) agrees with the mean stored truth within 3 standard errors."""
    b = generate_tracking(6000, True, np.random.default_rng(7), 0.7)
    fraction = reference_fraction(b["probe_hitIDs"], b["long_hitIDs"], b["long"].nHits)
    passed = fraction >= 0.7
    for method in (1, 2, 3):
        sel = (b["probe_type"] == method) & (b["toy_is_signal"] == 1)
        truth = b["toy_true_eff"][sel]
        assert abs(passed[sel].mean() - truth.mean()) < 3 * math.sqrt((truth * (1 - truth)).sum()) / sel.sum()
    i = np.flatnonzero(np.diff(b["eventNumber"]) == 0)[0]  # rows of one event carry the same long tracks
    assert ak.to_list(b["long_hitIDs"][i]) == ak.to_list(b["long_hitIDs"][i + 1])


# --- the recipe, end to end -------------------------------------------------------------------------------
CI_P = [5, 12, 17, 24, 35, 200]
CI_ETA = [1.9, 2.65, 3.05, 3.45, 3.9, 4.9]
"""CI binning (GeV, η): 5 x 5 bins of about equal population, so the three methods' 2-D tables give 2 x 3 x 25 =
150 data pulls (plus 75 counted simulation pulls) for the strict closure bands."""
CI_BINS = (len(CI_P) - 1) * (len(CI_ETA) - 1)
DATA = ("data_block1", "data_block2")
METHODS = ("VeloMuon", "Downstream", "MuonUT")


def small_tracking_recipe() -> dict[str, Any]:
    """The recipe at CI size: 2-D bins 5 x 5 (none merged: >= 5 simulated failing probes in each), 1-D binnings
    of 3 and 2 bins, about 800 data candidates per method, block and 2-D bin, no exports."""
    d = recipe_dict("lhcb_tracking_jpsi")
    d["toy"]["samples"] = {"data_block1": {"candidates": 120000}, "data_block2": {"candidates": 120000},
                           "mc": {"candidates": 60000}}
    d["binning"]["variables"][0]["edges"], d["binning"]["variables"][1]["edges"] = CI_P, CI_ETA
    d["binning"]["optimise"].update(min_count=5, max_intervals={"eta": len(CI_ETA) - 1})
    for name, override in d["methods"].items():
        if name.endswith("_vs_p"):
            override["binning"]["variables"][0]["edges"] = [5, 12, 24, 200]
        if name.endswith("_vs_eta"):
            override["binning"]["variables"][1]["edges"] = [1.9, 3.05, 4.9]
    d["fit"]["plots"] = "none"
    d["outputs"] = {**OFF, "correctionlib": True}
    return d


@pytest.fixture(scope="module")
def tracking_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(small_tracking_recipe(), tmp_path_factory.mktemp("lhcb"))


def test_recipe_closure(tracking_run: Path) -> None:
    """Strict closure of the 2-D tables pooled over methods (data fits alone, and with the simulation counts);
    the 1-D tables, which re-bin the same candidates, pooled over methods within the bands widened by 2/√N."""
    tables = [tracking_run / "methods" / m / "closure.csv" for m in METHODS]
    for table in tables:
        assert len(efficiency_pulls(table)) == 3 * CI_BINS, table  # no bin merged, none lost
    assert_closes(np.concatenate([efficiency_pulls(t, DATA) for t in tables]))
    assert_closes(np.concatenate([efficiency_pulls(t) for t in tables]))
    for suffix in ("_vs_p", "_vs_eta"):
        assert_closes_widened(np.concatenate([efficiency_pulls(tracking_run / "methods" / f"{m}{suffix}" / "closure.csv")
                                              for m in METHODS]))
    assert np.array_equal(efficiency_pulls(tracking_run / "closure.csv"), efficiency_pulls(tables[0]))


def test_recipe_fits_converge(tracking_run: Path) -> None:
    """Nearly every data fit is clean (valid minimum, accurate covariance, MINOS, no parameter at a limit)."""
    rows = [r for m in METHODS for r in read_csv(tracking_run / "methods" / m / "efficiencies.csv")
            if r["sample"] in DATA]
    assert len(rows) == 2 * 3 * CI_BINS
    assert sum(r["fit_status"] == "ok" for r in rows) >= 0.95 * len(rows)


def mc_reference(run: Path, method: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Independent selection of the simulation file for one method: (p [GeV], eta) and the pass decision
    from the python reference kernel, for the candidates in the mass window."""
    (path,) = (run / "inputs").glob("mc_0-*.root")
    a = uproot.open(path)["DecayTree"].arrays(library="ak")
    p, eta, m = ak.to_numpy(a.probe_P) / 1000, ak.to_numpy(a.probe_ETA), ak.to_numpy(a.J_psi_1S_M)
    sel = ((ak.to_numpy(a.tag_P) > 5000) & (ak.to_numpy(a.tag_PT) > 1000) & (ak.to_numpy(a.tag_isMuon) == 1)
           & (ak.to_numpy(a.probe_type) == method) & (p > 5) & (p < 200) & (eta > 1.9) & (eta < 4.9)
           & (ak.to_numpy(a.J_psi_1S_BKGCAT) == 0) & (m >= 2700) & (m < 3500))
    a = a[sel]
    fraction = reference_fraction(a.probe_hitIDs, a.long_hitIDs, a.long_nHits)
    return {"p": p[sel], "eta": eta[sel]}, fraction >= 0.7


@pytest.mark.parametrize(("method", "code"), [("VeloMuon", 1), ("Downstream_vs_p", 2), ("MuonUT_vs_eta", 3)])
def test_recipe_simulation_counts_are_exact(tracking_run: Path, method: str, code: int) -> None:
    values, passed = mc_reference(tracking_run, code)
    assert_counts(read_csv(tracking_run / "methods" / method / "efficiencies.csv"), "mc", values, passed)


def test_recipe_products_and_blocks(tracking_run: Path) -> None:
    """Long = VeloMuon x Downstream bin by bin (efficiencies and scale factors of both blocks); block 2 has the
    lower true VELO efficiency, which the Downstream measurement sees."""
    for table, value, key in (("efficiencies.csv", "efficiency", "sample"),
                              ("scale_factors.csv", "scale_factor", "data")):
        for suffix in ("", "_vs_p", "_vs_eta"):
            prod = read_csv(tracking_run / "methods" / f"Long{suffix}" / table)
            velo = {(r[key], r["bin"]): r for r in read_csv(tracking_run / "methods" / f"VeloMuon{suffix}" / table)}
            down = {(r[key], r["bin"]): r for r in read_csv(tracking_run / "methods" / f"Downstream{suffix}" / table)}
            assert len(prod) == len(velo) > 0
            for r in prod:
                v, d = velo[(r[key], r["bin"])], down[(r[key], r["bin"])]
                assert r[value] == pytest.approx(v[value] * d[value], rel=1e-12)
    sfs = read_csv(tracking_run / "methods" / "Long" / "scale_factors.csv")
    assert {r["data"] for r in sfs} == {"data_block1", "data_block2"} and {r["mc"] for r in sfs} == {"mc"}
    truth = read_csv(tracking_run / "methods" / "Downstream_vs_eta" / "closure.csv")
    measured = read_csv(tracking_run / "methods" / "Downstream_vs_eta" / "efficiencies.csv")

    def mean(rows: list[dict[str, Any]], sample: str, col: str) -> float:
        return float(np.mean([r[col] for r in rows if r["sample"] == sample]))

    assert mean(truth, "data_block2", "true") / mean(truth, "data_block1", "true") == pytest.approx(0.96, abs=0.005)
    assert mean(measured, "data_block2", "efficiency") < mean(measured, "data_block1", "efficiency")
    flow = {r["stage"]: r["entries"] for r in read_csv(tracking_run / "cutflow_data_block1.csv")}
    assert flow["read"] == 120000 and 0.2 < flow["sample"] / flow["probe"] < 0.8  # half the runs are block 1


def test_shipped_recipe_is_valid() -> None:
    """The shipped recipe parses, every variant resolves and the toy generator exists (no run)."""
    from calibflow.plan import Plan

    cfg = parse_config(recipe_dict("lhcb_tracking_jpsi"))
    methods = ("VeloMuon", "Downstream", "MuonUT")
    assert set(cfg.methods) == {f"{m}{s}" for m in methods for s in ("", "_vs_p", "_vs_eta")}
    assert cfg.products["Long"] == ["VeloMuon", "Downstream"]
    assert cfg.toy is not None and cfg.toy.options["match_threshold"] == 0.7
    assert Plan.create(RECIPES / "lhcb_tracking_jpsi.yaml", "/nonexistent/results").all_variants()

