"""Exports of the bin-to-bin covariances (:mod:`calibflow.tables.covariance`): eigen-variations as categories of
``corrections.json`` and the report's ``correlations`` section with a correlation figure per table.

Eigen-variations (``outputs.correctionlib: {eigen: ...}``): ``eig<i>_up/down`` = SF ± v_i for the kept
eigen-variations v_i of the scale factors' total covariance (i = 0 the largest), or with ``of: per_source``
``<part>_eig<i>_up/down`` per part (``stat_data``, ``stat_mc``, each source; a rank-one source has one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from calibflow.config import EigenOutput
from calibflow.io.store import atomic_path
from calibflow.tables.covariance import TableCovariance, correlation, eigen_variations, read_h5
from calibflow.tables.write import MASTER_H5

if TYPE_CHECKING:
    from calibflow.export.report import Folder, Section, Variable

MAX_TICKS = 40
"""Most bin labels on an axis of a correlation figure (more bins: every k-th bin labelled)."""


def eigen_categories(cov: TableCovariance, eigen: EigenOutput) -> dict[str, dict[int, float]]:
    """Categories ``eig<i>_up/down`` (or ``<part>_eig<i>_up/down``) of a scale-factor table per bin index: the
    nominal value ± the i-th kept eigen-variation of its covariance (the table's units)."""
    parts = {"": cov.total} if eigen.of == "total" else {f"{p}_": m for p, m in cov.parts.items()}
    out: dict[str, dict[int, float]] = {}
    for prefix, matrix in parts.items():
        for i, v in enumerate(eigen_variations(matrix, eigen.count, eigen.fraction)):
            for suffix, sign in (("up", 1.0), ("down", -1.0)):
                out[f"{prefix}eig{i}_{suffix}"] = {int(k): float(x + sign * d)
                                                   for k, x, d in zip(cov.bins, cov.value, v, strict=True)}
    return out


def folder_covariances(folder: str) -> dict[str, TableCovariance]:
    """The covariances in the master table of ``folder`` (none without one: a product of methods)."""
    path = os.path.join(folder, MASTER_H5)
    return read_h5(path) if os.path.exists(path) else {}


def plot_correlation(cov: TableCovariance, labels: Sequence[str], title: str, path: str, axis: str = "bin") -> None:
    """The correlation matrix of ``cov``'s total covariance as a figure (PNG): bins on both axes (``labels``, every
    k-th of more than :data:`MAX_TICKS`), a diverging colour scale from −1 to 1 with its colour bar; bins without a
    variance grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rho = correlation(cov.total)
    n = len(cov.bins)
    step = max(1, -(-n // MAX_TICKS))
    side = min(14.0, max(5.5, 2.5 + 0.11 * min(n, MAX_TICKS) * 2))
    with plt.style.context("default"):
        fig, ax = plt.subplots(figsize=(side + 1.4, side), dpi=100)
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#bbbbbb")
        im = ax.imshow(np.ma.masked_invalid(rho), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
        ticks = np.arange(0, n, step)
        small = 7 if max(len(labels[i]) for i in ticks) > 12 else 8
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=small)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=small)
        ax.set_xlabel(axis + (f" (every {step}th bin labelled)" if step > 1 else ""), fontsize=10)
        ax.set_ylabel(axis, fontsize=10)
        ax.set_title(title, fontsize=11)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=[-1, -0.5, 0, 0.5, 1])
        bar.set_label("correlation", fontsize=10)
        fig.tight_layout()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def _shares(cov: TableCovariance) -> dict[str, float]:
    """Each part's share of the total covariance's trace."""
    trace = float(np.nansum(np.diag(cov.total)))
    return {p: float(np.nansum(np.diag(m))) / trace if trace > 0 else float("nan") for p, m in cov.parts.items()}


def correlations_section(folders: Sequence[Folder], out_dir: str) -> tuple[Section, list[str]]:
    """The report's ``correlations`` section: per table of each folder's master table its parts' shares of the
    variance and its largest correlation between two bins, and a correlation figure of each scale-factor table
    (of each efficiency table without scale factors) in ``<folder>/plots/correlation_<table>.png``; returns the
    section and the figures."""
    from calibflow.export.report import Figure, Heading, Section, Table, Text, variables_of

    sec = Section("correlations", "")
    drawn: list[str] = []
    headline = []
    for folder in folders:
        tables = folder_covariances(folder.path)
        if not tables:
            continue
        rows = _rows_by_table(folder.path)
        variables = variables_of(folder.plan)
        body, blocks = [], []
        for name, cov in tables.items():
            shares = _shares(cov)
            rho = correlation(cov.total)
            off = np.abs(rho[~np.eye(len(rho), dtype=bool)]) if len(rho) > 1 else np.zeros(0)
            largest = float(np.nanmax(off)) if off.size and np.isfinite(off).any() else float("nan")
            body.append([name + (f" ({folder.label})" if folder.label else ""), str(len(cov.bins)),
                         ", ".join(f"{p} {s:.1%}" for p, s in shares.items()), f"{largest:.2f}"])
            figure = name.startswith("scale_factor_") or not any(t.startswith("scale_factor_") for t in tables)
            if figure and name in rows:
                png = os.path.join(folder.path, "plots", f"correlation_{name}.png")
                labels = [_bin_label(rows[name].get(int(k)), variables) for k in cov.bins]
                what = _quantity_name(name, rows[name])
                plot_correlation(cov, labels, f"{what}: correlation of the total covariance", png, _axis_label(variables))
                drawn.append(png)
                blocks.append(Figure(os.path.relpath(png, out_dir), f"{what} ({name} in calibration.h5): bin-to-bin "
                                     "correlation of the total covariance (bins by the tables' bin column)"))
                headline.append(f"{what}{f' ({folder.label})' if folder.label else ''}: largest |correlation| "
                                f"between two bins {largest:.2f}")
        sec.blocks += [Heading(folder.label or "nominal")] if len(folders) > 1 else []
        sec.blocks += [*blocks, Table(["table", "bins", "share of the variance per part", "largest |ρ| off the diagonal"],
                                body, "Parts: statistical (diagonal), each systematic source (δ δᵀ of its signed "
                                "shift); covariance/<table>/<part> in calibration.h5 (docs/tables.md, Covariance).")]
    if not drawn:
        sec.verdict = "no covariance in the master tables"
        sec.blocks.insert(0, Text("No table with a covariance (calibration.h5 of each folder).", "note"))
    else:
        sec.verdict = "\n".join(headline)
    return sec, drawn


def _quantity_name(table: str, rows: Mapping[int, dict]) -> str:
    """What the covariance table ``table`` (``scale_factor_<data>``, ``efficiency_<sample>``) holds, as the report's
    other sections name it: ``scale factor data/mc``, ``efficiency mc``."""
    for prefix, quantity in (("scale_factor_", "scale factor"), ("efficiency_", "efficiency")):
        if table.startswith(prefix):
            group = table.removeprefix(prefix)
            mc = next((r.get("mc") for r in rows.values() if r.get("mc")), None)
            return f"{quantity} {group}/{mc}" if prefix == "scale_factor_" and mc else f"{quantity} {group}"
    return table


def _rows_by_table(folder: str) -> Mapping[str, Mapping[int, dict]]:
    """The rows of the folder's tables by covariance table name and bin."""
    from calibflow.tables.rows import YIELD_METHOD, read_csv
    from calibflow.tables.write import EFFICIENCIES, SCALE_FACTORS

    out: dict[str, dict[int, dict]] = {}
    for table, key, kind in ((EFFICIENCIES, "sample", "efficiency"), (SCALE_FACTORS, "data", "scale_factor")):
        path = os.path.join(folder, table)
        for r in read_csv(path) if os.path.exists(path) else []:
            name = f"{'yield' if r.get('method') == YIELD_METHOD else kind}_{r[key]}"
            out.setdefault(name, {})[int(r["bin"])] = r
    return out


def _bin_label(row: Mapping[str, object] | None, variables: Sequence[Variable]) -> str:
    """A bin's tick label: ``<bin>: <lo>–<hi>, ...`` per binning variable (``17: 3–4, 2–2.25``)."""
    if row is None:
        return "?"
    ranges = [f"{row[f'{v.name}_lo']:g}–{row[f'{v.name}_hi']:g}" for v in variables if f"{v.name}_lo" in row]
    return f"{row['bin']}: " + ", ".join(ranges)


def _axis_label(variables: Sequence[Variable]) -> str:
    """What the tick labels say: ``bin: p [GeV], η``."""
    return "bin: " + ", ".join(v.heading for v in variables)
