"""Flat numeric TTree branches read basket by basket, straight from a memory-mapped local file.

uproot parses the TTree (branch types, basket positions and entry ranges); this module only does the hot
loop of reading its flat branches: each needed basket's ROOT compression blocks are inflated with
uproot's own decompressors (libdeflate for ZLIB once :func:`calibflow.io.root.use_fast_zlib` ran; LZ4
blocks checksum-verified with xxhash as uproot does) and converted from big-endian once, into the chunk's
output array. That skips uproot's per-basket objects, copies and concatenation: about 30 % less CPU than
``TTree.arrays`` for the same columns (docs/prep.md), and the same values (tests/test_baskets.py).

Chunks are unions of whole clusters (entry ranges at which every needed branch starts a new basket), so
no basket is inflated twice. String branches (``char*``, ``TString``, ``std::string``: uproot's
``AsStrings``) are read by uproot for the same entry ranges, as awkward string arrays, beside the numeric
ones. Branches this reader does not handle (jagged or object branches, custom interpretations, baskets
embedded in the TTree metadata of a file whose writer crashed) and trees whose clusters are too long for
bounded memory are left to uproot: :func:`flat_layout` returns None for them.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import uproot
import uproot.compression as uc

_KEY = struct.Struct(">iHiIH")
"""Start of a TKey: fNbytes, fVersion, fObjlen, fDatime, fKeylen."""
_BLOCK = struct.Struct("<2sB3s3s")
"""ROOT compression block header: algorithm, method, compressed and uncompressed sizes (3-byte little-endian)."""
_DECOMPRESSORS = {d._2byte: d for d in (uc._decompress_ZLIB, uc._decompress_LZMA, uc._decompress_LZ4, uc._decompress_ZSTD)}
MAX_CLUSTER_FACTOR = 4
"""A tree whose clusters exceed this many chunk sizes is read by uproot (which can split baskets)."""


@dataclass(frozen=True)
class FlatBranch:
    """Where the baskets of one flat numeric branch are: file offsets (bytes) of their TKeys, their sizes
    on disk (bytes, key included) and the entry range of each (``entries[i]:entries[i+1]``)."""

    name: str
    dtype: np.dtype  # as stored: big-endian
    seeks: np.ndarray
    sizes: np.ndarray
    entries: np.ndarray


def flat_layout(tree: Any, names: Sequence[str]) -> list[FlatBranch] | None:
    """The basket layout of branches ``names`` of the uproot TTree ``tree``, or None when one of them is not
    a flat numeric branch in normal baskets (then uproot reads the tree)."""
    out = []
    for name in names:
        branch = tree[name]
        interp = getattr(branch, "interpretation", None)  # RNTuple fields have none
        if type(interp) is not uproot.AsDtype or interp.from_dtype.shape or interp.from_dtype.fields:
            return None
        if branch.member("fEntryOffsetLen") or branch.embedded_baskets:
            return None
        n = branch._num_normal_baskets
        entries = np.asarray(branch.member("fBasketEntry")[: n + 1], dtype=np.int64)
        if n == 0 or entries[-1] != branch.num_entries:
            return None
        out.append(FlatBranch(name, interp.from_dtype, np.asarray(branch.member("fBasketSeek")[:n], dtype=np.int64),
                              np.asarray(branch.member("fBasketBytes")[:n], dtype=np.int64), entries))
    return out


def cluster_chunks(layout: Sequence[FlatBranch], step_rows: int, bound_rows: int | None = None
                   ) -> list[tuple[int, int]] | None:
    """Entry ranges of about ``step_rows`` entries made of whole clusters (common basket boundaries of all
    branches); None when a cluster is longer than ``MAX_CLUSTER_FACTOR`` times ``bound_rows`` (default
    ``step_rows``: memory would not be bounded)."""
    common = layout[0].entries
    for b in layout[1:]:
        common = np.intersect1d(common, b.entries, assume_unique=True)
    if np.max(np.diff(common), initial=0) > MAX_CLUSTER_FACTOR * max(bound_rows or step_rows, 1):
        return None
    chunks, start = [], int(common[0])
    for edge in common[1:]:
        if edge - start >= step_rows or edge == common[-1]:
            chunks.append((start, int(edge)))
            start = int(edge)
    return chunks


class BasketFile:
    """A memory-mapped local ROOT file from which flat branches are read chunk by chunk."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)

    def close(self) -> None:
        """Release the mapping (left to the garbage collector while an exception's frames still view it)."""
        try:
            self._view.release()
            self._map.close()
        except BufferError:
            pass

    def __enter__(self) -> BasketFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, branch: FlatBranch, start: int, stop: int) -> np.ndarray:
        """Entries ``start:stop`` of ``branch`` (bounds on its basket edges) as a native-endian array."""
        first, last = np.searchsorted(branch.entries, [start, stop])
        if branch.entries[first] != start or branch.entries[last] != stop:
            raise ValueError(f"branch {branch.name!r}: entries {start}:{stop} do not start and end on basket edges")
        out = np.empty(stop - start, branch.dtype.newbyteorder("="))
        for i in range(first, last):
            lo, hi = int(branch.entries[i]) - start, int(branch.entries[i + 1]) - start
            data = self._basket(branch, i, (hi - lo) * branch.dtype.itemsize)
            out[lo:hi] = np.frombuffer(data, branch.dtype, count=hi - lo)
        return out

    def _basket(self, branch: FlatBranch, i: int, nbytes: int) -> Any:
        """The first ``nbytes`` uncompressed bytes of basket ``i`` of ``branch``."""
        seek, size = int(branch.seeks[i]), int(branch.sizes[i])
        where = f"branch {branch.name!r} basket {i} at byte {seek}"
        if seek < 0 or seek + size > len(self._map) or size < _KEY.size:
            raise ValueError(f"{where} lies beyond the end of the file ({len(self._map)} bytes): truncated?")
        _, _, objlen, _, keylen = _KEY.unpack_from(self._map, seek)
        if objlen < nbytes or not 0 < keylen < size:
            raise ValueError(f"{where}: TKey says {objlen} bytes, {nbytes} expected")
        payload = self._view[seek + keylen : seek + size]
        if len(payload) == objlen:  # stored uncompressed
            return payload[:nbytes]
        return memoryview(_inflate(payload, objlen, where))[:nbytes]


def _inflate(payload: memoryview, objlen: int, where: str) -> Any:
    """Concatenated content of the ROOT compression blocks in ``payload`` (``objlen`` bytes in all)."""
    parts, pos = [], 0
    while pos < len(payload):
        algo, _, c3, u3 = _BLOCK.unpack_from(payload, pos)
        c, u = int.from_bytes(c3, "little"), int.from_bytes(u3, "little")
        decompressor = _DECOMPRESSORS.get(algo)
        if decompressor is None:
            raise ValueError(f"{where}: unsupported compression algorithm {algo!r}")
        data = payload[pos + _BLOCK.size : pos + _BLOCK.size + c]
        if algo == uc._decompress_LZ4._2byte:
            data = _checked_lz4(data, where)
        block = decompressor.decompress(data, u)
        if len(block) != u:
            raise ValueError(f"{where}: a block inflated to {len(block)} bytes, its header says {u}")
        parts.append(block)
        pos += _BLOCK.size + c
    out = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(out) != objlen:
        raise ValueError(f"{where}: inflated to {len(out)} bytes, its TKey says {objlen}")
    return out


def _checked_lz4(data: memoryview, where: str) -> memoryview:
    """LZ4 block content after its 8-byte xxhash64 checksum, which is verified (as uproot does)."""
    import xxhash

    (expected,) = struct.unpack_from(">Q", data)
    body = data[8:]
    if xxhash.xxh64(body).intdigest() != expected:
        raise ValueError(f"{where}: LZ4 checksum mismatch (corrupt file)")
    return body


def iterate_flat(path: str, layout: Sequence[FlatBranch], chunks: Sequence[tuple[int, int]],
                 others: Callable[[int, int], dict[str, Any]] | None = None, entry_stop: int | None = None
                 ) -> Iterator[dict[str, Any]]:
    """The branches of ``layout`` in the file at ``path``, one dict (name -> native array) per chunk, with
    ``others(start, stop)`` (more branches of the same entries) added; entries from ``entry_stop`` on are
    left out (the chunk holding it is read whole, then cut)."""
    with BasketFile(path) as f:
        for start, stop in chunks:
            if entry_stop is not None and start >= entry_stop:
                return
            out: dict[str, Any] = {b.name: f.read(b, start, stop) for b in layout}
            if entry_stop is not None and stop > entry_stop:
                out = {k: v[: entry_stop - start] for k, v in out.items()}
                stop = entry_stop
            if others is not None:
                out.update(others(start, stop))
            yield out


def string_branches(tree: Any, names: Sequence[str]) -> list[str]:
    """The branches among ``names`` of the uproot TTree ``tree`` holding one string per entry."""
    return [n for n in names if isinstance(getattr(tree[n], "interpretation", None), uproot.AsStrings)]


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kMGT]i?B|B)?\s*$")
_UNITS = {None: 1, "B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "kiB": 2**10, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def step_entries(step_size: str | int, layout: Sequence[FlatBranch]) -> int:
    """Entries per chunk: ``step_size`` itself when an int, else the entries whose arrays of the branches
    of ``layout`` fill that memory size (``"64 MB"``, ``"1 GiB"``, as uproot's ``step_size``)."""
    if isinstance(step_size, int | np.integer):
        return max(int(step_size), 1)
    m = _SIZE.match(step_size)
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"step size {step_size!r} is neither a number of entries nor a size like '64 MB'")
    row_bytes = max(sum(b.dtype.itemsize for b in layout), 1)
    return max(int(float(m.group(1)) * _UNITS[m.group(2)]) // row_bytes, 1)


def read_flat(path: str, tree: Any, names: Sequence[str], step_size: str | int, entry_stop: int | None = None
              ) -> Iterator[dict[str, Any]] | None:
    """Chunks of branches ``names`` of the uproot TTree ``tree`` of the local file ``path`` (about
    ``step_size`` each; the first ``entry_stop`` entries only, when given), or None when this reader does not
    handle them (then uproot reads them). Numeric branches are numpy arrays; string branches are read by
    uproot as awkward string arrays (for chunks made of the numeric branches' clusters; without a numeric
    branch uproot reads everything)."""
    strings = string_branches(tree, names)
    numeric = [n for n in names if n not in strings]
    layout = flat_layout(tree, numeric) if numeric else None
    if layout is None:
        return None
    step = step_entries(step_size, layout)  # with a limit, chunks of it: only its clusters are read
    chunks = cluster_chunks(layout, step if entry_stop is None else max(min(step, entry_stop), 1), step)
    if chunks is None:
        return None

    def read_strings(start: int, stop: int) -> dict[str, Any]:
        return tree.arrays(strings, entry_start=start, entry_stop=stop, library="ak", how=dict)

    return iterate_flat(path, layout, chunks, read_strings if strings else None, entry_stop)
