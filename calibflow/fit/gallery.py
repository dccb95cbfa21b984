"""The fit gallery of one sample and variant: each bin's figure under a readable name and an ``index.html``.

The page is self-contained (inline style, no script, nothing fetched from the network): a line of status
counts, then the flagged bins (any status but ``ok``, or a figure that could not be drawn) with their status,
what it means and their figure, then every other bin. Figures are named by the bin's bounds
(:func:`file_stems`: ``p_10-20_eta_2.00-2.25.png``), so a reader finds a bin without its content key.
"""

from __future__ import annotations

import html
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from calibflow.binning.scheme import Bin
from calibflow.io.store import atomic_path

INDEX = "index.html"
MAX_DECIMALS = 6
MAX_EDGE = 12
"""Longest bin edge, in characters, written with fixed decimals in a figure's file name."""
MAX_STEM = 150
"""Longest file stem (bytes) made of a bin's bounds; longer ones are ``bin<index>``."""
MEANINGS = {
    "low_statistics": "fewer candidates than fit.min_candidates in pass or fail",
    "invalid_minimum": "Migrad found no valid minimum",
    "covariance_not_accurate": "the covariance matrix is not accurate",
    "at_limit": "a shape parameter sits at its limit",
    "bad_gof": "χ²/ndof above fit.max_chi2_ndof",
    "no_signal_after_subtraction": "the sideband-subtracted signal yield (pass + fail) is not positive, or a TIS/TOS "
                                   "count the efficiency divides by is zero",
    "low_gof_pvalue": "goodness-of-fit p-value (binned: χ², unbinned: Kolmogorov-Smirnov) below fit.gof.min_pvalue",
    "low_signal_significance": "signal yield below fit.min_significance standard deviations",
    "minos_failed": "MINOS failed: symmetric HESSE errors",
    "efficiency_outside_0_1": "efficiency outside [0, 1]",
    "empty_bin": "no candidates in the mass range",
    "negative_weights": "method count met negative weights, which binomial intervals cannot take: the estimate and "
                        "errors are those of method sweighted (Σw_pass/Σw, PIDCalib2 variance); set method: sweighted",
    "nonpositive_weight_sum": "the weights sum to ≤ 0: Σw_pass/Σw kept as PIDCalib2 keeps it (sweighted, count); "
                              "fits are not attempted",
    "no_template": "fit.signal template: the reference simulation has no pass or no fail candidate in this bin",
    "no_constraint": "fit.constrain: the simulation fit of this bin gives no value of a constrained parameter",
    "coverage_off": "config coverage: toys of the bin's result show its ±1σ interval covering more than 3 binomial σ "
                    "away from 68.27 %, or pulls of width outside [0.8, 1.2] (reasons after the ':', sf_ for the "
                    "scale factor; docs/fits.md, \"Coverage\")",
}
"""What each status tag (the part before a ``:``) means, for the reader of the gallery."""


@dataclass(frozen=True)
class GalleryEntry:
    """One bin of a gallery: ``index``, ``label`` (plain text bounds), figure file ``name`` (in the gallery
    folder), fit ``status``, efficiency with errors, candidates per category; ``figure``: the drawn PNG to
    copy (None: no figure), ``plot_error``: why it could not be drawn (None: no error)."""

    index: int
    label: str
    name: str
    status: str
    efficiency: float
    err_down: float
    err_up: float
    candidates_pass: float | None = None
    candidates_fail: float | None = None
    figure: str | None = None
    plot_error: str | None = None

    @property
    def flagged(self) -> bool:
        """Whether the bin goes first: its status is not ``ok`` or its figure could not be drawn."""
        return self.status != "ok" or self.plot_error is not None


def _decimals(values: Sequence[float]) -> int:
    """Fewest decimals (≤ :data:`MAX_DECIMALS`) that write every value of ``values`` exactly."""
    for d in range(MAX_DECIMALS + 1):
        if all(math.isclose(round(v, d), v, rel_tol=0.0, abs_tol=1e-9 * max(1.0, abs(v))) for v in values):
            return d
    return MAX_DECIMALS


def _edge(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals; in the shortest ``%g`` form that reads back as ``x`` when that fixed
    form would be longer than :data:`MAX_EDGE` characters (``1e+308``, ``1.5e-09``)."""
    fixed = f"{x:.{digits}f}"
    if len(fixed) <= MAX_EDGE:
        return fixed
    return next(f"{x:.{p}g}" for p in range(1, 18) if float(f"{x:.{p}g}") == x)


def file_stems(bins: Sequence[Bin]) -> list[str]:
    """Readable file stems of ``bins``: ``<var>_<lo>-<hi>`` per variable joined by ``_``, e.g.
    ``p_10-20_eta_2.00-2.25``; each variable's edges with the same number of decimals (the fewest that
    write all its edges exactly; huge or tiny edges in ``%g`` form, :func:`_edge`). A stem that would repeat
    gets ``_bin<index>`` appended; one longer than :data:`MAX_STEM` characters (many variables, long names) is
    ``bin<index>``, so that every file name stays far below the file systems' 255 bytes."""
    edges: dict[str, list[float]] = {}
    for b in bins:
        for v, lo, hi in b.bounds:
            edges.setdefault(v, []).extend((lo, hi))
    digits = {v: _decimals(e) for v, e in edges.items()}
    stems = ["_".join(f"{v}_{_edge(lo, digits[v])}-{_edge(hi, digits[v])}" for v, lo, hi in b.bounds) for b in bins]
    stems = [s if len(s.encode()) <= MAX_STEM else f"bin{b.index}" for s, b in zip(stems, bins, strict=True)]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    return [s if seen[s] == 1 else f"{s}_bin{b.index}" for s, b in zip(stems, bins, strict=True)]


def plain_label(b: Bin, units: dict[str, str] | None = None) -> str:
    """``p ∈ [10, 20) GeV, eta ∈ [2, 2.25)``: the bin by its variables' names (the CSV columns) and units."""
    units = units or {}
    return ", ".join(f"{v} ∈ [{lo:g}, {hi:g})" + (f" {units[v]}" if units.get(v) else "") for v, lo, hi in b.bounds)


def meaning(status: str) -> str:
    """What the tags of ``status`` mean (``ok``: empty), e.g. ``low_statistics: fewer candidates ...``."""
    tags = [t.strip() for t in status.split(",") if t.strip() and t.strip() != "ok"]
    return "; ".join(f"{t}: {MEANINGS[t.split(':', 1)[0]]}" if t.split(":", 1)[0] in MEANINGS else t for t in tags)


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:410px}
.card.flag{border-color:#c0392b}.status{font-weight:bold}.ok{color:#1a7f37}.bad{color:#c0392b}
.card img{width:400px;display:block;margin-top:4px}.meta{font-size:0.85em;color:#555}"""


def _card(e: GalleryEntry, note: str) -> str:
    cls = "bad" if e.flagged else "ok"
    counts = ""
    if e.candidates_pass is not None and e.candidates_fail is not None:
        counts = f" · candidates pass {e.candidates_pass:.0f}, fail {e.candidates_fail:.0f}"
    lines = [f'<div class="card{" flag" if e.flagged else ""}" id="bin{e.index}">',
             f"<div>bin {e.index}: {html.escape(e.label)}</div>",
             f'<div class="status {cls}">{html.escape(e.status)}</div>']
    if meaning(e.status):
        lines.append(f'<div class="meta">{html.escape(meaning(e.status))}</div>')
    lines.append(f'<div class="meta">ε = {e.efficiency:.4f} −{e.err_down:.4f} +{e.err_up:.4f}{counts}</div>')
    if e.plot_error is not None:
        lines.append(f'<div class="bad">figure failed: {html.escape(e.plot_error)}</div>')
    elif e.figure is not None:
        src = html.escape(e.name + ".png")
        lines.append(f'<a href="{src}"><img src="{src}" alt="fit of bin {e.index}" loading="lazy"></a>')
    else:
        lines.append(f'<div class="meta">{html.escape(note)}</div>')
    return "\n".join([*lines, "</div>"])


def write_gallery(folder: str, title: str, entries: Sequence[GalleryEntry], no_figure: str = "no figure") -> list[str]:
    """Write ``folder`` afresh: each entry's figure as ``<name>.png`` and ``index.html`` (flagged bins first,
    by bin index, then the others); ``no_figure`` is said of bins without a figure and without an error.
    Returns the paths written."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # no figure of a bin that is gone (re-binning) survives
    os.makedirs(folder)
    written = []
    for e in entries:
        if e.figure is not None and e.plot_error is None:
            dst = os.path.join(folder, e.name + ".png")
            try:
                os.link(e.figure, dst)  # the keyed figure itself, no copy
            except OSError:
                with atomic_path(dst) as tmp:  # a full disk leaves no partial copy
                    shutil.copyfile(e.figure, tmp)
            written.append(dst)
    flagged = sorted((e for e in entries if e.flagged), key=lambda e: e.index)
    others = sorted((e for e in entries if not e.flagged), key=lambda e: e.index)
    n_low = sum("low_statistics" in e.status.split(",") for e in entries)
    n_err = sum(e.plot_error is not None for e in entries)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(entries)} bins: {len(others)} ok, {len(flagged)} flagged ({n_low} low statistics, "
            f"{n_err} figure error(s)).</p>",
            f"<h2>Flagged bins ({len(flagged)})</h2>", '<div class="grid">',
            *(_card(e, no_figure) for e in flagged), "</div>",
            f"<h2>Bins with status ok ({len(others)})</h2>", '<div class="grid">',
            *(_card(e, no_figure) for e in others), "</div>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    index = os.path.join(folder, INDEX)
    with atomic_path(index) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    return [*written, index]
