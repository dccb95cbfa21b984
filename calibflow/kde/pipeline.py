"""The steps of a KDE config (:mod:`calibflow.kde.config`), as functions the tasks (``tasks/kde.py``) call with
its :class:`~calibflow.kde.plan.KdePlan`: toy inputs, templates from files, and the cut-scan closure of
resampled and transformed simulation. The report page of the outputs: :mod:`calibflow.kde.report`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from calibflow.kde.plan import KdePlan
from calibflow.kde.template import (
    Template,
    build_templates,
    candidates,
    evaluate,
    export_root,
    read_templates,
    write_templates,
)


def write_toy(plan: KdePlan, name: str) -> list[str]:
    """Generate the files of toy ``name`` (file ``i`` with seed ``seed + i``); their paths."""
    from calibflow.io.store import atomic_path
    from calibflow.toys.registry import write_toy_file

    toy = plan.config.toys[name]
    paths = plan.toy_files(name)
    for i, path in enumerate(paths):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            write_toy_file(tmp, toy.candidates, toy.is_data, toy.seed + i, toy.generator, **toy.options)
    return paths


def read_columns_of(files: list[str], tree: str, texts: list[str], aliases: dict[str, str],
                    branches: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """The branches the expressions ``texts`` need and ``branches``, from ROOT (``tree``) or calibflow HDF5
    files, concatenated."""
    from calibflow.expr import referenced_branches

    names = sorted(referenced_branches([t for t in texts if t], aliases) | branches)
    parts = []
    for f in files:
        if f.endswith((".h5", ".hdf5")):
            from calibflow.io.store import read_columns

            parts.append(read_columns(f, names))
        else:
            import uproot

            with uproot.open(f) as root:
                parts.append(root[tree].arrays(names, library="np"))
    return {n: np.concatenate([p[n] for p in parts]) for n in names}


def source_columns(plan: KdePlan, name: str) -> dict[str, np.ndarray]:
    """The columns template ``name`` needs, read from its inputs."""
    source = plan.config.templates[name]
    spec = source.spec
    texts = [a.expr for a in spec.axes.values()] + [spec.weight or "", spec.alt_weight or "", spec.selection or ""]
    return read_columns_of(plan.files(source.files), source.tree, texts, plan.config.aliases)


def build_template_file(plan: KdePlan, name: str) -> dict[str, Template]:
    """Build template ``name`` with its variants; write its keyed HDF5 (meta: name, key, files, spec) and ROOT
    (<= 3 axes: uproot writes no THnD) files (:meth:`KdePlan.template_paths`)."""
    source = plan.config.templates[name]
    paths = plan.template_paths(name)
    templates = build_templates(source_columns(plan, name), source.spec, plan.config.aliases)
    meta = {"name": name, "key": plan.template_key(name), "files": plan.files(source.files),
            "spec": source.spec.model_dump()}
    write_templates(paths.h5, templates, meta)
    if len(templates["nominal"].axes) <= 3:
        export_root(paths.root, templates)
    return templates


def run_closure(plan: KdePlan, name: str) -> dict[str, Any]:
    """Closure ``name``: resample and transform its simulation with the keyed data and simulation templates,
    compare with sWeighted counting on the data template's inputs (its selection and weights), write
    ``closure.csv/json/png`` (:meth:`KdePlan.closure_paths`; the JSON also records the templates' keys);
    the summary (pulls, rank correlations, candidates)."""
    from calibflow.kde.sample import identity_expression, key_of, resample, transform, uniforms
    from calibflow.kde.validate import closure_table, plot_densities, rank_correlation, summary, write_closure

    cfg = plan.config
    c = cfg.closure[name]
    data_t, _ = read_templates(plan.template_paths(c.data).h5)
    sim_t, _ = read_templates(plan.template_paths(c.simulation).h5)
    nominal = data_t["nominal"]
    kin_names = [a.name for a in nominal.kinematics]
    spec = cfg.templates[c.data].spec
    points, weights, _ = candidates(source_columns(plan, c.data), spec, cfg.aliases)
    data = dict(zip([nominal.pid.name, *kin_names], points.T, strict=True))
    ids = [identity_expression(t, cfg.aliases, f"closure.{name}.identity[{j}]") for j, t in enumerate(c.identity)]
    cols = read_columns_of(plan.files(c.files), c.tree, [*c.kinematics.values(), c.pid, c.selection or ""],
                           cfg.aliases, frozenset().union(*(i.branches for i in ids)))
    keep = evaluate(c.selection, cols, cfg.aliases, f"closure.{name}.selection") != 0 if c.selection else slice(None)
    sim = {k: evaluate(c.kinematics[k], cols, cfg.aliases, f"closure.{name}.kinematics.{k}")[keep] for k in kin_names}
    pid = evaluate(c.pid, cols, cfg.aliases, f"closure.{name}.pid")[keep]
    n = len(next(iter(cols.values())))
    id_values = [np.broadcast_to(np.asarray(i.evaluate(cols)), (n,))[keep] for i in ids]
    kin = np.column_stack([sim[k] for k in kin_names])
    columns = {"simulation": pid,  # the order of validate.COLUMNS
               "resampled": resample(nominal, kin, uniforms(id_values, key_of(c.seed, f"{nominal.pid.name}_resampled"))),
               "transformed": transform(sim_t["nominal"], nominal, pid, kin)}
    rows = closure_table(data, weights, data[nominal.pid.name], sim, columns, c.edges, c.thresholds)
    extra = {"rank_correlation_transformed": rank_correlation(columns["transformed"], pid),
             "rank_correlation_resampled": rank_correlation(columns["resampled"], pid),
             "simulated_candidates": len(pid), "data_candidates": len(weights),
             "pid": nominal.pid.name, "templates": plan.closure_keys(name)}
    write_closure(plan.closure_dir(name), rows, list(columns), extra)
    plot_densities(plan.closure_paths(name)["densities"], data_t, sim_t["nominal"], c.edges)
    return {"summary": summary(rows, list(columns)), **extra}
