"""Tuple preparation of NanoAOD-style jagged inputs: lumi mask, event cut, trigger matching, tag-and-probe
pairs and per-pair columns, checked against a brute-force python reference on real ROOT files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from calibflow.config import ConfigError, parse_config
from calibflow.io import baskets
from calibflow.io.root import write_ttree
from calibflow.io.store import read_columns, read_metadata
from calibflow.plan import Plan
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import MASS, PASS, WEIGHT, pass_column, prep_spec

GOLDEN = {"1": [[1, 40]], "2": [[10, 20], [30, 100]]}
MU_MASS = 0.10566  # GeV


def write_nano(path: Path, n: int = 3000, seed: int = 0) -> dict[str, Any]:
    """A NanoAOD-like ``Events`` TTree (Muon and TrigObj collections with counters nMuon, nTrigObj; run,
    luminosityBlock, HLT_IsoMu24, MET_pt and unused branches); returns the content as python lists."""
    rng = np.random.default_rng(seed)
    n_mu = rng.poisson(2.0, n)
    m = int(n_mu.sum())
    muon = {
        "pt": rng.uniform(5, 60, m).astype(np.float32),
        "eta": rng.uniform(-2.6, 2.6, m).astype(np.float32),
        "phi": rng.uniform(-math.pi, math.pi, m).astype(np.float32),
        "charge": rng.choice(np.array([-1, 1], dtype=np.int32), m),
        "tightId": rng.random(m) < 0.8,
        "dxy": rng.normal(0, 0.01, m).astype(np.float32),  # never needed
    }
    # trigger objects: smeared copies of ~60% of the muons (id 13) plus random ones (id 11 or 13)
    copy = rng.random(m) < 0.6
    events_of_mu = np.repeat(np.arange(n), n_mu)
    n_extra = rng.poisson(0.7, n)
    ev = np.concatenate([events_of_mu[copy], np.repeat(np.arange(n), n_extra)])
    k = int(copy.sum())
    extra = int(n_extra.sum())
    trig = {
        "pt": np.concatenate([muon["pt"][copy], rng.uniform(5, 60, extra).astype(np.float32)]),
        "eta": np.concatenate([muon["eta"][copy] + rng.normal(0, 0.06, k).astype(np.float32),
                               rng.uniform(-2.5, 2.5, extra).astype(np.float32)]),
        "phi": np.concatenate([muon["phi"][copy] + rng.normal(0, 0.06, k).astype(np.float32),
                               rng.uniform(-math.pi, math.pi, extra).astype(np.float32)]),
        "id": np.concatenate([np.full(k, 13, np.int32), rng.choice(np.array([11, 13], np.int32), extra)]),
        "filterBits": rng.integers(0, 16, k + extra).astype(np.int32),
    }
    order = np.argsort(ev, kind="stable")
    trig = {f: v[order] for f, v in trig.items()}
    n_trig = np.bincount(ev, minlength=n)
    events = {
        "run": rng.choice(np.array([1, 2, 3], np.uint32), n),
        "luminosityBlock": rng.integers(1, 60, n).astype(np.uint32),
        "HLT_IsoMu24": rng.random(n) < 0.7,
        "MET_pt": rng.exponential(20, n).astype(np.float32),
        "PV_npvs": rng.integers(1, 40, n).astype(np.int32),
    }
    mu_ak = ak.zip({f: ak.unflatten(v, n_mu) for f, v in muon.items()})
    trig_ak = ak.zip({f: ak.unflatten(v, n_trig) for f, v in trig.items()})
    el_ak = ak.zip({"pt": ak.unflatten(rng.uniform(5, 50, n).astype(np.float32), np.ones(n, np.int64))})
    with uproot.recreate(path) as f:
        t = f.mktree("Events", {"Muon": mu_ak.type.content, "TrigObj": trig_ak.type.content,
                                "Electron": el_ak.type.content, **{b: v.dtype for b, v in events.items()}})
        t.extend({"Muon": mu_ak, "TrigObj": trig_ak, "Electron": el_ak, **events})
    return {"Muon": ak.to_list(mu_ak), "TrigObj": ak.to_list(trig_ak), **{b: v.tolist() for b, v in events.items()}}


def nano_config(lumi: str | None = "golden.json") -> dict[str, Any]:
    return {
        "name": "nano",
        "samples": {"data": {"role": "data", "files": ["nano.root"], "tree": "Events", "method": "count",
                             "weight": "pair_dr", **({"lumi_mask": lumi} if lumi else {})}},
        "pairing": {
            "collection": "Muon",
            "tag": "Muon_pt > 25 and Muon_tightId and Muon_trigMatch",
            "probe": "Muon_pt > 10 and abs(Muon_eta) < 2.4",
            "mass": MU_MASS,
            "match": [{"objects": "TrigObj", "cut": "TrigObj_id == 13 and (TrigObj_filterBits & 8) != 0",
                       "max_dr": 0.1, "as": "Muon_trigMatch"}],
        },
        "selection": {"event": "HLT_IsoMu24 == 1", "pair": "pair_charge < 0 and 50 < pair_mass < 130"},
        "pass": "probe_tightId",
        "working_points": {"matched": "probe_trigMatch", "above_met": "probe_pt > MET_pt"},
        "mass": {"variable": "pair_mass", "range": [50, 130]},
        "binning": {"variables": [{"name": "pt", "expression": "probe_pt", "edges": [10, 20, 40, 100]},
                                  {"name": "eta", "expression": "abs(probe_eta)", "edges": [0, 1.2, 2.4]}]},
    }


def _certified(run: int, lumi: int) -> bool:
    return any(lo <= lumi <= hi for lo, hi in GOLDEN.get(str(run), []))


def _trig_match(mu: dict[str, float], trigs: list[dict[str, Any]]) -> bool:
    best = math.inf
    for o in trigs:
        if o["id"] == 13 and o["filterBits"] & 8:
            dphi = (mu["phi"] - o["phi"] + math.pi) % (2 * math.pi) - math.pi
            best = min(best, math.hypot(mu["eta"] - o["eta"], dphi))
    return best <= 0.1


def _p4(mu: dict[str, float]) -> np.ndarray:
    pt, eta, phi = (float(np.float32(mu[k])) for k in ("pt", "eta", "phi"))
    p = np.array([pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)])
    return np.array([math.sqrt(p @ p + MU_MASS**2), *p])


def reference(d: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Brute force: the output columns of every selected (tag, probe) pair, and the cut flow."""
    cols: dict[str, list[float]] = {k: [] for k in ("pt", "eta", MASS, PASS, "matched", "above_met", WEIGHT)}
    flow = dict.fromkeys(("read", "lumi", "event", "pairs", "pair"), 0)
    for i, (muons, trigs) in enumerate(zip(d["Muon"], d["TrigObj"], strict=True)):
        flow["read"] += 1
        if not _certified(d["run"][i], d["luminosityBlock"][i]):
            continue
        flow["lumi"] += 1
        if not d["HLT_IsoMu24"][i]:
            continue
        flow["event"] += 1
        match = [_trig_match(mu, trigs) for mu in muons]
        for t, tag in enumerate(muons):
            for p, probe in enumerate(muons):
                if t == p or not (tag["pt"] > 25 and tag["tightId"] and match[t]):
                    continue
                if not (probe["pt"] > 10 and abs(probe["eta"]) < 2.4):
                    continue
                flow["pairs"] += 1
                s = _p4(tag) + _p4(probe)
                mass = math.sqrt(max(s[0] ** 2 - s[1:] @ s[1:], 0.0))
                if not (tag["charge"] * probe["charge"] < 0 and 50 < mass < 130):
                    continue
                flow["pair"] += 1
                dphi = (tag["phi"] - probe["phi"] + math.pi) % (2 * math.pi) - math.pi
                for k, v in (("pt", probe["pt"]), ("eta", abs(probe["eta"])), (MASS, mass),
                             (PASS, probe["tightId"]), ("matched", match[p]),
                             ("above_met", probe["pt"] > d["MET_pt"][i]),
                             (WEIGHT, math.hypot(tag["eta"] - probe["eta"], dphi))):
                    cols[k].append(v)
    return cols, flow


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("nano")
    (folder / "golden.json").write_text(json.dumps(GOLDEN))
    return folder, write_nano(folder / "nano.root")


def test_pairs_and_columns_match_brute_force(nano, tmp_path: Path) -> None:
    folder, d = nano
    spec = prep_spec(parse_config(nano_config()), "data", str(folder))
    flow = prepare_file(str(folder / "nano.root"), spec, str(tmp_path / "out.h5"), step_size=700)
    ref, ref_flow = reference(d)
    assert flow == ref_flow
    assert 0 < flow["pair"] < flow["pairs"] and flow["lumi"] < flow["read"] and flow["event"] < flow["lumi"]
    got = read_columns(tmp_path / "out.h5")
    assert len(got[MASS]) == flow["pair"]
    for k in ("pt", "eta"):
        assert np.array_equal(got[k], np.float32(ref[k]).astype(np.float64)), k
    np.testing.assert_allclose(got[MASS], ref[MASS], rtol=1e-6)
    np.testing.assert_allclose(got[WEIGHT], ref[WEIGHT], rtol=1e-5)
    assert np.array_equal(got[PASS], ref[PASS])
    assert np.array_equal(got[pass_column("matched")], ref["matched"])
    assert np.array_equal(got[pass_column("above_met")], ref["above_met"])
    assert 0 < got[pass_column("matched")].sum() < len(got[MASS])  # the trigger matching decides something
    meta = read_metadata(tmp_path / "out.h5")
    assert meta["cutflow"] == flow and meta["stages"] == ["read", "lumi", "event", "pairs", "pair"]


def test_chunking_does_not_change_pairs(nano, tmp_path: Path) -> None:
    folder, _ = nano
    spec = prep_spec(parse_config(nano_config()), "data", str(folder))
    prepare_file(str(folder / "nano.root"), spec, str(tmp_path / "a.h5"), step_size=333)
    prepare_file(str(folder / "nano.root"), spec, str(tmp_path / "b.h5"))
    a, b = read_columns(tmp_path / "a.h5"), read_columns(tmp_path / "b.h5")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_only_needed_branches_are_read(nano, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = nano
    spec = prep_spec(parse_config(nano_config()), "data", str(folder))
    asked: list[list[str]] = []
    original = baskets.iterate_flat

    def spy(path: str, layout: Any, *args: Any, **kwargs: Any) -> Any:  # the basket reader reads them all
        asked.append(sorted(b.name for b in layout))
        return original(path, layout, *args, **kwargs)

    monkeypatch.setattr(baskets, "iterate_flat", spy)
    monkeypatch.setattr(uproot.behaviors.TBranch.HasBranches, "iterate", None)  # uproot reads no branch
    prepare_file(str(folder / "nano.root"), spec, str(tmp_path / "out.h5"))
    needed = {"Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_tightId", "TrigObj_eta", "TrigObj_phi",
              "TrigObj_id", "TrigObj_filterBits", "HLT_IsoMu24", "MET_pt", "run", "luminosityBlock"}
    assert asked == [sorted(needed)]
    with uproot.open(folder / "nano.root") as f:
        assert set(f["Events"].keys()) - needed >= {"nMuon", "Muon_dxy", "TrigObj_pt", "Electron_pt", "PV_npvs"}


def test_lumi_mask_content_enters_the_key_and_is_relative_to_the_config(nano, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = nano
    (tmp_path / "cfg").mkdir()
    os.symlink(folder / "nano.root", tmp_path / "cfg" / "nano.root")
    golden = tmp_path / "cfg" / "golden.json"
    golden.write_text(json.dumps(GOLDEN))
    cfg = tmp_path / "cfg" / "nano.yaml"
    cfg.write_text(json.dumps(nano_config()))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    plan = Plan.create(cfg, tmp_path / "results")
    key = plan.prep_key("data", 0)
    assert plan.prep_spec("data").lumi.path == str(golden)
    golden.write_text(json.dumps({**GOLDEN, "3": [[1, 5]]}))
    assert plan.prep_key("data", 0) != key
    golden.write_text("{not json")
    with pytest.raises(ConfigError, match=r"samples\.data\.lumi_mask: .*golden\.json: not valid JSON"):
        plan.prep_spec("data")
    cfg.write_text(json.dumps(nano_config(lumi="missing.json")))
    with pytest.raises(ConfigError, match=r"samples\.data\.lumi_mask: certification JSON .*missing\.json.* not found"):
        Plan.create(cfg, tmp_path / "results")


def test_flat_ntuple_with_lumi_and_event_stages(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 4000
    b = {"run": rng.choice(np.array([1, 2], np.uint32), n), "luminosityBlock": rng.integers(1, 60, n).astype(np.uint32),
         "trig": rng.integers(0, 2, n).astype(np.int32), "x": rng.uniform(0, 10, n), "m": rng.uniform(0, 1, n),
         "ok": rng.integers(0, 2, n).astype(np.int32)}
    write_ttree(tmp_path / "flat.root", b, tree="T")
    (tmp_path / "golden.json").write_text(json.dumps(GOLDEN))
    d = {"name": "flat", "samples": {"d": {"role": "data", "files": ["flat.root"], "tree": "T", "method": "count",
                                           "lumi_mask": "golden.json"}},
         "selection": {"event": "trig == 1", "probe": "x > 2"}, "pass": "ok == 1",
         "binning": {"variables": [{"name": "x", "edges": [0, 5, 10]}]}}
    spec = prep_spec(parse_config(d), "d", str(tmp_path))
    flow = prepare_file(str(tmp_path / "flat.root"), spec, str(tmp_path / "out.h5"), step_size=1000)
    lumi = np.array([_certified(r, lb) for r, lb in zip(b["run"], b["luminosityBlock"], strict=True)])
    event = lumi & (b["trig"] == 1)
    probe = event & (b["x"] > 2)
    assert flow == {"read": n, "lumi": int(lumi.sum()), "event": int(event.sum()), "probe": int(probe.sum())}
    assert list(read_metadata(tmp_path / "out.h5")["stages"]) == ["read", "lumi", "event", "probe"]
    assert np.array_equal(read_columns(tmp_path / "out.h5")["x"], b["x"][probe])


@pytest.mark.parametrize(("change", "message"), [
    ({"selection": {"pair": "pair_pt > 3"}}, r"selection\.pair: unknown pair column 'pair_pt'"),
    ({"selection": {"pair": "Muon_pt > 3"}}, r"selection\.pair: 'Muon_pt' is a per-object branch of Muon; per pair "
                                             r"use tag_pt or probe_pt"),
])
def test_pairing_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    d = nano_config(lumi=None)
    d.update(change)
    with pytest.raises(ConfigError, match=message):
        prep_spec(parse_config(d), "data")


def test_match_name_must_be_a_collection_field() -> None:
    d = nano_config(lumi=None)
    d["pairing"]["match"][0]["as"] = "trigMatch"
    with pytest.raises(ConfigError, match=r"pairing: match\[0\]\.as: 'trigMatch' must name a field of Muon"):
        parse_config(d)


def test_per_object_result_in_a_per_pair_stage_is_an_expression_error(nano, tmp_path: Path) -> None:
    folder, _ = nano
    d = nano_config(lumi=None)
    d["selection"]["event"] = "TrigObj_pt > 3"  # jagged: not one value per event
    spec = prep_spec(parse_config(d), "data", str(folder))
    from calibflow.prep.spec import PrepExpressionError

    with pytest.raises(PrepExpressionError, match=r"nano\.root: selection\.event: gives several values per row"):
        prepare_file(str(folder / "nano.root"), spec, str(tmp_path / "out.h5"))


def test_no_event_left_gives_empty_columns(nano, tmp_path: Path) -> None:
    folder, _ = nano
    d = nano_config()
    d["selection"]["event"] = "HLT_IsoMu24 == 2"
    flow = prepare_file(str(folder / "nano.root"), prep_spec(parse_config(d), "data", str(folder)),
                        str(tmp_path / "out.h5"), step_size=1000)
    assert flow["read"] == 3000 and flow["event"] == flow["pairs"] == flow["pair"] == 0
    cols = read_columns(tmp_path / "out.h5")
    assert set(cols) == {"pt", "eta", MASS, PASS, WEIGHT, pass_column("matched"), pass_column("above_met")}
    assert all(len(v) == 0 for v in cols.values())


def test_calibflow_run_on_nanoaod(nano, tmp_path: Path) -> None:
    """The whole graph on the NanoAOD file: PrepareTuple pairs, tables, and the published cut flow."""
    from calibflow.tables.rows import read_csv
    from tasks.cli import main

    folder, d = nano
    cfg = nano_config()
    cfg["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                      "report": False}
    path = folder / "nano_run.yaml"
    path.write_text(json.dumps(cfg))
    assert main(["run", str(path), "--result-dir", str(tmp_path), "--quiet"]) == 0
    rows = read_csv(tmp_path / "nano" / "cutflow_data.csv")
    ref, ref_flow = reference(d)
    assert [(r["stage"], r["unit"], r["entries"]) for r in rows] == [
        ("read", "events", 3000), ("lumi", "events", ref_flow["lumi"]), ("event", "events", ref_flow["event"]),
        ("pairs", "pairs", ref_flow["pairs"]), ("pair", "pairs", ref_flow["pair"])]
    eff = read_csv(tmp_path / "nano" / "efficiencies.csv")
    total = sum(r["n_pass"] + r["n_fail"] for r in eff)  # sums of weights (pair_dr)
    assert len(eff) == 6 and 0 < total <= sum(ref[WEIGHT]) + 1e-9
