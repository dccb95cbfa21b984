"""Tag-and-probe pairing kernels on flat jagged arrays.

Jagged collections are passed as a *flat* per-object array plus ``offsets``: an int64 array of
length ``n_events + 1`` such that the objects of event ``i`` are ``flat[offsets[i]:offsets[i + 1]]``
(the awkward ``ListOffsetArray`` layout). ``offsets`` need not start at 0 (sliced awkward arrays),
but must be non-decreasing. All object indices returned by this module are GLOBAL indices into the
flat arrays; the index within the event is ``global_index - offsets[event_index]``.

Pair-level selections are applied by the caller with numpy on the returned index arrays, e.g.
opposite charge: ``keep = pair_mask_charge(charge, tag_index, probe_index)``, then
``event_index[keep], tag_index[keep], probe_index[keep]``.
"""

from __future__ import annotations

import awkward as ak
import numba
import numpy as np

from calibflow.kernels.cache import lazy_ufunc

__all__ = [
    "check_offsets",
    "invariant_mass",
    "jagged_to_flat",
    "offsets_from_counts",
    "pair_mask_charge",
    "pair_mass",
    "pairs_from_awkward",
    "tag_probe_pairs",
    "tag_probe_pairs_reference",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """int64 offsets (length ``len(counts) + 1``, starting at 0) from per-event object counts."""
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-dimensional, got shape {counts.shape}")
    if counts.size and counts.min() < 0:
        raise ValueError("counts must be non-negative")
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def check_offsets(offsets: np.ndarray, n_flat: int | None = None, name: str = "offsets") -> np.ndarray:
    """Validate and return ``offsets`` as a contiguous int64 array.

    Checks: 1-d, length >= 1, integer dtype, ``offsets[0] >= 0``, non-decreasing and, if ``n_flat`` is
    given, ``offsets[-1] <= n_flat`` (the flat arrays are long enough). Raises ``ValueError``.
    """
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array (n_events + 1), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr[0] < 0:
        raise ValueError(f"{name}[0] must be >= 0, got {arr[0]}")
    if arr.size > 1 and np.any(arr[1:] < arr[:-1]):
        raise ValueError(f"{name} must be non-decreasing")
    if n_flat is not None and arr[-1] > n_flat:
        raise ValueError(f"{name}[-1] = {arr[-1]} exceeds the length of the flat array ({n_flat})")
    return arr


def jagged_to_flat(array: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """Split a 2-level jagged awkward array (events x objects) into ``(flat, offsets)``.

    ``flat`` is a numpy array of the leaf values, ``offsets`` int64 starting at 0. Missing values
    (option types) are rejected by ``ak.to_numpy``.
    """
    array = ak.Array(array)
    if array.ndim != 2:
        raise ValueError(f"expected a jagged array of dimension 2 (events x objects), got ndim={array.ndim}")
    counts = ak.to_numpy(ak.num(array, axis=1))
    flat = ak.to_numpy(ak.flatten(array, axis=1))
    return flat, offsets_from_counts(counts)


# --------------------------------------------------------------------------------------------------
# tag-and-probe pairs
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _tag_probe_pairs_kernel(
    offsets: np.ndarray, is_tag: np.ndarray, is_probe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_events = offsets.shape[0] - 1
    # pass 1: count pairs = n_tag * n_probe - n_(tag and probe)  (removes t == p)
    n_pairs = 0
    for ev in range(n_events):
        n_tag = 0
        n_probe = 0
        n_both = 0
        for i in range(offsets[ev], offsets[ev + 1]):
            t = is_tag[i]
            p = is_probe[i]
            n_tag += t
            n_probe += p
            n_both += t and p
        n_pairs += n_tag * n_probe - n_both
    event_index = np.empty(n_pairs, dtype=np.int64)
    tag_index = np.empty(n_pairs, dtype=np.int64)
    probe_index = np.empty(n_pairs, dtype=np.int64)
    # pass 2: fill, ordered by (event, tag, probe)
    k = 0
    for ev in range(n_events):
        start = offsets[ev]
        stop = offsets[ev + 1]
        for t in range(start, stop):
            if not is_tag[t]:
                continue
            for p in range(start, stop):
                if p != t and is_probe[p]:
                    event_index[k] = ev
                    tag_index[k] = t
                    probe_index[k] = p
                    k += 1
    return event_index, tag_index, probe_index


def _as_bool(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def tag_probe_pairs(
    offsets: np.ndarray, is_tag: np.ndarray, is_probe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered tag-probe pairs ``(t, p)`` with ``t != p`` inside each event.

    Parameters
    ----------
    offsets : int array, shape (n_events + 1,)
        Event boundaries into the flat object arrays.
    is_tag, is_probe : bool arrays, shape (n_objects,)
        Flat per-object flags. An object may be both tag and probe: it then appears in both roles,
        never paired with itself.

    Returns
    -------
    event_index, tag_index, probe_index : int64 arrays, shape (n_pairs,)
        Event number and GLOBAL flat indices of tag and probe, ordered by event, then tag, then probe.
    """
    is_tag = _as_bool(is_tag, "is_tag")
    is_probe = _as_bool(is_probe, "is_probe")
    if is_tag.shape != is_probe.shape:
        raise ValueError(f"is_tag and is_probe differ in length: {is_tag.shape[0]} vs {is_probe.shape[0]}")
    offsets = check_offsets(offsets, is_tag.shape[0])
    return _tag_probe_pairs_kernel(offsets, is_tag, is_probe)


def tag_probe_pairs_reference(
    offsets: np.ndarray, is_tag: np.ndarray, is_probe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain-python reference of :func:`tag_probe_pairs` (same output and ordering; slow)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    ev_out: list[int] = []
    tag_out: list[int] = []
    probe_out: list[int] = []
    for ev in range(len(offsets) - 1):
        idx = range(int(offsets[ev]), int(offsets[ev + 1]))
        for t in idx:
            for p in idx:
                if t != p and is_tag[t] and is_probe[p]:
                    ev_out.append(ev)
                    tag_out.append(t)
                    probe_out.append(p)
    return (
        np.asarray(ev_out, dtype=np.int64),
        np.asarray(tag_out, dtype=np.int64),
        np.asarray(probe_out, dtype=np.int64),
    )


def pairs_from_awkward(is_tag: ak.Array, is_probe: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`tag_probe_pairs` for jagged boolean awkward arrays (events x objects) of equal structure.

    Returned tag/probe indices are global indices into ``ak.flatten(collection)``, e.g.
    ``ak.to_numpy(ak.flatten(muons.pt))[tag_index]``.
    """
    tag_flat, tag_offsets = jagged_to_flat(is_tag)
    probe_flat, probe_offsets = jagged_to_flat(is_probe)
    if not np.array_equal(tag_offsets, probe_offsets):
        raise ValueError("is_tag and is_probe must have the same jagged structure (same counts per event)")
    return tag_probe_pairs(tag_offsets, tag_flat, probe_flat)


def pair_mask_charge(
    charge: np.ndarray, tag_index: np.ndarray, probe_index: np.ndarray, product: int = -1
) -> np.ndarray:
    """Boolean pair mask ``charge[tag] * charge[probe] == product`` (-1: opposite sign, +1: same sign)."""
    charge = np.asarray(charge)
    return charge[tag_index] * charge[probe_index] == product


# --------------------------------------------------------------------------------------------------
# kinematics
# --------------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def pair_mass(pt1: float, eta1: float, phi1: float, m1: float, pt2: float, eta2: float, phi2: float, m2: float
              ) -> float:
    """Invariant mass (GeV) of two particles given (pt, eta, phi, mass) as float64: the scalar of
    :func:`invariant_mass`, also called by the fused pairing loop (:mod:`calibflow.kernels.fused_pairs`)."""
    p1 = pt1 * np.cosh(eta1)
    p2 = pt2 * np.cosh(eta2)
    msq1 = m1 * m1
    msq2 = m2 * m2
    e1 = np.sqrt(p1 * p1 + msq1)
    e2 = np.sqrt(p2 * p2 + msq2)
    denom = e1 * e2 + p1 * p2
    mass_term = 0.0
    if denom > 0.0:
        mass_term = (msq1 * p2 * p2 + msq2 * p1 * p1 + msq1 * msq2) / denom
    angle_term = pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    msq = msq1 + msq2 + 2.0 * (mass_term + angle_term)
    return np.sqrt(max(msq, 0.0))


@lazy_ufunc(["float64(float64, float64, float64, float64, float64, float64, float64, float64)"])
def invariant_mass(
    pt1: float, eta1: float, phi1: float, m1: float, pt2: float, eta2: float, phi2: float, m2: float
) -> float:
    """Invariant mass of two particles given (pt, eta, phi, mass); pt and mass in GeV, phi in rad.

    numpy ufunc (broadcasts, float64 result). Uses the cancellation-free form
    m^2 = m1^2 + m2^2 + 2 [ (m1^2 P2^2 + m2^2 P1^2 + m1^2 m2^2) / (E1 E2 + P1 P2)
                            + pt1 pt2 (cosh(eta1 - eta2) - cos(phi1 - phi2)) ]
    with P = |p| = pt cosh(eta), E = sqrt(P^2 + m^2): every term is >= 0, so it is accurate for light
    particles (muons) at high momentum, where E^2 - p^2 in float64 would cancel.
    """
    return pair_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2)
