"""Tests for calibflow.kernels.matching: Δφ, nearest-ΔR matching, shared-hit-fraction matching."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibflow.kernels.matching import (
    delta_phi,
    nearest_dr_match,
    nearest_dr_match_reference,
    shared_fraction_match,
    shared_fraction_match_reference,
)
from calibflow.kernels.pairing import offsets_from_counts

PI = math.pi
BELOW_PI = math.nextafter(PI, 0.0)
finite = {"allow_nan": False, "allow_infinity": False}
# multiples of π and their floating-point neighbours: where wrapping can round onto the wrong edge
EDGES = sorted(
    {
        x
        for k in range(-6, 7)
        for x in (k * PI, math.nextafter(k * PI, -math.inf), math.nextafter(k * PI, math.inf))
    }
)


# --------------------------------------------------------------------------------------------------
# delta_phi
# --------------------------------------------------------------------------------------------------
def test_delta_phi_hand_computed() -> None:
    assert delta_phi(0.3, 0.1) == pytest.approx(0.2, abs=1e-15)
    # across the ±π seam: 3.1 - (-3.1) = 6.2 -> 6.2 - 2π
    assert delta_phi(3.1, -3.1) == pytest.approx(6.2 - 2 * PI, abs=1e-15)
    assert delta_phi(-3.1, 3.1) == pytest.approx(2 * PI - 6.2, abs=1e-15)
    assert delta_phi(PI - 0.1, -PI + 0.1) == pytest.approx(-0.2, abs=1e-14)
    # half-open interval [−π, π)
    assert delta_phi(PI, 0.0) == -PI
    assert delta_phi(0.0, PI) == -PI
    assert delta_phi(0.0, -PI) == -PI
    assert delta_phi(BELOW_PI, 0.0) == BELOW_PI
    # inputs outside [−π, π) are wrapped too
    assert delta_phi(7.0, 0.0) == pytest.approx(7.0 - 2 * PI, abs=1e-14)
    assert delta_phi(-20.0, 1.0) == pytest.approx(-21.0 + 6 * PI, abs=1e-13)
    # in-range differences are returned unchanged (bit-exact)
    assert delta_phi(1.0, 0.3) == 1.0 - 0.3
    # just below 5π: the floor formula lands below −π and must be folded back to just below π
    d = delta_phi(math.nextafter(5 * PI, -math.inf), 0.0)
    assert PI - 1e-14 < d < PI


def test_delta_phi_broadcasts() -> None:
    out = delta_phi(np.array([[0.0], [3.0]]), np.array([-3.0, 0.0, 3.0]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[3.0, 0.0, -3.0], [6.0 - 2 * PI, 3.0, 0.0]], atol=1e-15)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.floats(-50, 50, **finite), st.sampled_from(EDGES)),
    st.one_of(st.floats(-50, 50, **finite), st.sampled_from([*EDGES, 0.0, 0.0, 0.0])),
)
def test_delta_phi_properties(a: float, b: float) -> None:
    d = float(delta_phi(a, b))
    assert -PI <= d < PI
    turns = (a - b - d) / (2 * PI)
    assert abs(turns - round(turns)) < 1e-12
    assert math.cos(d) == pytest.approx(math.cos(a - b), abs=1e-12)
    assert math.sin(d) == pytest.approx(math.sin(a - b), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# nearest_dr_match: hand-computed cases
# --------------------------------------------------------------------------------------------------
def test_nearest_dr_hand_computed() -> None:
    # event 0: A = {0: (0, 3.1), 1: (1.0, 0.0)}; B = {0: (0, -3.1), 1: (1.05, 0.0), 2: (0.0, 3.0)}
    # event 1: A = {2: (0.5, 0.5)}; B = {} ; event 2: A = {}; B = {3}
    offsets_a = np.array([0, 2, 3, 3])
    eta_a = np.array([0.0, 1.0, 0.5])
    phi_a = np.array([3.1, 0.0, 0.5])
    offsets_b = np.array([0, 3, 3, 4])
    eta_b = np.array([0.0, 1.05, 0.0, 0.5])
    phi_b = np.array([-3.1, 0.0, 3.0, 0.5])
    index, dr = nearest_dr_match(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, None, 0.3)
    # A0: B0 at ΔR = 2π - 6.2 = 0.0832 (across the seam) beats B2 at 0.1
    np.testing.assert_array_equal(index, [0, 1, -1])
    np.testing.assert_allclose(dr, [2 * PI - 6.2, 0.05, np.inf], rtol=1e-12)
    # mask out B0: A0 -> B2 (ΔR 0.1)
    mask = np.array([False, True, True, True])
    index, dr = nearest_dr_match(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask, 0.3)
    np.testing.assert_array_equal(index, [2, 1, -1])
    np.testing.assert_allclose(dr, [0.1, 0.05, np.inf], rtol=1e-12)
    # max_dr between the two: only A1 keeps its match; inclusive threshold at exactly the ΔR
    index, dr = nearest_dr_match(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask, 0.07)
    np.testing.assert_array_equal(index, [-1, 1, -1])
    d_exact = float(dr[1])
    index, _ = nearest_dr_match(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask, d_exact)
    assert index[1] == 1
    index, _ = nearest_dr_match(
        offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask, math.nextafter(d_exact, 0.0)
    )
    assert index[1] == -1


def test_nearest_dr_ties_take_lowest_index() -> None:
    offsets = np.array([0, 1])
    offsets_b = np.array([0, 4])
    # B1 and B3 both at ΔR 0.2 (B3 across the seam); B0 farther; lowest index among the ties wins
    eta_b = np.array([0.5, 0.2, 0.0, -0.2])
    phi_b = np.array([0.0, -PI, 0.0, -PI])
    index, dr = nearest_dr_match(offsets, [0.0], [PI], offsets_b, eta_b, phi_b, None, 1.0)
    assert index[0] == 1
    assert dr[0] == pytest.approx(0.2)
    index, _ = nearest_dr_match(offsets, [0.0], [PI], offsets_b, eta_b, phi_b, np.array([1, 0, 1, 1], bool))
    assert index[0] == 3


def test_nearest_dr_nan_and_inf_never_match() -> None:
    index, dr = nearest_dr_match([0, 1], [0.0], [0.0], [0, 2], [np.nan, 3.0], [0.0, 0.0])
    assert index[0] == 1 and dr[0] == 3.0
    index, dr = nearest_dr_match([0, 1], [0.0], [0.0], [0, 1], [np.nan], [0.0])
    assert index[0] == -1 and dr[0] == np.inf
    # infinite ΔR (infinite coordinate or overflow) is "no match", even with max_dr = inf
    args = (np.array([0, 1]), [0.0], [0.0], np.array([0, 2]), [np.inf, 1e200], [0.0, 0.0])
    for func in (nearest_dr_match, nearest_dr_match_reference):
        with np.errstate(over="ignore", invalid="ignore"):
            index, dr = func(*args)
        assert index[0] == -1 and dr[0] == np.inf


def test_nearest_dr_global_indices_with_offset_start() -> None:
    # both collections have leading objects not in any event
    index, dr = nearest_dr_match(
        np.array([1, 2]), [9.0, 0.0], [9.0, 0.0], np.array([2, 4]), [0.0, 0.0, 3.0, 0.1], [0, 0, 0, 0.0]
    )
    np.testing.assert_array_equal(index, [-1, 3])
    np.testing.assert_allclose(dr, [np.inf, 0.1])


def test_nearest_dr_input_errors() -> None:
    with pytest.raises(ValueError, match="different numbers of events"):
        nearest_dr_match([0, 1], [0.0], [0.0], [0, 1, 1], [0.0], [0.0])
    with pytest.raises(ValueError, match="mask_b"):
        nearest_dr_match([0, 1], [0.0], [0.0], [0, 1], [0.0], [0.0], np.array([1]))
    with pytest.raises(ValueError, match="eta_b and phi_b"):
        nearest_dr_match([0, 1], [0.0], [0.0], [0, 1], [0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="exceeds"):
        nearest_dr_match([0, 2], [0.0], [0.0], [0, 1], [0.0], [0.0])


# --------------------------------------------------------------------------------------------------
# nearest_dr_match: random jagged inputs
# --------------------------------------------------------------------------------------------------
phis = st.one_of(
    st.floats(-PI, PI, **finite),
    st.floats(PI - 1e-3, PI, **finite),
    st.floats(-PI, -PI + 1e-3, **finite),
    st.sampled_from([0.0, *EDGES]),
    st.floats(-10.0, 10.0, **finite),  # not normalised
)
etas = st.one_of(st.floats(-3, 3, **finite), st.sampled_from([0.0, 0.05, 1.0]))  # repeats -> ties


@st.composite
def dr_inputs(draw: st.DrawFn) -> tuple:
    n_events = draw(st.integers(0, 10))
    counts_a = np.asarray(draw(st.lists(st.integers(0, 5), min_size=n_events, max_size=n_events)), np.int64)
    counts_b = np.asarray(draw(st.lists(st.integers(0, 5), min_size=n_events, max_size=n_events)), np.int64)
    lead_a, lead_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    offsets_a = lead_a + offsets_from_counts(counts_a)
    offsets_b = lead_b + offsets_from_counts(counts_b)
    n_a, n_b = int(offsets_a[-1]), int(offsets_b[-1])

    def floats(strategy: st.SearchStrategy, n: int) -> np.ndarray:
        return np.asarray(draw(st.lists(strategy, min_size=n, max_size=n)), dtype=np.float64)

    mask_b = np.asarray(draw(st.lists(st.booleans(), min_size=n_b, max_size=n_b)), dtype=bool)
    max_dr = draw(st.one_of(st.sampled_from([0.0, 0.1, 0.5, np.inf]), st.floats(0, 6, **finite)))
    return (
        offsets_a,
        floats(etas, n_a),
        floats(phis, n_a),
        offsets_b,
        floats(etas, n_b),
        floats(phis, n_b),
        mask_b,
        max_dr,
    )


def brute_force_nearest(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b) -> np.ndarray:
    """Minimum ΔR per A object over selected B objects with math.remainder (independent Δφ)."""
    best = np.full(len(eta_a), np.inf)
    for ev in range(len(offsets_a) - 1):
        for i in range(offsets_a[ev], offsets_a[ev + 1]):
            for j in range(offsets_b[ev], offsets_b[ev + 1]):
                if mask_b[j]:
                    dphi = math.remainder(phi_a[i] - phi_b[j], 2 * PI)
                    best[i] = min(best[i], math.hypot(eta_a[i] - eta_b[j], dphi))
    return best


@settings(max_examples=400, deadline=None)
@given(dr_inputs())
def test_nearest_dr_matches_reference(inputs: tuple) -> None:
    offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b, max_dr = inputs
    index, dr = nearest_dr_match(*inputs)
    index_ref, dr_ref = nearest_dr_match_reference(*inputs)
    np.testing.assert_array_equal(index, index_ref)
    np.testing.assert_array_equal(dr, dr_ref)
    assert index.dtype == np.int64 and dr.dtype == np.float64
    # consistency with an independent brute force (up to rounding at the max_dr edge)
    best = brute_force_nearest(offsets_a, eta_a, phi_a, offsets_b, eta_b, phi_b, mask_b)
    matched = index >= 0
    np.testing.assert_allclose(dr[matched], best[matched], rtol=1e-12, atol=1e-12)
    assert np.all(mask_b[index[matched]])
    assert np.all(dr[matched] <= max_dr)
    clear = ~np.isclose(best, max_dr, rtol=0.0, atol=1e-9)
    np.testing.assert_array_equal(matched[clear], (best <= max_dr)[clear])
    assert np.all(dr[~matched] == np.inf)
    # the match is in the same event
    ev_of_a = np.searchsorted(offsets_a, np.arange(len(eta_a)), side="right") - 1
    ev_of_b = np.searchsorted(offsets_b, index[matched], side="right") - 1
    np.testing.assert_array_equal(ev_of_a[matched], ev_of_b)


def awkward_nearest(eta_a, phi_a, eta_b, phi_b, mask_b, counts_a, counts_b, max_dr) -> np.ndarray:
    """coffea-style awkward implementation (nested cartesian + argmin), for cross-checking."""
    a = ak.unflatten(ak.zip({"eta": eta_a, "phi": phi_a}), counts_a)
    b = ak.unflatten(ak.zip({"eta": eta_b, "phi": phi_b, "idx": np.arange(len(eta_b))}), counts_b)
    b = b[ak.unflatten(mask_b, counts_b)]
    pa, pb = ak.unzip(ak.cartesian([a, b], axis=1, nested=True))
    dr = np.hypot(pa.eta - pb.eta, (pa.phi - pb.phi + PI) % (2 * PI) - PI)
    best = ak.argmin(dr, axis=2, keepdims=True)
    idx = ak.where(ak.firsts(dr[best], axis=2) <= max_dr, ak.firsts(pb.idx[best], axis=2), -1)
    return ak.to_numpy(ak.flatten(ak.fill_none(idx, -1), axis=1))


def test_nearest_dr_matches_awkward_on_random_events() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    counts_a, counts_b = rng.integers(0, 4, n), rng.integers(0, 6, n)
    eta_a, phi_a = rng.uniform(-2.5, 2.5, counts_a.sum()), rng.uniform(-PI, PI, counts_a.sum())
    eta_b, phi_b = rng.uniform(-2.5, 2.5, counts_b.sum()), rng.uniform(-PI, PI, counts_b.sum())
    mask_b = rng.random(counts_b.sum()) < 0.6
    index, _ = nearest_dr_match(
        offsets_from_counts(counts_a),
        eta_a,
        phi_a,
        offsets_from_counts(counts_b),
        eta_b,
        phi_b,
        mask_b,
        1.5,
    )
    want = awkward_nearest(eta_a, phi_a, eta_b, phi_b, mask_b, counts_a, counts_b, 1.5)
    np.testing.assert_array_equal(index, want)
    assert 0.2 < np.mean(index >= 0) < 0.8  # a non-trivial mix of matched and unmatched


# --------------------------------------------------------------------------------------------------
# shared_fraction_match
# --------------------------------------------------------------------------------------------------
def flatten_tracks(events: list[list[list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[[hits of track, ...] per event] -> (track offsets, hit offsets, hits)."""
    tracks = [t for ev in events for t in ev]
    track_offsets = offsets_from_counts(np.array([len(ev) for ev in events], dtype=np.int64))
    hit_offsets = offsets_from_counts(np.array([len(t) for t in tracks], dtype=np.int64))
    hits = np.array([h for t in tracks for h in t], dtype=np.int64)
    return track_offsets, hit_offsets, hits


def test_shared_fraction_hand_computed() -> None:
    probes = [
        [[5, 1, 2, 2], [3, 9], [], [7, 8]],  # event 0
        [[4, 4, 6]],  # event 1
        [[1, 2]],  # event 2: no long tracks
    ]
    longs = [
        [[3, 2], [9, 2, 1, 1], [8, 100, 101]],  # long tracks 0, 1, 2
        [[6, 7], [4]],  # long tracks 3, 4
        [],
    ]
    args = (*flatten_tracks(probes), *flatten_tracks(longs))
    index, fraction = shared_fraction_match(*args, min_fraction=0.0)
    # probe 0 = {1,2,5}: L0 shares {2} (1/3), L1 shares {1,2} (2/3) -> L1
    # probe 1 = {3,9}: L0 shares {3}, L1 shares {9}: tie at 1/2 -> lowest index L0
    # probe 2: no hits -> unmatched; probe 3 = {7,8}: L2 shares {8} -> 1/2
    # probe 4 = {4,6} (duplicate 4 counted once): L3 {6} and L4 {4} tie at 1/2 -> L3
    # probe 5: no long tracks in its event
    np.testing.assert_array_equal(index, [1, 0, -1, 2, 3, -1])
    np.testing.assert_allclose(fraction, [2 / 3, 0.5, 0.0, 0.5, 0.5, 0.0])
    index, fraction = shared_fraction_match(*args, min_fraction=0.6)
    np.testing.assert_array_equal(index, [1, -1, -1, -1, -1, -1])
    np.testing.assert_allclose(fraction, [2 / 3, 0, 0, 0, 0, 0])
    # threshold is inclusive
    index, _ = shared_fraction_match(*args, min_fraction=0.5)
    np.testing.assert_array_equal(index, [1, 0, -1, 2, 3, -1])
    for got, want in zip(shared_fraction_match_reference(*args, 0.5), (index, _), strict=True):
        np.testing.assert_array_equal(got, want)


def test_shared_fraction_requires_a_shared_hit() -> None:
    args = (*flatten_tracks([[[1, 2]]]), *flatten_tracks([[[3, 4]]]))
    index, fraction = shared_fraction_match(*args, min_fraction=0.0)
    assert index[0] == -1 and fraction[0] == 0.0


def test_shared_fraction_large_unsigned_ids_stay_distinct() -> None:
    big = 2**63 + 5  # big and big + 1 are equal as float64, and 2**63 - 5 must not alias 2**63 + 5
    probe_hits = np.array([big, 7, big], dtype=np.uint64)
    long_hits = np.array([big + 1, 7, 2**63 - 5, 7, big], dtype=np.uint64)
    # one event, one probe track {big, 7}; long tracks L0 = {big + 1, 7, 2**63 - 5}, L1 = {7, big}
    index, fraction = shared_fraction_match([0, 1], [0, 3], probe_hits, [0, 2], [0, 3, 5], long_hits, 0.9)
    assert index[0] == 1 and fraction[0] == 1.0
    index, fraction = shared_fraction_match([0, 1], [0, 3], probe_hits, [0, 1], [0, 3], long_hits[:3], 0.0)
    assert index[0] == 0 and fraction[0] == 0.5
    # uint32 LHCbID-like hits
    index, fraction = shared_fraction_match(
        [0, 1], [0, 3], np.array([1, 2, 3], np.uint32), [0, 1], [0, 2], np.array([3, 8], np.uint32), 0.0
    )
    assert index[0] == 0 and fraction[0] == pytest.approx(1 / 3)


def test_shared_fraction_input_errors() -> None:
    with pytest.raises(ValueError, match="different numbers of events"):
        shared_fraction_match([0, 1], [0, 1], [1], [0, 1, 1], [0, 1], [1], 0.5)
    with pytest.raises(ValueError, match="integer"):
        shared_fraction_match([0, 1], [0, 1], [1.5], [0, 1], [0, 1], [1], 0.5)
    with pytest.raises(ValueError, match="offsets_probe_tracks"):
        shared_fraction_match([0, 2], [0, 1], [1], [0, 1], [0, 1], [1], 0.5)


@st.composite
def track_events(draw: st.DrawFn, n_events: int) -> list[list[list[int]]]:
    hits = st.lists(st.integers(0, 12), max_size=6)
    return [draw(st.lists(hits, max_size=4)) for _ in range(n_events)]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 6).flatmap(lambda n: st.tuples(track_events(n), track_events(n))), st.data())
def test_shared_fraction_matches_reference(events: tuple, data: st.DataObject) -> None:
    probes, longs = events
    min_fraction = data.draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)))
    args = (*flatten_tracks(probes), *flatten_tracks(longs))
    index, fraction = shared_fraction_match(*args, min_fraction)
    index_ref, fraction_ref = shared_fraction_match_reference(*args, min_fraction)
    np.testing.assert_array_equal(index, index_ref)
    np.testing.assert_array_equal(fraction, fraction_ref)
    assert np.all((fraction >= min_fraction) | (index == -1))
    assert np.all((fraction > 0) == (index >= 0))
