"""Closure of resampled / transformed simulation: cut efficiencies per kinematic bin against the data.

The data efficiency of ``pid > cut`` in a kinematic bin is sWeighted counting on the calibration sample,
``sum w pass / sum w``, with the error ``sqrt(sum w^2 (pass - eff)^2) / sum w`` (sWeights as fixed weights;
the yields' uncertainty is left out). Each simulated column's efficiency (the original, resampled and
transformed PID) has the binomial error of its (weighted) candidates, and the pull is the difference over
both errors in quadrature. :func:`rank_correlation` gives Spearman's coefficient of the transform with the
original simulated PID, overall and per bin. :func:`write_closure` writes the table (CSV), the summary
(JSON) and one figure (efficiency against threshold per bin, pulls below).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def bin_masks(kin: Mapping[str, np.ndarray], edges: Mapping[str, Sequence[float]]
              ) -> list[tuple[dict[str, tuple[float, float]], np.ndarray]]:
    """Every cell of the product binning ``edges`` (variable -> edges) with the mask of ``kin`` in it."""
    out = []
    ranges = [list(itertools.pairwise(edges[v])) for v in edges]
    for cell in itertools.product(*ranges):
        mask = np.ones(len(next(iter(kin.values()))), dtype=bool)
        for v, (lo, hi) in zip(edges, cell, strict=True):
            mask &= (kin[v] >= lo) & (kin[v] < hi)
        out.append((dict(zip(edges, cell, strict=True)), mask))
    return out


def weighted_efficiency(passed: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``sum w pass / sum w`` and its error ``sqrt(sum w^2 (pass - eff)^2) / sum w`` (NaN if sum w <= 0)."""
    sw = float(w.sum())
    if sw <= 0:
        return float("nan"), float("nan")
    eff = float((w * passed).sum() / sw)
    return eff, float(np.sqrt((w**2 * (passed - eff) ** 2).sum()) / sw)


def closure_table(data: Mapping[str, np.ndarray], data_weight: np.ndarray, data_pid: np.ndarray,
                  sim: Mapping[str, np.ndarray], sim_columns: Mapping[str, np.ndarray],
                  edges: Mapping[str, Sequence[float]], thresholds: Sequence[float],
                  sim_weight: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per kinematic bin and threshold: data efficiency, and per simulated column its efficiency,
    error and pull. ``data``/``sim``: kinematic columns named as in ``edges``."""
    sim_weight = np.ones(len(next(iter(sim.values())))) if sim_weight is None else sim_weight
    rows = []
    for (cell, dmask), (_, smask) in zip(bin_masks(data, edges), bin_masks(sim, edges), strict=True):
        for cut in thresholds:
            row: dict[str, Any] = {f"{v}_{s}": b for v, (lo, hi) in cell.items() for s, b in (("lo", lo), ("hi", hi))}
            eff, err = weighted_efficiency(data_pid[dmask] > cut, data_weight[dmask])
            row.update(threshold=cut, data=eff, data_err=err)
            for name, values in sim_columns.items():
                e, de = weighted_efficiency(values[smask] > cut, sim_weight[smask])
                row.update({name: e, f"{name}_err": de, f"{name}_pull": (e - eff) / float(np.hypot(err, de))})
            rows.append(row)
    return rows


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (NaN rows left out)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic)


def summary(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Per simulated column: the number of pulls, their mean square and largest magnitude."""
    out = {}
    for name in columns:
        pulls = np.array([r[f"{name}_pull"] for r in rows], dtype=float)
        pulls = pulls[np.isfinite(pulls)]
        out[name] = {"pulls": len(pulls), "mean_square": float(np.mean(pulls**2)) if len(pulls) else float("nan"),
                     "max_abs": float(np.max(np.abs(pulls))) if len(pulls) else float("nan")}
    return out


def write_closure(folder: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  extra: Mapping[str, Any] | None = None) -> list[str]:
    """``closure.csv``, ``closure.json`` (summary and ``extra``, e.g. rank correlations) and ``closure.png``
    in ``folder``, each written atomically; their paths."""
    from matplotlib.figure import Figure

    from calibflow.io.store import atomic_path

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"closure.{ext}") for ext in ("csv", "json", "png")]
    with atomic_path(paths[0]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(paths[1]) as tmp, open(tmp, "w") as f:
        json.dump({"summary": summary(rows, columns), **(extra or {})}, f, indent=1, sort_keys=True)
    bins = sorted({tuple((k, v) for k, v in r.items() if k.endswith(("_lo", "_hi"))) for r in rows})
    fig = Figure(figsize=(3.2 * len(bins), 5.5))
    axes = fig.subplots(2, len(bins), squeeze=False, sharex=True, height_ratios=[3, 1])
    for i, b in enumerate(bins):
        sel = [r for r in rows if tuple((k, v) for k, v in r.items() if k.endswith(("_lo", "_hi"))) == b]
        x = np.array([r["threshold"] for r in sel])
        axes[0, i].errorbar(x, [r["data"] for r in sel], [r["data_err"] for r in sel], fmt="ko", label="data (sWeights)")
        for name in columns:
            axes[0, i].errorbar(x, [r[name] for r in sel], [r[f"{name}_err"] for r in sel], fmt="-", label=name)
            axes[1, i].plot(x, [r[f"{name}_pull"] for r in sel], "o-", label=name)
        axes[0, i].set_title(", ".join(f"{b[j][1]:g} ≤ {b[j][0][:-3]} < {b[j + 1][1]:g}" for j in range(0, len(b), 2)),
                             fontsize=8)
        axes[1, i].axhspan(-2, 2, color="0.9")
        axes[1, i].set_xlabel("PID threshold")
    axes[0, 0].set_ylabel("efficiency")
    axes[1, 0].set_ylabel("pull")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(paths[2]) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return paths
