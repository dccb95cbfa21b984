"""Per-candidate PID resampling and transform from templates (numba kernels, each with a numpy reference).

For a simulated candidate with kinematics ``k`` the conditional CDF of the PID variable is the
multilinear interpolation, in the kinematics, of the templates' per-cell CDFs at the 2^K surrounding
kinematic grid points (kinematics outside the grid are clamped to its outer centres); between PID cell
edges the CDF is linear (the density constant per PID cell).

* resample: ``x = F_data^-1(u | k)`` with ``u`` uniform in (0, 1);
* transform: ``x = F_data^-1(F_sim(x_sim | k) | k)``, monotone in ``x_sim`` for every ``k``, so it keeps
  the rank correlation with the simulated PID value (and with anything correlated with it).

``u`` is reproducible per candidate: the splitmix64 hash chain of a key (from the seed and the variable's
name) and the candidate's identity columns (run, event, candidate index, ...), never the row order; shuffled
or split inputs give every candidate the same value. Identity values that are whole numbers hash as
integers (``3`` and ``3.0`` alike), other floats by their bits. A candidate with a NaN kinematic or PID
value gets NaN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from calibflow.expr import Expression, compile_expression
from calibflow.kde.template import Template

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
CHUNK = 4096


@dataclass(frozen=True)
class Branch:
    """A branch read as it is (an identity column such as Belle II's ``__event__``, which expressions reject)."""

    name: str

    @property
    def branches(self) -> frozenset[str]:
        """The branch read."""
        return frozenset({self.name})

    def evaluate(self, events: Mapping[str, np.ndarray]) -> np.ndarray:
        """The branch's values."""
        return np.asarray(events[self.name])


def identity_expression(text: str, aliases: Mapping[str, str], where: str) -> Expression | Branch:
    """An identity column: a plain name (not an alias) as a :class:`Branch`, anything else an expression."""
    if text.isidentifier() and text not in aliases:
        return Branch(text)
    return compile_expression(text, dict(aliases), where=where)


def key_of(seed: int | str, name: str) -> np.uint64:
    """The 64-bit key of a (seed, name) pair: first 8 bytes of its BLAKE2b digest."""
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest(), "little"))


def identity_words(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Identity columns as (N, C) uint64 words: whole numbers as int64, other floats by their bits."""
    words = []
    for c in columns:
        c = np.asarray(c)
        if c.dtype.kind in "biu":
            words.append(c.astype(np.int64 if c.dtype.kind != "u" else np.uint64).view(np.uint64))
            continue
        x = np.asarray(c, dtype=float) + 0.0  # -0.0 -> 0.0
        whole = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < 2.0**63)
        words.append(np.where(whole, np.where(whole, x, 0).astype(np.int64).view(np.uint64), x.view(np.uint64)))
    return np.ascontiguousarray(np.column_stack(words)) if words else np.zeros((0, 0), dtype=np.uint64)


@numba.njit(cache=True, inline="always")
def _splitmix64(x: np.uint64) -> np.uint64:
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(cache=True, nogil=True)
def _uniforms(words: np.ndarray, key: np.uint64, out: np.ndarray) -> None:
    for r in range(words.shape[0]):
        h = _splitmix64(key)
        for c in range(words.shape[1]):
            h = _splitmix64(h ^ words[r, c])
        out[r] = ((h >> _S11) + 0.5) * 2.0**-53


def uniforms(identity: Sequence[np.ndarray], key: np.uint64) -> np.ndarray:
    """Uniform numbers in (0, 1), one per candidate, from its identity columns and ``key`` (numba)."""
    words = identity_words(identity)
    out = np.empty(len(words))
    _uniforms(words, np.uint64(key), out)
    return out


def uniforms_reference(identity: Sequence[np.ndarray], key: np.uint64) -> np.ndarray:
    """Plain-numpy version of :func:`uniforms` (uint64 arithmetic wraps as in numba)."""

    def mix(z: np.ndarray) -> np.ndarray:
        z = z + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)

    words = identity_words(identity)
    h = mix(np.full(len(words), key, dtype=np.uint64))
    for c in range(words.shape[1]):
        h = mix(h ^ words[:, c])
    return ((h >> _S11).astype(float) + 0.5) * 2.0**-53


def _kin_geometry(t: Template) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kin = t.kinematics
    return (np.array([a.lo for a in kin], dtype=float), np.array([1.0 / a.width for a in kin], dtype=float),
            np.array([a.bins for a in kin], dtype=np.int64))


@numba.njit(cache=True, inline="always")
def _corners(kin: np.ndarray, r: int, lo: np.ndarray, inv_h: np.ndarray, shape: np.ndarray,
             flat: np.ndarray, wts: np.ndarray) -> bool:
    """Flat indices and weights of the 2^K kinematic grid points around row ``r``; False for NaN."""
    flat[0] = 0
    wts[0] = 1.0
    m = 1
    stride = 1
    for k in range(lo.size - 1, -1, -1):
        t = (kin[r, k] - lo[k]) * inv_h[k] - 0.5
        if t != t:
            return False
        nk = shape[k]
        t = min(max(t, 0.0), nk - 1.0)
        i = min(int(t), nk - 2)
        f = t - i
        for c in range(m):
            flat[c + m] = flat[c] + (i + 1) * stride
            wts[c + m] = wts[c] * f
            flat[c] += i * stride
            wts[c] *= 1.0 - f
        m *= 2
        stride *= nk
    return True


@numba.njit(cache=True, inline="always")
def _cdf_at(cdf: np.ndarray, flat: np.ndarray, wts: np.ndarray, j: int) -> float:
    s = 0.0
    for c in range(flat.size):
        s += wts[c] * cdf[flat[c], j]
    return s


@numba.njit(cache=True, nogil=True)
def _guide_table(cdf: np.ndarray) -> np.ndarray:
    """Per CDF row and level m / Q (Q = PID bins): the smallest edge j >= 1 with F(j) >= m / Q."""
    n_rows, n_edges = cdf.shape
    q_levels = n_edges - 1
    out = np.empty((n_rows, q_levels + 1), dtype=np.int32)
    for r in range(n_rows):
        j = 1
        for m in range(q_levels + 1):
            level = m / q_levels
            while j < n_edges - 1 and cdf[r, j] < level:
                j += 1
            out[r, m] = j
    return out


def guide(template: Template) -> np.ndarray:
    """The template's guide table (:func:`_guide_table`), computed once per template."""
    if "guide" not in template.cache:
        template.cache["guide"] = _guide_table(template.cdf)
    return template.cache["guide"]


@numba.njit(cache=True, inline="always")
def _inverse(cdf: np.ndarray, guide: np.ndarray, flat: np.ndarray, wts: np.ndarray, u: float, lo0: float,
             h0: float) -> float:
    """Smallest PID value with interpolated CDF >= u, linear within a cell. The guide tables of the corners
    bracket the answer (every corner's CDF is below q / Q before its guide entry q, and at least (q + 1) / Q
    from its entry q + 1 on, so the interpolated one too); a binary search finishes inside the bracket."""
    q_levels = guide.shape[1] - 1
    q = min(int(u * q_levels), q_levels - 1)
    lo, hi = cdf.shape[1], 0
    for c in range(flat.size):
        lo = min(lo, guide[flat[c], q] - 1)
        hi = max(hi, guide[flat[c], q + 1])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _cdf_at(cdf, flat, wts, mid) >= u:
            hi = mid
        else:
            lo = mid
    f_lo = _cdf_at(cdf, flat, wts, lo)
    f_hi = _cdf_at(cdf, flat, wts, hi)
    frac = (u - f_lo) / (f_hi - f_lo) if f_hi > f_lo else 0.0
    return lo0 + h0 * (lo + min(max(frac, 0.0), 1.0))


@numba.njit(cache=True, inline="always")
def _forward(cdf: np.ndarray, flat: np.ndarray, wts: np.ndarray, x: float, lo0: float, h0: float) -> float:
    """Interpolated CDF at PID value ``x`` (clamped to the range)."""
    n0 = cdf.shape[1] - 1
    t = min(max((x - lo0) / h0, 0.0), float(n0))
    j = min(int(t), n0 - 1)
    f_j = _cdf_at(cdf, flat, wts, j)
    return f_j + (t - j) * (_cdf_at(cdf, flat, wts, j + 1) - f_j)


@numba.njit(cache=True, nogil=True)
def _order_by_cell(kin: np.ndarray, lo: np.ndarray, inv_h: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Row order grouping candidates by kinematic cell (counting sort), so that the kernels read each
    cell's CDF rows from cache instead of from memory (a 10x speed-up on shuffled inputs)."""
    n, k_dims = kin.shape
    cell = np.zeros(n, dtype=np.int64)
    total = 1
    for k in range(k_dims):
        total *= shape[k]
    for r in range(n):
        c = 0
        for k in range(k_dims):
            t = (kin[r, k] - lo[k]) * inv_h[k]
            i = int(min(max(t, 0.0), shape[k] - 1.0)) if t == t else 0
            c = c * shape[k] + i
        cell[r] = c
    start = np.zeros(total + 1, dtype=np.int64)
    for r in range(n):
        start[cell[r] + 1] += 1
    for c in range(total):
        start[c + 1] += start[c]
    order = np.empty(n, dtype=np.int64)
    for r in range(n):
        order[start[cell[r]]] = r
        start[cell[r]] += 1
    return order


@numba.njit(cache=True, inline="always")
def _gather(kin: np.ndarray, val: np.ndarray, order: np.ndarray, start: int, stop: int, kc: np.ndarray,
            vc: np.ndarray) -> None:
    """Copy the rows ``order[start:stop]`` of ``kin`` and ``val`` into the chunk buffers (a tight loop of
    independent loads, which the CPU overlaps; inside the compute loop each would wait for memory)."""
    for i in range(start, stop):
        r = order[i]
        for k in range(kin.shape[1]):
            kc[i - start, k] = kin[r, k]
        vc[i - start] = val[r]


@numba.njit(cache=True, nogil=True)  # serial: OpenMP threads are not fork-safe (docs/kde.md)
def _resample(cdf: np.ndarray, guide: np.ndarray, lo: np.ndarray, inv_h: np.ndarray, shape: np.ndarray,
              kin: np.ndarray, u: np.ndarray, lo0: float, h0: float, out: np.ndarray) -> None:
    n = u.size
    order = _order_by_cell(kin, lo, inv_h, shape)
    for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
        flat = np.empty(1 << lo.size, dtype=np.int64)
        wts = np.empty(1 << lo.size)
        kc = np.empty((CHUNK, kin.shape[1]))
        uc = np.empty(CHUNK)
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        _gather(kin, u, order, start, stop, kc, uc)
        for j in range(stop - start):
            if _corners(kc, j, lo, inv_h, shape, flat, wts):
                uc[j] = _inverse(cdf, guide, flat, wts, uc[j], lo0, h0)
            else:
                uc[j] = np.nan
        for i in range(start, stop):
            out[order[i]] = uc[i - start]


@numba.njit(cache=True, nogil=True)  # serial: OpenMP threads are not fork-safe (docs/kde.md)
def _transform(cdf_sim: np.ndarray, lo_s: np.ndarray, inv_h_s: np.ndarray, shape_s: np.ndarray, lo0_s: float,
               h0_s: float, cdf: np.ndarray, guide: np.ndarray, lo: np.ndarray, inv_h: np.ndarray,
               shape: np.ndarray, lo0: float, h0: float, kin: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    n = x.size
    order = _order_by_cell(kin, lo, inv_h, shape)
    for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
        flat_s = np.empty(1 << lo_s.size, dtype=np.int64)
        wts_s = np.empty(1 << lo_s.size)
        flat = np.empty(1 << lo.size, dtype=np.int64)
        wts = np.empty(1 << lo.size)
        kc = np.empty((CHUNK, kin.shape[1]))
        xc = np.empty(CHUNK)
        start, stop = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        _gather(kin, x, order, start, stop, kc, xc)
        for j in range(stop - start):
            if xc[j] != xc[j] or not _corners(kc, j, lo_s, inv_h_s, shape_s, flat_s, wts_s):
                xc[j] = np.nan
                continue
            _corners(kc, j, lo, inv_h, shape, flat, wts)
            u = _forward(cdf_sim, flat_s, wts_s, xc[j], lo0_s, h0_s)
            xc[j] = _inverse(cdf, guide, flat, wts, u, lo0, h0)
        for i in range(start, stop):
            out[order[i]] = xc[i - start]


def _kin(template: Template, kin: np.ndarray, n: int) -> np.ndarray:
    """``kin`` as a C-contiguous (n, K) float array (K = 0: no kinematics)."""
    return np.ascontiguousarray(np.asarray(kin, dtype=float).reshape(n, len(template.kinematics)))


def resample(template: Template, kin: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Data-like PID values for candidates with kinematics ``kin`` (N, K) and uniforms ``u`` (numba)."""
    u = np.ascontiguousarray(u, dtype=float)
    out = np.empty(u.size)
    _resample(template.cdf, guide(template), *_kin_geometry(template), _kin(template, kin, u.size), u,
              template.pid.lo, template.pid.width, out)
    return out


def transform(simulation: Template, data: Template, pid: np.ndarray, kin: np.ndarray) -> np.ndarray:
    """Simulated PID values ``pid`` mapped through the simulation then inverse data CDFs at ``kin`` (numba)."""
    x = np.ascontiguousarray(pid, dtype=float)
    out = np.empty(x.size)
    _transform(simulation.cdf, *_kin_geometry(simulation), simulation.pid.lo, simulation.pid.width, data.cdf,
               guide(data), *_kin_geometry(data), data.pid.lo, data.pid.width, _kin(data, kin, x.size), x, out)
    return out


def interpolated_cdf_reference(template: Template, kin: np.ndarray) -> np.ndarray:
    """Plain numpy: each candidate's interpolated CDF at the PID edges, (N, PID bins + 1)."""
    kin = np.asarray(kin, dtype=float)
    kin = kin.reshape(len(kin), len(template.kinematics))
    if not template.kinematics:
        return np.broadcast_to(template.cdf[0], (len(kin), template.cdf.shape[1]))
    axes = template.kinematics
    bad = np.isnan(kin).any(axis=1)
    kin = np.where(bad[:, None], [a.lo for a in axes], kin)
    t = np.column_stack([np.clip((kin[:, k] - a.lo) / a.width - 0.5, 0, a.bins - 1) for k, a in enumerate(axes)])
    i = np.minimum(np.floor(t).astype(np.int64), [a.bins - 2 for a in axes])
    f = t - i
    cdf = template.cdf.reshape(*(a.bins for a in axes), -1)
    out = np.zeros((len(kin), cdf.shape[-1]))
    for c in range(1 << len(axes)):
        upper = np.array([(c >> k) & 1 for k in range(len(axes))], dtype=bool)
        w = np.prod(np.where(upper, f, 1.0 - f), axis=1)
        out += w[:, None] * cdf[tuple((i + upper).T)]
    out[bad] = np.nan
    return out


def resample_reference(template: Template, kin: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Plain-numpy version of :func:`resample`."""
    cdf = interpolated_cdf_reference(template, kin)
    return _inverse_reference(cdf, np.asarray(u, dtype=float), template)


def _inverse_reference(cdf: np.ndarray, u: np.ndarray, template: Template) -> np.ndarray:
    rows = np.arange(len(u))
    hi = np.sum(cdf[:, 1:-1] < u[:, None], axis=1) + 1
    f_lo, f_hi = cdf[rows, hi - 1], cdf[rows, hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(f_hi > f_lo, (u - f_lo) / (f_hi - f_lo), 0.0)
    out = template.pid.lo + template.pid.width * (hi - 1 + np.clip(frac, 0.0, 1.0))
    out[np.isnan(cdf[:, -1]) | np.isnan(u)] = np.nan
    return out


def transform_reference(simulation: Template, data: Template, pid: np.ndarray, kin: np.ndarray) -> np.ndarray:
    """Plain-numpy version of :func:`transform`."""
    return _inverse_reference(interpolated_cdf_reference(data, kin), kinematic_cdf(simulation, pid, kin), data)


def kinematic_cdf(template: Template, pid: np.ndarray, kin: np.ndarray) -> np.ndarray:
    """The template's conditional CDF at (``pid``, ``kin``) per candidate (numpy reference; NaN for NaN)."""
    cdf = interpolated_cdf_reference(template, kin)
    n0 = template.pid.bins
    x = np.asarray(pid, dtype=float)
    t = np.clip(np.nan_to_num((x - template.pid.lo) / template.pid.width), 0, n0)
    j = np.minimum(np.floor(t).astype(np.int64), n0 - 1)
    rows = np.arange(len(t))
    return np.where(np.isnan(x), np.nan, cdf[rows, j] + (t - j) * (cdf[rows, j + 1] - cdf[rows, j]))
