"""The real luigi central scheduler: calibflow scheduler start/stop/status, runs under it, status, web UI."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from calibflow.ops import scheduler, status
from tasks.cli import main

from .conftest import tiny_demo_dict


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def luigid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[scheduler.Server]:
    """A luigid on a free localhost port, stopped (only it) at the end."""
    srv = scheduler.start(free_port(), str(tmp_path_factory.mktemp("luigid")))
    yield srv
    scheduler.stop(srv.state_dir)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    return cfg


def _run(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _counts(text: str) -> dict[str, dict[str, int]]:
    """Rows of the status table: stage -> {pending, running, done, failed}."""
    rows = re.findall(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
    return {r[0]: dict(zip(status.COLUMNS, map(int, r[1:]), strict=True)) for r in rows}


def test_scheduler_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, state = free_port(), str(tmp_path / "state")
    assert main(["scheduler", "start", "--port", str(port), "--state-dir", state]) == 0
    srv = scheduler.server(state)
    assert srv is not None and srv.port == port
    assert f"http://localhost:{port}" in capsys.readouterr().out
    scheduler.ping("localhost", port)
    assert main(["scheduler", "status", "--state-dir", state]) == 0
    assert f"pid {srv.pid}" in capsys.readouterr().out

    assert main(["scheduler", "start", "--port", str(port), "--state-dir", state]) == 2
    assert "already runs" in capsys.readouterr().err

    assert main(["scheduler", "stop", "--state-dir", state]) == 0
    assert not os.path.exists(f"/proc/{srv.pid}") or "Z" in Path(f"/proc/{srv.pid}/stat").read_text().split()[2]
    assert os.path.exists(os.path.join(state, "state.pickle"))  # luigid saved its state
    assert os.path.exists(os.path.join(state, "logs", "luigi-server.log"))
    assert main(["scheduler", "status", "--state-dir", state]) == 1
    assert main(["scheduler", "stop", "--state-dir", state]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no scheduler runs from" in err


def test_unreachable_scheduler_is_a_one_line_error(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["run", str(tiny_config), "--scheduler-port", str(port)]) == 2
    assert main(["status", "--scheduler-host", "localhost", "--scheduler-port", str(port)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"no luigi scheduler answers at http://localhost:{port}" in e for e in err)
    assert main(["scheduler", "start", "--port", "0"]) == 2
    assert "a TCP port is 1..65535" in capsys.readouterr().err


def test_run_under_central_scheduler_and_status(luigid: scheduler.Server, tiny_config: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "res"
    run = _run(["run", str(tiny_config), "--scheduler-port", str(luigid.port), "--result-dir", str(res)])
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, out + err
    n = int(re.search(r"(\d+) task\(s\) run, 0 reused, 0 failed", out).group(1))

    assert main(["status", str(tiny_config), "--result-dir", str(res), "--scheduler-port", str(luigid.port)]) == 0
    text = capsys.readouterr().out
    assert f"{n} task(s) of calibration small_demo" in text
    counts = _counts(text)
    assert counts["total"] == {"pending": 0, "running": 0, "done": n, "failed": 0}
    assert counts["FitBin"]["done"] == 2 and counts["PrepareTuple"]["done"] == 2  # one task per sample: 2 bins

    graph = status.calibration_graph("localhost", luigid.port, str(tiny_config), str(res))
    assert len(graph) == n and all(t["status"] == "DONE" for t in graph.values())
    with urllib.request.urlopen(f"{luigid.url}/static/visualiser/index.html", timeout=10) as r:  # the web UI
        assert r.status == 200 and b"Luigi Task Status" in r.read()


def test_two_concurrent_runs_share_the_work(luigid: scheduler.Server, tiny_config: Path, tmp_path: Path) -> None:
    """Two invocations on one result folder: each task runs once, both succeed, nothing is left partial."""
    res = tmp_path / "shared"
    args = ["run", str(tiny_config), "--workers", "1", "--scheduler-port", str(luigid.port), "--result-dir", str(res)]
    runs = [_run(args), _run(args)]
    outs = [r.communicate(timeout=600) for r in runs]
    for r, (out, err) in zip(runs, outs, strict=True):
        assert r.returncode == 0, out + err
    ran = [int(re.search(r"(\d+) task\(s\) run", out).group(1)) for out, _ in outs]
    total = len(status.calibration_graph("localhost", luigid.port, str(tiny_config), str(res)))
    assert sum(ran) == total, outs  # no task ran twice
    # the invocation that ran less waited for the other's tasks instead of giving up or redoing them
    waited = outs[ran.index(min(ran))][0]
    assert re.search(r", 0 failed, [1-9]\d* run by another invocation", waited), waited
    logs = list((res / "small_demo" / "logs").glob("*/*.log"))
    assert len(logs) == total
    for log in logs:
        starts = log.read_text().count(" start ")
        # EfficiencyTable starts, yields its fits and starts again once they are done; when both runs
        # have started it before the fits were done, it starts once more (the yield only checks)
        assert starts in ((2, 3) if log.parent.name == "EfficiencyTable" else (1,)), log
    assert not list(res.rglob("*.tmp-*"))
    assert (res / "small_demo" / "manifest.json").exists()
