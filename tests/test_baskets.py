"""prep's own reader of flat TTree branches (calibflow.io.baskets) against uproot's TTree.arrays, on real
ROOT files written with uproot: every compression algorithm, dtypes, basket and chunk sizes, bad files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import uproot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibflow.io.baskets import FlatBranch, cluster_chunks, flat_layout, iterate_flat, step_entries
from calibflow.io.root import use_fast_zlib, write_ttree

DTYPES = ["f8", "f4", "i8", "i4", "i2", "u1", "?", "u8"]
COMPRESSIONS = {"zlib": uproot.ZLIB(1), "lz4": uproot.LZ4(1), "lzma": uproot.LZMA(1), "zstd": uproot.ZSTD(1),
                "none": None}


def _branches(rng: np.random.Generator, n: int, dtypes: list[str]) -> dict[str, np.ndarray]:
    """One branch per dtype: half compressible (repeated small values), half random."""
    out = {}
    for i, dt in enumerate(dtypes):
        if dt == "?":
            out[f"b{i}"] = rng.random(n) < 0.3
        elif dt.startswith("f"):
            out[f"b{i}"] = rng.normal(0, 1e3, n).astype(dt)
        else:
            out[f"b{i}"] = rng.integers(0, 100 if i % 2 else np.iinfo(dt).max, n, dtype=dt)
    return out


def _write(path: Path, branches: dict[str, np.ndarray], compression: object, basket_rows: int) -> None:
    if compression is None:  # write_ttree defaults to ZLIB; uncompressed baskets need the writer's option
        with uproot.recreate(path, compression=None) as f:
            tree = f.mktree("DecayTree", {k: v.dtype for k, v in branches.items()})
            n = len(next(iter(branches.values())))
            for start in range(0, n, basket_rows):
                tree.extend({k: v[start : start + basket_rows] for k, v in branches.items()})
    else:
        write_ttree(path, branches, compression=compression, basket_rows=basket_rows)


def _read_all(path: Path, names: list[str], step_rows: int) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """Every chunk of ``names`` read by the basket reader, concatenated; also the chunk ranges."""
    with uproot.open(path) as f:
        layout = flat_layout(f["DecayTree"], names)
    assert layout is not None
    chunks = cluster_chunks(layout, step_rows)
    assert chunks is not None
    parts = list(iterate_flat(str(path), layout, chunks))
    assert [len(p[names[0]]) for p in parts] == [b - a for a, b in chunks]
    return {k: np.concatenate([p[k] for p in parts]) for k in names}, chunks


def _assert_same(ours: dict[str, np.ndarray], path: Path) -> None:
    with uproot.open(path) as f:
        ref = f["DecayTree"].arrays(list(ours), library="np")
    for k, v in ours.items():
        assert v.dtype == ref[k].dtype and v.dtype.isnative, k
        assert np.array_equal(v, ref[k]), k


@pytest.mark.parametrize("name", list(COMPRESSIONS))
def test_every_compression_reads_the_same_as_uproot(name: str, tmp_path: Path) -> None:
    use_fast_zlib()
    path = tmp_path / f"{name}.root"
    branches = _branches(np.random.default_rng(1), 25_000, DTYPES)
    _write(path, branches, COMPRESSIONS[name], basket_rows=7_000)
    ours, chunks = _read_all(path, list(branches), step_rows=10_000)
    assert chunks == [(0, 14_000), (14_000, 25_000)]  # whole baskets, about 10k entries each
    _assert_same(ours, path)
    assert all(np.array_equal(ours[k], v) for k, v in branches.items())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3000), basket_rows=st.integers(1, 900), step_rows=st.integers(1, 4000),
       dtypes=st.lists(st.sampled_from(DTYPES), min_size=1, max_size=4),
       compression=st.sampled_from(["zlib", "lz4", "none"]), seed=st.integers(0, 2**16))
def test_random_files_and_chunks_read_the_same_as_uproot(tmp_path: Path, n: int, basket_rows: int, step_rows: int,
                                                         dtypes: list[str], compression: str, seed: int) -> None:
    path = tmp_path / "random.root"
    branches = _branches(np.random.default_rng(seed), n, dtypes)
    _write(path, branches, COMPRESSIONS[compression], basket_rows)
    with uproot.open(path) as f:
        layout = flat_layout(f["DecayTree"], list(branches))
    chunks = cluster_chunks(layout, step_rows)
    if min(basket_rows, n) > 4 * step_rows:  # clusters too long for bounded memory: left to uproot
        assert chunks is None
        return
    ours, chunks = _read_all(path, list(branches), step_rows)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a == b for (_, a), (b, _) in itertools.pairwise(chunks))  # contiguous
    _assert_same(ours, path)


def test_a_basket_of_several_compression_blocks(tmp_path: Path) -> None:
    """ROOT splits a basket into blocks of at most 16 MiB; 20 MB of float64 make two."""
    use_fast_zlib()
    path = tmp_path / "big.root"
    x = np.random.default_rng(2).normal(size=2_500_000)
    write_ttree(path, {"x": x}, basket_rows=2_500_000)
    ours, _ = _read_all(path, ["x"], step_rows=2_500_000)
    assert np.array_equal(ours["x"], x)


def _layout(name: str, entries: list[int]) -> FlatBranch:
    k = len(entries) - 1
    return FlatBranch(name, np.dtype(">f8"), np.zeros(k, np.int64), np.zeros(k, np.int64), np.array(entries))


def test_chunks_end_only_where_every_branch_starts_a_basket() -> None:
    layout = [_layout("a", [0, 100, 200, 300, 400]), _layout("b", [0, 150, 200, 350, 400])]
    assert cluster_chunks(layout, 50) == [(0, 200), (200, 400)]
    assert cluster_chunks(layout, 300) == [(0, 400)]
    assert cluster_chunks(layout, 49) is None  # a 200-entry cluster is over 4 chunks of 49


def test_flat_layout_leaves_jagged_and_fixed_size_array_branches_to_uproot(tmp_path: Path) -> None:
    path = tmp_path / "shapes.root"
    import awkward as ak

    data = {"x": np.arange(10.0), "v": np.ones((10, 3)), "j": ak.Array([[1.0]] * 10)}
    with uproot.recreate(path) as f:
        f.mktree("DecayTree", {"x": "f8", "v": ("f8", (3,)), "j": "var * float64"}).extend(data)
    with uproot.open(path) as f:
        tree = f["DecayTree"]
        assert flat_layout(tree, ["x"]) is not None
        assert flat_layout(tree, ["x", "v"]) is None
        assert flat_layout(tree, ["j"]) is None


def _basket_position(path: Path, branch: str) -> tuple[int, int]:
    with uproot.open(path) as f:
        b = f["DecayTree"][branch]
        return int(b.member("fBasketSeek")[0]), int(b.member("fBasketBytes")[0])


@pytest.mark.parametrize("compression", ["zlib", "lz4"])
def test_a_damaged_basket_raises_naming_branch_and_basket(compression: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.root"
    write_ttree(path, {"x": np.arange(50_000) % 7 * 1.0}, compression=COMPRESSIONS[compression])
    seek, size = _basket_position(path, "x")
    raw = bytearray(path.read_bytes())
    raw[seek + size - 200 : seek + size - 100] = bytes(range(100))
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception, match=r"basket|checksum|[Dd]ecompress|corrupt|inflate") as info:
        _read_all(path, ["x"], step_rows=50_000)
    if compression == "lz4":
        assert "branch 'x' basket 0" in str(info.value) and "checksum" in str(info.value)


def test_a_truncated_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cut.root"
    write_ttree(path, {"x": np.random.default_rng(3).normal(size=50_000)})
    with uproot.open(path) as f:
        layout = flat_layout(f["DecayTree"], ["x"])
    seek, size = _basket_position(path, "x")
    path.write_bytes(path.read_bytes()[: seek + size // 2])
    with pytest.raises(ValueError, match=r"branch 'x' basket 0 at byte \d+ lies beyond the end of the file"):
        list(iterate_flat(str(path), layout, [(0, 50_000)]))


def test_step_sizes_in_entries_or_bytes() -> None:
    layout = [_layout("a", [0, 10]), FlatBranch("b", np.dtype(">i4"), *(np.zeros(1, np.int64),) * 2, np.array([0, 10]))]
    assert step_entries(1000, layout) == 1000
    assert step_entries("64 MB", layout) == 64_000_000 // 12
    assert step_entries("1 MiB", layout) == 2**20 // 12
    assert step_entries("2.4e3 B", layout) == 200
    assert step_entries("1 B", layout) == 1
    with pytest.raises(ValueError, match="neither a number of entries nor a size"):
        step_entries("64 parsecs", layout)
