"""The era recipes (task_configs/cms_muon_id_z_2022.yaml, _2023.yaml: the Z recipe as their ``base:``) and the
shipped merge config (task_configs/merge/cms_muon_id_run3.yaml), run at CI size: every item of the uncertainty model
(issue 20) on one calibration per era — bootstrap correlation of the simulation, per-bin statistical nuisances,
eigen-variations, replicas, closure after applying the scale factors — and the two eras in one correction, checked
with correctionlib's evaluator against the eras' own tables and the luminosity-weighted mean computed by hand."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import correctionlib
import h5py
import numpy as np
import pytest
import yaml

from calibflow.tables.covariance import correlation, read_h5
from calibflow.tables.rows import read_csv
from tasks.cli import main

from .test_recipes_lhcb import RECIPES

ERAS = ("2022", "2023")
SMALL = {  # CI size: smaller toys, 3 x 2 bins, no systematic sources, no figures
    "toy": {"samples": {"data": {"candidates": 40000, "files": 1}, "mc": {"candidates": 20000},
                        "mc_closure": {"candidates": 20000}}},
    "samples": {"data": {"lumi_mask": str(RECIPES / "data" / "Cert_toy_golden.json")}},
    "binning": {"variables": [{"name": "pt", "unit": "GeV", "edges": [15, 35, 45, 120]},
                              {"name": "abseta", "edges": [0.0, 1.2, 2.4]}]},
    "systematics": {"sources": []},
    "fit": {"plots": "none"},
    "outputs": {"plots": False, "root": False, "markdown": False, "latex": False, "report": False},
}


@pytest.fixture(scope="module")
def eras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both eras run into one result folder from small configs whose base is the shipped era config, then the
    shipped merge config (copied beside them: its ``config:`` paths are relative)."""
    base = tmp_path_factory.mktemp("eras")
    (base / "merge").mkdir()
    shutil.copyfile(RECIPES / "merge" / "cms_muon_id_run3.yaml", base / "merge" / "cms_muon_id_run3.yaml")
    for era in ERAS:
        path = base / f"cms_muon_id_z_{era}.yaml"
        path.write_text(yaml.safe_dump({"base": str(RECIPES / f"cms_muon_id_z_{era}.yaml"), **SMALL}))
        assert main(["run", str(path), "--workers", "2", "--quiet", "--result-dir", str(base / "res")]) == 0
    assert main(["merge", str(base / "merge" / "cms_muon_id_run3.yaml"), "--result-dir", str(base / "res")]) == 0
    return base


def _folder(eras: Path, era: str) -> Path:
    return eras / "res" / f"cms_muon_id_z_{era}"


def test_an_era_config_is_its_base_recipe_plus_its_own_keys(eras: Path) -> None:
    """The resolved config (published beside the file's own bytes) has the Z recipe's pairing and the era's keys."""
    for era in ERAS:
        folder = _folder(eras, era)
        resolved = yaml.safe_load((folder / "config_resolved.yaml").read_text())
        assert resolved["name"] == f"cms_muon_id_z_{era}" and resolved["toy"]["seed"] == int(era)
        assert resolved["pairing"]["collection"] == "Muon" and resolved["toy"]["generator"] == "z_mumu_nanoaod"
        assert resolved["toy"]["samples"]["data"] == {"candidates": 40000, "files": 1}  # merged key by key
        assert resolved["samples"]["mc"]["event_id"] == "event" and resolved["samples"]["mc"]["method"] == "count"
        assert "base" not in resolved and (folder / "config.yaml").read_text().startswith("base:")
        assert f"cms_muon_id_z_{era}.yaml" in (folder / "config_resolved.yaml").read_text().splitlines()[1]


def test_each_era_exercises_the_uncertainty_model(eras: Path) -> None:
    folder = _folder(eras, "2022")
    sf = read_csv(folder / "scale_factors.csv")
    n = len(sf)
    assert n == 6
    cov = read_h5(str(folder / "calibration.h5"))["scale_factor_data"]
    for part in ("stat_mc", "stat_data"):  # two probes per event: the bootstrap correlates the bins (data: fitted)
        off = np.abs(correlation(cov.parts[part])[~np.eye(n, dtype=bool)])
        assert 0.02 < off.max() < 0.9, part
    with h5py.File(folder / "calibration.h5") as h5:
        assert h5["replicas/scale_factor_data"].shape == (100, n)
    corr = correctionlib.CorrectionSet.from_file(str(folder / "corrections.json"))["cms_muon_id_z_2022"]
    r = sf[0]
    x = (0.5 * (r["pt_lo"] + r["pt_hi"]), 0.5 * (r["abseta_lo"] + r["abseta_hi"]))
    assert corr.evaluate(*x, "nominal") == pytest.approx(r["scale_factor"], rel=1e-12)
    assert corr.evaluate(*x, "stat_data_bin0_up") == pytest.approx(r["scale_factor"] + r["stat_data_up"], rel=1e-12)
    assert corr.evaluate(*x, "stat_mc_bin1_up") == pytest.approx(r["scale_factor"], rel=1e-12)  # another bin's
    kept = sorted(set(re.findall(r'"(eig\d+)_up"', (folder / "corrections.json").read_text())))
    assert kept and kept[0] == "eig0"
    eig = [np.array([corr.evaluate(0.5 * (s["pt_lo"] + s["pt_hi"]), 0.5 * (s["abseta_lo"] + s["abseta_hi"]),
                                   f"{e}_up") - s["scale_factor"] for s in sf]) for e in kept]
    approx = sum(np.outer(v, v) for v in eig)
    total = cov.total
    assert np.trace(approx) >= 0.95 * np.trace(total) - 1e-12  # kept: at least 95 % of the trace


def test_closure_after_applying_to_an_independent_simulation(eras: Path) -> None:
    for era in ERAS:
        rows = read_csv(_folder(eras, era) / "closure_after_apply.csv")
        assert len(rows) == 6 and {r["sample"] for r in rows} == {"mc_closure"}
        assert all(r["same_sample"] == 0 for r in rows)
        eff = {r["bin"]: r for r in read_csv(_folder(eras, era) / "efficiencies.csv") if r["sample"] == "mc_closure"}
        sf = {r["bin"]: r["scale_factor"] for r in read_csv(_folder(eras, era) / "scale_factors.csv")}
        for r in rows:  # one scale factor per bin: the corrected efficiency is SF x the uncorrected one
            assert r["eff_mc_corrected"] == pytest.approx(sf[r["bin"]] * eff[r["bin"]]["efficiency"], rel=1e-9)
        pulls = np.array([r["pull"] for r in rows])
        assert np.all(np.abs(pulls) < 3.5), pulls


def test_the_eras_in_one_correction(eras: Path) -> None:
    out = eras / "res" / "merged" / "cms_muon_id_run3"
    assert (out / "current").is_symlink() and (out / "manifest.json").exists()  # published as a set
    cset = correctionlib.CorrectionSet.from_file(str(out / "corrections.json"))
    lumi = dict(zip(ERAS, (34.7, 27.2), strict=True))
    rows = {era: read_csv(_folder(eras, era) / "scale_factors.csv") for era in ERAS}
    for k, r in enumerate(rows["2022"]):
        x = (0.5 * (r["pt_lo"] + r["pt_hi"]), 0.5 * (r["abseta_lo"] + r["abseta_hi"]))
        for era in ERAS:
            assert cset["cms_muon_id_run3"].evaluate(era, *x, "nominal") == pytest.approx(
                rows[era][k]["scale_factor"], rel=1e-12)
        mean = sum(lumi[e] * rows[e][k]["scale_factor"] for e in ERAS) / sum(lumi.values())
        stat = math.sqrt(sum((lumi[e] * rows[e][k]["err_up"]) ** 2 for e in ERAS)) / sum(lumi.values())
        combined = cset["cms_muon_id_run3_combined"]
        assert combined.evaluate(*x, "nominal") == pytest.approx(mean, rel=1e-12)
        assert combined.evaluate(*x, "statUp") - mean == pytest.approx(stat, rel=1e-9)
    chi2 = [r for r in read_csv(out / "chi2.csv") if r["bin"] == "total"]
    assert chi2[0]["ndof"] == 6 and chi2[0]["pvalue"] > 0.001  # the two toys share their truth
