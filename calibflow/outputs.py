"""Assemble tables from per-bin results, export them and publish them under the calibration's folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calibflow.binning import BinningScheme
from calibflow.export.correctionlib import build_correction, write_correction_set
from calibflow.io.store import atomic_path
from calibflow.tables import closure_rows, efficiency_rows, read_csv, scale_factor_rows, write_csv

EFFICIENCIES, SCALE_FACTORS, CLOSURE, CORRECTIONS = "efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json"
MANIFEST = "manifest.json"


def write_tables(
    out_dir: str,
    scheme: BinningScheme,
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    truth: Mapping[str, np.ndarray | None],
) -> list[str]:
    """Write efficiencies.csv, scale_factors.csv and (with toy truth) closure.csv; return the files."""
    eff = efficiency_rows(scheme, results)
    sf = [row for d, m in pairs for row in scale_factor_rows(eff, d, m)]
    written = [os.path.join(out_dir, EFFICIENCIES), os.path.join(out_dir, SCALE_FACTORS)]
    write_csv(written[0], eff)
    write_csv(written[1], sf)
    true = {(s, i): float(t[i]) for s, t in truth.items() if t is not None for i in range(len(t)) if np.isfinite(t[i])}
    if true:
        written.append(os.path.join(out_dir, CLOSURE))
        write_csv(written[-1], closure_rows(eff, sf, true))
    return written


def export_tables(out_dir: str, scheme: BinningScheme, name: str, correctionlib: bool, plots: bool) -> list[str]:
    """corrections.json from scale_factors.csv and efficiency plots from efficiencies.csv."""
    written = []
    sf = read_csv(os.path.join(out_dir, SCALE_FACTORS))
    if correctionlib and sf:
        corrections = []
        for data in sorted({r["data"] for r in sf}):
            rows = [r for r in sf if r["data"] == data]
            cname = f"{name}_{data}_over_{rows[0]['mc']}" if len({r['data'] for r in sf}) > 1 else name
            corrections.append(
                build_correction(
                    cname,
                    scheme,
                    {r["bin"]: r["scale_factor"] for r in rows},
                    {r["bin"]: r["err_down"] for r in rows},
                    {r["bin"]: r["err_up"] for r in rows},
                )
            )
        path = os.path.join(out_dir, CORRECTIONS)
        write_correction_set(path, corrections, description=f"calibflow scale factors of {name}")
        written.append(path)
    if plots:
        from calibflow.plots import plot_efficiency_vs

        eff = read_csv(os.path.join(out_dir, EFFICIENCIES))
        for var in scheme.variables:
            others = [v for v in scheme.variables if v != var]
            path = os.path.join(out_dir, "plots", f"efficiency_vs_{var}.png")
            plot_efficiency_vs(eff, var, others, path, title=name)
            written.append(path)
    return written


def publish(out_dir: str, workdir: str, key: str, files: Sequence[str]) -> list[str]:
    """Copy ``files`` (under ``out_dir``) to ``workdir`` and record ``key`` in manifest.json last."""
    published = []
    for src in files:
        rel = os.path.relpath(src, out_dir)
        dst = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        published.append(dst)
    with atomic_path(os.path.join(workdir, MANIFEST)) as tmp, open(tmp, "w") as f:
        json.dump({"key": key, "files": [os.path.relpath(p, workdir) for p in published]}, f, indent=1)
    return published


def is_published(workdir: str, key: str) -> bool:
    """Whether ``workdir`` holds the published outputs of ``key`` (manifest and every file)."""
    try:
        with open(os.path.join(workdir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return manifest.get("key") == key and all(os.path.exists(os.path.join(workdir, p)) for p in manifest["files"])
