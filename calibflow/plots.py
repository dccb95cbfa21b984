"""Figures (matplotlib + mplhep): efficiency versus each binning variable, per sample."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep
import numpy as np

from calibflow.tables import Row


def plot_efficiency_vs(rows: Sequence[Row], variable: str, others: Sequence[str], path: str, title: str = "") -> None:
    """Efficiency vs ``variable``: one series per sample and per bin of the ``others`` variables."""
    plt.style.use(mplhep.style.ROOT)
    fig, ax = plt.subplots(figsize=(8, 6))
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        key = (r["sample"], *[(r[f"{o}_lo"], r[f"{o}_hi"]) for o in others])
        groups.setdefault(key, []).append(r)
    samples = sorted({r["sample"] for r in rows})
    slices = sorted({key[1:] for key in groups})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^Dv<>"
    for key, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r[f"{variable}_lo"])
        lo = np.array([r[f"{variable}_lo"] for r in rs])
        hi = np.array([r[f"{variable}_hi"] for r in rs])
        y = np.array([r["efficiency"] for r in rs])
        yerr = np.array([[r["err_down"] for r in rs], [r["err_up"] for r in rs]])
        label = key[0] + "".join(f", {o} [{a:g}, {b:g})" for o, (a, b) in zip(others, key[1:], strict=True))
        si, ci = samples.index(key[0]), slices.index(key[1:])
        ax.errorbar(0.5 * (lo + hi), y, xerr=0.5 * (hi - lo), yerr=yerr, fmt=markers[si % len(markers)], ms=4,
                    color=colors[ci % len(colors)], mfc="none" if si else None, label=label)
    ax.set_xlabel(variable)
    ax.set_ylabel("efficiency")
    lo_min = min(r[f"{variable}_lo"] for r in rows)
    if lo_min > 0 and max(r[f"{variable}_hi"] for r in rows) / lo_min > 20:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=14)
    ax.legend(fontsize=9, ncol=2)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
