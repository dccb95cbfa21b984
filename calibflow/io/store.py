"""Compact columnar HDF5 store (h5py): one group of 1-D datasets plus JSON metadata, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import h5py
import hdf5plugin  # registers the Blosc filter of PREP_COMPRESSION for every reader of these files
import numpy as np

COLUMNS = "columns"
COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
PREP_COMPRESSION: dict[str, Any] = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
"""Prepared tuples: Blosc-LZ4 with bit shuffle, about 10x faster to write than gzip-1 for 5% more bytes
(docs/prep.md). Reading needs ``import hdf5plugin`` (done here)."""


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary sibling path; rename it to ``path`` only if the block succeeds."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class TableWriter:
    """Append chunks of named 1-D columns to an open HDF5 file (resizable, compressed datasets)."""

    def __init__(self, h5: h5py.File, chunk_rows: int = 65536, compression: Mapping[str, Any] | None = None) -> None:
        self._group = h5.require_group(COLUMNS)
        self._chunk = chunk_rows
        self._compression = dict(COMPRESSION if compression is None else compression)
        self.rows = 0

    def append(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append equal-length arrays; the first call fixes the column names and dtypes."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
        n = lengths.pop() if lengths else 0
        for name, values in columns.items():
            arr = np.ascontiguousarray(values)
            if name not in self._group:  # created holding the first chunk: 20% faster than resize + write
                data = arr if self.rows == 0 else np.concatenate([np.zeros(self.rows, arr.dtype), arr])
                self._group.create_dataset(name, data=data, maxshape=(None,), chunks=(self._chunk,),
                                           **self._compression)
                continue
            ds = self._group[name]
            ds.resize((self.rows + n,))
            ds[self.rows :] = arr
        self.rows += n

    def ensure(self, dtypes: Mapping[str, np.dtype]) -> None:
        """Create empty columns that were never appended (zero selected rows)."""
        for name, dtype in dtypes.items():
            if name not in self._group:
                self._group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(self._chunk,), **self._compression
                )


def write_metadata(h5: h5py.File, metadata: Mapping[str, Any]) -> None:
    """Store a JSON-serialisable mapping as the file attribute ``metadata``."""
    h5.attrs["metadata"] = json.dumps(metadata, sort_keys=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata stored by :func:`write_metadata`."""
    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs.get("metadata", "{}"))


def read_columns(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read named columns (all when ``names`` is None); a missing column raises KeyError naming the file.

    float32 columns (stored as read from float32 branches) come back as float64, exactly as every
    consumer computes with them."""
    with h5py.File(path, "r") as h5:
        group = h5[COLUMNS]
        wanted = list(group) if names is None else list(names)
        missing = [n for n in wanted if n not in group]
        if missing:
            raise KeyError(f"{path}: no column(s) {missing}; has {sorted(group)}")
        return {n: _widened(group[n]) for n in wanted}


def _widened(ds: h5py.Dataset) -> np.ndarray:
    """The values of ``ds``; float32 widened to float64 (exact)."""
    return ds.astype(np.float64)[...] if ds.dtype == np.float32 else ds[...]
