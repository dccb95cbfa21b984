"""Simultaneous pass/fail extended unbinned maximum-likelihood fits of candidate masses.

Per category c the intensity is λ_c(m) = N_sig,c·f_s(m; θ_c) + N_bkg,c·f_b(m; β_c) with shapes
normalised on [lo, hi], N_sig,pass = N_sig·ε and N_sig,fail = N_sig·(1−ε), and the cost is

    C = 2 Σ_c [ ν_c − Σ_i w_i ln λ_c(m_i) ],   ν_c = N_sig,c + N_bkg,c   (errordef 1)

(w_i = 1 for unweighted candidates; equal to iminuit's ``ExtendedUnbinnedNLL(log=True)`` up to a
constant). For the common shapes the candidates are sorted once and λ is evaluated by vectorised numba
loops, one per shape region (:func:`calibflow.fit.models.add_density`, branch-free exp/log); other shapes
use their ``logpdf`` in numpy. Weighted fits report the covariance V·H₂·V (V: inverse Hessian of the
w-weighted cost, H₂: Hessian of the w²-weighted cost; RooFit's SumW2Error), without MINOS. Starting values,
retries and quality checks are those of the binned fit (:mod:`calibflow.fit.passfail`), applied to
histograms of the candidates; the χ² reported is that of these histograms against the fitted model.
Goodness of fit: a one-sample Kolmogorov-Smirnov test per category of the candidates against the fitted
distribution of that category (:func:`category_ks`), its p-value checked against ``quality.min_pvalue``
instead of the histograms' χ² p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numba as nb
import numpy as np
from iminuit import Minuit

from calibflow.fit.constraints import Constraints
from calibflow.fit.diagnostics import LOW_GOF_PVALUE, FitQuality, ks_test
from calibflow.fit.models import SIGNALS, VECTOR, Shape, add_density, cdf1, normalised_logpdf, vlog
from calibflow.fit.passfail import (
    Cost,
    FitResult,
    PassFailModel,
    _poisson_chi2,
    _scale,
    build_result,
    one_category,
    run_attempts,
    shifted,
)

N_START_BINS = 100


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _weighted_sum(w: np.ndarray, v: np.ndarray) -> float:
    """Σ_i w_i·v_i, vectorised (reassociated) sum."""
    total = 0.0
    for i in range(v.size):
        total += w[i] * v[i]
    return total


@nb.njit(cache=True, **VECTOR)
def _log_inplace(v: np.ndarray) -> None:
    for i in range(v.size):
        v[i] = vlog(v[i])


@nb.njit(cache=True)
def _category_sum(m: np.ndarray, w: np.ndarray, x: np.ndarray, ps: np.ndarray, soff: int, ns: int, scode: int,
                  bcode: int, boff: int, nbk: int, n_s: float, n_b: float, lo: float, hi: float,
                  buf: np.ndarray) -> float:
    """Σ_i w_i ln(n_s·f_s(m_i) + n_b·f_b(m_i)) with f normalised on [lo, hi], ``m`` ascending; −inf or NaN
    if λ ≤ 0 somewhere. ``buf``: scratch of m.size."""
    lam = buf[: m.size]
    lam[:] = 0.0
    add_density(scode, m, ps, soff, ns, lo, hi,
                n_s / (cdf1(scode, hi, ps, soff, ns, lo, hi) - cdf1(scode, lo, ps, soff, ns, lo, hi)), lam)
    add_density(bcode, m, x, boff, nbk, lo, hi,
                n_b / (cdf1(bcode, hi, x, boff, nbk, lo, hi) - cdf1(bcode, lo, x, boff, nbk, lo, hi)), lam)
    _log_inplace(lam)
    return _weighted_sum(w, lam)


def log_intensity(model: PassFailModel, m: np.ndarray, x: np.ndarray, category: str) -> np.ndarray:
    """ln λ_c(m) per candidate (units: log of candidates per unit of mass) for parameter vector ``x``."""
    ps, psf, pbp, pbf = model.split(x)
    n_sig, eff, nbp, nbf = x[:4]
    n_s, n_b, sig, bkg = (n_sig * eff, nbp, ps, pbp) if category == "pass" else (n_sig * (1 - eff), nbf, psf, pbf)
    with np.errstate(divide="ignore"):
        shape = model.signal if category == "pass" else model.fail_signal
        ls = normalised_logpdf(shape, m, model.lo, model.hi, *sig)
        if category == "fail" and model.fail_gauss:
            mu_g, sigma_g, f_g = model.fail_gauss_params(x)
            lg = normalised_logpdf(SIGNALS["gauss"], m, model.lo, model.hi, mu_g, sigma_g)
            ls = np.logaddexp(np.log1p(-f_g) + ls, np.log(f_g) + lg)
        lb = np.log(n_b) + normalised_logpdf(model.background, m, model.lo, model.hi, *bkg)
    return np.logaddexp(np.log(n_s) + ls, lb)


def category_ks(model: PassFailModel, x: np.ndarray, m: np.ndarray, w: np.ndarray | None,
                category: str) -> tuple[float, float]:
    """(D, p-value) of the Kolmogorov-Smirnov test of a category's sorted candidates ``m`` (weights ``w``)
    against the fitted distribution of that category, (ν_s·S(m) + ν_b·B(m))/(ν_s + ν_b), with S and B the
    normalised cumulative distributions on [lo, hi] (:func:`calibflow.fit.diagnostics.ks_test`)."""
    c = 0 if category == "pass" else 2

    def expected_below(edges: np.ndarray) -> np.ndarray:  # expected candidates in [lo, edge) for every edge
        parts = model.components(edges, x)
        return np.cumsum(parts[c] + parts[c + 1])

    total = float(expected_below(np.array([model.lo, model.hi]))[-1])
    cdf = expected_below(np.concatenate([[model.lo], m])) / total if total > 0 else np.full(m.size, np.nan)
    return ks_test(cdf, w)


def _ascending(m: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masses in ascending order with their weights (contiguous float arrays)."""
    m, w = np.ascontiguousarray(m, dtype=float), np.ascontiguousarray(w, dtype=float)
    if m.size > 1 and not np.all(m[1:] >= m[:-1]):
        order = np.argsort(m, kind="stable")
        m, w = m[order], w[order]
    return m, w


def unbinned_cost(model: PassFailModel, mp: np.ndarray, wp: np.ndarray, mf: np.ndarray, wf: np.ndarray) -> Cost:
    """Extended unbinned cost C(x) (see module docstring); fused kernel when both shapes have one."""
    if model.fused:
        (mp, wp), (mf, wf) = _ascending(mp, wp), _ascending(mf, wf)
        scode, ns, bcode, nbk = model.signal.code, len(model.signal.params), model.background.code, \
            len(model.background.params)
        wmask, lo, hi = model.width_mask, model.lo, model.hi
        buf = np.empty(max(mp.size, mf.size))

        def fused(x: np.ndarray) -> float:
            # one numba call per category (one kernel holding both was measured 60 % slower: LLVM's
            # optimisation of the inlined loops with a run-time shape code)
            x = np.asarray(x, dtype=float)
            n_sig, eff, nbp, nbf = x[:4]
            psf = np.where(wmask, x[4 : 4 + ns] + x[-1], x[4 : 4 + ns]) if wmask.any() else x[4 : 4 + ns]
            sp = _category_sum(mp, wp, x, x, 4, ns, scode, bcode, 4 + ns, nbk, n_sig * eff, nbp, lo, hi, buf)
            sf = _category_sum(mf, wf, x, np.ascontiguousarray(psf), 0, ns, scode, bcode, 4 + ns + nbk, nbk,
                               n_sig * (1.0 - eff), nbf, lo, hi, buf)
            v = 2.0 * (n_sig + nbp + nbf - sp - sf)
            return float(v) if np.isfinite(v) else 1e30

        return fused
    sw = float(wp.sum() + wf.sum())

    def cost(x: np.ndarray) -> float:
        n_total = x[0] + x[2] + x[3]
        # numba sums, not np.dot: BLAS's threads cost milliseconds per call on a loaded machine
        ll = float(_weighted_sum(wp, log_intensity(model, mp, x, "pass"))
                   + _weighted_sum(wf, log_intensity(model, mf, x, "fail")))
        v = 2.0 * (n_total - ll)
        return v if np.isfinite(v) else 1e30 + sw

    return cost


def _external_covariance(cost: Cost, m: Minuit) -> np.ndarray:
    """HESSE covariance of ``cost`` at the values of ``m`` without parameter limits (no transformation
    terms from the limits, which do not vanish where the gradient does not), free parameters only.

    The cost is shifted to 10 at that point (:func:`calibflow.fit.passfail.shifted`: HESSE's steps scale
    with |cost|) and ``m``'s errors are HESSE's first steps."""
    x = np.array(m.values)
    h = Minuit(shifted(cost, x), x, name=m.parameters)
    h.errordef = Minuit.LEAST_SQUARES
    h.fixed = m.fixed
    h.errors = m.errors
    h.strategy = 2
    h.hesse()
    free = [i for i, p in enumerate(m.params) if not p.is_fixed]
    return np.array(h.covariance, dtype=float)[np.ix_(free, free)]


def sumw2_errors(model: PassFailModel, m: Minuit, mp: np.ndarray, wp: np.ndarray, mf: np.ndarray,
                 wf: np.ndarray) -> tuple[dict[str, float], float]:
    """Errors √diag(V·H₂·V) of a weighted fit (RooFit's SumW2Error; Langenbruch, EPJC 82 (2022) 393), and
    the covariance of ``n_sig`` and ``eff`` from the same matrix (0 when either is fixed).

    V is the covariance (inverse Hessian) of the w-weighted cost at its minimum, H₂ the Hessian of the
    w²-weighted cost at the same point, both by HESSE without limits. Unit weights give V back. Fixed
    parameters have error 0.
    """
    v = _external_covariance(unbinned_cost(model, mp, wp, mf, wf), m)
    h2 = np.linalg.inv(_external_covariance(unbinned_cost(model, mp, wp**2, mf, wf**2), m))
    cov = v @ h2 @ v
    errs = {p.name: 0.0 for p in m.params}
    free = [p.name for p in m.params if not p.is_fixed]
    for k, name in enumerate(free):
        errs[name] = float(np.sqrt(max(cov[k, k], 0.0)))
    n_eff = float(cov[free.index("n_sig"), free.index("eff")]) if {"n_sig", "eff"} <= set(free) else 0.0
    return errs, n_eff


def _prepare(mass: np.ndarray, weights: np.ndarray | None, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mass, dtype=float)
    if weights is None:  # sorting alone is about 3x faster than argsort and gather
        m = np.sort(m[(m >= lo) & (m <= hi)])
        return m, np.ones_like(m)
    w = np.asarray(weights, dtype=float)
    if w.shape != m.shape:
        raise ValueError(f"weights: shape {w.shape} differs from the masses' {m.shape}")
    inside = (m >= lo) & (m <= hi)
    return _ascending(m[inside], w[inside])


def fit_pass_fail_unbinned(
    mass_pass: np.ndarray,
    mass_fail: np.ndarray,
    lo: float,
    hi: float,
    weights_pass: np.ndarray | None = None,
    weights_fail: np.ndarray | None = None,
    signal: str | Shape = "crystalball",
    background: str | Shape = "exponential",
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    minos: bool = True,
    fail_width_shift: bool = False,
    quality: FitQuality | None = None,
    goodness_fail: bool = True,
    fail_gauss: bool = False,
    signal_fail: Shape | None = None,
    constraints: Constraints | None = None,
    keep: Sequence[str] = (),
) -> FitResult:
    """Simultaneous extended unbinned fit of passing and failing candidates' masses on [lo, hi].

    Candidates outside [lo, hi] are ignored. Same parameters, retries and result as
    :func:`calibflow.fit.passfail.fit_pass_fail`; ε errors from MINOS for unweighted candidates and
    from the SumW2 covariance (:func:`sumw2_errors`) for weighted ones. ``goodness_fail=False`` leaves the fail histogram
    out of the reported χ² and the KS test (single-sample fits). ``signal_fail`` and ``constraints``: as in
    :func:`calibflow.fit.passfail.fit_pass_fail` (the χ² of the histograms counts the constraints as that of
    binned fits does; the KS test is of the data alone). The KS
    p-values (:func:`category_ks`), not the
    histograms' χ² p-value, are checked against ``quality.min_pvalue`` (status ``low_gof_pvalue``).
    """
    lo, hi = float(lo), float(hi)
    mp, wp = _prepare(mass_pass, weights_pass, lo, hi)
    mf, wf = _prepare(mass_fail, weights_fail, lo, hi)
    weighted = weights_pass is not None or weights_fail is not None
    edges = np.linspace(lo, hi, N_START_BINS + 1)
    hp, hf = np.histogram(mp, edges, weights=wp)[0], np.histogram(mf, edges, weights=wf)[0]
    sp = _scale(hp, np.histogram(mp, edges, weights=wp**2)[0]) if weighted else np.ones_like(hp)
    sf = _scale(hf, np.histogram(mf, edges, weights=wf**2)[0]) if weighted else np.ones_like(hf)
    model0 = PassFailModel.create(signal, background, lo, hi, fail_width_shift, fail_gauss, signal_fail)
    quality = quality or FitQuality()

    def goodness(model: PassFailModel, m: Minuit) -> tuple[float, int]:
        nu_p, nu_f = model.expected(edges, np.array(m.values))
        chi2 = _poisson_chi2(hp, nu_p, sp)
        n = hp.size
        if goodness_fail:
            chi2 += _poisson_chi2(hf, nu_f, sf)
            n += hf.size
        return chi2, int(n - m.nfit)

    attempts, accepted = run_attempts(model0, edges, hp, hf, lambda mdl: unbinned_cost(mdl, mp, wp, mf, wf),
                                      goodness, parameters, strategy, replace(quality, min_pvalue=0.0), prefit=True,
                                      shift=True, constraints=constraints, keep=keep)
    a = attempts[accepted]
    if not weighted:
        r = build_result(attempts, accepted, minos)
    else:
        errors, cov_n_eff = sumw2_errors(a.model, a.minuit, mp, wp, mf, wf)
        r = build_result(attempts, accepted, False, errors, cov_n_eff)
    x = np.array(a.minuit.values)
    for cat, m, w in (("pass", mp, wp), ("fail", mf, wf))[: 2 if goodness_fail else 1]:
        r.ks[f"d_{cat}"], r.ks[f"pvalue_{cat}"] = category_ks(a.model, x, m, w if weighted else None, cat)
    p_min = min((v for k, v in r.ks.items() if k.startswith("pvalue") and np.isfinite(v)), default=np.nan)
    if quality.min_pvalue > 0 and p_min < quality.min_pvalue:
        r.status = ",".join([*(t for t in r.status.split(",") if t != "ok"), f"{LOW_GOF_PVALUE}:ks_p={p_min:.2g}"])
    return r


@dataclass
class ExtendedFit:
    """Signal + background fit of one sample: yields, all parameters, status and the bound model."""

    yields: dict[str, float]
    yield_errors: dict[str, float]
    values: dict[str, float]
    errors: dict[str, float]
    status: str
    model: PassFailModel
    result: FitResult

    def pdfs(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Normalised densities on [lo, hi] of ``signal`` and ``background`` at the fitted parameters."""
        x = np.array([self.values[n] for n in self.model.names])
        ps, _, pb, _ = self.model.split(x)
        mdl = self.model
        return {
            "signal": lambda m: np.exp(normalised_logpdf(mdl.signal, m, mdl.lo, mdl.hi, *ps)),
            "background": lambda m: np.exp(normalised_logpdf(mdl.background, m, mdl.lo, mdl.hi, *pb)),
        }


def fit_extended(
    mass: np.ndarray,
    lo: float,
    hi: float,
    signal: str | Shape = "crystalball",
    background: str | Shape = "exponential",
    weights: np.ndarray | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    quality: FitQuality | None = None,
) -> ExtendedFit:
    """Extended unbinned fit N_s·f_s + N_b·f_b of one sample (the pass category of a pass/fail model
    with ε fixed to 1 and no fail candidates: :func:`calibflow.fit.passfail.one_category`). ``parameters``
    use the pass/fail names (``n_sig``, ``n_bkg_pass``, ``mu``, ``slope_pass``, ...)."""
    r = fit_pass_fail_unbinned(mass, np.empty(0), lo, hi, weights, None, signal, background,
                               one_category(background, parameters), strategy, minos=False, quality=quality,
                               goodness_fail=False)
    model = PassFailModel.create(r.signal_model, background, lo, hi) if isinstance(signal, str) else \
        PassFailModel.create(signal, background, lo, hi)
    return ExtendedFit(
        yields={"signal": r.values["n_sig"], "background": r.values["n_bkg_pass"]},
        yield_errors={"signal": r.errors["n_sig"], "background": r.errors["n_bkg_pass"]},
        values=r.values,
        errors=r.errors,
        status=r.status,
        model=model,
        result=r,
    )
