"""Assemble the calibration's final outputs from the per-variant tables of a plan.

``combine_all`` writes, under the plan's combined folder, the nominal tables with systematics (and one
sub-folder ``wp/<name>/`` per working point and ``methods/<name>/`` per method or product of methods),
and the ROC points; ``prep_reports`` the cut flows (nominal and per method) and the list of inputs left out.
:func:`calibflow.export.publish.export_all` then writes every export and the report, and publishes them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from calibflow import __version__
from calibflow.config import config_chain, load_document
from calibflow.plan import Plan
from calibflow.tables.bootstrap import sample_correlation
from calibflow.tables.covariance import TableCovariance, covariances, table_seed
from calibflow.tables.covariance import write_h5 as write_covariances
from calibflow.tables.products import product_rows
from calibflow.tables.roc import roc_rows
from calibflow.tables.rows import Row, read_csv, write_csv
from calibflow.tables.systematics import Runs, signed_shifts
from calibflow.tables.write import EFFICIENCIES, ROC, SCALE_FACTORS, combine_tables, write_master
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


def base_folders(plan: Plan) -> list[tuple[str, str]]:
    """(variant, output folder) of the nominal calibration, every working point and every method."""
    out = plan.combined_dir()
    cfg = plan.nominal_config
    wps = [(wp, os.path.join(out, "wp", wp[len(WP_PREFIX) :])) for wp in working_point_variants(cfg)]
    methods = [(m, os.path.join(out, "methods", m[len(METHOD_PREFIX) :])) for m in method_variants(cfg)]
    return [(NOMINAL, out), *wps, *methods]


def product_folders(plan: Plan) -> list[tuple[str, str, str]]:
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
        "config_sha256": plan.config_sha256(),
        "config": cfg.model_dump(mode="json", by_alias=True),
        "variant": variant,
        "systematic_runs": systematic_variants(cfg),
        "inputs": inputs,
        "excluded_files": plan.with_variant(variant).excluded_files(),
        "table_key": plan.with_variant(variant).table_key(),
        "combined_key": plan.combined_key(),
        **({"limits": plan.limits.describe()} if plan.limits else {}),  # a quick try (calibflow run --limit)
    }


def varied_dirs(plan: Plan, base: str) -> dict[str, str]:
    """Per systematic run of ``base`` (a variant: nominal, working point or method), its table folder."""
    return {s: plan.with_variant(join(base, s)).table_dir() for s in systematic_variants(plan.nominal_config)}


def sample_sides(plan: Plan, base: str) -> dict[str, str]:
    """Each sample's role (data, mc) in ``base``'s config."""
    return {n: s.role for n, s in plan.with_variant(base).config.samples.items()}


def table_covariances(plan: Plan, base: str, folder: str) -> list[TableCovariance]:
    """The covariance of every table of the combined ``folder`` of ``base`` (:mod:`calibflow.tables.covariance`),
    the systematic shifts from the runs' own tables, the statistical correlation of counted samples with
    ``event_id`` by the bootstrap over events (seeded from the table key)."""
    cfg = plan.nominal_config
    runs = varied_dirs(plan, base)
    rows, shifts = {}, {}
    for name, keys, value in ((EFFICIENCIES, ("sample", "bin"), "efficiency"), (SCALE_FACTORS, ("data", "bin"), "scale_factor")):
        rows[name] = _rows(os.path.join(folder, name))
        varied = {run: _rows(os.path.join(d, name)) for run, d in runs.items()} if rows[name] else {}
        shifts[name] = signed_shifts(rows[name], Runs(varied, cfg.systematics.sources, cfg.systematics.combine,
                                                      sample_sides(plan, base)), value, keys)
    variant = plan.with_variant(base)
    seeds = {s: table_seed(variant.table_key(), f"bootstrap_{s}") for s in variant.config.samples}
    corr = {s: rho for s in variant.config.samples if (rho := sample_correlation(variant, s, seeds[s])) is not None}
    return covariances(rows[EFFICIENCIES], shifts[EFFICIENCIES], rows[SCALE_FACTORS], shifts[SCALE_FACTORS],
                       [s.name for s in cfg.systematics.sources], corr)


def _rows(path: str) -> list[Row]:
    """The rows of the table ``path`` (none where it is not: no scale factors without simulation)."""
    return read_csv(path) if os.path.exists(path) else []


def combine_all(plan: Plan) -> None:
    """Combined tables and ROC points of every base variant (the master tables, which record the exact
    config, are written at export: :func:`write_masters`)."""
    cfg = plan.nominal_config
    out_dir = plan.combined_dir()
    for base, folder in base_folders(plan):
        varied = varied_dirs(plan, base)
        combine_tables(folder, plan.with_variant(base).table_dir(), varied, cfg.systematics.sources,
                       cfg.systematics.combine, sample_sides(plan, base))
    for name, folder, _ in product_folders(plan):
        members = cfg.products[name]
        for table, value, keys in ((EFFICIENCIES, "efficiency", ("sample", "bin")),
                                   (SCALE_FACTORS, "scale_factor", ("data", "mc", "bin"))):
            paths = [os.path.join(out_dir, "methods", m, table) for m in members]
            if all(os.path.exists(p) for p in paths):  # no scale factors without simulation
                write_csv(os.path.join(folder, table), product_rows([read_csv(p) for p in paths], value, keys, members))
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


def cutflow_rows(plan: Plan, sample: str) -> list[dict[str, Any]]:
    """The cut flow of ``sample`` in ``plan``'s variant (its prepared files' cut flows summed): one row per
    stage with ``stage``, ``unit`` (events, pairs or candidates), ``entries`` left after it and the stage's
    ``efficiency`` (empty where the unit changes)."""
    from calibflow.prep.prepare import merged_cutflow
    from calibflow.prep.spec import read_unit

    preps = [plan.prep_path(sample, i) for i in range(len(plan.input_files(sample))) if not plan.is_excluded(sample, i)]
    flow = merged_cutflow(preps)
    unit = read_unit(flow)
    rows: list[dict[str, Any]] = []
    prev = 0
    for stage, n in flow.items():
        unit = "pairs" if stage == "pairs" else unit
        rows.append({"stage": stage, "unit": unit, "entries": n,
                     "efficiency": n / prev if prev and stage not in ("read", "pairs") else ""})
        prev = n
    return rows


def cutflow_paths(plan: Plan, out_dir: str) -> dict[str, dict[str, str]]:
    """Per variant with published cut flows (the nominal one, every method), ``cutflow_<sample>.csv`` per
    sample: in ``out_dir``, and in ``methods/<name>/`` for a method (which may change the selection or the
    pairing). Products of methods have none of their own."""
    folders = [(NOMINAL, out_dir)] + [(m, os.path.join(out_dir, "methods", m[len(METHOD_PREFIX) :]))
                                      for m in method_variants(plan.nominal_config)]
    return {v: {s: os.path.join(folder, f"cutflow_{s}.csv") for s in plan.with_variant(v).config.samples}
            for v, folder in folders}


def prep_reports(plan: Plan, out_dir: str) -> list[str]:
    """The cut flows of :func:`cutflow_paths` (:func:`cutflow_rows`) and, if inputs were left out as bad,
    ``excluded_files.txt`` (sample, file, reason)."""
    from calibflow.io.store import atomic_path

    paths = []
    for variant, per_sample in cutflow_paths(plan, out_dir).items():
        for s, path in per_sample.items():
            write_csv(path, cutflow_rows(plan.with_variant(variant), s))
            paths.append(path)
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


CONFIG_COPY = "config.yaml"
"""Published copy of the exact config file the outputs come from."""
CONFIG_RESOLVED = "config_resolved.yaml"
"""Published with a config that has a ``base:``: the document the run used, its base chain applied."""


def resolved_text(path: str) -> str:
    """The YAML text of config ``path`` with its ``base:`` chain applied, headed by the chain's files."""
    import yaml

    head = "".join(f"# {'from' if i == 0 else 'base'}: {f}\n" for i, f in enumerate(config_chain(path)))
    return head + yaml.safe_dump(load_document(path), sort_keys=False, allow_unicode=True)


def write_masters(plan: Plan) -> list[str]:
    """The master table (JSON and HDF5, with :func:`metadata`; the HDF5 file with every table's covariance and,
    with ``outputs.replicas``, the scale factors' replicas, seeded from the table key) of every base folder, and
    ``config.yaml``, the config file's exact bytes, in the combined folder; returns the files."""
    import shutil

    from calibflow.io.store import atomic_path

    files = []
    for base, folder in base_folders(plan):
        extra = functools.partial(write_covariances, tables=table_covariances(plan, base, folder),
                                  replicas=plan.nominal_config.outputs.replicas, key=plan.with_variant(base).table_key())
        files += write_master(folder, metadata(plan, base), h5_extra=extra)
    copy = os.path.join(plan.combined_dir(), CONFIG_COPY)
    with atomic_path(copy) as tmp:
        shutil.copyfile(plan.config_path, tmp)
    if len(config_chain(plan.config_path)) == 1:
        return [*files, copy]
    resolved = os.path.join(plan.combined_dir(), CONFIG_RESOLVED)
    with atomic_path(resolved) as tmp, open(tmp, "w") as f:
        f.write(resolved_text(plan.config_path))
    return [*files, copy, resolved]
