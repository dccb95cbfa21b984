"""Bad input files: one-line errors naming the file, a failed run that names the bad files, and
``calibflow run --skip-bad-files``, which leaves them out and says so in every output."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.config import parse_config
from calibflow.io.root import write_ttree
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import PrepError, prep_spec
from calibflow.tables.rows import read_csv
from calibflow.tables.write import MASTER_JSON
from calibflow.toys.registry import write_toy_file
from tasks.cli import main

from .conftest import tiny_demo_dict


def _damage_basket(path: Path) -> None:
    """Zero 64 bytes of compressed data inside the first basket of Jpsi_M."""
    with uproot.open(path) as f:
        branch = f["DecayTree"]["Jpsi_M"]
        seek, size = int(branch.member("fBasketSeek")[0]), int(branch.member("fBasketBytes")[0])
    raw = bytearray(path.read_bytes())
    raw[seek + size // 2 : seek + size // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])


def _make(kind: str, path: Path) -> None:
    """Write a bad input of ``kind`` at ``path``."""
    if kind == "not found":
        return
    if kind == "unreadable":
        path.mkdir()  # a folder where a file should be
    elif kind == "not ROOT":
        path.write_bytes(b"this is not a ROOT file\n" * 40)
    elif kind == "missing tree":
        write_ttree(path, {"x": np.ones(3)}, tree="Other")
    elif kind == "missing branch":
        write_ttree(path, {"Jpsi_M": np.ones(3)})
    elif kind == "zero entries":
        write_ttree(path, {b: np.zeros(0) for b in ("Jpsi_M", "tag_PT", "tag_isMuon", "probe_P", "probe_ETA",
                                                       "probe_Assoc", "toy_true_eff", "toy_is_signal")})
    else:
        write_toy_file(str(path), 30000, is_data=True, seed=1)
        (_truncate if kind == "truncated" else _damage_basket)(path)


BAD_KINDS = {
    "not found": r"file not found",
    "unreadable": r"cannot read as a ROOT file \(IsADirectoryError",
    "not ROOT": r"cannot read as a ROOT file",
    "truncated": r"(cannot read|reading failed)",
    "corrupt": r"reading failed \(",
    "missing tree": r"no tree 'DecayTree' \(trees in file: Other\)",
    "missing branch": r"tree 'DecayTree' has no branch\(es\) .*probe_P",
    "zero entries": r"tree 'DecayTree' has zero entries",
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_each_bad_input_gives_one_line_naming_the_file(kind: str, tmp_path: Path) -> None:
    d = tiny_demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["x.root"]
    spec = prep_spec(parse_config(d), "data")
    src = tmp_path / "bad_input.root"
    _make(kind, src)
    with pytest.raises(PrepError) as info:
        prepare_file(str(src), spec, str(tmp_path / "out.h5"), step_size=5000)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{src}: "), message
    assert info.value.skippable
    assert re.search(BAD_KINDS[kind], message), message
    assert not list(tmp_path.glob("out.h5*"))


# --- a run with one bad file among good ones ----------------------------------------------------------
@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[int, str, str]]:
    """A counted calibration whose data are three good files and one with a damaged basket; returns a
    function running ``calibflow run`` on it (extra CLI arguments) -> (exit code, stdout, stderr)."""
    import yaml

    folder = tmp_path_factory.mktemp("badfiles")
    for i in range(3):
        write_toy_file(str(folder / f"data_{i}.root"), 8000, is_data=True, seed=10 + i)
    write_toy_file(str(folder / "data_3.root"), 8000, is_data=True, seed=13)
    _damage_basket(folder / "data_3.root")
    write_toy_file(str(folder / "mc_0.root"), 8000, is_data=False, seed=20)
    d = tiny_demo_dict()
    d["name"] = "badfiles"
    del d["toy"]
    d["samples"]["data"].update(files=["data_*.root"], method="count")
    d["samples"]["mc"]["files"] = ["mc_*.root"]
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": True}
    cfg = folder / "badfiles.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))

    def run(*extra: str) -> tuple[int, str, str]:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(cfg), "--result-dir", str(folder / "res"), *extra])
        return code, out.getvalue(), err.getvalue()

    run.workdir = folder / "res" / "badfiles"  # type: ignore[attr-defined]
    run.bad = str(folder / "data_3.root")  # type: ignore[attr-defined]
    return run


def test_bad_file_fails_only_its_task_and_the_summary_names_it(bad_run) -> None:
    code, out, err = bad_run()
    assert code == 1
    assert "1 failed" in out
    assert "calibflow: 1 bad input file(s) (fix or remove them, or rerun with --skip-bad-files" in err
    assert f"\n  {bad_run.bad}: reading failed (" in err
    prepared = sorted(p.name.split("-")[0] for p in (bad_run.workdir / "prep").rglob("*.h5"))
    assert prepared == ["data_0", "data_1", "data_2", "mc_0"]  # every other file finished


def test_skip_bad_files_leaves_them_out_and_says_so(bad_run) -> None:
    code, out, err = bad_run("--skip-bad-files")
    assert code == 0, err
    assert "calibflow: 1 bad input file(s) left out (--skip-bad-files)" in out and bad_run.bad in out
    work = bad_run.workdir
    manifest = json.loads((work / "manifest.json").read_text())
    assert {"excluded_files.txt", "cutflow_data.csv", "cutflow_mc.csv"} <= set(manifest["files"])
    lines = (work / "excluded_files.txt").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1].startswith(f"data\t{bad_run.bad}\treading failed (")
    meta = json.loads((work / MASTER_JSON).read_text())["metadata"]
    assert [e["file"] for e in meta["excluded_files"]["data"]] == [bad_run.bad]
    assert "mc" not in meta["excluded_files"]
    flow = {r["stage"]: r for r in read_csv(work / "cutflow_data.csv")}
    assert flow["read"]["entries"] == 3 * 8000 and flow["read"]["unit"] == "candidates"
    assert 0 < flow["probe"]["entries"] <= flow["tag"]["entries"] < 3 * 8000
    assert flow["probe"]["efficiency"] == pytest.approx(flow["probe"]["entries"] / flow["tag"]["entries"])
    assert "1 bad input file(s) left out" in (work / "report.md").read_text()


def test_a_run_without_the_flag_retries_and_a_run_with_it_reuses(bad_run) -> None:
    code, _, err = bad_run()
    assert code == 1 and bad_run.bad in err  # retried, still bad
    runs = bad_run.workdir / "runs"  # the mode is the run's own, in its run file: no shared marker
    latest = json.loads((runs / json.loads((runs / "latest.json").read_text())["run_file"]).read_text())
    assert latest["skip_bad_files"] is False and not (bad_run.workdir / "prep" / "SKIP_BAD_FILES").exists()
    code, out, _ = bad_run("--skip-bad-files")
    assert code == 0
    assert "0 task(s) run, 1 reused" in out  # the tables made without the bad file are still valid


def test_a_repaired_file_is_used_again(bad_run) -> None:
    write_toy_file(bad_run.bad, 8000, is_data=True, seed=13)
    code, out, err = bad_run("--skip-bad-files")
    assert code == 0, err
    assert "left out" not in out
    assert "excluded_files.txt" not in json.loads((bad_run.workdir / "manifest.json").read_text())["files"]
    assert not os.path.exists(bad_run.workdir / "excluded_files.txt")
    flow = {r["stage"]: r for r in read_csv(bad_run.workdir / "cutflow_data.csv")}
    assert flow["read"]["entries"] == 4 * 8000
