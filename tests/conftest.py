"""Shared fixtures: the demo run (once per session) and small configs written to temporary folders."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "task_configs" / "demo.yaml"


def demo_dict() -> dict[str, Any]:
    """The demo recipe as a dict (a fresh copy)."""
    return copy.deepcopy(yaml.safe_load(DEMO.read_text()))


def small_demo_dict() -> dict[str, Any]:
    """The demo recipe shrunk for fast graph tests: 40k + 30k candidates, 3 x 2 bins."""
    d = demo_dict()
    d["name"] = "small_demo"
    d.pop("systematics", None)
    d["toy"]["samples"] = {"data": {"candidates": 40000, "files": 2}, "mc": {"candidates": 30000, "files": 1}}
    d["binning"]["variables"][0]["edges"] = [2, 6, 15, 200]
    d["binning"]["variables"][1]["edges"] = [2.0, 3.5, 5.0]
    return d


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    """Write a config dict as YAML under tmp_path and return its path."""

    def write(data: dict[str, Any], name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the full demo once (2 workers) and return its output folder."""
    from tasks.cli import main

    result_dir = tmp_path_factory.mktemp("demo_results")
    assert main(["run", str(DEMO), "--workers", "2", "--result-dir", str(result_dir)]) == 0
    return result_dir / "demo_jpsi"


def tiny_demo_dict() -> dict[str, Any]:
    """The demo shrunk to the bone for operations tests: one toy file per sample, 2 x 1 bins, no plots."""
    d = small_demo_dict()
    d["toy"]["samples"] = {"data": {"candidates": 20000, "files": 1}, "mc": {"candidates": 15000, "files": 1}}
    d["binning"]["variables"][0]["edges"] = [2, 10, 200]
    d["binning"]["variables"][1]["edges"] = [2.0, 5.0]
    d["outputs"] = {"correctionlib": True, "plots": False}
    return d


@pytest.fixture
def corrupt_input_config(tmp_path: Path, write_config: Callable[[dict[str, Any], str], Path]) -> Path:
    """A tiny config whose data sample is a real ROOT file with damaged baskets: its preparation fails midway."""
    import uproot

    from calibflow.toys.registry import write_toy_file

    src = tmp_path / "data_damaged.root"
    write_toy_file(str(src), 20000, is_data=True, seed=5)
    with uproot.open(src) as f:
        branch = f["DecayTree"]["Jpsi_M"]
        seek, size = int(branch.member("fBasketSeek")[0]), int(branch.member("fBasketBytes")[0])
    raw = bytearray(src.read_bytes())
    raw[seek + size // 2 : seek + size // 2 + 64] = bytes(64)  # zero compressed data inside the basket
    src.write_bytes(bytes(raw))
    d = tiny_demo_dict()
    d["name"] = "damaged"
    del d["toy"]["samples"]["data"]
    d["samples"]["data"]["files"] = [src.name]
    return write_config(d, "damaged.yaml")


@pytest.fixture
def server() -> Iterator[Any]:
    """A running XRootD server on 127.0.0.1 for one test (tests/xrootd_server.py; skips without xrootd)."""
    from tests.xrootd_server import running_server

    yield from running_server()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote retries as in production (3 attempts), with short waits."""
    from calibflow.io import remote

    monkeypatch.setattr(remote, "BACKOFF_S", 0.05)

