"""Object matching kernels: nearest-ΔR matching and shared-hit-fraction track matching.

Conventions as in :mod:`calibflow.kernels.pairing`: jagged collections are flat arrays plus int64
``offsets`` (length ``n_events + 1``); returned indices are GLOBAL indices into the flat arrays of
the other collection. Objects that are not covered by any event (possible only when
``offsets[0] > 0``) get the "no match" result.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from calibflow.kernels.cache import lazy_ufunc
from calibflow.kernels.pairing import check_offsets

__all__ = [
    "delta_phi",
    "nearest_dr_match",
    "nearest_dr_match_reference",
    "shared_fraction_match",
    "shared_fraction_match_reference",
]

_PI = math.pi
_TWO_PI = 2.0 * math.pi
_INV_TWO_PI = 1.0 / _TWO_PI


# --------------------------------------------------------------------------------------------------
# Δφ and nearest-ΔR matching
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _wrap_dphi(a: float, b: float) -> float:
    # d = a - b is returned unchanged when already in [−π, π) (the common case, no rounding);
    # otherwise d - 2π floor((d + π) / 2π), which is much faster than the fmod behind %. The two
    # fix-ups absorb rounding at the edges; in this order they guarantee the result is in [−π, π).
    d = a - b
    if d < -_PI or d >= _PI:
        d = d - _TWO_PI * math.floor((d + _PI) * _INV_TWO_PI)
        if d < -_PI:
            d += _TWO_PI
        if d >= _PI:
            d -= _TWO_PI
    return d


def _delta_phi_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy version of the Δφ wrapping, operation for operation identical to the numba one."""
    d = np.subtract(a, b, dtype=np.float64)
    w = d - _TWO_PI * np.floor((d + _PI) * _INV_TWO_PI)
    w = np.where(w < -_PI, w + _TWO_PI, w)
    w = np.where(w >= _PI, w - _TWO_PI, w)
    return np.where((d < -_PI) | (d >= _PI), w, d)


@lazy_ufunc(["float64(float64, float64)"])
def delta_phi(a: float, b: float) -> float:
    """φ_a − φ_b in rad, wrapped to [−π, π). numpy ufunc (broadcasts, float64 result)."""
    return _wrap_dphi(a, b)


@numba.njit(cache=True)
def _nearest_dr_kernel(
    offsets_a: np.ndarray,
    eta_a: np.ndarray,
    phi_a: np.ndarray,
    offsets_b: np.ndarray,
    eta_b: np.ndarray,
    phi_b: np.ndarray,
    mask_b: np.ndarray,
    max_dr: float,
) -> tuple[np.ndarray, np.ndarray]:
    n_events = offsets_a.shape[0] - 1
    n_a = eta_a.shape[0]
    index = np.full(n_a, -1, dtype=np.int64)
    dr = np.full(n_a, np.inf, dtype=np.float64)
    # per-event buffer of the selected candidates (compacted once per event, reused for every A object)
    max_b = 0
    for ev in range(n_events):
        max_b = max(max_b, offsets_b[ev + 1] - offsets_b[ev])
    buf_eta = np.empty(max_b, dtype=np.float64)
    buf_phi = np.empty(max_b, dtype=np.float64)
    buf_idx = np.empty(max_b, dtype=np.int64)
    for ev in range(n_events):
        a_start = offsets_a[ev]
        a_stop = offsets_a[ev + 1]
        if a_start == a_stop:
            continue
        n_sel = 0
        for j in range(offsets_b[ev], offsets_b[ev + 1]):  # branch-free compaction
            buf_eta[n_sel] = eta_b[j]
            buf_phi[n_sel] = phi_b[j]
            buf_idx[n_sel] = j
            n_sel += mask_b[j]
        if n_sel == 0:
            continue
        for i in range(a_start, a_stop):
            best, d = nearest_in_event(eta_a[i], phi_a[i], buf_eta, buf_phi, n_sel)
            if best >= 0 and d <= max_dr:
                index[i] = buf_idx[best]
                dr[i] = d
    return index, dr


@numba.njit(cache=True, inline="always")
def nearest_in_event(eta: float, phi: float, buf_eta: np.ndarray, buf_phi: np.ndarray, n_sel: int
                     ) -> tuple[int, float]:
    """(position among the first ``n_sel`` candidates ``buf_eta``/``buf_phi``, -1 if none; its ΔR) of the candidate
    nearest to (``eta``, ``phi``) in ΔR (float64; ties keep the lowest position; NaN never wins): the inner loop
    of :func:`nearest_dr_match`, shared with the fused pairing loop (:mod:`calibflow.kernels.fused_pairs`)."""
    best = -1
    best_dr2 = np.inf
    for k in range(n_sel):  # in index order
        deta = eta - buf_eta[k]
        dphi = _wrap_dphi(phi, buf_phi[k])
        dr2 = deta * deta + dphi * dphi
        better = dr2 < best_dr2  # strict: ties keep the lowest index; NaN never wins
        best_dr2 = dr2 if better else best_dr2
        best = k if better else best
    return best, math.sqrt(best_dr2)


def _as_float(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_nearest_inputs(
    offsets_a: np.ndarray,
    eta_a: np.ndarray,
    phi_a: np.ndarray,
    offsets_b: np.ndarray,
    eta_b: np.ndarray,
    phi_b: np.ndarray,
    mask_b: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    eta_a = _as_float(eta_a, "eta_a")
    phi_a = _as_float(phi_a, "phi_a")
    eta_b = _as_float(eta_b, "eta_b")
    phi_b = _as_float(phi_b, "phi_b")
    if eta_a.shape != phi_a.shape:
        raise ValueError(f"eta_a and phi_a differ in length: {eta_a.shape[0]} vs {phi_a.shape[0]}")
    if eta_b.shape != phi_b.shape:
        raise ValueError(f"eta_b and phi_b differ in length: {eta_b.shape[0]} vs {phi_b.shape[0]}")
    if mask_b is None:
        mask_b = np.ones(eta_b.shape[0], dtype=np.bool_)
    mask_b = np.asarray(mask_b)
    if mask_b.dtype != np.bool_ or mask_b.shape != eta_b.shape:
        raise ValueError(
            f"mask_b must be a boolean array of length {eta_b.shape[0]}, got {mask_b.dtype} {mask_b.shape}"
        )
    offsets_a = check_offsets(offsets_a, eta_a.shape[0], "offsets_a")
    offsets_b = check_offsets(offsets_b, eta_b.shape[0], "offsets_b")
    if offsets_a.shape != offsets_b.shape:
        raise ValueError(
            f"offsets_a and offsets_b describe different numbers of events: "
            f"{offsets_a.shape[0] - 1} vs {offsets_b.shape[0] - 1}"
        )
    return offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, np.ascontiguousarray(mask_b)


def nearest_dr_match(
    offsets_a: np.ndarray,
    eta_a: np.ndarray,
    phi_a: np.ndarray,
    offsets_b: np.ndarray,
    eta_b: np.ndarray,
    phi_b: np.ndarray,
    mask_b: np.ndarray | None = None,
    max_dr: float = np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """For each object of collection A, the nearest object of collection B (same event) in ΔR.

    ΔR = sqrt(Δη² + Δφ²) with Δφ wrapped to [−π, π) (φ in rad, any range).

    Parameters
    ----------
    offsets_a, offsets_b : int arrays, shape (n_events + 1,)
        Event boundaries of A and B (same number of events).
    eta_a, phi_a : float arrays, shape (n_a,); eta_b, phi_b : float arrays, shape (n_b,)
    mask_b : bool array, shape (n_b,), optional
        Candidate selection on B (trigger-object id, filter bits, pt threshold, ...), built by the
        caller with numpy. ``None`` means all candidates.
    max_dr : float
        A match requires ΔR <= max_dr (inclusive, as coffea's ``nearest(threshold=...)``).

    Returns
    -------
    index : int64 array, shape (n_a,)
        GLOBAL index into the flat B arrays, -1 if no selected B object lies within ``max_dr``.
    dr : float64 array, shape (n_a,)
        ΔR to the match, ``inf`` if unmatched.

    Ties in ΔR go to the lowest index. Objects with NaN or infinite coordinates never match.
    """
    args = _check_nearest_inputs(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b)
    return _nearest_dr_kernel(*args, float(max_dr))


def nearest_dr_match_reference(
    offsets_a: np.ndarray,
    eta_a: np.ndarray,
    phi_a: np.ndarray,
    offsets_b: np.ndarray,
    eta_b: np.ndarray,
    phi_b: np.ndarray,
    mask_b: np.ndarray | None = None,
    max_dr: float = np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference of :func:`nearest_dr_match` (per-event broadcasting; slow for many events)."""
    offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b = _check_nearest_inputs(
        offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b
    )
    index = np.full(eta_a.shape[0], -1, dtype=np.int64)
    dr = np.full(eta_a.shape[0], np.inf)
    for ev in range(offsets_a.shape[0] - 1):
        sa = slice(offsets_a[ev], offsets_a[ev + 1])
        cand = np.arange(offsets_b[ev], offsets_b[ev + 1])[mask_b[offsets_b[ev] : offsets_b[ev + 1]]]
        if cand.size == 0 or sa.start == sa.stop:
            continue
        deta = eta_a[sa, None] - eta_b[None, cand]
        dphi = _delta_phi_numpy(phi_a[sa, None], phi_b[None, cand])
        dr2 = deta * deta + dphi * dphi
        dr2 = np.where(np.isnan(dr2), np.inf, dr2)
        best = np.argmin(dr2, axis=1)  # first occurrence -> lowest index on ties
        best_dr = np.sqrt(dr2[np.arange(dr2.shape[0]), best])
        ok = (best_dr <= max_dr) & np.isfinite(best_dr)
        index[sa] = np.where(ok, cand[best], -1)
        dr[sa] = np.where(ok, best_dr, np.inf)
    return index, dr


# --------------------------------------------------------------------------------------------------
# shared-hit-fraction matching (LHCb VeloMuon / Downstream probe vs long tracks)
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _sorted_unique_segments(offsets: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort and de-duplicate every segment ``hits[offsets[i]:offsets[i+1]]``; returns new (offsets, hits)."""
    n = offsets.shape[0] - 1
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(offsets[n] - offsets[0], dtype=np.int64)
    k = 0
    for i in range(n):
        seg = np.sort(hits[offsets[i] : offsets[i + 1]])
        for m in range(seg.shape[0]):
            if m == 0 or seg[m] != seg[m - 1]:
                out[k] = seg[m]
                k += 1
        out_offsets[i + 1] = k
    return out_offsets, out[:k]


@numba.njit(cache=True)
def _shared_fraction_kernel(
    offsets_probe: np.ndarray,
    probe_hit_offsets: np.ndarray,
    probe_hits: np.ndarray,
    offsets_long: np.ndarray,
    long_hit_offsets: np.ndarray,
    long_hits: np.ndarray,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    # hit lists are sorted and unique here -> intersection size by a linear merge
    n_probe = probe_hit_offsets.shape[0] - 1
    index = np.full(n_probe, -1, dtype=np.int64)
    fraction = np.zeros(n_probe, dtype=np.float64)
    for ev in range(offsets_probe.shape[0] - 1):
        for p in range(offsets_probe[ev], offsets_probe[ev + 1]):
            p_start = probe_hit_offsets[p]
            p_stop = probe_hit_offsets[p + 1]
            n_hits = p_stop - p_start
            if n_hits == 0:
                continue
            best = -1
            best_shared = 0
            for t in range(offsets_long[ev], offsets_long[ev + 1]):
                i = p_start
                j = long_hit_offsets[t]
                j_stop = long_hit_offsets[t + 1]
                shared = 0
                while i < p_stop and j < j_stop:
                    hp = probe_hits[i]
                    hl = long_hits[j]
                    if hp == hl:
                        shared += 1
                        i += 1
                        j += 1
                    elif hp < hl:
                        i += 1
                    else:
                        j += 1
                if shared > best_shared:  # strict: ties keep the lowest long-track index
                    best_shared = shared
                    best = t
            if best >= 0:
                f = best_shared / n_hits
                if f >= min_fraction:
                    index[p] = best
                    fraction[p] = f
    return index, fraction


def _check_hits(
    hit_offsets: np.ndarray, hits: np.ndarray, track_offsets: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hits = np.asarray(hits)
    if hits.ndim != 1 or (hits.size and hits.dtype.kind not in "iu"):
        raise ValueError(f"{what}_hits must be a 1-d integer array, got {hits.dtype} {hits.shape}")
    hits = np.ascontiguousarray(hits, dtype=np.int64)  # uint64 wraps bijectively: equality is kept
    hit_offsets = check_offsets(hit_offsets, hits.shape[0], f"{what}_hit_offsets")
    track_offsets = check_offsets(track_offsets, hit_offsets.shape[0] - 1, f"offsets_{what}_tracks")
    return track_offsets, hit_offsets, hits


def shared_fraction_match(
    offsets_probe_tracks: np.ndarray,
    probe_hit_offsets: np.ndarray,
    probe_hits: np.ndarray,
    offsets_long_tracks: np.ndarray,
    long_hit_offsets: np.ndarray,
    long_hits: np.ndarray,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Match each probe track to the long track (same event) sharing the largest fraction of its hits.

    Doubly jagged inputs, for probes and long tracks alike:

    offsets_*_tracks : int array, shape (n_events + 1,)
        Track boundaries per event (global track indices).
    *_hit_offsets : int array, shape (n_tracks + 1,)
        Hit boundaries per track into ``*_hits``.
    *_hits : integer array, shape (n_hits,)
        Hit / detector-channel IDs (e.g. LHCbIDs), in any order.

    The shared fraction is ``|H_probe ∩ H_long| / |H_probe|`` where ``H`` is the SET of a track's hit
    IDs: duplicate IDs inside one track are counted once (in numerator and denominator).

    Returns
    -------
    index : int64 array, shape (n_probe_tracks,)
        GLOBAL index of the best long track, -1 if unmatched.
    fraction : float64 array, shape (n_probe_tracks,)
        Its shared fraction in [0, 1], 0.0 if unmatched.

    A match needs at least one shared hit and ``fraction >= min_fraction``. Ties go to the lowest
    long-track index. Probe tracks without hits are unmatched.
    """
    offsets_probe, probe_hit_offsets, probe_hits = _check_hits(
        probe_hit_offsets, probe_hits, offsets_probe_tracks, "probe"
    )
    offsets_long, long_hit_offsets, long_hits = _check_hits(
        long_hit_offsets, long_hits, offsets_long_tracks, "long"
    )
    if offsets_probe.shape != offsets_long.shape:
        raise ValueError(
            f"probe and long track offsets describe different numbers of events: "
            f"{offsets_probe.shape[0] - 1} vs {offsets_long.shape[0] - 1}"
        )
    probe_hit_offsets, probe_hits = _sorted_unique_segments(probe_hit_offsets, probe_hits)
    long_hit_offsets, long_hits = _sorted_unique_segments(long_hit_offsets, long_hits)
    return _shared_fraction_kernel(
        offsets_probe,
        probe_hit_offsets,
        probe_hits,
        offsets_long,
        long_hit_offsets,
        long_hits,
        float(min_fraction),
    )


def shared_fraction_match_reference(
    offsets_probe_tracks: np.ndarray,
    probe_hit_offsets: np.ndarray,
    probe_hits: np.ndarray,
    offsets_long_tracks: np.ndarray,
    long_hit_offsets: np.ndarray,
    long_hits: np.ndarray,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain-python (set based) reference of :func:`shared_fraction_match`."""
    n_probe = len(probe_hit_offsets) - 1
    index = np.full(n_probe, -1, dtype=np.int64)
    fraction = np.zeros(n_probe, dtype=np.float64)
    for ev in range(len(offsets_probe_tracks) - 1):
        for p in range(offsets_probe_tracks[ev], offsets_probe_tracks[ev + 1]):
            hp = set(probe_hits[probe_hit_offsets[p] : probe_hit_offsets[p + 1]].tolist())
            if not hp:
                continue
            best, best_shared = -1, 0
            for t in range(offsets_long_tracks[ev], offsets_long_tracks[ev + 1]):
                shared = len(hp & set(long_hits[long_hit_offsets[t] : long_hit_offsets[t + 1]].tolist()))
                if shared > best_shared:
                    best, best_shared = t, shared
            if best >= 0 and best_shared / len(hp) >= min_fraction:
                index[p] = best
                fraction[p] = best_shared / len(hp)
    return index, fraction
