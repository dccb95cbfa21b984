"""The KDE config and its steps, as functions the tasks (``tasks/kde.py``) call: toy inputs, templates from
files, and the cut-scan closure of resampled and transformed simulation.

A KDE config (YAML) has ``aliases``; ``toys`` (generated inputs by name, from :mod:`calibflow.toys.registry`);
``templates`` (name -> files, tree, :class:`~calibflow.kde.template.TemplateSpec`); ``closure`` (name -> the
data and simulation templates, the simulation tuples to resample, identity and kinematic expressions, the
kinematic bin edges and the PID thresholds). A file entry ``toy:<name>`` stands for the files of that toy
(``<out_dir>/toys/<name>_<i>.root``); other entries are paths or globs relative to the config's folder.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
from pydantic import Field

from calibflow.kde.template import (
    VERSION,
    Template,
    TemplateSpec,
    _Strict,
    build_templates,
    candidates,
    evaluate,
    export_root,
    read_templates,
    write_templates,
)

TOY_PREFIX = "toy:"


class ToySource(_Strict):
    """Generated input files: generator name, candidates per file, number of files, data or simulation."""

    generator: str
    candidates: int = Field(gt=0)
    files: int = Field(default=1, gt=0)
    is_data: bool
    seed: int = 1
    options: dict[str, Any] = Field(default_factory=dict)


class TemplateSource(_Strict):
    """One template: the calibration tuples and the spec."""

    files: list[str] = Field(min_length=1)
    tree: str = "DecayTree"
    spec: TemplateSpec


class ClosureSpec(_Strict):
    """A cut-scan closure: resample and transform the simulation tuples ``files`` with the templates ``data``
    and ``simulation``, and compare cut efficiencies per kinematic bin with sWeighted counting on ``data``'s
    tuples. ``kinematics``: template kinematic axis -> expression on the simulation; ``edges``: axis -> bin
    edges."""

    data: str
    simulation: str
    files: list[str] = Field(min_length=1)
    tree: str = "DecayTree"
    selection: str | None = None
    identity: list[str] = Field(min_length=1)
    kinematics: dict[str, str]
    pid: str
    edges: dict[str, list[float]] = Field(min_length=1)
    thresholds: list[float] = Field(min_length=1)
    seed: int = 0


class KdeConfig(_Strict):
    """A KDE config (see the module docstring)."""

    aliases: dict[str, str] = Field(default_factory=dict)
    toys: dict[str, ToySource] = Field(default_factory=dict)
    templates: dict[str, TemplateSource] = Field(min_length=1)
    closure: dict[str, ClosureSpec] = Field(default_factory=dict)


def load_kde_config(path: str | os.PathLike[str]) -> KdeConfig:
    """Read a KDE config; ConfigError names the key to fix (unknown template or toy names included)."""
    from pydantic import ValidationError

    from calibflow.config import ConfigError, format_loc, load_yaml

    try:
        cfg = KdeConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in exc.errors())) from None
    for where, files in [*((f"templates.{n}", t.files) for n, t in cfg.templates.items()),
                         *((f"closure.{n}", c.files) for n, c in cfg.closure.items())]:
        for f in files:
            if f.startswith(TOY_PREFIX) and f[len(TOY_PREFIX):] not in cfg.toys:
                raise ConfigError(f"{path}: {where}.files: no toy {f[len(TOY_PREFIX):]!r}")
    for name, c in cfg.closure.items():
        for key in ("data", "simulation"):
            if getattr(c, key) not in cfg.templates:
                raise ConfigError(f"{path}: closure.{name}.{key}: no template {getattr(c, key)!r}")
    return cfg


def toy_files(out_dir: str | os.PathLike[str], name: str, toy: ToySource) -> list[str]:
    """Paths of the files of toy ``name``."""
    return [os.path.join(out_dir, "toys", f"{name}_{i}.root") for i in range(toy.files)]


def write_toy(out_dir: str | os.PathLike[str], name: str, toy: ToySource) -> list[str]:
    """Generate the files of toy ``name`` (file ``i`` with seed ``seed + i``); their paths."""
    from calibflow.io.store import atomic_path
    from calibflow.toys.registry import write_toy_file

    paths = toy_files(out_dir, name, toy)
    for i, path in enumerate(paths):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            write_toy_file(tmp, toy.candidates, toy.is_data, toy.seed + i, toy.generator, **toy.options)
    return paths


def resolve_files(config_path: str | os.PathLike[str], cfg: KdeConfig, entries: list[str],
                  out_dir: str | os.PathLike[str]) -> list[str]:
    """The files of ``entries``: toys' files, and globs expanded relative to the config's folder, sorted."""
    from calibflow.config import ConfigError

    base = os.path.dirname(os.path.abspath(config_path))
    out: list[str] = []
    for entry in entries:
        if entry.startswith(TOY_PREFIX):
            out += toy_files(out_dir, entry[len(TOY_PREFIX):], cfg.toys[entry[len(TOY_PREFIX):]])
            continue
        matches = sorted(glob.glob(entry if os.path.isabs(entry) else os.path.join(base, entry)))
        if not matches:
            raise ConfigError(f"{config_path}: files: nothing matches {entry!r}")
        out += matches
    return out


def input_identity(config_path: str | os.PathLike[str], cfg: KdeConfig, entries: list[str]) -> list[Any]:
    """What the inputs of ``entries`` are, for content keys: a toy's spec (its files need not exist yet), or
    every matching file's path, size and modification time."""
    from calibflow.hashing import file_identity

    out: list[Any] = []
    for entry in entries:
        if entry.startswith(TOY_PREFIX):
            out.append(cfg.toys[entry[len(TOY_PREFIX):]].model_dump())
        else:
            out += [file_identity(f) for f in resolve_files(config_path, cfg, [entry], "")]
    return out


def template_key(config_path: str | os.PathLike[str], cfg: KdeConfig, name: str) -> str:
    """Content key of template ``name``: its spec, tree, the aliases and its inputs' identities."""
    from calibflow.hashing import content_key

    source = cfg.templates[name]
    return content_key("kde-template", VERSION, source.spec.model_dump(), source.tree, cfg.aliases,
                       input_identity(config_path, cfg, source.files))


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


def source_columns(config_path: str | os.PathLike[str], cfg: KdeConfig, name: str,
                   out_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The columns template ``name`` needs, read from its inputs."""
    source = cfg.templates[name]
    spec = source.spec
    texts = [a.expr for a in spec.axes.values()] + [spec.weight or "", spec.alt_weight or "", spec.selection or ""]
    return read_columns_of(resolve_files(config_path, cfg, source.files, out_dir), source.tree, texts, cfg.aliases)


def build_template_file(config_path: str | os.PathLike[str], name: str, out_dir: str | os.PathLike[str],
                        h5_path: str | os.PathLike[str], root_path: str | os.PathLike[str] | None = None
                        ) -> dict[str, Template]:
    """Build template ``name`` with its variants; write HDF5 (meta: name, key, files, spec) and ROOT (<= 3 axes)."""
    cfg = load_kde_config(config_path)
    source = cfg.templates[name]
    templates = build_templates(source_columns(config_path, cfg, name, out_dir), source.spec, cfg.aliases)
    meta = {"name": name, "key": template_key(config_path, cfg, name),
            "files": resolve_files(config_path, cfg, source.files, out_dir), "spec": source.spec.model_dump()}
    write_templates(h5_path, templates, meta)
    if root_path is not None and len(templates["nominal"].axes) <= 3:
        export_root(root_path, templates)
    return templates


def run_closure(config_path: str | os.PathLike[str], name: str, out_dir: str | os.PathLike[str],
                data_file: str, simulation_file: str, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Closure ``name``: resample and transform its simulation with the templates in ``data_file`` and
    ``simulation_file``, compare with sWeighted counting on the data template's inputs (its selection and
    weights), write ``closure.csv/json/png`` to ``folder``; the summary (pulls, rank correlation)."""
    from calibflow.kde.sample import identity_expression, key_of, resample, transform, uniforms
    from calibflow.kde.validate import closure_table, rank_correlation, summary, write_closure

    cfg = load_kde_config(config_path)
    c = cfg.closure[name]
    data_t, _ = read_templates(data_file)
    sim_t, _ = read_templates(simulation_file)
    nominal = data_t["nominal"]
    kin_names = [a.name for a in nominal.kinematics]
    spec = cfg.templates[c.data].spec
    points, weights, _ = candidates(source_columns(config_path, cfg, c.data, out_dir), spec, cfg.aliases)
    data = dict(zip([nominal.pid.name, *kin_names], points.T, strict=True))
    ids = [identity_expression(t, cfg.aliases, f"closure.{name}.identity[{j}]") for j, t in enumerate(c.identity)]
    cols = read_columns_of(resolve_files(config_path, cfg, c.files, out_dir), c.tree,
                           [*c.kinematics.values(), c.pid, c.selection or ""], cfg.aliases,
                           frozenset().union(*(i.branches for i in ids)))
    keep = evaluate(c.selection, cols, cfg.aliases, f"closure.{name}.selection") != 0 if c.selection else slice(None)
    sim = {k: evaluate(c.kinematics[k], cols, cfg.aliases, f"closure.{name}.kinematics.{k}")[keep] for k in kin_names}
    pid = evaluate(c.pid, cols, cfg.aliases, f"closure.{name}.pid")[keep]
    n = len(next(iter(cols.values())))
    id_values = [np.broadcast_to(np.asarray(i.evaluate(cols)), (n,))[keep] for i in ids]
    kin = np.column_stack([sim[k] for k in kin_names])
    columns = {"simulation": pid,
               "resampled": resample(nominal, kin, uniforms(id_values, key_of(c.seed, f"{nominal.pid.name}_resampled"))),
               "transformed": transform(sim_t["nominal"], nominal, pid, kin)}
    rows = closure_table(data, weights, data[nominal.pid.name], sim, columns, c.edges, c.thresholds)
    extra = {"rank_correlation_transformed": rank_correlation(columns["transformed"], pid),
             "rank_correlation_resampled": rank_correlation(columns["resampled"], pid),
             "simulated_candidates": len(pid), "data_candidates": len(weights)}
    write_closure(folder, rows, list(columns), extra)
    return {"summary": summary(rows, list(columns)), **extra}
