"""The template kernel (:mod:`calibflow.kernels.template`) and the fused binned cost of template fits
(:func:`calibflow.fit.passfail._template_chi2`) against plain numpy: the primitive as a dense sum with scipy's ndtr,
and the cost and fits of the generic numpy path (the same shapes without their ``table``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import special

from calibflow.fit import models as M
from calibflow.fit.passfail import PassFailModel, binned_cost, fit_pass_fail
from calibflow.fit.templates import template_signals
from calibflow.kernels.template import common_step, template_eval, template_fractions

EDGES = np.linspace(60.0, 120.0, 61)  # egm_tnp_analysis: 60 bins of 1 GeV


def _peak(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Z-like peak with a radiative tail (GeV)."""
    return np.where(rng.random(n) < 0.8, rng.normal(91.0, 2.5, n), 91.0 - rng.exponential(6.0, n))


def _turn_on(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """A RooCMSShape-like background (GeV): an exponential of ``scale`` times an erfc turn-on at 70 GeV."""
    x = 60.0 + rng.exponential(scale, n)
    return x[rng.random(n) < 0.5 * special.erfc((70.0 - x) * 0.05)]


def _record(edges: np.ndarray = EDGES, seed: int = 1) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    hists = [np.histogram(_peak(rng, k), edges)[0].astype(float) for k in (50_000, 20_000)]
    return {"edges": list(edges), "pass": list(hists[0]), "fail": list(hists[1])}


def _primitive_numpy(x: np.ndarray, edges: np.ndarray, counts: np.ndarray, shift: float, smear: float) -> np.ndarray:
    """Σ_k d_k·s·[G((y−e_k)/s) − G((y−e_{k+1})/s)], G(u) = u·Φ(u) + φ(u), y = x − shift, over every bin."""
    dens = counts / counts.sum() / np.diff(edges)
    u = (np.asarray(x)[:, None] - shift - edges[None, :]) / smear
    g = u * special.ndtr(u) + np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)
    return (dens[None, :] * smear * (g[:, :-1] - g[:, 1:])).sum(axis=1)


@pytest.mark.parametrize("shift, smear", [(0.0, 0.4), (1.3, 1.0), (-2.5, 3.0), (0.7, 12.0)])
def test_primitive_and_fractions_against_numpy(shift: float, smear: float) -> None:
    rec = _record()
    counts = np.asarray(rec["pass"])
    sp, _ = template_signals(rec)
    e, dens, cum = sp.table  # type: ignore[misc]
    ref = _primitive_numpy(EDGES, EDGES, counts, shift, smear)
    np.testing.assert_allclose(template_eval(EDGES, e, dens, cum, shift, smear, True), ref, rtol=1e-12, atol=1e-14)
    frac_ref = np.diff(ref) / (ref[-1] - ref[0])
    step = common_step(EDGES, e)
    assert step == pytest.approx(1.0)
    for s in (step, 0.0):  # on the lattice and point by point
        out = np.empty(EDGES.size - 1)
        template_fractions(EDGES, s, e, dens, cum, shift, smear, EDGES[0], EDGES[-1], out)
        np.testing.assert_allclose(out, frac_ref, rtol=1e-9, atol=1e-15)


def test_common_step() -> None:
    assert common_step(EDGES, EDGES[5:30]) == pytest.approx(1.0)
    assert common_step(EDGES, np.linspace(60.0, 120.0, 121)) == 0.0  # another step
    assert common_step(np.array([0.0, 1.0, 3.0]), np.array([0.0, 1.0, 2.0])) == 0.0  # not uniform
    assert common_step(EDGES[:1], EDGES) == 0.0


def _costs(rec: dict[str, list[float]], background: str, edges: np.ndarray, shared: bool = False
           ) -> tuple[PassFailModel, PassFailModel]:
    """(fused, numpy) models of the templates of ``rec`` (``shared``: the pass template in both categories with a
    fail width shift)."""
    sp, sf = template_signals(rec)
    gp, gf = replace(sp, table=None), replace(sf, table=None)
    lo, hi = edges[0], edges[-1]
    if shared:
        return (PassFailModel.create(sp, background, lo, hi, fail_width_shift=True),
                PassFailModel.create(gp, background, lo, hi, fail_width_shift=True))
    return (PassFailModel.create(sp, background, lo, hi, signal_fail=sf),
            PassFailModel.create(gp, background, lo, hi, signal_fail=gf))


def test_fractions_match_the_shape_over_the_limits() -> None:
    """Over the whole range of (shift, smear) the kernel's bin fractions equal the template shape's to 1e-15 (of the
    total: in far tails both are differences of primitives ≈ 1, rounding noise of ~1e-16)."""
    sp, _ = template_signals(_record())
    step = common_step(EDGES, sp.table[0])  # type: ignore[index]
    rng = np.random.default_rng(3)
    out = np.empty(EDGES.size - 1)
    for t in range(200):
        shift, smear = rng.uniform(-6.0, 6.0), rng.uniform(0.0, 12.0) * (t % 5 != 0)
        ref = np.diff(M.normalised_cdf(sp, EDGES, EDGES[0], EDGES[-1], shift, smear))
        template_fractions(EDGES, step, *sp.table, shift, smear, EDGES[0], EDGES[-1], out)  # type: ignore[misc]
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("background", ["cms", "exponential", "chebyshev2"])
@pytest.mark.parametrize("binning", ["uniform", "variable", "shared"])
def test_fused_cost_matches_numpy(background: str, binning: str) -> None:
    """The fused cost equals the numpy path's to 1e-9 around a toy's parameters (signal with a shift and width, the
    background's default start, each varied by up to 5 % of its range; also where numpy's is 1e30). Far from
    any data (expected counts ≲ 1e-10 of the total in bins with candidates) the χ² is made of rounding noise in
    both, and only the fractions agree (to 1e-15, :func:`test_fractions_match_the_shape_over_the_limits`)."""
    edges = EDGES if binning != "variable" else np.concatenate([np.linspace(60.0, 80.0, 11), np.linspace(81.0, 120.0, 40)])
    rec = _record(edges)
    fused, numpy_ = _costs(rec, background, edges, shared=binning == "shared")
    assert fused.signal.table is not None and numpy_.signal.table is None
    rng = np.random.default_rng(2)
    bkg_p, bkg_f = 60.0 + rng.exponential(40.0, 800), 60.0 + rng.exponential(25.0, 1500)
    hp = np.histogram(np.concatenate([_peak(rng, 3000) + 0.5, bkg_p]), edges)[0].astype(float)
    hf = np.histogram(np.concatenate([_peak(rng, 900) - 0.5 + rng.normal(0.0, 2.0, 900), bkg_f]), edges)[0] * 1.0
    sp, sf = rng.uniform(0.5, 1.0, hp.size), np.ones_like(hf)  # a weighted pass histogram
    c_fused, c_numpy = (binned_cost(m, edges, hp, hf, sp, sf) for m in (fused, numpy_))
    start = M.BACKGROUNDS[background].on(edges[0], edges[-1]).start(edges[0], edges[-1], 91.0, 2.0)
    for t in range(200):
        bkg = [float(np.clip(v + 0.05 * (hi - lo) * rng.uniform(-1, 1), lo, hi)) for v, (lo, hi) in start.values()]
        smear = [rng.uniform(0.0, 4.0) * (t % 5 != 0), rng.uniform(0.0, 4.0)]  # 0: the histogram itself
        sig = [rng.uniform(-2, 2), smear[0]] + ([] if binning == "shared" else [rng.uniform(-2, 2), smear[1]])
        x = np.array([3900.0, rng.uniform(0.6, 0.9), 800.0, 1500.0, *sig, *bkg, *bkg,
                      *([rng.uniform(-0.5, 3.0)] if binning == "shared" else [])])
        assert c_fused(x) == pytest.approx(c_numpy(x), rel=1e-9), repr(x.tolist())


@pytest.mark.parametrize("background", ["exponential", "cms"])
def test_fits_match_numpy(background: str) -> None:
    """Template fits with the fused cost end where the numpy path's do: exponential background, every value to
    1e-6 of its error (measured ~1e-9), the errors to 1e-4 (HESSE's finite differences of a badly constrained
    smear amplify rounding). RooCMSShape fits have nearly flat directions (α, β of
    the turn-on) in which a change of the cost at the 1e-13 level sends Migrad along another path to another point
    within its tolerance (EDM < 2e-3): same status and attempts, χ² within 0.1 and ε within 0.05 of its error."""
    sp, sf = template_signals(_record())
    rng = np.random.default_rng(4)
    for _ in range(3):
        sig_p = _peak(rng, rng.poisson(2400)) + rng.normal(0.4, 1.0, 1)[0]
        sig_f = _peak(rng, rng.poisson(600)) + rng.normal(-0.3, 2.0, 1)[0]
        bkg_p, bkg_f = _turn_on(rng, 1500, 40.0), _turn_on(rng, 3500, 25.0)
        if background == "exponential":
            bkg_p, bkg_f = 60.0 + rng.exponential(40.0, 800), 60.0 + rng.exponential(25.0, 1500)
        hp = np.histogram(np.concatenate([sig_p, bkg_p]), EDGES)[0].astype(float)
        hf = np.histogram(np.concatenate([sig_f, bkg_f]), EDGES)[0].astype(float)
        fused = fit_pass_fail(EDGES, hp, hf, signal=sp, signal_fail=sf, background=background)
        ref = fit_pass_fail(EDGES, hp, hf, signal=replace(sp, table=None), signal_fail=replace(sf, table=None),
                            background=background)
        assert fused.status == ref.status and fused.attempts[-1]["status"] == ref.attempts[-1]["status"]
        assert fused.accepted == ref.accepted and fused.n_attempts == ref.n_attempts
        if background == "cms":
            assert fused.chi2 == pytest.approx(ref.chi2, abs=0.1)
            assert abs(fused.efficiency - ref.efficiency) <= 0.05 * ref.errors["eff"]
            continue
        for name, v in ref.values.items():
            assert abs(fused.values[name] - v) <= 1e-6 * max(ref.errors[name], 1e-12), name
            assert fused.errors[name] == pytest.approx(ref.errors[name], rel=1e-4, abs=1e-12), name
        assert fused.chi2 == pytest.approx(ref.chi2, rel=1e-9)
        assert (fused.err_down, fused.err_up) == pytest.approx((ref.err_down, ref.err_up), rel=1e-4)
