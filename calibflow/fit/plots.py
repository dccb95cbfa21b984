"""Per-bin fit figures: pass and fail mass panels with the data (Garwood intervals), the fitted total, signal
and background, and Poisson pulls below.

A process makes its figure once (:func:`fit_figure`: Agg, no pyplot, 800 x 496 pixels). Every bin only
updates its artists' data, limits and texts and draws them over a cached background (blitting), texts go
through FreeType in one call each and are kept (:class:`_Renderer`), the count scale is a few artists of its
own rather than an ``Axis``, and the PNG is written unfiltered at zlib level 1: about 18 ms a figure, a
tenth of a plain ``savefig`` (``benchmarks/plots.py``). What a figure shows besides the fit (labels, units,
plot style) arrives as :class:`FigureText`, so it never enters a fit key (``Plan.figure_key``).

Data intervals are Garwood's central 68.27 % Poisson intervals (an empty mass bin reaches 1.84, never
below 0); weighted histograms use them on the effective counts n_eff = (Σw)²/Σw² scaled back by Σw/n_eff.
Sparse categories are shown in merged mass bins (:func:`display_factor`); the fit used the histogram's own.
Method sideband's figures (:func:`sideband_categories`) shade the window and the sidebands and show the background
the subtraction assumes, with the pulls of the sideband bins against it. Units: masses in the unit of the mass
variable (``mass.unit``).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator
from scipy import special

from calibflow.binning.scheme import Bin
from calibflow.config import BinVariable, CalibrationConfig, axis_label
from calibflow.fit.diagnostics import poisson_pulls
from calibflow.fit.histograms import BinCandidates, BinHistograms
from calibflow.io.store import atomic_path

DPI = 80
"""Dots per inch of the PNGs (figure 10 x 6.2 in: 800 x 496 pixels)."""
FIGSIZE = (10.0, 6.2)
FINE_BINS = 200
"""Points of the model curves over the mass range."""
MIN_PER_SHOWN_BIN = 3.0
"""Candidates per shown mass bin, on average, that sparse categories are merged up to..."""
MIN_SHOWN_BINS = 25
"""...keeping at least this many shown bins (:func:`display_factor`)."""
PULL_RANGE = 5.0
ONE_SIGMA = 0.6826894921370859
CATEGORIES = ("pass", "fail")
TEXT_CACHE = 4096
"""Rasterised texts a process keeps (tick labels, labels, statuses: what figures share)."""
MATH = re.compile(r"(\$[^$]+\$)")
TITLE_PIECES = 9
TICK = 0.012
"""Length of the count scale's ticks, in units of the panel's width."""
TICK_PAD = 3.0
"""Space between a tick and its label (points)."""
SPACE_EM = 0.5
"""A space between pieces of a title, in units of the font size."""
BACKGROUNDS = 4
"""Rendered backgrounds a figure keeps (one per mass range, mass label and brand)."""
OK_COLOUR, FLAG_COLOUR = "#1a7f37", "#c0392b"
WINDOW_COLOUR, SIDEBAND_COLOUR = "C0", "0.45"
"""Shading of method sideband's signal window and sidebands (mass and pull panels)."""

Windows = tuple[tuple[float, float], tuple[tuple[float, float], ...]]
"""Method sideband's signal window and sidebands: ((lo, hi), ((lo, hi), ...)), in the mass unit."""


@dataclass(frozen=True)
class FigureText:
    """What a fit figure says besides the fit: ``title`` (sample and bin), the mass ``mass_label`` and
    ``mass_unit``, the experiment ``brand`` (e.g. ``LHCb Preliminary``, empty: none)."""

    title: str
    mass_label: str = "mass"
    mass_unit: str = ""
    brand: str = ""
    windows: Windows | None = None
    """Method ``sideband``: the signal window and the sidebands, shaded; the panels then show the background
    the subtraction assumes and the pulls of the sideband bins against it (:func:`sideband_categories`)."""
    sideband_background: str = "flat"
    """Method ``sideband``: ``flat`` or ``fitted`` (``fit.sideband.background``)."""


CONSTRAINT_FIT = "constraint fit"
"""Said after the sample in the title of a simulation fit giving ``fit.constrain``'s constraints."""


def figure_text(cfg: CalibrationConfig, sample: str, b: Bin, constraint: bool = False) -> FigureText:
    """The texts of the figure of bin ``b`` of ``sample``: ``data, bin 12: $p$ ∈ [10, 20) GeV, ...``, the
    mass label and unit, and the brand of ``outputs.plot_style`` (experiment and label). ``constraint``: the
    figure of the sample's simulation fit for ``fit.constrain`` (``mc (constraint fit), bin 12: ...``; a
    pass/fail fit whatever the sample's method)."""
    style = cfg.outputs.plot_style
    brand = " ".join(t for t in (style.experiment, style.label) if t)
    sb = cfg.fit.sideband if cfg.samples[sample].method == "sideband" and not constraint else None
    windows = None if sb is None else (tuple(sb.signal), tuple(tuple(w) for w in sb.sidebands))
    name = f"{sample} ({CONSTRAINT_FIT})" if constraint else sample
    return FigureText(f"{name}, bin {b.index}: {bin_title(b, cfg.binning.variables)}", cfg.mass_spec.label,
                      cfg.mass_spec.unit, brand, windows, sb.background if sb is not None else "flat")


def plot_bin(cfg: CalibrationConfig, sample: str, b: Bin, data: BinHistograms | BinCandidates,
             result: Mapping[str, Any], path: str, error: str, constraint: bool = False) -> str | None:
    """Draw the figure of bin ``b`` of ``sample`` (config ``cfg``; ``constraint``: its simulation fit for
    ``fit.constrain``, :func:`figure_text`) into ``path`` without ever raising: the reason of a failure is
    written to ``error`` and returned (see :func:`safe_plot_bin_fit`)."""
    return safe_plot_bin_fit(path, error, data, result, cfg.fit.background, cfg.fit.fail_width_shift,
                             figure_text(cfg, sample, b, constraint), cfg.mass_spec.bins, cfg.fit.min_candidates)


def bin_title(b: Bin, variables: Sequence[BinVariable] = ()) -> str:
    """``$p$ ∈ [10, 20) GeV, $\\eta$ ∈ [2, 3)``: each variable's label, range and unit (names without labels)."""
    known = {v.name: v for v in variables}
    parts = []
    for name, lo, hi in b.bounds:
        v = known.get(name)
        label, unit = (v.display, v.display_unit) if v is not None else (name, "")
        parts.append(f"{label} ∈ [{lo:g}, {hi:g})" + (f" {unit}" if unit else ""))
    return ", ".join(parts)


def garwood(n: np.ndarray, cl: float = ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Central Poisson (Garwood) interval [lo, hi] of observed counts ``n`` (real n allowed) at ``cl``."""
    n = np.asarray(n, dtype=float)
    a = 0.5 * (1.0 - cl)
    lo = np.where(n > 0, special.gammaincinv(np.maximum(n, 1e-300), a), 0.0)
    return lo, special.gammainccinv(n + 1.0, a)


def data_intervals(sumw: np.ndarray, sumw2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] per mass bin of a histogram: Garwood on the counts, or on the effective counts of a
    weighted histogram (``sumw2``) scaled back to its weights (bins without weights: scale 1)."""
    if sumw2 is None:
        return garwood(sumw)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sumw2 > 0, sumw / sumw2, 1.0)  # Σw/Σw² = n_eff/Σw
    lo, hi = garwood(sumw * scale)
    return lo / scale, hi / scale


def histograms_of(data: BinHistograms | BinCandidates, bins: int) -> BinHistograms:
    """The pass/fail mass histograms of a bin (a bin's candidates are histogrammed in ``bins`` mass bins)."""
    if isinstance(data, BinHistograms):
        return data
    edges = np.linspace(data.lo, data.hi, bins + 1)
    sumw, sumw2 = np.zeros((2, bins)), np.zeros((2, bins))
    for c, sel in enumerate((data.passed, ~data.passed)):
        w = data.weight[sel]
        sumw[c] = np.histogram(data.mass[sel], edges, weights=w)[0]
        sumw2[c] = np.histogram(data.mass[sel], edges, weights=w * w)[0]
    return BinHistograms(edges=edges, sumw=sumw, sumw2=sumw2, weighted=data.weighted)


def display_factor(candidates: float, bins: int) -> int:
    """Mass bins merged into one shown bin: the smallest divisor of ``bins`` giving at least
    :data:`MIN_PER_SHOWN_BIN` candidates per shown bin on average, keeping at least :data:`MIN_SHOWN_BINS`
    shown bins (1: the fit's own binning). Only the figure is coarser; the fit used every bin."""
    want = MIN_PER_SHOWN_BIN * bins / max(candidates, 1.0)
    divisors = [d for d in range(1, bins // MIN_SHOWN_BINS + 1) if bins % d == 0] or [1]
    return next((d for d in divisors if d >= want), divisors[-1])


@dataclass
class Category:
    """What one panel shows: the ``name`` (pass or fail), the shown mass ``edges``, the data (``sumw``,
    ``sumw2`` for weighted data), the candidates, and the fitted model (None without a fit): ``fine_x`` and
    the total, signal and background per shown bin width there, and the ``expected`` counts in the shown bins
    that the pulls compare the data with (where ``pull_mask`` is true; None: every bin)."""

    name: str
    edges: np.ndarray
    sumw: np.ndarray
    sumw2: np.ndarray | None
    candidates: float
    fine_x: np.ndarray | None = None
    total: np.ndarray | None = None
    signal: np.ndarray | None = None
    background: np.ndarray | None = None
    expected: np.ndarray | None = None
    pull_mask: np.ndarray | None = None

    @property
    def width(self) -> float:
        """Width of a shown mass bin (unit of the mass)."""
        return float(self.edges[1] - self.edges[0])


def categories(hist: BinHistograms, result: Mapping[str, Any], background: str, fail_width_shift: bool,
               fine_bins: int = FINE_BINS) -> list[Category]:
    """The pass and fail panels of a bin's fit ``result`` (as written by ``measure_bin``) on its histograms,
    each merged by :func:`display_factor`; the model is left out when the result has no parameters."""
    edges = hist.edges
    lo, hi = float(edges[0]), float(edges[-1])
    fine = np.linspace(lo, hi, fine_bins + 1)
    from calibflow.fit.passfail import fitted_model

    fitted = fitted_model(result, background, fail_width_shift, lo, hi)
    model, x = fitted if fitted is not None else (None, None)
    comps = model.components(fine, x) if model is not None else None
    out = shown_data(hist, result)
    if model is not None and comps is not None:
        for c, cat in enumerate(out):
            scale = cat.width / (fine[1] - fine[0])
            cat.signal, cat.background = comps[2 * c] * scale, comps[2 * c + 1] * scale
            cat.total = cat.signal + cat.background
            cat.fine_x = 0.5 * (fine[1:] + fine[:-1])
            cat.expected = model.expected(cat.edges, x)[c]
    return out


def shown_data(hist: BinHistograms, result: Mapping[str, Any]) -> list[Category]:
    """The pass and fail data of a bin as shown: merged by :func:`display_factor` of the result's candidate
    counts (the histogram's sums without them), no model."""
    out = []
    for c, name in enumerate(CATEGORIES):
        n = float(result.get(f"candidates_{name}", hist.sumw[c].sum()))
        k = display_factor(n, len(hist.edges) - 1)
        out.append(Category(name, hist.edges[::k], hist.sumw[c].reshape(-1, k).sum(axis=1),
                            hist.sumw2[c].reshape(-1, k).sum(axis=1) if hist.weighted else None, n))
    return out


def sideband_categories(hist: BinHistograms, result: Mapping[str, Any], windows: Windows, background: str,
                        fine_bins: int = FINE_BINS) -> list[Category]:
    """The pass and fail panels of method sideband: the data (:func:`shown_data`), the background the
    subtraction assumes (:func:`calibflow.fit.sideband.background_counts`: flat, or the fitted exponential, at
    the level of each category's sideband counts) drawn over the sidebands and the window, and as ``expected``
    in the shown bins; pulls only in the shown bins lying wholly inside the sidebands (where the background
    was measured; in the window it is what is subtracted)."""
    from calibflow.fit.sideband import background_counts, window_mask

    signal, sidebands = windows
    lo = min(signal[0], *(a for a, _ in sidebands))
    hi = max(signal[1], *(b for _, b in sidebands))
    fine = np.linspace(lo, hi, fine_bins + 1)
    counts = background_counts(hist, signal, sidebands, background)
    curve = counts(fine[:-1], fine[1:])
    side = window_mask(hist.edges, sidebands)
    out = shown_data(hist, result)
    for c, cat in enumerate(out):
        k = (len(hist.edges) - 1) // (len(cat.edges) - 1)
        cat.fine_x = 0.5 * (fine[1:] + fine[:-1])
        cat.background = curve[c] * cat.width / (fine[1] - fine[0])
        cat.expected = counts(cat.edges[:-1], cat.edges[1:])[c]
        cat.pull_mask = side.reshape(-1, k).all(axis=1)
    return out


class _Renderer(RendererAgg):
    """Agg renderer whose plain texts are laid out and rasterised by FreeType in one call each (as matplotlib
    did before 3.11, whose per-glyph Python loop is most of a figure's time) and kept: a tick label or a
    ``status: ok`` drawn again is only copied, and measured texts are kept too. Mathtext, and everything
    if the fast path is not available in the installed matplotlib, goes through matplotlib's own path."""

    fast: ClassVar[bool] = True
    cache: ClassVar[dict[tuple[Any, ...], tuple[np.ndarray, float, float, float]]] = {}
    metrics: ClassVar[dict[tuple[Any, ...], tuple[float, float, float]]] = {}

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: Any, angle: float, ismath: Any = False,
                  mtext: Any = None) -> None:
        if ismath or not _Renderer.fast:
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        try:
            key = (s, hash(prop), prop.get_size_in_points(), self.dpi, get_hinting_flag(), gc.get_antialiased())
            if key not in self.cache:
                font = self._prepare_font(prop)
                font.set_text(s, 0, flags=get_hinting_flag())
                font.draw_glyphs_to_bitmap(antialiased=gc.get_antialiased())
                xo, yo = font.get_bitmap_offset()
                if len(self.cache) > TEXT_CACHE:
                    self.cache.clear()
                self.cache[key] = (np.array(font.get_image()), xo / 64.0, yo / 64.0, font.get_descent() / 64.0)
            image, xo, yo, d = self.cache[key]
            a = math.radians(angle)
            self._renderer.draw_text_image(image, round(x + xo + d * math.sin(a)), round(y + yo + d * math.cos(a)) + 1,
                                           angle, gc)
        except (AttributeError, TypeError, ValueError):  # another matplotlib: its own path from now on
            _Renderer.fast = False
            super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)

    def get_text_width_height_descent(self, s: str, prop: Any, ismath: Any) -> tuple[float, float, float]:
        if ismath or not _Renderer.fast:
            return super().get_text_width_height_descent(s, prop, ismath)
        try:
            key = (s, hash(prop), prop.get_size_in_points(), self.dpi, get_hinting_flag())
        except (AttributeError, TypeError, ValueError):  # as in draw_text
            _Renderer.fast = False
            return super().get_text_width_height_descent(s, prop, ismath)
        if key not in self.metrics:
            if len(self.metrics) > TEXT_CACHE:
                self.metrics.clear()
            self.metrics[key] = super().get_text_width_height_descent(s, prop, ismath)
        return self.metrics[key]


class _Canvas(FigureCanvasAgg):
    """Agg canvas drawing with :class:`_Renderer`."""

    def get_renderer(self) -> RendererAgg:
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = _Renderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer


class _Row:
    """A line of figure text drawn as pieces side by side: its ``$...$`` parts (the variables' labels, the
    same in every bin) apart from the numbers between them, so that mathtext parses each label once."""

    def __init__(self, fig: Figure, x: float, y: float, pieces: int, **kwargs: Any) -> None:
        self.fig, self.x, self.text = fig, x, ""
        self.texts = [fig.text(x, y, "", ha="left", va="baseline", **kwargs) for _ in range(pieces)]

    def set_text(self, text: str, renderer: RendererAgg) -> None:
        """Show ``text``; ``renderer`` measures the pieces (each starts where the last one's ink ends, a
        space apart where the text has one)."""
        self.text = text
        parts = [p for p in MATH.split(text) if p]
        if len(parts) > len(self.texts):
            parts = [*parts[: len(self.texts) - 1], "".join(parts[len(self.texts) - 1 :])]
        space = self.texts[0].get_fontsize() * self.fig.dpi / 72.0 * SPACE_EM
        x, gap = self.x * self.fig.bbox.width, False
        for t, part in zip(self.texts, parts + [""] * (len(self.texts) - len(parts)), strict=True):
            t.set_text(part.strip())
            if not part.strip():
                continue
            x += space if gap or part[:1] == " " else 0.0
            t.set_x(x / self.fig.bbox.width)
            x = t.get_window_extent(renderer).x1
            gap = part[-1:] == " "

    def get_text(self) -> str:
        """The text shown."""
        return self.text


class _TickLabels(Artist):
    """The labels of a panel's count scale, right-aligned left of its ticks and drawn by the renderer directly
    (a ``Text`` each costs several times more in layout than in drawing). ``labels``: the texts shown,
    ``values``: where (in counts)."""

    def __init__(self, ax: Any, fontsize: float = 10.0) -> None:
        super().__init__()
        self.ax = ax
        self.prop = FontProperties(size=fontsize)
        self.values: list[float] = []
        self.labels: list[str] = []
        ax.add_artist(self)

    def set_ticks(self, values: Sequence[float]) -> None:
        """Label the counts ``values`` (``50``, ``2.5``: as short as they are)."""
        self.values = list(values)
        self.labels = [f"{v:g}" for v in values]

    def draw(self, renderer: Any) -> None:
        """Draw the labels (nothing of the artist's clip or transform applies: they sit outside the axes)."""
        gc = renderer.new_gc()
        gc.set_foreground("k")
        x = self.ax.transAxes.transform((-TICK, 0.0))[0] - renderer.points_to_pixels(TICK_PAD)
        for v, s in zip(self.values, self.labels, strict=True):
            y = self.ax.transData.transform((0.0, v))[1]
            w, h, d = renderer.get_text_width_height_descent(s, self.prop, False)
            renderer.draw_text(gc, x - w, renderer.height - (y - h / 2 + d), s, self.prop, 0.0)
        gc.restore()


class _Panel:
    """The artists of one category: mass panel (data, total, signal, background, counts) and pull panel."""

    def __init__(self, fig: Figure, spec: Any, col: int) -> None:
        self.ax = ax = fig.add_subplot(spec[0, col])
        self.pax = pax = fig.add_subplot(spec[1, col], sharex=ax)
        # the intervals: one line broken by NaNs (a LineCollection of 100 segments costs ten times more)
        (self.errors,) = ax.plot([], [], color="k", lw=0.9)
        (self.data,) = ax.plot([], [], "o", color="k", ms=3.0, label="data")
        (self.total,) = ax.plot([], [], color="C0", lw=1.8, label="fit")
        (self.signal,) = ax.plot([], [], color="C3", ls="--", lw=1.3, label="signal")
        (self.background,) = ax.plot([], [], color="C2", ls=":", lw=1.6, label="background")
        self.spans: list[Any] = []  # method sideband's shaded windows: static, in the cached background
        ax.text(0.03, 0.96, CATEGORIES[col], transform=ax.transAxes, va="top", ha="left", fontsize=11,
                fontweight="bold")
        self.note = ax.text(0.03, 0.89, "", transform=ax.transAxes, va="top", ha="left", fontsize=10)
        # a text of its own rather than the axis label: no search of the tick labels' extent at every bin
        self.ylabel = ax.text(-0.125, 0.5, "", transform=ax.transAxes, rotation=90, va="center", ha="center")
        self.set_windows(None, "")
        # the counts' scale changes with every bin: its ticks and labels are a few artists of their own, not
        # an Axis (whose tick objects and label extents cost more than the rest of the panel)
        ax.set_yticks([])
        self.locator = MaxNLocator(nbins=5)
        (self.ticks,) = ax.plot([], [], color="k", lw=0.8, transform=ax.get_yaxis_transform(), clip_on=False)
        self.tick_labels = _TickLabels(ax)
        self.pulls = pax.stairs(np.zeros(1), np.arange(2.0), fill=True, color="0.55", lw=0)
        for y in (-2.0, 2.0):
            pax.axhline(y, color="0.6", lw=0.6, ls=":")
        self.zero = pax.axhline(0.0, color="k", lw=0.8)
        pax.set_ylim(-PULL_RANGE, PULL_RANGE)
        pax.set_yticks([-4, -2, 0, 2, 4])
        pax.set_ylabel("pull")
        pax.yaxis.set_label_coords(-0.125, 0.5)
        ax.tick_params(labelbottom=False)

    @property
    def dynamic(self) -> list[Any]:
        """The artists that change from bin to bin, in drawing order (the rest is the cached background)."""
        return [self.ticks, self.tick_labels, self.ylabel, self.background, self.signal, self.total, self.errors,
                self.data, self.note, self.pulls, self.zero]

    def set_windows(self, windows: Windows | None, background: str) -> None:
        """The static part of a panel's figure: for method sideband (``windows``) the signal window and the
        sidebands shaded over the mass and pull panels and a legend of data, the ``background`` (flat or
        fitted) and the windows; for a fit (None) no shading and a legend of data, fit, signal, background."""
        for span in self.spans:
            span.remove()
        self.spans = []
        self.background.set_linestyle(":" if windows is None else "-")  # sideband: the one curve, solid (update)
        if windows is None:
            self.ax.legend(handles=[self.data, self.total, self.signal, self.background],
                           labels=["data", "fit", "signal", "background"], loc="upper right", fontsize=9,
                           frameon=False)
            return
        (a, b), sides = windows
        for ax in (self.ax, self.pax):
            self.spans.append(ax.axvspan(a, b, color=WINDOW_COLOUR, alpha=0.15, lw=0, zorder=0))
            self.spans += [ax.axvspan(lo, hi, color=SIDEBAND_COLOUR, alpha=0.18, lw=0, zorder=0) for lo, hi in sides]
        self.ax.legend(handles=[self.data, self.background, *self.spans[:2]],
                       labels=["data", f"background ({background})", "signal window", "sidebands"],
                       loc="upper right", fontsize=9, frameon=False)

    def set_ylim(self, top: float) -> None:
        """Counts from 0 to ``top``, with ticks where matplotlib's locator puts them."""
        self.ax.set_ylim(0.0, top)
        values = [float(v) for v in self.locator.tick_values(0.0, top) if 0.0 <= v <= top]
        self.ticks.set_data([x for _ in values for x in (-TICK, 0.0, np.nan)], [y for v in values for y in (v, v, v)])
        self.tick_labels.set_ticks(values)

    def update(self, cat: Category, min_candidates: int, ylabel: str) -> None:
        """Show one category of one bin: the data, the model's curves and the pulls where ``cat`` has them."""
        edges = cat.edges
        centres = 0.5 * (edges[1:] + edges[:-1])
        lo, hi = data_intervals(cat.sumw, cat.sumw2)
        self.data.set_data(centres, np.where(cat.sumw != 0, cat.sumw, np.nan))  # empty bins: the interval alone
        nan = np.full_like(centres, np.nan)
        self.errors.set_data(np.column_stack([centres, centres, nan]).ravel(), np.column_stack([lo, hi, nan]).ravel())
        top = float(hi.max()) if hi.size else 1.0
        lines = ((self.total, cat.total), (self.signal, cat.signal), (self.background, cat.background))
        for line, y in lines:
            line.set_data(([], []) if y is None else (cat.fine_x, y))
        self.background.set_linestyle(":" if cat.total is not None else "-")  # as in the legend (set_windows)
        drawn = cat.total if cat.total is not None else cat.background
        if drawn is not None and drawn.size:
            top = max(top, float(np.nanmax(drawn)))
        pulls = np.zeros_like(cat.sumw)
        if cat.expected is not None:
            scale = None if cat.sumw2 is None else _scale(cat.sumw, cat.sumw2)
            shown = np.ones(pulls.shape, dtype=bool) if cat.pull_mask is None else cat.pull_mask
            pulls[shown] = np.clip(poisson_pulls(cat.sumw, cat.expected, scale)[shown], -0.98 * PULL_RANGE,
                                   0.98 * PULL_RANGE)
        self.pulls.set_data(pulls, edges)
        self.set_ylim(1.45 * top if top > 0 else 1.0)
        self.ylabel.set_text(ylabel)
        low = cat.candidates < min_candidates
        self.note.set_text("no candidates" if cat.candidates == 0 else
                           f"{cat.candidates:.0f} candidates" + (f" < {min_candidates}: low statistics" if low else ""))
        self.note.set_color(FLAG_COLOUR if low else "k")


def _scale(sumw: np.ndarray, sumw2: np.ndarray) -> np.ndarray:
    """Per-bin Σw/Σw² (1 where there are no weights)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sumw2 > 0, sumw / sumw2, 1.0)


def ylabel(cat: Category, unit: str, weighted: bool) -> str:
    """``candidates / 3 MeV`` (``weighted candidates`` for weighted data)."""
    return f"{'weighted candidates' if weighted else 'candidates'} / {cat.width:.3g}" + (f" {unit}" if unit else "")


def write_png(path: str, rgba: memoryview, width: int, height: int) -> None:
    """Write an RGBA buffer as it is to a PNG: rows unfiltered, zlib level 1 (about twice as fast as Pillow's
    adaptive filtering, or as dropping the alpha channel first, for the same size on these white figures)."""
    raw = np.empty((height, 4 * width + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = np.asarray(rgba).reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no interlace
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1))
                + chunk(b"IEND", b""))


class FitFigure:
    """One reusable figure of a pass/fail fit: two mass panels with pulls, a title, a summary and a status.

    What is the same for many bins (frames, mass axes and their labels, pull scales, legends, brand) is
    rendered once into a background (a few kept, by what they show); each bin restores one and draws only
    its own artists (blitting), several times cheaper than a full ``savefig``. Texts are drawn without
    hinting (a third cheaper, and as legible at this size) by :class:`_Renderer`.
    """

    def __init__(self) -> None:
        self.fig = fig = Figure(figsize=FIGSIZE, dpi=DPI)
        self.canvas = _Canvas(fig)
        spec = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.06, wspace=0.24, left=0.08, right=0.985,
                                top=0.825, bottom=0.09)
        self.panels = [_Panel(fig, spec, col) for col in range(2)]
        self.brand = fig.text(0.985, 0.98, "", ha="right", va="top", fontsize=11, fontweight="bold")
        self.title = _Row(fig, 0.01, 0.952, TITLE_PIECES, fontsize=12)
        self.summary = fig.text(0.01, 0.935, "", ha="left", va="top", fontsize=11)
        self.status = fig.text(0.01, 0.89, "", ha="left", va="top", fontsize=11, fontweight="bold")
        self.dynamic = [a for p in self.panels for a in p.dynamic] + [*self.title.texts, self.summary, self.status]
        for a in self.dynamic:
            a.set_animated(True)
        self._backgrounds: dict[tuple[Any, ...], Any] = {}

    def _prepare(self, static: tuple[float, float, str, str, Windows | None, str]) -> None:
        """Restore the background of ``static`` (mass range, mass axis label, brand, method sideband's windows
        and background), rendered first if it is not among the last :data:`BACKGROUNDS` ones."""
        if static not in self._backgrounds:
            lo, hi, xlabel, brand, windows, background = static
            for p in self.panels:
                p.ax.set_xlim(lo, hi)
                p.pax.set_xlabel(xlabel)
                p.set_windows(windows, background)
            self.brand.set_text(brand)
            self.canvas.draw()
            if len(self._backgrounds) >= BACKGROUNDS:
                del self._backgrounds[next(iter(self._backgrounds))]
            self._backgrounds[static] = self.canvas.copy_from_bbox(self.fig.bbox)
        self.canvas.restore_region(self._backgrounds[static])

    def draw(self, path: str, cats: Sequence[Category], result: Mapping[str, Any], text: FigureText,
             weighted: bool = False, min_candidates: int = 0) -> None:
        """Show one bin (its pass and fail :class:`Category`) and write the PNG ``path`` (atomically)."""
        import matplotlib

        for cat, panel in zip(cats, self.panels, strict=True):
            panel.update(cat, min_candidates, ylabel(cat, text.mass_unit, weighted))
        status = str(result.get("status", ""))
        self.summary.set_text(summary_line(result))
        self.status.set_text(f"status: {status}")
        self.status.set_color(OK_COLOUR if status == "ok" else FLAG_COLOUR)
        lo, hi = float(cats[0].edges[0]), float(cats[0].edges[-1])
        static = (lo, hi, axis_label(text.mass_label, text.mass_unit), text.brand, text.windows,
                  text.sideband_background if text.windows is not None else "")
        hinting = matplotlib.rcParams["text.hinting"]
        matplotlib.rcParams["text.hinting"] = "no_hinting"
        try:  # the title's pieces measured as they are drawn: without hinting (hinted, long pieces overlap)
            self.title.set_text(text.title, self.canvas.get_renderer())
            self._prepare(static)
            for a in self.dynamic:
                self.fig.draw_artist(a)
        finally:
            matplotlib.rcParams["text.hinting"] = hinting
        width, height = self.canvas.get_width_height()
        write_png(path, self.canvas.buffer_rgba(), width, height)


def summary_line(result: Mapping[str, Any]) -> str:
    """``ε = 0.8612 −0.0170 +0.0140   N(sig) = 1234 ± 40   χ²/ndof = 95.3/191`` and, when the fit was
    retried, the accepted attempt and its signal model."""
    if result.get("efficiency") is None or not math.isfinite(result["efficiency"]):  # None: NaN read from JSON
        return "ε: no measurement" + (" (no candidates)" if result.get("status") == "empty_bin" else "")
    parts = [f"ε = {result['efficiency']:.4f} −{result['err_down']:.4f} +{result['err_up']:.4f}"]
    if "n_sig" in result:
        parts.append(f"N(sig) = {result['n_sig']:.0f} ± {result.get('n_sig_err', float('nan')):.0f}")
    if "chi2" in result:
        parts.append(f"χ²/ndof = {result['chi2']:.1f}/{result['ndof']}")
    if "alpha" in result:  # method sideband
        err = result.get("alpha_err") or 0.0
        parts.append(f"α = {result['alpha']:.3f}" + (f" ± {err:.3f}" if err > 0 else " (flat background)"))
    n = result.get("n_attempts", 1)
    if n > 1:
        parts.append(f"attempt {result.get('accepted', 0) + 1} of {n}: {result.get('signal_model', '')}")
    return "   ".join(parts)


_FIGURE: FitFigure | None = None


def fit_figure() -> FitFigure:
    """This process's reusable :class:`FitFigure` (made on first use)."""
    global _FIGURE
    if _FIGURE is None:
        _FIGURE = FitFigure()
    return _FIGURE


def plot_bin_fit(path: str, data: BinHistograms | BinCandidates, result: Mapping[str, Any], background: str,
                 fail_width_shift: bool, text: FigureText, mass_bins: int = 100, min_candidates: int = 0) -> None:
    """Draw one bin's pass/fail fit (``result`` of ``measure_bin``; ``data`` its histograms or candidates, the
    latter histogrammed in ``mass_bins``) into the PNG ``path``; a result without parameters (an empty bin)
    shows the data alone; with ``text.windows`` (method sideband) the panels are :func:`sideband_categories`.
    ``min_candidates``: below it a category is marked as low statistics."""
    hist = histograms_of(data, mass_bins)
    cats = categories(hist, result, background, fail_width_shift) if text.windows is None else \
        sideband_categories(hist, result, text.windows, text.sideband_background)
    fit_figure().draw(path, cats, result, text, hist.weighted, min_candidates)


def safe_plot_bin_fit(path: str, err: str, *args: Any, **kwargs: Any) -> str | None:
    """:func:`plot_bin_fit` that never raises: on an error, a one-line reason is written to ``err`` (the
    figure's error file, ``Plan.plot_error_path``) and returned; on success an old ``err`` is removed."""
    try:
        plot_bin_fit(path, *args, **kwargs)
    except Exception as exc:  # a figure must never fail the fit or the tables
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0] or type(exc).__name__
        with atomic_path(err) as tmp, open(tmp, "w") as f:
            f.write(reason + "\n")
        if os.path.exists(path):
            os.remove(path)  # no older figure stands for this one
        return reason
    if os.path.exists(err):
        os.remove(err)
    return None
