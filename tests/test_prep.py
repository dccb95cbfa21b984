"""Tuple preparation on real ROOT files written with uproot: columns, cuts, cut flow, bad inputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from calibflow.config import parse_config
from calibflow.io.root import write_ttree
from calibflow.io.store import read_columns, read_metadata
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import MASS, PASS, PrepError, prep_spec

from .conftest import demo_dict


@pytest.fixture
def spec():
    d = demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["x.root"]
    return prep_spec(parse_config(d), "data")


def _write(path: Path, n: int = 5000, seed: int = 0, **extra: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    branches = {
        "Jpsi_M": rng.uniform(2900, 3300, n),
        "tag_PT": rng.exponential(2.0, n),
        "tag_isMuon": rng.integers(0, 2, n).astype(np.int32),
        "probe_P": rng.uniform(0, 100, n),
        "probe_ETA": rng.uniform(1.5, 5.5, n),
        "probe_Assoc": rng.integers(0, 2, n).astype(np.int32),
        "unused_1": rng.normal(size=n),
        "unused_2": rng.normal(size=n),
        "toy_true_eff": rng.uniform(size=n),
        "toy_is_signal": rng.integers(0, 2, n).astype(np.int32),
        **extra,
    }
    write_ttree(path, branches)
    return branches


def test_prepare_keeps_needed_columns_after_cuts(tmp_path: Path, spec) -> None:
    b = _write(tmp_path / "in.root")
    assert "unused_1" not in spec.branches and "probe_P" in spec.branches
    flow = prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "out.h5"), step_size=1000)
    tag = (b["tag_PT"] > 1.0) & (b["tag_isMuon"] == 1)
    probe = tag & (b["probe_P"] > 2) & (b["probe_ETA"] > 2) & (b["probe_ETA"] < 5)
    assert flow == {"read": 5000, "tag": int(tag.sum()), "probe": int(probe.sum())}
    cols = read_columns(tmp_path / "out.h5")
    assert set(cols) == {"p", "eta", MASS, PASS, "_true_eff", "_is_signal"}
    assert np.array_equal(cols["p"], b["probe_P"][probe])
    assert np.array_equal(cols[PASS], b["probe_Assoc"][probe] == 1)
    meta = read_metadata(tmp_path / "out.h5")
    assert meta["cutflow"] == flow and meta["source"]["size"] == (tmp_path / "in.root").stat().st_size


def test_chunking_does_not_change_the_result(tmp_path: Path, spec) -> None:
    _write(tmp_path / "in.root", n=20000)
    prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "a.h5"), step_size=777)
    prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "b.h5"), step_size="100 MB")
    a, b = read_columns(tmp_path / "a.h5"), read_columns(tmp_path / "b.h5")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_float32_branches_are_stored_as_float32_and_read_back_exactly(tmp_path: Path, spec) -> None:
    """A float32 branch (NanoAOD style) is stored in half the bytes and read back as the float64 values
    that converting it would give; float64 and derived columns stay float64."""
    b = _write(tmp_path / "in.root", n=3000)
    b["probe_ETA"] = b["probe_ETA"].astype(np.float32)
    write_ttree(tmp_path / "in32.root", b)
    prepare_file(str(tmp_path / "in32.root"), spec, str(tmp_path / "out.h5"))
    with h5py.File(tmp_path / "out.h5") as h5:
        assert h5["columns/eta"].dtype == np.float32 and h5["columns/p"].dtype == np.float64
    cols = read_columns(tmp_path / "out.h5")
    tag = (b["tag_PT"] > 1.0) & (b["tag_isMuon"] == 1)
    probe = tag & (b["probe_P"] > 2) & (b["probe_ETA"] > 2) & (b["probe_ETA"] < 5)
    assert cols["eta"].dtype == np.float64
    assert np.array_equal(cols["eta"], b["probe_ETA"][probe].astype(np.float64))


def test_missing_branch_names_file_and_branch(tmp_path: Path, spec) -> None:
    write_ttree(tmp_path / "in.root", {"Jpsi_M": np.ones(3)})
    with pytest.raises(PrepError, match=r"in.root: tree 'DecayTree' has no branch\(es\) .*probe_Assoc"):
        prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "out.h5"))
    assert not (tmp_path / "out.h5").exists()


def test_missing_tree_lists_trees(tmp_path: Path, spec) -> None:
    write_ttree(tmp_path / "in.root", {"x": np.ones(3)}, tree="Other")
    with pytest.raises(PrepError, match=r"no tree 'DecayTree' \(trees in file: Other\)"):
        prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "out.h5"))


def test_corrupt_and_missing_files(tmp_path: Path, spec) -> None:
    (tmp_path / "bad.root").write_bytes(b"not a root file at all" * 10)
    with pytest.raises(PrepError, match=r"bad\.root: cannot read as a ROOT file"):
        prepare_file(str(tmp_path / "bad.root"), spec, str(tmp_path / "out.h5"))
    with pytest.raises(PrepError, match=r"nope\.root: file not found"):
        prepare_file(str(tmp_path / "nope.root"), spec, str(tmp_path / "out.h5"))
    assert list(tmp_path.glob("out.h5*")) == []


def test_zero_entries(tmp_path: Path, spec) -> None:
    _write(tmp_path / "in.root", n=0)
    with pytest.raises(PrepError, match="zero entries"):
        prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / "out.h5"))


def test_libdeflate_inflates_zlib_baskets_to_the_same_arrays(tmp_path: Path) -> None:
    """With the fast inflater installed, uproot reads a ZLIB file through libdeflate (every block) and
    gets the arrays Python's zlib gives."""
    import uproot

    from calibflow.io import root

    rng = np.random.default_rng(3)
    branches = {"x": rng.normal(size=50_000), "n": rng.integers(0, 9, 50_000).astype(np.int32)}
    write_ttree(tmp_path / "z.root", branches, compression=uproot.ZLIB(4), basket_rows=7000)
    calls = []
    try:
        root.use_default_zlib()
        with uproot.open(tmp_path / "z.root") as f:
            slow = f["DecayTree"].arrays(["x", "n"], library="np")
        assert root.use_fast_zlib() == "libdeflate"
        inflate = root._libdeflate_inflate
        uproot.compression._decompress_ZLIB.decompress = lambda d, n=None: calls.append(n) or inflate(d, n)
        with uproot.open(tmp_path / "z.root") as f:
            fast = f["DecayTree"].arrays(["x", "n"], library="np")
    finally:
        root.use_default_zlib()
    assert len(calls) >= 2 * 50_000 // 7000
    assert all(np.array_equal(fast[k], slow[k]) and np.array_equal(fast[k], branches[k]) for k in branches)
