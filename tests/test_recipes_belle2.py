"""Belle II PID recipes end to end on their CI-size toys: closure of the sWeighted data and the counted
simulation, per-species scale factors, ROC ordering of the working points, counts against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.tables.rows import read_csv

from .recipe_helpers import (
    assert_closes,
    assert_closes_widened,
    bin_index,
    efficiencies,
    pulls,
    recipe,
    run,
    shrink,
    strictly_decreasing,
    toy_inputs,
)

CI = {  # 8 x 5 bins: 4 samples give 160 efficiency pulls, so the closure bands of ±0.2 are ≥ 2.5σ wide
    "belle2_pid_dstar": (
        {"kaon_data": 100000, "pion_data": 100000, "kaon_mc": 40000, "pion_mc": 40000},
        {"p": [0.5, 0.78, 1.0, 1.22, 1.45, 1.72, 2.07, 2.6, 4.5],
         "cosTheta": [-0.866, -0.24, 0.066, 0.32, 0.58, 0.956]},
    ),
    "belle2_pid_v0": (
        {"proton_data": 70000, "pion_data": 70000, "proton_mc": 40000, "pion_mc": 100000},
        {"p": [0.2, 0.45, 0.6, 0.75, 0.9, 1.1, 1.35, 1.75, 4.0],
         "cosTheta": [-0.866, -0.24, 0.066, 0.32, 0.58, 0.956]},
    ),
}
N_BINS = 40
SPECIES = {"belle2_pid_dstar": ("kaon", "pion"), "belle2_pid_v0": ("proton", "pion")}


@pytest.fixture(scope="module", params=sorted(CI))
def out(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = request.param
    return run(shrink(recipe(name), *CI[name]), tmp_path_factory.mktemp(name))


def _name(out: Path) -> str:
    return out.name.removesuffix("_ci")


def _working_points(out: Path) -> list[str]:
    """Working points from loose to tight (names end in the cut value, e.g. kaonID_0p8)."""
    return sorted(recipe(_name(out))["working_points"], key=lambda wp: float(wp.rsplit("_", 1)[1].replace("p", ".")))


def test_every_bin_measured(out: Path) -> None:
    eff = efficiencies(out)
    assert len(eff) == 4 * N_BINS
    # fits without problems; CI-size toys leave some bins with fewer than fit.min_candidates (flagged as such)
    clean = ("ok", "low_statistics")
    assert all(r["fit_status"] in clean for r in eff.values()), {
        k: r["fit_status"] for k, r in eff.items() if r["fit_status"] not in clean}
    methods = {s: r["method"] for (s, _), r in eff.items()}
    assert {s: m for s, m in methods.items() if s.endswith("_data")} == dict.fromkeys(
        [f"{sp}_data" for sp in SPECIES[_name(out)]], "sweights")


@pytest.mark.parametrize("quantity", ["efficiency", "scale_factor"])
def test_closure(out: Path, quantity: str) -> None:
    """Efficiencies: the strict bands on 160 pulls; scale factors (80 pulls, data and simulation errors
    combined) the bands widened by 2/√N."""
    p = pulls(out, quantity)
    assert p.size == (4 if quantity == "efficiency" else 2) * N_BINS
    (assert_closes if quantity == "efficiency" else assert_closes_widened)(p)


def test_scale_factors_per_species(out: Path) -> None:
    """``reference`` maps each data sample to its own simulation."""
    rows = read_csv(out / "scale_factors.csv")
    pairs = {(r["data"], r["mc"]) for r in rows}
    assert pairs == {(f"{sp}_data", f"{sp}_mc") for sp in SPECIES[_name(out)]}
    eff = efficiencies(out)
    for r in rows:
        assert r["scale_factor"] == pytest.approx(eff[(r["data"], r["bin"])]["efficiency"]
                                                  / eff[(r["mc"], r["bin"])]["efficiency"], rel=1e-12)


def test_nominal_equals_its_working_point(out: Path) -> None:
    """``pass`` and the middle working point are the same cut: same numbers from separate variants."""
    nominal, wp = efficiencies(out), efficiencies(out, _working_points(out)[1])
    for key, r in nominal.items():
        assert wp[key]["efficiency"] == pytest.approx(r["efficiency"], rel=1e-9, abs=1e-12), key


def test_working_points_reuse_one_splot_fit_per_bin(out: Path) -> None:
    """Four pass decisions (nominal and three working points) of every data bin (and of the ROC's
    inclusive bin): one mass fit per bin, read back by every other pass decision."""
    import json

    for sample in (f"{sp}_data" for sp in SPECIES[_name(out)]):
        n_fits = len(list((out / "splots" / sample).glob("*.json")))
        results = [json.loads(f.read_text()) for f in (out / "fits" / sample).glob("*.json")]
        bins = {r["bin"] for r in results}
        assert n_fits == len(bins) >= N_BINS
        assert len(results) >= 3 * len(bins)  # nominal may share its task with the equal working point
        fresh = [r["bin"] for r in results if not r["splot_reused"]]
        assert sorted(fresh) == sorted(bins)
        assert {r["variance"] for r in results} == {"sandwich"}


def test_roc_tighter_is_lower_for_both_species(out: Path) -> None:
    roc = read_csv(out / "roc.csv")
    order = _working_points(out)
    bins = {r["bin"] for r in roc}
    assert "inclusive" in bins and len(bins) == N_BINS + 1
    for b in bins:
        rows = {r["working_point"]: r for r in roc if r["bin"] == b}
        for key in ("eff_signal", "eff_background"):
            values = [rows[wp][key] for wp in order]
            assert strictly_decreasing(values), (b, key, values)
    inclusive = {r["working_point"]: r for r in roc if r["bin"] == "inclusive"}
    # identification beats misidentification by far at every working point (toy: 0.94 vs 0.31 loosest)
    assert all(r["eff_signal"] - r["eff_background"] > 0.45 for r in inclusive.values())


def _dstar_mc_counts(out: Path, sample: str) -> tuple[np.ndarray, np.ndarray]:
    """(passing, total) per bin of a D* simulation sample, selected and counted with numpy."""
    t = "K" if sample == "kaon_mc" else "pi"
    names = ["D0_M", "DeltaM", "K_charge", "pi_charge", "pisoft_charge", "isSignal", f"{t}_isSignal", f"{t}_p",
             f"{t}_cosTheta", f"{t}_kaonID"]
    with uproot.open(toy_inputs(out, sample)[0]) as f:
        a = f["variables"].arrays(names, library="np")
    p, c = a[f"{t}_p"], a[f"{t}_cosTheta"]
    keep = (a["K_charge"] * a["pisoft_charge"] < 0) & (a["pi_charge"] * a["pisoft_charge"] > 0)
    keep &= (p > 0.5) & (p < 4.5) & (c > -0.866) & (c < 0.956) & (np.abs(a["DeltaM"] - 0.14543) < 0.0015)
    keep &= (a["isSignal"] == 1) & (a[f"{t}_isSignal"] == 1) & (a["D0_M"] >= 1.81) & (a["D0_M"] < 1.92)
    edges = CI["belle2_pid_dstar"][1]
    idx = bin_index([edges["p"], edges["cosTheta"]], [p, c])
    keep &= idx >= 0
    return (np.bincount(idx[keep & (a[f"{t}_kaonID"] > 0.5)], minlength=N_BINS),
            np.bincount(idx[keep], minlength=N_BINS))


def test_counted_simulation_equals_numpy(out: Path) -> None:
    """The per-sample aliases pick the kaon or the pion branches: counts as numpy finds them."""
    if _name(out) != "belle2_pid_dstar":
        pytest.skip("checked on the D* recipe")
    eff = efficiencies(out)
    for sample in ("kaon_mc", "pion_mc"):
        passing, total = _dstar_mc_counts(out, sample)
        assert total.min() > 100
        for b in range(N_BINS):
            r = eff[(sample, b)]
            assert (r["n_pass"], r["n_pass"] + r["n_fail"]) == (passing[b], total[b]), (sample, b)


# --- building blocks: generator truth, per-sample aliases, per-species references ------------------
@pytest.mark.parametrize("cut", [0.2, 0.5, 0.8])
def test_generator_truth_is_the_pass_probability(cut: float) -> None:
    """The stored truth (for the generator's cut) predicts the pass rate of the generated scores."""
    from calibflow.toys.belle2 import generate_dstar

    d = generate_dstar(200_000, True, np.random.default_rng(7), kaon_id_cut=cut)
    for t in ("K", "pi"):
        passed, truth = d[f"{t}_kaonID"] > cut, d[f"toy_{t}_true_eff"]
        sigma = np.sqrt(np.sum(truth * (1 - truth))) / truth.size
        assert abs(passed.mean() - truth.mean()) < 4 * sigma, (t, passed.mean(), truth.mean())
    signal = d["isSignal"] == 1
    assert np.all(d["K_isSignal"][signal] == 1) and 0.0 < d["K_isSignal"][~signal].mean() < 0.5


def test_sample_aliases_override_global_ones_and_enter_the_prep_key() -> None:
    from calibflow.config import ConfigError, parse_config
    from calibflow.prep.spec import prep_spec

    d = recipe("belle2_pid_dstar")
    d["aliases"] = {"p": "K_p", "unused": "K_pt"}
    cfg = parse_config(d)
    assert cfg.sample_aliases("pion_data")["p"] == "pi_p" and cfg.sample_aliases("pion_data")["unused"] == "K_pt"
    kaon, pion = prep_spec(cfg, "kaon_data"), prep_spec(cfg, "pion_data")
    assert "K_kaonID" in kaon.branches and "pi_kaonID" not in kaon.branches
    assert "pi_kaonID" in pion.branches and "pi_p" in pion.branches
    # same texts and branches, another alias definition: another prepared tuple
    d["samples"]["kaon_data"]["aliases"]["p"] = "K_p * 1.0"
    assert prep_spec(parse_config(d), "kaon_data").describe() != kaon.describe()
    d["reference"] = {"kaon_mc": "kaon_mc"}
    with pytest.raises(ConfigError, match=r"reference\.kaon_mc: 'kaon_mc' is not a data sample"):
        parse_config(d)
