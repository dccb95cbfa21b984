"""Run modes and input lists are parameters of a run (issue 17, items 9 and 10).

``calibflow run`` resolves every sample's input list once and writes it with its modes (``--skip-bad-files``,
``--limit``, ``--max-files``) to a run file named by its content; every task carries that file as a parameter.
So a run never sees another run's modes, a file deleted or changed during a run fails (or is left out) under
its own name, and a file added during a run waits for the next one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import yaml

from calibflow.config import ConfigError
from calibflow.plan import LATEST_RUN, LEGACY_MODE_FILES, Plan, RunLimits
from calibflow.toys.registry import write_toy_file
from tasks import ExportTables
from tasks.entry import rebuild
from tasks.prep import PrepareTuple
from tasks.runner import build

from .conftest import tiny_demo_dict
from .test_badfiles import _damage_basket

N = 8000
"""Candidates per input file."""


def _config(folder: Path, n_data: int = 3, bad: bool = False) -> Path:
    """A counted calibration of ``n_data`` data files (the last one damaged when ``bad``) and one mc file."""
    for i in range(n_data):
        write_toy_file(str(folder / f"data_{i}.root"), N, is_data=True, seed=10 + i)
    if bad:
        _damage_basket(folder / f"data_{n_data - 1}.root")
    write_toy_file(str(folder / "mc_0.root"), N, is_data=False, seed=20)
    d = tiny_demo_dict()
    d["name"] = "runs"
    del d["toy"]
    d["samples"]["data"].update(files=["data_*.root"], method="count")
    d["samples"]["mc"]["files"] = ["mc_*.root"]
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": False}
    cfg = folder / "runs.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    return cfg


def _cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    from tasks.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _prepare(plan: Plan, sample: str, index: int):
    """Run the PrepareTuple task of input ``index`` of ``sample`` in ``plan``'s run: the run report."""
    task = PrepareTuple(sample=sample, index=index, config=plan.config_path, result_dir=plan.result_dir,
                        run_file=plan.run_file)
    return build(plan, [task], 1)


# --- modes: parameters of the run -------------------------------------------------------------------------
def test_runs_with_other_modes_keep_their_own(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    a = plan.start_run(skip_bad_files=True, limits=RunLimits(entries=500))
    b = plan.start_run()  # a run without the options, started while A goes on
    assert a.run_file != b.run_file and os.path.exists(a.run_file) and os.path.exists(b.run_file)
    assert a.skips_bad_files and a.limits == RunLimits(entries=500)
    assert not b.skips_bad_files and not b.limits
    assert not plan.skips_bad_files and not plan.limits  # no run: no modes
    assert json.loads((Path(a.runs_dir) / LATEST_RUN).read_text()) == {"run_file": os.path.basename(b.run_file)}
    assert plan.latest_run() == b.run and plan.in_latest_modes(record=False).run_file == b.run_file  # status
    assert plan.start_run(skip_bad_files=True, limits=RunLimits(entries=500)).run_file == a.run_file  # shared
    assert a.with_variant("x").run_file == a.run_file
    assert a.prep_key("data", 0) != b.prep_key("data", 0) and b.prep_key("data", 0) == plan.prep_key("data", 0)

    task = PrepareTuple(sample="data", index=0, config=a.config_path, result_dir=a.result_dir, run_file=a.run_file)
    assert task.plan.skips_bad_files and task.plan.limits.entries == 500
    top = ExportTables(config=a.config_path, result_dir=a.result_dir, run_file=a.run_file)
    assert [t.run_file for t in top.requires()] == [a.run_file]  # passed on to every required task
    batch = rebuild(task.task_family, json.dumps(task.to_str_params()), task.task_id)  # a batch job
    assert batch.plan.run_file == a.run_file and batch.plan.skips_bad_files


def test_a_run_without_the_flag_leaves_a_skipping_run_alone(tmp_path: Path) -> None:
    """Run A (--skip-bad-files) starts; run B (no flag) runs and fails on the bad file; A then finishes with
    the bad file left out, as it was asked to."""
    cfg = _config(tmp_path, n_data=3, bad=True)
    plan = Plan.create(cfg, tmp_path / "res")
    a = plan.start_run(skip_bad_files=True)
    bad = str(tmp_path / "data_2.root")
    code, _, err = _cli("run", str(cfg), "--result-dir", str(tmp_path / "res"), "--workers", "1", "--quiet")
    assert code == 1 and f"\n  {bad}: reading failed (" in err
    report = build(a, [ExportTables(config=a.config_path, result_dir=a.result_dir, run_file=a.run_file)], 1)
    assert report.ok, report.failed
    assert [e["file"] for e in a.excluded_files()["data"]] == [bad]
    manifest = json.loads((Path(a.workdir) / "manifest.json").read_text())
    assert manifest["key"] == a.export_key() and "excluded_files.txt" in manifest["files"]

    code, out, err = _cli("status", str(cfg), "--result-dir", str(tmp_path / "res"))  # latest run: B's
    assert code == 0 and "--skip-bad-files" not in out and "PrepareTuple(sample=data, index=2)" in out, out
    code, out, err = _cli("run", str(cfg), "--result-dir", str(tmp_path / "res"), "--quiet", "--skip-bad-files")
    assert code == 0 and "0 task(s) run, 1 reused" in out, out + err  # A's results: the same run file
    code, out, err = _cli("status", str(cfg), "--result-dir", str(tmp_path / "res"))
    assert code == 0 and "leaving bad input files out (--skip-bad-files)" in out, out


def test_old_mode_files_are_ignored_and_removed(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    prep = Path(plan.workdir) / "prep"
    prep.mkdir(parents=True)
    (prep / "SKIP_BAD_FILES").write_text("calibflow run --skip-bad-files\n")
    (prep / "LIMITS.json").write_text(json.dumps({"files_per_sample": 1}))
    assert set(LEGACY_MODE_FILES) == {"SKIP_BAD_FILES", "LIMITS.json"}
    assert not plan.skips_bad_files and not plan.limits and len(plan.input_files("data")) == 3
    run = plan.start_run()
    assert not run.skips_bad_files and not run.limits and len(run.input_files("data")) == 3
    assert not list(prep.iterdir())


# --- inputs: resolved once, addressed by identity -----------------------------------------------------------
def test_a_file_added_during_a_run_waits_for_the_next(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    run = plan.start_run()
    keys = run.prep_keys("data")
    write_toy_file(str(tmp_path / "data_00.root"), N, is_data=True, seed=99)  # sorts first
    assert run.input_files("data") == [str(tmp_path / f"data_{i}.root") for i in range(3)]
    assert run.prep_keys("data") == keys and run.prep_path("data", 0).endswith(os.sep + "data_0-" + keys[0] + ".h5")
    assert len(plan.input_files("data")) == 4 and len(plan.start_run().input_files("data")) == 4


def test_a_run_with_max_files_lists_only_those(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    run = plan.start_run(limits=RunLimits(files=2))
    data = json.loads(Path(run.run_file).read_text())
    found = {e["sample"]: [f["path"] for f in e["found"]] for e in data["inputs"]}
    assert found == {"data": [str(tmp_path / "data_0.root"), str(tmp_path / "data_1.root")],
                     "mc": [str(tmp_path / "mc_0.root")]}
    assert data["limits"] == {"files_per_sample": 2} and data["skip_bad_files"] is False
    st = os.stat(tmp_path / "data_1.root")
    assert data["inputs"][0]["found"][1] == {"path": str(tmp_path / "data_1.root"), "size": st.st_size,
                                             "mtime_ns": st.st_mtime_ns}


@pytest.mark.parametrize("skip", [False, True], ids=["fails", "skip-bad-files"])
def test_a_file_deleted_during_a_run_is_named(tmp_path: Path, skip: bool) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    run = plan.start_run(skip_bad_files=skip)
    gone = tmp_path / "data_1.root"
    gone.unlink()
    report = _prepare(run, "data", 1)
    marker = Path(run.excluded_path("data", 1))
    if not skip:
        assert not report.ok
        ((_, reason),) = report.failed
        assert reason == f"PrepError: {gone}: gone since the run started, which listed it; run again to use " \
                         "the current files"
        assert not marker.exists()
        return
    assert report.ok
    assert marker.name.startswith("data_1-") and marker.name == f"data_1-{run.prep_key('data', 1)}.excluded.json"
    assert json.loads(marker.read_text())["file"] == str(gone)
    assert run.prep_keys("data")[1].endswith(":excluded") and run.is_excluded("data", 1)
    assert _prepare(run, "data", 2).ok  # the next file is prepared under its own name
    assert Path(run.prep_path("data", 2)).name.startswith("data_2-") and os.path.exists(run.prep_path("data", 2))
    assert not run.is_excluded("data", 2)


def test_a_file_changed_during_a_run_is_named(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    run = plan.start_run()
    changed = tmp_path / "data_0.root"
    size = changed.stat().st_size
    write_toy_file(str(changed), N // 2, is_data=True, seed=77)
    report = _prepare(run, "data", 0)
    ((_, reason),) = report.failed
    assert reason.startswith(f"PrepError: {changed}: changed since the run started (size {size} -> "
                             f"{changed.stat().st_size} bytes, mtime_ns "), reason
    assert "\n" not in reason and not os.path.exists(run.prep_path("data", 0))


def test_without_a_run_a_removed_file_is_named_not_an_index_error(tmp_path: Path) -> None:
    plan = Plan.create(_config(tmp_path), tmp_path / "res")
    (tmp_path / "data_2.root").unlink()
    with pytest.raises(ConfigError, match=r"^sample data: no input file 2: its files match 2 file\(s\) now"):
        plan.prep_path("data", 2)


def test_a_run_file_of_another_config_version_says_so(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = Plan.create(cfg, tmp_path / "res").start_run()
    d = yaml.safe_load(cfg.read_text())
    d["samples"]["data"]["files"] = ["data_[01].root"]
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(ConfigError, match=r"no input list of sample 'data' for files \['data_\[01\].root'\]: the "
                                          r"config changed since the run started; run again"):
        run.input_files("data")
