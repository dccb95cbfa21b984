"""calibflow.io.tree_meta (the needed branches' metadata read from the TTree record by hand) against uproot's
full TTree, on real ROOT files written with uproot: flat, jagged, NanoAOD-, LHCb- and Belle II-like toys,
every compression; and prep using it without uproot's TTree, giving the same prepared files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibflow.config import load_config, parse_config
from calibflow.io.baskets import read_layout
from calibflow.io.root import RemoteSource, use_fast_zlib, write_ttrees
from calibflow.io.store import read_columns, read_metadata
from calibflow.io.tree_meta import read_tree_meta
from calibflow.prep import prepare
from calibflow.prep.spec import prep_spec
from calibflow.toys.belle2 import write_v0_file
from calibflow.toys.lhcb import write_tracking_file
from calibflow.toys.nanoaod import write_tree, write_z_mumu_file

from .xrootd_server import XRootDServer, running_server

COMPRESSIONS = {"zlib": uproot.ZLIB(1), "lzma": uproot.LZMA(1), "zstd": uproot.ZSTD(1), "lz4": uproot.LZ4(1),
                "none": None}


def _handled_by_uproot_terms(branch: Any) -> bool:
    """Whether uproot reads ``branch`` as one number per entry or a plain jagged list of numbers."""
    interp = branch.interpretation
    if isinstance(interp, uproot.AsJagged):
        if interp.header_bytes:
            return False
        interp = interp.content
    return type(interp) is uproot.AsDtype and not interp.from_dtype.shape and not interp.from_dtype.fields


def assert_same_as_uproot(path: Path, tree: str, step: int = 5000) -> list[str]:
    """Every branch of ``tree`` this reader handles has uproot's metadata and arrays; the others (and only
    they) give None. Returns the names handled."""
    use_fast_zlib()
    with uproot.open(path) as f:
        t = f[tree]
        names = t.keys(recursive=False)
        handled = []
        for name in names:
            meta = read_tree_meta(f, tree, [name])
            b = t[name]
            assert (meta is not None) == _handled_by_uproot_terms(b), name
            if meta is None:
                continue
            handled.append(name)
            (ours,) = meta.branches
            n = b._num_normal_baskets
            assert meta.entries == t.num_entries and ours.name == name
            assert np.array_equal(ours.seeks, b.member("fBasketSeek")[:n]), name
            assert np.array_equal(ours.sizes, b.member("fBasketBytes")[:n]), name
            assert np.array_equal(ours.entries, b.member("fBasketEntry")[: n + 1]), name
            jagged = isinstance(b.interpretation, uproot.AsJagged)
            dtype = (b.interpretation.content if jagged else b.interpretation).from_dtype
            assert ours.dtype == dtype, name
            assert ours.counter == (b.count_leaf.member("fName") if jagged else None), name
        assert handled
        meta = read_tree_meta(f, tree, handled)  # all at once, in this order
        assert meta is not None and [b.name for b in meta.branches] == handled
        ref = t.arrays(handled, library="ak", how=dict)
    chunks = read_layout(str(path), meta.branches, step)
    assert chunks is not None
    parts = list(chunks)
    for name in handled:
        got = ak.concatenate([ak.Array(p[name]) for p in parts])
        assert got.type == ref[name].type and ak.array_equal(got, ref[name]), name
        flat = [p[name] for p in parts if not isinstance(p[name], ak.Array)]
        assert all(v.dtype.isnative for v in flat), name
    return handled


def _nano_like(path: Path, compression: object, n: int = 6000, seed: int = 0) -> None:
    """Flat branches of every leaf type, two collections (jagged, counters ``nMuon``/``nJet``), an empty one."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, n)
    m = int(counts.sum())

    def jag(values: np.ndarray, c: np.ndarray = counts) -> ak.Array:
        return ak.unflatten(values, c)

    jet_counts = rng.integers(0, 7, n)
    k = int(jet_counts.sum())
    branches = {
        "run": rng.integers(1, 9, n).astype("u4"), "luminosityBlock": rng.integers(0, 2**31, n).astype("u4"),
        "event": rng.integers(0, 2**63, n, dtype="u8"), "HLT_IsoMu24": rng.random(n) < 0.5,
        "MET_pt": rng.exponential(30, n).astype("f4"), "PV_npvs": rng.integers(0, 60, n).astype("u1"),
        "Flag_x": rng.integers(-3, 3, n).astype("i1"), "L1_s": rng.integers(-300, 300, n).astype("i2"),
        "genWeight": rng.normal(1, 0.1, n), "big": rng.integers(-(2**40), 2**40, n),
        "Muon": ak.zip({"pt": jag(rng.exponential(20, m).astype("f4")),
                        "charge": jag(rng.choice([-1, 1], m).astype("i4")),
                        "tightId": jag(rng.random(m) < 0.8), "jetIdx": jag(rng.integers(-1, 5, m).astype("i2")),
                        "dxy": jag(rng.normal(0, 0.01, m))}),
        "Jet": ak.zip({"pt": jag(rng.exponential(40, k).astype("f4"), jet_counts),
                       "btag": jag(rng.integers(0, 255, k).astype("u1"), jet_counts)}),
        "Tau": ak.zip({"pt": jag(np.zeros(0, "f4"), np.zeros(n, np.int64))}),
    }
    write_tree(path, branches, basket_rows=1700, compression=compression)


@pytest.mark.parametrize("name", list(COMPRESSIONS))
def test_nanoaod_like_files_of_every_compression(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.root"
    if COMPRESSIONS[name] is None:  # write_tree's default is the toys' ZSTD: uncompressed through uproot itself
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("calibflow.toys.nanoaod.TOY_COMPRESSION", None)
            _nano_like(path, None)
    else:
        _nano_like(path, COMPRESSIONS[name])
    handled = assert_same_as_uproot(path, "Events", step=2500)
    assert {"nMuon", "Muon_pt", "Muon_tightId", "Jet_btag", "nTau", "Tau_pt", "event", "big"} <= set(handled)
    with uproot.open(path) as f:
        meta = read_tree_meta(f, "Events", ["Muon_pt", "run"])
        assert meta is not None and meta.jagged and meta.branches[0].counter == "nMuon"
        assert meta.branches[0].row_bytes > 0 and not read_tree_meta(f, "Events", ["run"]).jagged


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 2000), basket_rows=st.integers(1, 700), step_rows=st.integers(200, 3000),
       max_count=st.integers(0, 6), compression=st.sampled_from(["zlib", "lz4", "zstd"]), seed=st.integers(0, 999))
def test_random_jagged_files_and_chunks_read_the_same_as_uproot(tmp_path: Path, n: int, basket_rows: int,
                                                                step_rows: int, max_count: int, compression: str,
                                                                seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_count + 1, n)
    m = int(counts.sum())
    write_tree(tmp_path / "j.root", {"x": rng.random(n), "Muon": ak.zip({
        "pt": ak.unflatten(rng.random(m).astype("f4"), counts), "id": ak.unflatten(rng.integers(0, 9, m), counts)})},
        basket_rows=basket_rows, compression=COMPRESSIONS[compression])
    if min(basket_rows, n) > 4 * step_rows:
        return
    assert set(assert_same_as_uproot(tmp_path / "j.root", "Events", step_rows)) == {"x", "nMuon", "Muon_pt", "Muon_id"}


def test_nanoaod_toy(tmp_path: Path) -> None:
    write_z_mumu_file(str(tmp_path / "z.root"), 5000, True, 3)
    assert "Muon_pt" in assert_same_as_uproot(tmp_path / "z.root", "Events")


def test_lhcb_like_toy(tmp_path: Path) -> None:
    write_tracking_file(str(tmp_path / "lhcb.root"), 4000, True, 4)
    assert len(assert_same_as_uproot(tmp_path / "lhcb.root", "DecayTree")) > 5


@pytest.mark.parametrize("name", ["zlib", "lz4"])
def test_belle2_like_toy_and_lhcb_tuple_folder(name: str, tmp_path: Path) -> None:
    write_v0_file(str(tmp_path / "b2.root"), 3000, True, 5)
    assert_same_as_uproot(tmp_path / "b2.root", "Lambda0")
    assert_same_as_uproot(tmp_path / "b2.root", "K_S0")
    rng = np.random.default_rng(6)
    write_ttrees(tmp_path / "lhcb.root", {"Tuple/DecayTree": {"Jpsi_M": rng.normal(3097, 15, 9000),
                                                              "nTracks": rng.integers(0, 400, 9000).astype("i4")}},
                 COMPRESSIONS[name], basket_rows=2000)
    assert assert_same_as_uproot(tmp_path / "lhcb.root", "Tuple/DecayTree", step=3000) == ["Jpsi_M", "nTracks"]


def test_many_branches_are_skipped_after_their_names(tmp_path: Path) -> None:
    """Leaf classes first written inside a skipped branch are found by their tag; the last branch too."""
    rng = np.random.default_rng(7)
    n = 500
    branches: dict[str, Any] = {f"pad{i}": rng.random(n).astype(["f4", "f8", "i4", "?"][i % 4]) for i in range(300)}
    branches["Muon"] = ak.zip({"pt": ak.unflatten(rng.random(3 * n).astype("f4"), np.full(n, 3))})
    branches["last"] = rng.integers(0, 9, n).astype("i8")
    write_tree(tmp_path / "wide.root", branches, basket_rows=200, compression=uproot.ZLIB(1))
    with uproot.open(tmp_path / "wide.root") as f:
        meta = read_tree_meta(f, "Events", ["last", "Muon_pt", "pad299"])
        ref = f["Events"].arrays(["last", "Muon_pt", "pad299"], library="ak", how=dict)
    assert meta is not None and [b.name for b in meta.branches] == ["last", "Muon_pt", "pad299"]
    parts = list(read_layout(str(tmp_path / "wide.root"), meta.branches, 10**6))
    assert len(parts) == 1 and all(ak.array_equal(ak.Array(parts[0][k]), ref[k]) for k in ref)


def test_what_it_does_not_handle_is_left_to_uproot(tmp_path: Path) -> None:
    path = tmp_path / "shapes.root"
    data = {"x": np.arange(10.0), "v": np.ones((10, 3)), "s": ["a", "bc"] * 5}
    with uproot.recreate(path) as f:
        f.mktree("DecayTree", {"x": "f8", "v": ("f8", (3,)), "s": "string"}).extend(data)
        f["h"] = np.histogram(np.arange(5.0), bins=3)
    with uproot.open(path) as f:
        assert read_tree_meta(f, "DecayTree", ["x"]) is not None
        assert read_tree_meta(f, "DecayTree", ["x", "v"]) is None  # fixed-size array
        assert read_tree_meta(f, "DecayTree", ["s"]) is None  # strings
        assert read_tree_meta(f, "DecayTree", ["x", "nope"]) is None  # missing: uproot names it
        assert read_tree_meta(f, "Nope", ["x"]) is None
        assert read_tree_meta(f, "h", ["x"]) is None  # not a TTree


# --- prep -----------------------------------------------------------------------------------------
def _flat_spec(tmp_path: Path) -> Any:
    config = {
        "name": "flat",
        "samples": {"data": {"role": "data", "files": ["in.root"], "tree": "DecayTree", "method": "count"}},
        "selection": {"probe": "probe_P > 2 and probe_ETA < 4.5"},
        "pass": "probe_ok == 1",
        "mass": {"variable": "Jpsi_M", "range": [3000, 3200]},
        "binning": {"variables": [{"name": "p", "expression": "probe_P", "edges": [2, 10, 100]}]},
    }
    return prep_spec(parse_config(config), "data", str(tmp_path))


def _prepared(path: Path, spec: Any, out: Path) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    flow = prepare.prepare_file(str(path), spec, str(out), step_size=3000)
    assert read_metadata(out)["cutflow"] == flow
    return flow, read_columns(out)


def test_prep_reads_only_the_needed_metadata_and_gives_uproots_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    write_ttrees(tmp_path / "in.root", {"DecayTree": {
        "probe_P": rng.exponential(10, n), "probe_ETA": rng.uniform(1.5, 5, n).astype("f4"),
        "probe_ok": rng.integers(0, 2, n).astype("i4"), "Jpsi_M": rng.normal(3097, 30, n),
        **{f"other{i}": rng.random(n) for i in range(40)}}}, uproot.LZ4(1), basket_rows=4000)
    spec = _flat_spec(tmp_path)
    with monkeypatch.context() as mp:
        mp.setattr(prepare, "_tree", None)  # uproot's TTree is never made
        ours = _prepared(tmp_path / "in.root", spec, tmp_path / "ours.h5")
    with monkeypatch.context() as mp:
        mp.setattr("calibflow.io.tree_meta.read_tree_meta", lambda *a: None)
        ref = _prepared(tmp_path / "in.root", spec, tmp_path / "ref.h5")
    assert ours[0] == ref[0] and 0 < ours[0]["probe"] < n
    assert ours[1].keys() == ref[1].keys()
    assert all(ours[1][k].dtype == ref[1][k].dtype and np.array_equal(ours[1][k], ref[1][k]) for k in ref[1])


def test_prep_of_an_empty_tree_says_so(tmp_path: Path) -> None:
    write_ttrees(tmp_path / "in.root", {"DecayTree": {k: np.zeros(0, "f8") for k in
                                                      ("probe_P", "probe_ETA", "probe_ok", "Jpsi_M")}})
    with pytest.raises(prepare.PrepError, match="has zero entries"):
        prepare.prepare_file(str(tmp_path / "in.root"), _flat_spec(tmp_path), str(tmp_path / "o.h5"))


@pytest.fixture
def server() -> Iterator[XRootDServer]:
    yield from running_server()


def test_a_remote_nanoaod_file_reads_its_metadata_and_baskets_through_the_server(
        server: XRootDServer, tmp_path: Path) -> None:
    """The TTree record and the baskets of a file read by URL come through uproot's remote source; the jagged
    collections and the prepared file are the local ones."""
    local = tmp_path / "z.root"
    write_z_mumu_file(str(local), 4000, False, 9, pad_to=300)
    url = server.put("store/z.root", local)
    spec = prep_spec(load_config(Path(__file__).parents[1] / "task_configs" / "cms_muon_id_z.yaml"), "mc")
    names = list(spec.branches)
    with uproot.open(local) as f, uproot.open(url, handler=RemoteSource) as g:
        here, there = read_tree_meta(f, "Events", names), read_tree_meta(g, "Events", names)
        assert here is not None and there is not None and here.jagged and here.entries == there.entries
        for x, y in zip(here.branches, there.branches, strict=True):
            assert (x.name, x.dtype, x.counter) == (y.name, y.dtype, y.counter)
            assert all(np.array_equal(getattr(x, k), getattr(y, k)) for k in ("seeks", "sizes", "entries"))
        a = list(read_layout(str(local), here.branches, 1000))
        b = list(read_layout(url, there.branches, 1000, source=g.file.source))
    assert len(a) == len(b) >= 1
    assert all(ak.array_equal(ak.Array(x[k]), ak.Array(y[k])) for x, y in zip(a, b, strict=True) for k in x)
    outputs = {}
    for name, source in (("local", str(local)), ("root", url)):
        prepare.prepare_file(source, spec, str(tmp_path / f"{name}.h5"))
        outputs[name] = read_columns(tmp_path / f"{name}.h5")
    assert outputs["local"].keys() == outputs["root"].keys()
    assert all(np.array_equal(outputs["local"][k], outputs["root"][k]) for k in outputs["local"])
    fetched = read_metadata(tmp_path / "root.h5")["fetched"]
    assert fetched["bytes"] < 0.5 * local.stat().st_size  # the needed baskets and the record, not the file


@pytest.mark.parametrize(("shift", "what"), [(3, "an offset inside a value"), (-16, "an offset going back")])
def test_damaged_entry_offsets_of_a_jagged_branch_are_refused(tmp_path: Path, shift: int, what: str) -> None:
    """A jagged basket's entry offsets (after its values) that do not fall on value boundaries, or run backwards,
    are an error naming the branch and basket, not wrong rows."""
    path = tmp_path / "jagged.root"
    pt = ak.Array([[1.0, 2.0], [3.0], [], [4.0, 5.0, 6.0]] * 100)
    write_tree(path, {"Muon": ak.zip({"pt": pt})}, compression=uproot.ZLIB(0))  # level 0: stored uncompressed
    with uproot.open(path) as f:
        seek = int(f["Events"]["Muon_pt"].member("fBasketSeek")[0])
    raw = bytearray(path.read_bytes())
    keylen = int.from_bytes(raw[seek + 14 : seek + 16], "big")
    at = seek + keylen + 600 * 8 + 4 + 4 * 2  # the third entry's offset, after the 600 values and the count
    raw[at : at + 4] = (int.from_bytes(raw[at : at + 4], "big") + shift).to_bytes(4, "big")
    path.write_bytes(bytes(raw))
    with uproot.open(path) as f:
        meta = read_tree_meta(f, "Events", ["Muon_pt"])
    assert meta is not None and meta.branches[0].counter == "nMuon"
    with pytest.raises(ValueError, match=r"branch 'Muon_pt' basket 0: bad entry offsets"):
        list(read_layout(str(path), meta.branches, 10_000))  # type: ignore[arg-type]
