"""Figures (matplotlib + mplhep): efficiency versus each variable with a data/simulation ratio panel,
2-D maps with the value written in every bin, and ROC curves."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from calibflow.tables.rows import Row

MARKERS = "os^Dv<>"


def _save(fig: plt.Figure, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _log_axis(rows: Sequence[Row], variable: str) -> bool:
    lo = min(r[f"{variable}_lo"] for r in rows)
    return lo > 0 and max(r[f"{variable}_hi"] for r in rows) / lo > 20


def _series(rows: Sequence[Row], variable: str, value: str) -> tuple[np.ndarray, ...]:
    rs = sorted(rows, key=lambda r: r[f"{variable}_lo"])
    lo = np.array([r[f"{variable}_lo"] for r in rs])
    hi = np.array([r[f"{variable}_hi"] for r in rs])
    y = np.array([r[value] for r in rs])
    yerr = np.array([[r["err_down"] for r in rs], [r["err_up"] for r in rs]])
    return 0.5 * (lo + hi), 0.5 * (hi - lo), y, yerr


def plot_efficiency_vs(
    rows: Sequence[Row],
    variable: str,
    others: Sequence[str],
    path: str,
    title: str = "",
    ratios: Sequence[Row] = (),
) -> None:
    """Efficiency vs ``variable``: one series per sample and slice of ``others``; with scale-factor
    rows (``ratios``) a lower panel shows data/simulation per slice."""
    plt.style.use(mplhep.style.ROOT)
    if ratios:
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    else:
        fig, ax = plt.subplots(figsize=(8, 6))
        rax = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def slice_of(r: Row) -> tuple:
        return tuple((r[f"{o}_lo"], r[f"{o}_hi"]) for o in others)

    samples = sorted({r["sample"] for r in rows})
    slices = sorted({slice_of(r) for r in rows})

    def label(sl: tuple) -> str:
        return "".join(f", {o} [{a:g}, {b:g})" for o, (a, b) in zip(others, sl, strict=True))

    for si, sample in enumerate(samples):
        for ci, sl in enumerate(slices):
            rs = [r for r in rows if r["sample"] == sample and slice_of(r) == sl]
            if not rs:
                continue
            x, xerr, y, yerr = _series(rs, variable, "efficiency")
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=MARKERS[si % len(MARKERS)], ms=4,
                        color=colors[ci % len(colors)], mfc="none" if si else None, label=sample + label(sl))
    for ci, sl in enumerate(slices):
        rs = [r for r in ratios if slice_of(r) == sl]
        if rs and rax is not None:
            x, xerr, y, yerr = _series(rs, variable, "scale_factor")
            rax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=3, color=colors[ci % len(colors)])
    ax.set_ylabel("efficiency")
    ax.set_title(title, fontsize=14)
    ax.legend(fontsize=8, ncol=2)
    bottom = rax if rax is not None else ax
    bottom.set_xlabel(variable)
    if rax is not None:
        rax.axhline(1.0, color="grey", lw=1, ls="--")
        rax.set_ylabel("data/sim.")
    if _log_axis(rows, variable):
        bottom.set_xscale("log")
    _save(fig, path)


def plot_map(rows: Sequence[Row], xvar: str, yvar: str, value: str, path: str, title: str = "") -> None:
    """2-D map of ``value`` over bins of (xvar, yvar), any nested scheme, the value written in each bin."""
    plt.style.use(mplhep.style.ROOT)
    fig, ax = plt.subplots(figsize=(9, 7))
    rects = [Rectangle((r[f"{xvar}_lo"], r[f"{yvar}_lo"]), r[f"{xvar}_hi"] - r[f"{xvar}_lo"],
                       r[f"{yvar}_hi"] - r[f"{yvar}_lo"]) for r in rows]
    vals = np.array([r[value] for r in rows], dtype=float)
    coll = PatchCollection(rects, cmap="viridis", edgecolor="white", linewidth=0.5)
    coll.set_array(vals)
    ax.add_collection(coll)
    for r, v in zip(rows, vals, strict=True):
        xc = np.sqrt(r[f"{xvar}_lo"] * r[f"{xvar}_hi"]) if _log_axis(rows, xvar) else 0.5 * (r[f"{xvar}_lo"] + r[f"{xvar}_hi"])
        ax.text(xc, 0.5 * (r[f"{yvar}_lo"] + r[f"{yvar}_hi"]), f"{v:.3f}", ha="center", va="center", fontsize=6,
                color="white")
    ax.set_xlim(min(r[f"{xvar}_lo"] for r in rows), max(r[f"{xvar}_hi"] for r in rows))
    ax.set_ylim(min(r[f"{yvar}_lo"] for r in rows), max(r[f"{yvar}_hi"] for r in rows))
    if _log_axis(rows, xvar):
        ax.set_xscale("log")
    ax.set_xlabel(xvar)
    ax.set_ylabel(yvar)
    ax.set_title(title, fontsize=14)
    fig.colorbar(coll, ax=ax, label=value)
    _save(fig, path)


def plot_roc(points: Sequence[Row], path: str, title: str = "") -> None:
    """ROC curves: efficiency of the signal sample vs that of the background sample, one curve per bin."""
    plt.style.use(mplhep.style.ROOT)
    fig, ax = plt.subplots(figsize=(8, 7))
    for b in sorted({p["bin"] for p in points}, key=str):
        ps = sorted((p for p in points if p["bin"] == b), key=lambda p: p["eff_background"])
        ax.errorbar([p["eff_background"] for p in ps], [p["eff_signal"] for p in ps],
                    xerr=[[p["err_background_down"] for p in ps], [p["err_background_up"] for p in ps]],
                    yerr=[[p["err_signal_down"] for p in ps], [p["err_signal_up"] for p in ps]],
                    fmt="o-", ms=4, label=str(ps[0].get("label", b)))
        for p in ps:
            ax.annotate(p["working_point"], (p["eff_background"], p["eff_signal"]), fontsize=7)
    ax.set_xlabel("background efficiency (mis-identification)")
    ax.set_ylabel("signal efficiency")
    ax.set_title(title, fontsize=14)
    ax.legend(fontsize=7)
    _save(fig, path)
