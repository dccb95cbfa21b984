"""Exports of the combined tables and their publication under ``<result_dir>/<name>/``.

``export_tables`` writes the exports of one folder of combined tables: ``corrections.json`` (correctionlib),
``corrections.root`` (TH1D/TH2D), ``tables.md``, ``tables.tex`` and ``plots/``; ``export_all`` does it for
every folder of a plan, adds the report page, and ``publish`` copies the set with its ``manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from calibflow.binning.scheme import BinningScheme
from calibflow.config import CalibrationConfig, OutputsConfig, Variation, axis_label
from calibflow.export.report import write_report
from calibflow.io.store import atomic_path
from calibflow.plan import Plan
from calibflow.tables.assemble import (
    EXCLUDED_FILES,
    base_folders,
    prep_reports,
    product_folders,
    write_masters,
)
from calibflow.tables.rows import Row, read_csv
from calibflow.tables.write import CORRECTIONS, EFFICIENCIES, ROC, ROOT_FILE, SCALE_FACTORS

MANIFEST = "manifest.json"


class VariableLabel(NamedTuple):
    """How a binning variable is shown: ``label`` (LaTeX allowed) and ``unit`` (empty: none)."""

    label: str
    unit: str

    @property
    def axis(self) -> str:
        """``label [unit]``."""
        return axis_label(self.label, self.unit)


def variable_labels(cfg: CalibrationConfig) -> dict[str, VariableLabel]:
    """Label and unit of every binning variable of ``cfg``."""
    return {v.name: VariableLabel(v.display, v.display_unit) for v in cfg.binning.variables}


def _categories(rows: Sequence[Row], sources: Sequence[Variation]) -> dict[str, dict[int, float]]:
    def col(f) -> dict[int, float]:
        return {r["bin"]: float(f(r)) for r in rows}

    cats = {
        "nominal": col(lambda r: r["scale_factor"]),
        "up": col(lambda r: r["scale_factor"] + r["total_up"]),
        "down": col(lambda r: r["scale_factor"] - r["total_down"]),
        "statUp": col(lambda r: r["scale_factor"] + r["err_up"]),
        "statDown": col(lambda r: r["scale_factor"] - r["err_down"]),
        "systUp": col(lambda r: r["scale_factor"] + r["syst"]),
        "systDown": col(lambda r: r["scale_factor"] - r["syst"]),
    }
    for src in sources:
        for suffix in ("Up", "Down"):
            cats[f"{src.name}{suffix}"] = col(lambda r, k=f"{src.name}{suffix}": r[k])
    return cats


def export_tables(
    out_dir: str, scheme: BinningScheme, name: str, outputs: OutputsConfig, sources: Sequence[Variation],
    labels: Mapping[str, VariableLabel] | None = None,
) -> list[str]:
    """Exports of the combined tables in ``out_dir``: correctionlib, ROOT, Markdown, LaTeX, plots.
    ``labels``: per binning variable its label and unit (default: the name, no unit)."""
    labels = {v: labels[v] if labels and v in labels else VariableLabel(v, "") for v in scheme.variables}
    from calibflow.export.correctionlib import build_correction, write_correction_set
    from calibflow.export.root import histograms, write_root
    from calibflow.export.text import table_lines, write_text_tables

    written = []
    eff = read_csv(os.path.join(out_dir, EFFICIENCIES))
    sf = read_csv(os.path.join(out_dir, SCALE_FACTORS))
    datas = sorted({r["data"] for r in sf})

    def cname(data: str, rows: Sequence[Row]) -> str:
        return f"{name}_{data}_over_{rows[0]['mc']}" if len(datas) > 1 else name

    if outputs.correctionlib and sf:
        corrections = []
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            corrections.append(build_correction(cname(data, rows), scheme, _categories(rows, sources), flow=outputs.flow))
        path = os.path.join(out_dir, CORRECTIONS)
        write_correction_set(path, corrections, description=f"calibflow scale factors of {name}")
        written.append(path)
    if outputs.root and len(scheme.variables) <= 2:
        hists = {}
        for sample in sorted({r["sample"] for r in eff}):
            rows = [r for r in eff if r["sample"] == sample]
            hists.update(histograms(scheme, f"eff_{sample}", {r["bin"]: r["efficiency"] for r in rows},
                                    {r["bin"]: max(r["total_down"], r["total_up"]) for r in rows}))
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            hists.update(histograms(scheme, f"sf_{data}", {r["bin"]: r["scale_factor"] for r in rows},
                                    {r["bin"]: max(r["total_down"], r["total_up"]) for r in rows}))
        path = os.path.join(out_dir, ROOT_FILE)
        write_root(path, hists)
        written.append(path)
    variables = list(scheme.variables)
    if outputs.markdown or outputs.latex:
        eff_cols = [("efficiency", "efficiency", "total_down", "total_up")]
        sf_cols = [("scale factor", "scale_factor", "total_down", "total_up"), ("stat.", "scale_factor", "err_down", "err_up")]
        for latex, ext, wanted in ((False, "md", outputs.markdown), (True, "tex", outputs.latex)):
            if not wanted:
                continue
            sections = [(f"efficiency, {s}", table_lines([r for r in eff if r["sample"] == s], variables, eff_cols, latex))
                        for s in sorted({r["sample"] for r in eff})]
            sections += [(f"scale factor, {d}", table_lines([r for r in sf if r["data"] == d], variables, sf_cols, latex))
                         for d in datas]
            path = os.path.join(out_dir, f"tables.{ext}")
            write_text_tables(path, sections, latex)
            written.append(path)
    if outputs.plots:
        written += _plots(out_dir, variables, eff, sf, name)
    return written


def _plots(out_dir: str, variables: Sequence[str], eff: Sequence[Row], sf: Sequence[Row], name: str) -> list[str]:
    from calibflow.export.figures import plot_efficiency_vs, plot_map

    written = []
    for var in variables:
        others = [v for v in variables if v != var]
        path = os.path.join(out_dir, "plots", f"efficiency_vs_{var}.png")
        plot_efficiency_vs(eff, var, others, path, title=name, ratios=sf)
        written.append(path)
    if len(variables) == 2 and sf:
        for data in sorted({r["data"] for r in sf}):
            path = os.path.join(out_dir, "plots", f"scale_factor_map_{data}.png")
            plot_map([r for r in sf if r["data"] == data], variables[0], variables[1], "scale_factor", path,
                     title=f"{name}: {data}")
            written.append(path)
    return written


def publish(out_dir: str, workdir: str, key: str, files: Sequence[str], config: str | None = None) -> list[str]:
    """Copy ``files`` (under ``out_dir``) to ``workdir`` and record ``key`` (and the ``config`` path they
    come from) in manifest.json last."""
    old = _manifest(workdir).get("files", [])
    published = []
    for src in files:
        dst = os.path.join(workdir, os.path.relpath(src, out_dir))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        published.append(dst)
    with atomic_path(os.path.join(workdir, MANIFEST)) as tmp, open(tmp, "w") as f:
        json.dump({"key": key, "config": config, "files": [os.path.relpath(p, workdir) for p in published]}, f,
                  indent=1)
    for rel in set(old) - {os.path.relpath(p, workdir) for p in published}:
        stale = os.path.join(workdir, rel)
        if os.path.isfile(stale):
            os.remove(stale)
    return published


def _manifest(workdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(workdir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_published(workdir: str, key: str) -> bool:
    """Whether ``workdir`` holds the published outputs of ``key`` (manifest and every file)."""
    manifest = _manifest(workdir)
    return bool(manifest) and manifest.get("key") == key and all(os.path.exists(os.path.join(workdir, p)) for p in manifest["files"])



def export_all(plan: Plan) -> list[str]:
    """Every export, the report, and publication; returns the published paths."""
    cfg = plan.nominal_config
    out = plan.combined_dir()
    files: list[str] = prep_reports(plan, out) + write_masters(plan)
    for base, folder in [*base_folders(plan), *[(v, f) for _, f, v in product_folders(plan)]]:
        scheme = plan.with_variant(base).load_scheme()
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".csv", ".json", ".h5"))]
        files += export_tables(folder, scheme, cfg.outputs.correction_name or cfg.name, cfg.outputs,
                               cfg.systematics.sources, variable_labels(plan.with_variant(base).config))
    if cfg.roc:
        roc = os.path.join(out, ROC)
        if cfg.outputs.plots:
            from calibflow.export.figures import plot_roc

            rows = read_csv(roc)
            for r in rows:
                r["label"] = "inclusive" if r["bin"] == "inclusive" else f"bin {r['bin']}"
            path = os.path.join(out, "plots", "roc.png")
            plot_roc(rows, path, title=f"{cfg.name}: {cfg.roc.signal} vs {cfg.roc.background}")
            files.append(path)
    files = sorted(set(files))
    if cfg.outputs.report:
        summary = [cfg.description, f"systematic sources: {', '.join(s.name for s in cfg.systematics.sources) or 'none'}"]
        n_bad = sum(len(v) for v in plan.excluded_files().values())
        summary += [f"{n_bad} bad input file(s) left out: see {EXCLUDED_FILES}"] if n_bad else []
        files += write_report(out, f"calibflow: {cfg.name}", files, summary)
    return publish(out, plan.workdir, plan.export_key(), sorted(set(files)), config=plan.config_path)
