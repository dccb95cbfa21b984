"""Shared fixtures: the demo run (once per session) and small configs written to temporary folders."""

from __future__ import annotations

import copy
from collections.abc import Callable
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
    from calibflow.cli import main

    result_dir = tmp_path_factory.mktemp("demo_results")
    assert main(["run", str(DEMO), "--workers", "2", "--result-dir", str(result_dir)]) == 0
    return result_dir / "demo_jpsi"
