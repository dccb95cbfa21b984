"""Verified intermediates (issue 17, item 2): checksums of every HDF5 and JSON intermediate, checked when read
and (size and header) when a stage asks whether its outputs exist; corrupt files are named, removed and
rebuilt in the same run; ``calibflow verify`` checks a whole result folder."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibflow.io import jsonio
from calibflow.io.integrity import (
    DIGEST,
    LIBVER,
    CorruptIntermediate,
    check_full,
    check_quick,
    folder_files,
    intermediates,
    seal_text,
)
from calibflow.io.store import TableWriter, prep_compression, read_columns
from calibflow.plan import Plan
from tasks import ExportTables
from tasks.cli import main
from tasks.runner import build

from .conftest import tiny_demo_dict

COMPARED = ("efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json")
KEPT = ("prep", "hists", "fits", "binning", "inputs", "logs")
"""Folders of a working folder kept when the tests remove the rest (tables, exports, published files)."""


# --- damage --------------------------------------------------------------------------------------------
def flip_in_chunk(path: str | Path, dataset: str) -> None:
    """Flip one bit in the middle of the first stored chunk of ``dataset`` (its compressed data)."""
    with h5py.File(path, "r") as h5:
        info = h5[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))


def truncate(path: str | Path, n: int = 1000) -> None:
    """Cut the last ``n`` bytes of ``path``."""
    os.truncate(path, os.path.getsize(path) - n)


def change_digit(path: str | Path, after: str = '"efficiency": ') -> None:
    """Change one digit (the first from the third character after ``after``) of a text file: same size, still
    valid JSON or CSV."""
    raw = bytearray(Path(path).read_bytes())
    i = raw.index(after.encode()) + len(after) + 2
    while not chr(raw[i]).isdigit():
        i += 1
    raw[i] = ord(str((int(chr(raw[i])) + 1) % 10))
    Path(path).write_bytes(bytes(raw))


# --- unit: HDF5 ----------------------------------------------------------------------------------------
def _table(path: Path, rows: int = 200_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    cols = {"mass": rng.normal(3.1, 0.05, rows), "pass": rng.random(rows) < 0.9}
    with h5py.File(path, "w", libver=LIBVER) as h5, TableWriter(h5, compression=prep_compression) as w:
        w.append(cols)
    return cols


def test_prepared_table_carries_checksums_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    cols = _table(path)
    check_quick(path)
    check_full(path)
    with h5py.File(path, "r") as h5:
        assert all(ds.fletcher32 for ds in h5["columns"].values())
    np.testing.assert_array_equal(read_columns(path)["mass"], cols["mass"])


def test_truncated_hdf5_fails_the_quick_check_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    _table(path)
    truncate(path)
    with pytest.raises(CorruptIntermediate, match=r"t\.h5: truncated: \d+ bytes, its superblock says \d+"):
        check_quick(path)
    with pytest.raises(CorruptIntermediate, match=str(path)):
        read_columns(path)


def test_flipped_bit_in_a_chunk_is_caught_when_read(tmp_path: Path) -> None:
    """The size and header are intact (the quick check passes); the chunk's Fletcher32 fails on reading."""
    path = tmp_path / "t.h5"
    _table(path)
    flip_in_chunk(path, "columns/mass")
    check_quick(path)
    with pytest.raises(CorruptIntermediate, match=str(path)) as err:
        read_columns(path, ["mass"])
    assert err.value.path == str(path)
    with pytest.raises(CorruptIntermediate):
        check_full(path)
    read_columns(path, ["pass"])  # the other column is intact


def test_hdf5_without_checksums_is_not_trusted(tmp_path: Path) -> None:
    old = tmp_path / "old.h5"  # the default file format of h5py: superblock 0, no metadata checksums
    with h5py.File(old, "w") as h5:
        h5["x"] = np.arange(10.0)
    with pytest.raises(CorruptIntermediate, match="without checksums"):
        check_quick(old)
    unchecked = tmp_path / "unchecked.h5"  # new file format, a dataset without Fletcher32
    with h5py.File(unchecked, "w", libver=LIBVER) as h5:
        h5.create_dataset("x", data=np.arange(10.0), chunks=True)
    check_quick(unchecked)
    with pytest.raises(CorruptIntermediate, match="dataset x has no checksum"):
        check_full(unchecked)
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(CorruptIntermediate, match="not an HDF5 file"):
        check_quick(not_hdf5)


def test_missing_file_stays_file_not_found(tmp_path: Path) -> None:
    for check in (check_quick, check_full):
        with pytest.raises(FileNotFoundError):
            check(tmp_path / "none.h5")
    with pytest.raises(FileNotFoundError):
        read_columns(tmp_path / "none.h5")


# --- unit: JSON ----------------------------------------------------------------------------------------
def test_record_round_trip_with_digest(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    record = {"efficiency": 0.912345678, "err": math.nan, "edge": math.inf, "n": 3, "np": np.float64(0.5),
              "bin": "p [2, 10)", "values": [1.5, -math.inf]}
    jsonio.write_record(path, record, indent=1)
    raw = path.read_text()
    assert DIGEST in raw and "NaN" not in raw and "Infinity" not in raw
    back = jsonio.load_numbers(path)
    assert DIGEST not in back and back["efficiency"] == 0.912345678 and math.isnan(back["err"])
    assert back["edge"] == math.inf and back["values"] == [1.5, -math.inf] and back["np"] == 0.5
    check_quick(path)
    check_full(path)


@pytest.mark.parametrize("damage", ["digit", "truncate", "no digest", "bad bytes"])
def test_damaged_record_is_caught(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "r.json"
    jsonio.write_record(path, {"efficiency": 0.91234, "status": "ok"}, indent=1)
    if damage == "digit":  # still valid JSON: only the digest tells
        change_digit(path)
        check_quick(path)
    elif damage == "truncate":
        truncate(path, 5)
        with pytest.raises(CorruptIntermediate, match="truncated or damaged JSON"):
            check_quick(path)
    elif damage == "no digest":
        path.write_text('{"efficiency": 0.91234, "status": "ok"}\n')
    else:
        path.write_bytes(path.read_bytes().replace(b"ok", b"\xff\xfe"))
    with pytest.raises(CorruptIntermediate, match=str(path)):
        jsonio.load_numbers(path)
    with pytest.raises(CorruptIntermediate):
        check_full(path)


# --- unit: sealed table folders ------------------------------------------------------------------------
def test_done_marker_seals_its_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "efficiencies.csv").write_text("sample,bin,efficiency\ndata,0,0.91234\n")
    (tmp_path / "sub" / "roc.csv").write_text("x\n1\n")
    marker = tmp_path / "tables.done"
    marker.write_text(seal_text(marker, "key123"))
    assert marker.read_text().splitlines()[0] == "key123"
    check_quick(marker)
    check_full(marker)
    change_digit(tmp_path / "efficiencies.csv", "data,0,")  # same size: only the full check sees it
    check_quick(marker)
    with pytest.raises(CorruptIntermediate, match=r"tables\.done: efficiencies\.csv: content does not match"):
        check_full(marker)
    (tmp_path / "sub" / "roc.csv").write_text("x\n")
    with pytest.raises(CorruptIntermediate, match=r"roc\.csv: 2 bytes, sealed with 4"):
        check_quick(marker)
    marker.write_text(marker.read_text().replace("key123", "key124"))
    with pytest.raises(CorruptIntermediate, match="does not match its sha256"):
        check_quick(marker)
    marker.write_text("key123\n")  # a marker of before verified intermediates
    with pytest.raises(CorruptIntermediate, match="without its seal"):
        check_quick(marker)
    before = folder_files(tmp_path, str(marker))  # a later stage's file, there before the task wrote: not sealed
    jsonio.write_record(tmp_path / "efficiencies.csv", {"replaced": True})
    sealed = seal_text(marker, "key123", before).splitlines()
    assert [ln.split(" ", 2)[2] for ln in sealed[2:-1]] == ["efficiencies.csv"]


def test_corrupt_intermediate_is_an_oserror_that_pickles() -> None:
    exc = CorruptIntermediate("/r/prep/a.h5", "truncated: 10 bytes, its superblock says 20")
    back = pickle.loads(pickle.dumps(exc))
    assert isinstance(back, OSError)
    assert (back.path, back.reason, str(back)) == (exc.path, exc.reason, "/r/prep/a.h5: " + exc.reason)


# --- end to end ----------------------------------------------------------------------------------------
def _tables(plan: Plan) -> dict[str, bytes]:
    return {name: Path(plan.combined_dir(), name).read_bytes() for name in COMPARED}


def _keep_only_intermediates(workdir: str, kept: tuple[str, ...] = KEPT) -> None:
    """Remove the folders and files of ``workdir`` but ``kept`` (default: tables, exports and published files,
    as a changed fit or tables setting would need them again), so that the rerun reads the intermediates."""
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name in kept:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _one(pattern: str, workdir: str | Path) -> Path:
    found = sorted(Path(workdir).glob(pattern))
    assert found, pattern
    return found[0]


def test_corrupt_intermediates_are_rebuilt_in_the_same_run(tmp_path: Path, write_config, capsys, caplog) -> None:
    """Truncate one prepared tuple, flip a bit in a chunk of another and of a histogram file, change a digit
    of a fit result: ``calibflow verify`` names all four (exit 1); the next run removes and rebuilds each in
    the same invocation (warnings name them), the tables are byte-identical, and verify then passes."""
    config = write_config(tiny_demo_dict())
    plan = Plan.create(config, tmp_path / "res")
    top = [ExportTables(config=plan.config_path, result_dir=plan.result_dir)]
    assert build(plan, top, 1).ok
    before = _tables(plan)
    w = plan.workdir
    damaged = {
        "truncated prep": _one("prep/data/*.h5", w),
        "flipped prep": _one("prep/mc/*.h5", w),
        "flipped hist": _one("hists/data-*.h5", w),
        "changed fit": _one("fits/mc/*.json", w),
    }
    truncate(damaged["truncated prep"])
    flip_in_chunk(damaged["flipped prep"], "columns/_mass")
    flip_in_chunk(damaged["flipped hist"], "sumw")
    change_digit(damaged["changed fit"])
    damaged_bytes = {k: p.read_bytes() for k, p in damaged.items()}
    for p in [*Path(w, "fits", "data").glob("*.json"), *Path(w, "hists").glob("mc-*.h5")]:
        p.unlink()  # so that the rerun reads the damaged histograms and prepared tuples
    _keep_only_intermediates(w)

    capsys.readouterr()
    assert main(["verify", str(config), "--result-dir", str(tmp_path / "res")]) == 1
    out = capsys.readouterr().out
    corrupt = [ln for ln in out.splitlines() if ln.startswith("CORRUPT ")]
    assert len(corrupt) == 4, out
    for p in damaged.values():
        assert any(os.path.basename(p) in ln for ln in corrupt), (p, out)
    assert "truncated: " in out and "does not match its sha256 digest" in out
    assert all(p.exists() for p in damaged.values())  # verify alone removes nothing

    with caplog.at_level(logging.WARNING, logger="calibflow"):
        report = build(plan, top, 1)
    assert report.ok, report.failed
    assert _tables(plan) == before
    err = capsys.readouterr().err
    for name in ("flipped prep", "flipped hist", "changed fit"):  # found when read: the runner reruns
        assert f"removed {damaged[name]}: " in err, err
    assert f"corrupt intermediate removed, to be rebuilt: {damaged['truncated prep']}: truncated" in caplog.text
    for name, p in damaged.items():  # rebuilt: a new file that passes every check
        assert p.read_bytes() != damaged_bytes[name], name
        check_full(p)
    assert main(["verify", str(config), "--result-dir", str(tmp_path / "res")]) == 0
    assert f"{len(intermediates(w))} intermediate file(s) intact" in capsys.readouterr().out


def test_verify_repair_removes_and_run_rebuilds(tmp_path: Path, write_config, capsys) -> None:
    config = write_config(tiny_demo_dict())
    res = tmp_path / "res"
    args = [str(config), "--result-dir", str(res)]
    assert main(["verify", *args]) == 2  # no result folder yet
    assert "no result folder" in capsys.readouterr().err
    plan = Plan.create(config, res)
    top = [ExportTables(config=plan.config_path, result_dir=plan.result_dir)]
    assert build(plan, top, 1).ok
    hist = _one("hists/mc-*.h5", plan.workdir)
    flip_in_chunk(hist, "sumw2")
    assert main(["verify", *args, "--repair"]) == 1
    assert "removed: 'calibflow run' rebuilds them" in capsys.readouterr().out
    assert not hist.exists()
    assert main(["verify", *args]) == 0
    from calibflow.export.publish import published_dir

    Path(published_dir(plan.workdir) or plan.workdir, "scale_factors.csv").unlink()
    capsys.readouterr()
    assert main(["verify", *args]) == 1
    out = capsys.readouterr().out
    assert "MISSING " in out and "scale_factors.csv: listed in manifest.json" in out, out
    _keep_only_intermediates(plan.workdir)
    assert build(plan, top, 1).ok
    assert hist.exists()
    check_full(hist)


def test_damaged_tables_are_rebuilt(tmp_path: Path, write_config) -> None:
    """A digit changed in a variant's table (same size: found when the combination reads it) and a truncated
    combined table (found by the size check of its done marker): both folders are rebuilt from the fits."""
    plan = Plan.create(write_config(tiny_demo_dict()), tmp_path / "res")
    top = [ExportTables(config=plan.config_path, result_dir=plan.result_dir)]
    assert build(plan, top, 1).ok
    before = _tables(plan)
    change_digit(Path(plan.table_dir(), "efficiencies.csv"), "data,0,")
    truncate(Path(plan.combined_dir(), "scale_factors.csv"), 10)
    _keep_only_intermediates(plan.workdir, (*KEPT, "tables", "combined"))
    report = build(plan, top, 1)
    assert report.ok, report.failed
    assert report.tasks_ran["EfficiencyTable"] == 1 and report.tasks_ran["CombineTables"] == 1
    assert not report.tasks_ran["FitBin"]
    assert _tables(plan) == before
    check_full(Path(plan.table_dir(), "tables.done"))
    assert main(["verify", str(plan.config_path), "--result-dir", plan.result_dir]) == 0  # the export left the seals


def test_corrupt_splot_cache_is_refitted(tmp_path: Path, caplog) -> None:
    """A cached sPlot fit that fails its digest is refitted and replaced by the task that reads it."""
    from calibflow.fit.sweights import SPlotFit, cached_splot_fit

    fit = SPlotFit("gauss", "exponential", 0.0, 1.0, {"n_sig": 5.25}, {"n_sig": 0.5}, ["n_sig"], "ok")
    path = str(tmp_path / "s.json")
    cached_splot_fit(path, lambda: fit)
    change_digit(path, '"n_sig": ')
    with caplog.at_level(logging.WARNING, logger="calibflow.task"):
        back, reused = cached_splot_fit(path, lambda: fit)
    assert not reused and back.values == {"n_sig": 5.25}
    assert f"corrupt intermediate removed and rebuilt: {path}: content does not match" in caplog.text
    assert cached_splot_fit(path, lambda: pytest.fail("the cache is read"))[1]


def test_verify_checks_published_files_against_their_digests(tmp_path: Path, write_config, capsys) -> None:
    """manifest.json holds the SHA-256 of every published file: a changed one is CORRUPT (exit 1); --repair
    unpublishes the set and the next run publishes the same bytes again."""
    from calibflow.export.publish import SHA256, published_dir

    config = write_config(tiny_demo_dict())
    res = tmp_path / "res"
    args = [str(config), "--result-dir", str(res)]
    plan = Plan.create(config, res)
    top = [ExportTables(config=plan.config_path, result_dir=plan.result_dir)]
    assert build(plan, top, 1).ok
    folder = Path(published_dir(plan.workdir))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest[SHA256]) >= set(manifest["files"]) and "manifest.json" not in manifest[SHA256]
    target = folder / "efficiencies.csv"
    original = target.read_bytes()
    changed = original.replace(b"data,0,", b"data,0,9", 1)
    target.unlink()  # a new file: the hard-linked combined table keeps its bytes
    target.write_bytes(changed)
    capsys.readouterr()
    assert main(["verify", *args]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT " in out and "efficiencies.csv: published file differs from its SHA-256" in out, out
    assert main(["verify", *args, "--repair"]) == 1
    assert not (Path(plan.workdir) / "current").exists()
    report = build(plan, top, 1)
    assert report.ok and report.tasks_ran["ExportTables"] == 1 and not report.tasks_ran["FitBin"]
    assert (Path(plan.workdir) / "efficiencies.csv").read_bytes() == original
    capsys.readouterr()
    assert main(["verify", *args]) == 0
