"""CMS NanoAOD recipes on their toys: muon ID/isolation with Z -> mu mu tag-and-probe (task_configs/
cms_muon_id_z.yaml) and the e-mu trigger efficiency of the H -> WW selection (task_configs/
cms_emu_trigger.yaml). Closure (issue #8): the strict bands of :func:`tests.recipe_helpers.assert_closes` on
>= 150 independent efficiency pulls per recipe; counted samples are checked exactly against an independent
awkward computation on the generated files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import awkward as ak
import correctionlib
import numpy as np
import pytest
import uproot

from calibflow.tables.rows import read_csv
from calibflow.toys.nanoaod import EMU_PATHS, REFERENCE_TRIGGER, RUNS

from .recipe_helpers import assert_closes, assert_closes_widened
from .test_recipes_lhcb import (
    OFF,
    RECIPES,
    assert_counts,
    bin_index,
    efficiency_pulls,
    recipe_dict,
    run_recipe,
)

GOLDEN = json.loads((RECIPES / "data" / "Cert_toy_golden.json").read_text())


def events(run: Path, sample: str) -> ak.Array:
    """Every event of the generated files of ``sample`` (all branches)."""
    return ak.concatenate([uproot.open(p)["Events"].arrays(library="ak")
                           for p in sorted((run / "inputs").glob(f"{sample}_*.root"))])


def certified(a: ak.Array) -> np.ndarray:
    """Events in the shipped golden JSON (plain python)."""
    return np.array([any(lo <= lumi <= hi for lo, hi in GOLDEN.get(str(r), []))
                     for r, lumi in zip(ak.to_list(a.run), ak.to_list(a.luminosityBlock), strict=True)])


def test_golden_json_covers_part_of_the_toy_runs() -> None:
    assert set(GOLDEN) < {str(r) for r in RUNS}  # one run is not certified at all, two only in part
    assert sum(hi - lo + 1 for ranges in GOLDEN.values() for lo, hi in ranges) < 3 * 200


# --- Z -> mu mu muon ID and isolation ------------------------------------------------------------------
Z_PT = [15, 27, 33, 37, 40, 43, 46, 50, 120]
Z_ABSETA = [0.0, 0.35, 0.7, 1.1, 1.6, 2.4]
"""CI binning (GeV, |η|), about equally populated: 8 x 5 bins, so ID and Iso, data and simulation give 160
efficiency pulls."""
Z_BINS = (len(Z_PT) - 1) * (len(Z_ABSETA) - 1)


def small_z_recipe() -> dict[str, Any]:
    """The Z recipe at CI size: the shipped toy (120k data, 60k simulated events) in 8 x 5 bins, one systematic
    source (the tag selection), no plots or exports besides correctionlib."""
    d = recipe_dict("cms_muon_id_z")
    d["binning"]["variables"][0]["edges"], d["binning"]["variables"][1]["edges"] = Z_PT, Z_ABSETA
    d["systematics"]["sources"] = [s for s in d["systematics"]["sources"] if s["name"] == "tagsel"]
    d["fit"]["plots"] = "none"
    d["outputs"] = {**OFF, "correctionlib": True}
    return d


@pytest.fixture(scope="module")
def z_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(small_z_recipe(), tmp_path_factory.mktemp("z"))


def test_z_closure(z_run: Path) -> None:
    """ID and Iso pass decisions are drawn independently, so their pulls pool: 160 pulls (data fits and simulation
    counts) in the strict bands; the 80 data pulls alone in the bands widened by 2/√N."""
    tables = [z_run / "methods" / m / "closure.csv" for m in ("ID", "Iso")]
    assert [len(efficiency_pulls(t)) for t in tables] == [2 * Z_BINS] * 2
    assert_closes(np.concatenate([efficiency_pulls(t) for t in tables]))
    assert_closes_widened(np.concatenate([efficiency_pulls(t, ["data"]) for t in tables]))
    assert np.array_equal(efficiency_pulls(z_run / "closure.csv"), efficiency_pulls(tables[0]))
    fits = [r for t in ("ID", "Iso") for r in read_csv(z_run / "methods" / t / "efficiencies.csv") if r["sample"] == "data"]
    # fits without problems (a bin with fewer than fit.min_candidates is flagged low_statistics, nothing else)
    assert sum(r["fit_status"] in ("ok", "low_statistics") for r in fits) >= 0.9 * len(fits) == 0.9 * 2 * Z_BINS


def z_pairs(a: ak.Array) -> ak.Array:
    """Independent tag-and-probe pairs of simulated events (one record per pair, with the probe's fields)."""
    a = a[a.HLT_IsoMu24]
    mu = ak.zip({k: a[f"Muon_{k}"] for k in ("pt", "eta", "phi", "mass", "charge", "tightId", "pfRelIso04_all",
                                             "genPartFlav")})
    trig = ak.zip({k: a[f"TrigObj_{k}"] for k in ("id", "filterBits", "eta", "phi")})
    trig = trig[(trig.id == 13) & ((trig.filterBits & 2) != 0) & ((trig.filterBits & 8) != 0)]
    m, t = ak.unzip(ak.cartesian([mu, trig], nested=True))
    dphi = (m.phi - t.phi + np.pi) % (2 * np.pi) - np.pi
    matched = ak.fill_none(ak.min(np.hypot(m.eta - t.eta, dphi), axis=2), np.inf) <= 0.1
    is_tag = (mu.pt > 29) & (abs(mu.eta) < 2.4) & mu.tightId & (mu.pfRelIso04_all < 0.15) & matched
    is_probe = (mu.pt > 15) & (abs(mu.eta) < 2.4)
    i, j = ak.unzip(ak.argcartesian([mu, mu]))
    keep = (i != j) & is_tag[i] & is_probe[j]
    tag, probe = ak.flatten(mu[i[keep]]), ak.flatten(mu[j[keep]])

    def p4(x: ak.Array) -> tuple[np.ndarray, ...]:
        pt, eta, phi, mass = (ak.to_numpy(x[k]).astype(np.float64) for k in ("pt", "eta", "phi", "mass"))
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return np.sqrt(px**2 + py**2 + pz**2 + mass**2), px, py, pz

    e, px, py, pz = (u + v for u, v in zip(p4(tag), p4(probe), strict=True))
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    sel = ((ak.to_numpy(tag.charge) * ak.to_numpy(probe.charge) < 0) & (mass > 70) & (mass < 115)
           & (ak.to_numpy(tag.genPartFlav) == 1) & (ak.to_numpy(probe.genPartFlav) == 1))
    return probe[sel]


def test_z_simulation_counts_are_exact(z_run: Path) -> None:
    probe = z_pairs(events(z_run, "mc"))
    pt, eta = (ak.to_numpy(x).astype(np.float64) for x in (probe.pt, probe.eta))
    values = {"pt": pt, "abseta": np.abs(eta)}
    assert_counts(read_csv(z_run / "efficiencies.csv"), "mc", values, ak.to_numpy(probe.tightId))
    tight = ak.to_numpy(probe.tightId)
    iso = {k: v[tight] for k, v in values.items()}
    assert_counts(read_csv(z_run / "methods" / "Iso" / "efficiencies.csv"), "mc", iso,
                  ak.to_numpy(probe.pfRelIso04_all)[tight] < 0.15)


def test_z_lumi_mask_and_scale_factors(z_run: Path) -> None:
    """The data cut flow's lumi stage is the golden JSON's selection; correctionlib returns the table's scale
    factors (nominal and the tag-selection variation) at the bin centres; ID x Iso is the product."""
    flow = {r["stage"]: r["entries"] for r in read_csv(z_run / "cutflow_data.csv")}
    golden = certified(events(z_run, "data"))
    assert flow["read"] == len(golden) == 120000 and flow["lumi"] == golden.sum() < 0.8 * len(golden)
    sf = read_csv(z_run / "scale_factors.csv")
    correction = correctionlib.CorrectionSet.from_file(str(z_run / "corrections.json"))["cms_muon_id_z"]
    for r in sf:
        centre = (0.5 * (r["pt_lo"] + r["pt_hi"]), 0.5 * (r["abseta_lo"] + r["abseta_hi"]))
        assert correction.evaluate(*centre, "nominal") == pytest.approx(r["scale_factor"], rel=1e-9)
        assert correction.evaluate(*centre, "tagselUp") == pytest.approx(r["tagselUp"], rel=1e-9)
    ids = {r["bin"]: r for r in read_csv(z_run / "methods" / "ID" / "scale_factors.csv")}
    iso = {r["bin"]: r for r in read_csv(z_run / "methods" / "Iso" / "scale_factors.csv")}
    for r in read_csv(z_run / "methods" / "ID_Iso" / "scale_factors.csv"):
        assert r["scale_factor"] == pytest.approx(ids[r["bin"]]["scale_factor"] * iso[r["bin"]]["scale_factor"])
        assert r["tagselUp"] == pytest.approx(ids[r["bin"]]["tagselUp"] * iso[r["bin"]]["tagselUp"])
    assert [r["scale_factor"] for r in sf] == [ids[r["bin"]]["scale_factor"] for r in sf]  # nominal = ID


# --- e mu trigger ----------------------------------------------------------------------------------------
EMU_LEAD = [25, 28, 31, 34, 37, 40, 44, 48, 53, 60, 70, 85, 110, 1000]
EMU_SUBLEAD = [15, 17, 19, 21, 23, 25, 27, 30, 35, 40, 50, 65, 1000]
"""CI fine edges (GeV) of the e-mu recipe; merged to at least ``EMU_MIN_COUNT`` passing and failing events of
each sample per bin, they leave >= 75 bins, so data and simulation give >= 150 efficiency pulls."""
EMU_MIN_COUNT = 20


def small_emu_recipe() -> dict[str, Any]:
    """The e-mu recipe with a larger toy (320k data, 230k simulated events) and finer edges (above)."""
    d = recipe_dict("cms_emu_trigger")
    d["toy"]["samples"] = {"data": {"candidates": 320000, "files": 1}, "mc": {"candidates": 230000, "files": 1}}
    d["binning"]["variables"][0]["edges"], d["binning"]["variables"][1]["edges"] = EMU_LEAD, EMU_SUBLEAD
    d["binning"]["optimise"].update(min_count=EMU_MIN_COUNT, max_intervals={"sublead_pt": len(EMU_SUBLEAD) - 1})
    d["outputs"] = {**OFF, "correctionlib": True}
    return d


@pytest.fixture(scope="module")
def emu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(small_emu_recipe(), tmp_path_factory.mktemp("emu"))


def emu_selection(a: ak.Array, is_data: bool) -> dict[str, Any]:
    """Independent H -> WW e-mu selection: leading/subleading lepton pT and the OR of the Mu-Ele paths."""
    ele = a.Electron_mvaFall17V2Iso_WP90 & (a.Electron_pt > 15) & (abs(a.Electron_eta) < 2.5)
    mu = a.Muon_tightId & (a.Muon_pfRelIso04_all < 0.15) & (a.Muon_pt > 15) & (abs(a.Muon_eta) < 2.4)
    one = (ak.sum(ele, axis=1) == 1) & (ak.sum(mu, axis=1) == 1)
    if is_data:
        one = one & certified(a) & a[REFERENCE_TRIGGER]
    a, ele, mu = a[one], ele[one], mu[one]

    def first(x: ak.Array) -> np.ndarray:
        return ak.to_numpy(ak.firsts(x)).astype(np.float64)

    e = {k: first(a[f"Electron_{k}"][ele]) for k in ("pt", "eta", "phi", "charge")}
    m = {k: first(a[f"Muon_{k}"][mu]) for k in ("pt", "eta", "phi", "charge")}
    met, met_phi = ak.to_numpy(a.PuppiMET_pt).astype(np.float64), ak.to_numpy(a.PuppiMET_phi).astype(np.float64)
    lead, sub = np.maximum(e["pt"], m["pt"]), np.minimum(e["pt"], m["pt"])
    sub_phi = np.where(e["pt"] < m["pt"], e["phi"], m["phi"])
    px = e["pt"] * np.cos(e["phi"]) + m["pt"] * np.cos(m["phi"])
    py = e["pt"] * np.sin(e["phi"]) + m["pt"] * np.sin(m["phi"])
    ptll = np.hypot(px, py)
    energy = sum(np.sqrt((x["pt"] * np.cosh(x["eta"])) ** 2 + mass**2) for x, mass in ((e, 0.000511), (m, 0.10566)))
    pz = e["pt"] * np.sinh(e["eta"]) + m["pt"] * np.sinh(m["eta"])
    mll = np.sqrt(np.maximum(energy**2 - ptll**2 - pz**2, 0.0))

    def mt(pt: np.ndarray, phi: np.ndarray) -> np.ndarray:
        return np.sqrt(2 * pt * met * (1 - np.cos(phi - met_phi)))

    sel = ((e["charge"] * m["charge"] < 0) & (lead > 25) & (sub > 15) & (mll > 12) & (ptll > 30)
           & (mt(ptll, np.arctan2(py, px)) > 60) & (mt(sub, sub_phi) > 30) & (met > 20))
    passed = ak.to_numpy(a[EMU_PATHS[0]] | a[EMU_PATHS[1]])
    return {"lead_pt": lead[sel], "sublead_pt": sub[sel], "passed": passed[sel],
            "truth": ak.to_numpy(a.toy_true_eff)[sel]}


def closure_bounds(folder: Path, sample: str) -> list[dict[str, Any]]:
    """The efficiency rows (bin bounds) of ``sample`` in ``folder``."""
    return [r for r in read_csv(folder / "efficiencies.csv") if r["sample"] == sample]


@pytest.mark.parametrize("sample", ["data", "mc"])
def test_emu_efficiency_is_the_or_of_the_paths(emu_run: Path, sample: str) -> None:
    """Per bin (leading x subleading lepton pT, merged) and inclusive, the counts and the efficiency equal the
    independent computation of the OR of the two HLT paths among the selected events."""
    ref = emu_selection(events(emu_run, sample), sample == "data")
    passed, truth = ref.pop("passed"), ref.pop("truth")
    assert len(passed) > 1000 and 0.8 < passed.mean() < 0.99
    for folder in (emu_run, emu_run / "methods" / "inclusive"):
        assert_counts(read_csv(folder / "efficiencies.csv"), sample, ref, passed)
        # the closure's truth is the mean OR probability of the same events
        closure = [r for r in read_csv(folder / "closure.csv") if r["quantity"] == "efficiency" and r["sample"] == sample]
        index = bin_index(closure_bounds(folder, sample), ref)
        assert len(closure) >= 1
        for r in closure:
            assert r["true"] == pytest.approx(truth[index == r["bin"]].mean(), rel=1e-9), (sample, r["bin"])
    (incl,) = [r for r in read_csv(emu_run / "methods" / "inclusive" / "efficiencies.csv") if r["sample"] == sample]
    assert incl["n_pass"] + incl["n_fail"] == len(passed)  # the inclusive bin holds every selected event


def test_emu_closure_and_tables(emu_run: Path) -> None:
    """Strict closure of the merged bins of data and simulation (every bin holds its minimum counts)."""
    assert_closes(efficiency_pulls(emu_run / "closure.csv"))
    eff = read_csv(emu_run / "efficiencies.csv")
    assert {r["method"] for r in eff} == {"count"}
    assert min(min(r["n_pass"], r["n_fail"]) for r in eff) >= EMU_MIN_COUNT
    flow = [r["stage"] for r in read_csv(emu_run / "cutflow_data.csv")]
    assert flow == ["read", "lumi", "event", "tag", "probe", "pair", "sample"]
    sf = read_csv(emu_run / "scale_factors.csv")
    assert 0.8 < np.mean([r["scale_factor"] for r in sf]) < 1.0  # the toy's data plateau is lower than simulation's
    sf_pulls = np.array([r["pull"] for r in read_csv(emu_run / "closure.csv") if r["quantity"] == "scale_factor"])
    assert len(sf_pulls) == len(sf)
    assert_closes_widened(sf_pulls)  # half as many pulls as the efficiencies, data and simulation errors combined
    truth = read_csv(emu_run / "methods" / "inclusive" / "closure.csv")
    assert all(math.isfinite(r["pull"]) and abs(r["pull"]) < 3 for r in truth)
