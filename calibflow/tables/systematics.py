"""Combine systematic variations of a table into per-source Up/Down values and a total systematic.

For a value v (an efficiency, a scale factor, or the signal yield of a ``yield`` row) with nominal v₀, a source
counts on a row when the row's quantity (``data`` or ``mc`` efficiency by its sample's role, ``sf`` for scale
factors) is in the source's ``applies_to``; a source that does not count has Up = Down = v₀ there. Conventions
(``systematics.combine``; docs/tables.md, "Uncertainty model"):

* ``quadrature_max`` (default): a one-sided source with varied value v₁ is symmetrised, Up/Down = v₀ ± |v₁ − v₀|;
  a two-sided source gives Up and Down from its two runs as they are. Per source δ_s = max(|Up − v₀|,
  |Down − v₀|); σ_syst = sqrt(Σ_s δ_s²).
* ``egm_rms``: Up/Down as above; σ_syst = sqrt(mean of d²) over every counted run's deviation d = v_run − v₀
  (a one-sided source contributes one deviation, a two-sided one two). Not what EGM's code computes.
* ``egm_classic``, ``egm_2023``: egm_tnp_analysis' ``combineSyst`` (:func:`egm_terms`) on efficiency deviations:
  a source's EGM role says whether its deviation is of the data (altSig, altBkg, altSigBkg) or the simulation
  efficiency (altMC, altTag); an efficiency row counts the roles of its own side, a scale-factor row all, in
  units of the simulation efficiency (σ/ε_MC, as EGM). Up/Down = v₀ ± the source's term; ``syst`` is σ without
  its statistical terms and ``total_down = total_up`` is σ with them (EGM's error).

For the quadrature conventions the total adds σ_syst in quadrature to each side of the statistical interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from calibflow.config import EGM_ROLES, Variation
from calibflow.tables.rows import YIELD_METHOD, Row

Lookup = Callable[[str], "Row | None"]
"""The row of a varied run (by its name) matching the nominal row being combined, or None."""

SUFFIXES = ("Up", "Down")
EGM_METHODS = ("egm_classic", "egm_2023")
"""Conventions of ``systematics.combine`` computed as egm_tnp_analysis' ``combineSyst`` (:func:`egm_terms`)."""
EGM_FIT_ROLES = ("altSig", "altBkg", "altSigBkg")
"""Roles of egm_2023 whose spread about their mean with the nominal is taken (the alternative fits)."""


@dataclass(frozen=True)
class Runs:
    """The systematic runs of a table: ``varied`` maps each run's name (``src`` or ``srcUp``/``srcDown``) to its
    rows; the ``sources``, their combination ``method`` (``systematics.combine``) and ``sides``, the role (``data``,
    ``mc``) of each sample of an efficiency table (a sample not in it counts as data)."""

    varied: Mapping[str, Sequence[Row]]
    sources: Sequence[Variation]
    method: str
    sides: Mapping[str, str] | None = None


def combine(nominal: Sequence[Row], runs: Runs, value: str, keys: Sequence[str]) -> list[Row]:
    """Nominal rows extended with ``<source>Up/Down``, ``syst`` and ``total_up/down`` columns.

    A varied row of ``runs`` matches
    a nominal one when its ``keys`` columns (other than ``bin``) are equal and its bin contains the
    nominal bin's centre — so an alternative binning is compared at the nominal bins. Rows are compared
    on ``value`` (:func:`value_columns`: a yield row of an efficiency table on its ``n_sig``). A bin missing
    from a run gives NaN columns. Rows of a ``scale_factor`` table are of quantity ``sf``.
    """
    out = []
    sources, method = runs.sources, runs.method
    for row, quantity, get in _matched(nominal, runs, value, keys):
        counted = [s for s in sources if _counts(s, quantity, method)]
        v0 = float(row[value_columns(row, value)[0]])
        new = {**row, **{f"{s.name}{x}": v0 for s in sources for x in SUFFIXES}}  # nominal where not counted
        if method in EGM_METHODS:
            new.update(_egm_row(row, value, quantity, counted, get, method))
        else:
            new.update(_quadrature_row(row, value, counted, get, method))
        out.append(new)
    return out


def _matched(nominal: Sequence[Row], runs: Runs, value: str, keys: Sequence[str]) -> Iterator[tuple[Row, str, Lookup]]:
    """Per nominal row: (the row, its quantity ``data``/``mc``/``sf``, the lookup of its match in each run) as
    :func:`combine` describes them."""
    index = {name: _index(rows, keys) for name, rows in runs.varied.items()}
    for row in nominal:
        key, centre, bounds = _group(row, keys), _centre(row), _bounds(row)
        quantity = "sf" if value == "scale_factor" else (runs.sides or {}).get(str(row.get("sample")), "data")

        def get(run: str, key: tuple = key, centre: dict = centre, bounds: tuple = bounds) -> Row | None:
            group = index.get(run, {}).get(key)
            return None if group is None else group.find(bounds, centre)

        yield row, quantity, get


def signed_shifts(nominal: Sequence[Row], runs: Runs, value: str, keys: Sequence[str]) -> list[dict[str, float]]:
    """Per nominal row, each source's signed shift of the row's value (the covariance's pattern, in the value's
    units; docs/tables.md, "Covariance"): a one-sided source v_run − v₀, a two-sided one (v_up − v_down)/2, of the
    runs' own values whatever the combination ``method``; 0 where the source does not count on the row (as in
    :func:`combine`), NaN where a run has no value. Rows are matched to runs as by :func:`combine`."""
    out = []
    for row, quantity, get in _matched(nominal, runs, value, keys):
        col = value_columns(row, value)[0]
        v0 = float(row[col])
        shifts = {}
        for src in runs.sources:
            if not _counts(src, quantity, runs.method):
                shifts[src.name] = 0.0
            elif src.vary is not None:
                shifts[src.name] = _value(get(src.name), col) - v0
            else:
                shifts[src.name] = 0.5 * (_value(get(f"{src.name}Up"), col) - _value(get(f"{src.name}Down"), col))
        out.append(shifts)
    return out


def _counts(src: Variation, quantity: str, method: str) -> bool:
    """Whether ``src`` counts on a row of ``quantity``: named in ``applies_to`` and, for an EGM convention on an
    efficiency, of the same side (data or simulation) as its role."""
    if quantity not in src.applies_to:
        return False
    return method not in EGM_METHODS or quantity == "sf" or EGM_ROLES[str(src.egm_role)] == quantity


def _value(r: Row | None, col: str) -> float:
    return float(r[col]) if r is not None and col in r else math.nan


def _quadrature_row(row: Row, value: str, counted: Sequence[Variation], get: Lookup, method: str) -> Row:
    """Per-source Up/Down, ``syst`` and ``total_down/up`` of ``quadrature_max`` and ``egm_rms``."""
    col, err_down, err_up = value_columns(row, value)
    v0 = float(row[col])
    new: Row = {}
    deviations: list[float] = []
    per_source: list[float] = []
    for src in counted:
        if src.vary is not None:
            d = _value(get(src.name), col) - v0
            up, down = v0 + abs(d), v0 - abs(d)
            deviations.append(d)
        else:
            up, down = _value(get(f"{src.name}Up"), col), _value(get(f"{src.name}Down"), col)
            deviations += [up - v0, down - v0]
        new[f"{src.name}Up"], new[f"{src.name}Down"] = up, down
        per_source.append(max(abs(up - v0), abs(down - v0)))
    if not counted:
        syst = 0.0
    elif method == "egm_rms":
        syst = math.sqrt(sum(d * d for d in deviations) / len(deviations))
    else:
        syst = math.sqrt(sum(s * s for s in per_source))
    new["syst"] = syst
    new["total_down"] = math.hypot(float(row[err_down]), syst)
    new["total_up"] = math.hypot(float(row[err_up]), syst)
    return new


def _egm_row(row: Row, value: str, quantity: str, counted: Sequence[Variation], get: Lookup, method: str) -> Row:
    """Per-source Up/Down, ``syst`` and ``total_down/up`` of an EGM convention (:func:`egm_terms`).

    Efficiency rows: deviations of the row's value, its statistical error max(err_down, err_up) on its side.
    Scale-factor rows: deviations of ``eff_data`` or ``eff_mc`` (by role), statistical errors of the data and
    simulation efficiencies from ``stat_data_*`` (= σ_data/ε_MC) and ``stat_mc_*`` (= SF·σ_MC/ε_MC), and every
    term divided by ε_MC."""
    col, err_down, err_up = value_columns(row, value)
    v0 = float(row[col])
    if quantity == "sf":
        eff = {"data": float(row["eff_data"]), "mc": float(row["eff_mc"])}
        scale = 1.0 / eff["mc"] if eff["mc"] else math.nan
        stat_data = max(float(row["stat_data_down"]), float(row["stat_data_up"])) * eff["mc"]
        stat_mc = max(float(row["stat_mc_down"]), float(row["stat_mc_up"])) * eff["mc"] / v0 if v0 else math.nan
        cols = {"data": "eff_data", "mc": "eff_mc"}
    else:
        eff, scale, cols = {quantity: v0}, 1.0, {quantity: col}
        stat = max(float(row[err_down]), float(row[err_up]))
        stat_data, stat_mc = (stat, 0.0) if quantity == "data" else (0.0, stat)
    deviations = {}
    for src in counted:
        side = EGM_ROLES[str(src.egm_role)]
        deviations[str(src.egm_role)] = _value(get(src.name), cols[side]) - eff[side]
    terms, syst = egm_terms(method, deviations, stat_mc)
    new: Row = {}
    for src in counted:
        c = terms[str(src.egm_role)] * scale
        new[f"{src.name}Up"], new[f"{src.name}Down"] = v0 + c, v0 - c
    new["syst"] = syst * scale
    new["total_down"] = new["total_up"] = math.sqrt(syst**2 + stat_data**2 + stat_mc**2) * scale
    return new


def egm_terms(method: str, deviations: Mapping[str, float], stat_mc: float) -> tuple[dict[str, float], float]:
    """(term per role ≥ 0, σ_syst) of egm_tnp_analysis' ``combineSyst``, in efficiency units, from the deviations
    of the alternative efficiencies from the nominal ones (per role present; absent roles count 0) and the
    simulation's statistical error ``stat_mc``. The full σ adds the statistical errors of data and simulation
    in quadrature to σ_syst.

    * ``egm_classic``: term = |deviation|; σ_syst² = Σ term² (altSig, altBkg: data; altMC, altTag: simulation).
    * ``egm_2023``: with m the mean of the nominal and the altSig, altBkg, altSigBkg efficiencies, term = |alt − m|
      for those three and S = Σ term²/3; the altMC term is |altMC − nominal|, 0 when below ``stat_mc``;
      σ_syst² = S/2 + altMC term².
    """
    if method == "egm_classic":
        terms = {r: abs(d) for r, d in deviations.items()}
        return terms, math.sqrt(sum(t * t for t in terms.values()))
    fits = [r for r in EGM_FIT_ROLES if r in deviations]
    mean = sum(deviations[r] for r in fits) / (len(fits) + 1)  # the nominal's deviation is 0
    terms = {r: abs(deviations[r] - mean) for r in fits}
    spread = sum(terms[r] ** 2 for r in fits) / len(EGM_FIT_ROLES)
    if "altMC" in deviations:
        d = abs(deviations["altMC"])
        terms["altMC"] = d if not d < stat_mc else 0.0  # NaN stays NaN
    return terms, math.sqrt(spread / 2 + terms.get("altMC", 0.0) ** 2)


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


def _centre(row: Row) -> dict[str, float]:
    return {v: 0.5 * (row[f"{v}_lo"] + row[f"{v}_hi"]) for v in _variables(row)}


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
