"""Tables as Markdown and LaTeX grids: rows the first binning variable, columns the second, one grid per
interval of every further variable (a 1-D binning gives one column).

A cell reads ``value +stat/-stat ± syst`` (Markdown) or ``$value^{+stat}_{-stat} \\pm syst$`` (LaTeX): the
statistical errors ``err_up``/``err_down`` (for a scale factor data and simulation combined) then the total
systematic ``syst``; ``± stat`` when both sides agree at the digits shown, and no ``± syst`` without
systematic sources. Decimals: per table, the median statistical error to two significant digits. A legend
(Markdown) or the caption (LaTeX) says so for every grid. Labels and units keep their LaTeX math
(``$p_\\mathrm{T}$``) in both formats: Markdown viewers with math (GitHub, GitLab, Jupyter) render it, and in
plain text it stays readable. A nested binning's grid is the union of its edges: in Markdown ``←`` marks a
cell of the same bin as its left neighbour, in LaTeX the bin is one ``\\multicolumn``; ``—`` (``--``) marks a
cell without a bin or value. The LaTeX file is a fragment for ``\\input`` that needs
``\\usepackage{graphicx}`` (a grid wider than the line is shrunk to it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.export.grid import Table, cell_bins, decimals, interval, is_product, stat, syst, union_edges
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row

SAME_BIN = "←"
NO_BIN = "—"
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$"}


def latex_text(text: str) -> str:
    """``text`` for LaTeX: ``$...$`` math kept as it is, special characters of the rest escaped."""
    parts = text.split("$")
    if len(parts) % 2 == 0:  # unbalanced dollars: all plain text
        parts = [text]
    return "".join(f"${p}$" if i % 2 else "".join(_LATEX_ESCAPES.get(c, c) for c in p) for i, p in enumerate(parts))


def markdown_text(text: str) -> str:
    """``text`` for a Markdown table cell (``|`` escaped)."""
    return text.replace("|", r"\|")


def _number(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def cell(value: float, down: float, up: float, systematic: float | None, digits: int, latex: bool) -> str:
    """``value`` with statistical ``down``/``up`` errors and the ``systematic`` one (None: not shown), every
    number with ``digits`` decimals."""
    if not math.isfinite(value):
        return "n/a"
    v, d, u = (_number(x, digits) for x in (value, down, up))
    pm = r" \pm " if latex else " ± "
    asymmetric = f"^{{+{u}}}_{{-{d}}}" if latex else f" +{u}/-{d}"
    text = v + (f"{pm}{u}" if d == u else asymmetric)
    if systematic is not None:
        text += f"{pm}{_number(systematic, digits)}"
    return f"${text}$" if latex else text


def _row_cell(row: Row | None, value: str, with_syst: bool, digits: int, latex: bool) -> str:
    if row is None:
        return "--" if latex else NO_BIN
    down, up = stat(row)
    return cell(float(row[value]), down, up, syst(row) if with_syst else None, digits, latex)


class _Layout:
    """The grid of a scheme: union edges, the bin of every cell, the slices over variables after the second."""

    def __init__(self, scheme: BinningScheme, axes: Mapping[str, str]) -> None:
        self.variables = list(scheme.variables)
        self.axes = [axes.get(v, v) for v in self.variables]
        self.edges = union_edges(scheme)
        cells = cell_bins(scheme, self.edges)
        self.product = is_product(cells)
        self.cells = cells.reshape(*cells.shape, 1) if cells.ndim == 1 else cells

    def slices(self) -> Iterator[tuple[list[tuple[str, float, float]], np.ndarray]]:
        """Per combination of intervals of the variables after the second: its bounds (axis label, lo, hi)
        and the 2-D array of bin indices (rows × columns)."""
        extra = self.cells.shape[2:]
        for idx in itertools.product(*(range(n) for n in extra)):
            bounds = [(self.axes[2 + k], float(self.edges[2 + k][i]), float(self.edges[2 + k][i + 1]))
                      for k, i in enumerate(idx)]
            yield bounds, self.cells[(slice(None), slice(None), *idx)]

    def columns(self, quantity: str) -> list[str]:
        """Column intervals (or the quantity for a 1-D scheme)."""
        if len(self.variables) == 1:
            return [quantity]
        e = self.edges[1]
        return [interval(e[j], e[j + 1]) for j in range(len(e) - 1)]

    def rows(self) -> list[str]:
        """Row intervals."""
        e = self.edges[0]
        return [interval(e[i], e[i + 1]) for i in range(len(e) - 1)]


def _runs(line: np.ndarray) -> list[tuple[int, int]]:
    """(bin index, number of consecutive cells) along one grid row; -1 cells are runs of their own."""
    runs: list[tuple[int, int]] = []
    for b in (int(x) for x in line):
        if runs and b >= 0 and runs[-1][0] == b:
            runs[-1] = (b, runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    return runs


def _legend(layout: _Layout, sources: Sequence[str], latex: bool, quantity: str | None = None) -> str:
    """What the grids of ``quantity`` (None: of every table) show: ``in bins of ...; cells: ...`` (with the
    nested-binning note). Markdown: for a paragraph, not a table cell."""
    axes = [latex_text(a) for a in layout.axes] if latex else list(layout.axes)
    pm = r"$\pm$" if latex else "±"
    text = f"in bins of {axes[0]}" + (f" (rows) and {axes[1]} (columns)" if len(axes) > 1 else "")
    if len(axes) > 2:
        text += f", one grid per interval of {', '.join(axes[2:])}"
    form = r"value$^{+\mathrm{stat}}_{-\mathrm{stat}}$" if latex else "value +stat/-stat"
    text += f"; cells: {form}" + (f" {pm} syst" if sources else "")
    combined = {None: ", for scale factors data and simulation combined", "scale factor":
                ", data and simulation combined"}.get(quantity, "")
    text += f" (stat: statistical{combined}; "
    text += f"syst: total systematic of {', '.join(sources)}" if sources else "no systematic sources"
    text += f"; {pm} stat where both sides round alike)."
    if not layout.product:
        text += " Nested binning: the columns are the union of its edges"
        text += ", a bin spanning several is one cell." if latex else f"; {SAME_BIN}: the bin of the cell to its left."
    return text


def _grid_lines(table: Table, layout: _Layout, sources: Sequence[str], latex: bool) -> list[str]:
    """The grids of one table: Markdown tables (under a ``###`` heading per slice), or LaTeX ``table`` floats."""
    by_bin, digits = table.by_bin(), decimals(table.rows)
    out: list[str] = []
    for bounds, cells in layout.slices():
        body = []
        for label, line in zip(layout.rows(), cells, strict=True):
            runs = [(_row_cell(by_bin.get(b) if b >= 0 else None, table.value, bool(sources), digits, latex), n)
                    for b, n in _runs(line)]
            body.append((label, runs))
        if latex:
            out += _latex_grid(table, layout, sources, bounds, body)
        else:
            where = ", ".join(f"{a} ∈ {interval(lo, hi)}" for a, lo, hi in bounds)
            out += [*([f"### {where}", ""] if bounds else []), *_markdown_grid(table, layout, body)]
    return out


_Body = list[tuple[str, list[tuple[str, int]]]]
"""Per grid row its interval and its runs (cell text, number of grid columns it spans)."""


def _markdown_grid(table: Table, layout: _Layout, body: _Body) -> list[str]:
    axes = [markdown_text(a) for a in layout.axes]
    corner = axes[0] if len(axes) == 1 else f"{axes[0]} \\ {axes[1]}"
    columns = layout.columns(table.quantity)
    lines = ["| " + " | ".join([corner, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for label, runs in body:
        cells = [c for text, n in runs for c in [text] + [SAME_BIN] * (n - 1)]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return [*lines, ""]


def _latex_grid(table: Table, layout: _Layout, sources: Sequence[str], bounds: list[tuple[str, float, float]],
                body: _Body) -> list[str]:
    columns = layout.columns(table.quantity)
    n = len(columns)
    axes = [latex_text(a) for a in layout.axes]
    where = "".join(f", {latex_text(a)} $\\in {interval(lo, hi)}$" for a, lo, hi in bounds)
    caption = f"{latex_text(table.title)}{where} {_legend(layout, sources, True, table.quantity)}"
    if len(axes) == 1:
        head = [f"{axes[0]} & {latex_text(columns[0])} \\\\"]
    else:
        head = [f" & \\multicolumn{{{n}}}{{c}}{{{axes[1]}}} \\\\",
                f"{axes[0]} & " + " & ".join(f"${c}$" for c in columns) + r" \\"]
    rows = [f"${label}$ & " + " & ".join(text if k == 1 else f"\\multicolumn{{{k}}}{{c}}{{{text}}}" for text, k in runs)
            + r" \\" for label, runs in body]
    return [r"\begin{table}[htbp]", r"\centering", f"\\caption{{{caption}}}",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            r"\begin{tabular}{c|" + "c" * n + "}", r"\hline", *head, r"\hline", *rows, r"\hline",
            r"\end{tabular}}", r"\end{table}", ""]


def write_text_tables(
    path: str, heading: str, scheme: BinningScheme, tables: Sequence[Table], axes: Mapping[str, str],
    sources: Sequence[str], latex: bool,
) -> None:
    """Write ``tables`` as grids to a Markdown (``latex=False``) or LaTeX file; ``axes``: per binning variable
    its axis label (``label [unit]``), ``sources``: the systematic sources shown in ``± syst``."""
    layout = _Layout(scheme, axes)
    if latex:
        out = [f"% {heading}: one table per grid; \\input this file (needs \\usepackage{{graphicx}})", ""]
        for table in tables:
            out += [f"% {table.name}", *_grid_lines(table, layout, sources, True)]
    else:
        cells = set(layout.cells.ravel().tolist())
        empty = -1 in cells or any(not cells <= set(t.by_bin()) for t in tables)
        legend = f"Every table is {_legend(layout, sources, False)}"
        out = [f"# {markdown_text(heading)}", "", legend + (f" {NO_BIN}: a cell without a bin or value." if empty else ""), ""]
        for table in tables:
            out += [f"## {markdown_text(table.title)}", "", *_grid_lines(table, layout, sources, False)]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(out))
