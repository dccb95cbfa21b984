"""ROOT files with uproot: writing TTrees (toys, tests, exports), the fastest ZLIB inflater for reading, and
the source reading ROOT files by URL (:class:`RemoteSource`)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import uproot

from calibflow.io.store import atomic_path


def write_ttree(
    path: str | os.PathLike[str],
    branches: Mapping[str, np.ndarray],
    tree: str = "DecayTree",
    compression: object | None = None,
    basket_rows: int = 200_000,
) -> None:
    """Write flat numpy branches as a TTree (not an RNTuple) to ``path``, atomically.

    ``compression`` is an uproot compression object (default ZLIB level 1); baskets hold
    ``basket_rows`` entries, as a typical production ntuple would.
    """
    write_ttrees(path, {tree: branches}, compression, basket_rows)


def write_ttrees(
    path: str | os.PathLike[str],
    trees: Mapping[str, Mapping[str, np.ndarray]],
    compression: object | None = None,
    basket_rows: int = 200_000,
) -> None:
    """Write several TTrees of flat numpy branches (tree name -> branches) to one file, atomically
    (as Belle II ntuples hold one tree per particle list); options as :func:`write_ttree`."""
    with atomic_path(path) as tmp, uproot.recreate(tmp, compression=compression or uproot.ZLIB(1)) as f:
        for tree, branches in trees.items():
            n = len(next(iter(branches.values()))) if branches else 0
            t = f.mktree(tree, {k: np.asarray(v).dtype for k, v in branches.items()})
            for start in range(0, max(n, 1), basket_rows):
                chunk = {k: np.asarray(v)[start : start + basket_rows] for k, v in branches.items()}
                if n:
                    t.extend(chunk)


def use_fast_zlib() -> str:
    """Let uproot inflate ZLIB baskets with libdeflate (the ``deflate`` package; about twice the speed of
    Python's zlib here, the same bytes) when it is installed; returns the inflater in use.

    uproot's own ``library = "deflate"`` option calls ``deflate.zlib_decompress`` with a keyword that
    deflate 0.9 renamed, so calibflow installs its own call on uproot's module-level ZLIB decompressor.
    """
    inflater = getattr(uproot.compression, "_decompress_ZLIB", None)
    if inflater is None or importlib.util.find_spec("deflate") is None:  # keep uproot's default
        return "zlib"
    inflater.decompress = _libdeflate_inflate
    return "libdeflate"


def use_default_zlib() -> None:
    """Undo :func:`use_fast_zlib`: uproot's own ZLIB inflater (Python's zlib) again."""
    inflater = getattr(uproot.compression, "_decompress_ZLIB", None)
    if inflater is not None and "decompress" in vars(inflater):
        del inflater.decompress


def _libdeflate_inflate(data: bytes, uncompressed_bytes: int | None = None) -> bytearray:
    """One ZLIB block of a basket inflated by libdeflate into ``uncompressed_bytes`` bytes."""
    import deflate

    if uncompressed_bytes is None:
        raise ValueError("zlib decompression requires the number of uncompressed bytes")
    return deflate.zlib_decompress(data, uncompressed_bytes)


class RemoteSource(uproot.source.fsspec.FSSpecSource):
    """uproot's fsspec source (byte ranges of many baskets in one request: vector reads for XRootD), with
    the offsets of single reads made Python ints: uproot passes numpy integers read from the file's basket
    tables, which the XRootD bindings refuse (``TypeError: integer argument expected for offset``)."""

    def chunk(self, start: int, stop: int) -> Any:
        """The bytes ``start:stop`` of the file, as uproot's chunk."""
        return super().chunk(int(start), int(stop))
