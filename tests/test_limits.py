"""Quick tries (issue 16, item 13): ``calibflow run --limit N --max-files M`` reads at most N entries of each
input file and the first M files of each sample; the limits are part of the keys (never in them when not
given), and the published folder, report and closing lines say LIMITED until a full run."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from calibflow.config import parse_config
from calibflow.io.baskets import read_flat
from calibflow.io.root import use_fast_zlib, write_ttree
from calibflow.io.store import read_columns, read_metadata
from calibflow.plan import Plan, RunLimits
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import prep_spec
from calibflow.tables.write import MASTER_JSON
from calibflow.toys.registry import write_toy_file
from tasks.cli import main

from .conftest import tiny_demo_dict
from .test_content_keys import demo_keys
from .test_prep_nanoaod import nano_config, write_nano


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --- reading at most N entries --------------------------------------------------------------------------
def _damage_last_basket(path: Path, branch: str) -> None:
    with uproot.open(path) as f:
        b = f["DecayTree"][branch]
        n = b.num_baskets
        seek, size = int(b.member("fBasketSeek")[n - 1]), int(b.member("fBasketBytes")[n - 1])
    raw = bytearray(path.read_bytes())
    raw[seek + size // 2 : seek + size // 2 + 32] = bytes(32)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("stop", [1, 999, 1000, 2500, 24_999, 25_000, 90_000])
def test_basket_reader_stops_at_the_entry_limit(stop: int, tmp_path: Path) -> None:
    use_fast_zlib()
    path = tmp_path / "t.root"
    rng = np.random.default_rng(stop)
    branches = {"x": rng.normal(size=25_000), "k": rng.integers(0, 9, 25_000).astype(np.int32)}
    write_ttree(path, branches, basket_rows=1000)
    with uproot.open(path) as f:
        chunks = read_flat(str(path), f["DecayTree"], ["x", "k"], "64 MB", entry_stop=stop)
        assert chunks is not None
        parts = list(chunks)
        ref = f["DecayTree"].arrays(["x", "k"], entry_stop=stop, library="np")
    for k in ("x", "k"):
        got = np.concatenate([p[k] for p in parts])
        assert np.array_equal(got, ref[k]) and len(got) == min(stop, 25_000), k
    if stop <= 2500:  # chunks of at most the limit: the first cluster(s) only
        assert sum(len(p["x"]) for p in parts) == stop and len(parts) == 1


def test_limited_read_never_touches_the_baskets_after_the_limit(tmp_path: Path) -> None:
    """A damaged last basket: the full read fails, the limited one never inflates it."""
    use_fast_zlib()
    path = tmp_path / "t.root"
    write_ttree(path, {"x": np.random.default_rng(0).normal(size=20_000)}, basket_rows=1000)
    _damage_last_basket(path, "x")
    with uproot.open(path) as f:
        limited = list(read_flat(str(path), f["DecayTree"], ["x"], "64 MB", entry_stop=3000) or [])
        assert sum(len(p["x"]) for p in limited) == 3000
        with pytest.raises(Exception):  # noqa: B017 - inflating the damaged basket fails one way or another
            list(read_flat(str(path), f["DecayTree"], ["x"], "64 MB") or [])


def _prefix(limited: dict[str, np.ndarray], full: dict[str, np.ndarray]) -> None:
    n = len(next(iter(limited.values())))
    assert 0 < n < len(next(iter(full.values())))
    for k, v in limited.items():
        assert np.array_equal(v, full[k][:n], equal_nan=True), k


def test_prepare_file_reads_the_first_n_entries_flat_and_jagged(tmp_path: Path) -> None:
    """Flat toy tuple (basket reader) and NanoAOD pairs (uproot): the cut flow reads N entries and the
    prepared rows are the first rows of the full preparation."""
    d = tiny_demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["x.root"]
    flat = tmp_path / "flat.root"
    write_toy_file(str(flat), 30_000, is_data=True, seed=3)
    nano = tmp_path / "nano.root"
    write_nano(nano, n=3000, seed=4)
    for src, cfg, n in ((flat, parse_config(d), 7000), (nano, parse_config(nano_config(lumi=None)), 1100)):
        spec = prep_spec(cfg, "data")
        limited = dataclasses.replace(spec, entry_limit=n)
        flow = prepare_file(str(src), limited, str(tmp_path / "limited.h5"), step_size=1000)
        full_flow = prepare_file(str(src), spec, str(tmp_path / "full.h5"), step_size=1000)
        assert flow["read"] == n and full_flow["read"] > n
        _prefix(read_columns(tmp_path / "limited.h5"), read_columns(tmp_path / "full.h5"))
        assert read_metadata(tmp_path / "limited.h5")["spec"]["entry_limit"] == n
        assert "entry_limit" not in spec.describe()


# --- keys ------------------------------------------------------------------------------------------------
def test_limits_enter_the_keys_only_when_given(tmp_path: Path) -> None:
    """Against the keys of the same plan without limits (those are pinned by tests/test_content_keys.py)."""
    from .conftest import DEMO

    plan = Plan.create(DEMO, tmp_path)
    full, full_export = demo_keys(DEMO, tmp_path), plan.export_key()
    run = plan.start_run(limits=RunLimits(entries=5000))
    keys = demo_keys(DEMO, tmp_path, run.run_file)
    for k in ("prep/data", "prep/mc", "hist/data", "fit/data", "fit/mc", "table", "combined"):
        assert keys[k] != full[k], k  # every key from the prepared tuples on
    assert keys["toy/data"] == full["toy/data"] and keys["binning"] == full["binning"]
    assert run.prep_spec("data").entry_limit == 5000 and plan.prep_spec("data").entry_limit is None

    run = plan.start_run(limits=RunLimits(files=2))  # data has 3 toy files, mc 2
    keys = demo_keys(DEMO, tmp_path, run.run_file)
    assert keys["prep/data"] == full["prep/data"][:2] and keys["prep/mc"] == full["prep/mc"]
    assert keys["hist/data"] != full["hist/data"] and keys["hist/mc"] == full["hist/mc"]
    assert keys["table"] != full["table"]
    assert len(run.input_files("data")) == 2

    run = plan.start_run(limits=RunLimits(files=3))  # leaves nothing out: the full tables, published as limited
    assert demo_keys(DEMO, tmp_path, run.run_file) == full
    assert run.export_key() != full_export
    assert json.loads(Path(run.run_file).read_text())["limits"] == {"files_per_sample": 3}

    run = plan.start_run()
    assert demo_keys(DEMO, tmp_path, run.run_file) == full and run.export_key() == full_export


def test_limits_text() -> None:
    limits = RunLimits(entries=1000, files=2)
    assert limits.text() == "--limit 1000 --max-files 2"
    assert RunLimits.parse(limits.describe()) == limits and not RunLimits()
    assert "at most 1000 entries read per input file and the first 2 input file(s)" in limits.note()


@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5"])
def test_limits_are_whole_numbers_of_at_least_one(value: str) -> None:
    for option in ("--limit", "--max-files"):
        code, out, err = run_cli("run", "c.yaml", option, value)
        assert code == 2 and not out and f"argument {option}: give a whole number of at least 1" in err


# --- a real run ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny toy calibration with 3 data files (2 bins), correctionlib and the report on, not run yet."""
    folder = tmp_path_factory.mktemp("limits")
    d = tiny_demo_dict()
    d["name"] = "tiny"
    d["toy"]["samples"]["data"] = {"candidates": 24000, "files": 3}
    d["outputs"] = {"correctionlib": True, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": True}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return folder


def _run(folder: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("run", str(folder / "tiny.yaml"), "--result-dir", str(folder / "res"), "--workers", "1",
                   "--quiet", *extra)


def _marks(work: Path) -> dict[str, object]:
    """What the published folder says of the limits."""
    manifest = json.loads((work / "manifest.json").read_text())
    corrections = json.loads((work / "corrections.json").read_text())
    return {
        "LIMITED.txt": (work / "LIMITED.txt").exists(),
        "manifest": manifest.get("limits"),
        "master": json.loads((work / MASTER_JSON).read_text())["metadata"].get("limits"),
        "correctionlib": "LIMITED" in corrections["description"],
        "report.md": "**LIMITED:**" in (work / "report.md").read_text(),
        "report.html": '<p class="verdict warn"><b>LIMITED:</b>' in (work / "report.html").read_text(),
    }


def test_a_limited_run_says_so_everywhere_and_a_full_run_replaces_it(tiny: Path) -> None:
    work = tiny / "res" / "tiny"
    code, out, err = _run(tiny, "--limit", "3000", "--max-files", "2")
    assert code == 0, err
    assert "3 GenerateToys" in out and "3 PrepareTuple" in out  # 2 data files of 3, 1 mc file
    assert "calibflow: LIMITED: a quick try (--limit 3000 --max-files 2" in out
    limits = {"entries_per_file": 3000, "files_per_sample": 2}
    assert _marks(work) == {"LIMITED.txt": True, "manifest": limits, "master": limits, "correctionlib": True,
                            "report.md": True, "report.html": True}
    assert "LIMITED.txt" in json.loads((work / "manifest.json").read_text())["files"]
    assert "run limits" in (work / "report.md").read_text()
    read = {r.split(",")[0]: r for r in (work / "cutflow_data.csv").read_text().splitlines()}
    assert read["read"].startswith("read,candidates,6000,")

    code, out, err = run_cli("status", str(tiny / "tiny.yaml"), "--result-dir", str(tiny / "res"))
    assert code == 0, err
    assert "outputs of the current keys of a quick try (--limit 3000 --max-files 2)" in out
    assert re.search(r"^PrepareTuple\s+3\s+3\s+0\s+0$", out, re.M), out
    assert "(the current key)" in out and "\nLIMITED: a quick try" in out

    code, out, err = _run(tiny)  # full: every file, every entry; nothing of the limited run is reused
    assert code == 0, err
    assert "4 PrepareTuple" in out and "1 GenerateToys" in out and "LIMITED" not in out
    assert _marks(work) == {"LIMITED.txt": False, "manifest": None, "master": None, "correctionlib": False,
                            "report.md": False, "report.html": False}
    read = {r.split(",")[0]: r for r in (work / "cutflow_data.csv").read_text().splitlines()}
    assert read["read"].startswith("read,candidates,24000,")

    code, out, _ = _run(tiny, "--limit", "3000", "--max-files", "2")  # the limited results are still there
    assert code == 0 and "1 task(s) run" in out and "(1 ExportTables)" in out
    assert _marks(work)["manifest"] == limits
