"""Simultaneous binned extended maximum-likelihood fit of pass and fail mass histograms.

Model per category c ∈ {pass, fail}, expected counts in mass bin j:

    ν_pass,j = N_sig·ε·S_j(θ) + N_bkg,pass·B_j(β_pass)
    ν_fail,j = N_sig·(1−ε)·S_j(θ) + N_bkg,fail·B_j(β_fail)

with S_j, B_j the fractions of the normalised signal and background shapes in bin j. The signal shape θ
is shared, the efficiency ε is a fit parameter. The cost is the Baker-Cousins Poisson χ²; weighted
histograms use the scaled-Poisson approximation (counts and expectations scaled by Σw/Σw² per bin),
which gives correct uncertainties for weighted data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from iminuit import Minuit

from calibflow.fit.models import Shape, get_shape, normalised_cdf

SIDEBAND_FRACTION = 0.15


@dataclass
class FitResult:
    """Outcome of one pass/fail fit. Yields are signal counts in the fit range."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class PassFailModel:
    """Parameter layout and expectation function of a simultaneous pass/fail model."""

    signal: Shape
    background: Shape
    lo: float
    hi: float

    @property
    def names(self) -> list[str]:
        """Parameter names, in the order of the parameter vector."""
        bkg = [f"{p}_{c}" for c in ("pass", "fail") for p in self.background.params]
        return ["n_sig", "eff", "n_bkg_pass", "n_bkg_fail", *self.signal.params, *bkg]

    def expected(self, edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected counts per mass bin (pass, fail) for the parameter vector ``x``."""
        ns, nb = len(self.signal.params), len(self.background.params)
        n_sig, eff, nbp, nbf = x[:4]
        sig = np.diff(normalised_cdf(self.signal, edges, self.lo, self.hi, *x[4 : 4 + ns]))
        bp = np.diff(normalised_cdf(self.background, edges, self.lo, self.hi, *x[4 + ns : 4 + ns + nb]))
        bf = np.diff(normalised_cdf(self.background, edges, self.lo, self.hi, *x[4 + ns + nb :]))
        return n_sig * eff * sig + nbp * bp, n_sig * (1.0 - eff) * sig + nbf * bf


def _poisson_chi2(n: np.ndarray, nu: np.ndarray, scale: np.ndarray) -> float:
    """Baker-Cousins χ² with per-bin scale factors s = Σw/Σw² (1 for unweighted counts)."""
    nu = np.maximum(nu, 1e-300)
    ns, nus = n * scale, nu * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(ns > 0, ns * np.log(ns / nus), 0.0)
    return float(2.0 * np.sum(nus - ns + log_term))


def _scale(w: np.ndarray, w2: np.ndarray | None) -> np.ndarray:
    if w2 is None:
        return np.ones_like(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w2 > 0, w / w2, 1.0)


def _sideband_density(h: np.ndarray) -> tuple[float, float]:
    k = max(1, int(SIDEBAND_FRACTION * h.size))
    return float(np.mean(h[:k])), float(np.mean(h[-k:]))


def starting_values(model: PassFailModel, edges: np.ndarray, hp: np.ndarray, hf: np.ndarray) -> dict[str, Any]:
    """Data-driven starts and limits: background from the sidebands, signal from the excess."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    width_bin = edges[1] - edges[0]
    total = max(float(hp.sum() + hf.sum()), 1.0)
    start: dict[str, Any] = {}
    sig_counts = []
    for cat, h in (("pass", hp), ("fail", hf)):
        left, right = _sideband_density(h)
        bkg = 0.5 * (left + right) * h.size
        sig_counts.append(max(float(h.sum()) - bkg, 0.05 * float(h.sum()) + 1.0))
        start[f"n_bkg_{cat}"] = (max(bkg, 1.0), (0.0, 2.0 * total))
        if model.background.name == "exponential":
            span = centres[-1] - centres[0]
            slope = np.log((right + 1.0) / (left + 1.0)) / span if span > 0 else 0.0
            lim = model.background.start(model.lo, model.hi, 0.0, 0.0)["slope"][1]
            start[f"slope_{cat}"] = (float(np.clip(slope, *lim)), lim)
        else:
            for p, s in model.background.start(model.lo, model.hi, 0.0, 0.0).items():
                start[f"{p}_{cat}"] = s
    excess = np.clip(hp + hf - np.median(np.concatenate([hp[:3], hp[-3:], hf[:3], hf[-3:]])), 0, None)
    peak = float(centres[np.argmax(excess)]) if excess.sum() > 0 else 0.5 * (model.lo + model.hi)
    sig_start = model.signal.start(model.lo, model.hi, peak, max(3.0 * width_bin, (model.hi - model.lo) / 40.0))
    start.update(sig_start)
    start["n_sig"] = (sig_counts[0] + sig_counts[1], (0.0, 2.0 * total))
    start["eff"] = (float(np.clip(sig_counts[0] / (sig_counts[0] + sig_counts[1]), 0.02, 0.98)), (0.0, 1.0))
    return start


def _at_limit(m: Minuit, names: list[str]) -> list[str]:
    out = []
    for p in m.params:
        if p.name not in names or p.is_fixed or p.lower_limit is None or p.upper_limit is None:
            continue
        tol = max(1e-3 * (p.upper_limit - p.lower_limit), 0.1 * (p.error or 0.0))
        if min(p.value - p.lower_limit, p.upper_limit - p.value) < tol:
            out.append(p.name)
    return out


def fit_pass_fail(
    edges: np.ndarray,
    pass_w: np.ndarray,
    fail_w: np.ndarray,
    pass_w2: np.ndarray | None = None,
    fail_w2: np.ndarray | None = None,
    signal: str = "crystalball",
    background: str = "exponential",
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    strategy: int = 1,
    minos: bool = True,
) -> FitResult:
    """Fit pass and fail histograms (same ``edges``) simultaneously; ε with asymmetric MINOS errors.

    ``parameters`` overrides starts: name -> {"value": v, "limits": (lo, hi), "fixed": bool}; names are
    those of :attr:`PassFailModel.names`. Status is ``ok`` or a comma-separated list of problems.
    """
    edges = np.asarray(edges, dtype=float)
    hp, hf = np.asarray(pass_w, dtype=float), np.asarray(fail_w, dtype=float)
    model = PassFailModel(get_shape("signal", signal), get_shape("background", background), edges[0], edges[-1])
    names = model.names
    start = starting_values(model, edges, hp, hf)
    for name, spec in (parameters or {}).items():
        if name not in names:
            raise ValueError(f"fit.parameters.{name}: not a parameter of this model; parameters: {', '.join(names)}")
        value, lim = start[name]
        start[name] = (spec.get("value") if spec.get("value") is not None else value, spec.get("limits") or lim)
    sp, sf = _scale(hp, pass_w2), _scale(hf, fail_w2)

    def cost(x: np.ndarray) -> float:
        nu_p, nu_f = model.expected(edges, x)
        if not (np.all(np.isfinite(nu_p)) and np.all(np.isfinite(nu_f))):
            return 1e30
        return _poisson_chi2(hp, nu_p, sp) + _poisson_chi2(hf, nu_f, sf)

    m = Minuit(cost, np.array([start[n][0] for n in names], dtype=float), name=names)
    m.errordef = Minuit.LEAST_SQUARES
    for n in names:
        m.limits[n] = start[n][1]
        if (parameters or {}).get(n, {}).get("fixed"):
            m.fixed[n] = True
    m.strategy = strategy
    m.migrad()
    if not m.valid:
        m.strategy = 2
        m.migrad()
    m.hesse()
    problems = []
    if not m.valid:
        problems.append("invalid_minimum")
    if not m.accurate:
        problems.append("covariance_not_accurate")
    shape_pars = [n for n in names if n not in ("n_sig", "eff", "n_bkg_pass", "n_bkg_fail")]
    problems += [f"at_limit:{p}" for p in _at_limit(m, shape_pars)]
    eff, err = float(m.values["eff"]), float(m.errors["eff"])
    err_down = err_up = err
    if minos and m.valid:
        try:
            me = m.minos("eff").merrors["eff"]
            if me.is_valid:
                err_down, err_up = -float(me.lower), float(me.upper)
            else:
                problems.append("minos_failed")
        except RuntimeError:
            problems.append("minos_failed")
    n_sig = float(m.values["n_sig"])
    n_bins = int((hp.size + hf.size) - np.sum(~m.fixed))
    return FitResult(
        efficiency=eff,
        err_down=err_down,
        err_up=err_up,
        n_sig=n_sig,
        n_sig_err=float(m.errors["n_sig"]),
        n_pass=n_sig * eff,
        n_fail=n_sig * (1.0 - eff),
        status=",".join(problems) or "ok",
        chi2=float(m.fval),
        ndof=n_bins,
        values={n: float(m.values[n]) for n in names},
        errors={n: float(m.errors[n]) for n in names},
    )
