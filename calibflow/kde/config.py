"""The KDE config (YAML): its name, ``aliases``; ``toys`` (generated inputs by name, from
:mod:`calibflow.toys.registry`); ``templates`` (name -> files, tree, :class:`~calibflow.kde.template.TemplateSpec`);
``closure`` (name -> the data and simulation templates, the simulation tuples to resample, identity and kinematic
expressions, the kinematic bin edges and the PID thresholds). A file entry ``toy:<name>`` stands for the files of
that toy (``<result_dir>/<name>/toys/<toy>_<i>.root``); other entries are paths or globs relative to the
config's folder. Keys and paths of a config's outputs: :mod:`calibflow.kde.plan`.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from calibflow.config import MAX_NAME
from calibflow.kde.template import TemplateSpec, _Strict

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
    edges (units of the axis); ``thresholds``: PID cut values."""

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
    """A KDE config (see the module docstring); ``name`` names its result folder ``<result_dir>/<name>``."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=MAX_NAME)
    description: str = ""
    aliases: dict[str, str] = Field(default_factory=dict)
    toys: dict[str, ToySource] = Field(default_factory=dict)
    templates: dict[str, TemplateSource] = Field(min_length=1)
    closure: dict[str, ClosureSpec] = Field(default_factory=dict)


def is_kde_config(path: str | os.PathLike[str]) -> bool:
    """Whether the YAML at ``path`` is a KDE config (``templates``, no ``samples``) rather than a calibration's;
    False when it cannot be read (the calibration loader then names the problem)."""
    from calibflow.config import ConfigError, load_yaml

    try:
        data = load_yaml(path)
    except (ConfigError, OSError):
        return False
    return isinstance(data, dict) and "templates" in data and "samples" not in data


def load_kde_config(path: str | os.PathLike[str]) -> KdeConfig:
    """Read a KDE config; ConfigError names the key to fix (unknown template or toy names included)."""
    from pydantic import ValidationError

    from calibflow.config import ConfigError, format_loc, load_yaml, suggestion

    try:
        cfg = KdeConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in exc.errors())) from None
    for where, files in [*((f"templates.{n}", t.files) for n, t in cfg.templates.items()),
                         *((f"closure.{n}", c.files) for n, c in cfg.closure.items())]:
        for f in files:
            toy = f[len(TOY_PREFIX):]
            if f.startswith(TOY_PREFIX) and toy not in cfg.toys:
                raise ConfigError(f"{path}: {where}.files: no toy {toy!r}{suggestion(toy, cfg.toys, 'toys')}")
    for name, c in cfg.closure.items():
        for key in ("data", "simulation"):
            t = getattr(c, key)
            if t not in cfg.templates:
                raise ConfigError(f"{path}: closure.{name}.{key}: no template {t!r}"
                                  f"{suggestion(t, cfg.templates, 'templates')}")
    return cfg
