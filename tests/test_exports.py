"""Systematic variations through the task graph, and every export read back by an independent reader."""

from __future__ import annotations

from pathlib import Path

import correctionlib
import numpy as np
import pytest
import uproot
import yaml

from calibflow.tables.rows import read_csv
from tasks.cli import main

from .conftest import small_demo_dict

SOURCES = [
    {"name": "sigmodel", "vary": {"fit": {"signal": "gauss", "parameters": {"n": None}}}},
    {"name": "massrange", "up": {"mass": {"range": [2960, 3240], "bins": 93}},
     "down": {"mass": {"range": [2940, 3260], "bins": 107}}},
]


@pytest.fixture(scope="module")
def syst_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = small_demo_dict()
    d["name"] = "syst_demo"
    d["systematics"] = {"sources": SOURCES}
    d["outputs"]["correctionlib"] = {"stat": "both"}  # merged and per-bin statistical categories (issue 20)
    tmp = tmp_path_factory.mktemp("syst")
    (tmp / "c.yaml").write_text(yaml.safe_dump(d))
    assert main(["run", str(tmp / "c.yaml"), "--workers", "2", "--result-dir", str(tmp / "res")]) == 0
    return tmp / "res" / "syst_demo"


def test_all_exports_and_report_exist(syst_run: Path) -> None:
    for name in ("efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json", "corrections.root",
                 "corrections_root.txt", "calibration.json", "calibration.h5", "tables.md", "tables.tex", "report.md", "report.html",
                 "plots/efficiency_vs_p.png", "plots/scale_factor_map_data.png"):
        assert (syst_run / name).stat().st_size > 0, name
    report = (syst_run / "report.html").read_text()
    assert 'href="corrections.json"' in report and 'src="plots/efficiency_vs_p.png"' in report


def test_systematic_columns(syst_run: Path) -> None:
    sf = read_csv(syst_run / "scale_factors.csv")
    assert len(sf) == 6
    for r in sf:
        d_sig = abs(r["sigmodelUp"] - r["scale_factor"])
        assert r["sigmodelDown"] == pytest.approx(r["scale_factor"] - d_sig)  # one-sided: symmetrised
        d_rng = max(abs(r["massrangeUp"] - r["scale_factor"]), abs(r["massrangeDown"] - r["scale_factor"]))
        assert r["syst"] == pytest.approx(np.hypot(d_sig, d_rng))
        assert r["total_up"] == pytest.approx(np.hypot(r["err_up"], r["syst"]))
        assert r["stat_data_up"] > 0 and r["stat_mc_up"] > 0
        assert r["err_up"] == pytest.approx(np.hypot(r["stat_data_up"], r["stat_mc_up"]), rel=1e-9)
    assert any(r["syst"] > 0 for r in sf)


def test_correctionlib_round_trip_every_bin_and_variation(syst_run: Path) -> None:
    corr = correctionlib.CorrectionSet.from_file(str(syst_run / "corrections.json"))["syst_demo"]
    expected = {
        "nominal": lambda r: r["scale_factor"], "up": lambda r: r["scale_factor"] + r["total_up"],
        "down": lambda r: r["scale_factor"] - r["total_down"], "statUp": lambda r: r["scale_factor"] + r["err_up"],
        "statDown": lambda r: r["scale_factor"] - r["err_down"], "systUp": lambda r: r["scale_factor"] + r["syst"],
        "systDown": lambda r: r["scale_factor"] - r["syst"],
        **{f"{s}{x}": (lambda r, k=f"{s}{x}": r[k]) for s in ("sigmodel", "massrange") for x in ("Up", "Down")},
    }
    for r in read_csv(syst_run / "scale_factors.csv"):
        p, eta = 0.5 * (r["p_lo"] + r["p_hi"]), 0.5 * (r["eta_lo"] + r["eta_hi"])
        for cat, f in expected.items():
            assert corr.evaluate(p, eta, cat) == pytest.approx(f(r), rel=1e-12), (cat, r["bin"])


def test_correctionlib_per_bin_stat_of_a_run(syst_run: Path) -> None:
    """outputs.correctionlib: {stat: both}: bin k of stat_<data|mc>_bin<k>_<up|down> moves by that sample's
    statistical error of the scale factor, every other bin is nominal."""
    corr = correctionlib.CorrectionSet.from_file(str(syst_run / "corrections.json"))["syst_demo"]
    sf = read_csv(syst_run / "scale_factors.csv")
    p, eta = (np.array([0.5 * (r[f"{v}_lo"] + r[f"{v}_hi"]) for r in sf]) for v in ("p", "eta"))
    nominal = np.array([r["scale_factor"] for r in sf])
    for r in sf:
        for sample in ("data", "mc"):
            for side, sign in (("up", 1), ("down", -1)):
                expected = np.where([s["bin"] == r["bin"] for s in sf], r["scale_factor"] + sign * r[f"stat_{sample}_{side}"],
                                    nominal)
                got = corr.evaluate(p, eta, f"stat_{sample}_bin{r['bin']}_{side}")
                np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_egm_classic_through_the_graph(syst_run: Path) -> None:
    """The same runs combined by egm_classic (sigmodel as altSig: a data-side role) only recombine and re-export:
    the data efficiency's systematic is |altSig − nominal|, the simulation's 0, and the scale factor's total is
    EGM's sqrt(stat_data² + stat_mc² + d²)/eff_mc, computed here from efficiencies.csv. The fixture's own
    outputs are published again afterwards (nothing reruns)."""
    tmp = syst_run.parent.parent
    d = yaml.safe_load((tmp / "c.yaml").read_text())
    d["systematics"] = {"combine": "egm_classic", "sources": [{**SOURCES[0], "role": "altSig"}]}
    (tmp / "egm.yaml").write_text(yaml.safe_dump(d))
    try:
        assert main(["run", str(tmp / "egm.yaml"), "--workers", "2", "--result-dir", str(tmp / "res"), "--overwrite"]) == 0
        eff = {(r["sample"], r["bin"]): r for r in read_csv(syst_run / "efficiencies.csv")}
        sf = read_csv(syst_run / "scale_factors.csv")
    finally:
        assert main(["run", str(tmp / "c.yaml"), "--workers", "2", "--result-dir", str(tmp / "res"), "--overwrite"]) == 0
    for r in sf:
        data, mc = eff["data", r["bin"]], eff["mc", r["bin"]]
        dev = data["sigmodelUp"] - data["efficiency"]
        assert data["syst"] == pytest.approx(abs(dev)) and mc["syst"] == 0
        stat_d, stat_m = max(data["err_down"], data["err_up"]), max(mc["err_down"], mc["err_up"])
        assert r["total_up"] == r["total_down"] == pytest.approx(np.sqrt(stat_d**2 + stat_m**2 + dev**2) / mc["efficiency"])
        assert r["syst"] == pytest.approx(abs(dev) / mc["efficiency"])
    assert any(r["syst"] > 0 for r in sf)


def test_root_export_equals_table(syst_run: Path) -> None:
    sf = read_csv(syst_run / "scale_factors.csv")
    eff = read_csv(syst_run / "efficiencies.csv")
    with uproot.open(syst_run / "corrections.root") as f:
        h = f["sf_data"]
        assert h.classname == "TH2D" and h.title == "data/mc scale factor"
        assert [h.axis(i).member("fTitle") for i in (0, 1)] == ["p [GeV]", "#eta"]
        for r in sf:  # statistical, systematic and per-source histograms
            idx = divmod(r["bin"], 2)
            assert f["sf_data_stat"].errors()[idx] == pytest.approx(max(r["err_up"], r["err_down"]), rel=1e-12)
            assert f["sf_data_syst"].errors()[idx] == pytest.approx(r["syst"], rel=1e-12)
            assert f["sf_data_massrangeDown"].values()[idx] == pytest.approx(r["massrangeDown"], rel=1e-12)
        assert h.axis(0).edges().tolist() == [2, 6, 15, 200] and h.axis(1).edges().tolist() == [2.0, 3.5, 5.0]
        values, errors = h.values(), h.errors()
        for r in sf:
            i, j = divmod(r["bin"], 2)
            assert values[i, j] == pytest.approx(r["scale_factor"], rel=1e-12)
            assert errors[i, j] == pytest.approx(max(r["total_up"], r["total_down"]), rel=1e-12)
        e = f["eff_mc"].values()
        for r in (r for r in eff if r["sample"] == "mc"):
            assert e[divmod(r["bin"], 2)] == pytest.approx(r["efficiency"], rel=1e-12)


def test_master_table_has_metadata_and_tables(syst_run: Path) -> None:
    import json

    import h5py

    master = json.loads((syst_run / "calibration.json").read_text())
    assert master["metadata"]["config"]["name"] == "syst_demo"
    assert master["metadata"]["systematic_runs"] == ["sigmodel", "massrangeUp", "massrangeDown"]
    assert set(master["metadata"]["inputs"]) == {"data", "mc"}
    assert len(master["tables"]["scale_factors"]) == 6
    with h5py.File(syst_run / "calibration.h5") as h5:
        np.testing.assert_allclose(h5["scale_factors/scale_factor"][...],
                                   [r["scale_factor"] for r in master["tables"]["scale_factors"]])


def test_text_tables(syst_run: Path) -> None:
    md = (syst_run / "tables.md").read_text()
    tex = (syst_run / "tables.tex").read_text()
    from calibflow.export.grid import decimals

    sf = read_csv(syst_run / "scale_factors.csv")
    value = f"{sf[0]['scale_factor']:.{decimals(sf)}f}"
    assert f"| [2, 6) | {value} " in md and f"$[2, 6)$ & ${value}" in tex
    assert sum(line.startswith("| [") for line in md.splitlines()) == 3 * 3  # 3 tables (2 samples, 1 SF) x 3 p bins
    assert r"| $p$ [GeV] \ $\eta$ | [2, 3.5) | [3.5, 5) |" in md
    assert "± syst (stat: statistical" in md and "syst: total systematic of sigmodel, massrange" in md
    assert tex.count(r"\begin{tabular}") == 3 and r"\multicolumn{2}{c}{$\eta$}" in tex


def test_flow_error_rejects_out_of_range(tmp_path: Path) -> None:
    from calibflow.binning.scheme import BinningScheme
    from calibflow.export.correctionlib import build_correction, write_correction_set

    scheme = BinningScheme.product([("pt", [10, 20, 50])])
    for flow in ("clamp", "error"):
        corr = build_correction("c", scheme, {"nominal": {0: 0.9, 1: 0.95}}, flow=flow)
        write_correction_set(tmp_path / f"{flow}.json", [corr])
    clamp = correctionlib.CorrectionSet.from_file(str(tmp_path / "clamp.json"))["c"]
    error = correctionlib.CorrectionSet.from_file(str(tmp_path / "error.json"))["c"]
    assert clamp.evaluate(5.0, "nominal") == 0.9 and clamp.evaluate(500.0, "nominal") == 0.95
    assert error.evaluate(15.0, "nominal") == 0.9
    with pytest.raises(Exception, match="bounds"):
        error.evaluate(500.0, "nominal")
