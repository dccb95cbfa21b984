"""Closure of resampled / transformed simulation: cut efficiencies per kinematic bin against the data.

The data efficiency of ``pid > cut`` in a kinematic bin is sWeighted counting on the calibration sample,
``sum w pass / sum w``, with the error ``sqrt(sum w^2 (pass - eff)^2) / sum w`` (sWeights as fixed weights;
the yields' uncertainty is left out). Each simulated column's efficiency (the original, resampled and
transformed PID) has the binomial error of its (weighted) candidates, and the pull is the difference over
both errors in quadrature. :func:`rank_correlation` gives Spearman's coefficient of the transform with the
original simulated PID, overall and per bin. :func:`write_closure` writes the table (CSV), the summary
(JSON) and one figure (efficiency against threshold per bin, pulls below); :func:`plot_densities` draws the
PID densities of the templates at the centre of each bin.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from calibflow.kde.template import Template

COLUMNS = ("simulation", "resampled", "transformed")
"""The simulated PID columns a closure compares with the data: as it is, resampled, transformed."""
STYLE = {"simulation": ("#d62728", "s"), "resampled": ("#1f77b4", "^"), "transformed": ("#2ca02c", "v")}
"""Colour and marker per column in the figures."""


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
    """``closure.csv``, ``closure.json`` (summary and ``extra``, e.g. rank correlations, ``pid``: the PID
    variable's name for the axis labels) and ``closure.png`` in ``folder``, each written atomically; their paths."""
    from calibflow.io.store import atomic_path

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"closure.{ext}") for ext in ("csv", "json", "png")]
    with atomic_path(paths[0]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(paths[1]) as tmp, open(tmp, "w") as f:
        json.dump({"summary": summary(rows, columns), **(extra or {})}, f, indent=1, sort_keys=True)
    plot_closure(paths[2], rows, columns, str((extra or {}).get("pid", "PID")))
    return paths


def _bins(rows: Sequence[Mapping[str, Any]]) -> list[tuple[tuple[str, float], ...]]:
    """The kinematic bins of closure rows (their ``<var>_lo/_hi`` items), in order."""
    return list(dict.fromkeys(tuple((k, v) for k, v in r.items() if k.endswith(("_lo", "_hi"))) for r in rows))


def _bin_title(b: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{b[j][1]:g} ≤ {b[j][0][:-3]} < {b[j + 1][1]:g}" for j in range(0, len(b), 2))


def plot_closure(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], pid: str = "PID") -> None:
    """Efficiency of ``pid`` > threshold against the threshold per kinematic bin (data points, simulated columns
    offset sideways for readability), pulls below with the ±2 band; written atomically to ``path``."""
    from matplotlib.figure import Figure

    from calibflow.io.store import atomic_path

    bins = _bins(rows)
    fig = Figure(figsize=(3.3 * len(bins) + 0.6, 5.2), layout="constrained")
    axes = fig.subplots(2, len(bins), squeeze=False, sharex=True, height_ratios=[3, 1.3])
    step = min(np.diff(sorted({r["threshold"] for r in rows})), default=0.1)
    for i, b in enumerate(bins):
        sel = [r for r in rows if _bins([r])[0] == b]
        x = np.array([r["threshold"] for r in sel])
        top, bottom = axes[0, i], axes[1, i]
        top.errorbar(x, [r["data"] for r in sel], [r["data_err"] for r in sel], fmt="ko", ms=5, zorder=5,
                     label="data (sWeighted)")
        for j, name in enumerate(columns):
            colour, marker = STYLE.get(name, ("0.4", "o"))
            dx = (j - 0.5 if j else -1.0) * 0.15 * step  # the first column left of the data, the others right
            top.errorbar(x + dx, [r[name] for r in sel], [r[f"{name}_err"] for r in sel], fmt=marker, ms=4,
                         color=colour, mfc="none", label=name)
            bottom.plot(x + dx, [r[f"{name}_pull"] for r in sel], marker, ms=4, color=colour, mfc="none")
        top.set_title(_bin_title(b), fontsize=10)
        top.grid(alpha=0.3)
        bottom.axhspan(-2, 2, color="0.9")
        bottom.axhline(0, color="0.5", lw=0.8)
        lim = max(3.0, np.nanmax(np.abs([r[f"{n}_pull"] for r in sel for n in columns])) * 1.15)
        bottom.set_ylim(-lim, lim)
        bottom.set_xlabel(f"{pid} threshold", fontsize=10)
        top.tick_params(labelsize=9)
        bottom.tick_params(labelsize=9)
    axes[0, 0].set_ylabel(f"efficiency of {pid} > threshold", fontsize=10)
    axes[1, 0].set_ylabel("pull", fontsize=10)
    axes[0, 0].legend(fontsize=8, loc="lower left", frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _cell_index(axis: Any, value: float) -> int:
    """The grid cell of ``axis`` holding ``value`` (clamped to the grid)."""
    return int(np.clip((value - axis.lo) / axis.width, 0, axis.bins - 1))


def plot_densities(path: str, data: Mapping[str, Template], simulation: Template,
                   edges: Mapping[str, Sequence[float]]) -> None:
    """The conditional PID density of the data template (nominal and each variation) and of the simulation
    template at the centre of every closure bin (kinematic axes without edges: the centre of their range),
    one panel per bin, log scale; written atomically to ``path``."""
    import itertools

    from matplotlib.figure import Figure

    from calibflow.io.store import atomic_path

    nominal = data["nominal"]
    cells = list(itertools.product(*(list(itertools.pairwise(edges[v])) for v in edges)))
    fig = Figure(figsize=(3.3 * len(cells) + 0.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    x = nominal.pid.centres
    styles = {"nominal": ("k", "-", 1.6), "bandwidthDown": ("#9467bd", ":", 1.2), "bandwidthUp": ("#9467bd", "--", 1.2),
              "sweightsUp": ("#ff7f0e", ":", 1.2), "sweightsDown": ("#ff7f0e", "--", 1.2)}
    for ax, cell in zip(axes, cells, strict=True):
        centre = {v: 0.5 * (lo + hi) for v, (lo, hi) in zip(edges, cell, strict=True)}
        point = [centre.get(a.name, 0.5 * (a.lo + a.hi)) for a in nominal.kinematics]
        index = tuple(_cell_index(a, p) for a, p in zip(nominal.kinematics, point, strict=True))
        for variant, t in data.items():
            colour, line, width = styles.get(variant, ("0.5", "-", 1.0))
            ax.plot(x, t.density[(slice(None), *index)], line, color=colour, lw=width, label=f"data {variant}")
        ax.plot(x, simulation.density[(slice(None), *index)], "-", color="#d62728", lw=1.4, label="simulation")
        ax.set_yscale("log")
        ax.set_title(", ".join(f"{a.name} = {p:.3g}" for a, p in zip(nominal.kinematics, point, strict=True)),
                     fontsize=10)
        ax.set_xlabel(nominal.pid.name, fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    top = max(float(np.max(t.density)) for t in [*data.values(), simulation])
    axes[0].set_ylim(top * 1e-4, top * 2)
    axes[0].set_ylabel(f"density per unit of {nominal.pid.name}", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=6, fontsize=9, frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
