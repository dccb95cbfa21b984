"""The report page of a KDE config's outputs, ``report.html`` and ``report.md``, and the publication of every
output as one set (:func:`publish_outputs`, through :func:`calibflow.export.publish.publish`: the templates, the
closures' tables and figures and the report, with ``manifest.json``: the report key, the config, ``kind: kde``,
the closures' verdict lines, every file and its SHA-256). Paths in the page are relative to the work folder
(:attr:`KdePlan.work_dir`), whose layout the published set keeps.

Sections (ids stable): ``summary`` (one verdict per section), ``closure`` (per closure: the efficiency figure,
the PID densities, pulls per column and the rank correlation of the transform, the table per kinematic bin
and threshold), ``templates`` (inputs, weights, bandwidths, negative-weight clipping, files), ``config`` and
``outputs``. Built from the blocks and rendering of :mod:`calibflow.export.report`, so that it reads like a
calibration's report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from calibflow import __version__
from calibflow.export.report import (
    Cell,
    Code,
    Figure,
    Heading,
    Links,
    Measure,
    Section,
    Table,
    Text,
    count_text,
    decimals_for,
    pull_stats,
    render_html,
    render_markdown,
)
from calibflow.io.store import atomic_path
from calibflow.kde.plan import KdePlan
from calibflow.kde.validate import COLUMNS

PULL_LIMIT = 3.0
"""A resampled or transformed efficiency further than this many σ from the data flags its closure."""

HEADINGS = {"summary": "Summary", "closure": "Closure", "templates": "Templates", "config": "Config",
            "outputs": "Published files"}
"""Section id -> heading, in page order."""

MEANING = {"simulation": "as it is", "resampled": "drawn from the data template",
           "transformed": "simulation CDF → data quantile"}
"""What each simulated column is, under its name in the pull table."""


def _rel(plan: KdePlan, path: str) -> str:
    """``path`` relative to the work folder: its name in the published set."""
    return os.path.relpath(path, plan.work_dir)


def _bin_text(row: Mapping[str, Any]) -> str:
    """``p ∈ [0.3, 0.9)`` for the kinematic bin of a closure row."""
    names = [k[:-3] for k in row if k.endswith("_lo")]
    return ", ".join(f"{n} ∈ [{row[f'{n}_lo']:g}, {row[f'{n}_hi']:g})" for n in names)


def closure_section(plan: KdePlan) -> Section:
    """Per closure: figures, pull summary with rank correlations, the table; verdict per closure."""
    from calibflow.tables.rows import read_csv

    sec = Section("closure", "", heading=HEADINGS["closure"])
    lines, bad = [], False
    for name in plan.config.closure:
        paths = plan.closure_paths(name)
        rows = read_csv(paths["csv"])
        with open(paths["json"]) as f:
            info = json.load(f)
        c = plan.config.closure[name]
        pid = info.get("pid", c.pid)
        stats = {col: pull_stats(col, [r[f"{col}_pull"] for r in rows]) for col in COLUMNS}
        worst = {col: max((abs(p) for p in s.pulls), default=float("nan")) for col, s in stats.items()}
        ok = all(worst[col] < PULL_LIMIT for col in ("resampled", "transformed"))
        bad |= not ok
        rho = info["rank_correlation_transformed"]
        lines.append(f"{name}: {'closes' if ok else 'does not close'}: max |pull| resampled {worst['resampled']:.1f}, "
                     f"transformed {worst['transformed']:.1f} over {len(rows)} points (simulation as it is "
                     f"{worst['simulation']:.1f}); rank correlation of the transform {rho:.3f}")
        sec.blocks += [Heading(f"{name}: templates {c.data} (data) and {c.simulation} (simulation)"),
                       Text(f"{count_text(info['data_candidates'])} sWeighted data candidates, "
                            f"{count_text(info['simulated_candidates'])} simulated ({c.selection or 'all'}); "
                            f"efficiency of {pid} > threshold per bin of "
                            f"{', '.join(f'{k} {v}' for k, v in c.edges.items())}.", "note"),
                       Figure(_rel(plan, paths["png"]), f"{name}: efficiency of {pid} > threshold, data "
                              "(sWeighted counting) and simulation as it is, resampled and transformed; pulls below",
                              "wide"),
                       Figure(_rel(plan, paths["densities"]),
                              f"{name}: PID density of the data template (nominal and variations) and the simulation "
                              "template at the centre of each closure bin", "wide")]
        body = []
        for col in COLUMNS:
            s = stats[col]
            rank = info.get(f"rank_correlation_{col}")
            body.append([Cell(col, MEANING[col]), str(len(s.pulls)), f"{s.mean:+.2f}", f"{s.width:.2f}",
                         Cell(f"{worst[col]:.2f}", css="flag" if worst[col] >= PULL_LIMIT else ""),
                         f"{100 * sum(abs(p) < 2 for p in s.pulls) / max(len(s.pulls), 1):.0f} %",
                         "—" if rank is None else f"{rank:.3f}"])
        sec.blocks.append(Table(["column", "points", "mean pull", "pull width", "max |pull|", "|pull| < 2",
                                 f"rank correlation with simulated {pid}"], body,
                                "Pull = (simulated − data efficiency) / both statistical errors in quadrature, per "
                                "kinematic bin and threshold. The pulls of one bin are correlated across thresholds "
                                "(the same candidates). Rank correlation: Spearman's, over every simulated candidate."))
        sec.blocks += [Table(["bin", "threshold", "data", *(h for c in COLUMNS for h in (c, "pull"))],
                             [_closure_row(r) for r in rows],
                             f"Efficiency of {pid} > threshold with its statistical error; each simulated column's pull "
                             f"beside it (amber: |pull| ≥ {PULL_LIMIT:g}).", "grid"),
                       Links([(_rel(plan, paths["csv"]), _rel(plan, paths["csv"]), ""),
                              (_rel(plan, paths["json"]), _rel(plan, paths["json"]), "")])]
    sec.verdict = "\n".join(lines) or "no closure in the config"
    sec.level = "bad" if bad else "ok" if lines else "warn"
    return sec


def _closure_row(r: Mapping[str, Any]) -> list[Cell | Measure | str]:
    d = decimals_for([r["data_err"], *(r[f"{c}_err"] for c in COLUMNS)])
    out: list[Cell | Measure | str] = [Cell(_bin_text(r), css="head"), f"{r['threshold']:g}",
                                       Measure(r["data"], r["data_err"], r["data_err"], 0.0, d)]
    for c in COLUMNS:
        pull = r[f"{c}_pull"]
        css = "flag" if abs(pull) >= PULL_LIMIT else ""
        out += [Measure(r[c], r[f"{c}_err"], r[f"{c}_err"], 0.0, d), Cell(f"{pull:+.1f}", css=css)]
    return out


def templates_section(plan: KdePlan) -> Section:
    """Per template: inputs, weights, candidates, Kish's N, clipping, variants and its files; per axis its range,
    cells and bandwidth."""
    from calibflow.kde.template import read_templates

    sec = Section("templates", "", heading=HEADINGS["templates"])
    rows, axis_rows, warn, variants = [], [], [], {}
    for name, source in plan.config.templates.items():
        paths = plan.template_paths(name)
        templates, _ = read_templates(paths.h5)
        nominal = templates["nominal"]
        info = nominal.info
        spec = source.spec
        empty = int(info.get("empty_cells", 0))
        if empty:
            warn.append(f"{name}: {empty} kinematic cell(s) without positive density (given the PID density of "
                        "all cells together)")
        variants.update(dict.fromkeys(templates))
        links = [Cell(text, href=_rel(plan, p)) if os.path.exists(p) else Cell("—")
                 for text, p in (("HDF5", paths.h5), ("ROOT", paths.root))]
        rows.append([Cell(name, f"key {plan.template_key(name)}"),
                     Cell(", ".join(source.files), f"{len(plan.files(source.files))} file(s)"),
                     Cell(spec.weight or "1", f"alternative {spec.alt_weight}" if spec.alt_weight else ""),
                     spec.selection or "—", count_text(info.get("candidates", 0)), count_text(info.get("n_eff", 0)),
                     f"{100 * float(info.get('clipped_fraction', 0.0)):.2f} %", str(empty), ", ".join(templates),
                     *links])
        for i, (a, sigma) in enumerate(zip(nominal.axes, nominal.bandwidth, strict=True)):
            given = spec.axes[a.name].bandwidth
            rule = "fixed" if given is not None else f"{spec.rule} rule"
            axis_rows.append([name if i == 0 else "", f"{a.name}" + (" (PID)" if i == 0 else ""),
                              spec.axes[a.name].expr, f"[{a.lo:g}, {a.hi:g}]", str(a.bins), f"{a.width:.3g}",
                              f"{sigma:.3g} ({rule})", f"{a.width / sigma:.2f}", a.boundary])
    sec.blocks += [Table(["template", "inputs", "weight", "selection", "candidates", "Kish N_eff", "clipped",
                          "empty cells", "variants", "file", "export"], rows,
                         "Kish N_eff = (Σw)²/Σw², the effective size of the sWeighted sample; clipped: negative "
                         "density (from negative sWeights) set to 0 before the renormalisation per kinematic cell, "
                         "over the total; bandwidthDown/Up: every σ × 0.5 / × 2; sweightsUp/Down: the alternative "
                         "sWeights and their mirror about nominal. The HDF5 file holds every variant, the ROOT file "
                         "a TH1D/TH2D/TH3D per variant (up to 3 axes); kde/<template>.h5 is a copy under a fixed "
                         "name for apply configs."),
                   Heading("Axes and bandwidths"),
                   Table(["template", "axis", "expression", "range", "cells", "cell width", "Gaussian σ",
                          "cell / σ", "boundary"], axis_rows,
                         "σ: the fixed bandwidth, or Scott's/Silverman's rule with Kish's N_eff (docs/kde.md); the "
                         "grid errs by O((cell/σ)²): keep cell/σ at most 0.5. Units: those of the expressions.")]
    sec.verdict = "\n".join([f"{len(rows)} template(s) with variants {', '.join(variants)}", *warn])
    sec.level = "warn" if warn else "ok"
    return sec


def summary_section(plan: KdePlan, sections: Sequence[Section]) -> Section:
    """What ran and one verdict line per section."""
    cfg = plan.config
    sha = plan.config_sha256()
    sec = Section("summary", f"{cfg.name}: {len(cfg.templates)} template(s), {len(cfg.closure)} closure(s), "
                  f"calibflow {__version__}, config {sha[:12]}", heading=HEADINGS["summary"])
    shown = [s for s in sections if s.id != "outputs"]
    rows = [["KDE config", Cell(plan.config_path, href="#config")], ["config SHA-256", sha],
            ["description", cfg.description or "—"], ["calibflow", __version__], ["report key", plan.report_key()]]
    sec.blocks += [Links([(s.title, f"#{s.id}", s.verdict) for s in shown], [s.level for s in shown]),
                   Table(["", ""], rows, css="kv")]
    sec.level = max((s.level for s in sections), key=["ok", "warn", "bad"].index, default="ok")
    return sec


def published_files(plan: KdePlan) -> list[str]:
    """Every output file of the config (paths relative to the work folder, as published): the report,
    templates, closures."""
    cfg = plan.config
    files = [p for t in cfg.templates for p in plan.template_paths(t)]
    files += [p for c in cfg.closure for p in plan.closure_paths(c).values()]
    files = [plan.report_paths()[k] for k in ("html", "md")] + files
    return [_rel(plan, p) for p in files if os.path.exists(p) or p.endswith(("report.html", "report.md"))]


def write_report(plan: KdePlan) -> list[str]:
    """``report.md`` and ``report.html`` in the work folder; the closures' verdict lines (one per closure)."""
    with open(plan.config_path) as f:
        text = f.read()
    files = published_files(plan)
    body = [closure_section(plan), templates_section(plan),
            Section("config", f"{plan.config_path} ({len(text.splitlines())} lines)", blocks=[Code(text, "as run")],
                    heading=HEADINGS["config"]),
            Section("outputs", f"{len(files)} file(s) (listed in manifest.json)",
                    blocks=[Links([(f, f, "") for f in files])], heading=HEADINGS["outputs"])]
    sections = [summary_section(plan, body), *body]
    title = f"calibflow KDE report: {plan.config.name}"
    subtitle = plan.config.description or "PID templates by kernel density estimation, resampling and transform"
    paths = plan.report_paths()
    for key, page in (("md", render_markdown(title, subtitle, sections)), ("html", render_html(title, subtitle, sections))):
        with atomic_path(paths[key]) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
    return body[0].verdict.splitlines() if plan.config.closure else []


def publish_outputs(plan: KdePlan) -> list[str]:
    """Write the report and publish every output of the config as one set under the workdir (the calibration's
    publisher: a reader sees the previous set or this one, ``calibflow verify`` checks the SHA-256 in
    ``manifest.json``); the published paths (stable names under the workdir)."""
    from calibflow.export.publish import publish
    from calibflow.kde.plan import KIND

    closure = write_report(plan)
    files = [os.path.join(plan.work_dir, rel) for rel in published_files(plan)]
    return publish(plan.work_dir, plan.workdir, plan.report_key(), files, config=plan.config_path,
                   config_sha256=plan.config_sha256(), kind=KIND, closure=closure)
