"""Figures of 1-D and 2-D binning schemes with the count per bin (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from calibflow.binning.scheme import BinningScheme


def _finite_bounds(scheme: BinningScheme) -> list[dict[str, tuple[float, float]]]:
    """Per bin {variable: (lo, hi)} with infinite ends replaced by the finite span ± 10 %."""
    span: dict[str, tuple[float, float]] = {}
    for v in scheme.variables:
        vals = [
            x for b in scheme.bins for var, lo, hi in b.bounds if var == v for x in (lo, hi) if np.isfinite(x)
        ]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        span[v] = (lo - pad, hi + pad)
    return [
        {
            v: (lo if np.isfinite(lo) else span[v][0], hi if np.isfinite(hi) else span[v][1])
            for v, lo, hi in b.bounds
        }
        for b in scheme.bins
    ]


def plot_scheme(
    scheme: BinningScheme,
    counts: np.ndarray | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    log_counts: bool = False,
    label_format: str = "{:.0f}",
) -> Figure:
    """Draw a 1-D or 2-D ``scheme``; ``counts`` (n_bins,) are drawn as bar heights (1-D) or as coloured
    rectangles with a label in each bin (2-D: outer variable on x, inner on y). Returns the figure.
    """
    if len(scheme.variables) not in (1, 2):
        raise ValueError(f"can plot 1-D or 2-D schemes only, this one has variables {scheme.variables}")
    if counts is not None and np.shape(counts) != (len(scheme),):
        raise ValueError(f"counts must have shape ({len(scheme)},), got {np.shape(counts)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
    else:
        fig = ax.figure
    bounds = _finite_bounds(scheme)
    xvar = scheme.variables[0]
    if len(scheme.variables) == 1:
        lo = np.array([b[xvar][0] for b in bounds])
        hi = np.array([b[xvar][1] for b in bounds])
        heights = np.ones(len(scheme)) if counts is None else np.asarray(counts, dtype=float)
        ax.bar(
            lo, heights, width=hi - lo, align="edge", fill=counts is not None, edgecolor="black", alpha=0.8
        )
        if counts is not None:
            for x0, x1, c in zip(lo, hi, heights, strict=True):
                ax.text(
                    0.5 * (x0 + x1), c, label_format.format(c), ha="center", va="bottom", fontsize="small"
                )
            ax.set_ylabel("count per bin")
            if log_counts:
                ax.set_yscale("log")
        ax.set_xlabel(xvar)
    else:
        yvar = scheme.variables[1]
        rects = [
            Rectangle((b[xvar][0], b[yvar][0]), b[xvar][1] - b[xvar][0], b[yvar][1] - b[yvar][0])
            for b in bounds
        ]
        coll = PatchCollection(rects, edgecolor="black", linewidth=0.8)
        if counts is None:
            coll.set_facecolor("none")
        else:
            c = np.asarray(counts, dtype=float)
            positive = c[c > 0]
            use_log = log_counts and positive.size > 0
            norm = LogNorm(positive.min(), positive.max()) if use_log else Normalize(0.0, max(c.max(), 1.0))
            coll.set_array(np.where(c > 0, c, np.nan) if use_log else c)
            coll.set_norm(norm)
            coll.set_cmap("viridis")
            fig.colorbar(coll, ax=ax, label="count per bin")
            for b, value in zip(bounds, c, strict=True):
                ax.text(
                    0.5 * (b[xvar][0] + b[xvar][1]),
                    0.5 * (b[yvar][0] + b[yvar][1]),
                    label_format.format(value),
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white",
                )
        ax.add_collection(coll)
        xs = [v for b in bounds for v in b[xvar]]
        ys = [v for b in bounds for v in b[yvar]]
        ax.set_xlim(min(xs), max(xs))
        ax.set_ylim(min(ys), max(ys))
        ax.set_xlabel(xvar)
        ax.set_ylabel(yvar)
    ax.set_title(title if title is not None else f"{len(scheme)} bins")
    return fig
