"""Assemble the calibration's final outputs from the per-variant tables of a plan.

``combine_all`` writes, under the plan's combined folder, the nominal tables with systematics (and one
sub-folder ``wp/<name>/`` per working point), the master tables and the ROC points; ``export_all``
writes every export and the report, then publishes them under ``<result_dir>/<name>/``.
"""

from __future__ import annotations

import os
from typing import Any

from calibflow import __version__
from calibflow.outputs import (
    EFFICIENCIES,
    ROC,
    combine_tables,
    export_tables,
    publish,
    write_master,
    write_report,
)
from calibflow.plan import Plan
from calibflow.roc import roc_rows
from calibflow.tables import read_csv, write_csv
from calibflow.variants import (
    INCLUSIVE,
    NOMINAL,
    WP_PREFIX,
    join,
    systematic_variants,
    working_point_variants,
)


def _bases(plan: Plan) -> list[tuple[str, str]]:
    """(variant, output folder) of the nominal pass criterion and of every working point."""
    out = plan.combined_dir()
    wps = working_point_variants(plan.nominal_config)
    return [(NOMINAL, out)] + [(wp, os.path.join(out, "wp", wp[len(WP_PREFIX) :])) for wp in wps]


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
        "table_key": plan.with_variant(variant).table_key(),
        "combined_key": plan.combined_key(),
    }


def combine_all(plan: Plan) -> None:
    """Combined tables, master tables and ROC points of every base variant."""
    cfg = plan.nominal_config
    for base, folder in _bases(plan):
        varied = {s: plan.with_variant(join(base, s)).table_dir() for s in systematic_variants(cfg)}
        combine_tables(folder, plan.with_variant(base).table_dir(), varied, cfg.systematics.sources,
                       cfg.systematics.combine)
        write_master(folder, metadata(plan, base))
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


def export_all(plan: Plan) -> list[str]:
    """Every export, the report, and publication; returns the published paths."""
    cfg = plan.nominal_config
    out = plan.combined_dir()
    files: list[str] = []
    for base, folder in _bases(plan):
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
        files += write_report(out, f"calibflow: {cfg.name}", files, summary)
    return publish(out, plan.workdir, plan.export_key(), files)
