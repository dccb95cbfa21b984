"""kill -9 of a small run at random points and at each step of publishing (issue 17, item 8): after every
kill the published view is absent, the previous complete set or the new complete set, never a mix; a final
rerun publishes tables byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from calibflow.export.publish import CURRENT, KILL_AT, MANIFEST, published_dir

from .conftest import tiny_demo_dict

NOT_COMPARED = {"corrections.root"}
"""Published files with a timestamp or UUID inside (uproot's); every other one is compared byte for byte."""
STARTUP = 3.0
"""Seconds a ``calibflow run`` process takes to start (imports, luigi), added to the in-process reference times."""
PUBLISH_POINTS = ("publish:built", "publish:linked", "publish:switched")
"""Where publication kills itself (``$CALIBFLOW_KILL_AT``): set built, switch link made, switched."""


def _config(description: str) -> dict[str, Any]:
    """The tiny demo with every export (PNG only), a fit gallery and the report; ``description`` enters the
    export key only, so changing it re-exports and republishes without refitting."""
    d = tiny_demo_dict()
    d["description"] = description
    d["outputs"] = {"correctionlib": True, "plots": True, "plot_formats": ["png"], "report": True,
                    "markdown": True, "latex": True}
    return d


def _start(cfg: Path, result_dir: Path, kill_at: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at:
        env[KILL_AT] = kill_at
    return subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", str(cfg), "--workers", "2", "--quiet",
                             "--result-dir", str(result_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)


def _finish(proc: subprocess.Popen[str]) -> str:
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    return out


def _published(work: Path) -> dict[str, Any]:
    """The visible manifest and the bytes of every file it lists (through the stable names)."""
    manifest = json.loads((work / MANIFEST).read_text())
    return {"key": manifest["key"], "files": manifest["files"],
            "bytes": {rel: (work / rel).read_bytes() for rel in manifest["files"] if rel not in NOT_COMPARED}}


def _check_view(work: Path, refs: dict[str, dict[str, Any]], note: str) -> str | None:
    """Assert that ``work`` shows nothing, or one complete set of a reference; returns its key (None: nothing)."""
    if not (work / MANIFEST).exists():
        assert not (work / "efficiencies.csv").exists(), f"{note}: tables without a manifest"
        return None
    manifest = json.loads((work / MANIFEST).read_text())
    ref = refs.get(manifest["key"])
    assert ref is not None, f"{note}: published key {manifest['key']} is neither set's"
    assert manifest["files"] == ref["files"], note
    folder = published_dir(str(work))
    assert folder is not None and os.path.samefile(work / MANIFEST, os.path.join(folder, MANIFEST)), note
    for rel in manifest["files"]:
        assert (work / rel).exists(), f"{note}: {rel} listed but missing"
        assert os.path.samefile(work / rel, os.path.join(folder, rel)), f"{note}: {rel} of another set"
        if rel not in NOT_COMPARED:
            assert (work / rel).read_bytes() == ref["bytes"][rel], f"{note}: {rel} differs from its set's"
    return manifest["key"]


@pytest.mark.slow
def test_kill_9_at_random_points_and_while_publishing_never_shows_a_mix(tmp_path: Path) -> None:
    from tasks.cli import main

    seed = int(os.environ.get("CALIBFLOW_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    cfg = tmp_path / "tiny.yaml"
    refs: dict[str, dict[str, Any]] = {}
    keys = []
    times = []
    for description in ("first", "second"):  # uninterrupted: the reference of each set (the second: exports)
        cfg.write_text(yaml.safe_dump(_config(description), sort_keys=False))
        t0 = time.monotonic()
        assert main(["run", str(cfg), "--workers", "2", "--quiet", "--result-dir", str(tmp_path / "reference")]) == 0
        times.append(time.monotonic() - t0 + STARTUP)
        ref = _published(tmp_path / "reference" / "small_demo")
        refs[ref["key"]] = ref
        keys.append(ref["key"])
    run_time, export_time = times

    work = tmp_path / "res" / "small_demo"
    seen: list[str | None] = []
    killed: list[tuple[str, str]] = []
    for description, old, new in (("first", None, keys[0]), ("second", keys[0], keys[1])):
        cfg.write_text(yaml.safe_dump(_config(description), sort_keys=False))
        if old is None:  # random kills through the whole run, then the first publication killed after its switch
            points = [f"after {rng.uniform(0.0, run_time):.2f} s" for _ in range(2)] + [PUBLISH_POINTS[2]]
        else:  # a republication killed before its switch, at random, after its switch
            points = [*PUBLISH_POINTS[:2], f"after {rng.uniform(0.0, export_time):.2f} s", PUBLISH_POINTS[2]]
        for point in points:
            note = f"{description} set, killed {point} (seed {seed})"
            if point in PUBLISH_POINTS:
                proc = _start(cfg, tmp_path / "res", kill_at=point)
                proc.wait(timeout=300)
            else:
                proc = _start(cfg, tmp_path / "res")
                try:
                    proc.wait(timeout=float(point.split()[1]))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out = proc.stdout.read() if proc.stdout else ""
            assert proc.returncode in (0, -signal.SIGKILL), f"{note}:\n{out}"
            key = _check_view(work, refs, note)
            assert key in (old, new), f"{note}: shows {key}, expected {old} or {new}"
            if point in PUBLISH_POINTS and proc.returncode != 0:  # killed there: which set is known
                assert key == (new if point == "publish:switched" else old), f"{note}: shows {key}"
            seen.append(key)
            if proc.returncode != 0:
                killed.append((description, point))
        _finish(_start(cfg, tmp_path / "res"))
        assert _check_view(work, refs, f"{description} set, rerun (seed {seed})") == new
        assert len(list((work / ".published").iterdir())) <= 2  # the set and the previous one
    assert {("second", "publish:built"), ("second", "publish:linked")} <= set(killed), killed  # always reached
    assert keys[0] in seen and os.readlink(work / "efficiencies.csv") == os.path.join(CURRENT, "efficiencies.csv")
    assert not list(work.rglob("*.tmp-*"))
