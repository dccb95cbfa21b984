"""Export tables as Markdown and LaTeX: one line per bin, values with asymmetric uncertainties."""

from __future__ import annotations

import math
from collections.abc import Sequence

from calibflow.tables.rows import Row


def _bin_cells(row: Row, variables: Sequence[str]) -> list[str]:
    return [f"[{row[f'{v}_lo']:g}, {row[f'{v}_hi']:g})" for v in variables]


def _value(v: float, down: float, up: float, latex: bool) -> str:
    if not math.isfinite(v):
        return "n/a"
    if latex:
        return f"${v:.4f}^{{+{up:.4f}}}_{{-{down:.4f}}}$"
    return f"{v:.4f} +{up:.4f} -{down:.4f}"


def table_lines(
    rows: Sequence[Row], variables: Sequence[str], columns: Sequence[tuple[str, str, str, str]], latex: bool
) -> list[str]:
    """Table body: per row the bin cells then ``(header, value, err_down, err_up)`` columns."""
    header = [*variables, *(c[0] for c in columns)]
    body = [[*_bin_cells(r, variables), *(_value(r[c[1]], r[c[2]], r[c[3]], latex) for c in columns)] for r in rows]
    if latex:
        lines = [r"\begin{tabular}{" + "c" * len(header) + "}", r"\hline",
                 " & ".join(h.replace("_", r"\_") for h in header) + r" \\", r"\hline"]
        lines += [" & ".join(cells) + r" \\" for cells in body]
        return [*lines, r"\hline", r"\end{tabular}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def write_text_tables(path: str, sections: Sequence[tuple[str, list[str]]], latex: bool) -> None:
    """Write titled table sections to a Markdown (``latex=False``) or LaTeX file."""
    out: list[str] = []
    for title, lines in sections:
        out += [f"% {title}" if latex else f"## {title}", "", *lines, ""]
    with open(path, "w") as f:
        f.write("\n".join(out))
