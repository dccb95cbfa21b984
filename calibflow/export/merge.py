"""Eras and working points in one correction (``calibflow merge MERGE.yaml``, issue 20 item 6).

A merge config lists published result folders of one calibration run per era (or run range) with their
integrated luminosity; ``merged/<name>/`` then gets:

* ``corrections.json``: correction ``<name>`` with an ``era`` (string) or ``run`` (integer, binned by the eras'
  run ranges) input, then a ``working_point`` string input (when the config lists working points), then the
  binning variables and ``syst``; each era's node is the era's own published correction, copied as it is (every
  ``syst`` category of it, per-bin statistical ones included). Correction ``<name>_combined`` is the
  luminosity-weighted combination of the eras, without the era input.
* ``combined_scale_factors.csv``: the combination per working point and bin; ``chi2.csv``: the per-era
  consistency χ² per bin and in total with its p-value; ``report.html``/``report.md`` and
  ``plots/merge_<working point>.png``; ``config.yaml``, the merge config's bytes.

Combination (weights w_e = L_e / Σ L): SF = Σ w_e SF_e; the statistical errors (each side) of independent eras in
quadrature, √(Σ w_e² σ_e²); each systematic source linearly, Up − SF = Σ w_e (Up_e − SF_e) (fully correlated across
eras; a source an era lacks shifts that era by 0), as is each era's combined systematic: syst = Σ w_e syst_e;
total = stat ⊕ syst per side. Consistency: per bin χ² = Σ_e (SF_e − m)² / σ_e² with m the inverse-variance mean and
σ_e the era's symmetrised statistical error ((down + up)/2); systematics are left out (correlated across eras, they
cancel in the differences); ndof = eras − 1 per bin, totals summed over the bins with a χ² (an era without a
statistical error in a bin gives that bin none), p-value from the χ² distribution.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import correctionlib.schemav2 as cs
from pydantic import Field, ValidationError, field_validator, model_validator

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.config import ConfigError, _describe, _Strict, load_yaml, suggestion
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row, read_csv, write_csv
from calibflow.tables.write import CORRECTIONS, SCALE_FACTORS

MERGE_VERSION = 1
"""Bump when the merge's outputs change for the same inputs."""
WORK = "work"
"""Folder under ``merged/<name>/`` where a merge's outputs are made before they are published as a set."""
NOMINAL_WP = "nominal"
"""Working-point name of a calibration's own ``pass`` (its top folder); other names are ``wp/<name>/``."""
CHI2 = "chi2.csv"
COMBINED = "combined_scale_factors.csv"
STAT_SIDES = ("err_down", "err_up")


class MergeEra(_Strict):
    """One era: its name, the published result folder of its calibration, luminosity (fb⁻¹), run range."""

    era: str
    result: str | None = None
    config: str | None = None
    lumi: float = Field(gt=0, allow_inf_nan=False)
    run_range: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> MergeEra:
        if (self.result is None) == (self.config is None):
            raise ValueError("give either result (the era's published result folder) or config (the era's "
                             "calibration config, published under the result folder), not both nor neither")
        return self

    @property
    def source(self) -> str:
        """How the config names the era's results: its result folder or its calibration config."""
        return self.result if self.result is not None else f"{self.config} (its published results)"

    @property
    def key(self) -> str:
        """The config key naming the era's results: ``result`` or ``config``."""
        return "result" if self.result is not None else "config"

    @field_validator("era", mode="before")
    @classmethod
    def _era_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("run_range")
    @classmethod
    def _increasing(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and v[0] >= v[1]:
            raise ValueError(f"give [first run, last run + 1] with first < last, not {list(v)}")
        return v


class MergeConfig(_Strict):
    """``calibflow merge`` config: name, eras, working points, the era axis and the data sample."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    eras: list[MergeEra] = Field(min_length=2)
    working_points: list[str] | None = None
    axis: Literal["era", "run"] = "era"
    data: str | None = None


@dataclass
class EraTables:
    """One era and working point: its scale-factor rows (one data sample) and its published correction."""

    rows: list[Row]
    correction: cs.Correction
    formulas: list[cs.Formula]


def load_merge_config(path: str) -> tuple[MergeConfig, str]:
    """The merge config and the folder its relative paths start from; ConfigError names the key to fix."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        cfg = MergeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(e, MergeConfig) for e in exc.errors())) from None
    names = [e.era for e in cfg.eras]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"{path}: eras[{i}].era: {n!r} given twice")
    if cfg.working_points is not None and len(set(cfg.working_points)) != len(cfg.working_points):
        raise ConfigError(f"{path}: working_points: a name is given twice ({cfg.working_points})")
    if cfg.axis == "run":
        missing = [i for i, e in enumerate(cfg.eras) if e.run_range is None]
        if missing:
            raise ConfigError(f"{path}: eras[{missing[0]}].run_range: needed with axis: run")
        ranges = sorted((e.run_range, i) for i, e in enumerate(cfg.eras) if e.run_range)
        for (a, _), (b, j) in itertools.pairwise(ranges):
            if b[0] < a[1]:
                raise ConfigError(f"{path}: eras[{j}].run_range: {list(b)} overlaps {list(a)}")
    return cfg, os.path.dirname(os.path.abspath(path))


def era_result(base: str, era: MergeEra, result_dir: str) -> str:
    """The result folder of ``era``: its ``result`` (relative to the merge config's folder ``base``), or
    ``<result_dir>/<name>`` of its ``config`` (relative to ``base``)."""
    if era.result is not None:
        return era.result if os.path.isabs(era.result) else os.path.join(base, era.result)
    from calibflow.config import load_config

    assert era.config is not None
    return os.path.join(result_dir, load_config(os.path.join(base, era.config)).name)


def _folder(path: str, base: str, i: int, era: MergeEra, result_dir: str) -> str:
    """The published folder of era ``i`` (its current set), checked to hold a calibration's full tables (not a
    quick try's)."""
    from calibflow.export.publish import LIMITED, published_dir

    key = era.key
    try:
        folder = era_result(base, era, result_dir)
    except ConfigError as exc:
        raise ConfigError(f"{path}: eras[{i}].config: {exc}") from None
    shown = era.result or folder
    if not os.path.isfile(os.path.join(folder, SCALE_FACTORS)):
        raise ConfigError(f"{path}: eras[{i}].{key}: {shown} holds no published {SCALE_FACTORS} "
                          "(run the era's calibration first" + (f": calibflow run {era.config})" if era.config else ")"))
    folder = published_dir(folder) or folder
    if os.path.exists(os.path.join(folder, LIMITED)):
        raise ConfigError(f"{path}: eras[{i}].{key}: {shown} holds the results of a quick try "
                          "(calibflow run --limit/--max-files): run the calibration in full first")
    return folder


def _read_era(path: str, i: int, era: MergeEra, folder: str, wp: str, data: str | None) -> EraTables:
    """Scale factors and correction of working point ``wp`` in the published ``folder`` of era ``i``."""
    where = f"eras[{i}].{era.key}"
    sub = folder if wp == NOMINAL_WP else os.path.join(folder, "wp", wp)
    shown = era.source if wp == NOMINAL_WP else f"{era.source}: wp/{wp}"
    if not os.path.isfile(os.path.join(sub, SCALE_FACTORS)):
        wps = sorted(os.listdir(os.path.join(folder, "wp"))) if os.path.isdir(os.path.join(folder, "wp")) else []
        raise ConfigError(f"{path}: working_points: {wp!r} is not a working point of {era.source}"
                          f"{suggestion(wp, [NOMINAL_WP, *wps], 'working points')}")
    if not os.path.isfile(os.path.join(sub, CORRECTIONS)):
        raise ConfigError(f"{path}: {where}: {shown} has no {CORRECTIONS} (outputs.correctionlib: false?)")
    rows = read_csv(os.path.join(sub, SCALE_FACTORS))
    datas = sorted({str(r["data"]) for r in rows})
    if data is None and len(datas) > 1:
        raise ConfigError(f"{path}: data: {shown} has scale factors of several data samples ({', '.join(datas)}): "
                          "name one")
    pick = data or datas[0]
    if pick not in datas:
        raise ConfigError(f"{path}: data: {pick!r} is not a data sample of {shown}{suggestion(pick, datas, 'samples')}")
    rows = sorted((r for r in rows if r["data"] == pick), key=lambda r: int(r["bin"]))
    with open(os.path.join(sub, CORRECTIONS)) as f:
        cset = cs.CorrectionSet.model_validate_json(f.read())
    corrs = cset.corrections if len(cset.corrections) == 1 else \
        [c for c in cset.corrections if c.name.endswith(f"_{pick}_over_{rows[0]['mc']}")]
    if len(corrs) != 1:
        raise ConfigError(f"{path}: {where}: no correction of data sample {pick!r} in {shown}/{CORRECTIONS}")
    return EraTables(rows, corrs[0], list(corrs[0].generic_formulas or []))


def _bins(rows: Sequence[Row], variables: Sequence[str]) -> list[tuple[float, ...]]:
    """The bounds of every bin, in bin order."""
    return [tuple(float(r[f"{v}_{s}"]) for v in variables for s in ("lo", "hi")) for r in rows]


def _bounds(bins: Sequence[tuple[float, ...]], k: int, variables: Sequence[str]) -> str:
    """Bin ``k`` of ``bins`` as ``p [2, 8) eta [2, 5)`` (``none`` past the last bin)."""
    if k >= len(bins):
        return "none"
    return " ".join(f"{v} [{bins[k][2 * j]:g}, {bins[k][2 * j + 1]:g})" for j, v in enumerate(variables))


def _variables(corr: cs.Correction) -> list[str]:
    """The binning variables of a calibflow correction (its real inputs)."""
    return [i.name for i in corr.inputs if i.type != "string"]


def _sources(rows: Sequence[Row]) -> list[str]:
    """Systematic sources of a scale-factor table (``<source>Up`` and ``<source>Down`` columns)."""
    return [k[:-2] for k in rows[0] if k.endswith("Up") and f"{k[:-2]}Down" in rows[0]] if rows else []


def _node(binning: cs.Binning) -> Node:
    """The binning scheme node of a correctionlib ``Binning`` tree (calibflow's export layout)."""
    kids = [c for c in binning.content if isinstance(c, cs.Binning)]
    return Node(binning.input, tuple(float(x) for x in binning.edges),
                tuple(_node(k) for k in kids) if len(kids) == len(binning.content) else None)


def _nominal_binning(corr: cs.Correction) -> cs.Binning:
    """The ``nominal`` content of a calibflow correction (merged or per-bin form)."""
    data = corr.data.content if isinstance(corr.data, cs.Transform) else corr.data
    assert isinstance(data, cs.Category)
    return next(it.value for it in data.content if it.key == "nominal")  # type: ignore[return-value]


def _bin_columns(row: Row) -> Row:
    """The ``bin`` and ``<variable>_lo/_hi`` columns of a table row."""
    return {k: v for k, v in row.items() if k == "bin" or k.endswith(("_lo", "_hi"))}


def combine(tables: Sequence[Sequence[Row]], lumis: Sequence[float]) -> list[Row]:
    """Luminosity-weighted combination of the eras' scale-factor rows (same bins; module docstring)."""
    total = sum(lumis)
    w = [x / total for x in lumis]
    sources = list(dict.fromkeys(s for rows in tables for s in _sources(rows)))
    out = []
    for per_bin in zip(*tables, strict=True):
        sf = sum(wi * float(r["scale_factor"]) for wi, r in zip(w, per_bin, strict=True))
        row = _bin_columns(per_bin[0])
        row["scale_factor"] = sf
        for col in STAT_SIDES:
            row[col] = math.sqrt(sum((wi * float(r[col])) ** 2 for wi, r in zip(w, per_bin, strict=True)))
        row["syst"] = sum(wi * float(r["syst"]) for wi, r in zip(w, per_bin, strict=True))
        for s in sources:
            for side in ("Up", "Down"):
                row[f"{s}{side}"] = sf + sum(wi * (float(r[f"{s}{side}"]) - float(r["scale_factor"]))
                                             for wi, r in zip(w, per_bin, strict=True) if f"{s}{side}" in r)
        row["total_down"] = math.hypot(row["err_down"], row["syst"])
        row["total_up"] = math.hypot(row["err_up"], row["syst"])
        out.append(row)
    return out


def chi2_rows(tables: Sequence[Sequence[Row]], eras: Sequence[str]) -> list[Row]:
    """Per bin the eras' scale factors, their inverse-variance mean, χ², ndof and p-value; then a ``total`` row."""
    from scipy import stats

    out = []
    for per_bin in zip(*tables, strict=True):
        sf = [float(r["scale_factor"]) for r in per_bin]
        sig = [0.5 * (float(r["err_down"]) + float(r["err_up"])) for r in per_bin]
        use = sig if all(s > 0 for s in sig) else [math.nan] * len(sig)  # an era without an error: no χ² here
        wsum = sum(1 / s**2 for s in use)
        mean = sum(v / s**2 for v, s in zip(sf, use, strict=True)) / wsum
        chi2 = sum(((v - mean) / s) ** 2 for v, s in zip(sf, use, strict=True))
        row = _bin_columns(per_bin[0])
        for e, v, s in zip(eras, sf, sig, strict=True):
            row[f"sf_{e}"], row[f"stat_{e}"] = v, s
        row.update(mean=mean, mean_err=1 / math.sqrt(wsum), chi2=chi2, ndof=len(sf) - 1,
                   pvalue=float(stats.chi2.sf(chi2, len(sf) - 1)))
        out.append(row)
    finite = [r for r in out if math.isfinite(r["chi2"])]  # bins without a χ² (no error) are left out
    chi2, ndof = sum(r["chi2"] for r in finite), sum(r["ndof"] for r in finite)
    total = {k: math.nan for k in out[0]} | {"bin": "total", "chi2": chi2, "ndof": ndof,
                                              "pvalue": float(stats.chi2.sf(chi2, ndof))}
    return [*out, total]


class _Source(NamedTuple):
    """A systematic source as :func:`calibflow.export.publish._categories` reads it: its name."""

    name: str


def _categories(rows: Sequence[Row]) -> dict[str, dict[int, float]]:
    """The ``syst`` categories of the combined correction per bin, as a calibration's ``corrections.json`` has."""
    from calibflow.export.publish import _categories as sf_categories

    return sf_categories(rows, [_Source(s) for s in _sources(rows)])  # type: ignore[arg-type]


def _wrap(input_name: str, nodes: Mapping[str, Any]) -> cs.Category:
    """A string category over ``nodes`` (key -> content)."""
    return cs.Category(nodetype="category", input=input_name,
                       content=[cs.CategoryItem(key=k, value=v) for k, v in nodes.items()])


def _run_axis(cfg: MergeConfig, nodes: Mapping[str, Any]) -> cs.Binning:
    """Binning on ``run`` over the eras' ranges [first, last + 1); a run in a gap between ranges is an error
    (an empty category), as is one outside every range (flow ``error``)."""
    ranges = sorted((e.run_range, e.era) for e in cfg.eras if e.run_range)
    edges: list[float] = []
    content: list[Any] = []
    for (lo, hi), era in ranges:
        if edges and lo > edges[-1]:
            content.append(cs.Category(nodetype="category", input="syst", content=[]))
        if not edges or lo > edges[-1]:
            edges.append(lo)
        edges.append(hi)
        content.append(nodes[era])
    return cs.Binning(nodetype="binning", input="run", edges=edges, content=content, flow="error")


def merge(path: str, result_dir: str) -> tuple[str, list[str], list[Row]]:
    """Run the merge of config ``path`` into ``<result_dir>/merged/<name>/``; returns the folder, the files written
    and the total χ² row of every working point (``working_point``, ``chi2``, ``ndof``, ``pvalue``)."""
    from calibflow.export.correctionlib import build_correction, write_correction_set
    from calibflow.export.publish import publish

    cfg, base = load_merge_config(path)
    folders = [_folder(path, base, i, e, result_dir) for i, e in enumerate(cfg.eras)]
    wps = cfg.working_points or [NOMINAL_WP]
    tables = {wp: [_read_era(path, i, cfg.eras[i], f, wp, cfg.data) for i, f in enumerate(folders)] for wp in wps}
    first = tables[wps[0]][0]
    variables = _variables(first.correction)
    for wp, eras in tables.items():
        ref = _bins(eras[0].rows, variables)
        for i, t in enumerate(eras[1:], 1):
            if _variables(t.correction) != variables:
                raise ConfigError(f"{path}: eras[{i}].{cfg.eras[i].key}: binning variables {_variables(t.correction)} differ "
                                  f"from eras[0]'s {variables} (working point {wp})")
            bins = _bins(t.rows, variables)
            if bins != ref:
                k = next((j for j, (a, b) in enumerate(zip(bins, ref, strict=False)) if a != b), min(len(bins), len(ref)))
                raise ConfigError(f"{path}: eras[{i}].{cfg.eras[i].key}: binning of {cfg.eras[i].source} differs from eras[0]'s "
                                  f"(working point {wp}: {len(bins)} vs {len(ref)} bins; bin {k}: "
                                  f"{_bounds(bins, k, variables)} vs {_bounds(ref, k, variables)}); "
                                  "merge only calibrations with identical bins")
    formulas = _formulas(path, [t for eras in tables.values() for t in eras], cfg.eras)
    workdir = os.path.join(result_dir, "merged", cfg.name)
    key = merge_key(path, folders)
    out = os.path.join(workdir, WORK, key)
    shutil.rmtree(out, ignore_errors=True)  # an interrupted merge's leftovers
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    lumis = [e.lumi for e in cfg.eras]
    names = [e.era for e in cfg.eras]
    combined, chi2, per_wp, totals = [], [], {}, []
    for wp, eras in tables.items():
        rows = combine([t.rows for t in eras], lumis)
        scheme = BinningScheme(_node(_nominal_binning(eras[0].correction)))
        try:
            per_wp[wp] = build_correction(f"{cfg.name}_combined", scheme, _categories(rows),
                                          flow=_nominal_binning(eras[0].correction).flow)
        except ValueError as exc:
            raise ConfigError(f"{path}: working point {wp}: {exc}") from None
        c2 = chi2_rows([t.rows for t in eras], names)
        combined += [{"working_point": wp, **r} for r in rows]
        chi2 += [{"working_point": wp, **r} for r in c2]
        totals.append({"working_point": wp, **{k: c2[-1][k] for k in ("chi2", "ndof", "pvalue")}})
    corrections = [_by_era(cfg, tables, variables, first, formulas), _combined(cfg, per_wp, variables, first)]
    files = [os.path.join(out, n) for n in (CORRECTIONS, COMBINED, CHI2, "config.yaml")]
    lumi_text = ", ".join(f"{e.era} {e.lumi:g}/fb" for e in cfg.eras)
    write_correction_set(files[0], corrections, description=cfg.description or
                         f"calibflow merge {cfg.name}: eras {lumi_text}; {cfg.name}_combined: luminosity-weighted")
    write_csv(files[1], combined)
    write_csv(files[2], chi2)
    with atomic_path(files[3]) as tmp:
        shutil.copyfile(path, tmp)
    files += write_merge_report(cfg, out, combined, chi2)
    published = publish(out, workdir, key, files, config=os.path.abspath(path), eras=folders)
    for old in os.listdir(os.path.join(workdir, WORK)):  # the set holds its own links to the files
        if old != key:
            shutil.rmtree(os.path.join(workdir, WORK, old), ignore_errors=True)
    return workdir, published, totals


def merge_key(path: str, folders: Sequence[str]) -> str:
    """Content key of a merge: the merge config's bytes and the eras' published sets (their folders and
    manifest keys), so that a republished era gives a new set."""
    from calibflow.export.publish import MANIFEST
    from calibflow.hashing import content_key

    with open(path, "rb") as f:
        config = hashlib.sha256(f.read()).hexdigest()
    eras = []
    for folder in folders:
        try:
            with open(os.path.join(folder, MANIFEST)) as f:
                eras.append([folder, json.load(f).get("key")])
        except (OSError, ValueError):
            eras.append([folder, None])
    return content_key(config, eras, MERGE_VERSION)


def _inputs(cfg: MergeConfig, variables: Sequence[str], first: EraTables, era_axis: bool) -> list[cs.Variable]:
    """Inputs of a merged correction before ``syst``: the era axis (if ``era_axis``), the working point and the
    binning variables as the eras' corrections describe them."""
    out = []
    if era_axis:
        out.append(cs.Variable(name="run", type="int", description="run number; ranges: " + ", ".join(
            f"{e.era} [{e.run_range[0]}, {e.run_range[1]})" for e in cfg.eras if e.run_range))
            if cfg.axis == "run" else cs.Variable(name="era", type="string", description=", ".join(e.era for e in cfg.eras)))
    if cfg.working_points:
        out.append(cs.Variable(name="working_point", type="string", description=", ".join(cfg.working_points)))
    return out + [i for i in first.correction.inputs if i.name in variables]


def _formulas(path: str, tables: Sequence[EraTables], eras: Sequence[MergeEra]) -> list[cs.Formula]:
    """The generic formulas the eras' nodes refer to by index: the longest list, each era's a prefix of it
    (calibflow's per-bin form has one, the identity of the first binning variable; the merged form none)."""
    longest = max((t.formulas for t in tables), key=len)
    for k, t in enumerate(tables):
        if [f.model_dump() for f in t.formulas] != [f.model_dump() for f in longest[: len(t.formulas)]]:
            raise ConfigError(f"{path}: eras[{k % len(eras)}].{eras[k % len(eras)].key}: its correction's generic formulas differ from "
                              "the other eras'")
    return list(longest)


def _by_era(cfg: MergeConfig, tables: Mapping[str, Sequence[EraTables]], variables: Sequence[str],
            first: EraTables, formulas: Sequence[cs.Formula]) -> cs.Correction:
    """Correction ``<name>``: per era (or run range) and working point, the era's own correction node."""
    def era_node(i: int) -> Any:
        if cfg.working_points:
            return _wrap("working_point", {wp: tables[wp][i].correction.data for wp in tables})
        return next(iter(tables.values()))[i].correction.data

    nodes = {e.era: era_node(i) for i, e in enumerate(cfg.eras)}
    eras0 = next(iter(tables.values()))
    syst = cs.Variable(name="syst", type="string", description="each era's own categories: " + "; ".join(
        f"{e.era}: " + next(v.description or "" for v in eras0[i].correction.inputs if v.type == "string")
        for i, e in enumerate(cfg.eras)))
    data = _run_axis(cfg, nodes) if cfg.axis == "run" else _wrap("era", nodes)
    return cs.Correction(name=cfg.name, version=1, inputs=[*_inputs(cfg, variables, first, True), syst],
                         description=f"scale factor per {cfg.axis} " + ("and working point " if cfg.working_points else "")
                         + "(each era's own calibration)",
                         output=first.correction.output,
                         **({"generic_formulas": list(formulas)} if formulas else {}), data=data)


def _combined(cfg: MergeConfig, per_wp: Mapping[str, cs.Correction], variables: Sequence[str],
              first: EraTables) -> cs.Correction:
    """Correction ``<name>_combined``: the luminosity-weighted combination per working point."""
    one = next(iter(per_wp.values()))
    data = _wrap("working_point", {wp: c.data for wp, c in per_wp.items()}) if cfg.working_points else one.data
    syst = [i for i in one.inputs if i.name == "syst"]
    return cs.Correction(name=f"{cfg.name}_combined", version=1,
                         inputs=_inputs(cfg, variables, first, False) + syst,
                         description="luminosity-weighted combination of eras " + ", ".join(
                             f"{e.era} ({e.lumi:g}/fb)" for e in cfg.eras) + ": statistical errors in quadrature, "
                         "systematic sources linearly (fully correlated)",
                         output=first.correction.output, data=data)


def write_merge_report(cfg: MergeConfig, out: str, combined: Sequence[Row],
                       chi2: Sequence[Row]) -> list[str]:
    """``report.html``/``report.md`` (eras, the convention, per working point the χ² verdict, figure and table) and
    the figures ``plots/merge_<working point>.png``; returns the files written."""
    from calibflow.export.report import Figure, Section, Table, Text, render_html, render_markdown

    total_l = sum(e.lumi for e in cfg.eras)
    eras = Table(["era", "result folder", "run range", "lumi [fb⁻¹]", "weight"],
                 [[e.era, e.source, f"[{e.run_range[0]}, {e.run_range[1]})" if e.run_range else "—", f"{e.lumi:g}",
                   f"{e.lumi / total_l:.4f}"] for e in cfg.eras])
    rule = Text("Combination: SF = Σ L_e SF_e / Σ L_e; statistical errors in quadrature (independent eras); each "
                "systematic source and each era's systematic linearly (fully correlated across eras). Consistency: "
                "χ² = Σ_e (SF_e − m)²/σ_e² per bin, m the inverse-variance mean, σ_e the era's symmetrised statistical "
                "error; ndof = eras − 1 per bin.", "note")
    sections = [Section("eras", f"{len(cfg.eras)} eras, {total_l:g} fb⁻¹", blocks=[eras, rule], heading="Eras")]
    written = []
    wps = list(dict.fromkeys(r["working_point"] for r in chi2))
    for wp in wps:
        rows = [r for r in chi2 if r["working_point"] == wp and r["bin"] != "total"]
        tot = next(r for r in chi2 if r["working_point"] == wp and r["bin"] == "total")
        png = os.path.join(out, "plots", f"merge_{wp}.png")
        plot_merge(rows, [r for r in combined if r["working_point"] == wp], [e.era for e in cfg.eras], png, wp)
        written.append(png)
        comb = [r for r in combined if r["working_point"] == wp]
        body = [[str(r["bin"]), _where(r), *(f"{r[f'sf_{e.era}']:.4f} ± {r[f'stat_{e.era}']:.4f}" for e in cfg.eras),
                 f"{c['scale_factor']:.4f} +{c['total_up']:.4f} −{c['total_down']:.4f}", f"{r['chi2']:.2f}",
                 f"{r['pvalue']:.3f}"] for r, c in zip(rows, comb, strict=True)]
        ok = tot["pvalue"] >= 0.01
        sections.append(Section(f"wp-{wp}", f"χ²/ndof = {tot['chi2']:.1f}/{tot['ndof']}, p = {tot['pvalue']:.3g}: "
                                + ("eras consistent" if ok else "eras inconsistent (p < 0.01)"),
                                "ok" if ok else "warn", heading=f"Consistency: {wp}",
                                blocks=[Figure(os.path.relpath(png, out), f"scale factors per era and combined ({wp})"),
                                        Table(["bin", "where", *(f"SF {e.era} (stat)" for e in cfg.eras),
                                               "combined (total)", "χ²", "p"], body)]))
    title = f"calibflow merge: {cfg.name}"
    subtitle = cfg.description or f"{len(cfg.eras)} eras by {cfg.axis}, working points {', '.join(wps)}"
    paths = [os.path.join(out, "report.md"), os.path.join(out, "report.html")]
    for p, text in zip(paths, (render_markdown(title, subtitle, sections), render_html(title, subtitle, sections)),
                       strict=True):
        with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return written + paths


def _where(row: Row) -> str:
    """A bin's bounds from its ``<variable>_lo/_hi`` columns: ``p [2, 10) eta [2, 5)``."""
    return " ".join(f"{k[:-3]} [{row[k]:g}, {row[k[:-3] + '_hi']:g})" for k in row if k.endswith("_lo"))


def plot_merge(chi2: Sequence[Row], combined: Sequence[Row], eras: Sequence[str], path: str, wp: str) -> None:
    """Scale factor per bin of every era with its statistical error and the combination (band: total), and the
    per-bin χ² p-value below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    x = np.arange(len(chi2))
    with plt.style.context("default"):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(x) + 2), 4.8), sharex=True, dpi=100,
                                          gridspec_kw={"height_ratios": [3, 1]})
        sf = np.array([r["scale_factor"] for r in combined])
        down, up = np.array([r["total_down"] for r in combined]), np.array([r["total_up"] for r in combined])
        top.bar(x, down + up, bottom=sf - down, width=0.9, color="0.85", label="combined (total)")
        top.hlines(sf, x - 0.45, x + 0.45, color="k", lw=1.2)
        for k, e in enumerate(eras):
            dx = (k - (len(eras) - 1) / 2) * 0.6 / max(len(eras), 1)
            top.errorbar(x + dx, [r[f"sf_{e}"] for r in chi2], [r[f"stat_{e}"] for r in chi2], fmt="o", ms=3,
                         label=e)
        top.set_ylabel("scale factor")
        top.set_title(f"working point {wp}", fontsize=11)
        top.legend(fontsize=8, frameon=False, ncol=min(len(eras) + 1, 5))
        bottom.bar(x, [r["pvalue"] for r in chi2], color="#9ecae1")
        bottom.axhline(0.01, color="#e6550d", lw=1)
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("χ² p-value")
        bottom.set_xlabel("bin")
        bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
