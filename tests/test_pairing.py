"""Tests for calibflow.kernels.pairing: tag-and-probe pairs and the invariant mass."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibflow.kernels.pairing import (
    check_offsets,
    invariant_mass,
    jagged_to_flat,
    offsets_from_counts,
    pair_mask_charge,
    pairs_from_awkward,
    tag_probe_pairs,
    tag_probe_pairs_reference,
)

MU = 0.1056583755  # GeV


def as_arrays(*xs: list) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(x) for x in xs)


# --------------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------------
def test_pairs_hand_computed() -> None:
    # event 0: objects 0,1,2; event 1: empty; event 2: objects 3,4
    offsets = np.array([0, 3, 3, 5])
    is_tag = np.array([True, False, True, True, True])
    is_probe = np.array([True, True, False, False, True])
    ev, tag, probe = tag_probe_pairs(offsets, is_tag, is_probe)
    # (0,1), (2,0), (2,1) in event 0 -- (0,0) excluded; (3,4) in event 2 -- (4,4) excluded
    np.testing.assert_array_equal(ev, [0, 0, 0, 2])
    np.testing.assert_array_equal(tag, [0, 2, 2, 3])
    np.testing.assert_array_equal(probe, [1, 0, 1, 4])
    assert ev.dtype == tag.dtype == probe.dtype == np.int64


def test_pairs_both_roles_gives_both_orderings() -> None:
    offsets = np.array([0, 2])
    both = np.array([True, True])
    ev, tag, probe = tag_probe_pairs(offsets, both, both)
    np.testing.assert_array_equal(ev, [0, 0])
    np.testing.assert_array_equal(tag, [0, 1])
    np.testing.assert_array_equal(probe, [1, 0])


def test_pairs_offsets_not_starting_at_zero_give_global_indices() -> None:
    # flat arrays have 2 leading objects that belong to no event (e.g. a sliced awkward array)
    offsets = np.array([2, 4, 5])
    is_tag = np.array([True, True, True, False, True])
    is_probe = np.array([True, True, False, True, True])
    ev, tag, probe = tag_probe_pairs(offsets, is_tag, is_probe)
    np.testing.assert_array_equal(ev, [0])
    np.testing.assert_array_equal(tag, [2])
    np.testing.assert_array_equal(probe, [3])


def test_pairs_empty_inputs() -> None:
    for offsets in (np.array([0]), np.array([0, 0, 0])):
        ev, tag, probe = tag_probe_pairs(offsets, np.zeros(0, bool), np.zeros(0, bool))
        assert ev.shape == tag.shape == probe.shape == (0,)


def test_pairs_from_awkward_and_sliced_arrays() -> None:
    is_tag = ak.Array([[True, False, True], [False], [False, True]])
    is_probe = ak.Array([[True, True, True], [True], [True, True]])
    ev, tag, probe = pairs_from_awkward(is_tag, is_probe)
    np.testing.assert_array_equal(ev, [0, 0, 0, 0, 2])
    np.testing.assert_array_equal(tag, [0, 0, 2, 2, 5])
    np.testing.assert_array_equal(probe, [1, 2, 0, 1, 4])
    # sliced arrays (offsets not starting at 0 in the layout) index into ak.flatten(sliced)
    ev, tag, probe = pairs_from_awkward(is_tag[1:], is_probe[1:])
    np.testing.assert_array_equal(ev, [1])
    np.testing.assert_array_equal(tag, [2])
    np.testing.assert_array_equal(probe, [1])


def test_pairs_from_awkward_structure_mismatch() -> None:
    with pytest.raises(ValueError, match="same jagged structure"):
        pairs_from_awkward(ak.Array([[True], [True]]), ak.Array([[True, True], []]))


def test_pair_mask_charge() -> None:
    charge = np.array([1, -1, 1, -1])
    tag = np.array([0, 0, 1, 2])
    probe = np.array([1, 2, 3, 3])
    np.testing.assert_array_equal(pair_mask_charge(charge, tag, probe), [True, False, False, True])
    np.testing.assert_array_equal(pair_mask_charge(charge, tag, probe, product=1), [False, True, True, False])


@pytest.mark.parametrize(
    ("offsets", "n", "message"),
    [
        ([[0, 1]], 1, "1-d"),
        ([], 0, "non-empty"),
        ([0.0, 1.0], 1, "integer dtype"),
        ([-1, 1], 2, r"offsets\[0\]"),
        ([0, 2, 1], 2, "non-decreasing"),
        ([0, 3], 2, "exceeds"),
    ],
)
def test_bad_offsets(offsets: list, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tag_probe_pairs(np.asarray(offsets), np.ones(n, bool), np.ones(n, bool))


def test_bad_flags() -> None:
    with pytest.raises(ValueError, match="boolean"):
        tag_probe_pairs(np.array([0, 2]), np.array([1, 0]), np.array([True, True]))
    with pytest.raises(ValueError, match="differ in length"):
        tag_probe_pairs(np.array([0, 2]), np.ones(2, bool), np.ones(3, bool))


def test_offsets_helpers() -> None:
    np.testing.assert_array_equal(offsets_from_counts(np.array([2, 0, 3])), [0, 2, 2, 5])
    np.testing.assert_array_equal(offsets_from_counts(np.array([], dtype=np.int64)), [0])
    with pytest.raises(ValueError, match="non-negative"):
        offsets_from_counts(np.array([1, -1]))
    assert check_offsets(np.array([0, 1], dtype=np.uint32)).dtype == np.int64
    flat, offsets = jagged_to_flat(ak.Array([[1.5, 2.5], [], [3.5]]))
    np.testing.assert_array_equal(flat, [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(offsets, [0, 2, 2, 3])
    with pytest.raises(ValueError, match="dimension 2"):
        jagged_to_flat(ak.Array([1, 2, 3]))


# --------------------------------------------------------------------------------------------------
# random jagged inputs: kernel == reference
# --------------------------------------------------------------------------------------------------
@st.composite
def jagged_flags(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = draw(st.lists(st.integers(0, 5), max_size=12))
    lead = draw(st.integers(0, 2))  # objects before the first event (offsets[0] > 0)
    offsets = lead + offsets_from_counts(np.asarray(counts, dtype=np.int64))
    n = int(offsets[-1]) + draw(st.integers(0, 2))  # and possibly after the last one
    is_tag = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    is_probe = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    return offsets, is_tag, is_probe


@settings(max_examples=300, deadline=None)
@given(jagged_flags())
def test_pairs_match_reference(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    offsets, is_tag, is_probe = data
    got = tag_probe_pairs(offsets, is_tag, is_probe)
    want = tag_probe_pairs_reference(offsets, is_tag, is_probe)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    ev, tag, probe = got
    # invariants independent of the reference
    assert np.all(tag != probe)
    assert np.all(is_tag[tag]) and np.all(is_probe[probe])
    assert np.all((offsets[ev] <= tag) & (tag < offsets[ev + 1]))
    assert np.all((offsets[ev] <= probe) & (probe < offsets[ev + 1]))
    expected_total = 0
    for e in range(offsets.size - 1):
        t, p = is_tag[offsets[e] : offsets[e + 1]], is_probe[offsets[e] : offsets[e + 1]]
        expected_total += int(t.sum()) * int(p.sum()) - int((t & p).sum())
    assert ev.size == expected_total


@settings(max_examples=100, deadline=None)
@given(jagged_flags())
def test_pairs_from_awkward_matches_flat(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    offsets, is_tag, is_probe = data
    lead = int(offsets[0])
    counts = np.diff(offsets)
    tag_ak = ak.unflatten(is_tag[lead : offsets[-1]], counts)
    probe_ak = ak.unflatten(is_probe[lead : offsets[-1]], counts)
    ev, tag, probe = pairs_from_awkward(tag_ak, probe_ak)
    ev_ref, tag_ref, probe_ref = tag_probe_pairs_reference(offsets, is_tag, is_probe)
    np.testing.assert_array_equal(ev, ev_ref)
    np.testing.assert_array_equal(tag, tag_ref - lead)
    np.testing.assert_array_equal(probe, probe_ref - lead)


# --------------------------------------------------------------------------------------------------
# invariant mass
# --------------------------------------------------------------------------------------------------
def test_invariant_mass_hand_computed() -> None:
    # back-to-back massless, 45 GeV each -> 90 GeV
    assert invariant_mass(45.0, 0.0, 0.0, 0.0, 45.0, 0.0, math.pi, 0.0) == pytest.approx(90.0, rel=1e-14)
    # collinear massless -> 0
    assert invariant_mass(20.0, 1.2, 0.3, 0.0, 35.0, 1.2, 0.3, 0.0) == pytest.approx(0.0, abs=1e-6)
    # two muons at rest -> 2 m_mu
    assert invariant_mass(0.0, 0.0, 0.0, MU, 0.0, 0.0, 0.0, MU) == pytest.approx(2 * MU, rel=1e-14)
    # J/psi-like: massless 2 GeV muons at 90 degrees in the transverse plane: m^2 = 2 pt1 pt2 (1 - cos)
    assert invariant_mass(2.0, 0.0, 0.0, 0.0, 2.0, 0.0, math.pi / 2, 0.0) == pytest.approx(math.sqrt(8.0))
    # rotation in phi leaves the mass unchanged; a common eta shift too, for massless particles (boost)
    m1 = invariant_mass(30.0, -0.5, 2.0, MU, 40.0, 0.7, -1.0, MU)
    assert invariant_mass(30.0, -0.5, 3.0, MU, 40.0, 0.7, 0.0, MU) == pytest.approx(m1, rel=1e-13)
    m0 = invariant_mass(30.0, -0.5, 2.0, 0.0, 40.0, 0.7, -1.0, 0.0)
    assert invariant_mass(30.0, 0.5, 2.0, 0.0, 40.0, 1.7, -1.0, 0.0) == pytest.approx(m0, rel=1e-13)
    # pt1 pt2 (cosh(deta) - cos(dphi)) for massless: deta = 1.2, dphi = 3 (after wrapping, -3)
    assert m0 == pytest.approx(math.sqrt(2 * 30.0 * 40.0 * (math.cosh(1.2) - math.cos(3.0))), rel=1e-13)


def test_invariant_mass_collinear_massive_no_cancellation() -> None:
    # two collinear 1 TeV muons with equal momenta: exact answer 2 m_mu, which E^2 - p^2 loses
    m = invariant_mass(1000.0, 2.0, 1.0, MU, 1000.0, 2.0, 1.0, MU)
    assert m == pytest.approx(2 * MU, rel=1e-9)


def test_invariant_mass_broadcasting_and_dtypes() -> None:
    pt = np.array([45.0, 45.0], dtype=np.float32)
    m = invariant_mass(pt, 0.0, 0.0, 0.0, pt, 0.0, np.array([math.pi, math.pi / 2]), 0.0)
    assert m.dtype == np.float64
    np.testing.assert_allclose(m, [90.0, 45.0 * math.sqrt(2.0)], rtol=1e-7)


def four_vector_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2) -> float:
    """Naive (E, p) sum, math module only."""
    p = []
    for pt, eta, phi, m in ((pt1, eta1, phi1, m1), (pt2, eta2, phi2, m2)):
        px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
        p.append((math.sqrt(px * px + py * py + pz * pz + m * m), px, py, pz))
    e, px, py, pz = (a + b for a, b in zip(*p, strict=True))
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0)), e


finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.5, 500, **finite),
    st.floats(-4, 4, **finite),
    st.floats(-7, 7, **finite),
    st.floats(0, 100, **finite),
    st.floats(0.5, 500, **finite),
    st.floats(-4, 4, **finite),
    st.floats(-7, 7, **finite),
    st.floats(0, 100, **finite),
)
def test_invariant_mass_vs_four_vectors(
    pt1: float, eta1: float, phi1: float, m1: float, pt2: float, eta2: float, phi2: float, m2: float
) -> None:
    args = (pt1, eta1, phi1, m1, pt2, eta2, phi2, m2)
    want, energy = four_vector_mass(*args)
    got = invariant_mass(*args)
    # the naive formula has an absolute error ~ eps * E^2 / m on m; compare with a matching tolerance
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-7 * energy)


def test_ufuncs_are_built_at_their_first_call_not_at_import() -> None:
    """Importing the kernel modules builds no ufunc (0.25 s each, even from numba's cache: every process importing
    them paid it); the first call does, and it casts and broadcasts as the ufunc."""
    import subprocess
    import sys

    code = ("import numpy as np, calibflow.kernels.matching as m, calibflow.kernels.pairing as p\n"
            "built = lambda: (p.invariant_mass.ufunc.cache_info().currsize, m.delta_phi.ufunc.cache_info().currsize)\n"
            "print(built()); m.delta_phi(np.float32([3.0]), -3); print(built())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["(0, 0)", "(0, 1)"]
