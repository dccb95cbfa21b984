"""Entry offsets of a jagged branch from its baskets' byte offsets (NanoAOD's ``Muon_pt[nMuon]``).

A ROOT basket of a variable-size branch holds its values, then the byte offset of each entry's first value,
counted from the start of the basket's key (``keylen`` bytes before the values). An entry's values run to
the next entry's offset, the basket's last entry's to the end of the values (``border`` bytes). The kernel
turns the offsets of all baskets of a branch (read as one int64 array) into the awkward ``ListOffsetArray``
offsets in values (``itemsize`` bytes each), checking every entry on the way: a basket whose first entry
does not start at its values' start, or whose entries run backwards or into a partial value, is refused.
:func:`entry_offsets_reference` is the same in plain numpy (the kernel's tests compare both).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["entry_offsets", "entry_offsets_reference"]


@numba.njit(cache=True, nogil=True)
def _entry_offsets(starts: np.ndarray, per_basket: np.ndarray, keylen: np.ndarray, border: np.ndarray,
                   shift: int, offsets: np.ndarray) -> int:
    """Fill ``offsets`` (entries + 1) from ``starts`` for values of ``1 << shift`` bytes; the index of the first
    bad basket, or -1."""
    partial = (1 << shift) - 1
    k = 0
    total = 0
    offsets[0] = 0
    for b in range(per_basket.size):
        n = per_basket[b]
        if n < 1 or starts[k] != keylen[b]:  # the first entry starts at the values' start
            return b
        for _ in range(n - 1):
            nbytes = starts[k + 1] - starts[k]
            if nbytes < 0 or nbytes & partial:
                return b
            total += nbytes >> shift
            k += 1
            offsets[k] = total
        nbytes = border[b] - (starts[k] - keylen[b])  # the last entry: to the values' end
        if nbytes < 0 or nbytes & partial:
            return b
        total += nbytes >> shift
        k += 1
        offsets[k] = total
    return -1


def entry_offsets(starts: np.ndarray, per_basket: np.ndarray, keylen: np.ndarray, border: np.ndarray,
                  itemsize: int) -> tuple[np.ndarray, int]:
    """Offsets (int64, entries + 1, from 0, in values) of the entries whose byte offsets ``starts`` (int64,
    counted from each basket's key; ``per_basket[b]`` entries of basket ``b``, whose key is ``keylen[b]`` bytes
    and values ``border[b]`` bytes) index values of ``itemsize`` bytes; and the index of the first basket whose
    offsets are bad (-1: none; the offsets are then not all filled)."""
    per_basket = np.asarray(per_basket, np.int64)
    if int(per_basket.sum()) != len(starts):
        raise ValueError(f"{len(starts)} entry offsets for baskets of {int(per_basket.sum())} entries")
    shift = max(int(itemsize).bit_length() - 1, 0)
    if 1 << shift != itemsize:
        raise ValueError(f"values of {itemsize} bytes: only 1, 2, 4 or 8 bytes")
    offsets = np.empty(len(starts) + 1, np.int64)
    bad = _entry_offsets(np.asarray(starts, np.int64), per_basket, np.asarray(keylen, np.int64),
                         np.asarray(border, np.int64), shift, offsets)
    return offsets, int(bad)


def entry_offsets_reference(starts: np.ndarray, per_basket: np.ndarray, keylen: np.ndarray, border: np.ndarray,
                            itemsize: int) -> tuple[np.ndarray, int]:
    """:func:`entry_offsets` in plain numpy: all baskets at once (each entry's bytes run to the next entry's
    offset, the basket's last entry's to the values' end)."""
    per_basket = np.asarray(per_basket, np.int64)
    if int(per_basket.sum()) != len(starts):
        raise ValueError(f"{len(starts)} entry offsets for baskets of {int(per_basket.sum())} entries")
    if np.any(per_basket < 1):  # bad: the baskets before it are checked first
        empty = int(np.flatnonzero(per_basket < 1)[0])
        n = int(per_basket[:empty].sum())
        before = entry_offsets_reference(starts[:n], per_basket[:empty], keylen[:empty], border[:empty], itemsize)[1]
        return np.zeros(len(starts) + 1, np.int64), before if before >= 0 else empty
    begin = np.asarray(starts, np.int64) - np.repeat(np.asarray(keylen, np.int64), per_basket)
    end = np.empty_like(begin)
    end[:-1] = begin[1:]
    last_entry = np.cumsum(per_basket) - 1
    end[last_entry] = border
    nbytes = end - begin
    bad = (nbytes < 0) | (nbytes % itemsize != 0)
    first_entry = last_entry - per_basket + 1
    bad[first_entry] |= begin[first_entry] != 0
    offsets = np.zeros(len(begin) + 1, np.int64)
    np.cumsum(nbytes // itemsize, out=offsets[1:])
    if bad.any():
        return offsets, int(np.searchsorted(last_entry, np.flatnonzero(bad)[0]))
    return offsets, -1
