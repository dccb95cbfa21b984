"""Compact columnar HDF5 store (h5py): one group of 1-D datasets plus JSON metadata, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import h5py
import hdf5plugin  # registers the Blosc filter of PREP_COMPRESSION for every reader of these files
import numpy as np

from calibflow.io.integrity import h5_options, reading

COLUMNS = "columns"
COMPRESSION: dict[str, Any] = h5_options({"compression": "gzip", "compression_opts": 1, "shuffle": True})
"""Datasets of intermediates (and of calibflow's other HDF5 files): gzip-1 with byte shuffle, and a Fletcher32
checksum per chunk (:mod:`calibflow.io.integrity`), as every option set here."""
PREP_COMPRESSION: dict[str, Any] = h5_options(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
"""Prepared numeric columns: Blosc-LZ4 with byte shuffle. About 12x faster to write than gzip-1, and
Blosc compresses 2x faster with byte than with bit shuffle, for 2% more bytes (docs/prep.md). Reading
needs ``import hdf5plugin`` (done here)."""
PREP_FLAG_COMPRESSION: dict[str, Any] = h5_options(
    hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
"""Prepared boolean columns (pass decisions): bit shuffle packs them 8 to a byte before LZ4."""
Compression = Mapping[str, Any] | Callable[[np.dtype], Mapping[str, Any]]
"""Dataset compression options (h5py keywords), or a function of the column's dtype giving them."""


def prep_compression(dtype: np.dtype) -> Mapping[str, Any]:
    """Compression of a prepared column of ``dtype``: bit shuffle for booleans, byte shuffle otherwise."""
    return PREP_FLAG_COMPRESSION if np.dtype(dtype) == np.bool_ else PREP_COMPRESSION


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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (the writer of a ``<path>.tmp-<pid>``
    of :func:`atomic_path` may still be writing it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class TableWriter:
    """Append chunks of named 1-D columns to an open HDF5 file (resizable, compressed datasets).

    Rows are buffered and written in whole HDF5 chunks (``chunk_rows``), so that no compressed chunk is
    written twice; :meth:`flush` (or leaving the ``with`` block) writes the rest. ``rows`` counts every row
    appended, buffered or written.
    """

    def __init__(self, h5: h5py.File, chunk_rows: int = 65536, compression: Compression | None = None) -> None:
        self._group = h5.require_group(COLUMNS)
        self._chunk = chunk_rows
        self._compression = COMPRESSION if compression is None else compression
        self._pending: dict[str, list[np.ndarray]] = {}
        self._written = 0
        self.rows = 0

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.flush()

    def append(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append equal-length arrays; the first call fixes the column names and dtypes (a column first
        seen later holds zeros in the rows before)."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
        n = lengths.pop() if lengths else 0
        missing = [k for k in self._pending if k not in columns]
        if missing:
            raise ValueError(f"columns {missing} are missing from this chunk (every chunk needs every column)")
        for name, values in columns.items():
            values = np.asarray(values)
            if name not in self._pending:  # zeros for the buffered rows before
                self._pending[name] = [np.zeros(self.rows - self._written, values.dtype)] * (self.rows > self._written)
            self._pending[name].append(values)
        self.rows += n
        whole = (self.rows - self._written) // self._chunk * self._chunk
        if whole:
            self._write(whole)

    def flush(self) -> None:
        """Write every buffered row."""
        self._write(self.rows - self._written)

    def _write(self, n: int) -> None:
        """Write the first ``n`` buffered rows of every column (creating the columns, even with no rows);
        keep the rest buffered."""
        if n <= 0 and all(name in self._group for name in self._pending):
            return
        for name, parts in self._pending.items():
            values = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts))
            if name not in self._group:  # created holding its first rows: 20% faster than resize + write
                data = values[:n] if self._written == 0 else np.concatenate([np.zeros(self._written, values.dtype),
                                                                             values[:n]])
                self._group.create_dataset(name, data=data, maxshape=(None,), chunks=(self._chunk,),
                                           **self._options(data.dtype))
            else:
                ds = self._group[name]
                ds.resize((self._written + n,))
                ds[self._written :] = values[:n]
            self._pending[name] = [values[n:].copy()]  # the remainder alone: the big array is released
        self._written += n

    def ensure(self, dtypes: Mapping[str, np.dtype]) -> None:
        """Write the buffered rows and create empty columns that were never appended (zero selected rows)."""
        self.flush()
        for name, dtype in dtypes.items():
            if name not in self._group:
                self._group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(self._chunk,), **self._options(dtype)
                )

    def _options(self, dtype: np.dtype) -> Mapping[str, Any]:
        """Compression options of a column of ``dtype``."""
        return self._compression(dtype) if callable(self._compression) else self._compression


def write_metadata(h5: h5py.File, metadata: Mapping[str, Any]) -> None:
    """Store a JSON-serialisable mapping as the file attribute ``metadata``."""
    h5.attrs["metadata"] = json.dumps(metadata, sort_keys=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata stored by :func:`write_metadata` (CorruptIntermediate if the file is damaged)."""
    with reading(path), h5py.File(path, "r") as h5:
        return json.loads(h5.attrs.get("metadata", "{}"))


def read_columns(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read named columns (all when ``names`` is None); a missing column raises KeyError naming the file.

    float32 columns (stored as read from float32 branches) come back as float64, exactly as every
    consumer computes with them. A damaged file (truncated, a chunk failing its checksum) raises
    :class:`calibflow.io.integrity.CorruptIntermediate` naming it."""
    with reading(path), h5py.File(path, "r") as h5:
        group = h5[COLUMNS]
        wanted = list(group) if names is None else list(names)
        missing = [n for n in wanted if n not in group]
        if missing:
            raise KeyError(f"{path}: no column(s) {missing}; has {sorted(group)}")
        return {n: _widened(group[n]) for n in wanted}


def _widened(ds: h5py.Dataset) -> np.ndarray:
    """The values of ``ds``; float32 widened to float64 (exact)."""
    return ds.astype(np.float64)[...] if ds.dtype == np.float32 else ds[...]
