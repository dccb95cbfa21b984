"""Figures of the combined tables (matplotlib, Agg backend, mplhep styles).

* :func:`plot_efficiency_grid`: efficiency versus one binning variable, one panel per slice of the other
  variables (taken from the rows' bounds, so nested schemes work), data and simulation with distinct
  markers and colours (colour-blind-safe), a data/simulation ratio panel under each, one legend above the
  grid; at most :data:`MAX_SERIES` series a panel and :data:`MAX_PANELS` panels a page.
* :func:`plot_map`: a 2-D map of efficiency or scale factor with ``value ± total`` written in every cell
  large enough to read it; scale factors on a diverging colour map centred on 1.
* :func:`plot_roc`: ROC curves of a cut scan.

Every figure carries the experiment label of ``outputs.plot_style`` (or the calibration name when no
experiment is set) and is written in each of ``outputs.plot_formats``; the functions return the paths.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle
from matplotlib.ticker import (
    AutoMinorLocator,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    StrMethodFormatter,
)

from calibflow.config import PlotStyle
from calibflow.export.labels import VariableLabel
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row

MAX_SERIES = 4
"""Most efficiency series (samples) drawn in one panel; more samples are split into figures per data
sample and its simulation."""
MAX_PANELS = 15
"""Most slice panels on one page of an efficiency grid; more go on further pages (``_2``, ``_3``, ...)."""
NCOLS = 3
"""Columns of an efficiency grid."""

DATA_STYLES = (("black", "o"), ("#D55E00", "D"), ("#CC79A7", "^"), ("#E69F00", "v"))
"""Colour and (filled) marker of the data samples of a panel: Okabe-Ito colours, safe for colour-blind
readers."""
SIM_STYLES = (("#0072B2", "s"), ("#009E73", "^"), ("#56B4E9", "D"), ("#999999", "v"))
"""Colour and (open) marker of the simulation samples of a panel."""

SF_LABEL = "data/simulation scale factor"
RATIO_LABEL = "data/sim."
CELL_FONTS = (9.0, 7.5)
"""Font sizes (pt) tried for the text of a map (one size per map: the one that fits the most cells);
cells too small for the text at that size stay empty."""
CELL_PAD = 2.0
"""Free margin (pt) kept around the text in a map cell."""

_EXPERIMENT_STYLES = {"lhcb": "LHCb2", "cms": "CMS", "atlas": "ATLAS", "alice": "ALICE", "dune": "DUNE"}
_RC = {
    "font.size": 13, "axes.labelsize": 14, "axes.titlesize": 12, "xtick.labelsize": 12, "ytick.labelsize": 12,
    "legend.fontsize": 12, "legend.title_fontsize": 12, "xtick.major.size": 6, "xtick.minor.size": 3,
    "ytick.major.size": 6, "ytick.minor.size": 3, "xtick.major.width": 1, "xtick.minor.width": 0.8,
    "ytick.major.width": 1, "ytick.minor.width": 0.8, "xtick.major.pad": 4, "ytick.major.pad": 4,
    "xtick.minor.pad": 4, "ytick.minor.pad": 4, "axes.linewidth": 1.2, "lines.linewidth": 1.2,
    "lines.markersize": 5, "lines.markeredgewidth": 1.2, "errorbar.capsize": 0, "patch.linewidth": 1,
    "axes.labelpad": 4, "figure.dpi": 100, "savefig.dpi": 100, "savefig.bbox": "standard",
    "savefig.format": "png", "axes.unicode_minus": True, "legend.frameon": False, "axes.titley": 1.0,
}
"""Sizes on top of the mplhep style: the experiment styles are made for one 10-inch panel. A fixed
``axes.titley`` spares matplotlib placing every title around the top tick labels (a third of the time)."""


# --- style, labels, saving ---------------------------------------------------------------------------------


@contextlib.contextmanager
def figure_style(style: PlotStyle | None = None) -> Iterator[None]:
    """rcParams of the figures: the mplhep style of ``style.experiment`` (LHCb, CMS, ATLAS, ALICE, DUNE;
    ROOT's for any other or none) with sizes for multi-panel figures; restored on exit."""
    experiment = (style.experiment or "").lower().replace(" ", "") if style else ""
    base = getattr(mplhep.style, _EXPERIMENT_STYLES.get(experiment, "ROOT"))
    with plt.style.context([base, _RC]):
        yield


def experiment_label(ax: Axes, style: PlotStyle | None, title: str = "") -> None:
    """Above ``ax``: the experiment label (``experiment`` bold, ``label`` italic) on the left and
    ``lumi`` fb^-1 (``energy``) on the right (mplhep); without an experiment, ``title`` on the left."""
    if style is None or not style.experiment:
        ax.set_title(title, loc="left", fontsize=plt.rcParams["font.size"])
        return
    mplhep.label.exp_label(
        exp=style.experiment, text=style.label or "", data=True, lumi=style.lumi, lumi_format="{0:g}",
        com=style.energy, loc=0, ax=ax, fontsize=plt.rcParams["font.size"], scilocator_adjust=False,
    )


def save_figure(fig: Figure, path: str, formats: Sequence[str] = ("png",)) -> list[str]:
    """Write ``fig`` as ``path`` with each extension of ``formats`` (any extension of ``path`` replaced), each
    atomically (a full disk leaves no empty or partial figure); close it and return the paths written."""
    stem, ext = os.path.splitext(path)
    stem = stem if ext.lstrip(".") in ("png", "pdf", "svg") else path
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = [f"{stem}.{fmt}" for fmt in formats]
    try:
        for p, fmt in zip(paths, formats, strict=True):
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=fmt)
    finally:
        plt.close(fig)
    return paths


def _label(labels: Mapping[str, VariableLabel] | None, variable: str) -> VariableLabel:
    return labels[variable] if labels and variable in labels else VariableLabel(variable, "")


def _num(x: float) -> str:
    return f"{x:.4g}"


def slice_text(bounds: Sequence[tuple[str, float, float]], labels: Mapping[str, VariableLabel] | None = None) -> str:
    """``2 ≤ η < 2.25, 3 ≤ p < 4 GeV`` for ``[(variable, lo, hi), ...]`` (open ends as ``≥``/``<``)."""
    parts = []
    for var, lo, hi in bounds:
        lab = _label(labels, var)
        unit = f" {lab.unit}" if lab.unit else ""
        if not math.isfinite(lo) and not math.isfinite(hi):
            continue
        if not math.isfinite(lo):
            parts.append(f"{lab.label} < {_num(hi)}{unit}")
        elif not math.isfinite(hi):
            parts.append(f"{lab.label} ≥ {_num(lo)}{unit}")
        else:
            parts.append(f"{_num(lo)} ≤ {lab.label} < {_num(hi)}{unit}")
    return ", ".join(parts)


# --- bins ---------------------------------------------------------------------------------------------------


def log_spaced(edges: Sequence[float]) -> bool:
    """Whether bin ``edges`` (any order, repeats allowed, infinite ones ignored) read better on a log axis:
    all positive, spanning at least a factor 10, and closer to equal widths in log than in linear scale."""
    e = np.unique([x for x in edges if math.isfinite(x)])
    if len(e) < 3 or e[0] <= 0 or e[-1] / e[0] < 10:
        return False

    def spread(w: np.ndarray) -> float:
        return float(np.std(w) / np.mean(w))

    return spread(np.diff(np.log(e))) < spread(np.diff(e))


class _Axis:
    """One binning variable as drawn: finite limits (open ends drawn 10 % beyond the finite edges), log or
    linear, and its label."""

    def __init__(self, rows: Sequence[Row], variable: str, labels: Mapping[str, VariableLabel] | None) -> None:
        self.variable = variable
        edges = [r[f"{variable}_{end}"] for r in rows for end in ("lo", "hi")]
        self.log = log_spaced(edges)
        finite = [x for x in edges if math.isfinite(x)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        open_lo, open_hi = -math.inf in edges, math.inf in edges
        if self.log:
            pad = (hi / lo) ** 0.1
            self.limits = (lo / pad if open_lo else lo, hi * pad if open_hi else hi)
        else:
            pad = 0.1 * (hi - lo) if hi > lo else 1.0
            self.limits = (lo - pad if open_lo else lo, hi + pad if open_hi else hi)
        self.label = _label(labels, variable)

    def bounds(self, row: Row) -> tuple[float, float]:
        """Finite (lo, hi) of ``row``."""
        lo, hi = row[f"{self.variable}_lo"], row[f"{self.variable}_hi"]
        return (lo if math.isfinite(lo) else self.limits[0], hi if math.isfinite(hi) else self.limits[1])

    def at(self, row: Row, fraction: float) -> float:
        """Position ``fraction`` (0: low edge, 1: high edge) across the bin of ``row``, in the axis' scale."""
        lo, hi = self.bounds(row)
        if self.log:
            return float(lo * (hi / lo) ** fraction)
        return lo + fraction * (hi - lo)

    def setup(self, ax: Axes, which: str) -> None:
        """Scale and limits of ``ax``'s ``which`` ("x" or "y") axis; log axes over up to four decades get
        plain tick labels at 1, 2, 5 × 10^n (up to two decades) or 10^n (2, 5, 10, ..., 200 GeV reads
        better than powers of ten, and costs no mathtext)."""
        getattr(ax, f"set_{which}lim")(*self.limits)
        if not self.log:
            return
        getattr(ax, f"set_{which}scale")("log")
        decades = math.log10(self.limits[1] / self.limits[0])
        if decades <= 4:
            axis = getattr(ax, f"{which}axis")
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)))
            axis.set_major_formatter(StrMethodFormatter("{x:g}"))
            axis.set_minor_formatter(NullFormatter())
            if decades <= 2.2:
                axis.set_minor_locator(NullLocator())  # 1, 2, 5 is dense enough


def _key(row: Row, variables: Sequence[str]) -> tuple[tuple[str, float, float], ...]:
    return tuple((v, row[f"{v}_lo"], row[f"{v}_hi"]) for v in variables)


def slices(rows: Sequence[Row], others: Sequence[str]) -> list[tuple[tuple[str, float, float], ...]]:
    """The distinct bounds of ``others`` over ``rows`` (sorted): one panel each. From the rows, not from
    a product grid, so that nested (merged) schemes give each slice its own bins."""
    return sorted({_key(r, others) for r in rows}, key=lambda k: [(lo, hi) for _, lo, hi in k])


def _values(rows: Sequence[Row], value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value and total errors down/up (statistical when there is no total column)."""
    y = np.array([r[value] for r in rows], dtype=float)
    down = np.array([r.get("total_down", r["err_down"]) for r in rows], dtype=float)
    up = np.array([r.get("total_up", r["err_up"]) for r in rows], dtype=float)
    return y, down, up


# --- efficiency versus one variable -------------------------------------------------------------------------


def sample_groups(samples: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Samples drawn together: all of them if at most :data:`MAX_SERIES`, else each data sample with its
    simulation (``pairs`` of (data, mc)), then the remaining samples by :data:`MAX_SERIES`."""
    if len(samples) <= MAX_SERIES:
        return [list(samples)]
    groups = [[d, m] for d, m in pairs if d in samples and m in samples]
    rest = [s for s in samples if not any(s in g for g in groups)]
    return groups + [rest[i:i + MAX_SERIES] for i in range(0, len(rest), MAX_SERIES)]


def sample_label(sample: str, simulation: bool) -> str:
    """How a sample is named on figures: ``mc (simulation)``, ``data``, ``run3 (data)``."""
    if simulation:
        return sample if "sim" in sample.lower() else f"{sample} (simulation)"
    return sample if "data" in sample.lower() else f"{sample} (data)"


def _ratio_range(sf: Sequence[Row]) -> tuple[float, float]:
    """Symmetric range around 1 holding 90 % of the scale factors with their errors (at least ±0.05)."""
    y, down, up = _values(sf, "scale_factor")
    reach = np.abs(y - 1) + np.maximum(down, up)
    reach = reach[np.isfinite(reach)]
    d = float(np.quantile(reach, 0.9)) if reach.size else 0.1
    d = next((s for s in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0) if d <= s), 1.0)
    return 1 - d, 1 + d


def _efficiency_range(rows: Sequence[Row]) -> tuple[float, float]:
    """From a round number below the lowest error bar to 1.05 (or a round number above the highest)."""
    y, down, up = _values(rows, "efficiency")
    ok = np.isfinite(y)
    if not ok.any():
        return 0.0, 1.05
    lo = float(np.min(y[ok] - np.nan_to_num(down[ok])))
    hi = float(np.max(y[ok] + np.nan_to_num(up[ok])))
    bottom = max(0.0, math.floor((lo - 0.02) * 10) / 10)
    top = 1.05 if hi > 0.95 else math.ceil((hi + 0.02) * 10) / 10
    return bottom, max(top, hi + 0.02)


def _errorbars(
    ax: Axes, axis: _Axis, rows: Sequence[Row], value: str, offset: float,
    ylim: tuple[float, float] | None = None, **kw,
) -> None:
    """One series: points at ``offset`` (fraction of the bin width) from the bin centre, horizontal bars
    over the bin, vertical bars the total errors; with ``ylim``, points beyond it are marked by a triangle
    at the edge."""
    rows = sorted(rows, key=lambda r: r[f"{axis.variable}_lo"])
    x = np.array([axis.at(r, 0.5 + offset) for r in rows])
    xlo = x - np.array([axis.bounds(r)[0] for r in rows])
    xhi = np.array([axis.bounds(r)[1] for r in rows]) - x
    y, down, up = _values(rows, value)
    ax.errorbar(x, y, xerr=[xlo, xhi], yerr=[down, up], linestyle="none", **kw)
    if ylim is not None:
        for beyond, at, marker in ((y < ylim[0], 0.06, "v"), (y > ylim[1], 0.94, "^")):
            if beyond.any():
                ax.plot(x[beyond], np.full(beyond.sum(), at), marker=marker, linestyle="none",
                        color=kw.get("color"), transform=ax.get_xaxis_transform(), gid="out-of-range")


def plot_efficiency_grid(
    eff: Sequence[Row],
    sf: Sequence[Row],
    variable: str,
    others: Sequence[str],
    path: str,
    labels: Mapping[str, VariableLabel] | None = None,
    style: PlotStyle | None = None,
    formats: Sequence[str] = ("png",),
    title: str = "",
) -> list[str]:
    """Efficiency vs ``variable``, one panel per slice of ``others`` with the data/simulation ratio
    (the scale factors ``sf``) under it; pages of at most :data:`MAX_PANELS` panels at ``path`` (then
    ``<path>_2``, ...). Returns the files written."""
    if not eff:
        return []
    panels = slices(eff, others)
    pages = math.ceil(len(panels) / MAX_PANELS)
    per_page = math.ceil(len(panels) / pages)
    written = []
    for page in range(pages):
        stem = path if page == 0 else f"{os.path.splitext(path)[0]}_{page + 1}"
        with figure_style(style):
            fig = efficiency_page(eff, sf, variable, others, panels[page * per_page:(page + 1) * per_page],
                                   labels, style, title)
            written += save_figure(fig, stem, formats)
    return written


def _few_minor_ticks(ax: Axes, log_x: bool) -> None:
    """One minor tick between major ones on the linear axes of ``ax``: small panels need no more, and
    every tick costs time in each draw (ticks are most of the time of a grid of panels)."""
    for axis, log in ((ax.xaxis, log_x), (ax.yaxis, False)):
        if not log:
            axis.set_minor_locator(AutoMinorLocator(2))


class _Grid:
    """Fixed geometry (inches) of an efficiency page: panels of ``width`` with a main part of ``main`` and
    a ratio part of ``ratio`` high, ``gap`` between rows for tick labels, axis label and the next title."""

    def __init__(self, n: int, ratio: bool) -> None:
        self.ncols = min(NCOLS, n)
        self.nrows = math.ceil(n / self.ncols)
        single = self.ncols == 1
        self.width, self.main = (6.0, 4.0) if single else (3.9, 2.6)
        self.ratio = (1.4 if single else 1.0) if ratio else 0.0
        self.left, self.right, self.top, self.bottom, self.gap, self.wspace = 0.85, 0.3, 1.4, 0.7, 0.95, 0.45

    @property
    def size(self) -> tuple[float, float]:
        """Figure width and height (inches)."""
        cell = self.main + self.ratio
        return (self.left + self.right + self.ncols * self.width + (self.ncols - 1) * self.wspace,
                self.top + self.bottom + self.nrows * cell + (self.nrows - 1) * self.gap)


def efficiency_page(
    eff: Sequence[Row],
    sf: Sequence[Row],
    variable: str,
    others: Sequence[str],
    panels: Sequence[tuple[tuple[str, float, float], ...]],
    labels: Mapping[str, VariableLabel] | None = None,
    style: PlotStyle | None = None,
    title: str = "",
) -> Figure:
    """One page of :func:`plot_efficiency_grid`: the figure of the slices ``panels`` (keys of
    :func:`slices`), built with the current rcParams (use inside :func:`figure_style`)."""
    samples = sorted({r["sample"] for r in eff})
    sims = {r["mc"] for r in sf}
    series = [(s, *DATA_STYLES[i % len(DATA_STYLES)], False) for i, s in enumerate(s for s in samples if s not in sims)]
    series += [(s, *SIM_STYLES[i % len(SIM_STYLES)], True) for i, s in enumerate(s for s in samples if s in sims)]
    offsets = np.linspace(-0.12, 0.12, len(series)) if len(series) > 1 else [0.0]
    axis = _Axis(eff, variable, labels)
    g = _Grid(len(panels), bool(sf))
    w, h = g.size
    fig = plt.figure(figsize=(w, h))
    header = fig.add_axes((g.left / w, 1 - 0.42 / h, 1 - (g.left + g.right) / w, 0.001))
    header.axis("off")
    experiment_label(header, style, title)  # first: mplhep draws the figure to place the label's parts
    outer = fig.add_gridspec(g.nrows, g.ncols, left=g.left / w, right=1 - g.right / w, bottom=g.bottom / h,
                             top=1 - g.top / h, wspace=g.wspace / g.width, hspace=g.gap / (g.main + g.ratio))
    ylim = _efficiency_range(eff)
    rlim = _ratio_range(sf) if sf else (0.0, 2.0)
    for i, key in enumerate(panels):
        cell = outer[i // g.ncols, i % g.ncols]
        parts = cell.subgridspec(2, 1, height_ratios=[g.main, g.ratio], hspace=0) if sf else [cell]
        ax = fig.add_subplot(parts[0])
        rows = [r for r in eff if _key(r, others) == key]
        for (sample, color, marker, sim), offset in zip(series, offsets, strict=True):
            rs = [r for r in rows if r["sample"] == sample]
            if rs:
                _errorbars(ax, axis, rs, "efficiency", offset, color=color, marker=marker,
                           mfc="white" if sim else color, zorder=2 if sim else 3, label=sample_label(sample, sim))
        ax.set_title(slice_text(key, labels), fontsize=plt.rcParams["axes.titlesize"], pad=4)
        low = ax
        if sf:
            ax.tick_params(labelbottom=False)
            low = fig.add_subplot(parts[1])
            low.axhline(1.0, color="0.5", lw=1, ls="--", zorder=1)
            for (sample, color, marker, sim), offset in zip(series, offsets, strict=True):
                rs = [r for r in sf if r["data"] == sample and _key(r, others) == key]
                if rs and not sim:
                    _errorbars(low, axis, rs, "scale_factor", offset, rlim, color=color, marker=marker)
            low.set_ylim(*rlim)
            low.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10], prune="upper"))
        if i % g.ncols == 0:
            if sf:
                low.set_ylabel(RATIO_LABEL)
            ax.set_ylabel("efficiency")
        else:
            ax.tick_params(labelleft=False)
            low.tick_params(labelleft=False)
        low.set_xlabel(axis.label.axis)
        ax.set_ylim(*ylim)
        if sf:  # no tick labels where the two panels meet
            ax.yaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], prune="lower"))
        for a in {ax, low}:
            axis.setup(a, "x")
            _few_minor_ticks(a, axis.log)
    handles, names = [], []
    for a in fig.axes:
        for hd, n in zip(*a.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(hd)
                names.append(n)
    errors = "stat. $\\oplus$ syst." if any(r.get("syst", 0) for r in eff) else "stat."
    fig.legend(handles, names, loc="upper center", ncols=len(names), bbox_to_anchor=(0.5, 1 - 0.45 / h),
               title=f"error bars: {errors}", handletextpad=0.3,
               columnspacing=1.5, borderaxespad=0)
    return fig


# --- 2-D maps -----------------------------------------------------------------------------------------------


def value_text(value: float, down: float, up: float) -> tuple[str, str]:
    """``("0.952", "± 0.023")``, or ``("0.952", "+0.025 −0.021")`` when the rounded errors differ: the
    errors rounded to two significant digits but at most three decimals (a map is read at a glance; the
    tables have every digit), the value to the same decimal place."""
    err = max(down, up)
    digits = 3 if not (math.isfinite(err) and err > 0) else min(3, max(0, 1 - math.floor(math.log10(err))))
    v, d, u = (f"{x:.{digits}f}" for x in (value, down, up))
    return v, f"± {u}" if d == u else f"+{u} −{d}"


def _luminance(rgba: Sequence[float]) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


class _TextFit:
    """Which text fits a map cell: widths from per-character advances (measured once per character and
    font size with the figure's renderer: cheaper than measuring every string)."""

    def __init__(self, fig: Figure) -> None:
        self.renderer = fig.canvas.get_renderer()
        self.px = fig.dpi / 72
        self.widths: dict[tuple[str, float], float] = {}

    def width(self, s: str, size: float) -> float:
        """Width of ``s`` at ``size`` pt, in pixels."""
        total = 0.0
        for c in s:
            if (c, size) not in self.widths:
                self.widths[c, size] = self.renderer.get_text_width_height_descent(
                    c, FontProperties(size=size), ismath=False)[0]
            total += self.widths[c, size]
        return total

    def fit(self, lines: tuple[str, str], width: float, height: float, size: float) -> str | None:
        """The text that fits a cell of ``width`` × ``height`` pixels at ``size`` pt: one line, else two
        (value, errors), else three (value, +up, −down: asymmetric errors in a narrow cell); None if none
        does."""
        pad = 2 * CELL_PAD * self.px
        line = 1.1 * size * self.px  # height of a line of text (measured: 1.1 × the font size)
        layouts = [(f"{lines[0]} {lines[1]}",), lines]
        if lines[1].startswith("+"):
            layouts.append((lines[0], *lines[1].split(" ")))
        for layout in layouts:
            if max(self.width(t, size) for t in layout) + pad <= width and len(layout) * line + pad <= height:
                return "\n".join(layout)
        return None

    def best(self, cells: Sequence[tuple[tuple[str, str], float, float]]) -> tuple[list[str | None], float]:
        """Texts of ``cells`` (lines, width, height) at the one size of :data:`CELL_FONTS` that fits the
        most cells (the larger on a tie), and that size: one size across a map reads evenly."""
        options = [([self.fit(lines, w, h, size) for lines, w, h in cells], size) for size in CELL_FONTS]
        return max(options, key=lambda o: sum(t is not None for t in o[0]))


def _map_axes_size(rows: Sequence[Row], xa: _Axis, ya: _Axis) -> tuple[float, float]:
    """Width and height (inches) of a map's axes: wide and tall enough that the narrowest cell can hold a
    two-line text at the smallest font, within 7.4–11 × 6–8.5 inches."""

    def smallest(axis: _Axis) -> float:
        f = (lambda x: math.log(x)) if axis.log else (lambda x: x)
        span = f(axis.limits[1]) - f(axis.limits[0])
        return min((f(axis.bounds(r)[1]) - f(axis.bounds(r)[0])) / span for r in rows)

    return min(11.0, max(7.4, 0.5 / smallest(xa))), min(8.5, max(6.0, 0.32 / smallest(ya)))


def plot_map(
    rows: Sequence[Row],
    xvar: str,
    yvar: str,
    value: str,
    path: str,
    labels: Mapping[str, VariableLabel] | None = None,
    style: PlotStyle | None = None,
    formats: Sequence[str] = ("png",),
    title: str = "",
    colorbar_label: str = "",
    vrange: tuple[float, float] | None = None,
) -> list[str]:
    """:func:`map_figure` written at ``path`` in each of ``formats``; returns the files written."""
    with figure_style(style):
        fig = map_figure(rows, xvar, yvar, value, labels, style, title, colorbar_label, vrange)
        return save_figure(fig, path, formats)


def map_figure(
    rows: Sequence[Row],
    xvar: str,
    yvar: str,
    value: str,
    labels: Mapping[str, VariableLabel] | None = None,
    style: PlotStyle | None = None,
    title: str = "",
    colorbar_label: str = "",
    vrange: tuple[float, float] | None = None,
) -> Figure:
    """2-D map of ``value`` over the bins of (``xvar``, ``yvar``) of any nested scheme, log axes where the
    edges are log-spaced, ``value ± total`` in every cell where it is readable. ``value == "scale_factor"``:
    diverging colours centred on 1 (symmetric range); else viridis over ``vrange`` (default: the values'
    range). Built with the current rcParams (use inside :func:`figure_style`)."""
    xa, ya = _Axis(rows, xvar, labels), _Axis(rows, yvar, labels)
    w, h = _map_axes_size(rows, xa, ya)
    left, right, bottom, top = 0.9, 1.5, 0.75, 0.5
    fw, fh = left + w + right, bottom + h + top
    fig = plt.figure(figsize=(fw, fh))
    ax = fig.add_axes((left / fw, bottom / fh, w / fw, h / fh))
    experiment_label(ax, style, title)  # first: mplhep draws the figure to place the label's parts
    cax = fig.add_axes(((left + w + 0.2) / fw, bottom / fh, 0.25 / fw, h / fh))
    y, down, up = _values(rows, value)
    cmap, norm = _colours(y, value, vrange)
    rects = []
    for r in rows:
        (x0, x1), (y0, y1) = xa.bounds(r), ya.bounds(r)
        rects.append(Rectangle((x0, y0), x1 - x0, y1 - y0))
    coll = PatchCollection(rects, cmap=cmap, norm=norm, edgecolor="0.55", linewidth=0.4)
    coll.set_array(np.ma.masked_invalid(y))
    ax.add_collection(coll)
    xa.setup(ax, "x")
    ya.setup(ax, "y")
    ax.set_xlabel(xa.label.axis)
    ax.set_ylabel(ya.label.axis)
    fig.colorbar(coll, cax=cax, label=colorbar_label or value, extend=_extend(y, norm))
    shown = [i for i, v in enumerate(y) if math.isfinite(v)]
    cells = []
    for i in shown:
        (x0, x1), (y0, y1) = xa.bounds(rows[i]), ya.bounds(rows[i])
        (px0, py0), (px1, py1) = ax.transData.transform([(x0, y0), (x1, y1)])
        cells.append((value_text(y[i], down[i], up[i]), abs(px1 - px0), abs(py1 - py0)))
    fitted, size = _TextFit(fig).best(cells)
    for i, text in zip(shown, fitted, strict=True):
        if text:
            ink = "white" if _luminance(cmap(norm(y[i]))) < 0.45 else "black"
            ax.text(xa.at(rows[i], 0.5), ya.at(rows[i], 0.5), text, ha="center", va="center", fontsize=size,
                    color=ink, linespacing=1.1)
    return fig


def _colours(y: np.ndarray, value: str, vrange: tuple[float, float] | None) -> tuple[Colormap, Normalize]:
    """Scale factors: RdBu_r over 1 ± the largest |sf − 1| (rounded up to 0.05, at most 1), so that white
    is 1; else viridis over ``vrange`` or the values' range. Missing values are grey."""
    ok = y[np.isfinite(y)]
    if value == "scale_factor":
        d = min(1.0, max(0.05, math.ceil(float(np.max(np.abs(ok - 1))) * 20 - 1e-9) / 20)) if ok.size else 0.1
        return plt.get_cmap("RdBu_r").with_extremes(bad="0.85"), Normalize(1 - d, 1 + d)
    lo, hi = vrange or ((float(ok.min()), float(ok.max())) if ok.size else (0.0, 1.0))
    return plt.get_cmap("viridis").with_extremes(bad="0.85"), Normalize(lo, hi if hi > lo else lo + 1e-3)


def _extend(y: np.ndarray, norm: Normalize) -> str:
    ok = y[np.isfinite(y)]
    below, above = bool((ok < norm.vmin).any()), bool((ok > norm.vmax).any())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def efficiency_range(rows: Sequence[Row]) -> tuple[float, float]:
    """Common colour range of efficiency maps: the finite efficiencies' range rounded outwards to 0.05,
    within [0, 1]."""
    y = np.array([r["efficiency"] for r in rows], dtype=float)
    y = y[np.isfinite(y)]
    if not y.size:
        return 0.0, 1.0
    return max(0.0, math.floor(y.min() * 20) / 20), min(1.0, math.ceil(y.max() * 20) / 20)


# --- ROC ----------------------------------------------------------------------------------------------------


def plot_roc(
    points: Sequence[Row], path: str, title: str = "", style: PlotStyle | None = None,
    formats: Sequence[str] = ("png",),
) -> list[str]:
    """ROC curves: efficiency of the signal sample vs that of the background sample, one curve per bin,
    each working point named. Returns the files written."""
    with figure_style(style):
        fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
        for b in sorted({p["bin"] for p in points}, key=str):
            ps = sorted((p for p in points if p["bin"] == b), key=lambda p: p["eff_background"])
            ax.errorbar([p["eff_background"] for p in ps], [p["eff_signal"] for p in ps],
                        xerr=[[p["err_background_down"] for p in ps], [p["err_background_up"] for p in ps]],
                        yerr=[[p["err_signal_down"] for p in ps], [p["err_signal_up"] for p in ps]],
                        fmt="o-", label=str(ps[0].get("label", b)))
            for p in ps:
                ax.annotate(p["working_point"], (p["eff_background"], p["eff_signal"]), fontsize=9,
                            xytext=(4, -10), textcoords="offset points")
        ax.set_xlabel("background efficiency (mis-identification)")
        ax.set_ylabel("signal efficiency")
        experiment_label(ax, style, title)
        fig.legend(loc="outside right upper")
        return save_figure(fig, path, formats)
