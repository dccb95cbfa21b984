"""Assemble the calibration's final outputs from the per-variant tables of a plan.

``combine_all`` writes, under the plan's combined folder, the nominal tables with systematics (and one
sub-folder ``wp/<name>/`` per working point and ``methods/<name>/`` per method or product of methods),
the master tables and the ROC points; ``export_all``
writes every export and the report, then publishes them under ``<result_dir>/<name>/``.
"""

from __future__ import annotations

import os
from typing import Any

from calibflow import __version__
from calibflow.outputs import (
    EFFICIENCIES,
    ROC,
    SCALE_FACTORS,
    combine_tables,
    export_tables,
    publish,
    write_master,
    write_report,
)
from calibflow.plan import Plan
from calibflow.products import product_rows
from calibflow.roc import roc_rows
from calibflow.tables import read_csv, write_csv
from calibflow.variants import (
    INCLUSIVE,
    METHOD_PREFIX,
    NOMINAL,
    WP_PREFIX,
    join,
    method_variants,
    systematic_variants,
    working_point_variants,
)


def _bases(plan: Plan) -> list[tuple[str, str]]:
    """(variant, output folder) of the nominal calibration, every working point and every method."""
    out = plan.combined_dir()
    cfg = plan.nominal_config
    wps = [(wp, os.path.join(out, "wp", wp[len(WP_PREFIX) :])) for wp in working_point_variants(cfg)]
    methods = [(m, os.path.join(out, "methods", m[len(METHOD_PREFIX) :])) for m in method_variants(cfg)]
    return [(NOMINAL, out), *wps, *methods]


def _products(plan: Plan) -> list[tuple[str, str, str]]:
    """(product name, output folder, variant of its first method) of every product of methods."""
    out = plan.combined_dir()
    return [(name, os.path.join(out, "methods", name), f"{METHOD_PREFIX}{members[0]}")
            for name, members in plan.nominal_config.products.items()]


def metadata(plan: Plan, variant: str) -> dict[str, Any]:
    """What a master table was made from: config, variants, input files, keys, software version."""
    cfg = plan.nominal_config
    inputs = {s: [plan.input_identity(s, i) for i in range(len(plan.input_files(s)))] for s in cfg.samples}
    return {
        "calibflow_version": __version__,
        "config_path": plan.config_path,
        "config": cfg.model_dump(mode="json", by_alias=True),
        "variant": variant,
        "systematic_runs": systematic_variants(cfg),
        "inputs": inputs,
        "excluded_files": plan.with_variant(variant).excluded_files(),
        "table_key": plan.with_variant(variant).table_key(),
        "combined_key": plan.combined_key(),
    }


def combine_all(plan: Plan) -> None:
    """Combined tables, master tables and ROC points of every base variant."""
    cfg = plan.nominal_config
    out_dir = plan.combined_dir()
    for base, folder in _bases(plan):
        varied = {s: plan.with_variant(join(base, s)).table_dir() for s in systematic_variants(cfg)}
        combine_tables(folder, plan.with_variant(base).table_dir(), varied, cfg.systematics.sources,
                       cfg.systematics.combine)
        write_master(folder, metadata(plan, base))
    for name, folder, _ in _products(plan):
        members = cfg.products[name]
        for table, value, keys in ((EFFICIENCIES, "efficiency", ("sample", "bin")),
                                   (SCALE_FACTORS, "scale_factor", ("data", "mc", "bin"))):
            tables = [read_csv(os.path.join(out_dir, "methods", m, table)) for m in members]
            write_csv(os.path.join(folder, table), product_rows(tables, value, keys, members))
    if cfg.roc:
        rows = []
        for inclusive in (False, True):
            per_wp = {
                wp[len(WP_PREFIX) :]: read_csv(
                    os.path.join(plan.with_variant(join(wp, INCLUSIVE if inclusive else None)).table_dir(), EFFICIENCIES)
                )
                for wp in working_point_variants(cfg)
            }
            rows += roc_rows(per_wp, cfg.roc.signal, cfg.roc.background, binned=not inclusive)
        write_csv(os.path.join(plan.combined_dir(), ROC), rows)


EXCLUDED_FILES = "excluded_files.txt"
"""Published list of the inputs left out as bad files (``calibflow run --skip-bad-files``)."""


def prep_reports(plan: Plan, out_dir: str) -> list[str]:
    """``cutflow_<sample>.csv`` per sample (the cut flows of its prepared files summed: entries left after
    each stage) and, if inputs were left out as bad, ``excluded_files.txt`` (sample, file, reason)."""
    from calibflow.io.store import atomic_path
    from calibflow.prep import merged_cutflow

    paths = []
    for s in plan.config.samples:
        preps = [plan.prep_path(s, i) for i in range(len(plan.input_files(s))) if not plan.is_excluded(s, i)]
        flow = merged_cutflow(preps)
        unit = "events" if "pairs" in flow else "candidates"
        rows, prev = [], 0
        for stage, n in flow.items():
            unit = "pairs" if stage == "pairs" else unit
            rows.append({"stage": stage, "unit": unit, "entries": n,
                         "efficiency": n / prev if prev and stage not in ("read", "pairs") else ""})
            prev = n
        paths.append(os.path.join(out_dir, f"cutflow_{s}.csv"))
        write_csv(paths[-1], rows)
    excluded = plan.excluded_files()
    if excluded:
        paths.append(os.path.join(out_dir, EXCLUDED_FILES))
        with atomic_path(paths[-1]) as tmp, open(tmp, "w") as f:
            f.write("# input files left out as bad (calibflow run --skip-bad-files): sample, file, reason\n")
            for s, entries in excluded.items():
                for e in entries:
                    reason = e["reason"].removeprefix(f"{e['file']}: ")
                    f.write(f"{s}\t{e['file']}\t{reason}\n")
    return paths


def export_all(plan: Plan) -> list[str]:
    """Every export, the report, and publication; returns the published paths."""
    cfg = plan.nominal_config
    out = plan.combined_dir()
    files: list[str] = prep_reports(plan, out)
    for base, folder in [*_bases(plan), *[(v, f) for _, f, v in _products(plan)]]:
        scheme = plan.with_variant(base).load_scheme()
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".csv", ".json", ".h5"))]
        files += export_tables(folder, scheme, cfg.outputs.correction_name or cfg.name, cfg.outputs,
                               cfg.systematics.sources)
    if cfg.roc:
        roc = os.path.join(out, ROC)
        if cfg.outputs.plots:
            from calibflow.plots import plot_roc

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
    return publish(out, plan.workdir, plan.export_key(), files)
