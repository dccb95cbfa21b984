"""Shared helpers of the recipe tests: shrink a recipe, run it, read its closure and cut flow."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calibflow.tables.rows import read_csv
from tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]


def recipe(name: str) -> dict[str, Any]:
    """``task_configs/<name>.yaml`` as a dict (a fresh copy), its relative lumi masks made absolute."""
    d = copy.deepcopy(yaml.safe_load((ROOT / "task_configs" / f"{name}.yaml").read_text()))
    for s in d["samples"].values():
        if s.get("lumi_mask"):
            s["lumi_mask"] = str(ROOT / "task_configs" / s["lumi_mask"])
    return d


def shrink(d: dict[str, Any], candidates: dict[str, int], edges: dict[str, list[float]]) -> dict[str, Any]:
    """CI-size copy of a recipe: one toy file of ``candidates`` per sample, coarser ``edges`` per
    binning variable, only the CSV/JSON outputs."""
    d = copy.deepcopy(d)
    d["name"] = f"{d['name']}_ci"
    d["toy"]["samples"] = {s: {"candidates": n, "files": 1} for s, n in candidates.items()}
    for v in d["binning"]["variables"]:
        v["edges"] = edges[v["name"]]
    d["outputs"] = {"correctionlib": True, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": False}
    return d


def run(d: dict[str, Any], folder: Path) -> Path:
    """Run the recipe ``d`` from ``folder`` with one worker (the CI toys are small: no worker pool to fork,
    and the test process's warm fit kernels are used); its outputs."""
    path = folder / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(path), "--workers", "1", "--result-dir", str(folder / "res")]) == 0
    return folder / "res" / d["name"]


def pulls(out: Path, quantity: str = "efficiency") -> np.ndarray:
    """Closure pulls of ``quantity`` over every sample and bin."""
    return np.array([r["pull"] for r in read_csv(out / "closure.csv") if r["quantity"] == quantity], dtype=float)


MIN_CLOSURE_PULLS = 150
"""Pulls a strict closure test needs: the mean of N unit-Gaussian pulls scatters by 1/√N and their width
by ≈ 1/√(2N), so ±0.2 and [0.8, 1.2] are ≥ 2.5σ bands from N ≈ 150 (the demo has 156 bins)."""


def assert_closes(p: np.ndarray) -> None:
    """Issue #8's closure: pull mean within ±0.2 and width within [0.8, 1.2], on ≥ 150 pulls."""
    assert p.size >= MIN_CLOSURE_PULLS and np.all(np.isfinite(p)), (p.size, p)
    assert abs(p.mean()) < 0.2, (p.mean(), p)
    assert 0.8 <= p.std(ddof=1) <= 1.2, (p.std(ddof=1), p)


def assert_closes_widened(p: np.ndarray) -> None:
    """Closure of recipes whose CI toy has only a few dozen bins: bands widened by 2/√N (see
    :func:`assert_closes`; these recipes still need more bins for the strict test)."""
    assert p.size >= 8 and np.all(np.isfinite(p)), p
    allowance = 2.0 / math.sqrt(p.size)
    assert abs(p.mean()) < 0.2 + allowance, (p.mean(), p)
    assert 0.8 - allowance <= p.std(ddof=1) <= 1.2 + allowance, (p.std(ddof=1), p)


def strictly_decreasing(values: list[float]) -> bool:
    """Whether every value is below the one before it."""
    return all(b < a for a, b in itertools.pairwise(values))


def efficiencies(out: Path, wp: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Rows of ``efficiencies.csv`` (nominal, or of working point ``wp``) by (sample, bin)."""
    folder = out if wp is None else out / "wp" / wp
    return {(r["sample"], r["bin"]): r for r in read_csv(folder / "efficiencies.csv")}


def toy_inputs(out: Path, sample: str) -> list[Path]:
    """The generated toy ROOT files of ``sample``."""
    files = sorted((out / "inputs").glob(f"{sample}_*.root"))
    assert files, sample
    return files


def bin_index(edges: list[list[float]], values: list[np.ndarray]) -> np.ndarray:
    """Row-major bin index of the product binning ``edges`` (−1 outside), like the efficiency tables."""
    index = np.zeros(len(values[0]), dtype=np.int64)
    inside = np.ones(len(values[0]), dtype=bool)
    for e, v in zip(edges, values, strict=True):
        i = np.searchsorted(e, v, side="right") - 1
        inside &= (i >= 0) & (i < len(e) - 1)
        index = index * (len(e) - 1) + i
    return np.where(inside, index, -1)
