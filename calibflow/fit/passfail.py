"""Simultaneous binned extended maximum-likelihood fit of pass and fail mass histograms.

Model per category c ∈ {pass, fail}, expected counts in mass bin j:

    ν_pass,j = N_sig·ε·S_j(θ) + N_bkg,pass·B_j(β_pass)
    ν_fail,j = N_sig·(1−ε)·S_j(θ') + N_bkg,fail·B_j(β_fail)

with S_j, B_j the fractions of the normalised signal and background shapes in bin j. The signal shape θ
is shared (θ' = θ, or θ with its widths shifted by ``dsigma_fail`` when ``fail_width_shift``), the
efficiency ε is a fit parameter. With ``signal_fail`` (simulation templates, :mod:`calibflow.fit.templates`)
the fail category has a signal shape of its own, with its own parameters. With ``fail_gauss``
(egm_tnp_analysis's ``--addGaus``) the fail signal is
(1−f)·S_j(θ') + f·G_j(μ_g, σ_g), a Gaussian of its own in the fail category only (parameters
:data:`FAIL_GAUSS`; such models use the numpy path, not the fused kernel). The cost is the Baker-Cousins Poisson χ²; weighted histograms use the
scaled-Poisson approximation (counts and expectations scaled by Σw/Σw² per bin), which gives correct
uncertainties for weighted data. For the common shapes the expectation and the χ² are one numba kernel.

``constraints`` (:mod:`calibflow.fit.constraints`) add Gaussian penalty terms to the cost.

Fits that fail the checks of :mod:`calibflow.fit.diagnostics` are retried: Migrad strategy 2 from
starting values of a background-only fit of the sidebands, then with the background of nearly empty categories
fixed (:func:`frozen_background`), then with simpler signal models (e.g. crystalball → gauss). The result records every attempt and which one was accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numba as nb
import numpy as np
from iminuit import Minuit

from calibflow.fit.constraints import Constraints, constrained, constraint_chi2
from calibflow.fit.diagnostics import FitQuality, at_limit, chi2_pvalue, fit_problems
from calibflow.fit.models import (
    CMS,
    EXPONENTIAL,
    SIGNALS,
    Shape,
    cdf1,
    cms_log_survival,
    get_shape,
    normalised_cdf,
)
from calibflow.kernels.template import common_step, template_fractions

SIDEBAND_FRACTION = 0.15
SIGNAL_WINDOW = 3.0  # half-width of the signal window excluded from sideband fits, in units of the width
YIELDS = ("n_sig", "eff", "n_bkg_pass", "n_bkg_fail")
FAIL_GAUSS = ("mu_gauss_fail", "sigma_gauss_fail", "frac_gauss_fail")
"""Parameters of the extra fail-signal Gaussian (``fit.fail_gauss``): mean, width (unit of x), fraction."""
MINIMUM_ERROR_POSDEF = 1  # Minuit2 MinimumError::MnPosDef
SHIFTED_LEVEL = 10.0  # value of a shifted cost at its start (:func:`shifted`)

Start = dict[str, tuple[float, tuple[float, float]]]
Cost = Callable[[np.ndarray], float]


@dataclass
class FitResult:
    """Outcome of one pass/fail fit. Yields are signal counts in the fit range (candidates, or Σw).

    ``n_pass``/``n_fail`` = N_sig·ε and N_sig·(1−ε), their errors propagated from the covariance of N_sig
    and ε; ``errors``: HESSE (or SumW2) errors of every parameter, 0 for fixed ones. ``attempts``: one dict
    per attempt (label, signal model, status, χ², ndof); ``accepted``: index of the attempt reported (the
    first good one, else the best); ``signal_model``: its signal shape. ``chi2_pvalue``: P(χ²_ndof ≥ χ²)
    (:func:`calibflow.fit.diagnostics.chi2_pvalue`); ``ks``: unbinned fits' Kolmogorov-Smirnov statistics
    ``d_pass``, ``pvalue_pass``, ``d_fail``, ``pvalue_fail`` (:func:`calibflow.fit.diagnostics.ks_test`; empty
    for binned fits). Constrained fits: ``chi2`` includes the constraints' ``chi2_constraints`` and ``ndof``
    their number ``n_constraints`` (one measurement each, :func:`calibflow.fit.constraints.constraint_chi2`).
    """

    efficiency: float
    err_down: float
    err_up: float
    n_sig: float
    n_sig_err: float
    n_pass: float
    n_fail: float
    status: str
    chi2: float
    ndof: int
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    n_attempts: int = 1
    accepted: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    signal_model: str = ""
    n_pass_err: float = math.nan
    n_fail_err: float = math.nan
    chi2_pvalue: float = math.nan
    ks: dict[str, float] = field(default_factory=dict)
    chi2_constraints: float = 0.0
    n_constraints: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``chi2_constraints`` and ``n_constraints`` only for a constrained fit)."""
        out = asdict(self)
        if not self.n_constraints:
            del out["chi2_constraints"], out["n_constraints"]
        return out


def parameter_names(signal: Shape, background: Shape, fail_width_shift: bool = False,
                    fail_gauss: bool = False, signal_fail: Shape | None = None) -> list[str]:
    """Names of a pass/fail model's parameters (``fit.parameters`` keys), in the order of its parameter
    vector: the yields and ε (:data:`YIELDS`), the signal's (shared by both categories, or the pass signal's
    then ``signal_fail``'s), the background's per category (``slope_pass``, ``slope_fail``), the fail
    Gaussian's (:data:`FAIL_GAUSS`) with ``fail_gauss``, then ``dsigma_fail`` with a fail width shift (always
    last)."""
    bkg = [f"{p}_{c}" for c in ("pass", "fail") for p in background.params]
    own = signal_fail.params if signal_fail is not None else ()
    return [*YIELDS, *signal.params, *own, *bkg, *(FAIL_GAUSS if fail_gauss else ()),
            *(["dsigma_fail"] if fail_width_shift else [])]


@dataclass(frozen=True)
class PassFailModel:
    """Parameter layout and expectation of a simultaneous pass/fail model on [lo, hi].

    Parameter vector: n_sig, eff, n_bkg_pass, n_bkg_fail, signal params (then ``signal_fail``'s, when the fail
    category has a signal shape of its own), background params of the pass then the fail category (suffixed
    ``_pass``/``_fail``), the fail Gaussian's if ``fail_gauss``, then ``dsigma_fail`` if ``fail_width_shift``.
    """

    signal: Shape
    background: Shape
    lo: float
    hi: float
    fail_width_shift: bool = False
    fail_gauss: bool = False
    signal_fail: Shape | None = None

    @classmethod
    def create(cls, signal: str | Shape, background: str | Shape, lo: float, hi: float,
               fail_width_shift: bool = False, fail_gauss: bool = False,
               signal_fail: Shape | None = None) -> PassFailModel:
        """Model with the named shapes bound to [lo, hi]."""
        return cls(get_shape("signal", signal).on(lo, hi), get_shape("background", background).on(lo, hi),
                   float(lo), float(hi), fail_width_shift, fail_gauss,
                   None if signal_fail is None else signal_fail.on(lo, hi))

    @property
    def names(self) -> list[str]:
        """Parameter names, in the order of the parameter vector."""
        return parameter_names(self.signal, self.background, self.fail_width_shift, self.fail_gauss,
                               self.signal_fail)

    @property
    def fail_signal(self) -> Shape:
        """The signal shape of the fail category (``signal_fail``, else the shared ``signal``)."""
        return self.signal if self.signal_fail is None else self.signal_fail

    @property
    def shape_names(self) -> list[str]:
        """Names of the shape parameters (all but the yields and ε)."""
        return self.names[len(YIELDS):]

    @property
    def default_fixed(self) -> set[str]:
        """Parameters fixed unless the caller gives them limits."""
        bkg = {f"{p}_{c}" for c in ("pass", "fail") for p in self.background.fixed}
        return set(self.signal.fixed) | set(self.fail_signal.fixed) | bkg

    @property
    def bounded(self) -> set[str]:
        """Parameters allowed to sit at a limit."""
        bkg = {f"{p}_{c}" for c in ("pass", "fail") for p in self.background.bounded}
        return (set(self.signal.bounded) | set(self.fail_signal.bounded) | bkg
                | ({"frac_gauss_fail"} if self.fail_gauss else set()))

    @property
    def fused(self) -> bool:
        """Whether both shapes have a numba kernel (and there is no fail Gaussian nor fail signal of its own)."""
        return (self.signal.code >= 0 and self.background.code >= 0 and not self.fail_gauss
                and self.signal_fail is None)

    def fail_gauss_params(self, x: np.ndarray) -> tuple[float, float, float]:
        """(μ, σ, fraction) of the fail Gaussian in ``x`` ((0, 1, 0): none)."""
        if not self.fail_gauss:
            return 0.0, 1.0, 0.0
        i = self.names.index(FAIL_GAUSS[0])
        return float(x[i]), float(x[i + 1]), float(x[i + 2])

    @property
    def width_mask(self) -> np.ndarray:
        """Boolean mask of the signal parameters shifted by ``dsigma_fail``."""
        return np.array([self.fail_width_shift and p in self.signal.widths for p in self.signal.params], dtype=bool)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(signal params pass, signal params fail, background params pass, background params fail)."""
        ns, nb_ = len(self.signal.params), len(self.background.params)
        sig = np.asarray(x[4 : 4 + ns], dtype=float)
        sig_fail = sig + self.width_mask * x[-1] if self.fail_width_shift else sig
        if self.signal_fail is not None:
            nf = len(self.signal_fail.params)
            sig_fail = np.asarray(x[4 + ns : 4 + ns + nf], dtype=float)
            ns += nf
        return sig, sig_fail, np.asarray(x[4 + ns : 4 + ns + nb_]), np.asarray(x[4 + ns + nb_ : 4 + ns + 2 * nb_])

    def components(self, edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Expected signal and background counts per mass bin for the parameter vector ``x``:
        (signal pass, background pass, signal fail, background fail)."""
        n_sig, eff, nbp, nbf = x[:4]
        ps, psf, pbp, pbf = self.split(x)
        sp = np.diff(normalised_cdf(self.signal, edges, self.lo, self.hi, *ps))
        sf = sp if psf is ps else np.diff(normalised_cdf(self.fail_signal, edges, self.lo, self.hi, *psf))
        if self.fail_gauss:
            mu_g, sigma_g, f_g = self.fail_gauss_params(x)
            gauss = np.diff(normalised_cdf(SIGNALS["gauss"], edges, self.lo, self.hi, mu_g, sigma_g))
            sf = (1.0 - f_g) * sf + f_g * gauss
        bp = np.diff(normalised_cdf(self.background, edges, self.lo, self.hi, *pbp))
        bf = np.diff(normalised_cdf(self.background, edges, self.lo, self.hi, *pbf))
        return n_sig * eff * sp, nbp * bp, n_sig * (1.0 - eff) * sf, nbf * bf

    def expected(self, edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected counts per mass bin (pass, fail) for the parameter vector ``x``."""
        sig_p, bkg_p, sig_f, bkg_f = self.components(edges, x)
        return sig_p + bkg_p, sig_f + bkg_f


def fitted_model(result: Mapping[str, Any], background: str, fail_width_shift: bool, lo: float,
                 hi: float) -> tuple[PassFailModel, np.ndarray] | None:
    """The pass/fail model of a bin's fit ``result`` (as written by ``measure_bin``) on the mass range [``lo``,
    ``hi``) and its fitted parameter vector; None when the result has no parameters (not fitted)."""
    if "values" not in result:
        return None
    signal, signal_fail = result["signal_model"], None
    if "template" in result:  # fit.signal template: the templates are stored with the result
        from calibflow.fit.templates import template_signals

        signal, signal_fail = template_signals(result["template"])
    model = PassFailModel.create(signal, background, lo, hi, fail_width_shift,
                                 fail_gauss="mu_gauss_fail" in result["values"],  # fit.fail_gauss
                                 signal_fail=signal_fail)
    return model, np.array([result["values"][n] for n in model.names])


# --------------------------------------------------------------------------------------------------
# cost functions
# --------------------------------------------------------------------------------------------------
def _poisson_chi2(n: np.ndarray, nu: np.ndarray, scale: np.ndarray) -> float:
    """Baker-Cousins χ² with per-bin scale factors s = Σw/Σw² (1 for unweighted counts)."""
    nu = np.maximum(nu, 1e-300)
    ns, nus = n * scale, nu * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(ns > 0, ns * np.log(ns / nus), 0.0)
    return float(2.0 * np.sum(nus - ns + log_term))


@nb.njit(cache=True, error_model="numpy")
def _bin_fractions(code: int, edges: np.ndarray, p: np.ndarray, off: int, npar: int, lo: float, hi: float,
                   uniform: bool, out: np.ndarray, checked: bool = False) -> None:
    """Fractions of shape ``code`` (parameters p[off:off+npar]) in each bin of ``edges``, [lo, hi] = 1.

    Exponential on uniform bins: f_j = e^{kΔj}·expm1(kΔ)/expm1(kW), one exp per bin by recurrence. ``checked``:
    the arithmetic of :func:`normalised_cdf` (NaN when the integral over the edges is not finite and positive;
    differences of normalised primitives, which differ from the unchecked ones where the primitive cancels).
    """
    n = edges.size - 1
    if code == EXPONENTIAL and uniform:
        k = p[off]
        delta, width = edges[1] - edges[0], edges[n] - edges[0]
        if abs(k) * width < 1e-12:
            out[:] = delta / width
            return
        if k > 0:  # from the top bin down, f_top = expm1(-kΔ)/expm1(-kW), so that the recurrence never overflows
            f, r = math.expm1(-k * delta) / math.expm1(-k * width), math.exp(-k * delta)
            for j in range(n - 1, -1, -1):
                out[j] = f
                f *= r
            return
        r = math.exp(k * delta)
        f = math.expm1(k * delta) / math.expm1(k * width)
        for j in range(n):
            out[j] = f
            f *= r
        return
    prim = np.empty(n + 1)
    if code == CMS:  # cdf1's scale, ln S(lo), once (the same value cdf1 recomputes at every edge)
        a, be, ga = p[off], p[off + 1], p[off + 2]
        k = cms_log_survival(lo - a, be, ga)
        for j in range(n + 1):
            prim[j] = -math.exp(cms_log_survival(edges[j] - a, be, ga) - k)
    else:
        for j in range(n + 1):
            prim[j] = cdf1(code, edges[j], p, off, npar, lo, hi)
    prev = prim[0]
    norm = prim[n] - prev
    if checked:
        if not (np.isfinite(norm) and norm > 0.0):
            out[:] = np.nan
            return
        c0, prev = prev, 0.0
        for j in range(n):  # normalised_cdf's arithmetic: differences of (primitive − c0)/norm
            c = (prim[j + 1] - c0) / norm
            out[j] = c - prev
            prev = c
        return
    inv = 1.0 / norm
    for j in range(n):
        out[j] = (prim[j + 1] - prev) * inv
        prev = prim[j + 1]


@nb.njit(cache=True, error_model="numpy")
def _bc_term(n: float, nu: float, s: float) -> float:
    nus, ns = max(nu, 1e-300) * s, n * s
    return 2.0 * (nus - ns + (ns * math.log(ns / nus) if ns > 0 else 0.0))


@nb.njit(cache=True, error_model="numpy")
def _fused_chi2(x: np.ndarray, edges: np.ndarray, data: np.ndarray, codes: np.ndarray, wmask: np.ndarray,
                lo: float, hi: float) -> float:
    """Baker-Cousins χ² of the pass/fail model (layout of :class:`PassFailModel`) in one pass.

    ``data`` rows: pass counts, fail counts, pass scale, fail scale; ``codes``: signal code, number of
    signal parameters, background code, number of background parameters, uniform-bins flag.
    """
    scode, ns, bcode, nbk, uniform = codes[0], codes[1], codes[2], codes[3], codes[4] != 0
    nbin = data.shape[1]
    s_p, s_f, b_p, b_f = np.empty(nbin), np.empty(nbin), np.empty(nbin), np.empty(nbin)
    _bin_fractions(scode, edges, x, 4, ns, lo, hi, uniform, s_p)
    if wmask.any():
        psf = x[4 : 4 + ns].copy()
        for i in range(ns):
            if wmask[i]:
                psf[i] += x[x.size - 1]
        _bin_fractions(scode, edges, psf, 0, ns, lo, hi, uniform, s_f)
    else:
        s_f[:] = s_p
    _bin_fractions(bcode, edges, x, 4 + ns, nbk, lo, hi, uniform, b_p)
    _bin_fractions(bcode, edges, x, 4 + ns + nbk, nbk, lo, hi, uniform, b_f)
    return _bc_sum(x, data, s_p, s_f, b_p, b_f)


@nb.njit(cache=True, error_model="numpy")
def _template_chi2(x: np.ndarray, edges: np.ndarray, data: np.ndarray, codes: np.ndarray, lo: float, hi: float,
                   steps: np.ndarray, tables_p: tuple[np.ndarray, np.ndarray, np.ndarray],
                   tables_f: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Baker-Cousins χ² of the pass/fail model of two simulation templates (pass and fail, ``tables_*`` = the
    template's (edges, density, cumulative contents)) over a kernel background, as :func:`_fused_chi2`.

    ``codes``: offset of the fail template's (shift, smear) in ``x`` (4: the pass template's), 1 to add the last
    parameter (``dsigma_fail``) to the fail smear, background code, number of background parameters, uniform-bins
    flag; ``steps``: the step the fit edges share with the pass and the fail template (0: none; :func:`common_step`).
    """
    foff, dsmear, bcode, nbk, uniform = codes[0], codes[1] != 0, codes[2], codes[3], codes[4] != 0
    nbin = data.shape[1]
    s_p, s_f, b_p, b_f = np.empty(nbin), np.empty(nbin), np.empty(nbin), np.empty(nbin)
    template_fractions(edges, steps[0], tables_p[0], tables_p[1], tables_p[2], x[4], x[5], lo, hi, s_p)
    smear_f = x[foff + 1] + (x[x.size - 1] if dsmear else 0.0)
    template_fractions(edges, steps[1], tables_f[0], tables_f[1], tables_f[2], x[foff], smear_f, lo, hi, s_f)
    boff = foff + 2
    _bin_fractions(bcode, edges, x, boff, nbk, lo, hi, uniform, b_p, True)  # NaN where numpy's is (1e30)
    _bin_fractions(bcode, edges, x, boff + nbk, nbk, lo, hi, uniform, b_f, True)
    return _bc_sum(x, data, s_p, s_f, b_p, b_f)


@nb.njit(cache=True, error_model="numpy")
def _bc_sum(x: np.ndarray, data: np.ndarray, s_p: np.ndarray, s_f: np.ndarray, b_p: np.ndarray,
            b_f: np.ndarray) -> float:
    """Σ_j of the Baker-Cousins terms of both categories from the shapes' bin fractions (1e30 when not finite)."""
    n_sig, eff, nbp, nbf = x[0], x[1], x[2], x[3]
    chi2 = 0.0
    for j in range(data.shape[1]):
        chi2 += _bc_term(data[0, j], n_sig * eff * s_p[j] + nbp * b_p[j], data[2, j])
        chi2 += _bc_term(data[1, j], n_sig * (1.0 - eff) * s_f[j] + nbf * b_f[j], data[3, j])
    return chi2 if np.isfinite(chi2) else 1e30


def binned_cost(model: PassFailModel, edges: np.ndarray, hp: np.ndarray, hf: np.ndarray, sp: np.ndarray,
                sf: np.ndarray) -> Cost:
    """Baker-Cousins χ²(x) of the histograms; the fused numba kernel when both shapes have one (or the signals are
    simulation templates over a kernel background: :func:`_template_chi2`), else numpy."""
    widths = np.diff(edges)
    uniform = bool(np.allclose(widths, widths[0], rtol=1e-9, atol=0.0))
    data = np.ascontiguousarray(np.stack([hp, hf, sp, sf]))
    if model.fused:
        codes = np.array([model.signal.code, len(model.signal.params), model.background.code,
                          len(model.background.params), uniform], dtype=np.int64)
        args = (np.ascontiguousarray(edges), data, codes, model.width_mask, model.lo, model.hi)

        def fused(x: np.ndarray) -> float:
            return _fused_chi2(np.asarray(x, dtype=float), *args)

        return fused
    if _template_fused(model):
        return _template_cost(model, np.ascontiguousarray(edges, dtype=float), data, uniform)

    def cost(x: np.ndarray) -> float:
        nu_p, nu_f = model.expected(edges, x)
        if not (np.all(np.isfinite(nu_p)) and np.all(np.isfinite(nu_f))):
            return 1e30
        return _poisson_chi2(hp, nu_p, sp) + _poisson_chi2(hf, nu_f, sf)

    return cost


def _template_fused(model: PassFailModel) -> bool:
    """Whether the model's signals are simulation templates (pass, and fail or the shared one) over a kernel
    background without a fail Gaussian: the binned cost is :func:`_template_chi2`."""
    return (model.signal.table is not None and model.fail_signal.table is not None
            and len(model.signal.params) == 2 and len(model.fail_signal.params) == 2
            and model.background.code >= 0 and not model.fail_gauss)


def _template_cost(model: PassFailModel, edges: np.ndarray, data: np.ndarray, uniform: bool) -> Cost:
    """The binned cost of a :func:`_template_fused` model (:func:`_template_chi2`)."""
    own = model.signal_fail is not None
    dsmear = not own and bool(model.width_mask[1])
    codes = np.array([6 if own else 4, dsmear, model.background.code, len(model.background.params), uniform],
                     dtype=np.int64)
    tables = [tuple(np.ascontiguousarray(a, dtype=float) for a in s.table)  # type: ignore[union-attr]
              for s in (model.signal, model.fail_signal)]
    steps = np.array([common_step(edges, t[0]) for t in tables])
    args = (edges, data, codes, model.lo, model.hi, steps, tables[0], tables[1])

    def fused(x: np.ndarray) -> float:
        return _template_chi2(np.asarray(x, dtype=float), *args)

    return fused


def _scale(w: np.ndarray, w2: np.ndarray | None) -> np.ndarray:
    if w2 is None:
        return np.ones_like(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w2 > 0, w / np.where(w2 > 0, w2, 1.0), 1.0)


# --------------------------------------------------------------------------------------------------
# starting values
# --------------------------------------------------------------------------------------------------
def _sideband_density(h: np.ndarray) -> tuple[float, float]:
    k = max(1, int(SIDEBAND_FRACTION * h.size))
    return float(np.mean(h[:k])), float(np.mean(h[-k:]))


def peak_estimate(edges: np.ndarray, hp: np.ndarray, hf: np.ndarray) -> tuple[float, float]:
    """(peak position, width guess) from the largest excess of pass+fail over the sideband level."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = float(edges[0]), float(edges[-1])
    excess = np.clip(hp + hf - np.median(np.concatenate([hp[:3], hp[-3:], hf[:3], hf[-3:]])), 0, None)
    peak = float(centres[np.argmax(excess)]) if excess.sum() > 0 else 0.5 * (lo + hi)
    return peak, max(3.0 * float(edges[1] - edges[0]), (hi - lo) / 40.0)


def starting_values(model: PassFailModel, edges: np.ndarray, hp: np.ndarray, hf: np.ndarray) -> Start:
    """Data-driven starts and limits: background from the sidebands, signal from the excess."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    total = max(float(hp.sum() + hf.sum()), 1.0)
    start: Start = {}
    sig_counts = []
    for cat, h in (("pass", hp), ("fail", hf)):
        left, right = _sideband_density(h)
        bkg = 0.5 * (left + right) * h.size
        sig_counts.append(max(float(h.sum()) - bkg, 0.05 * float(h.sum()) + 1.0))
        start[f"n_bkg_{cat}"] = (max(bkg, 1.0), (0.0, 2.0 * total))
        defaults = model.background.start(model.lo, model.hi, 0.0, 0.0)
        for p, s in defaults.items():
            start[f"{p}_{cat}"] = s
        if model.background.name == "exponential":
            span = centres[-1] - centres[0]
            slope = np.log((right + 1.0) / (left + 1.0)) / span if span > 0 else 0.0
            lim = defaults["slope"][1]
            start[f"slope_{cat}"] = (float(np.clip(slope, *lim)), lim)
    peak, width = peak_estimate(edges, hp, hf)
    start.update(model.signal.start(model.lo, model.hi, peak, width))
    if model.signal_fail is not None:
        start.update(model.signal_fail.start(model.lo, model.hi, peak, width))
    start["n_sig"] = (sig_counts[0] + sig_counts[1], (0.0, 2.0 * total))
    start["eff"] = (float(np.clip(sig_counts[0] / (sig_counts[0] + sig_counts[1]), 0.02, 0.98)), (0.0, 1.0))
    if model.fail_width_shift:
        start["dsigma_fail"] = (0.0, (-0.5 * width, 2.0 * width))
    if model.fail_gauss:
        w = model.hi - model.lo
        start.update({"mu_gauss_fail": (peak, (model.lo, model.hi)),
                      "sigma_gauss_fail": (3.0 * width, (0.5 * width, 0.5 * w)),
                      "frac_gauss_fail": (0.1, (0.0, 1.0))})
    return start


def sideband_starts(model: PassFailModel, edges: np.ndarray, hp: np.ndarray, hf: np.ndarray,
                    peak: float, width: float) -> Start:
    """Starts from background-only fits of the sidebands (bins further than 3 widths from ``peak``).

    Each category's background shape and yield come from a Poisson fit of its sideband bins; the signal
    yield and ε from the excess over that background in the whole range.
    """
    start = starting_values(model, edges, hp, hf)
    centres = 0.5 * (edges[1:] + edges[:-1])
    side = np.abs(centres - peak) > SIGNAL_WINDOW * width
    bkg_names = model.background.params
    if side.sum() < len(bkg_names) + 2:
        return start
    excess = []
    for cat, h in (("pass", hp), ("fail", hf)):
        names = [f"n_bkg_{cat}", *(f"{p}_{cat}" for p in bkg_names)]

        def cost(x: np.ndarray, h: np.ndarray = h) -> float:
            frac = np.diff(normalised_cdf(model.background, edges, model.lo, model.hi, *x[1:]))
            nu = x[0] * frac[side]
            return _poisson_chi2(h[side], nu, np.ones_like(nu)) if np.all(np.isfinite(nu)) else 1e30

        m = Minuit(cost, [start[n][0] for n in names], name=names)
        m.errordef = Minuit.LEAST_SQUARES
        for n in names:
            m.limits[n] = start[n][1]
            m.fixed[n] = n.rsplit("_", 1)[0] in model.background.fixed
        m.migrad()
        for n in names:
            start[n] = (float(m.values[n]), start[n][1])
        excess.append(max(float(h.sum()) - float(m.values[names[0]]), 1.0))
    start["n_sig"] = (excess[0] + excess[1], start["n_sig"][1])
    start["eff"] = (float(np.clip(excess[0] / (excess[0] + excess[1]), 0.02, 0.98)), (0.0, 1.0))
    return start


def apply_overrides(model: PassFailModel, start: Start,
                    parameters: Mapping[str, Mapping[str, Any]] | None) -> tuple[Start, set[str]]:
    """Starts with the user's overrides applied, and the set of fixed parameters.

    Overrides naming parameters absent from ``model`` are skipped (the caller validates names against
    the requested model; simpler fallback models have fewer parameters).
    """
    start = dict(start)
    fixed = set(model.default_fixed)
    for name, spec in (parameters or {}).items():
        if name not in start:
            continue
        value, lim = start[name]
        lim = tuple(spec["limits"]) if spec.get("limits") else lim
        start[name] = (spec["value"] if spec.get("value") is not None else value, lim)  # type: ignore[assignment]
        if spec.get("limits"):
            fixed.discard(name)
        if spec.get("fixed"):
            fixed.add(name)
    return start, fixed


def one_category(background: str | Shape,
                 parameters: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Overrides making the pass/fail model a fit of one mass spectrum (every candidate in the pass category):
    ε = 1 and the fail background absent (``n_bkg_fail`` = 0, its shape parameters fixed), merged over the
    user's ``parameters``, which keep their starts and limits but cannot free these."""
    bkg = get_shape("background", background)
    forced: dict[str, dict[str, Any]] = {"eff": {"value": 1.0, "fixed": True},
                                         "n_bkg_fail": {"value": 0.0, "fixed": True}}
    forced.update({f"{p}_fail": {"fixed": True} for p in bkg.params})
    out = {k: dict(v) for k, v in (parameters or {}).items()}
    for name, spec in forced.items():
        out[name] = {**out.get(name, {}), **spec}
    return out


def shifted(cost: Cost, x0: np.ndarray, level: float = SHIFTED_LEVEL) -> Cost:
    """``cost`` − cost(``x0``) + ``level`` (same minimum and curvature).

    Minuit sizes HESSE's finite-difference steps so that the change of the cost is ≈ 2.4e-4·(|f| + 1)
    (``MnHesse``: aimsag = √eps2·(|amin| + up)). An extended unbinned −2 ln L of 100k candidates is
    ≈ −1e6 at its minimum, which gives steps of ±13 σ and HESSE errors several % off (and different at
    every HESSE call). Shifted to ``level`` = 10 at a start near the minimum, the steps are ≈ 0.05 σ, as for
    a binned χ² of a few ndof; at level 0 they would be ≈ 0.015 σ, where the cost's roughness (e.g. Crystal
    Ball junctions crossing candidates) makes HESSE's errors up to 1.5 % (yields) and 6 % (tails) off.
    """
    c0 = float(cost(np.asarray(x0, dtype=float)))
    if not (np.isfinite(c0) and abs(c0) < 1e29):
        return cost
    offset = c0 - level

    def cost_shifted(x: np.ndarray) -> float:
        return cost(x) - offset

    return cost_shifted


def hesse_done_by_migrad(m: Minuit) -> bool:
    """Whether Migrad's last state is a successful HESSE at the reported minimum.

    Minuit2's ``VariableMetricBuilder`` ends with ``MnHesse`` for strategy 2, or strategy 1 when the
    variable-metric covariance is still uncertain (Dcovar > 0.05); a successful ``MnHesse`` returns
    ``MinimumError(V, 0.)`` (status PosDef, Dcovar exactly 0) with the parameters it started from. If Migrad
    iterated after it, or the matrix was made positive definite, or HESSE failed, this is False and the
    caller runs HESSE itself. The states are read through iminuit's pickle support (``__getstate__``:
    parameters, error (matrix, Dcovar, status), gradient, edm, nfcn); any other layout gives False.
    """
    try:
        states = m.fmin._src.__getstate__()[2]  # type: ignore[union-attr]
        if len(states) < 2:
            return False
        prev, last = states[-2].__getstate__(), states[-1].__getstate__()
        _, dcovar, status = last[1]
        return (int(status) == MINIMUM_ERROR_POSDEF and float(dcovar) == 0.0
                and np.array_equal(np.asarray(last[0][0]), np.asarray(prev[0][0])))
    except (AttributeError, IndexError, TypeError, ValueError):
        return False


def seed_covariance(m: Minuit, prefit: Minuit) -> bool:
    """Start the next Migrad of ``m`` from the state of ``prefit``: its values *and* covariance.

    Both must have the same parameters, limits and fixed set (``m`` built from ``prefit``'s values). Minuit2's
    seed generator takes a covariance it is given instead of a diagonal guess from the first gradient, so
    Migrad starts with the correlations and needs about one iteration near the minimum. iminuit has no
    public setter for it: this copies the ``_last_state`` attribute, and returns False (nothing changed) if
    that layout is not there.
    """
    try:
        state = prefit._last_state
        if not state.has_covariance or [p.name for p in state] != list(m.parameters):
            return False
        m._last_state = type(state)(state)  # a copy: Migrad must not alter the prefit's state
    except (AttributeError, TypeError):
        return False
    return True


def minimise(m: Minuit, prefit: Minuit | None = None) -> None:
    """Migrad, then HESSE unless Migrad's closing HESSE already gave the covariance at the minimum
    (:func:`hesse_done_by_migrad`). With ``prefit``, Migrad starts with its covariance
    (:func:`seed_covariance`); if that does not end in a valid minimum, the fit reruns from the start
    values without it."""
    seeded = prefit is not None and seed_covariance(m, prefit)
    m.migrad()
    if not hesse_done_by_migrad(m):
        m.hesse()
    if seeded and not m.valid:
        m.reset()
        minimise(m)


def make_minuit(cost: Cost, model: PassFailModel, start: Start, fixed: set[str], strategy: int,
                grad: Callable[[np.ndarray], np.ndarray] | None = None) -> Minuit:
    """Minuit on ``cost`` (a χ²-like, errordef 1) with starts clipped into their limits."""
    names = model.names
    x0 = [float(np.clip(start[n][0], *start[n][1])) for n in names]
    m = Minuit(cost, x0, name=names, grad=grad)
    m.errordef = Minuit.LEAST_SQUARES
    for n in names:
        m.limits[n] = start[n][1]
        m.fixed[n] = n in fixed
    m.strategy = strategy
    return m


# --------------------------------------------------------------------------------------------------
# attempts and result
# --------------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    """One minimisation: its model, Minuit, goodness of fit and problems."""

    label: str
    model: PassFailModel
    minuit: Minuit
    chi2: float
    ndof: int
    problems: list[str]
    chi2_constraints: float = 0.0
    n_constraints: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the attempt."""
        return {"label": self.label, "signal_model": self.model.signal.name,
                "status": ",".join(self.problems) or "ok", "chi2": self.chi2, "ndof": self.ndof,
                "valid": bool(self.minuit.valid)}


FREEZE_LABEL = "background_shape_fixed"
"""Label of the attempt that fixes unconstrained background shapes (:func:`frozen_background`)."""
FREEZE_MAX_FRACTION = 0.02
"""A category's background shape is fixed only when its fitted yield is below this fraction of its candidates."""
FREEZE_NONE = 0.5
"""A background yield below this (candidates) sits at its bound 0: the retry fixes it to 0 with its shape."""


def frozen_background(prev: Attempt, counts: Mapping[str, float]) -> dict[str, float]:
    """Background shape parameters to fix, with their values, after attempt ``prev``: in each category whose fitted
    background yield is below :data:`FREEZE_MAX_FRACTION` of its candidates (``counts``: category → Σw) and
    either a background shape parameter ran to a limit or the yield sits at 0 (< :data:`FREEZE_NONE`): the shape
    parameters, and a yield at 0 fixed to 0. Such a category holds too little background to constrain its shape;
    with the shape free, Minuit's minimum or covariance is invalid (the flat directions, a yield at its bound), and
    with it fixed where the data drove it, the errors of ε and the yields are those of the data. Empty: no
    retry."""
    m, model = prev.minuit, prev.model
    hit = set(at_limit(m, model.shape_names, model.bounded))
    out: dict[str, float] = {}
    for cat, n in counts.items():
        names = [f"{p}_{cat}" for p in model.background.params]
        n_bkg = float(m.values[f"n_bkg_{cat}"])
        none = n_bkg < FREEZE_NONE and not m.fixed[f"n_bkg_{cat}"]
        if n_bkg < FREEZE_MAX_FRACTION * n and (none or hit.intersection(names)):
            out.update({k: float(m.values[k]) for k in names if not m.fixed[k]})
            if none:
                out[f"n_bkg_{cat}"] = 0.0
    return out


def attempt_plan(signal: Shape, strategy: int, retry: bool, keep: Sequence[str] = ()
                 ) -> list[tuple[str, Shape, int, str]]:
    """(label, signal shape, strategy, start mode) of each attempt, in order; the simpler signals stop at the
    first lacking a parameter of ``keep``."""
    plan = [("initial", signal, strategy, "excess")]
    if not retry:
        return plan
    plan.append(("strategy2_sideband_starts", signal, 2, "sideband"))
    plan.append((FREEZE_LABEL, signal, 2, "freeze"))
    seen = {signal.name}
    shape = signal
    while shape.simpler and shape.simpler not in seen:
        shape = get_shape("signal", shape.simpler)
        if not set(keep) <= set(shape.params):
            break
        seen.add(shape.name)
        plan.append((f"simpler_signal:{shape.name}", shape, 2, "sideband"))
    return plan


def run_attempts(
    model0: PassFailModel,
    edges: np.ndarray,
    hp: np.ndarray,
    hf: np.ndarray,
    make_cost: Callable[[PassFailModel], Cost],
    goodness: Callable[[PassFailModel, Minuit], tuple[float, int]],
    parameters: Mapping[str, Mapping[str, Any]] | None,
    strategy: int,
    quality: FitQuality,
    prefit: bool = False,
    shift: bool = False,
    constraints: Constraints | None = None,
    keep: Sequence[str] = (),
) -> tuple[list[Attempt], int]:
    """Fit until an attempt passes the checks; return all attempts and the index of the one to report.

    ``hp``/``hf`` are histograms on ``edges`` used for the starting values (the data themselves for
    binned fits); ``goodness(model, minuit)`` gives the data's (χ², ndof) at a minimum. ``prefit``: start each
    attempt from a binned fit of ``hp``/``hf``, its values and covariance (for unbinned costs: far fewer
    expensive calls; :func:`seed_covariance`). ``shift``: minimise the cost minus its value at the start
    (:func:`shifted`; for costs far from 0 at the minimum, whose HESSE would otherwise be inaccurate).
    ``constraints``: Gaussian penalties added to every attempt's cost
    (:func:`calibflow.fit.constraints.constrained`), and to the data's χ² and ndof as one measurement each
    (:func:`calibflow.fit.constraints.constraint_chi2`); the checks see the sums. HESSE runs
    unless Migrad's closing HESSE already gave the covariance (:func:`minimise`). ``keep``: parameters every
    attempt's signal must have (:func:`attempt_plan`).
    """
    names = model0.names
    for name in parameters or {}:
        if name not in names:
            raise ValueError(f"fit.parameters.{name}: not a parameter of this model; parameters: {', '.join(names)}")
    peak, width = peak_estimate(edges, hp, hf)
    attempts: list[Attempt] = []
    for label, signal, strat, mode in attempt_plan(model0.signal, strategy, quality.retry, keep):
        model = replace(model0, signal=signal.on(model0.lo, model0.hi))
        freeze: dict[str, float] = {}
        if mode == "freeze":
            prev = min(attempts, key=lambda a: a.minuit.fval)  # from the best minimum found so far
            freeze = frozen_background(prev, {"pass": float(hp.sum()), "fail": float(hf.sum())})
            if not freeze:
                continue
            raw = {n: (float(prev.minuit.values[n]), (prev.minuit.limits[n][0], prev.minuit.limits[n][1]))
                   for n in model.names}
        elif mode == "sideband":
            prev = attempts[-1].minuit
            if "mu" in prev.parameters and "sigma" in prev.parameters and not at_limit(prev, ["mu", "sigma"]):
                peak, width = float(prev.values["mu"]), float(prev.values["sigma"])
            raw = sideband_starts(model, edges, hp, hf, peak, width)
        else:
            raw = starting_values(model, edges, hp, hf)
        start, fixed = apply_overrides(model, raw, parameters)
        if mode == "freeze":  # from the minimum: the user's limits and fixed values apply, not their starts
            start = {n: (v if n in fixed else raw[n][0], lim) for n, (v, lim) in start.items()}
        start.update({k: (v, start[k][1]) for k, v in freeze.items()})
        fixed |= set(freeze)
        seed: Minuit | None = None
        if prefit:
            pre = make_minuit(binned_cost(model, edges, hp, hf, np.ones_like(hp), np.ones_like(hf)), model, start,
                              fixed, 0)
            pre.migrad()
            if pre.valid:
                start = {n: (float(pre.values[n]), start[n][1]) for n in start}
                seed = pre
        cost = constrained(make_cost(model), model.names, constraints)
        if shift:
            cost = shifted(cost, np.array([np.clip(start[n][0], *start[n][1]) for n in model.names]))
        m = make_minuit(cost, model, start, fixed, strat)
        minimise(m, seed)
        chi2, ndof = goodness(model, m)
        chi2_c, n_c = constraint_chi2(model.names, constraints, np.array(m.values))
        chi2, ndof = chi2 + chi2_c, ndof + n_c
        problems = fit_problems(m, model.shape_names, model.bounded, chi2, ndof, quality)
        if freeze:
            label = f"{FREEZE_LABEL}:{'+'.join(sorted(freeze))}"
        attempts.append(Attempt(label, model, m, chi2, ndof, problems, chi2_c, n_c))
        if not problems:
            return attempts, len(attempts) - 1
    best = min(range(len(attempts)),  # an inaccurate covariance makes every error meaningless: avoid it next
               key=lambda i: (not attempts[i].minuit.valid, not attempts[i].minuit.accurate,
                              len(attempts[i].problems), i))
    return attempts, best


def efficiency_errors(m: Minuit, minos: bool, problems: list[str]) -> tuple[float, float]:
    """(err_down, err_up) of ε: MINOS when asked, ε is free and the minimum is valid, else HESSE (symmetric);
    (0, 0) when ε is fixed (``fit.parameters.eff.fixed``: nothing to scan)."""
    if m.fixed["eff"]:
        return 0.0, 0.0
    err = float(m.errors["eff"])
    if not (minos and m.valid):
        return err, err
    try:
        me = m.minos("eff").merrors["eff"]
    except RuntimeError:
        problems.append("minos_failed")
        return err, err
    if not me.is_valid:
        problems.append("minos_failed")
        return err, err
    return -float(me.lower), float(me.upper)


def split_yield_errors(n_sig: float, eff: float, err_n: float, err_eff: float, cov: float) -> tuple[float, float]:
    """Errors of N_pass = N·ε and N_fail = N·(1−ε) from those of N and ε and their covariance ``cov``
    (linear propagation: σ²(Nε) = ε²σ²_N + N²σ²_ε + 2Nε·cov, σ²(N(1−ε)) = (1−ε)²σ²_N + N²σ²_ε − 2N(1−ε)·cov)."""
    var_pass = eff**2 * err_n**2 + n_sig**2 * err_eff**2 + 2.0 * n_sig * eff * cov
    var_fail = (1.0 - eff) ** 2 * err_n**2 + n_sig**2 * err_eff**2 - 2.0 * n_sig * (1.0 - eff) * cov
    return math.sqrt(max(var_pass, 0.0)), math.sqrt(max(var_fail, 0.0))


def build_result(attempts: list[Attempt], accepted: int, minos: bool, errors: dict[str, float] | None = None,
                 cov_n_eff: float | None = None) -> FitResult:
    """FitResult of attempt ``accepted``; ``errors`` (with ``cov_n_eff``, the covariance of N_sig and ε)
    overrides HESSE's (then no MINOS). Fixed parameters have error 0, and MINOS runs only on a free ε."""
    a = attempts[accepted]
    m, problems = a.minuit, list(a.problems)
    names = a.model.names
    errs = dict(errors) if errors is not None else {n: float(m.errors[n]) for n in names}
    errs.update({n: 0.0 for n in names if m.fixed[n]})  # Minuit reports a fixed parameter's step as its error
    if errors is None:
        err_down, err_up = efficiency_errors(m, minos, problems)
        cov_n_eff = float(m.covariance["n_sig", "eff"]) if m.covariance is not None else 0.0
    else:
        err_down = err_up = errs["eff"]
    eff, n_sig = float(m.values["eff"]), float(m.values["n_sig"])
    n_pass_err, n_fail_err = split_yield_errors(n_sig, eff, errs["n_sig"], errs["eff"], cov_n_eff or 0.0)
    return FitResult(
        efficiency=eff,
        err_down=err_down,
        err_up=err_up,
        n_sig=n_sig,
        n_sig_err=errs["n_sig"],
        n_pass=n_sig * eff,
        n_fail=n_sig * (1.0 - eff),
        n_pass_err=n_pass_err,
        n_fail_err=n_fail_err,
        status=",".join(problems) or "ok",
        chi2=a.chi2,
        ndof=a.ndof,
        chi2_pvalue=chi2_pvalue(a.chi2, a.ndof),
        values={n: float(m.values[n]) for n in names},
        errors=errs,
        n_attempts=len(attempts),
        accepted=accepted,
        attempts=[x.summary() for x in attempts],
        signal_model=a.model.signal.name,
        chi2_constraints=a.chi2_constraints,
        n_constraints=a.n_constraints,
    )


def fit_pass_fail(
    edges: np.ndarray,
    pass_w: np.ndarray,
    fail_w: np.ndarray,
    pass_w2: np.ndarray | None = None,
    fail_w2: np.ndarray | None = None,
    signal: str | Shape = "crystalball",
    background: str | Shape = "exponential",
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    minos: bool = True,
    fail_width_shift: bool = False,
    quality: FitQuality | None = None,
    fail_gauss: bool = False,
    signal_fail: Shape | None = None,
    constraints: Constraints | None = None,
    keep: Sequence[str] = (),
) -> FitResult:
    """Fit pass and fail histograms (same ``edges``) simultaneously; ε with asymmetric MINOS errors.

    ``parameters`` overrides starts: name -> {"value": v, "limits": (lo, hi), "fixed": bool}; names are
    those of :attr:`PassFailModel.names`. Parameters a shape fixes by default (e.g. the ARGUS endpoint)
    float when given limits. ``fail_width_shift`` adds ``dsigma_fail`` to the signal widths of the fail
    category, ``fail_gauss`` a Gaussian to the fail signal (:data:`FAIL_GAUSS`). ``quality`` sets the checks
    and whether failing fits are retried. ``signal_fail``: a signal shape of the fail category's own
    (templates); ``constraints``: Gaussian constraints name -> (value, σ) (:mod:`calibflow.fit.constraints`),
    each a measurement in the reported χ² and ndof (:func:`run_attempts`); ``keep``: parameters the reported signal
    must have (:func:`attempt_plan`). Status is ``ok`` or a comma-separated list of the problems of the reported
    attempt.
    """
    edges = np.asarray(edges, dtype=float)
    hp, hf = np.asarray(pass_w, dtype=float), np.asarray(fail_w, dtype=float)
    model0 = PassFailModel.create(signal, background, edges[0], edges[-1], fail_width_shift, fail_gauss, signal_fail)
    sp, sf = _scale(hp, pass_w2), _scale(hf, fail_w2)

    def goodness(model: PassFailModel, m: Minuit) -> tuple[float, int]:  # the data's: the cost less the penalty
        return float(m.fval) - constraint_chi2(model.names, constraints, np.array(m.values))[0], \
            int(hp.size + hf.size - m.nfit)

    attempts, accepted = run_attempts(model0, edges, hp, hf, lambda mdl: binned_cost(mdl, edges, hp, hf, sp, sf),
                                      goodness, parameters, strategy, quality or FitQuality(),
                                      constraints=constraints, keep=keep)
    return build_result(attempts, accepted, minos)


def fit_yield(
    edges: np.ndarray,
    w: np.ndarray,
    w2: np.ndarray | None = None,
    signal: str | Shape = "crystalball",
    background: str | Shape = "exponential",
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    quality: FitQuality | None = None,
) -> FitResult:
    """Extended binned fit N_sig·S + N_bkg·B of one mass histogram (a signal yield, no pass/fail).

    The pass/fail model with every candidate in the pass category, ε fixed to 1 and no fail background
    (:func:`one_category`), so the parameter names, starts, retries and checks are those of
    :func:`fit_pass_fail` (``n_sig``, ``n_bkg_pass``, ``slope_pass``, ...); χ² and ndof are those of this
    histogram alone. ``n_sig ± n_sig_err`` (HESSE; SumW2-like scaled Poisson for weighted ``w2``) is the result.
    """
    edges = np.asarray(edges, dtype=float)
    h = np.asarray(w, dtype=float)
    empty, ones = np.zeros_like(h), np.ones_like(h)
    model0 = PassFailModel.create(signal, background, edges[0], edges[-1])
    scale = _scale(h, w2)

    def goodness(model: PassFailModel, m: Minuit) -> tuple[float, int]:
        return float(m.fval), int(h.size - m.nfit)

    attempts, accepted = run_attempts(model0, edges, h, empty,
                                      lambda mdl: binned_cost(mdl, edges, h, empty, scale, ones), goodness,
                                      one_category(background, parameters), strategy, quality or FitQuality())
    return build_result(attempts, accepted, minos=False)
