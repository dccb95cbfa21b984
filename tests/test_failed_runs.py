"""After a failed run (issue 16, items 11 and 12): the published files of the last good run stay and are
marked stale (manifest.json, STALE.txt, report banners, a closing line) until a run succeeds; ``calibflow
status CONFIG`` without a scheduler reads the result folder (outputs of the current keys per stage, which
failed and why), and keeps to the scheduler when one is given or answers at the default address."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from calibflow.export.report import with_banner
from calibflow.ops import scheduler
from calibflow.toys.registry import write_toy_file
from tasks.cli import main

from .conftest import tiny_demo_dict
from .test_badfiles import _damage_basket
from .test_scheduler import free_port


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _rows(text: str) -> dict[str, tuple[int, ...]]:
    """Rows of a status table: stage -> its four numbers."""
    rows = re.findall(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
    return {m[0]: tuple(map(int, m[1:])) for m in rows}


# --- banners ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("markdown", [False, True])
def test_banners_are_set_replaced_and_removed_exactly(markdown: bool) -> None:
    page = ('# calibflow report: x\n\nabout\n\n<a id="summary"></a>\n\n## Summary\n' if markdown else
            "<html><body><header>x</header><nav>n</nav><main><section>s</section></main></body></html>\n")
    one = with_banner(page, "limited", "a quick try", markdown)
    two = with_banner(one, "stale", "the latest run failed <here>", markdown)
    assert one != page and two.count("LIMITED:") == 1 and two.count("STALE:") == 1
    first = two.index("## Summary" if markdown else "<section>")
    assert two.index("STALE:") < two.index("LIMITED:") < first  # both above the first section
    if not markdown:
        assert '<p class="verdict bad"><b>STALE:</b> the latest run failed &lt;here&gt;</p>' in two
    again = with_banner(two, "stale", "failed again", markdown)
    assert again.count("STALE:") == 1 and "failed again" in again
    assert with_banner(again, "stale", None, markdown) == one
    assert with_banner(with_banner(one, "limited", None, markdown), "stale", None, markdown) == page


# --- a calibration of real files that fails, is reverted, changed and repaired ----------------------------
@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A counted calibration of real files (two data files, one mc) run once successfully; a damaged file
    ``bad.root`` lies beside them."""
    folder = tmp_path_factory.mktemp("failed_runs")
    for i in range(2):
        write_toy_file(str(folder / f"data_{i}.root"), 6000, is_data=True, seed=30 + i)
    write_toy_file(str(folder / "mc_0.root"), 6000, is_data=False, seed=40)
    write_toy_file(str(folder / "bad.root"), 6000, is_data=True, seed=41)
    _damage_basket(folder / "bad.root")
    d = tiny_demo_dict()
    d["name"] = "counted"
    del d["toy"]
    d["samples"]["data"].update(files=["data_*.root"], method="count")
    d["samples"]["mc"]["files"] = ["mc_*.root"]
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": True}
    (folder / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    code, _, err = _run(folder)
    assert code == 0, err
    return folder


@pytest.fixture(autouse=True)
def no_default_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """``calibflow status`` looks for a scheduler at the default address: make it a port nobody listens on."""
    monkeypatch.setattr("tasks.cli.DEFAULT_PORT", free_port())


def _run(folder: Path) -> tuple[int, str, str]:
    return run_cli("run", str(folder / "c.yaml"), "--result-dir", str(folder / "res"), "--workers", "1",
                   "--quiet")


def _status(folder: Path) -> str:
    code, out, err = run_cli("status", str(folder / "c.yaml"), "--result-dir", str(folder / "res"))
    assert code == 0 and not err, err
    return out


def _stale_marks(work: Path) -> dict[str, bool]:
    return {"STALE.txt": (work / "STALE.txt").exists(),
            "manifest": "stale" in json.loads((work / "manifest.json").read_text()),
            "report.md": "**STALE:**" in (work / "report.md").read_text(),
            "report.html": "<b>STALE:</b>" in (work / "report.html").read_text()}


def test_a_failed_run_marks_the_published_files_stale_until_a_run_succeeds(counted: Path) -> None:
    work = counted / "res" / "counted"
    manifest = json.loads((work / "manifest.json").read_text())
    published = {n: (work / n).read_bytes() for n in ("efficiencies.csv", "report.md", "report.html")}
    assert not any(_stale_marks(work).values())

    shutil.copy(counted / "bad.root", counted / "data_9.root")  # the same config file, one more (bad) input
    code, _, err = _run(counted)
    assert code == 1
    assert "keeps the tables of the last successful run, marked stale (STALE.txt, manifest.json, the " \
           "report) until a run succeeds" in err
    assert _stale_marks(work) == {"STALE.txt": True, "manifest": True, "report.md": True, "report.html": True}
    assert (work / "efficiencies.csv").read_bytes() == published["efficiencies.csv"]  # the files stay
    now = json.loads((work / "manifest.json").read_text())
    assert {k: v for k, v in now.items() if k not in ("stale", "sha256")} == {k: v for k, v in manifest.items()
                                                                            if k != "sha256"}
    assert "STALE.txt" in now["sha256"] and now["sha256"]["report.md"] != manifest["sha256"]["report.md"]
    stale = now["stale"]
    assert stale["config"] == str(counted / "c.yaml") and stale["key"] not in (None, manifest["key"])
    assert stale["why"] == "same config file, changed inputs or run options"
    assert stale["since"] == stale["failed_at"] and len(stale["failures"]) == 1
    assert stale["failures"][0].startswith("PrepareTuple(sample=data, index=2): ")
    text = (work / "STALE.txt").read_text().splitlines()
    assert text[0].startswith("STALE: the latest calibflow run failed (") and manifest["key"] in text[0]
    assert text[1].startswith("  FAILED PrepareTuple(sample=data, index=2): PrepError: ")
    assert "data_9.root" in text[1]

    # status from the result folder: what exists for the current keys, what failed and why
    out = _status(counted)
    assert out.startswith(f"result folder {work} (no scheduler): outputs of the current keys, per stage")
    rows = _rows(out)
    assert rows["PrepareTuple"] == (4, 3, 1, 0)  # outputs, exist, failed, missing
    assert rows["FillHistograms"] == (2, 1, 0, 1) and rows["ExportTables"] == (1, 0, 0, 1)
    assert rows["FitBin"] == (4, 2, 0, 2)  # bins: simulation's results exist
    assert list(rows) == ["PrepareTuple", "MakeBinning", "FillHistograms", "FitBin", "EfficiencyTable",
                          "CombineTables", "ExportTables", "total"]
    assert re.search(r"^  PrepareTuple\(sample=data, index=2\): PrepError: .*data_9\.root: reading failed",
                     out, re.M)
    assert f"published: key {manifest['key']} of {counted / 'c.yaml'} (not the current key)" in out
    assert "\nSTALE: the latest calibflow run failed" in out

    # the bad file rewritten (a new identity, a new key) and not run yet: the old failure is not current
    write_toy_file(str(counted / "data_9.root"), 6000, is_data=True, seed=42)
    rows = _rows(out := _status(counted))
    assert rows["PrepareTuple"] == (4, 3, 0, 1) and "\nfailed (" not in out

    # reverted (the file removed): the published key is current again, nothing is re-exported, the marks go
    (counted / "data_9.root").unlink()
    code, out, err = _run(counted)
    assert code == 0 and "0 task(s) run" in out, err
    assert not any(_stale_marks(work).values())
    for name in ("report.md", "report.html"):  # byte for byte the published page of before
        assert (work / name).read_bytes() == published[name], name
    assert _rows(_status(counted))["total"][2:] == (0, 0)


def test_a_changed_config_that_fails_then_succeeds(counted: Path) -> None:
    work = counted / "res" / "counted"
    config = counted / "c.yaml"
    original = config.read_text()
    d = yaml.safe_load(original)
    d["samples"]["data"]["files"] = ["data_*.root", "bad.root"]
    config.write_text(yaml.safe_dump(d, sort_keys=False))
    try:
        assert _run(counted)[0] == 1
        first = json.loads((work / "manifest.json").read_text())["stale"]
        assert first["why"] == "the config file changed"
        assert _run(counted)[0] == 1  # failing again: the record is renewed, its start is kept
        second = json.loads((work / "manifest.json").read_text())["stale"]
        assert second["since"] == first["since"] and len(second["failures"]) == 1

        d["samples"]["data"]["files"] = ["data_*.root"]
        d["selection"]["probe"] += " and probe_P < 150"  # a new config that works: published anew
        config.write_text(yaml.safe_dump(d, sort_keys=False))
        code, out, err = _run(counted)
        assert code == 0 and "1 ExportTables" in out, err
        assert not any(_stale_marks(work).values())
    finally:
        config.write_text(original)


def test_another_config_of_the_same_name_that_fails(counted: Path) -> None:
    other = counted / "other.yaml"
    d = yaml.safe_load((counted / "c.yaml").read_text())
    d["samples"]["data"]["files"] = ["bad.root"]
    other.write_text(yaml.safe_dump(d, sort_keys=False))
    code, _, _ = run_cli("run", str(other), "--result-dir", str(counted / "res"), "--workers", "1", "--quiet",
                         "--overwrite")
    work = counted / "res" / "counted"
    stale = json.loads((work / "manifest.json").read_text())["stale"]
    assert code == 1 and stale["why"] == f"another config with the same name, {other}"
    assert f"of config {counted / 'c.yaml'}" in (work / "STALE.txt").read_text()
    code, _, err = _run(counted)  # the published config runs again: nothing to do, the marks go
    assert code == 0 and not any(_stale_marks(work).values()), err


def test_nothing_published_nothing_marked(counted: Path) -> None:
    config = counted / "bad_only.yaml"
    d = yaml.safe_load((counted / "c.yaml").read_text())
    d["samples"]["data"]["files"] = ["bad.root"]
    config.write_text(yaml.safe_dump(d, sort_keys=False))
    code, _, err = run_cli("run", str(config), "--result-dir", str(counted / "res_new"), "--quiet",
                           "--workers", "1")
    work = counted / "res_new" / "counted"
    assert code == 1 and "marked stale" not in err
    assert not (work / "STALE.txt").exists() and not (work / "manifest.json").exists()
    code, out, _ = run_cli("status", str(config), "--result-dir", str(counted / "res_new"))
    assert code == 0 and _rows(out)["PrepareTuple"] == (2, 1, 1, 0)
    assert out.rstrip().endswith("published: nothing yet")


def test_status_before_the_binning_exists(counted: Path) -> None:
    out = run_cli("status", str(counted / "c.yaml"), "--result-dir", str(counted / "res_empty"))[1]
    rows = _rows(out)
    assert rows["PrepareTuple"] == (3, 0, 0, 3) and rows["FillHistograms"] == (2, 0, 0, 2)
    assert "FitBin" not in rows and "FitBin: not known until the binning exists" in out


def test_status_without_config_needs_a_scheduler() -> None:
    code, out, err = run_cli("status")
    assert code == 2 and not out and "name a config to read its result folder" in err


# --- the scheduler mode is kept ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def luigid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[scheduler.Server]:
    """A luigid on a free localhost port, stopped (only it) at the end."""
    srv = scheduler.start(free_port(), str(tmp_path_factory.mktemp("luigid")))
    yield srv
    scheduler.stop(srv.state_dir)


def test_status_reads_a_running_scheduler_that_knows_the_calibration(
        luigid: scheduler.Server, counted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    res = tmp_path / "res"
    run = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(config), "--result-dir", str(res),
                          "--scheduler-port", str(luigid.port), "--workers", "1", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    monkeypatch.setattr("tasks.cli.DEFAULT_PORT", luigid.port)  # the scheduler answers at the default address
    code, out, err = run_cli("status", str(config), "--result-dir", str(res))
    assert code == 0, err
    assert out.startswith(f"scheduler http://localhost:{luigid.port}: ")
    assert "task(s) of calibration small_demo" in out
    assert _rows(out)["total"][2] > 0 and "published: key " in out  # done tasks, then the folder's line
    # a calibration the scheduler does not know: its result folder
    out = run_cli("status", str(counted / "c.yaml"), "--result-dir", str(counted / "res"))[1]
    assert out.startswith("result folder ")
    # given explicitly, the scheduler is asked even when it knows nothing of the calibration
    out = run_cli("status", str(counted / "c.yaml"), "--result-dir", str(counted / "res"), "--scheduler-port",
                  str(luigid.port))[1]
    assert out.startswith(f"scheduler http://localhost:{luigid.port}: 0 task(s)")
