"""Systematic variations through the task graph, and every export read back by an independent reader."""

from __future__ import annotations

from pathlib import Path

import correctionlib
import h5py
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
    d["outputs"]["correctionlib"] = {"stat": "both", "eigen": {"count": 6}}  # per-bin stat, eigen-variations (issue 20)
    d["outputs"]["replicas"] = 4000  # toy scale-factor tables in calibration.h5 (issue 20)
    d["samples"]["mc"]["event_id"] = "eventNumber"  # counted: statistical correlation by the bootstrap over events
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


def test_covariance_per_source_in_the_master_table(syst_run: Path) -> None:
    """calibration.h5 holds covariance/<table>/<part>: the statistical parts with diagonal ((down + up)/2)² of each
    sample's part (the fitted data's diagonal), the one-sided sigmodel δ δᵀ with |δ| = |sigmodelUp − SF|, the two-sided massrange
    ((Up − Down)/2)((Up − Down)/2)ᵀ, and their sum as total; the report shows the correlation figure."""
    sf = sorted(read_csv(syst_run / "scale_factors.csv"), key=lambda r: r["bin"])
    col = {k: np.array([r[k] for r in sf]) for k in sf[0] if not isinstance(sf[0][k], str)}
    with h5py.File(syst_run / "calibration.h5") as h5:
        g = h5["covariance/scale_factor_data"]
        assert list(g.attrs["parts"]) == ["stat_data", "stat_mc", "sigmodel", "massrange"]
        parts = {p: g[p][...] for p in g.attrs["parts"]}
        np.testing.assert_array_equal(g["bins"][...], col["bin"])
        np.testing.assert_allclose(g["total"][...], sum(parts.values()), rtol=1e-12)
        assert set(h5["covariance"]) == {"scale_factor_data", "efficiency_data", "efficiency_mc"}
    for sample in ("data", "mc"):  # the simulation's off-diagonal terms: test_bootstrap_correlation_of_a_counted_sample
        sigma = (col[f"stat_{sample}_down"] + col[f"stat_{sample}_up"]) / 2
        np.testing.assert_allclose(np.diag(parts[f"stat_{sample}"]), sigma**2, rtol=1e-12)
    np.testing.assert_allclose(parts["stat_data"], np.diag(np.diag(parts["stat_data"])), rtol=1e-12)
    d_sig = col["sigmodelUp"] - col["scale_factor"]
    np.testing.assert_allclose(np.abs(parts["sigmodel"]), np.abs(np.outer(d_sig, d_sig)), rtol=1e-9, atol=1e-15)
    half = (col["massrangeUp"] - col["massrangeDown"]) / 2
    np.testing.assert_allclose(parts["massrange"], np.outer(half, half), rtol=1e-9, atol=1e-15)
    report = (syst_run / "report.html").read_text()
    assert '<section id="correlations">' in report and 'src="plots/correlation_scale_factor_data.png"' in report
    assert (syst_run / "plots" / "correlation_scale_factor_data.png").stat().st_size > 0
    assert "scale factor data/mc: largest |correlation| between two bins" in report  # named as elsewhere


def test_bootstrap_correlation_of_a_counted_sample(syst_run: Path) -> None:
    """samples.mc.event_id: the simulation's statistical covariance (efficiency_mc/stat, scale_factor_data/stat_mc) is
    σ σᵀ ∘ ρ with ρ the bootstrap correlation over events, recomputed here with the numpy reference from the prepared
    tuples (same seed); the data (fitted, no event_id) stay diagonal; the diagonals are the tables' errors."""
    from calibflow.io.store import read_columns
    from calibflow.plan import Plan
    from calibflow.prep.spec import EVENT, MASS, PASS
    from calibflow.tables.bootstrap import REPLICAS, nan_covariance, replica_efficiencies
    from calibflow.tables.covariance import correlation, table_seed

    plan = Plan.create(syst_run.parent.parent / "c.yaml", syst_run.parent)
    scheme = plan.load_scheme()
    cols = [read_columns(plan.prep_path("mc", i)) for i in range(len(plan.input_files("mc")))]
    lo, hi = plan.config.mass_spec.range
    bins = np.concatenate([np.where((c[MASS] >= lo) & (c[MASS] < hi), scheme.locate(c), -1) for c in cols])
    events, offset = [], 0
    for c in cols:
        ids = np.unique(c[EVENT], return_inverse=True)[1].ravel() + offset
        offset = int(ids.max()) + 1
        events.append(ids)
    x = replica_efficiencies(bins, np.concatenate([c[PASS] for c in cols]), np.concatenate(events), len(scheme),
                             replicas=REPLICAS, seed=table_seed(plan.table_key(), "bootstrap_mc"), reference=True)
    rho = correlation(nan_covariance(x))
    eff = {r["sample"]: [] for r in read_csv(syst_run / "efficiencies.csv")}
    for r in sorted(read_csv(syst_run / "efficiencies.csv"), key=lambda r: r["bin"]):
        eff[r["sample"]].append(r)
    with h5py.File(syst_run / "calibration.h5") as h5:
        mc, data = h5["covariance/efficiency_mc/stat"][...], h5["covariance/efficiency_data/stat"][...]
        sf_mc = h5["covariance/scale_factor_data/stat_mc"][...]
    sigma = np.array([(r["err_down"] + r["err_up"]) / 2 for r in eff["mc"]])
    np.testing.assert_allclose(mc, np.outer(sigma, sigma) * rho, rtol=1e-9, atol=1e-18)
    assert np.count_nonzero(mc - np.diag(np.diag(mc))) > 0  # off-diagonal terms: events with probes in two bins
    assert np.count_nonzero(data - np.diag(np.diag(data))) == 0
    np.testing.assert_allclose(correlation(sf_mc), rho, atol=1e-9)


def test_eigen_variations_and_replicas_of_a_run(syst_run: Path) -> None:
    """outputs.correctionlib.eigen {count: 6} (all of the 6 bins' full-rank covariance): the eig<i>_up shifts read
    with correctionlib's evaluator give back the total covariance, eig<i>_down the opposite shifts;
    outputs.replicas: the 4000 replicas' sample covariance (numpy) is the total within statistical tolerance."""
    corr = correctionlib.CorrectionSet.from_file(str(syst_run / "corrections.json"))["syst_demo"]
    sf = sorted(read_csv(syst_run / "scale_factors.csv"), key=lambda r: r["bin"])
    p, eta = (np.array([0.5 * (r[f"{v}_lo"] + r[f"{v}_hi"]) for r in sf]) for v in ("p", "eta"))
    nominal = np.array([r["scale_factor"] for r in sf])
    shifts = np.array([corr.evaluate(p, eta, f"eig{i}_up") - nominal for i in range(6)])
    for i in range(6):
        np.testing.assert_allclose(corr.evaluate(p, eta, f"eig{i}_down"), nominal - shifts[i], rtol=1e-12)
    with pytest.raises(IndexError, match="Index not available"):  # no seventh variation
        corr.evaluate(p[0], eta[0], "eig6_up")
    with h5py.File(syst_run / "calibration.h5") as h5:
        total = h5["covariance/scale_factor_data/total"][...]
        replicas = h5["replicas/scale_factor_data"][...]
    np.testing.assert_allclose(shifts.T @ shifts, total, rtol=1e-9, atol=1e-15)
    assert replicas.shape == (4000, 6)
    sigma = np.sqrt(np.diag(total))
    tolerance = 5 * np.sqrt((np.outer(sigma**2, sigma**2) + total**2) / len(replicas))
    assert np.all(np.abs(np.cov(replicas, rowvar=False) - total) < tolerance)


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
