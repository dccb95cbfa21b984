"""Shapes of the discriminating variable (mass), normalised on the fit range [lo, hi] by the caller.

A :class:`Shape` provides an unnormalised cumulative function ``cdf(x, *params)`` (any primitive of its
density), the matching ``logpdf(x, *params)`` (log of the derivative of ``cdf``, same constant), default
starting values/limits and a few hints for the fits. :func:`normalised_cdf` and
:func:`normalised_logpdf` turn them into the fraction of the shape inside [lo, x] and the log density
normalised on [lo, hi]. Signal parameters are shared between the pass and fail categories; background
parameters get a ``_pass``/``_fail`` suffix in the fits.

Shapes whose definition depends on the fit range (polynomials live on [lo, hi]; the exponential is
referred to ``lo`` for numerical stability; the Voigt primitive is integrated numerically from ``lo``)
are re-bound with :meth:`Shape.on`; the registry holds them on a canonical domain.

The common shapes (gauss, double_gauss, crystalball, double_crystalball, cb_gauss, exponential, linear,
chebyshevN, bernsteinN, cms, dstar_threshold, argus) are evaluated by one numba kernel, selected by
``Shape.code``; the fits fuse it with their cost function. The Voigt profiles (voigt, double_voigt) and
johnsonsu are numpy/scipy only (scipy's Faddeeva function has no numba counterpart here). Simulation templates
(:func:`template_shape`) carry their histogram in ``Shape.table``; binned fits fuse it with their cost
(:mod:`calibflow.kernels.template`). Units: ``x`` and every location/width parameter are in the unit of the mass
variable; slopes in 1/unit; shape exponents and coefficients are dimensionless.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numba as nb
import numpy as np
from scipy import special

from calibflow.kernels.template import template_eval

Start = dict[str, tuple[float, tuple[float, float]]]
StartFn = Callable[[float, float, float, float], Start]

# kernel codes (Shape.code); -1: no fused kernel
GAUSS, CRYSTALBALL, DOUBLE_GAUSS, DOUBLE_CRYSTALBALL, CB_GAUSS = 0, 1, 2, 3, 4
EXPONENTIAL, CHEBYSHEV, BERNSTEIN, CMS, THRESHOLD, ARGUS = 10, 11, 12, 13, 14, 15
MAX_POLY_ORDER = 8

_SQRT2 = math.sqrt(2.0)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(10)


@dataclass(frozen=True)
class Shape:
    """A named 1-D shape: parameters, primitive and log-density, default starts/limits and fit hints.

    ``cdf(x, *p)``: any primitive of the density; ``logpdf(x, *p)``: log of its derivative.
    ``widths``: parameters shifted by ``dsigma_fail`` in pass/fail fits with a fail width shift.
    ``fixed``: parameters fixed by default (released when the fit's ``parameters`` give them limits).
    ``bounded``: parameters whose limits are physical bounds (sitting at them is not a fit problem).
    ``simpler``: name of the fallback signal model tried when fits with this one fail.
    ``code``/``domain``: fused numba kernel and the [lo, hi] it is bound to (see :meth:`on`).
    ``table``: a simulation template's (edges, density, cumulative contents) (:func:`template_shape`; its binned
    fits use :func:`calibflow.kernels.template.template_fractions`).
    """

    name: str
    params: tuple[str, ...]
    cdf: Callable[..., np.ndarray]
    start: StartFn
    logpdf: Callable[..., np.ndarray] | None = None
    widths: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    bounded: tuple[str, ...] = ()
    simpler: str | None = None
    code: int = -1
    domain: tuple[float, float] | None = None
    binder: Callable[[float, float], Shape] | None = field(default=None, compare=False, repr=False)
    table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def on(self, lo: float, hi: float) -> Shape:
        """This shape defined for the fit range [lo, hi] (itself when it does not depend on the range)."""
        if self.binder is None or self.domain == (float(lo), float(hi)):
            return self
        return self.binder(float(lo), float(hi))

    def pdf(self, x: np.ndarray, *params: float) -> np.ndarray:
        """Unnormalised density, the derivative of :attr:`cdf`."""
        if self.logpdf is None:
            raise NotImplementedError(f"shape {self.name!r} has no logpdf")
        return np.exp(self.logpdf(x, *params))


def normalisation(shape: Shape, lo: float, hi: float, *params: float) -> float:
    """∫_lo^hi of the shape's unnormalised density (NaN when not finite and positive)."""
    s = shape.on(lo, hi)
    c = s.cdf(np.array([lo, hi], dtype=float), *params)
    norm_ = float(c[1] - c[0])
    return norm_ if np.isfinite(norm_) and norm_ > 0 else float("nan")


def normalised_cdf(shape: Shape, x: np.ndarray, lo: float, hi: float, *params: float) -> np.ndarray:
    """Fraction of ``shape`` on [lo, hi] that lies in [lo, x]."""
    s = shape.on(lo, hi)
    c = s.cdf(np.array([lo, hi], dtype=float), *params)
    norm_ = c[1] - c[0]
    if not np.isfinite(norm_) or norm_ <= 0:
        return np.full(np.shape(x), np.nan)
    return (s.cdf(np.asarray(x, dtype=float), *params) - c[0]) / norm_


def normalised_logpdf(shape: Shape, x: np.ndarray, lo: float, hi: float, *params: float) -> np.ndarray:
    """log of the density normalised to unit integral on [lo, hi] (units: log of 1/unit of x)."""
    s = shape.on(lo, hi)
    if s.logpdf is None:
        raise NotImplementedError(f"shape {shape.name!r} has no logpdf")
    return s.logpdf(np.asarray(x, dtype=float), *params) - np.log(normalisation(s, lo, hi, *params))


def normalised_pdf(shape: Shape, x: np.ndarray, lo: float, hi: float, *params: float) -> np.ndarray:
    """Density normalised to unit integral on [lo, hi] (1/unit of x)."""
    return np.exp(normalised_logpdf(shape, x, lo, hi, *params))


# --------------------------------------------------------------------------------------------------
# numba kernels of the common shapes: scalar primitive and log-density, dispatched on ``code``
# --------------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always", error_model="numpy")
def _cb_primitive(z: float, alpha: float, n: float) -> float:
    """∫_{-∞}^{z} of the Crystal Ball density in units of σ (core exp(-t²/2), power-law tail below -α)."""
    tail = math.exp(-0.5 * alpha * alpha) * (n / alpha) / (n - 1.0)
    if z <= -alpha:
        r = (n / alpha) / (n / alpha - alpha - z)
        return tail * r ** (n - 1.0)
    return tail + _SQRT_HALF_PI * (math.erf(z / _SQRT2) + math.erf(alpha / _SQRT2))


@nb.njit(cache=True, inline="always", error_model="numpy")
def _cb_logdensity(z: float, alpha: float, n: float) -> float:
    """log of the Crystal Ball density in units of σ (same constant as :func:`_cb_primitive`)."""
    if z <= -alpha:
        return -0.5 * alpha * alpha + n * math.log((n / alpha) / (n / alpha - alpha - z))
    return -0.5 * z * z


@nb.njit(cache=True, inline="always", error_model="numpy")
def _cb_total(alpha: float, n: float) -> float:
    """∫_ℝ of the Crystal Ball density in units of σ: (n/α)e^(−α²/2)/(n−1) + √(π/2)·(1 + erf(α/√2))."""
    return math.exp(-0.5 * alpha * alpha) * (n / alpha) / (n - 1.0) + _SQRT_HALF_PI * (1.0 + math.erf(alpha / _SQRT2))


@nb.njit(cache=True, error_model="numpy")
def erfcx(x: float) -> float:
    """Scaled complementary error function e^(x²)·erfc(x) for x ≥ 0 (relative error ≲ 1e-13; reference:
    scipy.special.erfcx): e^(x²)·erfc(x) below 26, the asymptotic series to 7 terms above."""
    if x < 26.0:
        return math.exp(x * x) * math.erfc(x)
    u = 1.0 / (2.0 * x * x)
    term, total = 1.0, 1.0
    for k in range(1, 8):
        term *= -(2 * k - 1) * u
        total += term
    return total / (x * math.sqrt(math.pi))


@nb.njit(cache=True, error_model="numpy")
def gamma_integral(s: float, b: float, y: float) -> float:
    """∫_0^y t^(s−1)·e^(−b·t) dt = Γ(s)·b^(−s)·P(s, b·y) for s > 0, b ≥ 0, y ≥ 0 (unit of y^s; reference:
    scipy.special.gammainc). Series y^s·e^(−by)/s·Σ (by)^n/((s+1)…(s+n)) for by < s + 1 (exact at b = 0),
    else Γ(s)·b^(−s) − y^s·e^(−by)·h with h the continued fraction of the upper incomplete gamma (Lentz)."""
    if y <= 0.0:
        return 0.0
    x = b * y
    if x < s + 1.0:
        term, total = 1.0, 1.0
        for n in range(1, 500):
            term *= x / (s + n)
            total += term
            if term < 1e-17 * total:
                break
        return math.exp(s * math.log(y) - x) / s * total
    tiny = 1e-300
    bb = x + 1.0 - s
    c, d = 1.0 / tiny, 1.0 / bb
    h = d
    for n in range(1, 500):
        an = -n * (n - s)
        bb += 2.0
        d = an * d + bb
        d = tiny if abs(d) < tiny else d
        c = bb + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(math.lgamma(s) - s * math.log(b)) - math.exp(s * math.log(y) - x) * h


@nb.njit(cache=True, inline="always", error_model="numpy")
def _cms_log_density(y: float, beta: float, gamma: float) -> float:
    """ln[(γ/2)·erfc(−β·y)·e^(−γ·y)], y = x − α: RooCMSShape with peak = α, times γ/2 (erfc through erfcx below 0)."""
    log_erfc = math.log(math.erfc(-beta * y)) if y >= 0.0 else -(beta * y) ** 2 + math.log(erfcx(-beta * y))
    return log_erfc - gamma * y + math.log(0.5 * gamma)


@nb.njit(cache=True, error_model="numpy")
def cms_log_survival(y: float, beta: float, gamma: float) -> float:
    """ln ∫_y^∞ (γ/2)·erfc(−β·t)·e^(−γ·t) dt = ln[e^c·(½erfc(z) + ½e^(−c−γy)·erfc(−βy))], c = (γ/2β)², z = βy + γ/(2β)
    (y = x − α), each term in log form through erfcx so that nothing over- or underflows: e^(c−z²) = e^(−β²y²−γy)."""
    c = 0.25 * (gamma / beta) ** 2
    z = beta * y + 0.5 * gamma / beta
    if z >= 0.0:
        a1 = -(beta * y) ** 2 - gamma * y + math.log(0.5 * erfcx(z))
    else:
        a1 = c + math.log(0.5 * math.erfc(z))
    if y >= 0.0:
        a2 = -gamma * y + math.log(0.5 * math.erfc(-beta * y))
    else:
        a2 = -(beta * y) ** 2 - gamma * y + math.log(0.5 * erfcx(-beta * y))
    top = max(a1, a2)
    return top + math.log1p(math.exp(-abs(a1 - a2)))


@nb.njit(cache=True, inline="always", error_model="numpy")
def _chebyshev_terms(t: float, c: np.ndarray, off: int, order: int) -> tuple[float, float]:
    """(1 + Σ c_k T_k(t), its primitive in t) with the coefficients c[off:off+order].

    ∫T_1 = t²/2 and ∫T_k = (T_{k+1}/(k+1) − T_{k−1}/(k−1))/2 for k ≥ 2.
    """
    tkm1, tk = 1.0, t
    val, prim = 1.0, t
    for k in range(1, order + 1):
        tkp1 = 2.0 * t * tk - tkm1
        ck = c[off + k - 1]
        val += ck * tk
        prim += ck * (0.5 * t * t if k == 1 else 0.5 * (tkp1 / (k + 1) - tkm1 / (k - 1)))
        tkm1, tk = tk, tkp1
    return val, prim


@nb.njit(cache=True, inline="always", error_model="numpy")
def _bernstein_value(t: float, b: np.ndarray, off: int, order: int, integral: bool) -> float:
    """Bernstein polynomial with coefficients (1, b[off:off+order]) at t ∈ [0, 1], or its primitive."""
    deg = order + 1 if integral else order
    u = 1.0 - t
    val = 0.0
    acc = 0.0
    binom = 1.0
    for j in range(deg + 1):
        if integral:  # coefficients of the primitive: (1/(order+1)) Σ_{k<j} b_k
            coef = acc / (order + 1)
            if j <= order:
                acc += 1.0 if j == 0 else b[off + j - 1]
        else:
            coef = 1.0 if j == 0 else b[off + j - 1]
        val += coef * binom * t**j * u ** (deg - j)
        binom = binom * (deg - j) / (j + 1)
    return val


@nb.njit(cache=True, error_model="numpy")
def cdf1(code: int, x: float, p: np.ndarray, off: int, npar: int, lo: float, hi: float) -> float:
    """Unnormalised primitive of shape ``code`` at ``x``; parameters p[off:off+npar], fit range [lo, hi]."""
    if code == GAUSS:
        return 0.5 * math.erfc(-(x - p[off]) / (p[off + 1] * _SQRT2))
    if code == DOUBLE_GAUSS:
        f = p[off + 3]
        return 0.5 * (
            f * math.erfc(-(x - p[off]) / (p[off + 1] * _SQRT2))
            + (1.0 - f) * math.erfc(-(x - p[off]) / (p[off + 2] * _SQRT2))
        )
    if code == CRYSTALBALL:
        s = p[off + 1]
        return s * _cb_primitive((x - p[off]) / s, p[off + 2], p[off + 3])
    if code == CB_GAUSS:  # frac·CB + (1−frac)·Gauss(μ, σ_gauss), each of unit integral on ℝ
        s, al, n, f = p[off + 1], p[off + 2], p[off + 3], p[off + 5]
        return (f * _cb_primitive((x - p[off]) / s, al, n) / _cb_total(al, n)
                + (1.0 - f) * 0.5 * math.erfc(-(x - p[off]) / (p[off + 4] * _SQRT2)))
    if code == DOUBLE_CRYSTALBALL:
        s, al, nl, ar, nr = p[off + 1], p[off + 2], p[off + 3], p[off + 4], p[off + 5]
        z = (x - p[off]) / s
        if z < 0.0:
            return s * _cb_primitive(z, al, nl)
        return s * (_cb_primitive(0.0, al, nl) + _cb_primitive(0.0, ar, nr) - _cb_primitive(-z, ar, nr))
    if code == EXPONENTIAL:
        k = p[off]
        y = x - lo
        if k * k * y * y < 1e-30:
            return y + 0.5 * k * y * y
        return math.expm1(k * y) / k
    if code == CHEBYSHEV:
        half = 0.5 * (hi - lo)
        return half * _chebyshev_terms((x - lo) / half - 1.0, p, off, npar)[1]
    if code == BERNSTEIN:
        return (hi - lo) * _bernstein_value((x - lo) / (hi - lo), p, off, npar, True)
    if code == CMS:  # −∫_x^∞ (γ/2)·erfc(−β(t−α))·e^(−γ(t−α)) dt, divided by its value at lo (cms_log_survival)
        a, be, ga = p[off], p[off + 1], p[off + 2]
        return -math.exp(cms_log_survival(x - a, be, ga) - cms_log_survival(lo - a, be, ga))
    if code == THRESHOLD:
        return gamma_integral(p[off + 1] + 1.0, p[off + 2], x - p[off])
    if code == ARGUS:  # with y = 1 − x²/m0²: dy = −2x/m0² dx
        m0, chi, pw = p[off], p[off + 1], p[off + 2]
        xc = min(max(x, 0.0), m0)
        return -0.5 * m0 * m0 * gamma_integral(pw + 1.0, 0.5 * chi * chi, 1.0 - (xc / m0) ** 2)
    return math.nan


@nb.njit(cache=True, error_model="numpy")
def logpdf1(code: int, x: float, p: np.ndarray, off: int, npar: int, lo: float, hi: float) -> float:
    """log of the derivative of :func:`cdf1` (unnormalised; −745 stands for a non-positive density)."""
    if code == GAUSS:
        z = (x - p[off]) / p[off + 1]
        return -0.5 * z * z - _LOG_SQRT_2PI - math.log(p[off + 1])
    if code == DOUBLE_GAUSS:
        f, s1, s2 = p[off + 3], p[off + 1], p[off + 2]
        z1, z2 = (x - p[off]) / s1, (x - p[off]) / s2
        v = f / s1 * math.exp(-0.5 * z1 * z1) + (1.0 - f) / s2 * math.exp(-0.5 * z2 * z2)
        return math.log(max(v, 1e-300)) - _LOG_SQRT_2PI
    if code == CRYSTALBALL:
        return _cb_logdensity((x - p[off]) / p[off + 1], p[off + 2], p[off + 3])
    if code == CB_GAUSS:
        s, al, n, sg, f = p[off + 1], p[off + 2], p[off + 3], p[off + 4], p[off + 5]
        zg = (x - p[off]) / sg
        v = (f * math.exp(_cb_logdensity((x - p[off]) / s, al, n)) / (s * _cb_total(al, n))
             + (1.0 - f) * math.exp(-0.5 * zg * zg - _LOG_SQRT_2PI) / sg)
        return math.log(max(v, 1e-300))
    if code == DOUBLE_CRYSTALBALL:
        z = (x - p[off]) / p[off + 1]
        if z < 0.0:
            return _cb_logdensity(z, p[off + 2], p[off + 3])
        return _cb_logdensity(-z, p[off + 4], p[off + 5])
    if code == EXPONENTIAL:
        return p[off] * (x - lo)
    if code == CHEBYSHEV:
        half = 0.5 * (hi - lo)
        v = _chebyshev_terms((x - lo) / half - 1.0, p, off, npar)[0]
        return math.log(max(v, 1e-300))
    if code == BERNSTEIN:
        v = _bernstein_value((x - lo) / (hi - lo), p, off, npar, False)
        return math.log(max(v, 1e-300))
    if code == CMS:  # same scale as cdf1
        a, be, ga = p[off], p[off + 1], p[off + 2]
        return _cms_log_density(x - a, be, ga) - cms_log_survival(lo - a, be, ga)
    if code == THRESHOLD:
        y = x - p[off]
        return p[off + 1] * math.log(y) - p[off + 2] * y if y > 0.0 else -math.inf
    if code == ARGUS:
        m0, chi, pw = p[off], p[off + 1], p[off + 2]
        y = 1.0 - (x / m0) ** 2
        return math.log(x) + pw * math.log(y) - 0.5 * chi * chi * y if x > 0.0 and y > 0.0 else -math.inf
    return math.nan


# --------------------------------------------------------------------------------------------------
# branch-free exp/log and densities for the unbinned fits: loops over candidates that LLVM vectorises
# (numba's math.exp/math.log are scalar libm calls; this LLVM has no SVML)
# --------------------------------------------------------------------------------------------------
VECTOR = {"error_model": "numpy", "fastmath": {"contract"}}  # no zero-division branch; FMA; exact IEEE otherwise

_MAGIC = 6755399441055744.0  # 1.5·2^52: t = y + _MAGIC rounds y to an integer held in t's low mantissa bits
_MAGIC_BITS = int(np.float64(_MAGIC).view(np.int64))
_TWO52 = 4503599627370496.0
_TWO52_BITS = int(np.float64(_TWO52).view(np.int64))
_ONE_BITS = int(np.float64(1.0).view(np.int64))
_MANTISSA = 0x000FFFFFFFFFFFFF
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 split for exact k·ln 2
_LOG2E = 1.4426950408889634
_DBL_MIN = 2.2250738585072014e-308


@nb.njit(cache=True, inline="always", **VECTOR)
def vexp(x: float) -> float:
    """e^x within 1 ulp, branch-free: x = k·ln 2 + r, |r| ≤ ln2/2, Taylor series of e^r to r¹³, 2^k by bits.

    0 below −708 (no subnormal results), inf above 709.
    """
    t = x * _LOG2E + _MAGIC
    kf = t - _MAGIC
    k = np.float64(t).view(np.int64) - _MAGIC_BITS
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    v = p * np.int64((k + 1023) << 52).view(np.float64)
    v = 0.0 if x < -708.0 else v
    v = math.inf if x > 709.0 else v
    return x if x != x else v


@nb.njit(cache=True, inline="always", **VECTOR)
def vlog(x: float) -> float:
    """ln x within 2 ulp, branch-free: x = 2^e·m, m ∈ [√½, √2), ln m = 2 atanh s, s = (m−1)/(m+1), to s²³.

    −inf for x ≤ 0, NaN for NaN, inf for inf.
    """
    tiny = x < _DBL_MIN  # subnormal: scale by 2^52 first
    y = x * _TWO52 if tiny else x
    bits = np.float64(y).view(np.int64)
    m = np.int64((bits & _MANTISSA) | _ONE_BITS).view(np.float64)
    e = np.int64(((bits >> 52) & 0x7FF) | _TWO52_BITS).view(np.float64) - (_TWO52 + 1023.0)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    e = (e + 1.0 if big else e) - (52.0 if tiny else 0.0)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 23.0
    p = p * s2 + 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    v = e * _LN2_HI + (e * _LN2_LO + 2.0 * s * (1.0 + s2 * p))
    v = -math.inf if x <= 0.0 else v
    v = x if x == math.inf else v
    return x if x != x else v


@nb.njit(cache=True, **VECTOR)
def vexp_array(x: np.ndarray, out: np.ndarray) -> None:
    """out = e^x elementwise with :func:`vexp` (vectorised loop; reference: np.exp)."""
    for i in range(x.size):
        out[i] = vexp(x[i])


@nb.njit(cache=True, **VECTOR)
def vlog_array(x: np.ndarray, out: np.ndarray) -> None:
    """out = ln x elementwise with :func:`vlog` (vectorised loop; reference: np.log)."""
    for i in range(x.size):
        out[i] = vlog(x[i])


@nb.njit(cache=True, **VECTOR)
def _add_gauss_core(x: np.ndarray, mu: float, s: float, c: float, out: np.ndarray) -> None:
    """out[i] += c·exp(−z²/2), z = (x_i − μ)/s."""
    inv = 1.0 / s
    for i in range(x.size):
        z = (x[i] - mu) * inv
        out[i] += c * vexp(-0.5 * z * z)


@nb.njit(cache=True, **VECTOR)
def _add_cb_tail(x: np.ndarray, mu: float, s: float, alpha: float, n: float, sign: float, c: float,
                 out: np.ndarray) -> None:
    """out[i] += c·(Crystal Ball power-law tail at z = sign·(x_i − μ)/s ≤ −α)."""
    a = n / alpha
    b = a - alpha
    c0 = -0.5 * alpha * alpha + n * math.log(a)
    k = sign / s
    for i in range(x.size):
        out[i] += c * vexp(c0 - n * vlog(b - (x[i] - mu) * k))


@nb.njit(cache=True, **VECTOR)
def _add_exponential(x: np.ndarray, k: float, lo: float, c: float, out: np.ndarray) -> None:
    """out[i] += c·exp(k·(x_i − lo))."""
    for i in range(x.size):
        out[i] += c * vexp(k * (x[i] - lo))


@nb.njit(cache=True, error_model="numpy")
def add_density(code: int, x: np.ndarray, p: np.ndarray, off: int, npar: int, lo: float, hi: float, c: float,
                out: np.ndarray) -> None:
    """out += c·exp(logpdf1(x)) for ascending ``x`` (unit of c: that of out times unit of x, here 1/unit of
    x per unit density); each region of a piecewise shape is one vectorised loop found by bisection."""
    n = x.size
    if code == GAUSS:
        _add_gauss_core(x, p[off], p[off + 1], c / (p[off + 1] * math.sqrt(2.0 * math.pi)), out)
    elif code in (CRYSTALBALL, DOUBLE_CRYSTALBALL, CB_GAUSS):
        mu, s, al, nl = p[off], p[off + 1], p[off + 2], p[off + 3]
        c_cb = c
        if code == CB_GAUSS:  # frac·CB/(σ·∫CB) + (1 − frac)·Gauss(μ, σ_gauss), see cdf1
            sg, f = p[off + 4], p[off + 5]
            _add_gauss_core(x, mu, sg, c * (1.0 - f) / (sg * math.sqrt(2.0 * math.pi)), out)
            c_cb = c * f / (s * _cb_total(al, nl))
        i0 = np.searchsorted(x, mu - al * s, side="right")
        i1 = n
        if code == DOUBLE_CRYSTALBALL:
            i1 = max(np.searchsorted(x, mu + p[off + 4] * s, side="left"), i0)
            _add_cb_tail(x[i1:], mu, s, p[off + 4], p[off + 5], -1.0, c_cb, out[i1:])
        _add_cb_tail(x[:i0], mu, s, al, nl, 1.0, c_cb, out[:i0])
        _add_gauss_core(x[i0:i1], mu, s, c_cb, out[i0:i1])
    elif code == EXPONENTIAL:
        _add_exponential(x, p[off], lo, c, out)
    elif code == CMS:  # the scale of the primitive once, not per candidate
        k = cms_log_survival(lo - p[off], p[off + 1], p[off + 2])
        for i in range(n):
            out[i] += c * math.exp(_cms_log_density(x[i] - p[off], p[off + 1], p[off + 2]) - k)
    else:
        for i in range(n):
            out[i] += c * math.exp(logpdf1(code, x[i], p, off, npar, lo, hi))


@nb.njit(cache=True, error_model="numpy")
def _cdf_array(code: int, x: np.ndarray, p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.empty(x.size)
    for i in range(x.size):
        out[i] = cdf1(code, x[i], p, 0, p.size, lo, hi)
    return out


@nb.njit(cache=True, error_model="numpy")
def _logpdf_array(code: int, x: np.ndarray, p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.empty(x.size)
    for i in range(x.size):
        out[i] = logpdf1(code, x[i], p, 0, p.size, lo, hi)
    return out


def _vectorised(kernel: Callable[..., np.ndarray], code: int, lo: float, hi: float) -> Callable[..., np.ndarray]:
    def f(x: np.ndarray, *params: float) -> np.ndarray:
        xa = np.asarray(x, dtype=float)
        return kernel(code, np.ascontiguousarray(xa.ravel()), np.asarray(params, dtype=float), lo, hi).reshape(
            xa.shape
        )

    return f


def _kernel_shape(name: str, code: int, params: tuple[str, ...], start: StartFn, domain: tuple[float, float],
                  ranged: bool, **hints: object) -> Shape:
    """Shape evaluated by the numba kernel ``code``; range-dependent ones re-bind on :meth:`Shape.on`."""
    lo, hi = domain

    def binder(a: float, b: float) -> Shape:
        return _kernel_shape(name, code, params, start, (a, b), ranged, **hints)

    return Shape(name, params, _vectorised(_cdf_array, code, lo, hi), start,
                 _vectorised(_logpdf_array, code, lo, hi), code=code, domain=domain if ranged else None,
                 binder=binder if ranged else None, **hints)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# numerical primitive (shapes without a closed-form cdf)
# --------------------------------------------------------------------------------------------------
def primitive_by_quadrature(pdf: Callable[[np.ndarray], np.ndarray], x: np.ndarray, ref: float,
                            step: float) -> np.ndarray:
    """∫_ref^x pdf for every x: 10-point Gauss-Legendre on cells no wider than ``step``.

    The points are sorted and the intervals between neighbours split into cells, so each x costs at
    most one partial cell; accurate to ~1e-10 relative for densities smooth on the scale ``step``.
    """
    xa = np.asarray(x, dtype=float)
    pts = np.unique(np.append(xa.ravel(), ref))
    a, b = pts[:-1], pts[1:]
    n = np.maximum(np.ceil((b - a) / step).astype(np.int64), 1)
    seg = np.repeat(np.arange(a.size), n)
    k = np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)
    width = ((b - a) / n)[seg]
    left = a[seg] + k * width
    nodes = left[:, None] + 0.5 * width[:, None] * (1.0 + _GL_X[None, :])
    cell = pdf(nodes.ravel()).reshape(nodes.shape) @ _GL_W * 0.5 * width
    cum = np.concatenate([[0.0], np.cumsum(np.bincount(seg, cell, minlength=a.size))])
    cum -= cum[np.searchsorted(pts, ref)]
    return cum[np.searchsorted(pts, xa)]


# --------------------------------------------------------------------------------------------------
# other shapes
# --------------------------------------------------------------------------------------------------
def _voigt_logpdf(x: np.ndarray, mu: float, sigma: float, gamma: float) -> np.ndarray:
    """Voigt profile (Gaussian σ ⊗ Cauchy half-width γ), normalised on the real line."""
    with np.errstate(divide="ignore"):
        return np.log(special.voigt_profile(np.asarray(x, dtype=float) - mu, sigma, gamma))


def _voigt_cdf(ref: float | None) -> Callable[..., np.ndarray]:
    """Numerical primitive of the Voigt profile from ``ref`` (None: from μ), cells of a quarter FWHM."""

    def cdf(x: np.ndarray, mu: float, sigma: float, gamma: float) -> np.ndarray:
        fwhm_l = 2.0 * gamma
        fwhm = 0.5346 * fwhm_l + math.sqrt(0.2166 * fwhm_l**2 + (2.3548200450309493 * sigma) ** 2)
        return primitive_by_quadrature(lambda t: special.voigt_profile(t - mu, sigma, gamma), x,
                                       mu if ref is None else ref, fwhm / 4.0)

    return cdf


def _voigt_binder(lo: float, hi: float) -> Shape:
    return replace(SIGNALS["voigt"], cdf=_voigt_cdf(lo), domain=(lo, hi))


def _double_voigt_density(x: np.ndarray, mu: float, sigma: float, sigma_wide: float, gamma: float,
                          frac: float) -> np.ndarray:
    """frac·V(x; μ, σ, γ) + (1−frac)·V(x; μ, σ_wide, γ): two Voigt profiles of one natural width γ (the Z's)
    and two resolutions, unit integral on the real line (1/unit of x)."""
    t = np.asarray(x, dtype=float) - mu
    return frac * special.voigt_profile(t, sigma, gamma) + (1.0 - frac) * special.voigt_profile(t, sigma_wide, gamma)


def _double_voigt_logpdf(x: np.ndarray, mu: float, sigma: float, sigma_wide: float, gamma: float,
                         frac: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(_double_voigt_density(x, mu, sigma, sigma_wide, gamma, frac))


def _double_voigt_cdf(ref: float | None) -> Callable[..., np.ndarray]:
    """Numerical primitive of the double Voigtian from ``ref`` (None: from μ), cells of a quarter of the
    narrower profile's FWHM."""

    def cdf(x: np.ndarray, mu: float, sigma: float, sigma_wide: float, gamma: float, frac: float) -> np.ndarray:
        fwhm = 0.5346 * 2.0 * gamma + math.sqrt(0.2166 * (2.0 * gamma) ** 2
                                                 + (2.3548200450309493 * min(sigma, sigma_wide)) ** 2)
        return primitive_by_quadrature(lambda t: _double_voigt_density(t, mu, sigma, sigma_wide, gamma, frac), x,
                                       mu if ref is None else ref, fwhm / 4.0)

    return cdf


def _double_voigt_binder(lo: float, hi: float) -> Shape:
    return replace(SIGNALS["double_voigt"], cdf=_double_voigt_cdf(lo), domain=(lo, hi))


def _johnsonsu_z(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return (np.asarray(x, dtype=float) - mu) / sigma


def _johnsonsu_cdf(x: np.ndarray, mu: float, sigma: float, gamma: float, delta: float) -> np.ndarray:
    """Φ(γ + δ·asinh((x−μ)/σ)) — scipy.stats.johnsonsu(a=γ, b=δ, loc=μ, scale=σ).cdf."""
    return special.ndtr(gamma + delta * np.arcsinh(_johnsonsu_z(x, mu, sigma)))


def _johnsonsu_logpdf(x: np.ndarray, mu: float, sigma: float, gamma: float, delta: float) -> np.ndarray:
    z = _johnsonsu_z(x, mu, sigma)
    u = gamma + delta * np.arcsinh(z)
    return np.log(delta / sigma) - _LOG_SQRT_2PI - 0.5 * np.log1p(z * z) - 0.5 * u * u


# --------------------------------------------------------------------------------------------------
# simulation template ⊗ Gaussian
# --------------------------------------------------------------------------------------------------
TEMPLATE_GRID_FROM = 1000
"""Template densities at more points than this are interpolated from a grid (:func:`template_shape`)."""


def template_shape(edges: np.ndarray, counts: np.ndarray, name: str = "template",
                   params: tuple[str, str] = ("shift", "smear")) -> Shape:
    """Signal shape from a simulated mass histogram (``counts`` on ``edges``) convolved with a Gaussian.

    Parameters (named ``params``) ``shift`` (moves the template, unit of x) and ``smear`` (σ of the
    Gaussian, unit of x; 0: the histogram itself). Negative counts (weighted simulation) are set to 0; the
    density has unit integral on the template range before smearing. Pass the returned Shape as
    ``signal=`` to the fits (:mod:`calibflow.fit.templates`: one per category from a sample's histograms).
    """
    e = np.ascontiguousarray(edges, dtype=float)
    c = np.clip(np.asarray(counts, dtype=float), 0.0, None)
    if e.ndim != 1 or c.shape != (e.size - 1,) or not np.all(np.diff(e) > 0) or c.sum() <= 0:
        raise ValueError(f"template {name!r}: need increasing edges (n+1) and n counts with a positive sum")
    dens = np.ascontiguousarray(c / c.sum() / np.diff(e))
    cum = np.concatenate([[0.0], np.cumsum(c / c.sum())])
    min_width = float(np.min(np.diff(e)))

    def cdf(x: np.ndarray, shift: float, smear: float) -> np.ndarray:
        xa = np.asarray(x, dtype=float)
        return template_eval(np.ascontiguousarray(xa.ravel()), e, dens, cum, shift, smear, True).reshape(xa.shape)

    def logpdf(x: np.ndarray, shift: float, smear: float) -> np.ndarray:
        xa = np.asarray(x, dtype=float)
        flat = np.ascontiguousarray(xa.ravel())
        if smear > 0.0 and flat.size > TEMPLATE_GRID_FROM and np.all(np.isfinite(flat)):
            # many points (unbinned fits): the density on a grid of an eighth of the narrowest template bin,
            # interpolated linearly (the convolution costs ~2 erfc per template bin within 9 σ of a point)
            a, b = float(flat.min()), float(flat.max())
            grid = np.linspace(a, b, math.ceil((b - a) / (0.125 * min_width)) + 2)
            v = np.interp(flat, grid, template_eval(grid, e, dens, cum, shift, smear, False))
        else:
            v = template_eval(flat, e, dens, cum, shift, smear, False)
        return np.log(np.maximum(v, 1e-300)).reshape(xa.shape)

    shift_name, smear_name = params

    def start(lo: float, hi: float, peak: float, width: float) -> Start:
        return {shift_name: (0.0, (-(hi - lo) / 10.0, (hi - lo) / 10.0)),
                smear_name: (max(0.3 * width, min_width), (0.0, (hi - lo) / 5.0))}

    return Shape(name, params, cdf, start, logpdf, widths=(smear_name,), bounded=(smear_name,), table=(e, dens, cum))


# --------------------------------------------------------------------------------------------------
# default starts and limits
# --------------------------------------------------------------------------------------------------
def _signal_start(lo: float, hi: float, peak: float, width: float) -> Start:
    """Starts/limits of all signal parameters from the range, the peak and its width (unit of x)."""
    w = hi - lo
    return {
        "mu": (peak, (lo, hi)),
        "sigma": (width, (w / 1000.0, w / 4.0)),
        "sigma_wide": (2.5 * width, (w / 1000.0, w / 2.0)),
        "frac": (0.7, (0.0, 1.0)),
        "alpha": (1.5, (0.3, 10.0)),
        "n": (5.0, (1.01, 100.0)),
        "alpha_l": (1.5, (0.3, 10.0)),
        "n_l": (5.0, (1.01, 100.0)),
        "alpha_r": (2.0, (0.3, 10.0)),
        "n_r": (5.0, (1.01, 100.0)),
        "gamma": (0.3 * width, (w / 1e5, w / 4.0)),
        "sigma_gauss": (2.0 * width, (w / 1000.0, w / 2.0)),
    }


def _johnsonsu_start(lo: float, hi: float, peak: float, width: float) -> Start:
    w = hi - lo
    return {"mu": (peak, (lo, hi)), "sigma": (2.0 * width, (w / 1000.0, w)), "gamma": (0.0, (-20.0, 20.0)),
            "delta": (2.0, (0.2, 50.0))}


def _exponential_start(lo: float, hi: float, peak: float, width: float) -> Start:
    return {"slope": (0.0, (-30.0 / (hi - lo), 30.0 / (hi - lo)))}


def _poly_start(prefix: str, order: int, start: float, limits: tuple[float, float]) -> StartFn:
    def f(lo: float, hi: float, peak: float, width: float) -> Start:
        return {f"{prefix}{k}": (start, limits) for k in range(1, order + 1)}

    return f


def _cms_start(lo: float, hi: float, peak: float, width: float) -> Start:
    """egm_tnp_analysis's RooCMSShape starts for its 60–120 GeV window (acms 60, β 0.05 GeV⁻¹, γ 0.1 GeV⁻¹) and
    its β ≤ 0.08 GeV⁻¹, scaled to the window's width w: the turn-on is never sharper than w/4.8, so the
    background cannot take the shape of a peak. α may lie a window below it and β go to 0.001·60/w GeV⁻¹ (a
    plain exponential), γ within ±2·60/w GeV⁻¹."""
    w = hi - lo
    return {"alpha": (lo, (lo - w, hi)), "beta": (3.0 / w, (0.06 / w, 4.8 / w)),
            "gamma": (6.0 / w, (-120.0 / w, 120.0 / w))}


def _argus_start(lo: float, hi: float, peak: float, width: float) -> Start:
    return {"m0": (hi, (hi, hi + (hi - lo))), "chi": (1.0, (1e-3, 50.0)), "p": (0.5, (-0.99, 10.0))}


def _threshold_start(lo: float, hi: float, peak: float, width: float) -> Start:
    w = hi - lo
    return {"m0": (lo, (lo - w, lo)), "a": (0.5, (0.0, 5.0)), "b": (1.0 / w, (0.0, 50.0 / w))}


def _pick(start: StartFn, names: tuple[str, ...]) -> StartFn:
    def f(lo: float, hi: float, peak: float, width: float) -> Start:
        full = start(lo, hi, peak, width)
        return {k: full[k] for k in names}

    return f


def _signal(name: str, code: int, params: tuple[str, ...], widths: tuple[str, ...], simpler: str | None,
            **hints: object) -> Shape:
    return _kernel_shape(name, code, params, _pick(_signal_start, params), (0.0, 1.0), False, widths=widths,
                         simpler=simpler, **hints)


_VOIGT = Shape("voigt", ("mu", "sigma", "gamma"), _voigt_cdf(None), _pick(_signal_start, ("mu", "sigma", "gamma")),
               _voigt_logpdf, widths=("sigma",), simpler="gauss", binder=_voigt_binder)

_DOUBLE_VOIGT_PARAMS = ("mu", "sigma", "sigma_wide", "gamma", "frac")

SIGNALS: dict[str, Shape] = {
    "gauss": _signal("gauss", GAUSS, ("mu", "sigma"), ("sigma",), None),
    "double_gauss": _signal("double_gauss", DOUBLE_GAUSS, ("mu", "sigma", "sigma_wide", "frac"),
                            ("sigma", "sigma_wide"), "gauss", bounded=("frac",)),
    "crystalball": _signal("crystalball", CRYSTALBALL, ("mu", "sigma", "alpha", "n"), ("sigma",), "gauss"),
    "double_crystalball": _signal("double_crystalball", DOUBLE_CRYSTALBALL,
                                  ("mu", "sigma", "alpha_l", "n_l", "alpha_r", "n_r"), ("sigma",), "crystalball"),
    "voigt": _VOIGT,
    "double_voigt": Shape("double_voigt", _DOUBLE_VOIGT_PARAMS, _double_voigt_cdf(None),
                          _pick(_signal_start, _DOUBLE_VOIGT_PARAMS), _double_voigt_logpdf,
                          widths=("sigma", "sigma_wide"), bounded=("frac",), simpler="voigt",
                          binder=_double_voigt_binder),
    "cb_gauss": _signal("cb_gauss", CB_GAUSS, ("mu", "sigma", "alpha", "n", "sigma_gauss", "frac"),
                        ("sigma", "sigma_gauss"), "crystalball", bounded=("frac",)),
    "johnsonsu": Shape("johnsonsu", ("mu", "sigma", "gamma", "delta"), _johnsonsu_cdf, _johnsonsu_start,
                       _johnsonsu_logpdf, widths=("sigma",), simpler="gauss"),
}


def _poly(name: str, code: int, prefix: str, order: int, start: float, limits: tuple[float, float],
          bounded: bool) -> Shape:
    params = tuple(f"{prefix}{k}" for k in range(1, order + 1))
    domain = (-1.0, 1.0) if code == CHEBYSHEV else (0.0, 1.0)
    return _kernel_shape(name, code, params, _poly_start(prefix, order, start, limits), domain, True,
                         bounded=params if bounded else ())


BACKGROUNDS: dict[str, Shape] = {
    "exponential": _kernel_shape("exponential", EXPONENTIAL, ("slope",), _exponential_start, (0.0, 1.0), True),
    "linear": _poly("linear", CHEBYSHEV, "c", 1, 0.0, (-1.0, 1.0), False),
    **{f"chebyshev{k}": _poly(f"chebyshev{k}", CHEBYSHEV, "c", k, 0.0, (-1.0, 1.0), False)
       for k in range(1, MAX_POLY_ORDER + 1)},
    **{f"bernstein{k}": _poly(f"bernstein{k}", BERNSTEIN, "b", k, 1.0, (0.0, 100.0), True)
       for k in range(1, MAX_POLY_ORDER + 1)},
    "cms": _kernel_shape("cms", CMS, ("alpha", "beta", "gamma"), _cms_start, (0.0, 1.0), True),
    "argus": _kernel_shape("argus", ARGUS, ("m0", "chi", "p"), _argus_start, (0.0, 1.0), False, fixed=("m0", "p")),
    "dstar_threshold": _kernel_shape("dstar_threshold", THRESHOLD, ("m0", "a", "b"), _threshold_start, (0.0, 1.0),
                                     False, fixed=("m0",), bounded=("b",)),
}


def get_shape(kind: str, name: str | Shape) -> Shape:
    """The signal or background shape called ``name`` (a Shape is returned as is).

    ValueError lists the known names. Polynomials: ``chebyshevN``/``bernsteinN``, N = 1…8; template
    signals (``fit.signal: template``) are built per bin by :mod:`calibflow.fit.templates`.
    """
    if isinstance(name, Shape):
        return name
    table = SIGNALS if kind == "signal" else BACKGROUNDS
    if name not in table:
        hint = ("; a simulation template is signal: template with fit.template.from (calibflow.fit.templates)"
                if kind == "signal" else "")
        if re.fullmatch(r"(chebyshev|bernstein)\d+", name):
            hint = f"; polynomial orders go from 1 to {MAX_POLY_ORDER}"
        raise ValueError(f"fit.{kind}: unknown {kind} model {name!r}; known: {', '.join(sorted(table))}{hint}")
    return table[name]
