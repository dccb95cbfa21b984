"""The report page of a calibration: ``report.html`` and ``report.md``, what a physicist reads first.

Both carry the same sections under stable ids (:data:`SECTIONS`): ``summary`` (what ran, version, config
hash, one verdict per section), ``config`` (the exact file), ``cutflow`` (per sample, and per variant where
a variant changes the selection), ``fits`` (ok / flagged by reason / failed per sample and variant, the
flagged bins, links to the fit galleries), ``efficiencies`` and ``scale-factors`` (figures and grid tables
with statistical and systematic uncertainties; no ``scale-factors`` without a data/simulation pair: the
efficiencies section says why), ``uncertainties`` (each systematic source's size over the bins, largest
first), ``correlations`` (bin-to-bin correlation figures of the covariances: :mod:`calibflow.export.uncertainty`),
``closure`` (toy pulls: histogram, mean and width), ``coverage`` (config ``coverage``: per sample and scale
factor the toys' coverage and pulls, ``plots/coverage.png``, the bins ``coverage_off``), ``inputs`` (files, files left
out) and ``outputs`` (every published file). The HTML page is self-contained: inline CSS, no script, no
font or file from the network; its links and images are relative to the published folder
``<result_dir>/<name>/`` (the gallery links work there only). Numbers are those of the tables, in the
tables' units; the pull histogram (``plots/closure_pulls.png``) is drawn here. Banners above the sections
(:func:`with_banner`): ``LIMITED`` on a quick try's page, ``STALE`` set in the published copy after a failed
run and removed when a run succeeds.
"""

from __future__ import annotations

import html
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from calibflow import __version__
from calibflow.config import config_chain
from calibflow.export.grid import interval, row_grid, significant_places, yield_rows
from calibflow.fit.gallery import MEANINGS
from calibflow.io.store import atomic_path
from calibflow.plan import Plan
from calibflow.tables.assemble import (
    CONFIG_COPY,
    CONFIG_RESOLVED,
    EXCLUDED_FILES,
    base_folders,
    cutflow_paths,
    cutflow_rows,
    product_folders,
    resolved_text,
)
from calibflow.tables.fitstatus import LOW_STATISTICS, OK, StatusCounts, fit_status_counts, flag_reasons
from calibflow.tables.rows import YIELD_METHOD, Row, read_csv
from calibflow.tables.write import CLOSURE, EFFICIENCIES, SCALE_FACTORS, no_scale_factors
from calibflow.variants import NOMINAL

SECTIONS = {
    "summary": "Summary",
    "config": "Config",
    "cutflow": "Cut flow",
    "fits": "Fits",
    "efficiencies": "Efficiencies",
    "scale-factors": "Scale factors",
    "uncertainties": "Uncertainties",
    "correlations": "Correlations",
    "closure": "Closure",
    "coverage": "Coverage",
    "inputs": "Inputs",
    "outputs": "Published files",
}
"""Section id → heading, in page order (the ids are stable: links and tests use them)."""

PULLS_PNG = os.path.join("plots", "closure_pulls.png")
"""The report's own figure, under each table folder with a closure table."""
COVERAGE_PNG = os.path.join("plots", "coverage.png")
"""The report's coverage figure, in the nominal folder when its tables have coverage columns."""

MAX_LISTED = 100
"""Rows of the flagged-bin list shown before it is cut (the tables hold them all)."""

# ---------------------------------------------------------------- page blocks ---------------------------------


@dataclass(frozen=True)
class Cell:
    """A table cell: ``text``, an optional smaller ``note``, a CSS class (``flag``, ``fail``), a link."""

    text: str
    note: str = ""
    css: str = ""
    href: str = ""
    title: str = ""


@dataclass(frozen=True)
class Measure:
    """A grid cell: ``value`` with its statistical interval (``down``, ``up``) and systematic ``syst``,
    written with ``decimals`` decimals."""

    value: float
    down: float
    up: float
    syst: float
    decimals: int
    css: str = ""
    title: str = ""


@dataclass(frozen=True)
class Table:
    """A table; ``css`` ``grid`` for the compact grid of values."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell | Measure | str]]
    caption: str = ""
    css: str = ""


@dataclass(frozen=True)
class Text:
    """A paragraph (``css`` ``note`` for a remark)."""

    text: str
    css: str = ""


@dataclass(frozen=True)
class Figure:
    """An image (path relative to the report) and its caption; ``css`` ``wide`` for a row of panels."""

    src: str
    caption: str
    css: str = ""


@dataclass(frozen=True)
class Code:
    """Preformatted text (the config)."""

    text: str
    caption: str = ""


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section."""

    text: str


@dataclass(frozen=True)
class Links:
    """A list of links: (text, href, remark); with ``levels`` (ok, warn, bad per item) a list of verdicts."""

    items: Sequence[tuple[str, str, str]]
    levels: Sequence[str] = ()


Block = Table | Text | Figure | Code | Heading | Links


@dataclass
class Section:
    """One section: ``verdict`` is what a reader takes away, one line per sample or table (``\\n``-separated;
    ``level`` ok, warn or bad); ``heading`` for a page with other sections than :data:`SECTIONS` (the KDE
    report, :mod:`calibflow.kde.report`)."""

    id: str
    verdict: str
    level: str = "ok"
    blocks: list[Block] = field(default_factory=list)
    heading: str = ""

    @property
    def title(self) -> str:
        """The section's heading."""
        return self.heading or SECTIONS[self.id]


# ---------------------------------------------------------------- formatting ----------------------------------

_LATEX = {r"\eta": "η", r"\phi": "φ", r"\theta": "θ", r"\mu": "μ", r"\pi": "π", r"\alpha": "α", r"\beta": "β",
          r"\gamma": "γ", r"\Delta": "Δ", r"\delta": "δ", r"\chi": "χ", r"\sigma": "σ", r"\tau": "τ",
          r"\nu": "ν", r"\rho": "ρ", r"\Lambda": "Λ", r"\omega": "ω", r"\cos": "cos ", r"\sin": "sin ",
          "^+": "⁺", "^-": "⁻", r"\,": " "}


def plain_label(label: str) -> str:
    """A matplotlib/LaTeX label as plain text: ``$p_\\mathrm{T}$`` → ``pT``, ``$\\eta$`` → ``η``."""
    text = re.sub(r"\\math(?:rm|it|bf)\{([^}]*)\}", r"\1", label.replace("$", ""))
    for tex, uni in _LATEX.items():
        text = text.replace(tex, uni)
    return re.sub(r"[{}_\\]", "", text).strip()


def count_text(n: float) -> str:
    """An integer count with thin-space thousands: ``179 149``."""
    return f"{round(n):,}".replace(",", "\u2009")


def _finite(values: Iterable[object]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def decimals_for(errors: Iterable[object], lo: int = 2, hi: int = 6) -> int:
    """Decimals showing two significant digits of the median of ``errors`` (within [lo, hi]; 3 without errors):
    :func:`calibflow.export.grid.significant_places`, as the exported grids."""
    places = significant_places(_finite(errors), 2)
    return 3 if places is None else max(lo, min(hi, places))


class Variable(NamedTuple):
    """A binning variable as shown: column ``name``, plain ``label`` and ``unit``."""

    name: str
    label: str
    unit: str

    def range_text(self, lo: float, hi: float, with_label: bool = True) -> str:
        """``p ∈ [2, 3) GeV`` (or ``[2, 3)``)."""
        unit = f" {self.unit}" if self.unit and with_label else ""
        return (f"{self.label} ∈ " if with_label else "") + interval(lo, hi) + unit

    @property
    def heading(self) -> str:
        """``p [GeV]``."""
        return f"{self.label} [{self.unit}]" if self.unit else self.label


def variables_of(plan: Plan) -> list[Variable]:
    """The binning variables of ``plan``'s config, labelled."""
    return [Variable(v.name, plain_label(v.display), v.display_unit) for v in plan.config.binning.variables]


def bin_text(row: Row, variables: Sequence[Variable]) -> str:
    """Where a row's bin is: ``p ∈ [3, 4) GeV, η ∈ [4.5, 4.75) (bin 17)``."""
    ranges = [v.range_text(row[f"{v.name}_lo"], row[f"{v.name}_hi"]) for v in variables if f"{v.name}_lo" in row]
    return ", ".join(ranges) + f" (bin {row['bin']})"


def _variant_label(variant: str) -> str:
    return variant or "nominal"


# ---------------------------------------------------------------- fit statuses --------------------------------


def status_kind(status: object, value: object = 0.0) -> str:
    """``ok``, ``low`` (low statistics), ``flag`` (flagged) or ``fail`` (no finite value) of a table row's
    status (``a|b`` for a scale factor of two measurements)."""
    if not _finite([value]):
        return "fail"
    reasons = [r for part in str(status or OK).split("|") for r in flag_reasons(part) if r != OK]
    return "ok" if not reasons else "low" if LOW_STATISTICS in reasons else "flag"


def _variant_of(counts: StatusCounts) -> str:
    return NOMINAL if counts.variant == "nominal" else counts.variant


def _reasons_text(reasons: Counter[str]) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda rn: (-rn[1], rn[0])))


def gallery_link(plan: Plan, variant: str, sample: str, out_dir: str) -> str:
    """The link from the report to the fit gallery of ``sample`` in ``variant`` (empty: none in ``out_dir``,
    where the galleries are written before they are published beside the report)."""
    rel = os.path.relpath(os.path.join(plan.with_variant(variant).gallery_dir(sample), "index.html"), plan.workdir)
    return rel if os.path.exists(os.path.join(out_dir, rel)) else ""


def fits_section(plan: Plan, counts: Sequence[StatusCounts], variables: Sequence[Variable], out_dir: str) -> Section:
    """Statuses per sample and variant (:func:`fit_status_counts`), the flagged bins, gallery links."""
    ok, flagged, low, failed = (sum(getattr(c, k) for c in counts) for k in ("ok", "flagged", "low_statistics", "failed"))
    reasons = sum((c.reasons for c in counts), Counter())
    verdict = (f"{sum(c.bins for c in counts)} measurements in {len({c.variant for c in counts})} variant(s): "
               f"{ok} ok, {flagged} flagged" + (f" ({_reasons_text(reasons)})" if flagged else "")
               + f", {low} low statistics, {failed} failed")
    sec = Section("fits", verdict, "bad" if failed else "warn" if flagged or low else "ok")
    rows = []
    for c in counts:
        href = gallery_link(plan, _variant_of(c), c.sample, out_dir)
        link = Cell("gallery", href=href) if href else Cell("—")
        rows.append([c.variant, c.sample, plan.with_variant(_variant_of(c)).config.samples[c.sample].method,
                     str(c.bins), str(c.ok),
                     Cell(str(c.flagged), _reasons_text(c.reasons), "flag" if c.flagged else ""),
                     Cell(str(c.low_statistics), css="low" if c.low_statistics else ""),
                     Cell(str(c.failed), css="fail" if c.failed else ""), link])
    sec.blocks.append(Table(["variant", "sample", "method", "bins", "ok", "flagged", "low statistics", "failed",
                             "fit plots"], rows,
                            "Status of every per-bin measurement. Flagged: a check failed (parameter at a limit, "
                            "poor χ²/ndof, low significance, MINOS failure); low statistics: fewer candidates "
                            "than fit.min_candidates in pass or fail; failed: no result. A variant sharing a "
                            "sample's measurements with an earlier one is listed once."))
    low_total = Counter({LOW_STATISTICS: low} if low else {})
    if reasons or low_total:
        sec.blocks += [Heading("Why"), Table(["reason", "bins", "meaning"], [
            [r, str(n), MEANINGS.get(r, "")] for r, n in sorted((reasons + low_total).items(), key=lambda rn: -rn[1])],
            "Bins per reason over every sample and variant: flagged bins under each of their reasons, "
            "low-statistics bins under low_statistics alone.")]
    bad = []
    for c in counts:
        if c.flagged or c.low_statistics:
            path = os.path.join(plan.with_variant(_variant_of(c)).table_dir(), EFFICIENCIES)
            bad += [(c, r) for r in (read_csv(path) if os.path.exists(path) else [])
                    if r["sample"] == c.sample and str(r.get("fit_status", OK)) != OK]
    if bad:
        listed = [[c.variant, c.sample, bin_text(r, variables),
                   Cell(str(r["fit_status"]).replace(",", ", "),  # a space lets the browser wrap long lists
                        css=status_kind(r["fit_status"], r.get("efficiency"))),
                   _number(r.get("efficiency"), 4), _gof_pvalue(r)] for c, r in bad[:MAX_LISTED]]
        more = f" ({len(bad) - MAX_LISTED} more in the variants' efficiencies.csv)" if len(bad) > MAX_LISTED else ""
        sec.blocks += [Heading("Flagged and low-statistics bins"),
                       Table(["variant", "sample", "bin", "status", "efficiency", "GoF p-value"], listed,
                             f"{len(bad)} bin(s){more}; GoF p-value: Kolmogorov-Smirnov (unbinned fits), else χ² "
                             "(docs/fits.md, \"Goodness of fit\")")]
    return sec


def _gof_pvalue(row: Mapping[str, object]) -> str:
    """The goodness-of-fit p-value of an efficiency row: the KS one of unbinned fits, else the χ² one; — without."""
    f = _finite([row.get("ks_pvalue")]) or _finite([row.get("chi2_pvalue")])
    return f"{f[0]:.2g}" if f else "—"


def _number(value: object, decimals: int) -> str:
    f = _finite([value])
    return f"{f[0]:.{decimals}f}" if f else "—"


# ---------------------------------------------------------------- cut flow ------------------------------------


def cutflow_section(plan: Plan, out_dir: str) -> Section:
    """Per sample the entries after each stage; one column group per set of variants with the same cut flow
    (a method changing only the pass criterion shares the nominal one), named by its simplest variant (nominal,
    a working point or a method before their systematic runs), with links to the published cut flows of the
    nominal calibration and of each method (``out_dir``)."""
    sec = Section("cutflow", "")
    lines = []
    published = cutflow_paths(plan, out_dir)
    for sample in plan.config.samples:
        by_preps: dict[tuple[str, ...], list[Row]] = {}  # read once per set of prepared files
        groups: dict[str, tuple[list[str], list[Row]]] = {}
        for variant in [NOMINAL, *sorted(plan.all_variants(), key=lambda v: v.count("/"))]:
            vplan = plan.with_variant(variant)
            if sample in vplan.config.samples:
                preps = tuple(vplan.prep_keys(sample))
                if preps not in by_preps:
                    by_preps[preps] = cutflow_rows(vplan, sample)
                rows = by_preps[preps]
                groups.setdefault(repr(rows), ([], rows))[0].append(variant)
        flows = list(groups.values())
        stages = list(dict.fromkeys(r["stage"] for _, rows in flows for r in rows))
        header = ["stage", "unit"]
        for variants, _ in flows:
            name = "" if len(flows) == 1 else f" ({_variant_label(variants[0])})"
            header += [f"entries{name}", f"kept{name}"]
        shared = "; ".join(f"{_variant_label(vs[0])}: {', '.join(_variant_label(v) for v in vs)}" for vs, _ in flows
                           if len(vs) > 1 and len(flows) > 1)
        table = []
        for stage in stages:
            cells: list[Cell | str] = [stage, ""]
            for _, rows in flows:
                r = next((r for r in rows if r["stage"] == stage), None)
                if r is None:
                    cells += ["—", ""]
                    continue
                cells[1] = r["unit"]
                kept = f"{100 * r['efficiency']:.1f} %" if r["efficiency"] != "" else ""
                cells += [count_text(r["entries"]), kept]
            table.append(cells)
        role = plan.config.samples[sample].role
        sec.blocks += [Heading(sample if sample == role else f"{sample} ({role})"),
                       Table(header, table, "Entries left after each stage, summed over the prepared files; "
                                            "kept: fraction of the previous stage's entries."
                                            + (f" Variants with the same cut flow share a column ({shared})."
                                               if shared else ""))]
        files = [(os.path.relpath(published[v][sample], out_dir), _variant_label(v)) for vs, _ in flows for v in vs
                 if sample in published.get(v, {})]
        sec.blocks.append(Links([(rel, rel, label) for rel, label in files]))
        lines.append(f"{sample}: " + _flow_text(flows[0][1]))
        lines += [f"{sample}, {_variant_label(vs[0])} selection: {count_text(rows[-1]['entries'])} {rows[-1]['unit']}"
                  f" left" for vs, rows in flows[1:] if rows]
    sec.verdict = "\n".join(lines)
    return sec


def _flow_text(rows: Sequence[Row]) -> str:
    """``40 000 candidates read → 12 048 after tag (30.1 %) → ...``."""
    if not rows:
        return "no cut flow"
    steps = [f"{count_text(rows[0]['entries'])} {rows[0]['unit']} {rows[0]['stage']}"]
    for r in rows[1:]:
        if r["efficiency"] == "":  # a new unit (events → pairs): its count, not a cut
            steps.append(f"{count_text(r['entries'])} {r['unit']}")
            continue
        steps.append(f"{count_text(r['entries'])} after {r['stage']} ({100 * r['efficiency']:.1f} %)")
    return " → ".join(steps)


# ---------------------------------------------------------------- value tables --------------------------------


def _measure(r: Row, value: str, decimals: int) -> Measure:
    status = r.get("fit_status", r.get("status", OK))
    kind = status_kind(status, r[value])
    return Measure(float(r[value]), float(r["err_down"]), float(r["err_up"]), float(r.get("syst", 0.0) or 0.0),
                   decimals, "" if kind == "ok" else kind, f"status: {status}")


def value_table(rows: Sequence[Row], value: str, variables: Sequence[Variable]) -> Table:
    """A grid (rows × columns of two variables: :func:`calibflow.export.grid.row_grid`) of ``value`` with stat and
    syst, or one row per bin."""
    decimals = decimals_for(r[k] for r in rows for k in ("err_down", "err_up"))
    legend = ("Each entry: value, statistical interval (+up −down), systematic (±, all sources combined); "
              "amber: flagged fit, blue: low statistics, red: no value; hover for the status.")
    grid = row_grid(rows, [v.name for v in variables])
    if grid is None:
        header = ["bin", *(v.heading for v in variables), value.replace("_", " ")]
        body = [[str(r["bin"]), *(v.range_text(r[f"{v.name}_lo"], r[f"{v.name}_hi"], False) for v in variables),
                 _measure(r, value, decimals)] for r in rows]
        return Table(header, body, legend)
    named = {v.name: v for v in variables}
    ry, rx = named[grid.row_var], named[grid.col_var]
    header = [f"{ry.heading} \\ {rx.heading}", *(rx.range_text(*x, with_label=False) for x in grid.col_ranges)]
    body = [[Cell(ry.range_text(*y, with_label=False), css="head"),
             *(_measure(grid.at[y, x], value, decimals) for x in grid.col_ranges)] for y in grid.row_ranges]
    return Table(header, body, legend, css="grid")


def _quantity(rows: Sequence[Row], value: str) -> tuple[list[Row], str, str]:
    """(rows, value column, what it is) of one sample's table: ``value`` (``efficiency``, ``scale_factor``),
    but a sample of method ``yield`` shows its signal yield ``n_sig`` (rows with its errors as stat)."""
    yields = yield_rows(rows) if value == "efficiency" else []
    return (yields, "n_sig", "signal yield") if yields else (list(rows), value, value.replace("_", " "))


def _range_verdict(rows: Sequence[Row], value: str, what: str) -> str:
    vals = _finite(r[value] for r in rows)
    if not vals:
        return f"{what}: no value"
    stat = _finite(max(r["err_down"], r["err_up"]) for r in rows)
    syst = _finite(r.get("syst", 0.0) for r in rows)
    d = decimals_for(stat)
    text = (f"{what}: {min(vals):.{d}f} to {max(vals):.{d}f} over {len(vals)} bins, median {statistics.median(vals):.{d}f}; "
            f"median stat ±{statistics.median(stat):.{d}f}")
    return text + (f", syst ±{statistics.median(syst):.{d}f}" if syst and max(syst) > 0 else "")


class Folder(NamedTuple):
    """A folder of combined tables: its label (empty: the nominal calibration), path and plan."""

    label: str
    path: str
    plan: Plan


def table_folders(plan: Plan) -> list[Folder]:
    """The nominal folder, every working point, method and product of methods."""
    out = [Folder("" if base == NOMINAL else _variant_label(base), folder, plan.with_variant(base))
           for base, folder in base_folders(plan)]
    out += [Folder(f"product {name}", folder, plan.with_variant(first)) for name, folder, first in product_folders(plan)]
    return out


def _figures(pngs: Sequence[str], folder: Folder, out_dir: str, kind: str) -> list[Block]:
    """The figures of ``folder`` (not of its sub-folders) of one kind: ``sf`` (scale factors) or ``eff``."""
    mine = []
    for p in pngs:
        rel = os.path.relpath(p, folder.path)
        if rel.startswith("..") or os.path.join("wp", "") in rel or os.path.join("methods", "") in rel:
            continue
        if rel == PULLS_PNG or ("scale_factor" in rel or "sf_" in rel) != (kind == "sf"):
            continue
        mine.append(Figure(os.path.relpath(p, out_dir), os.path.splitext(os.path.basename(p))[0].replace("_", " ")))
    return mine


def _in(folder: Folder, multi: bool) -> str:
    return f" ({folder.label})" if multi and folder.label else ""


def values_section(sid: str, folders: Sequence[Folder], pngs: Sequence[str], out_dir: str) -> Section:
    """Figures and grid tables of the efficiencies (``sid`` efficiencies) or scale factors (scale-factors)."""
    sf = sid == "scale-factors"
    table, value, key = (SCALE_FACTORS, "scale_factor", "data") if sf else (EFFICIENCIES, "efficiency", "sample")
    sec = Section(sid, "")
    verdicts = []
    multi = len(folders) > 1
    for folder in folders:
        path = os.path.join(folder.path, table)
        rows = read_csv(path) if os.path.exists(path) else []
        figs = _figures(pngs, folder, out_dir, "sf" if sf else "eff")
        if multi and (rows or figs):
            sec.blocks.append(Heading(folder.label or "nominal"))
        sec.blocks += figs
        variables = variables_of(folder.plan)
        for group in dict.fromkeys(r[key] for r in rows):
            rs, shown, quantity = _quantity([r for r in rows if r[key] == group], value)
            name = f"{group}/{rs[0]['mc']}" if sf and "mc" in rs[0] else group
            what = f"{quantity} {name}{_in(folder, multi)}"
            sec.blocks += [Heading(what[0].upper() + what[1:]), value_table(rs, shown, variables)]
            verdicts.append(_range_verdict(rs, shown, what))
    sec.verdict = "\n".join(verdicts) or f"no {'scale factors' if sf else 'efficiencies'} (no {table})"
    sec.level = "ok" if verdicts else "warn"
    return sec


# ---------------------------------------------------------------- uncertainties -------------------------------


class SourceSize(NamedTuple):
    """Size of one uncertainty over the bins: ``largest`` at ``where``, ``median``, median over stat."""

    source: str
    largest: float
    where: Row | None
    median: float
    over_stat: float
    bins: int


def source_sizes(rows: Sequence[Row], value: str, sources: Sequence[str]) -> list[SourceSize]:
    """Per source δ = max(|Up − nominal|, |Down − nominal|) per bin: its largest value (and bin), median and
    median of δ/stat; sorted largest first."""
    out = []
    for src in sources:
        deltas = []
        for r in rows:
            d = _finite([abs(float(r[f"{src}{s}"]) - float(r[value])) for s in ("Up", "Down") if f"{src}{s}" in r])
            stat = max(float(r["err_down"]), float(r["err_up"]))
            if d:
                deltas.append((max(d), max(d) / stat if stat > 0 else math.nan, r))
        if not deltas:
            continue
        top = max(deltas, key=lambda t: t[0])
        out.append(SourceSize(src, top[0], top[2], statistics.median(t[0] for t in deltas),
                              statistics.median(_finite(t[1] for t in deltas) or [math.nan]), len(deltas)))
    return sorted(out, key=lambda s: -s.largest)


def _reference(rows: Sequence[Row], name: str, size: Mapping[int, float]) -> SourceSize:
    top = max(rows, key=lambda r: size[r["bin"]])
    stat = {r["bin"]: max(float(r["err_down"]), float(r["err_up"])) for r in rows}
    return SourceSize(name, size[top["bin"]], top, statistics.median(size.values()),
                      statistics.median(_finite(size[b] / stat[b] for b in size if stat[b] > 0) or [math.nan]),
                      len(rows))


def _where(row: Row | None, variables: Sequence[Variable]) -> str:
    """The bin of ``row``, with its fit status when it is not ok."""
    if row is None:
        return "?"
    status = str(row.get("fit_status", row.get("status", OK)))
    if _row_ok(row):
        return bin_text(row, variables)
    tags = [t for part in status.split("|") for t in part.split(",") if t and t != OK]
    return bin_text(row, variables) + f", a bin with fit status {', '.join(tags) or status}"


def _row_ok(row: Row) -> bool:
    return status_kind(row.get("fit_status", row.get("status", OK))) == "ok"


def uncertainties_section(folders: Sequence[Folder], sources: Sequence[str]) -> Section:
    """Each systematic source's size per bin, largest first, per efficiency and scale-factor table."""
    sec = Section("uncertainties", "")
    headline: tuple[SourceSize, str, list[Row], str] | None = None
    multi = len(folders) > 1
    for folder in folders:
        variables = variables_of(folder.plan)
        for table, value, key in ((SCALE_FACTORS, "scale_factor", "data"), (EFFICIENCIES, "efficiency", "sample")):
            path = os.path.join(folder.path, table)
            rows = [r for r in read_csv(path) if _finite([r[value]]) or r.get("method") == YIELD_METHOD] \
                if os.path.exists(path) else []
            for group in dict.fromkeys(r[key] for r in rows):
                rs, shown, quantity = _quantity([r for r in rows if r[key] == group], value)
                name = f"{group}/{rs[0]['mc']}" if "mc" in rs[0] and key == "data" else group
                what = f"{quantity} {name}{_in(folder, multi)}"
                sizes = source_sizes(rs, shown, sources)
                if sizes and headline is None:  # the first scale factor (else efficiency) of the nominal tables
                    headline = sizes[0], what, rs, shown
                refs = [_reference(rs, "total systematic", {r["bin"]: float(r.get("syst", 0.0)) for r in rs}),
                        _reference(rs, "statistical", {r["bin"]: max(float(r["err_down"]), float(r["err_up"]))
                                                       for r in rs})]
                d = decimals_for(max(float(r["err_down"]), float(r["err_up"])) for r in rs) + 1
                body = [[Cell(s.source, css="ref" if s in refs else ""), f"{s.largest:.{d}f}", _where(s.where, variables),
                         f"{s.median:.{d}f}", f"{s.over_stat:.2f}", str(s.bins)] for s in [*sizes, *refs]]
                sec.blocks += [Heading(what[0].upper() + what[1:]),
                               Table(["source", "largest", "where", "median", "median / stat", "bins"], body,
                                     "Per bin δ = max(|Up − nominal|, |Down − nominal|); largest first; the total "
                                     "systematic and the statistical uncertainty (larger side) for comparison.")]
    if not sources:
        sec.verdict = "no systematic source configured: statistical uncertainties only"
    elif headline is None:
        sec.verdict = "no systematic column in the tables"
        sec.level = "warn"
    else:
        s, what, rs, value = headline
        variables = variables_of(folders[0].plan)
        d = decimals_for([s.largest]) + 1
        lines = [f"largest systematic: {s.source}, up to {s.largest:.{d}f} on the {what} at {_where(s.where, variables)}"]
        good = source_sizes([r for r in rs if _row_ok(r)], value, sources)
        if s.where is not None and not _row_ok(s.where) and good:
            lines.append(f"over the bins with ok fits: {good[0].source}, up to {good[0].largest:.{d}f} at "
                         f"{bin_text(good[0].where, variables) if good[0].where else '?'}")
        lines.append(f"median over the bins {s.median:.{d}f}, {s.over_stat:.2f} × the statistical uncertainty")
        sec.verdict = "\n".join(lines)
    return sec


# ---------------------------------------------------------------- closure -------------------------------------


class PullStats(NamedTuple):
    """Pulls of one closure group: count, mean, width (standard deviation) and verdict."""

    label: str
    pulls: list[float]
    mean: float
    width: float
    verdict: str

    @property
    def consistent(self) -> bool:
        """Whether the pulls are consistent with a unit Gaussian."""
        return self.verdict == "consistent"


def pull_stats(label: str, pulls: Sequence[float]) -> PullStats:
    """Mean and width of ``pulls`` and whether they are those of a unit Gaussian: the mean within 3σ/√n of 0,
    the width within 3/√(2(n−1)) of 1."""
    p = _finite(pulls)
    n = len(p)
    if n < 2:
        return PullStats(label, p, p[0] if p else math.nan, math.nan, "too few bins")
    mean, width = statistics.fmean(p), statistics.stdev(p)
    problems = []
    if abs(mean) > 3 * max(width, 1.0) / math.sqrt(n):
        problems.append(f"biased (mean {mean / (max(width, 1.0) / math.sqrt(n)):+.1f}σ from 0)")
    if abs(width - 1) > 3 / math.sqrt(2 * (n - 1)):
        problems.append("uncertainties " + ("overestimated" if width < 1 else "underestimated"))
    return PullStats(label, p, mean, width, ", ".join(problems) or "consistent")


def plot_pulls(stats: Sequence[PullStats], path: str) -> None:
    """Pull histograms (one panel per group) with a unit Gaussian and mean and width written on them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with plt.style.context("default"):
        fig, axes = plt.subplots(1, len(stats), figsize=(3.4 * len(stats), 2.6), dpi=100, squeeze=False)
        edges = np.linspace(-5, 5, 21)
        x = np.linspace(-5, 5, 201)
        for ax, s in zip(axes[0], stats, strict=True):
            ax.hist(np.clip(s.pulls, -4.99, 4.99), bins=edges, histtype="stepfilled", color="#9ecae1", ec="#3182bd")
            ax.plot(x, len(s.pulls) * 0.5 * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi), color="#e6550d", lw=1.2,
                    label="unit Gaussian")
            ax.text(0.03, 0.96, f"mean {s.mean:+.2f}\nwidth {s.width:.2f}\n{len(s.pulls)} bins", transform=ax.transAxes,
                    va="top", fontsize=10)
            ax.set_title(s.label, fontsize=11)
            ax.set_xlabel("(measured − true) / σ", fontsize=10)
            ax.set_ylim(0, max(ax.get_ylim()[1], 0.55 * len(s.pulls) / math.sqrt(2 * math.pi)) * 1.25)
            ax.tick_params(labelsize=9)
        axes[0][0].legend(fontsize=9, frameon=False, loc="upper right")
        fig.tight_layout()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def closure_section(folders: Sequence[Folder], out_dir: str) -> tuple[Section, list[str]]:
    """Pull mean and width per quantity and sample, the pull histogram; returns the section and the PNGs."""
    sec = Section("closure", "")
    written, groups = [], []
    multi = len(folders) > 1
    for folder in folders:
        path = os.path.join(folder.path, CLOSURE)
        if not os.path.exists(path):
            continue
        rows = read_csv(path)
        keys = dict.fromkeys((r["quantity"], r["sample"]) for r in rows)
        stats = [pull_stats(f"{q.replace('_', ' ')} {s}{_in(folder, multi)}",
                            [r["pull"] for r in rows if (r["quantity"], r["sample"]) == (q, s)]) for q, s in keys]
        stats = [s for s in stats if s.pulls]
        if not stats:
            continue
        png = os.path.join(folder.path, PULLS_PNG)
        plot_pulls(stats, png)
        written.append(png)
        body = [[s.label, str(len(s.pulls)), f"{s.mean:+.2f}", f"{s.width:.2f}",
                 f"{100 * sum(abs(p) < 2 for p in s.pulls) / len(s.pulls):.0f} %",
                 Cell(s.verdict, css="" if s.consistent else "flag")] for s in stats]
        sec.blocks += [Figure(os.path.relpath(png, out_dir), f"closure pulls{_in(folder, multi)}", "wide"),
                       Table(["quantity", "bins", "mean", "width", "|pull| < 2", "verdict"], body,
                             "Pull = (measured − true)/σ per bin, σ the statistical error on the side of the truth "
                             "(toy truth from the generator). Consistent: mean within 3/√n of 0 and width within "
                             "3/√(2(n−1)) of 1.")]
        groups += stats
    if not groups:
        sec.verdict = "no closure table (the config has no toy truth)"
        return sec, written
    bad = [s for s in groups if not s.consistent]
    parts = [f"{s.label}: pulls mean {s.mean:+.2f}, width {s.width:.2f} over {len(s.pulls)} bins: {s.verdict}"
             for s in groups]
    head = "closure holds" if not bad else f"closure fails for {len(bad)} of {len(groups)} pull distribution(s)"
    sec.verdict = "\n".join([head, *parts])
    sec.level = "warn" if bad else "ok"
    return sec, written


# ---------------------------------------------------------------- coverage ------------------------------------


def coverage_section(folders: Sequence[Folder], out_dir: str) -> tuple[Section, list[str]]:
    """Coverage of the nominal tables' ±1σ intervals by toys (config ``coverage``; docs/fits.md, "Coverage"):
    one line per sample and scale factor, the figure (:data:`COVERAGE_PNG`), the reasons and the bins off;
    returns the section and the PNG drawn."""
    from calibflow.export.coverage import MEANINGS as WHY
    from calibflow.export.coverage import folder_rows, is_flagged, plot_coverage, verdicts
    from calibflow.fit.coverage import NOMINAL as COVERAGE

    sec = Section("coverage", "")
    nominal = folders[0]
    rows = folder_rows(nominal.path)
    if not rows:
        sec.verdict = "no coverage columns (set coverage: {toys: N} in the config; calibflow coverage writes a page of its own)"
        return sec, []
    png = os.path.join(nominal.path, COVERAGE_PNG)
    os.makedirs(os.path.dirname(png), exist_ok=True)
    plot_coverage(rows, png)
    off = [r for r in rows if is_flagged(r)]
    sec.verdict, sec.level = "\n".join(verdicts(rows)), "warn" if off else "ok"
    body = []
    for group in dict.fromkeys(r["sample"] for r in rows):
        mine = [r for r in rows if r["sample"] == group]
        toys = [r for r in mine if r["n_toys"]]
        mean = {k: _finite(r[k] for r in toys) for k in ("coverage_eff", "pull_mean", "pull_width")}
        reasons = Counter(x for r in mine for x in str(r["off_reason"]).split(",") if x)
        n_off = sum(is_flagged(r) for r in mine)
        body.append([group, str(len(toys)), str(len(mine) - len(toys)), str(toys[0]["n_toys"] if toys else 0),
                     *(f"{statistics.fmean(v):.3f}" if v else "—" for v in mean.values()),
                     str(sum(int(r["failed"]) for r in toys)),
                     Cell(str(n_off), _reasons_text(reasons), "flag" if n_off else "")])
    sec.blocks += [Figure(os.path.relpath(png, out_dir), "coverage of the ±1σ intervals and pull widths per bin",
                          "wide"),
                   Table(["quantity", "bins with toys", "bins without", "toys per bin", "mean coverage",
                          "mean pull mean", "mean pull width", "failed toys", "coverage_off"], body,
                         f"Toys of each bin's own result, measured as the bin was; coverage: the share of toys whose "
                         f"±1σ interval holds the generating value (nominal {COVERAGE}); pull = (toy − generating)/σ "
                         "with σ the error on the side of the generating value. The scale factor's toys are the "
                         "ratios of paired data and simulation toys. Per bin: the coverage columns of "
                         f"{EFFICIENCIES} and {SCALE_FACTORS}.")]
    if off:
        reasons = Counter(x for r in off for x in str(r["off_reason"]).split(","))
        sec.blocks += [Heading("Why"), Table(["reason", "bins", "meaning"], [
            [r, str(n), WHY.get(r.removeprefix("sf_"), "") + (" (scale factor)" if r.startswith("sf_") else "")]
            for r, n in sorted(reasons.items(), key=lambda rn: -rn[1])],
            f"{MEANINGS.get('coverage_off', '')}")]
        variables = variables_of(nominal.plan)
        listed = [[r["sample"], bin_text(r, variables),
                   f"{_number(r['coverage_eff'], 3)} ± {_number(r['coverage_eff_err'], 3)}",
                   _number(r["pull_mean"], 2), _number(r["pull_width"], 2), f"{r['failed']}/{r['n_toys']}",
                   Cell(str(r["status"]), css="flag")] for r in off[:MAX_LISTED]]
        more = f" ({len(off) - MAX_LISTED} more in the tables)" if len(off) > MAX_LISTED else ""
        sec.blocks += [Heading("Bins with coverage_off"),
                       Table(["quantity", "bin", "coverage", "pull mean", "pull width", "failed toys", "status"],
                             listed, f"{len(off)} bin(s){more}")]
    return sec, [png]


# ---------------------------------------------------------------- config, inputs, outputs ---------------------


def config_section(plan: Plan, out_dir: str) -> Section:
    """The exact config file the outputs come from."""
    with open(plan.config_path) as f:
        text = f.read()
    sec = Section("config", f"{plan.config_path} (SHA-256 {plan.config_sha256()[:16]}…, {len(text.splitlines())} lines)")
    copy = os.path.join(out_dir, CONFIG_COPY)
    caption = f"as run, published as {CONFIG_COPY}" if os.path.exists(copy) else "as run"
    sec.blocks.append(Code(text, caption))
    if len(config_chain(plan.config_path)) > 1:
        sec.blocks.append(Code(resolved_text(plan.config_path), f"with its base applied: what the run used, published "
                                                                f"as {CONFIG_RESOLVED}"))
    return sec


def inputs_section(plan: Plan) -> Section:
    """Input files per sample (toy files with their candidates) and the files left out as bad."""
    sec = Section("inputs", "")
    excluded = plan.excluded_files()
    counts = []
    for sample in plan.config.samples:
        files = plan.input_files(sample)
        counts.append(f"{sample} {len(files)}")
        rows = []
        for i, path in enumerate(files):
            if plan.is_toy(sample):
                note = f"toy, {count_text(plan.toy_candidates(sample, i))} candidates"
                shown = os.path.relpath(path, plan.workdir)
            else:
                ident = plan.input_identity(sample, i)
                note = f"{float(ident.get('size', 0)) / 1e6:.1f} MB" if "size" in ident else ""
                shown = path
            left_out = plan.is_excluded(sample, i)
            rows.append([Cell(shown, css="fail" if left_out else ""), note + (", left out" if left_out else "")])
        role = plan.config.samples[sample].role
        sec.blocks += [Heading(f"{sample} ({'' if sample == role else f'{role}, '}{len(files)} file(s))"),
                       Table(["file", "content"], rows)]
    n_bad = sum(len(v) for v in excluded.values())
    sec.verdict = f"{sum(len(plan.input_files(s)) for s in plan.config.samples)} input file(s) ({', '.join(counts)})"
    if n_bad:
        sec.verdict += f"; {n_bad} bad input file(s) left out: see {EXCLUDED_FILES}"
        sec.level = "warn"
        sec.blocks += [Heading("Left out as bad (calibflow run --skip-bad-files)"),
                       Table(["sample", "file", "reason"],
                             [[s, e["file"], e["reason"].removeprefix(f"{e['file']}: ")] for s, es in excluded.items()
                              for e in es])]
    else:
        sec.verdict += ", none left out"
    if plan.config.toy is not None:
        sec.blocks.append(Text(f"Toy inputs generated by {plan.config.toy.generator} with seed {plan.config.toy.seed}.",
                               "note"))
    return sec


def outputs_section(files: Sequence[str], out_dir: str) -> Section:
    """Every published file, linked."""
    rel = sorted(os.path.relpath(f, out_dir) for f in files)
    items = [(r, r, "") for r in rel]
    return Section("outputs", f"{len(rel)} file(s) published with this report (listed in manifest.json)",
                   blocks=[Links(items)])


# ---------------------------------------------------------------- summary -------------------------------------


def summary_section(plan: Plan, sections: Sequence[Section], counts: Sequence[StatusCounts]) -> Section:
    """What ran (samples, binning, variants, version, config hash) and one verdict line per section."""
    cfg = plan.nominal_config
    variables = variables_of(plan)
    scheme = plan.load_scheme()
    samples = ", ".join(f"{s} ({c.role}, {c.method}, {len(plan.input_files(s))} file(s))" for s, c in cfg.samples.items())
    sources = ", ".join(s.name for s in cfg.systematics.sources)
    flagged = sum(c.flagged + c.low_statistics for c in counts)
    failed = sum(c.failed for c in counts)
    rows = [
        ["calibration", cfg.name],
        ["description", cfg.description or "—"],
        ["samples", samples],
        ["binning", f"{len(scheme.bins)} bins in " + " × ".join(v.heading for v in variables)],
        ["scale factors", ", ".join(f"{d}/{m}" for d, m in cfg.scale_factor_pairs)
         or f"none: {no_scale_factors(cfg)}"],
        ["systematic sources", f"{sources} (combined: {cfg.systematics.combine})" if sources else "none"],
        ["variants run", ", ".join(_variant_label(v) for v in [NOMINAL, *plan.all_variants()])],
        ["flagged fits", Cell(f"{flagged} flagged or low statistics, {failed} failed of {sum(c.bins for c in counts)}",
                              css="fail" if failed else "flag" if flagged else "", href="#fits")],
        ["config", Cell(plan.config_path, href="#config")],
        ["config SHA-256", plan.config_sha256()],
        ["calibflow", __version__],
        ["published key", plan.export_key()],
        *([["run limits", Cell(plan.limits.note(), css="flag")]] if plan.limits else []),
    ]
    sec = Section("summary", f"{cfg.name}: {len(scheme.bins)} bins, {len(cfg.samples)} samples, "
                             f"{1 + len(plan.all_variants())} variant(s), calibflow {__version__}, "
                             f"config {plan.config_sha256()[:12]}")
    shown = [s for s in sections if s.id != "outputs"]
    sec.blocks += [Links([(s.title, f"#{s.id}", s.verdict) for s in shown], [s.level for s in shown]),
                   Heading("What ran"), Table(["", ""], rows, css="kv")]
    sec.level = max((s.level for s in sections), key=["ok", "warn", "bad"].index, default="ok")
    if plan.limits:
        sec.verdict += f"; LIMITED: {plan.limits.text()}"
        sec.level = "bad" if sec.level == "bad" else "warn"
    return sec


# ---------------------------------------------------------------- banners ----------------------------------

BANNER_LEVELS = {"stale": "bad", "limited": "warn"}
"""Banners a report can carry at its top (name -> level): ``limited`` (written with a quick try's report),
``stale`` (set in the published copy after a failed run, removed when a run succeeds)."""


BANNER_START = "<!-- calibflow banner: "


def with_banner(page: str, name: str, text: str | None, markdown: bool = False) -> str:
    """``page`` (a report, HTML or Markdown) with its banner ``name`` set to ``text`` (None: removed): a boxed
    line at the top of the page, between marker comments, so that it can be set and removed in a published
    copy without rendering the page again."""
    start, end = f"{BANNER_START}{name} -->", f"<!-- end of calibflow banner: {name} -->"
    trailer = "\n\n" if markdown else "\n"
    i = page.find(start)
    if i >= 0:
        cut = page.find(end, i) + len(end)
        page = page[:i] + page[cut + len(trailer) if page.startswith(trailer, cut) else cut :]
    if text is None:
        return page
    label = f"{name.upper()}:"
    if markdown:  # above the other banners, as in HTML
        block, offset = f"{start}\n> **{label}** {text}\n{end}{trailer}", 0
        anchor = BANNER_START if BANNER_START in page else '<a id="summary"></a>'
    else:
        block = (f'{start}<p class="verdict {BANNER_LEVELS[name]}"><b>{label}</b> {html.escape(text)}</p>'
                 f"{end}{trailer}")
        anchor, offset = "<main>", len("<main>")
    k = page.find(anchor)
    k = 0 if k < 0 else k + offset
    return page[:k] + block + page[k:]


def set_banner(path: str, name: str, text: str | None) -> None:
    """Set (``text``) or remove (None) the banner ``name`` of the report file ``path`` (.md or .html)."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    new = with_banner(page, name, text, path.endswith(".md"))
    if new != page:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(new)


# ---------------------------------------------------------------- rendering -----------------------------------

CSS = """
:root{--fg:#1d2330;--mute:#5b6475;--line:#d8dde6;--bg2:#f5f7fa;--acc:#1f5fa8;--ok:#2e7d32;--warn:#b26a00;
--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans","DejaVu Sans",sans-serif}
header{background:#14233b;color:#fff;padding:18px 32px 14px}
header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:4px 0 0;color:#c9d4e5}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:6px 32px;
font-size:14px;display:flex;flex-wrap:wrap;column-gap:14px}
nav a{color:var(--acc);text-decoration:none;white-space:nowrap}
main{padding:0 32px 48px;max-width:1500px}
section{margin-top:26px}
h2{font-size:20px;margin:0 0 6px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:18px 0 6px}
a{color:var(--acc)}
.verdict{margin:8px 0 12px;padding:8px 12px;border-left:5px solid var(--ok);background:#eef6ee}
.verdict.warn{border-color:var(--warn);background:#fff5e6}
.verdict.bad{border-color:var(--bad);background:#fdecec}
.note,figcaption{color:var(--mute);font-size:13px}
p.note{margin:2px 0 14px;max-width:70em}
table{border-collapse:collapse;margin:6px 0 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
table.kv td:first-child{color:var(--mute);white-space:nowrap}
table.kv td{overflow-wrap:anywhere}
table.kv thead{display:none}
.scroll{overflow-x:auto;max-width:100%}
table.grid{font-size:11.5px;line-height:1.3}
table.grid td{text-align:right;padding:2px 4px;white-space:nowrap}
table.grid th{font-size:11px;white-space:nowrap;padding:3px 4px}
td.head{background:var(--bg2)!important;font-weight:600;text-align:left!important}
td.flag{background:#ffe9c2!important}
td.fail{background:#ffd0d0!important}
td.low{background:#dbe9fb!important}
td.ref{font-style:italic;color:var(--mute)}
td small{display:block;color:var(--mute);font-size:11px}
.e{display:inline-flex;flex-direction:column;font-size:9px;line-height:1.05;margin-left:1px;vertical-align:middle;
color:#444}
.s{color:#7b3fa0;font-size:9.5px}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:6px 0;max-width:590px}
figure.wide{max-width:1100px}
figure img{max-width:100%;height:auto;border:1px solid var(--line)}
pre{background:var(--bg2);border:1px solid var(--line);padding:10px 12px;font-size:12.5px;line-height:1.4;
overflow:auto;max-height:22em}
dl.glance{display:grid;grid-template-columns:9em 1fr;gap:6px 12px;margin:10px 0 16px}
dl.glance dt{font-weight:600;border-left:5px solid var(--ok);padding-left:8px}
dl.glance dt.warn{border-color:var(--warn)}
dl.glance dt.bad{border-color:var(--bad)}
dl.glance dd{margin:0}
ul.files{columns:3;font-size:13px}
"""


def _num(v: float, d: int) -> str:
    return f"{v:.{d}f}" if math.isfinite(v) else "—"


def _measure_html(m: Measure) -> str:
    d = m.decimals
    stat = f"±{_num(m.up, d)}" if _num(m.up, d) == _num(m.down, d) else \
        f"<span class=e><span>+{_num(m.up, d)}</span><span>−{_num(m.down, d)}</span></span>"
    syst = f"<br><span class=s>±{_num(m.syst, d)} syst</span>" if m.syst > 0 else ""
    return f"<b>{_num(m.value, d)}</b> {stat}{syst}"


def _measure_md(m: Measure) -> str:
    d = m.decimals
    stat = f"±{_num(m.up, d)}" if _num(m.up, d) == _num(m.down, d) else f"+{_num(m.up, d)}/−{_num(m.down, d)}"
    mark = {"flag": " (flagged)", "low": " (low statistics)", "fail": " (no value)"}.get(m.css, "")
    return f"{_num(m.value, d)} {stat}" + (f" ±{_num(m.syst, d)} syst" if m.syst > 0 else "") + mark


def _cell_html(c: Cell | Measure | str) -> str:
    e = html.escape
    if isinstance(c, str):
        return f"<td>{e(c)}</td>"
    attrs = (f' class="{c.css}"' if c.css else "") + (f' title="{e(c.title)}"' if c.title else "")
    if isinstance(c, Measure):
        return f"<td{attrs}>{_measure_html(c)}</td>"
    text = f'<a href="{e(c.href)}">{e(c.text)}</a>' if c.href else e(c.text)
    return f"<td{attrs}>{text}" + (f"<small>{e(c.note)}</small>" if c.note else "") + "</td>"


def _cell_md(c: Cell | Measure | str) -> str:
    if isinstance(c, str):
        text = c
    elif isinstance(c, Measure):
        text = _measure_md(c)
    else:
        text = f"[{c.text}]({c.href})" if c.href else c.text
        text += f" ({c.note})" if c.note else ""
    return text.replace("|", "\\|").replace("\n", " ")


def _lines(text: str) -> str:
    return "<br>".join(html.escape(t) for t in text.split("\n"))


def _block_html(b: Block) -> str:
    e = html.escape
    if isinstance(b, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in b.rows)
        cap = f'<p class="note">{e(b.caption)}</p>' if b.caption else ""
        css = f' class="{b.css}"' if b.css else ""
        table = f"<table{css}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return f'<div class="scroll">{table}</div>{cap}'  # a table wider than the window scrolls in its box
    if isinstance(b, Figure):
        src = e(b.src)
        css = f' class="{b.css}"' if b.css else ""
        return (f'<figure{css}><a href="{src}"><img src="{src}" alt="{e(b.caption)}"></a>'
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    if isinstance(b, Code):
        cap = f'<p class="note">{e(b.caption)}</p>' if b.caption else ""
        return f"{cap}<pre>{e(b.text)}</pre>"
    if isinstance(b, Heading):
        return f"<h3>{e(b.text)}</h3>"
    if isinstance(b, Links):
        if b.levels:
            return '<dl class="glance">' + "".join(
                f'<dt class="{level}"><a href="{e(h)}">{e(t)}</a></dt><dd>{_lines(r)}</dd>'
                for (t, h, r), level in zip(b.items, b.levels, strict=True)) + "</dl>"
        return '<ul class="files">' + "".join(f'<li><a href="{e(h)}">{e(t)}</a></li>' for t, h, _ in b.items) + "</ul>"
    return f'<p class="{b.css}">{e(b.text)}</p>' if b.css else f"<p>{e(b.text)}</p>"


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The self-contained HTML page."""
    e = html.escape
    nav = "".join(f'<a href="#{s.id}">{e(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        out, figs = [], []
        for b in [*s.blocks, None]:
            if isinstance(b, Figure):
                figs.append(_block_html(b))
                continue
            if figs:
                out.append('<div class="figs">' + "".join(figs) + "</div>")
                figs = []
            if b is not None:
                out.append(_block_html(b))
        parts.append(f'<section id="{s.id}"><h2>{e(s.title)}</h2><p class="verdict {s.level}">{_lines(s.verdict)}</p>'
                     + "\n".join(out) + "</section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{e(title)}</h1><p>{e(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>" + "\n".join(parts) + "</main></body></html>\n")


def _block_md(b: Block) -> list[str]:
    if isinstance(b, Table):
        header = [h.replace("|", "\\|") or " " for h in b.header]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in b.rows]
        return [*lines, "", *([f"*{b.caption}*", ""] if b.caption else [])]
    if isinstance(b, Figure):
        return [f"![{b.caption}]({b.src})", ""]
    if isinstance(b, Code):
        return [*([b.caption, ""] if b.caption else []), "```yaml", b.text.rstrip("\n"), "```", ""]
    if isinstance(b, Heading):
        return [f"### {b.text}", ""]
    if isinstance(b, Links):
        return [f"- [{t}]({h})" + (f": {'; '.join(r.splitlines())}" if r else "") for t, h, r in b.items] + [""]
    return [b.text, ""]


def render_markdown(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The same page as Markdown: one ``##`` heading per section, preceded by an anchor with its id."""
    lines = [f"# {title}", "", subtitle, ""]
    for s in sections:
        lines += [f'<a id="{s.id}"></a>', "", f"## {s.title}", "", f"**{'; '.join(s.verdict.splitlines())}**", ""]
        for b in s.blocks:
            lines += _block_md(b)
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- entry point ---------------------------------


ClosureExtra = Callable[["Section", Sequence["Folder"], str], list[str]]
"""Adds blocks to the closure section (folders, out_dir); returns the figures drawn
(:func:`calibflow.export.closure_apply.add_to_section`)."""
SectionMaker = Callable[[Sequence["Folder"], str], tuple["Section", list[str]]]
"""Makes a section (folders, out_dir) and the figures drawn (:func:`calibflow.export.uncertainty.correlations_section`)."""


def report_sections(plan: Plan, out_dir: str, files: Sequence[str], closure_extra: ClosureExtra | None = None,
                    correlations: SectionMaker | None = None) -> tuple[list[Section], list[str]]:
    """Every section of the report of ``plan`` (combined tables in ``out_dir``, published ``files``) and the
    figures drawn for it; ``closure_extra`` and ``correlations`` come from the modules that build on this one's
    blocks (given by :func:`calibflow.export.publish.export_all`, so that this module imports neither)."""
    folders = table_folders(plan)
    pngs = [f for f in files if f.endswith(".png")]
    counts = fit_status_counts(plan)
    variables = variables_of(plan)
    closure, drawn = closure_section(folders, out_dir)
    if closure_extra is not None:
        drawn += closure_extra(closure, folders, out_dir)  # config closure_after_apply (docs/tables.md)
    coverage, coverage_png = coverage_section(folders, out_dir)
    drawn += coverage_png
    if correlations is not None:
        correlations_sec, correlation_pngs = correlations(folders, out_dir)
        drawn += correlation_pngs
    efficiencies = values_section("efficiencies", folders, pngs, out_dir)
    why = no_scale_factors(plan.nominal_config)
    if why:  # no scale-factors section
        efficiencies.verdict += f"\nno scale factors: {why}"
        efficiencies.blocks.insert(0, Text(f"No scale factors: {why}. Hence no {SCALE_FACTORS}, corrections.json, "
                                           "sf_ histograms, scale-factor maps or ratio panels.", "note"))
    body = [
        config_section(plan, out_dir),
        cutflow_section(plan, out_dir),
        fits_section(plan, counts, variables, out_dir),
        efficiencies,
        *([] if why else [values_section("scale-factors", folders, pngs, out_dir)]),
        uncertainties_section(folders, [s.name for s in plan.nominal_config.systematics.sources]),
        *([correlations_sec] if correlations is not None else []),
        closure,
        coverage,
        inputs_section(plan),
        outputs_section([*files, *drawn], out_dir),
    ]
    return [summary_section(plan, body, counts), *body], drawn


def write_report(plan: Plan, out_dir: str, files: Sequence[str], closure_extra: ClosureExtra | None = None,
                 correlations: SectionMaker | None = None) -> list[str]:
    """``report.md`` and ``report.html`` of ``plan`` in ``out_dir`` (the combined folder, published as is),
    with the figures they need (``plots/closure_pulls.png`` per folder with a closure table); returns the
    files written. ``closure_extra``, ``correlations``: :func:`report_sections`."""
    sections, drawn = report_sections(plan, out_dir, files, closure_extra, correlations)
    cfg = plan.nominal_config
    title = f"calibflow report: {cfg.name}"
    subtitle = cfg.description or ""
    paths = [os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")]
    limited = plan.limits.note() if plan.limits else None
    for path, text in zip(paths, (render_markdown(title, subtitle, sections), render_html(title, subtitle, sections)),
                          strict=True):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(with_banner(text, "limited", limited, path.endswith(".md")))
    return [*drawn, *paths]
