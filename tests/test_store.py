"""The columnar HDF5 store: TableWriter appends of any size give the concatenated columns, written in whole
compressed chunks, with per-dtype compression; errors for inconsistent appends."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibflow.io.store import (
    COLUMNS,
    PREP_COMPRESSION,
    PREP_FLAG_COMPRESSION,
    TableWriter,
    prep_compression,
    read_columns,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=8), chunk=st.integers(1, 300))
def test_appends_of_any_size_give_the_concatenation(tmp_path: Path, sizes: list[int], chunk: int) -> None:
    rng = np.random.default_rng(sum(sizes) + chunk)
    parts = [{"x": rng.normal(size=n), "k": rng.random(n) < 0.5, "f": rng.normal(size=n).astype(np.float32)}
             for n in sizes]
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as h5, TableWriter(h5, chunk_rows=chunk, compression=prep_compression) as w:
        for i, p in enumerate(parts):
            w.append(p)
            assert w.rows == sum(sizes[: i + 1])
    with h5py.File(path) as h5:
        assert h5[COLUMNS]["f"].dtype == np.float32 and h5[COLUMNS]["k"].dtype == np.bool_
    cols = read_columns(path)
    for k in ("x", "k", "f"):
        assert np.array_equal(cols[k], np.concatenate([p[k] for p in parts]))


def test_only_whole_chunks_are_written_before_the_flush(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as h5:
        w = TableWriter(h5, chunk_rows=100)
        w.append({"x": np.arange(250.0)})
        assert h5[COLUMNS]["x"].shape == (200,) and w.rows == 250
        w.append({"x": np.arange(30.0)})
        assert h5[COLUMNS]["x"].shape == (200,)
        w.flush()
        assert np.array_equal(h5[COLUMNS]["x"][...], np.concatenate([np.arange(250.0), np.arange(30.0)]))


def test_prepared_columns_compress_flags_with_bit_shuffle_and_numbers_with_byte_shuffle(tmp_path: Path) -> None:
    assert prep_compression(np.dtype(bool)) is PREP_FLAG_COMPRESSION
    assert prep_compression(np.dtype(np.float32)) is PREP_COMPRESSION
    with h5py.File(tmp_path / "t.h5", "w") as h5, TableWriter(h5, compression=prep_compression) as w:
        w.append({"k": np.ones(10, bool), "x": np.ones(10)})
    with h5py.File(tmp_path / "t.h5") as h5:
        opts = {k: h5[COLUMNS][k].id.get_create_plist().get_filter(0)[2] for k in ("k", "x")}
    shuffle = 5  # Blosc's filter options: 4 reserved values, level, shuffle (1 byte, 2 bit), compressor
    assert opts["k"][shuffle] == PREP_FLAG_COMPRESSION["compression_opts"][shuffle] == 2
    assert opts["x"][shuffle] == PREP_COMPRESSION["compression_opts"][shuffle] == 1


def test_a_column_first_seen_later_is_zero_before_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as h5, TableWriter(h5, chunk_rows=4) as w:
        w.append({"x": np.ones(6)})
        w.append({"x": np.ones(3), "y": np.full(3, 2.0)})
        with pytest.raises(ValueError, match=r"columns \['y'\] are missing"):
            w.append({"x": np.ones(2)})
        with pytest.raises(ValueError, match="different lengths"):
            w.append({"x": np.ones(2), "y": np.ones(3)})
    cols = read_columns(tmp_path / "t.h5")
    assert np.array_equal(cols["y"], [0.0] * 6 + [2.0] * 3) and np.array_equal(cols["x"], np.ones(9))
