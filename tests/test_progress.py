"""Progress (plain lines, or a live bar on a terminal), one log per task, and the closing summary (tasks run,
reused, failed with reasons, by the tasks' labels)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from calibflow.io.store import read_metadata
from calibflow.plan import Plan
from tasks import ExportTables
from tasks.runner import RunReport, build

from .conftest import demo_dict, tiny_demo_dict

LINE = re.compile(r"^\[\s*(\d+)/(\d+)(\+?)\] (\w+)\((.*)\) (done in ([-\d.]+) s|FAILED|needs (\d+) more)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, RunReport, str, RunReport, str]:
    """A tiny calibration with a fit-model systematic (two EfficiencyTable tasks yielding their fits while
    other tasks run) built twice with 2 workers in one result folder, with the progress output of each build."""
    import yaml

    tmp = tmp_path_factory.mktemp("progress")
    d = tiny_demo_dict()
    d["systematics"] = demo_dict()["systematics"]
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan = Plan.create(cfg, tmp / "res")
    outputs = []
    for _ in range(2):
        stream = io.StringIO()
        report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 2, progress=stream)
        outputs += [report, stream.getvalue()]
    return (plan, *outputs)  # type: ignore[return-value]


def test_progress_counts_every_task_to_the_total(tiny_run) -> None:
    _, report, text, _, _ = tiny_run
    assert report.ok, report.failed
    lines = [LINE.match(ln) for ln in text.splitlines()]
    assert all(lines), text
    done = [m for m in lines if m.group(6).startswith("done")]
    # one counter for the whole run: it rises by one per finished task and ends at the total
    assert [int(m.group(1)) for m in done] == list(range(1, len(done) + 1))
    assert int(done[-1].group(1)) == int(done[-1].group(2)) == sum(report.tasks_ran.values())
    assert done[-1].group(4) == "ExportTables"
    assert not any(m.group(7).startswith("-") for m in done)
    # the total grows when the EfficiencyTable tasks yield their fits, and says so ("+") until both are done
    totals = [int(m.group(2)) for m in lines]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    tables = [k for k, m in enumerate(lines) if m.group(4) == "EfficiencyTable" and m.group(6).startswith("done")]
    assert len(tables) == 2
    assert [m.group(3) for m in lines] == ["+"] * tables[-1] + [""] * (len(lines) - tables[-1])
    # one line per yield (not one per task running meanwhile), naming the yielding task and what it waits for
    needs = [m for m in lines if m.group(6).startswith("needs")]
    assert sorted((m.group(4), m.group(5)) for m in needs) == [("EfficiencyTable", ""),
                                                                ("EfficiencyTable", "variant=sigmodel")]
    assert all(int(m.group(8)) > 0 for m in needs)
    assert sum(1 for m in done if m.group(4) == "FitBin") == 3  # data, data refitted, mc shared by both
    assert len({ln.split("] ", 1)[1] for ln in text.splitlines()}) == len(lines)  # no line said twice


def test_progress_reports_candidates_read_by_tuple_preparation(tiny_run) -> None:
    """Flat tuples hold candidates, not events: the lines count candidates (and files, each prepared once)."""
    plan, _, text, _, _ = tiny_run
    prep = re.findall(r"PrepareTuple\(sample=(\w+), index=(\d+)\) done in [\d.]+ s: (\d+) candidates read "
                      r"\(prep (\d)/2\+? files, (\d+) candidates\)", text)
    assert len(prep) == 2
    assert "events" not in text and "preparations" not in text
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


@dataclass
class FakePrep:
    """Enough of a ``PrepareTuple`` task for the progress: family, id, label, input file and output."""

    task_id: str
    sample: str
    index: int
    src: str
    out: str
    task_family: str = "PrepareTuple"
    made: int = 1

    def to_make(self) -> dict[int, None]:
        """The preparations of the file the task makes (one per distinct selection of its variants)."""
        return dict.fromkeys(range(self.made))

    def run(self) -> None:
        """Not a generator: the task yields no tasks."""

    def to_str_params(self) -> dict[str, str]:
        return {"sample": self.sample, "index": str(self.index), "variant": self.task_id}

    def output(self) -> SimpleNamespace:
        return SimpleNamespace(path=self.out)

    @property
    def plan(self) -> SimpleNamespace:
        return SimpleNamespace(input_files=lambda sample: [self.src] * (self.index + 1))


def _prepared(path: Path, flow: dict[str, int]) -> str:
    import h5py

    from calibflow.io.store import write_metadata

    with h5py.File(path, "w") as h5:
        write_metadata(h5, {"cutflow": flow})
    return str(path)


def test_prep_progress_counts_input_files_and_names_what_was_read(tmp_path: Path) -> None:
    """A file prepared for two variants (another selection) is one input file of the counter, done when both
    preparations are; flat tuples count candidates, paired NanoAOD events."""
    import luigi.scheduler

    from tasks.progress import LineProgress

    flat = _prepared(tmp_path / "flat.h5", {"read": 100, "tag": 40})
    nano = _prepared(tmp_path / "nano.h5", {"read": 7, "event": 5, "pairs": 9, "tag": 3})
    tasks = [FakePrep("nominal", "data", 0, "data_0.root", flat), FakePrep("tagsel", "data", 0, "data_0.root", flat),
             FakePrep("mc", "mc", 0, "mc_0.root", nano)]
    stream = io.StringIO()
    with LineProgress(stream) as progress:
        for task in tasks:
            progress.scheduled(task, luigi.scheduler.PENDING)
        assert progress.prep_note() == "prep 0/2 files (0/3 preparations)"
        for task in tasks:
            progress.finished(task, luigi.scheduler.DONE)
    lines = [ln.split(" done in ")[1].split(": ", 1)[1] for ln in stream.getvalue().splitlines()]
    assert lines == ["100 candidates read (prep 0/2 files (1/3 preparations), 100 candidates)",
                     "100 candidates read (prep 1/2 files (2/3 preparations), 200 candidates)",
                     "7 events read (prep 2/2 files (3/3 preparations), 200 candidates, 7 events)"]
    single = LineProgress(io.StringIO())
    for task in tasks[::2]:
        single.scheduled(task, luigi.scheduler.PENDING)
    single.finished(tasks[0], luigi.scheduler.DONE)
    assert single.prep_note() == "prep 1/2 files, 100 candidates"  # one preparation per file: no second count


def test_prep_progress_counts_one_read_per_file(tmp_path: Path) -> None:
    """A task preparing its file for several variants reads it once: its entries count once, its preparations
    each."""
    import luigi.scheduler

    from tasks.progress import LineProgress

    flat = _prepared(tmp_path / "flat.h5", {"read": 100, "tag": 40})
    tasks = [FakePrep("data0", "data", 0, "data_0.root", flat, made=3), FakePrep("data1", "data", 1, "d1.root", flat)]
    stream = io.StringIO()
    with LineProgress(stream) as progress:
        for task in tasks:
            progress.scheduled(task, luigi.scheduler.PENDING)
        assert progress.prep_note() == "prep 0/2 files (0/4 preparations)"
        for task in tasks:
            progress.finished(task, luigi.scheduler.DONE)
    assert progress.prep_note() == "prep 2/2 files (4/4 preparations), 200 candidates"


LUIGI_ID = re.compile(r"\b[A-Z]\w*_[0-9a-f]{10}\b")
"""A luigi task id (``PrepareTuple_data_0__tmp_..._1a2b3c4d5e``)."""


def test_failure_summary_names_the_task_and_the_reason(corrupt_input_config: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(corrupt_input_config), "--result-dir",
                          str(tmp_path / "res")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    summary = re.search(r"calibflow: damaged: (\d+) task\(s\) run, 0 reused, 1 failed", out.stdout)
    assert summary, out.stdout
    # the task by its label, never by its luigi id; the reason; where the tracebacks are
    failed = re.findall(r"^  FAILED (.*?): (.*)$", out.stderr, re.M)
    assert len(failed) == 1, out.stderr
    label, reason = failed[0]
    assert label == "PrepareTuple(sample=data, index=0)"
    assert reason.startswith("PrepError: ") and "data_damaged.root: reading failed" in reason
    assert re.search(r"^  \d+ task\(s\) not run because of the failures above$", out.stderr, re.M)
    assert re.search(r"^  tracebacks in the task logs: .*/res/damaged/logs/<family>/$", out.stderr, re.M)
    progress = re.search(r"^\[\s*\d+/\d+\+?\] PrepareTuple\(sample=data, index=0\) FAILED in [\d.]+ s: (.*)$", out.stdout,
                         re.M)
    assert progress and progress.group(1) == reason, out.stdout
    assert not LUIGI_ID.search(out.stdout + out.stderr), out.stdout + out.stderr
    assert "Traceback" not in out.stderr  # luigi's copy of it: the task's own log holds the traceback
    (text,) = [t for p in (tmp_path / "res" / "damaged" / "logs" / "PrepareTuple").glob("*.log")
               if f"start {label}" in (t := p.read_text())]
    assert "Traceback" in text and "PrepError" in text and " end " in text
    # the bins are summarised with what exists: the simulation was counted, the data never fitted
    assert re.search(r"^  nominal data: +0 ok, 0 flagged, 0 low statistics, 2 failed$", out.stdout, re.M), out.stdout
    assert re.search(r"^  nominal mc: +2 ok, 0 flagged, 0 low statistics, 0 failed$", out.stdout, re.M), out.stdout


def _run_in_terminal(args: list[str], columns: int = 100, timeout: float = 600) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal of ``columns``; its exit code and output."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 1.0)[0]:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the terminal closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_live_bar_on_a_terminal(tmp_path: Path, write_config) -> None:
    """On a terminal: a live bar (counter with a growing total, ETA, running tasks), no progress lines."""
    cfg = write_config(tiny_demo_dict())
    code, raw = _run_in_terminal([sys.executable, "-m", "tasks.cli", "run", str(cfg), "--result-dir",
                                  str(tmp_path / "res"), "--workers", "1"])
    text = ANSI.sub("", raw).replace("\r", "\n")
    assert code == 0, text
    assert "\x1b[" in raw  # redrawn in place
    frames = re.findall(r"(\d+)/(\d+)(\+?) tasks", text)
    assert frames, text
    assert any(plus for *_, plus in frames)  # the total may still grow while EfficiencyTable has not yielded
    done, total, plus = frames[-1]
    assert done == total and not plus  # the final bar: every task done
    ran = re.search(r"calibflow: small_demo: (\d+) task\(s\) run", text)
    assert ran and int(ran.group(1)) == int(total), text
    assert re.search(r"ETA (≥)?\d+:\d\d:\d\d", text), text
    assert re.search(r"running: \w+\(", text), text
    assert re.search(r"prep \d/2\+? files, \d+ candidates", text), text
    assert not re.search(r"^\[\s*\d+/\d+\+?\] ", text, re.M), text  # never both: no plain lines
    assert "bins per variant and sample" in text and "outputs in " in text
