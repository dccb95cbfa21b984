"""Numeric TTree branches read basket by basket, straight from a memory-mapped local file (or, for a file
read by URL, from its baskets fetched chunk by chunk in one request each: :class:`FetchedBaskets`).

The basket tables come from :mod:`calibflow.io.tree_meta` (only the needed branches' metadata, flat or
jagged) or from uproot's parsed TTree (:func:`flat_layout`, flat branches only); this module only does the hot
loop of reading them: each needed basket's ROOT compression blocks are inflated with
uproot's own decompressors (libdeflate for ZLIB once :func:`calibflow.io.root.use_fast_zlib` ran; LZ4
blocks checksum-verified with xxhash as uproot does) and converted from big-endian once, into the chunk's
output array. That skips uproot's per-basket objects, copies and concatenation: about 30 % less CPU than
``TTree.arrays`` for the same columns (docs/prep.md), and the same values (tests/test_baskets.py). A jagged
branch's basket holds its values, then its entries' byte offsets: it becomes an awkward list array.

Chunks are unions of whole clusters (entry ranges at which every needed branch starts a new basket), so
no basket is inflated twice. String branches (``char*``, ``TString``, ``std::string``: uproot's
``AsStrings``) are read by uproot for the same entry ranges, as awkward string arrays, beside the numeric
ones. Branches this reader does not handle (object branches, custom interpretations, baskets
embedded in the TTree metadata of a file whose writer crashed) and trees whose clusters are too long for
bounded memory are left to uproot: :func:`flat_layout` and :func:`read_layout` return None for them.
"""

from __future__ import annotations

import mmap
import queue
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
_LAST = struct.Struct(">iB")
"""End of a basket's TKey: fLast (bytes of key and values: the entry offsets start there), a flag byte."""
_DECOMPRESSORS = {d._2byte: d for d in (uc._decompress_ZLIB, uc._decompress_LZMA, uc._decompress_LZ4, uc._decompress_ZSTD)}
MAX_CLUSTER_FACTOR = 4
"""A tree whose clusters exceed this many chunk sizes is read by uproot (which can split baskets)."""


@dataclass(frozen=True)
class FlatBranch:
    """Where the baskets of one numeric branch are: file offsets (bytes) of their TKeys, their sizes
    on disk (bytes, key included) and the entry range of each (``entries[i]:entries[i+1]``). A jagged
    branch (NanoAOD's ``Muon_pt[nMuon]``, from :mod:`calibflow.io.tree_meta`) names its ``counter`` leaf and
    its mean uncompressed bytes per entry (``row_bytes``)."""

    name: str
    dtype: np.dtype  # as stored: big-endian
    seeks: np.ndarray
    sizes: np.ndarray
    entries: np.ndarray
    counter: str | None = None
    row_bytes: float = 0.0


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

    def fetch(self, layout: Sequence[FlatBranch], start: int, stop: int) -> None:
        """Make the baskets of entries ``start:stop`` of ``layout`` readable (nothing to do: mapped)."""

    def release(self, layout: Sequence[FlatBranch], start: int, stop: int) -> None:
        """Forget the baskets of entries ``start:stop`` of ``layout``, read (nothing to do: mapped)."""

    def _bytes(self, seek: int, size: int, where: str) -> memoryview:
        """The ``size`` bytes at ``seek`` (a basket with its key)."""
        if seek < 0 or seek + size > len(self._map):
            raise ValueError(f"{where} lies beyond the end of the file ({len(self._map)} bytes): truncated?")
        return self._view[seek : seek + size]

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

    def read(self, branch: FlatBranch, start: int, stop: int) -> Any:
        """Entries ``start:stop`` of ``branch`` (bounds on its basket edges) as a native-endian array (an
        awkward list array for a jagged branch)."""
        first, last = _baskets(branch, start, stop)
        if branch.entries[first] != start or branch.entries[last] != stop:
            raise ValueError(f"branch {branch.name!r}: entries {start}:{stop} do not start and end on basket edges")
        if branch.counter is not None:
            return self._read_jagged(branch, first, last)
        out = np.empty(stop - start, branch.dtype.newbyteorder("="))
        for i in range(first, last):
            lo, hi = int(branch.entries[i]) - start, int(branch.entries[i + 1]) - start
            data, _ = self._basket(branch, i, (hi - lo) * branch.dtype.itemsize)
            out[lo:hi] = np.frombuffer(data, branch.dtype, count=hi - lo)
        return out

    def _read_jagged(self, branch: FlatBranch, first: int, last: int) -> Any:
        """Baskets ``first:last`` of the jagged ``branch`` as an awkward array (``var * dtype``): each basket
        holds the values, then its entries' byte offsets (counted from the key's start), turned into the
        array's offsets and checked by :func:`calibflow.kernels.jagged.entry_offsets`."""
        import awkward as ak

        from calibflow.kernels.jagged import entry_offsets

        size = branch.dtype.itemsize
        values, starts, keylens, borders = [], [], [], []
        for i in range(first, last):
            n = int(branch.entries[i + 1] - branch.entries[i])
            data, key = self._basket(branch, i, 0)
            keylen, border = len(key), _LAST.unpack_from(key, len(key) - _LAST.size)[0] - len(key)
            if n < 1 or len(data) < border + 4 * (n + 2):
                raise ValueError(f"branch {branch.name!r} basket {i}: bad entry offsets")
            starts.append(data[border + 4 : border + 4 + 4 * n])  # entries' byte offsets from the key's start
            values.append(np.frombuffer(data, branch.dtype, border // size))
            keylens.append(keylen)
            borders.append(border)
        offsets, bad = entry_offsets(np.frombuffer(b"".join(starts), ">i4").astype(np.int64),
                                     np.diff(branch.entries[first : last + 1]), np.asarray(keylens, np.int64),
                                     np.asarray(borders, np.int64), size)
        if bad >= 0:
            raise ValueError(f"branch {branch.name!r} basket {first + bad}: bad entry offsets")
        content = np.concatenate(values, dtype=branch.dtype.newbyteorder("="))  # one pass: joined and byte-swapped
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), ak.contents.NumpyArray(content)))

    def _basket(self, branch: FlatBranch, i: int, nbytes: int) -> tuple[Any, memoryview]:
        """The uncompressed bytes of basket ``i`` of ``branch`` (the first ``nbytes`` of a flat one, all of a
        jagged one) and its key."""
        seek, size = int(branch.seeks[i]), int(branch.sizes[i])
        where = f"branch {branch.name!r} basket {i} at byte {seek}"
        if size < _KEY.size:
            raise ValueError(f"{where}: {size} bytes, too short for a basket: truncated?")
        basket = self._bytes(seek, size, where)
        _, _, objlen, _, keylen = _KEY.unpack_from(basket, 0)
        if objlen < nbytes or not _LAST.size < keylen < size:
            raise ValueError(f"{where}: TKey says {objlen} bytes, {nbytes} expected")
        payload, end = basket[keylen:], nbytes if branch.counter is None else objlen
        if len(payload) == objlen:  # stored uncompressed
            return payload[:end], basket[:keylen]
        return memoryview(_inflate(payload, objlen, where))[:end], basket[:keylen]


class FetchedBaskets(BasketFile):
    """The baskets of a file read by URL, fetched chunk by chunk through uproot's ``source`` of it: one
    request per chunk for the byte ranges of all its baskets (fsspec-xrootd: a vector read), filled in the
    background, the next chunk's asked for while this one is read (:func:`iterate_flat`); two chunks of
    baskets held at most."""

    def __init__(self, source: Any, path: str) -> None:
        self.path, self._source = path, source
        self._fetched: dict[int, Any] = {}

    def close(self) -> None:
        """Drop the fetched baskets."""
        self._fetched = {}

    def fetch(self, layout: Sequence[FlatBranch], start: int, stop: int) -> None:
        """Ask for every basket of ``layout`` holding entries ``start:stop`` (returns before they arrive)."""
        ranges = sorted({(int(b.seeks[i]), int(b.seeks[i] + b.sizes[i]))
                         for b in layout for i in range(*_baskets(b, start, stop))})
        self._fetched.update((c.start, c) for c in self._source.chunks(ranges, notifications=queue.Queue()))

    def release(self, layout: Sequence[FlatBranch], start: int, stop: int) -> None:
        """Drop the baskets of entries ``start:stop``, read."""
        for b in layout:
            for i in range(*_baskets(b, start, stop)):
                self._fetched.pop(int(b.seeks[i]), None)

    def _bytes(self, seek: int, size: int, where: str) -> memoryview:
        chunk = self._fetched.get(seek)
        data = memoryview(chunk.raw_data) if chunk is not None else None  # waits until it arrived
        if data is None or len(data) < size:
            raise ValueError(f"{where}: not fetched with its chunk, or shorter than {size} bytes: truncated?")
        return data[:size]


def _baskets(branch: FlatBranch, start: int, stop: int) -> tuple[int, int]:
    """First and end index of the baskets of ``branch`` holding entries ``start:stop`` (basket edges)."""
    first, last = np.searchsorted(branch.entries, [start, stop])
    return int(first), int(last)


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
                 others: Callable[[int, int], dict[str, Any]] | None = None, entry_stop: int | None = None,
                 source: Any = None) -> Iterator[dict[str, Any]]:
    """The branches of ``layout`` in the file at ``path``, one dict (name -> native array) per chunk, with
    ``others(start, stop)`` (more branches of the same entries) added; entries from ``entry_stop`` on are
    left out (the chunk holding it is read whole, then cut). ``source``: uproot's source of a file read by
    URL, which fetches each chunk's baskets (:class:`FetchedBaskets`); else the local file is mapped."""
    todo = [(start, stop) for start, stop in chunks if entry_stop is None or start < entry_stop]
    with BasketFile(path) if source is None else FetchedBaskets(source, path) as f:
        for k, (start, stop) in enumerate(todo):
            for ahead in todo[k : k + 2] if k == 0 else todo[k + 1 : k + 2]:  # this chunk's, then the next's
                f.fetch(layout, *ahead)
            out: dict[str, Any] = {b.name: f.read(b, start, stop) for b in layout}
            f.release(layout, start, stop)
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
    row_bytes = max(sum(max(b.dtype.itemsize, b.row_bytes) for b in layout), 1)
    return max(int(float(m.group(1)) * _UNITS[m.group(2)]) // row_bytes, 1)


def read_flat(path: str, tree: Any, names: Sequence[str], step_size: str | int, entry_stop: int | None = None,
              source: Any = None) -> Iterator[dict[str, Any]] | None:
    """Chunks of branches ``names`` of the uproot TTree ``tree`` of the local file ``path`` (about
    ``step_size`` each; the first ``entry_stop`` entries only, when given), or None when this reader does not
    handle them (then uproot reads them). Numeric branches are numpy arrays; string branches are read by
    uproot as awkward string arrays (for chunks made of the numeric branches' clusters; without a numeric
    branch uproot reads everything). ``source``: uproot's source of a file read by URL (``path``), through
    which each chunk's baskets are fetched in one request."""
    strings = string_branches(tree, names)
    numeric = [n for n in names if n not in strings]
    layout = flat_layout(tree, numeric) if numeric else None
    if layout is None:
        return None

    def read_strings(start: int, stop: int) -> dict[str, Any]:
        return tree.arrays(strings, entry_start=start, entry_stop=stop, library="ak", how=dict)

    return read_layout(path, layout, step_size, entry_stop, source, read_strings if strings else None)


def read_layout(path: str, layout: Sequence[FlatBranch], step_size: str | int, entry_stop: int | None = None,
                source: Any = None, others: Callable[[int, int], dict[str, Any]] | None = None
                ) -> Iterator[dict[str, Any]] | None:
    """Chunks of the branches of ``layout`` (about ``step_size`` each, made of whole clusters; the first
    ``entry_stop`` entries only, when given) of the file ``path`` (``source``: as :func:`iterate_flat`), with
    ``others``; None when a cluster is too long for bounded memory (then uproot reads them)."""
    step = step_entries(step_size, layout)  # with a limit, chunks of it: only its clusters are read
    chunks = cluster_chunks(layout, step if entry_stop is None else max(min(step, entry_stop), 1), step)
    if chunks is None:
        return None
    return iterate_flat(path, layout, chunks, others, entry_stop, source)
