"""Progress lines, one log per task, and the closing summary (tasks run, reused, failed with reasons)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from calibflow.io.store import read_metadata
from calibflow.plan import Plan
from tasks import ExportTables
from tasks.runner import RunReport, build

from .conftest import tiny_demo_dict

LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (\w+)\((.*)\) (done|FAILED|needs)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, RunReport, str, RunReport, str]:
    """A tiny calibration built twice in one result folder, with the progress output of each build."""
    import yaml

    tmp = tmp_path_factory.mktemp("progress")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    plan = Plan.create(cfg, tmp / "res")
    outputs = []
    for _ in range(2):
        stream = io.StringIO()
        report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1, progress=stream)
        outputs += [report, stream.getvalue()]
    return (plan, *outputs)  # type: ignore[return-value]


def test_progress_counts_every_task_to_the_total(tiny_run) -> None:
    _, report, text, _, _ = tiny_run
    assert report.ok, report.failed
    lines = [LINE.match(ln) for ln in text.splitlines()]
    assert all(lines), text
    done = [m for m in lines if m.group(5) == "done"]
    # the count rises by one per finished task and ends at the total, which grows with dynamic dependencies
    assert [int(m.group(1)) for m in done] == list(range(1, len(done) + 1))
    assert int(done[-1].group(1)) == int(done[-1].group(2)) == sum(report.tasks_ran.values())
    assert done[-1].group(3) == "ExportTables"
    assert any(m.group(3) == "EfficiencyTable" and m.group(5) == "needs" for m in lines)


def test_progress_reports_events_read_by_tuple_preparation(tiny_run) -> None:
    plan, _, text, _, _ = tiny_run
    prep = re.findall(r"PrepareTuple\(sample=(\w+), index=(\d+)\) done in [\d.]+ s: (\d+) events read "
                      r"\(prep (\d)/2 files, (\d+) events\)", text)
    assert len(prep) == 2
    read = {s: int(read_metadata(plan.prep_path(s, int(i)))["cutflow"]["read"]) for s, i, *_ in prep}
    assert read == {"data": 20000, "mc": 15000}  # every toy candidate is read
    assert [int(n) for *_, n in prep] == [read[prep[0][0]], 35000]
    assert [f for _, _, _, f, _ in prep] == ["1", "2"]


def test_one_log_per_task_with_start_and_end(tiny_run) -> None:
    plan, report, _, _, _ = tiny_run
    logs = sorted(Path(plan.workdir, "logs").glob("*/*.log"))
    assert len(logs) == sum(report.tasks_ran.values())
    assert {p.parent.name for p in logs} == set(report.ran)
    for log in logs:
        text = log.read_text()
        starts, ends = text.count(" start "), text.count(" end ")
        expected = 2 if log.parent.name == "EfficiencyTable" else 1  # it runs again after its new tasks
        assert starts == ends == expected, (log, text)
        assert log.stem in text


def test_second_build_reuses_and_says_so(tiny_run) -> None:
    _, first, _, second, text = tiny_run
    assert second.ok
    assert sum(second.ran.values()) == 0 and sum(second.reused.values()) == 1
    assert second.summary() == "0 task(s) run, 1 reused, 0 failed"
    assert text == ""  # nothing ran, nothing to report
    assert first.summary().startswith(f"{sum(first.tasks_ran.values())} task(s) run, 0 reused, 0 failed (")


def test_failure_summary_names_the_task_and_the_reason(corrupt_input_config: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(corrupt_input_config), "--result-dir",
                          str(tmp_path / "res")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    summary = re.search(r"calibflow: damaged: (\d+) task\(s\) run, 0 reused, 1 failed", out.stdout)
    assert summary, out.stdout
    failed = re.findall(r"^  FAILED (PrepareTuple\S+): (.*)$", out.stderr, re.M)
    assert len(failed) == 1, out.stderr
    task_id, reason = failed[0]
    assert reason.startswith("PrepError: ") and "data_damaged.root: reading failed" in reason
    assert re.search(r"^  \d+ task\(s\) not run because of the failures above$", out.stderr, re.M)
    assert re.search(r"\[\s*\d+/\d+\] PrepareTuple\(sample=data, index=0\) FAILED in", out.stdout)
    # the task's own log holds the traceback
    log = (tmp_path / "res" / "damaged" / "logs" / "PrepareTuple" / f"{task_id}.log").read_text()
    assert "Traceback" in log and "PrepError" in log and " end " in log
