"""sPlot weights from a fit of a discriminating variable, and sWeighted efficiencies with honest errors.

With N_k the fitted yields and f_k the pdfs normalised on the fit range, for candidates x_e:

    W_kj = Σ_e f_k(x_e)·f_j(x_e) / (Σ_l N_l f_l(x_e))²,    α = W⁻¹,
    w_k(x) = Σ_j α_kj f_j(x) / Σ_l N_l f_l(x)

(Pivk & Le Diberder 2005; the ``summation`` method of the ``sweights`` package). Σ_e w_k(x_e) = N_k
when the N_k maximise the extended likelihood; α estimates the covariance of the yields.

The sWeighted efficiency ε = Σ_pass c·w_s / Σ c·w_s (c: candidate weights, usually 1) depends on the
yields, the shape parameters and W, all estimated from the same candidates. :func:`sandwich_efficiency`
treats (fit parameters φ, W, ε) as one M-estimator (Langenbruch, EPJC 82 (2022) 393, Sect. 4–5, with the
shape parameters floating) and returns the sandwich variance A⁻¹BA⁻ᵀ of ε; PIDCalib2's
((1−2ε)Σw²_pass + ε²Σw²)/(Σw)² ignores all three sources and is kept as ``variance: pidcalib2``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from calibflow.fit.counting import CountResult, sweighted_efficiency
from calibflow.fit.diagnostics import FitQuality
from calibflow.fit.models import Shape, normalised_logpdf
from calibflow.fit.passfail import PassFailModel, apply_overrides, one_category
from calibflow.fit.unbinned import ExtendedFit, fit_extended
from calibflow.io import jsonio
from calibflow.io.integrity import CorruptIntermediate

Pdf = Callable[[np.ndarray], np.ndarray]
VARIANCES = ("sandwich", "pidcalib2")
"""Variance conventions of sWeighted efficiencies (see the module docstring)."""
FD_STEP = 1e-2
"""Finite-difference step of the sandwich, in units of each parameter's fitted error."""
BOUNDARY_SCORE = 0.3
"""|∂lnL/∂φ|·σ(φ) above which a parameter counts as stuck at a limit (then treated as fixed)."""


def sweight_matrix(x: np.ndarray, yields: Mapping[str, float], pdfs: Mapping[str, Pdf]) -> tuple[np.ndarray, np.ndarray]:
    """(α = W⁻¹, the matrix of pdf values f_k(x_e) with shape (components, candidates)), order of ``yields``."""
    names = list(yields)
    missing = [k for k in names if k not in pdfs]
    if missing:
        raise ValueError(f"sweights: no pdf for component(s) {', '.join(missing)}")
    xa = np.asarray(x, dtype=float)
    f = np.stack([np.asarray(pdfs[k](xa), dtype=float) for k in names])
    n = np.array([yields[k] for k in names], dtype=float)
    denom = n @ f
    g = f / denom
    return np.linalg.inv(g @ g.T), f


def sweights_from_fit(x: np.ndarray, yields: Mapping[str, float], pdfs: Mapping[str, Pdf]) -> dict[str, np.ndarray]:
    """sWeights of every component at the candidates ``x``: {name: w_k(x_e)} (dimensionless).

    ``yields``: fitted yields by component name; ``pdfs``: callables returning the normalised density
    of each component (same names).
    """
    alpha, f = sweight_matrix(x, yields, pdfs)
    n = np.array(list(yields.values()), dtype=float)
    w = alpha @ f / (n @ f)
    return {k: w[i] for i, k in enumerate(yields)}


# --------------------------------------------------------------------------------------------------
# the discriminating-variable fit as a cacheable record
# --------------------------------------------------------------------------------------------------
@dataclass
class SPlotFit:
    """Signal + background fit of one bin's masses: everything sWeights and their errors need.

    ``signal``: the signal shape actually used (after fallbacks); ``values``/``errors``: all parameters
    by their pass/fail names (``n_sig``, ``n_bkg_pass``, shape parameters); ``free``: the parameters
    floated by the fit; ``sandwich_free``/``hessian``: :func:`fit_information` of its candidates when
    known. JSON-ready through :meth:`to_dict`, so other working points reuse the fit.
    """

    signal: str
    background: str
    lo: float
    hi: float
    values: dict[str, float]
    errors: dict[str, float]
    free: list[str]
    status: str
    chi2: float = math.nan
    ndof: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    sandwich_free: list[str] | None = None
    hessian: list[list[float]] | None = None

    @property
    def model(self) -> PassFailModel:
        """The pass/fail model the fit used (only its pass category matters)."""
        return PassFailModel.create(self.signal, self.background, self.lo, self.hi)

    @property
    def yields(self) -> dict[str, float]:
        """Fitted signal and background yields (candidates in [lo, hi])."""
        return {"signal": self.values["n_sig"], "background": self.values["n_bkg_pass"]}

    def vector(self) -> np.ndarray:
        """Parameter vector in the order of :attr:`PassFailModel.names`."""
        return np.array([self.values[n] for n in self.model.names], dtype=float)

    def pdfs(self, x: np.ndarray | None = None) -> dict[str, Pdf]:
        """Normalised densities on [lo, hi] of ``signal`` and ``background`` at parameters ``x`` (default:
        the fitted ones)."""
        mdl = self.model
        ps, _, pb, _ = mdl.split(self.vector() if x is None else x)
        return {
            "signal": lambda m: np.exp(normalised_logpdf(mdl.signal, m, mdl.lo, mdl.hi, *ps)),
            "background": lambda m: np.exp(normalised_logpdf(mdl.background, m, mdl.lo, mdl.hi, *pb)),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SPlotFit:
        """Inverse of :meth:`to_dict` (also of its strict JSON, :mod:`calibflow.io.jsonio`: NaN restored)."""
        numeric = {"values", "errors", "chi2", "attempts", "hessian"} & set(d)
        if d.get("hessian") is None:  # not known (None), not a NaN
            numeric.discard("hessian")
        return cls(**{**d, **{k: jsonio.numbers(d[k]) for k in numeric}})


def splot_fit(
    x: np.ndarray,
    signal: str | Shape,
    background: str | Shape,
    lo: float,
    hi: float,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    quality: FitQuality | None = None,
) -> SPlotFit:
    """Extended unbinned fit of the masses ``x`` on [lo, hi] (signal + background) as a :class:`SPlotFit`,
    with the pass-independent part of the sandwich (:func:`fit_information`)."""
    xa = np.asarray(x, dtype=float)
    fit = fit_extended(xa, lo, hi, signal, background, parameters=parameters, strategy=strategy, quality=quality)
    return with_information(splot_record(fit, parameters), xa[(xa >= lo) & (xa <= hi)])


def splot_record(fit: ExtendedFit, parameters: Mapping[str, Mapping[str, Any]] | None = None) -> SPlotFit:
    """:class:`SPlotFit` of an :class:`ExtendedFit` made with the overrides ``parameters``."""
    model, r = fit.model, fit.result
    frozen = one_category(model.background, parameters)
    _, fixed = apply_overrides(model, {n: (0.0, (-math.inf, math.inf)) for n in model.names}, frozen)
    return SPlotFit(signal=model.signal.name, background=model.background.name, lo=model.lo, hi=model.hi,
                    values=dict(r.values), errors=dict(r.errors), free=[n for n in model.names if n not in fixed],
                    status=r.status, chi2=float(r.chi2), ndof=int(r.ndof), attempts=list(r.attempts))


@dataclass
class SWeightResult:
    """sWeights per component, the yield covariance α = W⁻¹ and the underlying fit."""

    weights: dict[str, np.ndarray]
    covariance: np.ndarray
    fit: SPlotFit

    @property
    def status(self) -> str:
        """Status of the discriminating-variable fit (``ok`` or its problems)."""
        return self.fit.status


def sweight(fit: SPlotFit, x: np.ndarray) -> SWeightResult:
    """sWeights of both components of ``fit`` at the masses ``x``; candidates outside [lo, hi] get 0."""
    xa = np.asarray(x, dtype=float)
    inside = (xa >= fit.lo) & (xa <= fit.hi)
    pdfs = fit.pdfs()
    alpha, _ = sweight_matrix(xa[inside], fit.yields, pdfs)
    weights = {k: np.zeros_like(xa) for k in fit.yields}
    for k, w in sweights_from_fit(xa[inside], fit.yields, pdfs).items():
        weights[k][inside] = w
    return SWeightResult(weights, alpha, fit)


def fit_and_sweight(
    x: np.ndarray,
    signal: str | Shape,
    background: str | Shape,
    lo: float,
    hi: float,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    quality: FitQuality | None = None,
) -> SWeightResult:
    """Extended unbinned fit of ``x`` on [lo, hi] (signal + background), then sWeights of both components.

    Candidates outside [lo, hi] get weight 0 (they are not part of the fit).
    """
    return sweight(splot_fit(x, signal, background, lo, hi, parameters, strategy, quality), x)


# --------------------------------------------------------------------------------------------------
# sandwich variance of the sWeighted efficiency
# --------------------------------------------------------------------------------------------------
class _Terms:
    """Per-candidate pieces of the stacked estimating equations at fit parameters φ (free ones).

    Component log-densities are memoised by their shape parameters: a step in a yield or in the other
    component's parameters costs no pdf evaluation.
    """

    def __init__(self, fit: SPlotFit, mass: np.ndarray, free: list[str]) -> None:
        self.mass, self.model = mass, fit.model
        self.base = fit.vector()
        names = self.model.names
        self.index = [names.index(n) for n in free]
        self._memo: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}

    def _log_density(self, which: str, shape: Shape, params: np.ndarray) -> np.ndarray:
        key = (which, tuple(float(v) for v in params))
        if key not in self._memo:
            with np.errstate(all="ignore"):
                self._memo[key] = normalised_logpdf(shape, self.mass, self.model.lo, self.model.hi, *params)
        return self._memo[key]

    def _logs(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ln λ, ln f_s, ln f_b) per candidate at the free parameters ``phi``."""
        x = self.base.copy()
        x[self.index] = phi
        ps, _, pb, _ = self.model.split(x)
        ls = self._log_density("s", self.model.signal, ps)
        lb = self._log_density("b", self.model.background, pb)
        with np.errstate(all="ignore"):
            return np.logaddexp(np.log(x[0]) + ls, np.log(x[2]) + lb), ls, lb

    def log_likelihood(self, phi: np.ndarray) -> float:
        """Σ_e ln λ(x_e) (the extended likelihood without its linear −ν term)."""
        return float(np.sum(self._logs(phi)[0]))

    def densities(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ln λ, f_s/λ, f_b/λ) per candidate, λ = N_s f_s + N_b f_b (f normalised on [lo, hi])."""
        ll, ls, lb = self._logs(phi)
        with np.errstate(all="ignore"):
            return ll, np.exp(ls - ll), np.exp(lb - ll)


def _q(gs: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Per-candidate W contributions (f_s f_s, f_s f_b, f_b f_b)/λ², shape (3, candidates)."""
    return np.stack([gs * gs, gs * gb, gb * gb])


def _w_signal(gs: np.ndarray, gb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Signal sWeights (α_ss f_s + α_sb f_b)/λ for W = (W_ss, W_sb, W_bb)."""
    det = w[0] * w[2] - w[1] * w[1]
    return (w[2] * gs - w[1] * gb) / det


@dataclass(frozen=True)
class SandwichEfficiency:
    """sWeighted efficiency with its sandwich variance; ``naive_variance``: PIDCalib2's; ``fixed``:
    parameters held fixed because they sit at a limit (or off their domain one step away)."""

    efficiency: float
    variance: float
    naive_variance: float
    sum_weights: float
    fixed: tuple[str, ...]


def _steps(fit: SPlotFit, free: list[str], phi0: np.ndarray) -> np.ndarray:
    """Finite-difference steps: :data:`FD_STEP` times each parameter's fitted error."""
    steps = np.array([FD_STEP * (fit.errors.get(n) or 0.0) for n in free])
    return np.where(np.isfinite(steps) & (steps > 0), steps, 1e-6 * (np.abs(phi0) + 1.0))


def _shifted(phi0: np.ndarray, steps: np.ndarray, i: int, sign: float) -> np.ndarray:
    d = np.zeros(phi0.size)
    d[i] = sign * steps[i]
    return phi0 + d


def _scores(terms: _Terms, phi0: np.ndarray, steps: np.ndarray, names: list[str]) -> np.ndarray | str:
    """Per-candidate scores ∂ln λ/∂φ (shape (free, candidates)), or the name of a parameter off its
    domain one step away or stuck at a limit (|Σ score − ∂ν/∂φ|·σ > :data:`BOUNDARY_SCORE`)."""
    g = np.empty((phi0.size, terms.mass.size))
    for i in range(phi0.size):
        lp, lm = terms.densities(_shifted(phi0, steps, i, 1.0))[0], terms.densities(_shifted(phi0, steps, i, -1.0))[0]
        if not (np.all(np.isfinite(lp)) and np.all(np.isfinite(lm))):
            return names[i]
        g[i] = (lp - lm) / (2.0 * steps[i])
    dnu = np.array([1.0 if n in ("n_sig", "n_bkg_pass") else 0.0 for n in names])
    info = np.sum(g * g, axis=1)
    z = np.abs(g.sum(axis=1) - dnu) / np.sqrt(np.where(info > 0, info, np.inf))
    if names and z.max() > BOUNDARY_SCORE:
        return names[int(np.argmax(z))]
    return g


def fit_information(fit: SPlotFit, mass: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(parameters treated as free, Hessian of Σ_e ln λ(x_e) in them) at the fitted values: the part of the
    sandwich that does not depend on the pass decision. Free parameters at a limit are dropped."""
    m = np.asarray(mass, dtype=float)
    free = [n for n in fit.free if n in fit.values]
    while True:
        terms = _Terms(fit, m, free)
        phi0 = terms.base[terms.index]
        steps = _steps(fit, free, phi0)
        g = _scores(terms, phi0, steps, free)
        if isinstance(g, str):
            free.remove(g)
            continue
        k = len(free)
        hess = np.empty((k, k))
        for i in range(k):
            for j in range(i, k):
                total = 0.0
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    d = np.zeros(k)
                    d[i] += si * steps[i]
                    d[j] += sj * steps[j]
                    total += si * sj * terms.log_likelihood(phi0 + d)
                hess[i, j] = hess[j, i] = total / (4.0 * steps[i] * steps[j])
        return free, hess


def with_information(fit: SPlotFit, mass: np.ndarray) -> SPlotFit:
    """``fit`` carrying :func:`fit_information` of the candidates ``mass`` (stored with a cached fit)."""
    free, hess = fit_information(fit, mass)
    return replace(fit, sandwich_free=free, hessian=hess.tolist())


def sandwich_efficiency(fit: SPlotFit, mass: np.ndarray, passed: np.ndarray,
                        weight: np.ndarray | None = None) -> SandwichEfficiency:
    """ε = Σ_pass c·w_s/Σ c·w_s and its variance from the stacked M-estimator (φ, W, ε).

    Estimating functions, summed over the candidates of a Poisson process (so that Var(Σψ) = E[Σψψᵀ]):
    ∂ln λ/∂φ − ∂ν/∂φ (extended likelihood, free fit parameters φ), (f_k f_j/λ² − W_kj) and
    c·w_s(pass − ε). Cov = A⁻¹BA⁻ᵀ with A = ∂Ψ/∂θ (finite differences, step :data:`FD_STEP`·σ) and
    B = Σ_e ψ_eψ_eᵀ. Parameters at a limit count as fixed (:func:`fit_information`, reused from
    ``fit.hessian`` when present). ``mass``: candidates in [lo, hi]; ``weight``: c (default 1).
    """
    m = np.asarray(mass, dtype=float)
    p = np.asarray(passed, dtype=bool).astype(float)
    c = np.ones_like(m) if weight is None else np.asarray(weight, dtype=float)
    if fit.hessian is None or fit.sandwich_free is None:
        fit = with_information(fit, m)
    assert fit.hessian is not None and fit.sandwich_free is not None
    free = list(fit.sandwich_free)
    k = len(free)
    hess = np.asarray(fit.hessian, dtype=float).reshape(k, k)
    terms = _Terms(fit, m, free)
    phi0 = terms.base[terms.index]
    steps = _steps(fit, free, phi0)

    _, gs0, gb0 = terms.densities(phi0)
    q0 = _q(gs0, gb0)
    w_hat = q0.sum(axis=1)
    w0 = _w_signal(gs0, gb0, w_hat)
    ws0 = w0 * c
    eff = float(np.sum(ws0 * p) / np.sum(ws0))
    resid = c * (p - eff)

    # first derivatives: per-candidate scores, and of Σq and Σ c·w_s(pass − ε) at fixed W
    g = np.empty((k, m.size))
    a_w_phi = np.empty((3, k))
    a_e_phi = np.empty(k)
    for i in range(k):
        (lp, sp, bp), (lm, sm, bm) = (terms.densities(_shifted(phi0, steps, i, s)) for s in (1.0, -1.0))
        g[i] = (lp - lm) / (2.0 * steps[i])
        a_w_phi[:, i] = (_q(sp, bp).sum(axis=1) - _q(sm, bm).sum(axis=1)) / (2.0 * steps[i])
        a_e_phi[i] = np.sum(resid * (_w_signal(sp, bp, w_hat) - _w_signal(sm, bm, w_hat))) / (2.0 * steps[i])

    # derivative of Σ c·w_s(pass − ε) with respect to W (w_s = (W_bb f_s − W_sb f_b)/(det·λ))
    det = w_hat[0] * w_hat[2] - w_hat[1] ** 2
    num = w_hat[2] * gs0 - w_hat[1] * gb0
    ddet = np.array([w_hat[2], -2.0 * w_hat[1], w_hat[0]])
    dnum = np.stack([np.zeros_like(gs0), -gb0, gs0])
    a_e_w = ((dnum * det - num[None, :] * ddet[:, None]) / det**2 * resid[None, :]).sum(axis=1)

    a = np.zeros((k + 4, k + 4))
    a[:k, :k] = hess
    a[k:k + 3, :k] = a_w_phi
    a[k:k + 3, k:k + 3] = -np.eye(3)
    a[-1, :k] = a_e_phi
    a[-1, k:k + 3] = a_e_w
    a[-1, -1] = -np.sum(ws0)
    psi = np.concatenate([g, q0, (w0 * resid)[None, :]])
    a_inv = np.linalg.inv(a)
    var = float((a_inv @ (psi @ psi.T) @ a_inv.T)[-1, -1])
    naive = sweighted_efficiency(ws0[p > 0], ws0)
    fixed = tuple(n for n in fit.free if n not in free)
    return SandwichEfficiency(eff, var, naive.err_down**2, float(np.sum(ws0)), fixed)


def sweights_efficiency(fit: SPlotFit, mass: np.ndarray, passed: np.ndarray, weight: np.ndarray | None = None,
                        variance: str = "sandwich") -> CountResult:
    """sWeighted efficiency of the candidates (masses ``mass``, pass decisions ``passed``, weights
    ``weight``) with the errors of ``variance`` (``sandwich`` or ``pidcalib2``, see the module docstring)."""
    if variance not in VARIANCES:
        raise ValueError(f"sweights variance: unknown {variance!r}; known: {', '.join(VARIANCES)}")
    m = np.asarray(mass, dtype=float)
    inside = (m >= fit.lo) & (m <= fit.hi)
    passed = np.asarray(passed, dtype=bool)[inside]
    c = np.ones(int(inside.sum())) if weight is None else np.asarray(weight, dtype=float)[inside]
    if variance == "pidcalib2":
        w = sweight(fit, m[inside]).weights["signal"] * c
        return sweighted_efficiency(w[passed], w)
    s = sandwich_efficiency(fit, m[inside], passed, c)
    err = math.sqrt(max(s.variance, 0.0))
    return CountResult(s.efficiency, err, err, s.efficiency * s.sum_weights, s.sum_weights, "sweights")


def signal_weight_errors(fit: SPlotFit, mass: np.ndarray, passed: np.ndarray,
                         weight: np.ndarray | None = None) -> tuple[float, float]:
    """(√Σ_pass (c·w_s)², √Σ_fail (c·w_s)²): the sPlot errors of the passing and failing signal yields
    Σ c·w_s (candidates in [lo, hi]; ``weight`` c, default 1), which leave out the fit's own uncertainty."""
    m = np.asarray(mass, dtype=float)
    inside = (m >= fit.lo) & (m <= fit.hi)
    c = np.ones(int(inside.sum())) if weight is None else np.asarray(weight, dtype=float)[inside]
    w = sweight(fit, m[inside]).weights["signal"] * c
    p = np.asarray(passed, dtype=bool)[inside]
    return math.sqrt(float(np.sum(w[p] ** 2))), math.sqrt(float(np.sum(w[~p] ** 2)))


def cached_splot_fit(path: str | None, make: Callable[[], SPlotFit]) -> tuple[SPlotFit, bool]:
    """(the fit stored at ``path``, True) if there is one, else (``make()``, False) after storing it at
    ``path`` (JSON, written atomically). ``path=None``: no cache."""
    if path and os.path.exists(path):
        try:
            return SPlotFit.from_dict(jsonio.read_record(path)), True
        except CorruptIntermediate as exc:  # refitted and replaced below
            logging.getLogger("calibflow.task").warning("corrupt intermediate removed and rebuilt: %s", exc)
    fit = make()
    if path:
        jsonio.write_record(path, fit.to_dict(), indent=1)
    return fit, False
