"""Combine systematic variations of a table into per-source Up/Down values and a total systematic.

For a value v (an efficiency, a scale factor, or the signal yield of a ``yield`` row) with nominal v₀:

* a one-sided source with varied value v₁ is symmetrised: Up = v₀ + |v₁ − v₀|, Down = v₀ − |v₁ − v₀|;
* a two-sided source gives Up and Down from its two runs as they are.

Per source the systematic is δ_s = max(|Up − v₀|, |Down − v₀|). The total is

* ``quadrature_max`` (default): σ_syst = sqrt(Σ_s δ_s²);
* ``egm_rms``: σ_syst = sqrt(mean of d²) over every varied run's deviation d = v_run − v₀ (a one-sided
  source contributes one deviation, a two-sided one two), the RMS convention of CMS EGM tables.

The total uncertainty adds σ_syst in quadrature to each side of the statistical interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from calibflow.config import Variation
from calibflow.tables.rows import YIELD_METHOD, Row

SUFFIXES = ("Up", "Down")


def combine(
    nominal: Sequence[Row],
    varied: Mapping[str, Sequence[Row]],
    sources: Sequence[Variation],
    method: str,
    value: str,
    keys: Sequence[str],
) -> list[Row]:
    """Nominal rows extended with ``<source>Up/Down``, ``syst`` and ``total_up/down`` columns.

    ``varied`` maps each run's name (``src`` or ``srcUp``/``srcDown``) to its rows; a varied row matches
    a nominal one when its ``keys`` columns (other than ``bin``) are equal and its bin contains the
    nominal bin's centre — so an alternative binning is compared at the nominal bins. Rows are compared
    on ``value`` (:func:`value_columns`: a yield row of an efficiency table on its ``n_sig``). A bin missing
    from a run gives NaN columns.
    """
    index = {name: _index(rows, keys) for name, rows in varied.items()}
    out = []
    for row in nominal:
        key = _group(row, keys)
        centre = {v: 0.5 * (row[f"{v}_lo"] + row[f"{v}_hi"]) for v in _variables(row)}
        bounds = _bounds(row)
        col, err_down, err_up = value_columns(row, value)
        v0 = float(row[col])
        new = dict(row)
        deviations: list[float] = []
        per_source: list[float] = []
        for src in sources:

            def get(run: str, key: tuple = key, centre: dict = centre, bounds: tuple = bounds,
                    col: str = col) -> float:
                group = index.get(run, {}).get(key)
                r = None if group is None else group.find(bounds, centre)
                return float(r[col]) if r is not None and col in r else math.nan

            if src.vary is not None:
                d = get(src.name) - v0
                up, down = v0 + abs(d), v0 - abs(d)
                deviations.append(d)
            else:
                up, down = get(f"{src.name}Up"), get(f"{src.name}Down")
                deviations += [up - v0, down - v0]
            new[f"{src.name}Up"], new[f"{src.name}Down"] = up, down
            per_source.append(max(abs(up - v0), abs(down - v0)))
        if not sources:
            syst = 0.0
        elif method == "egm_rms":
            syst = math.sqrt(sum(d * d for d in deviations) / len(deviations))
        else:
            syst = math.sqrt(sum(s * s for s in per_source))
        new["syst"] = syst
        new["total_down"] = math.hypot(float(row[err_down]), syst)
        new["total_up"] = math.hypot(float(row[err_up]), syst)
        out.append(new)
    return out


def value_columns(row: Row, value: str) -> tuple[str, str, str]:
    """(value, down error, up error) columns a row's systematics are of: ``value`` with ``err_down``/``err_up``,
    but for a row of method ``yield`` of an efficiency table, which has no efficiency, its signal yield
    ``n_sig`` with ``n_sig_err`` on both sides."""
    if value == "efficiency" and row.get("method") == YIELD_METHOD:
        return "n_sig", "n_sig_err", "n_sig_err"
    return value, "err_down", "err_up"


def _variables(row: Row) -> list[str]:
    return [k[:-3] for k in row if k.endswith("_lo") and f"{k[:-3]}_hi" in row]


def _group(row: Row, keys: Sequence[str]) -> tuple:
    return tuple(row[k] for k in keys if k != "bin")


class _Bins:
    """The rows of one run and group, found by their bin boundaries (same binning: one dict lookup) or,
    for another binning, by the bin containing a centre."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.by_bounds: dict[tuple, Row] = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.by_bounds.setdefault(_bounds(row), row)

    def find(self, bounds: tuple, centre: Mapping[str, float]) -> Row | None:
        """The row with the bin boundaries ``bounds`` (:func:`_bounds`), else the one whose bin contains
        ``centre``."""
        same = self.by_bounds.get(bounds)
        return same if same is not None else _containing(self.rows, centre)


def _bounds(row: Row) -> tuple:
    return tuple((v, row[f"{v}_lo"], row[f"{v}_hi"]) for v in sorted(_variables(row)))


def _index(rows: Sequence[Row], keys: Sequence[str]) -> dict[tuple, _Bins]:
    out: dict[tuple, _Bins] = {}
    for r in rows:
        out.setdefault(_group(r, keys), _Bins()).add(r)
    return out


def _containing(rows: Sequence[Row], centre: Mapping[str, float]) -> Row | None:
    """The row whose bin contains ``centre`` (every variable within [lo, hi))."""
    for r in rows:
        if all(r[f"{v}_lo"] <= x < r[f"{v}_hi"] for v, x in centre.items()):
            return r
    return None
