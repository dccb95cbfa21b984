"""Simulation template ⊗ Gaussian: a histogram density, shifted and convolved with N(0, s), at points.

The template: density ``dens`` (1/unit of the mass, unit integral) on ``edges`` with cumulative contents ``cum``
(``cum[k]`` = content below ``edges[k]``). Its primitive at y = x − shift is
Σ_k d_k·s·[G((y−e_k)/s) − G((y−e_{k+1})/s)], G(u) = u·Φ(u) + φ(u) (bin-integrated Gaussian-smeared steps); template
bins further than :data:`WINDOW` s below y contribute their full content, those above nothing. ``s`` ≤ 0: the
shifted histogram itself (piecewise-constant density, piecewise-linear primitive).

:func:`template_eval` evaluates it point by point (each point: 2 transcendental functions per template bin within the
window). :func:`template_fractions` gives its fractions in the bins of a fit histogram; when the fit's edges and the
template's are uniform with one step Δ (:func:`common_step`: a template of the fit's binning), u depends on the edges
only through j − k, so G is computed once per offset (about n_fit + n_template values) and the sums are
multiply-adds. Reference (tests): the same sums in plain numpy with scipy's ndtr.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

WINDOW = 9.0
"""Template bins further than this many σ of the Gaussian from a point are taken as fully below or above it."""
STEP_RTOL = 1e-12
"""Edges are on a lattice when every edge lies within this fraction of the span from e_0 + kΔ (:func:`common_step`)."""
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@nb.njit(cache=True, inline="always", error_model="numpy")
def _g(u: float) -> float:
    """G(u) = u·Φ(u) + φ(u), the primitive of Φ (dimensionless)."""
    return u * (0.5 * math.erfc(-u / _SQRT2)) + math.exp(-0.5 * u * u) * _INV_SQRT_2PI


@nb.njit(cache=True, error_model="numpy")
def template_point(y: float, edges: np.ndarray, dens: np.ndarray, cum: np.ndarray, smear: float,
                   integral: bool) -> float:
    """The template ⊗ N(0, ``smear``) at y = x − shift (unit of the mass): primitive (``integral``) or density."""
    nb_ = dens.size
    if smear <= 0.0:
        k = min(max(np.searchsorted(edges, y, side="right") - 1, 0), nb_ - 1)
        if integral:
            return 0.0 if y < edges[0] else (1.0 if y >= edges[nb_] else cum[k] + dens[k] * (y - edges[k]))
        return dens[k] if edges[0] <= y < edges[nb_] else 0.0
    k0 = max(np.searchsorted(edges, y - WINDOW * smear) - 1, 0)
    k1 = min(np.searchsorted(edges, y + WINDOW * smear), nb_)
    acc = cum[k0] if integral else 0.0
    if k0 >= k1:
        return acc
    # each edge's Φ (and G) once: it closes one bin and opens the next
    u0 = (y - edges[k0]) / smear
    c0 = 0.5 * math.erfc(-u0 / _SQRT2)
    g0 = u0 * c0 + math.exp(-0.5 * u0 * u0) * _INV_SQRT_2PI if integral else 0.0
    for k in range(k0, k1):
        u1 = (y - edges[k + 1]) / smear
        c1 = 0.5 * math.erfc(-u1 / _SQRT2)
        if integral:
            g1 = u1 * c1 + math.exp(-0.5 * u1 * u1) * _INV_SQRT_2PI
            acc += dens[k] * smear * (g0 - g1)
            g0 = g1
        else:
            acc += dens[k] * (c0 - c1)
        c0 = c1
    return acc


@nb.njit(cache=True, error_model="numpy")
def template_eval(x: np.ndarray, edges: np.ndarray, dens: np.ndarray, cum: np.ndarray, shift: float,
                  smear: float, integral: bool) -> np.ndarray:
    """:func:`template_point` at every x − ``shift``: primitive (``integral``, dimensionless) or density."""
    out = np.empty(x.size)
    for i in range(x.size):
        out[i] = template_point(x[i] - shift, edges, dens, cum, smear, integral)
    return out


def common_step(x: np.ndarray, edges: np.ndarray) -> float:
    """The bin width Δ shared by the uniform edges ``x`` and ``edges`` (unit of the mass; 0 when they are not
    both uniform with one step, to :data:`STEP_RTOL` of their span)."""
    steps = []
    for e in (np.asarray(x, dtype=float), np.asarray(edges, dtype=float)):
        if e.size < 2:
            return 0.0
        step = (e[-1] - e[0]) / (e.size - 1)
        if np.max(np.abs(e - (e[0] + step * np.arange(e.size)))) > STEP_RTOL * (e[-1] - e[0]):
            return 0.0
        steps.append(step)
    return steps[0] if abs(steps[0] - steps[1]) <= STEP_RTOL * steps[0] else 0.0


@nb.njit(cache=True, error_model="numpy")
def _primitive_on_lattice(x: np.ndarray, step: float, edges: np.ndarray, dens: np.ndarray, cum: np.ndarray,
                          shift: float, smear: float, out: np.ndarray) -> None:
    """out = primitive at every ``x`` (``smear`` > 0; ``x`` and ``edges`` uniform with the step ``step``):
    :func:`template_point`'s windows and sums, G((x_i − shift − e_k)/s) taken from a table by offset i − k."""
    nx, nt = x.size, dens.size
    k0s, k1s = np.empty(nx, np.int64), np.empty(nx, np.int64)
    m_lo, m_hi = nx, -nt - 1
    for i in range(nx):
        y = x[i] - shift
        k0s[i] = max(np.searchsorted(edges, y - WINDOW * smear) - 1, 0)
        k1s[i] = min(np.searchsorted(edges, y + WINDOW * smear), nt)
        if k0s[i] < k1s[i]:
            m_lo = min(m_lo, i - k1s[i])
            m_hi = max(m_hi, i - k0s[i])
    # dg[m − m_lo] = G(u at offset m) − G(u at offset m − 1): one template bin's smeared step; ds = d_k·s
    base = x[0] - shift - edges[0]
    dg = np.empty(max(m_hi - m_lo + 1, 0))
    g_prev = _g((base + m_lo * step) / smear)
    for m in range(m_lo + 1, m_hi + 1):
        g_m = _g((base + m * step) / smear)
        dg[m - m_lo] = g_m - g_prev
        g_prev = g_m
    ds = dens * smear
    for i in range(nx):
        k0, k1 = k0s[i], k1s[i]
        acc = cum[k0]
        d = i - m_lo
        for k in range(k0, k1):
            acc += ds[k] * dg[d - k]
        out[i] = acc


@nb.njit(cache=True, error_model="numpy")
def template_fractions(x: np.ndarray, step: float, edges: np.ndarray, dens: np.ndarray, cum: np.ndarray,
                       shift: float, smear: float, lo: float, hi: float, out: np.ndarray) -> None:
    """out[j] = fraction of the template ⊗ N(``shift``, ``smear``) normalised on [lo, hi] in [x_j, x_{j+1}]
    (dimensionless; NaN when its integral on [lo, hi] is not positive). ``step`` > 0: x and ``edges`` share that
    uniform step (:func:`common_step`), the primitive is taken from :func:`_primitive_on_lattice`."""
    c = np.empty(x.size)
    if step > 0.0 and smear > 0.0:
        _primitive_on_lattice(x, step, edges, dens, cum, shift, smear, c)
    else:
        for i in range(x.size):
            c[i] = template_point(x[i] - shift, edges, dens, cum, smear, True)
    c_lo = template_point(lo - shift, edges, dens, cum, smear, True)
    norm = template_point(hi - shift, edges, dens, cum, smear, True) - c_lo
    if not (np.isfinite(norm) and norm > 0.0):
        out[:] = np.nan
        return
    for j in range(x.size - 1):  # as the difference of the normalised primitives (calibflow.fit.models.normalised_cdf)
        out[j] = (c[j + 1] - c_lo) / norm - (c[j] - c_lo) / norm
