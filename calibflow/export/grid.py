"""The tables of one folder laid out on a grid, shared by the Markdown/LaTeX and ROOT exports and the report page.

A table (:class:`Table`) is one sample's efficiencies (or signal yields, method ``yield``) or one data sample's
scale factors, one row per bin.
Its grid has per binning variable the union of that variable's edges anywhere in the scheme: for a product
scheme every cell is one bin; for a nested scheme (after ``binning.optimise``) a bin covers several cells,
which all show its value, and a cell outside every bin (possible only if an inner binning does not span the
variable's full range) has none. The report lays a table's rows out without the scheme (:func:`row_grid`: a full
grid of two variables, else none). Intervals read ``[lo, hi)`` (:func:`interval`) and the decimals of every grid
come from :func:`significant_places`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.tables.rows import YIELD_METHOD, Row


@dataclass(frozen=True)
class Table:
    """One exported table: ``name`` (``eff_<sample>``, ``yield_<sample>`` or ``sf_<data>``), ``title`` (``data
    efficiency``, ``data signal yield``, ``data/mc scale factor``), the ``quantity`` it holds, its ``value`` column
    and its rows (one per bin)."""

    name: str
    title: str
    quantity: str
    value: str
    rows: Sequence[Row]

    def by_bin(self) -> dict[int, Row]:
        """Rows by bin index."""
        return {int(r["bin"]): r for r in self.rows}


def yield_rows(rows: Sequence[Row]) -> list[Row]:
    """Rows of method ``yield`` with their signal yield's error as ``err_down``/``err_up`` (its total and
    systematic columns are the yield's already: :func:`calibflow.tables.systematics.value_columns`)."""
    return [{**r, "err_down": r["n_sig_err"], "err_up": r["n_sig_err"]} for r in rows
            if r.get("method") == YIELD_METHOD]


def tables_of(eff: Sequence[Row], sf: Sequence[Row]) -> list[Table]:
    """Efficiency tables per sample (``yield_<sample>`` of its signal yields for a sample of method ``yield``),
    then scale-factor tables per data sample, each sorted by name."""
    out = []
    for s in sorted({r["sample"] for r in eff}):
        rows = [r for r in eff if r["sample"] == s]
        yields = yield_rows(rows)
        out.append(Table(f"yield_{s}", f"{s} signal yield", "signal yield", "n_sig", yields) if yields else
                   Table(f"eff_{s}", f"{s} efficiency", "efficiency", "efficiency", rows))
    for data in sorted({r["data"] for r in sf}):
        rows = [r for r in sf if r["data"] == data]
        mc = ", ".join(sorted({str(r["mc"]) for r in rows}))
        out.append(Table(f"sf_{data}", f"{data}/{mc} scale factor", "scale factor", "scale_factor", rows))
    return out


def stat(row: Row) -> tuple[float, float]:
    """Statistical (down, up) errors of a row: ``err_down``, ``err_up`` (for a scale factor: data and
    simulation combined)."""
    return float(row["err_down"]), float(row["err_up"])


def syst(row: Row) -> float:
    """Total systematic uncertainty of a row (``syst``; 0 without systematic sources)."""
    return float(row.get("syst", 0.0))


def total(row: Row) -> tuple[float, float]:
    """Total (down, up) errors: ``total_down``, ``total_up`` (the statistical ones without a ``syst``)."""
    down, up = stat(row)
    return float(row.get("total_down", down)), float(row.get("total_up", up))


def sources_in(rows: Sequence[Row], sources: Sequence[str]) -> list[str]:
    """The systematic ``sources`` whose ``<source>Up``/``<source>Down`` columns are in ``rows``."""
    return [s for s in sources if rows and f"{s}Up" in rows[0] and f"{s}Down" in rows[0]]


def union_edges(scheme: BinningScheme) -> list[np.ndarray]:
    """Per variable (outer first) the sorted union of its edges over every node of ``scheme``."""
    levels: list[list[float]] = [[] for _ in scheme.variables]

    def walk(node: Node, depth: int) -> None:
        levels[depth].extend(node.edges)
        for child in node.children or ():
            walk(child, depth + 1)

    walk(scheme.root, 0)
    return [np.unique(np.asarray(e, dtype=float)) for e in levels]


def cell_bins(scheme: BinningScheme, edges: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the bin holding each cell of the grid ``edges`` (shape: bins per variable), -1 for none."""
    centres = np.meshgrid(*[0.5 * (e[1:] + e[:-1]) for e in edges], indexing="ij")
    columns = {v: c.ravel() for v, c in zip(scheme.variables, centres, strict=True)}
    return scheme.locate_reference(columns).reshape(centres[0].shape)


def is_product(cells: np.ndarray) -> bool:
    """Whether every cell of a grid is a bin of its own (a product scheme)."""
    return bool(np.all(cells >= 0)) and np.unique(cells).size == cells.size


def interval(lo: float, hi: float) -> str:
    """``[lo, hi)`` with compact numbers."""
    return f"[{lo:g}, {hi:g})"


def significant_places(errors: Iterable[float], significant: int) -> int | None:
    """Decimal places showing the median of the positive finite ``errors`` to ``significant`` significant digits
    (may be 0 or negative for errors of 10 and more); None when there is no such error."""
    positive = [e for e in errors if math.isfinite(e) and e > 0]
    return significant - 1 - math.floor(math.log10(float(np.median(positive)))) if positive else None


def decimals(rows: Sequence[Row]) -> int:
    """Decimal places of a table: enough for the median positive statistical error to two significant digits
    and the median positive systematic one to one (1 to 6; 4 without errors). One number per table lines a
    grid up, and a median keeps one tiny error from lengthening every number."""
    places = significant_places([e for r in rows for e in stat(r)], 2)
    if places is None:
        return 4
    return min(6, max(1, places, significant_places([syst(r) for r in rows], 1) or 1))


Range = tuple[float, float]


@dataclass(frozen=True)
class RowGrid:
    """A table's rows on a full grid of two binning variables: ``row_var`` down (the one with more intervals),
    ``col_var`` across, their sorted intervals and the row of each cell (``at[row interval, column interval]``)."""

    row_var: str
    col_var: str
    row_ranges: list[Range]
    col_ranges: list[Range]
    at: dict[tuple[Range, Range], Row]


def row_grid(rows: Sequence[Row], names: Sequence[str]) -> RowGrid | None:
    """The grid of ``rows`` over the binning variables ``names`` (their ``<name>_lo``/``_hi`` columns) when there
    are two and every combination of their intervals is one row (a product binning); else None (one variable, more
    than two, or a nested binning: show one row per bin)."""
    if len(names) != 2:
        return None

    def ranges(name: str) -> set[Range]:
        return {(r[f"{name}_lo"], r[f"{name}_hi"]) for r in rows}

    first, second = ranges(names[0]), ranges(names[1])
    cells = {tuple((r[f"{n}_lo"], r[f"{n}_hi"]) for n in names) for r in rows}
    if len(cells) != len(rows) or len(cells) != len(first) * len(second):
        return None
    y, x = (names[0], names[1]) if len(second) <= len(first) else (names[1], names[0])
    at = {((r[f"{y}_lo"], r[f"{y}_hi"]), (r[f"{x}_lo"], r[f"{x}_hi"])): r for r in rows}
    return RowGrid(y, x, sorted(ranges(y)), sorted(ranges(x)), at)
