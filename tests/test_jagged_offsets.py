"""The entry-offsets kernel of jagged baskets (calibflow.kernels.jagged) against its plain-numpy reference and
against offsets built from the entries' counts (the truth the baskets were made from)."""

from __future__ import annotations

import numpy as np
import pytest

from calibflow.kernels.jagged import entry_offsets, entry_offsets_reference

BOTH = (entry_offsets, entry_offsets_reference)


def baskets(rng: np.random.Generator, counts: np.ndarray, per_basket: np.ndarray, itemsize: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(byte offsets from each key's start, key lengths, value bytes) of baskets holding entries of ``counts``
    values of ``itemsize`` bytes, ``per_basket`` entries each, with keys of random lengths (as ROOT writes them)."""
    keylen = rng.integers(60, 120, per_basket.size)
    starts, border, k = [], [], 0
    for b, n in enumerate(per_basket):
        c = counts[k : k + n]
        k += n
        starts.append(keylen[b] + itemsize * np.concatenate([[0], np.cumsum(c)[:-1]]))
        border.append(itemsize * int(c.sum()))
    return np.concatenate(starts).astype(np.int64), keylen, np.asarray(border, np.int64)


@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_offsets_equal_the_counts_and_the_reference(itemsize: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    per_basket = rng.integers(1, 400, rng.integers(1, 12))
    counts = rng.poisson(rng.uniform(0, 6), per_basket.sum())  # empty entries too
    starts, keylen, border = baskets(rng, counts, per_basket, itemsize)
    truth = np.concatenate([[0], np.cumsum(counts)])
    for fn in BOTH:
        offsets, bad = fn(starts, per_basket, keylen, border, itemsize)
        assert bad == -1
        assert offsets.dtype == np.int64
        np.testing.assert_array_equal(offsets, truth)


def damaged(kind: str, starts: np.ndarray, border: np.ndarray, per_basket: np.ndarray, itemsize: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and value bytes with basket 2 damaged in one way."""
    starts, border = starts.copy(), border.copy()
    first = int(per_basket[:2].sum())
    if kind == "first entry not at the values' start":
        starts[first] += itemsize
    elif kind == "running backwards":
        starts[first + 3] = starts[first + 1] - itemsize
    elif kind == "into a partial value":
        starts[first + 2] += 1
    elif kind == "the last entry beyond the values":
        border[2] = starts[first + per_basket[2] - 1] - starts[first] - itemsize
    return starts, border


@pytest.mark.parametrize("kind", ["first entry not at the values' start", "running backwards",
                                  "into a partial value", "the last entry beyond the values"])
def test_damaged_baskets_are_named_by_both(kind: str) -> None:
    rng = np.random.default_rng(7)
    per_basket = np.array([50, 40, 30, 60])
    counts = rng.integers(1, 4, per_basket.sum())
    starts, keylen, border = baskets(rng, counts, per_basket, 4)
    starts, border = damaged(kind, starts, border, per_basket, 4)
    assert [fn(starts, per_basket, keylen, border, 4)[1] for fn in BOTH] == [2, 2]


def test_a_basket_without_entries_is_bad_and_sizes_must_add_up() -> None:
    starts, keylen, border = np.array([80, 84], np.int64), np.array([80, 70]), np.array([8, 0])
    for fn in BOTH:
        assert fn(starts, np.array([2, 0]), keylen, border, 4)[1] == 1
        with pytest.raises(ValueError, match="2 entry offsets for baskets of 3 entries"):
            fn(starts, np.array([2, 1]), keylen, border, 4)
    for itemsize in (3, 0):
        with pytest.raises(ValueError, match="only 1, 2, 4 or 8 bytes"):
            entry_offsets(starts, np.array([2]), keylen[:1], border[:1], itemsize)


def test_the_first_bad_basket_is_named_before_a_later_empty_one() -> None:
    per_basket = np.array([3, 3, 0])
    starts = np.array([80, 84, 88, 80, 76, 88], np.int64)  # basket 1 runs backwards
    keylen, border = np.array([80, 80, 80]), np.array([12, 12, 0])
    assert [fn(starts, per_basket, keylen, border, 4)[1] for fn in BOTH] == [1, 1]
