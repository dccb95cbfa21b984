"""Issue 18, items 1 and 2: simulation templates as the signal (``fit.signal: template``) and fits constrained by
a fit of the simulation (``fit.constrain``); EGM's sequence (simulation fit, altSig, altBkg, altSigBkg) as
systematic variations of one config.

Toys: the data's signal is drawn from the template histogram itself (uniform within its bins), shifted and
smeared by a known Gaussian per category, on an exponential background, so the template model is the true one.
Pulls of ε over 100 toys: |mean| ≤ 0.2 and width 0.85–1.15 (the 1σ statistical precision of 100 pulls is 0.1
on the mean and 0.07 on the width); measured: binned −0.03 / 0.91, unbinned −0.07 / 1.01 (mean / width).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from iminuit import Minuit
from scipy import special

from calibflow.fit import models as M
from calibflow.fit.constraints import constrained, from_result, penalty
from calibflow.fit.passfail import PassFailModel, binned_cost, fit_pass_fail
from calibflow.fit.templates import (
    auto_width,
    smooth_counts,
    template_record,
    template_signals,
)
from calibflow.fit.unbinned import fit_pass_fail_unbinned

LO, HI = 2950.0, 3250.0
EDGES = np.linspace(LO, HI, 101)
TRUE = {"shift_pass": 1.5, "smear_pass": 4.0, "shift_fail": -2.0, "smear_fail": 8.0}


def _radiative(n: int, rng: np.random.Generator) -> np.ndarray:
    """A non-Gaussian J/ψ-like peak: Gaussian core (σ 9) and a radiative tail below it."""
    core, tail = rng.normal(3097.0, 9.0, n), 3097.0 - rng.exponential(30.0, n)
    return np.where(rng.random(n) < 0.75, core, tail)


@pytest.fixture(scope="module")
def templates() -> dict[str, Any]:
    """Simulation templates of one bin: pass and fail histograms of 200k and 100k candidates."""
    rng = np.random.default_rng(11)
    sumw = np.stack([np.histogram(_radiative(k, rng), EDGES)[0] for k in (200_000, 100_000)]).astype(float)
    return template_record(EDGES, sumw, None, False, 0.0)


def _from_template(counts: list[float], n: int, shift: float, smear: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` masses drawn from the histogram ``counts`` on EDGES (uniform in a bin), shifted and smeared."""
    c = np.asarray(counts)
    k = rng.choice(c.size, size=n, p=c / c.sum())
    return EDGES[k] + rng.random(n) * np.diff(EDGES)[k] + rng.normal(shift, smear, n)


def _toy(rec: dict[str, Any], seed: int, n_sig: int = 6000, eff: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(pass, fail) masses of a toy: template signal (TRUE shifts and widths) and exponential backgrounds."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(n_sig)
    k = rng.binomial(n, eff)
    sp = _from_template(rec["pass"], k, TRUE["shift_pass"], TRUE["smear_pass"], rng)
    sf = _from_template(rec["fail"], n - k, TRUE["shift_fail"], TRUE["smear_fail"], rng)
    bp = LO + rng.exponential(250.0, rng.poisson(n_sig / 4))
    bf = LO + rng.exponential(150.0, rng.poisson(n_sig * 2 / 3))
    mp, mf = np.concatenate([sp, bp]), np.concatenate([sf, bf])
    return mp[(mp >= LO) & (mp <= HI)], mf[(mf >= LO) & (mf <= HI)]


def _pull(value: float, down: float, up: float, truth: float) -> float:
    return (value - truth) / (up if value < truth else down)


# --------------------------------------------------------------------------------------------------
# the template kernel, smoothing and the grid of the unbinned path, against plain numpy
# --------------------------------------------------------------------------------------------------
def test_unsmeared_template_is_the_histogram() -> None:
    counts = np.array([1.0, 3.0, 0.0, 2.0])
    e = np.array([0.0, 1.0, 2.0, 2.5, 4.0])
    t = M.template_shape(e, counts)
    x = np.array([-1.0, 0.0, 0.5, 1.2, 2.2, 2.7, 3.9, 4.0, 5.0])
    dens = counts / counts.sum() / np.diff(e)
    k = np.clip(np.searchsorted(e, x, side="right") - 1, 0, 3)
    inside = (x >= e[0]) & (x < e[-1])
    np.testing.assert_allclose(t.pdf(x, 0.0, 0.0), np.where(inside, dens[k], 0.0), atol=1e-12)
    cum = np.concatenate([[0.0], np.cumsum(counts / counts.sum())])
    ref = np.where(x < e[0], 0.0, np.where(x >= e[-1], 1.0, cum[k] + dens[k] * (x - e[k])))
    np.testing.assert_allclose(t.cdf(x, 0.0, 0.0), ref, atol=1e-12)
    np.testing.assert_allclose(t.cdf(x + 0.3, 0.3, 0.0), ref, atol=1e-12)  # a shift moves it


def test_grid_density_matches_exact(templates: dict[str, Any]) -> None:
    """Many points (unbinned fits): the interpolated density agrees with the exact convolution to 1e-3 of its peak."""
    sp, _ = template_signals(templates)
    x = np.sort(np.random.default_rng(3).uniform(LO, HI, M.TEMPLATE_GRID_FROM + 500))
    grid = sp.pdf(x, 1.0, 3.0)
    exact = np.concatenate([sp.pdf(x[i : i + 1000], 1.0, 3.0) for i in range(0, x.size, 1000)])
    assert np.max(np.abs(grid - exact)) < 1e-3 * exact.max()


def test_smoothing_against_numpy() -> None:
    rng = np.random.default_rng(5)
    counts = rng.poisson(3.0, 40).astype(float)
    e = np.linspace(0.0, 20.0, 41)
    width = 1.3
    c = 0.5 * (e[1:] + e[:-1])
    ref = np.zeros(40)
    for i in range(40):  # bin i's content spread over the bins by a Gaussian at its centre
        ref += counts[i] * (special.ndtr((e[1:] - c[i]) / width) - special.ndtr((e[:-1] - c[i]) / width))
    ref *= counts.sum() / ref.sum()
    np.testing.assert_allclose(smooth_counts(e, counts, width), ref, rtol=1e-12)
    np.testing.assert_array_equal(smooth_counts(e, counts, 0.0), counts)
    sd = math.sqrt(np.average((c - np.average(c, weights=counts)) ** 2, weights=counts))
    assert auto_width(e, counts) == pytest.approx(1.06 * sd * counts.sum() ** -0.2)
    rec = template_record(e, np.stack([counts, counts]), None, False, "auto")
    assert rec["smooth_pass"] == pytest.approx(auto_width(e, counts))
    assert sum(rec["pass"]) == pytest.approx(counts.sum())


# --------------------------------------------------------------------------------------------------
# toys whose true signal is the template: pulls of ε
# --------------------------------------------------------------------------------------------------
def _check_pulls(pulls: list[float], values: dict[str, list[float]]) -> None:
    p = np.asarray(pulls)
    print(f"pulls of ε over {p.size} toys: mean {p.mean():+.3f}, width {p.std(ddof=1):.3f}")
    assert p.size >= 100
    assert abs(p.mean()) <= 0.2, p.mean()
    assert 0.85 <= p.std(ddof=1) <= 1.15, p.std(ddof=1)
    for name, v in values.items():  # the Gaussian's shift and width are found too
        assert np.mean(v) == pytest.approx(TRUE[name], abs=0.1 * abs(TRUE[name]) + 0.3), name


def test_binned_template_toys_close(templates: dict[str, Any]) -> None:
    sp, sf = template_signals(templates)
    pulls, values = [], {k: [] for k in TRUE}
    for seed in range(100):
        mp, mf = _toy(templates, seed)
        r = fit_pass_fail(EDGES, np.histogram(mp, EDGES)[0].astype(float), np.histogram(mf, EDGES)[0].astype(float),
                          signal=sp, signal_fail=sf)
        assert r.status == "ok", r.status
        pulls.append(_pull(r.efficiency, r.err_down, r.err_up, 0.8))
        for k in TRUE:
            values[k].append(r.values[k])
    _check_pulls(pulls, values)


@pytest.mark.slow
def test_unbinned_template_toys_close(templates: dict[str, Any]) -> None:
    sp, sf = template_signals(templates)
    pulls, values = [], {k: [] for k in TRUE}
    for seed in range(1000, 1100):
        mp, mf = _toy(templates, seed, n_sig=1500)
        r = fit_pass_fail_unbinned(mp, mf, LO, HI, signal=sp, signal_fail=sf)
        assert "invalid" not in r.status, r.status
        pulls.append(_pull(r.efficiency, r.err_down, r.err_up, 0.8))
        for k in TRUE:
            values[k].append(r.values[k])
    _check_pulls(pulls, values)


# --------------------------------------------------------------------------------------------------
# constraints: the penalty, its weight against a hand computation, fixed values
# --------------------------------------------------------------------------------------------------
def _gauss_histograms(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sig = rng.normal(3097.0, 12.0, 4000)
    passed = rng.random(sig.size) < 0.7
    bkg_p, bkg_f = LO + rng.exponential(300.0, 800), LO + rng.exponential(200.0, 1500)
    hp = np.histogram(np.concatenate([sig[passed], bkg_p]), EDGES)[0].astype(float)
    hf = np.histogram(np.concatenate([sig[~passed], bkg_f]), EDGES)[0].astype(float)
    return hp, hf


def test_penalty_and_results() -> None:
    names = ["n_sig", "eff", "sigma", "alpha"]
    term = penalty(names, {"sigma": (10.0, 2.0), "alpha": (1.5, 0.5), "other": (0.0, 1.0)})
    assert term is not None
    assert term(np.array([0.0, 0.0, 13.0, 1.0])) == pytest.approx(1.5**2 + 1.0**2)
    assert penalty(names, {"other": (0.0, 1.0)}) is None
    assert constrained(sum, names, None) is sum
    result = {"values": {"sigma": 10.0, "alpha": 1.5, "n": 3.0}, "errors": {"sigma": 2.0, "alpha": 0.5, "n": 0.0}}
    cons, fixed = from_result(result, ["sigma", "alpha", "n"], scale=2.0)
    assert cons == {"sigma": (10.0, 4.0), "alpha": (1.5, 1.0)}
    assert fixed == {"n": {"value": 3.0, "fixed": True}}  # fixed in the simulation fit: fixed here
    cons, fixed = from_result(result, ["sigma"], fix=True)
    assert cons == {} and fixed == {"sigma": {"value": 10.0, "fixed": True}}
    with pytest.raises(ValueError, match="mu"):
        from_result(result, ["mu"])


def test_constraint_pulls_with_the_right_weight() -> None:
    """A Gaussian constraint v ± σ_c on a parameter measured x̂ ± σ_d moves it to the weighted mean
    (x̂/σ_d² + v/σ_c²)/(1/σ_d² + 1/σ_c²) with error (1/σ_d² + 1/σ_c²)^(−1/2) (profile likelihood, parabolic)."""
    hp, hf = _gauss_histograms()
    free = fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False)
    x, sd = free.values["sigma"], free.errors["sigma"]
    for scale in (1.0, 2.0):
        v, sc = x + 2.0 * sd, scale * sd
        r = fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False, constraints={"sigma": (v, sc)})
        wd, wc = sd**-2, sc**-2
        assert r.values["sigma"] == pytest.approx((x * wd + v * wc) / (wd + wc), abs=0.05 * sd)
        assert r.errors["sigma"] == pytest.approx((wd + wc) ** -0.5, rel=0.05)
        model = PassFailModel.create("gauss", "exponential", LO, HI)
        cost = binned_cost(model, EDGES, hp, hf, np.ones_like(hp), np.ones_like(hf))
        # iminuit directly on the data cost plus the penalty: the same minimum
        def direct(p: np.ndarray, cost: Any = cost, v: float = v, sc: float = sc) -> float:
            return cost(p) + ((p[5] - v) / sc) ** 2

        m = Minuit(direct, list(free.values.values()), name=model.names)
        m.errordef = Minuit.LEAST_SQUARES
        m.limits = [(0, None), (0, 1), (0, None), (0, None), (LO, HI), (0.1, 75), (-0.1, 0.1), (-0.1, 0.1)]
        m.migrad()
        assert m.values["sigma"] == pytest.approx(r.values["sigma"], abs=0.02 * sd)
        assert m.values["eff"] == pytest.approx(r.efficiency, abs=0.02 * r.errors["eff"])


def _baker_cousins(model: PassFailModel, edges: np.ndarray, counts: list[np.ndarray], x: np.ndarray) -> float:
    """2Σ[ν − n + n ln(n/ν)] over the pass and fail bins, by hand from the model's expected counts."""
    total = 0.0
    for n, nu in zip(counts, model.expected(edges, x), strict=True):
        log = np.where(n > 0, n * np.log(np.where(n > 0, n, 1.0) / nu), 0.0)
        total += 2.0 * float(np.sum(nu - n + log))
    return total


def test_constraints_count_in_chi2_and_ndof() -> None:
    """The reported χ² of a constrained fit is the data's Baker-Cousins χ² plus each constraint's ((x − v)/σ)², its
    ndof the mass bins plus the constraints less the free parameters (RooFit's convention: a constraint is one more
    measurement), checked against a hand computation, binned and unbinned; fixed instead of constrained, a parameter
    leaves both χ² and ndof as the data's."""
    from scipy import stats

    from calibflow.fit.unbinned import N_START_BINS

    hp, hf = _gauss_histograms()
    model = PassFailModel.create("gauss", "exponential", LO, HI)  # n_sig, eff, 2 bkg yields, mu, sigma, 2 slopes
    free_params = 8
    free = fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False)
    assert free.ndof == 200 - free_params and "n_constraints" not in free.to_dict()
    cons = {"sigma": (free.values["sigma"] + 1.0, 0.5), "mu": (3096.0, 0.8)}
    r = fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False, constraints=cons)
    x = np.array([r.values[n] for n in model.names])
    data_chi2 = _baker_cousins(model, EDGES, [hp, hf], x)
    hand = ((r.values["sigma"] - cons["sigma"][0]) / 0.5) ** 2 + ((r.values["mu"] - 3096.0) / 0.8) ** 2
    assert hand > 1.0  # the constraints pull: their part is no rounding error
    assert r.chi2 == pytest.approx(data_chi2 + hand, rel=1e-9)
    assert r.chi2_constraints == pytest.approx(hand, rel=1e-9)
    assert (r.ndof, r.n_constraints) == (200 + 2 - free_params, 2)
    assert r.chi2_pvalue == pytest.approx(stats.chi2.sf(data_chi2 + hand, 200 + 2 - free_params), rel=1e-9)
    assert r.attempts[r.accepted]["ndof"] == r.ndof and r.to_dict()["n_constraints"] == 2
    # a constraint on a parameter the model has not counts nothing
    assert fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False, constraints={"alpha": (1.0, 0.1)}).ndof == 192
    # fixed to v instead: the data's χ² at that value, one free parameter fewer
    fixed = fit_pass_fail(EDGES, hp, hf, signal="gauss", minos=False,
                          parameters={"sigma": {"value": cons["sigma"][0], "fixed": True}})
    assert fixed.ndof == 200 - (free_params - 1) and "n_constraints" not in fixed.to_dict()
    # unbinned: the χ² of the 100-bin histograms of the candidates plus the constraints
    rng = np.random.default_rng(3)
    mp = np.concatenate([rng.normal(3097.0, 12.0, 2800), LO + rng.exponential(300.0, 800)])
    mf = np.concatenate([rng.normal(3097.0, 12.0, 1200), LO + rng.exponential(200.0, 1500)])
    u = fit_pass_fail_unbinned(mp, mf, LO, HI, signal="gauss", minos=False, constraints=cons)
    edges = np.linspace(LO, HI, N_START_BINS + 1)
    counts = [np.histogram(m[(m >= LO) & (m <= HI)], edges)[0].astype(float) for m in (mp, mf)]
    xu = np.array([u.values[n] for n in model.names])
    hand_u = ((u.values["sigma"] - cons["sigma"][0]) / 0.5) ** 2 + ((u.values["mu"] - 3096.0) / 0.8) ** 2
    data_u = _baker_cousins(model, edges, counts, xu)
    assert u.chi2 == pytest.approx(data_u + hand_u, rel=1e-6)
    assert (u.ndof, u.n_constraints) == (2 * N_START_BINS + 2 - free_params, 2)


# --------------------------------------------------------------------------------------------------
# config, checks and content keys
# --------------------------------------------------------------------------------------------------
def _template_config(d: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    d["fit"] = {"signal": "template", "background": "exponential", "template": {"from": "mc"}}
    d["outputs"]["plots"] = False
    return d


ALT_SIG = {"signal": "crystalball", "fail_gauss": True,
           "parameters": {"mu": {"value": 3097, "limits": [3070, 3120]}, "sigma": {"value": 13, "limits": [4, 40]}},
           "constrain": {"from": "mc", "parameters": ["alpha", "n"]}}
"""EGM's altSig: an analytic signal (with the fail Gaussian, ``--addGaus``) whose tail parameters are constrained by
the simulation fit (``--mcSig``)."""


def egm_sequence(d: dict[str, Any]) -> dict[str, Any]:
    """The demo as EGM fits it: template nominal; altSig, altBkg and altSigBkg as systematic variations."""
    d = _template_config(d)
    d["systematics"] = {"combine": "egm_rms", "sources": [
        {"name": "altSig", "vary": {"fit": copy.deepcopy(ALT_SIG)}},
        {"name": "altBkg", "vary": {"fit": {"background": "chebyshev2"}}},
        {"name": "altSigBkg", "vary": {"fit": {**copy.deepcopy(ALT_SIG), "background": "chebyshev2"}}}]}
    return d


def test_config_checks(write_config: Any) -> None:
    from pydantic import ValidationError

    from calibflow.config import ConfigError, FitConfig
    from calibflow.plan import Plan
    from tests.conftest import small_demo_dict

    with pytest.raises(ValidationError, match=r"fit\.template: required"):
        FitConfig(signal="template")
    assert "template" not in FitConfig().model_dump() and "constrain" not in FitConfig().model_dump()
    d = _template_config(small_demo_dict())
    d["fit"]["template"]["from"] = "mcc"
    with pytest.raises(ConfigError, match=r"fit\.template\.from: unknown sample 'mcc'"):
        Plan.create(write_config(d), write_config(d).parent / "res").check_models()
    d = egm_sequence(small_demo_dict())
    d["systematics"]["sources"][0]["vary"]["fit"]["constrain"]["parameters"] = ["alpah"]
    with pytest.raises(ConfigError, match=r"fit\.constrain\.parameters: 'alpah' is not a parameter"):
        Plan.create(write_config(d), write_config(d).parent / "res").check_models()
    d = _template_config(small_demo_dict())
    d["fit"]["parameters"] = {"smear_fail": {"value": 5.0, "limits": [0, 20]}, "shift_pass": {"value": 0, "fixed": True}}
    Plan.create(write_config(d), write_config(d).parent / "res").check_models()
    d = small_demo_dict()  # an analytic nominal signal, the template as a variation
    d["fit"]["template"] = {"from": "mc", "smooth": "auto"}
    d["systematics"] = {"sources": [{"name": "tmpl", "vary": {"fit": {"signal": "template", "parameters": None}}}]}
    plan = Plan.create(write_config(d), write_config(d).parent / "res")
    plan.check_models()
    assert plan.with_variant("tmpl").config.fit.template == plan.config.fit.template
    assert "template" not in json.dumps(plan.config.fit.keyed().model_dump())


def _keys(write_config: Any, d: dict[str, Any], name: str) -> dict[str, Any]:
    from calibflow.plan import Plan

    path = write_config(d, name)
    plan = Plan.create(path, path.parent / "res")
    bins = [b.key for b in plan.scheme().bins]  # type: ignore[union-attr]
    out = {f"fit_{s}": plan.fit_keys(s, bins) for s in ("data", "mc")}
    out.update({f"hist_{s}": plan.hist_key(s) for s in ("data", "mc")})
    alt = plan.with_variant("altSig")
    out["fit_data_altSig"] = alt.fit_keys("data", bins)
    out["constraints"] = alt.constraint_keys(bins)
    return out


def test_new_simulation_refits_the_data_only(write_config: Any) -> None:
    """A change of the simulation changes the data fits' keys (templates and constraints) and no other data key;
    a change of the smoothing changes the template fits only."""
    from tests.conftest import small_demo_dict

    d = egm_sequence(small_demo_dict())
    base = _keys(write_config, d, "a.yaml")
    d2 = copy.deepcopy(d)
    d2["toy"]["samples"]["mc"]["candidates"] = 31000
    new = _keys(write_config, d2, "b.yaml")
    assert new["hist_data"] == base["hist_data"] and new["hist_mc"] != base["hist_mc"]
    for k in ("fit_data", "fit_data_altSig", "constraints"):
        assert not set(new[k]) & set(base[k]), k
    d3 = copy.deepcopy(d)
    d3["fit"]["template"]["smooth"] = 2.0
    smooth = _keys(write_config, d3, "c.yaml")
    assert smooth["fit_mc"] == base["fit_mc"] and smooth["hist_data"] == base["hist_data"]
    assert not set(smooth["fit_data"]) & set(base["fit_data"])
    assert smooth["fit_data_altSig"] == base["fit_data_altSig"]  # the variant's own fit section: unchanged


# --------------------------------------------------------------------------------------------------
# the graph: the small demo fitted with templates, EGM's sequence as systematics
# --------------------------------------------------------------------------------------------------
def test_small_demo_template_and_egm_sequence(write_config: Any, tmp_path: Path) -> None:
    from tasks.cli import main
    from tests.conftest import small_demo_dict

    d = egm_sequence(small_demo_dict())
    d["systematics"]["sources"].append({"name": "unbinned", "vary": {"fit": {"binned": False}}})  # template unbinned
    assert main(["run", str(write_config(d)), "--workers", "2", "--result-dir", str(tmp_path / "res")]) == 0
    out = tmp_path / "res" / d["name"]
    results = [json.loads(p.read_text()) for p in (out / "fits" / "data").glob("*.json")]
    nominal = [r for r in results if r.get("signal_model") == "template"]  # nominal, altBkg and unbinned
    alt = [r for r in results if "constraints" in r]
    assert len(nominal) == 18 and all(set(r["template"]) >= {"edges", "pass", "fail"} for r in nominal)
    statuses = [r["status"] for r in nominal if "slope_pass" in r["values"]]  # nominal and unbinned
    # one unbinned bin is degenerate (≈ 27 failing signal candidates; shift_fail runs to its ±10 limit, smear_fail to
    # 0): its MINOS may fail there, which the status says; every other fit is ok
    assert len(statuses) == 12 and set(statuses) <= {"ok", "low_statistics", "minos_failed"}, statuses
    assert statuses.count("minos_failed") <= 1, statuses
    assert sum(bool(r["ks"]) for r in nominal) == 6  # the unbinned ones
    assert len(alt) == 12 and all("alpha" in r["constraints"] or "alpha" in r["constraints_fixed"] for r in alt)
    # one simulation fit per bin and fit model: altSig's (exponential background) and altSigBkg's (chebyshev2)
    assert len(list((out / "constraints" / "mc").glob("*.json"))) == 12
    import pandas as pd

    eff = pd.read_csv(out / "efficiencies.csv")
    data = eff[eff["sample"] == "data"]
    for col in ("altSigUp", "altBkgUp", "altSigBkgUp", "unbinnedUp", "syst"):
        assert np.isfinite(data[col]).all(), col
    closure = pd.read_csv(out / "closure.csv")
    pulls = closure[(closure["sample"] == "data") & (closure["quantity"] == "efficiency")]["pull"]
    assert (pulls.abs() < 4).all(), pulls.tolist()
    figures = out / "gallery" / "nominal" / "data"
    assert len(list(figures.glob("*.png"))) == 6, (figures / "index.html").read_text()[:2000]  # template fits' figures
    for r in alt:  # χ² and ndof count the constraints the reported model has (a gauss fallback: none)
        free_params, applied = sum(e > 0 for e in r["errors"].values()), len(set(r["constraints"]) & set(r["values"]))
        assert r.get("n_constraints", 0) == applied and r["ndof"] == 200 + applied - free_params
    # the simulation fits giving the constraints have figures too, named as the fits' (result key, figure key)
    pngs = sorted((out / "constraints" / "mc").glob("*.png"))
    assert len(pngs) == 12 and all(p.stat().st_size > 10_000 for p in pngs)
    assert {p.name.split(".")[0] for p in pngs} == {p.stem for p in (out / "constraints" / "mc").glob("*.json")}
    assert len({p.name.split(".")[1] for p in pngs}) == 1  # one figure key
    for variant in ("altSig", "altSigBkg"):
        gallery = out / "gallery" / variant / "_constraints" / "mc"
        page = (gallery / "index.html").read_text()
        shown = sorted(gallery.glob("*.png"))
        assert len(shown) == 6 and all(f'src="{p.name}"' in page for p in shown), page[:2000]
        assert "simulation fits of mc for fit.constrain" in page
    assert not (out / "gallery" / "nominal" / "_constraints").exists()  # the nominal fit has no constraints
    # relabelled: nothing is refitted, the export draws the simulation fits' figures of the new figure key
    d["mass"]["label"] = "$m_{\\mu\\mu}$"
    assert main(["run", str(write_config(d)), "--workers", "2", "--result-dir", str(tmp_path / "res")]) == 0
    assert len(list((out / "constraints" / "mc").glob("*.json"))) == 12
    again = sorted(set((out / "constraints" / "mc").glob("*.png")) - set(pngs))
    assert len(again) == 12 and all(p.stat().st_size > 10_000 for p in again)
    gallery = out / "gallery" / "altSig" / "_constraints" / "mc"
    assert {p.read_bytes() for p in gallery.glob("*.png")} <= {p.read_bytes() for p in again}  # the new ones


def test_measure_bin_with_references(templates: dict[str, Any]) -> None:
    """``measure_bin`` of method fit with the reference simulation: template fits binned and unbinned (the
    template stored with the result), a constrained fit, and the bins that cannot be fitted."""
    from calibflow.config import FitConfig
    from calibflow.fit.histograms import BinCandidates, BinHistograms
    from calibflow.fit.measure import measure_bin

    counts = np.stack([np.asarray(templates["pass"]), np.asarray(templates["fail"])])
    mc = BinHistograms(edges=EDGES, sumw=counts, sumw2=counts, weighted=False)
    mp, mf = _toy(templates, 5)
    hist = BinHistograms(edges=EDGES, sumw=np.stack([np.histogram(mp, EDGES)[0], np.histogram(mf, EDGES)[0]]) * 1.0,
                         sumw2=np.stack([np.histogram(mp, EDGES)[0], np.histogram(mf, EDGES)[0]]) * 1.0, weighted=False)
    cands = BinCandidates(mass=np.concatenate([mp, mf]), passed=np.arange(mp.size + mf.size) < mp.size,
                          weight=np.ones(mp.size + mf.size), weighted=False, lo=LO, hi=HI)
    fit = FitConfig(signal="template", template={"from": "mc", "smooth": "auto"})
    binned = measure_bin("fit", fit, hist=hist, reference={"template": mc})
    unbinned = measure_bin("fit", fit.model_copy(update={"binned": False}), cands=cands, reference={"template": mc})
    for r in (binned, unbinned):
        assert r["status"] == "ok" and r["signal_model"] == "template"
        assert r["efficiency"] == pytest.approx(0.8, abs=4 * r["err_up"])
        assert r["template"]["smooth_pass"] > 0 and len(r["template"]["fail"]) == 100
    assert unbinned["efficiency"] == pytest.approx(binned["efficiency"], abs=0.3 * binned["err_up"])
    empty = BinHistograms(edges=EDGES, sumw=counts * [[1.0], [0.0]], sumw2=counts * [[1.0], [0.0]], weighted=False)
    assert measure_bin("fit", fit, hist=hist, reference={"template": empty})["status"] == "no_template"
    constrained_fit = FitConfig(signal="template", template={"from": "mc"},
                                constrain={"from": "mc", "parameters": ["smear_fail"], "scale": 0.5})
    source = {"values": {"smear_fail": 6.0}, "errors": {"smear_fail": 0.2}, "status": "ok"}
    r = measure_bin("fit", constrained_fit, hist=hist, reference={"template": mc, "constraint": source})
    assert r["constraints"] == {"smear_fail": [6.0, 0.1]} and r["constraint_status"] == "ok"
    free_params = sum(e > 0 for e in r["errors"].values())  # fixed parameters have error 0
    assert (r["n_constraints"], r["ndof"]) == (1, 2 * 100 + 1 - free_params)
    assert r["chi2_constraints"] == pytest.approx(((r["values"]["smear_fail"] - 6.0) / 0.1) ** 2, rel=1e-9)
    assert abs(r["values"]["smear_fail"] - 6.0) < abs(binned["values"]["smear_fail"] - 6.0)  # pulled towards 6
    source["values"]["smear_fail"] = float("nan")
    bad = measure_bin("fit", constrained_fit, hist=hist, reference={"template": mc, "constraint": source})
    assert bad["status"] == "no_constraint"


def test_signal_only_simulation_fit(write_config: Any) -> None:
    """``fit.constrain.background: false``: the simulation fit of every bin fixes both background yields to 0 and
    their shapes; the default (true) is left out of the dump (earlier configs keep their keys) and fixes nothing."""
    from calibflow.config import ConstrainConfig
    from calibflow.plan import Plan
    from tests.conftest import small_demo_dict

    assert "background" not in ConstrainConfig.model_validate({"from": "mc", "parameters": ["alpha"]}).model_dump()
    d = egm_sequence(small_demo_dict())
    plans = {}
    for signal_only in (False, True):
        d["systematics"]["sources"][0]["vary"]["fit"]["constrain"]["background"] = not signal_only
        path = write_config(d, f"signal_only_{signal_only}")
        plans[signal_only] = Plan.create(path, path.parent / "res").with_variant("altSig")
    bins = [b.key for b in plans[True].scheme().bins]  # type: ignore[union-attr]
    fixed = plans[True].constraint_fit_config(bins[0]).parameters
    assert fixed["n_bkg_pass"].value == fixed["n_bkg_fail"].value == 0.0
    assert all(fixed[f"{p}_{c}"].fixed for p in ("n_bkg", "slope") for c in ("pass", "fail"))
    assert "n_bkg_pass" not in plans[False].constraint_fit_config(bins[0]).parameters
    assert plans[True].constraint_keys(bins) != plans[False].constraint_keys(bins)  # a new simulation fit
