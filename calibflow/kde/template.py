"""PID templates: the conditional density of a PID variable given kinematics, on a grid (open this first).

A template is built from weighted calibration candidates (sWeights, negative ones allowed) with
:func:`calibflow.kde.grid.kde_grid`: axis 0 is the PID variable, the others the kinematics (p, eta or
cos theta, number of tracks, ...). The raw density can be negative where negative sWeights dominate; it is
**clipped at 0 and renormalised per kinematic cell**, so that for every kinematic grid point the stored
``density`` integrates to 1 over the PID axis (a conditional pdf, per unit of the PID variable). A kinematic
cell whose clipped density is 0 everywhere (no candidates within reach) gets the PID density of all cells
together; ``info["empty_cells"]`` counts them and ``info["clipped_fraction"]`` is the clipped (negative)
weight over the total.

:func:`build_templates` gives the variants a calibrator needs from one :class:`TemplateSpec`: ``nominal``,
``bandwidthDown`` / ``bandwidthUp`` (every bandwidth x0.5 / x2), and with an alternative weight column
``sweightsUp`` (the alternative sWeights, nominal bandwidth) and ``sweightsDown`` (its mirror about nominal,
``2 nominal - up`` clipped and renormalised per cell). :func:`write_templates` stores them in HDF5,
:func:`read_templates` reads them, :func:`export_root` writes TH1D/TH2D/TH3D (up to 3 axes) for ROOT users.
Templates built from files named in a config: :mod:`calibflow.kde.pipeline`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibflow.kde.bandwidth import Rule, bandwidths, kish_neff
from calibflow.kde.boundary import Boundary
from calibflow.kde.grid import Axis, kde_grid

FORMAT = "calibflow-kde-templates"
VERSION = 1
BANDWIDTH_FACTORS: dict[str, float] = {"bandwidthDown": 0.5, "bandwidthUp": 2.0}
COARSE = 0.5
"""A cell wider than COARSE x the bandwidth on its axis gives a warning (the grid's error grows as (h/sigma)^2)."""


@dataclass
class Template:
    """Conditional density of ``axes[0]`` given ``axes[1:]`` on the grid of ``axes`` (cell centres).

    ``density[i, k...]``: pdf of the PID variable at centre ``i`` for the kinematic grid point ``k``, per unit of
    the PID variable; ``bandwidth``: Gaussian sigma per axis (unit of the axis); ``info``: build figures."""

    axes: tuple[Axis, ...]
    density: np.ndarray
    bandwidth: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Derived tables of the samplers (:mod:`calibflow.kde.sample`)."""

    @property
    def pid(self) -> Axis:
        """The PID axis."""
        return self.axes[0]

    @property
    def kinematics(self) -> tuple[Axis, ...]:
        """The kinematic axes."""
        return self.axes[1:]

    @cached_property
    def cdf(self) -> np.ndarray:
        """CDF at the PID cell edges per kinematic grid point: shape (kinematic points, PID bins + 1), C order."""
        per_cell = np.moveaxis(self.density, 0, -1).reshape(-1, self.pid.bins) * self.pid.width
        out = np.zeros((per_cell.shape[0], self.pid.bins + 1))
        np.cumsum(per_cell, axis=1, out=out[:, 1:])
        out /= out[:, -1:]
        return out


def conditional(density: np.ndarray, pid_width: float) -> tuple[np.ndarray, dict[str, Any]]:
    """``density`` clipped at 0 and normalised to 1 over axis 0 in every kinematic cell (see the module)."""
    clipped = np.clip(density, 0.0, None)
    total = float(np.abs(density).sum())
    norm = clipped.sum(axis=0, keepdims=True) * pid_width
    empty = norm <= 0
    fallback = clipped.sum(axis=tuple(range(1, density.ndim)), keepdims=True) if density.ndim > 1 else clipped
    fallback_norm = float(fallback.sum()) * pid_width
    if fallback_norm <= 0:
        raise ValueError("the clipped density is 0 everywhere: no positive weight in the range")
    out = np.where(empty, fallback / fallback_norm, clipped / np.where(empty, 1.0, norm))
    info = {"clipped_fraction": float((clipped - density).sum()) / total if total > 0 else 0.0,
            "empty_cells": int(empty.sum())}
    return out, info


def warn_if_coarse(axes: tuple[Axis, ...], sigma: np.ndarray) -> None:
    """Warn for every axis whose cells are wider than COARSE x its bandwidth."""
    for a, s in zip(axes, sigma, strict=True):
        if a.width > COARSE * s:
            warnings.warn(f"KDE axis {a.name!r}: cell width {a.width:.4g} > {COARSE} x bandwidth {s:.4g}; "
                          "the grid's discretisation error grows as (width / bandwidth)^2", stacklevel=3)


def build_template(points: np.ndarray, weights: np.ndarray, axes: tuple[Axis, ...], sigma: np.ndarray) -> Template:
    """Template of ``points`` (N, D: PID first) with ``weights`` and Gaussian widths ``sigma`` per axis."""
    sigma = np.asarray(sigma, dtype=float)
    raw = kde_grid(points, weights, axes, sigma)
    density, info = conditional(raw, axes[0].width)
    w = np.asarray(weights, dtype=float)
    info.update(candidates=len(w), sum_weights=float(w.sum()), n_eff=kish_neff(w),
                width_over_sigma=[a.width / s for a, s in zip(axes, sigma, strict=True)])
    return Template(axes, density, sigma, info)


def mirrored(nominal: Template, up: Template) -> Template:
    """The mirror of ``up`` about ``nominal`` (``2 nominal - up``, clipped and renormalised per cell)."""
    density, info = conditional(2.0 * nominal.density - up.density, nominal.pid.width)
    return Template(nominal.axes, density, nominal.bandwidth, {**nominal.info, **info, "mirror_of": "sweightsUp"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AxisSpec(_Strict):
    """One axis of a template: expression on the calibration tuple, grid range and cells, boundary."""

    expr: str
    lo: float
    hi: float
    bins: int = Field(ge=2)
    boundary: Boundary = "reflect"
    bandwidth: float | None = Field(default=None, gt=0)
    """Fixed Gaussian sigma (unit of the axis); default: the spec's rule."""


class TemplateSpec(_Strict):
    """What a template is built from: the axes by name, which of them is the PID variable, weights, bandwidth
    rule. The grid's axis 0 is the PID axis, then the kinematic axes in the order given."""

    pid: str
    """Name of the PID axis in ``axes``."""
    axes: dict[str, AxisSpec] = Field(min_length=1)
    weight: str | None = None
    """sWeight expression (negative values allowed); none: unit weights."""
    alt_weight: str | None = None
    """Alternative sWeights (another background model): the ``sweights`` variations."""
    selection: str | None = None
    """Candidates to keep (e.g. truth matching of simulation); none: all."""
    rule: Rule = "scott"
    scale: float = Field(default=1.0, gt=0)
    """Factor on the rule's bandwidths (not on fixed ones)."""
    variations: bool = True

    @model_validator(mode="after")
    def _pid_is_an_axis(self) -> TemplateSpec:
        if self.pid not in self.axes:
            raise ValueError(f"pid: {self.pid!r} is not one of the axes ({', '.join(self.axes)})")
        return self

    @property
    def ordered(self) -> dict[str, AxisSpec]:
        """The axes, the PID axis first."""
        return {self.pid: self.axes[self.pid], **{n: a for n, a in self.axes.items() if n != self.pid}}

    @property
    def grid(self) -> tuple[Axis, ...]:
        """The grid axes."""
        return tuple(Axis(n, a.lo, a.hi, a.bins, a.boundary) for n, a in self.ordered.items())


def evaluate(text: str, columns: Mapping[str, np.ndarray], aliases: Mapping[str, str], where: str) -> np.ndarray:
    """Expression ``text`` on ``columns`` as a float array of their length (ExprError names ``where``)."""
    from calibflow.expr import compile_expression

    n = len(next(iter(columns.values())))
    value = compile_expression(text, dict(aliases), where=where).evaluate(columns)
    return np.broadcast_to(np.asarray(value, dtype=float), (n,))


def candidates(columns: Mapping[str, np.ndarray], spec: TemplateSpec, aliases: Mapping[str, str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The selected candidates of ``columns``: points (N, D, the PID first), weights, alternative weights."""
    aliases = aliases or {}
    keep = slice(None)
    if spec.selection:
        keep = evaluate(spec.selection, columns, aliases, "selection") != 0
    points = np.column_stack([evaluate(a.expr, columns, aliases, f"axes.{n}.expr")[keep]
                              for n, a in spec.ordered.items()])
    weights = evaluate(spec.weight, columns, aliases, "weight")[keep] if spec.weight else np.ones(len(points))
    alt = evaluate(spec.alt_weight, columns, aliases, "alt_weight")[keep] if spec.alt_weight else None
    return points, weights, alt


def build_templates(
    columns: Mapping[str, np.ndarray], spec: TemplateSpec, aliases: Mapping[str, str] | None = None
) -> dict[str, Template]:
    """The nominal template of ``columns`` (a calibration tuple) and its variations (see the module)."""
    axes = spec.grid
    points, weights, alt = candidates(columns, spec, aliases)
    inside = np.all((points >= [a.lo for a in axes]) & (points <= [a.hi for a in axes]), axis=1)
    rule_sigma = bandwidths(points[inside], weights[inside], spec.rule, spec.scale)
    sigma = np.array([a.bandwidth or s for a, s in zip(spec.ordered.values(), rule_sigma, strict=True)])
    warn_if_coarse(axes, sigma)  # for the nominal bandwidth (bandwidthDown is coarser by design)
    out = {"nominal": build_template(points, weights, axes, sigma)}
    out["nominal"].info["rule"] = spec.rule
    if spec.variations:
        for name, factor in BANDWIDTH_FACTORS.items():
            out[name] = build_template(points, weights, axes, sigma * factor)
        if alt is not None:
            out["sweightsUp"] = build_template(points, alt, axes, sigma)
            out["sweightsDown"] = mirrored(out["nominal"], out["sweightsUp"])
    return out


def write_templates(path: str | os.PathLike[str], templates: Mapping[str, Template],
                    meta: Mapping[str, Any] | None = None) -> None:
    """Store ``templates`` (variant -> template) in the HDF5 file ``path``, atomically, with checksums
    (superblock 3, Fletcher32 per chunk: :mod:`calibflow.io.integrity`)."""
    import h5py

    from calibflow.io.integrity import LIBVER
    from calibflow.io.store import COMPRESSION, atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver=LIBVER) as h5:
        h5.attrs.update(format=FORMAT, version=VERSION, meta=json.dumps(dict(meta or {}), sort_keys=True),
                        variants=json.dumps(list(templates)))
        for variant, t in templates.items():
            g = h5.create_group(f"templates/{variant}")
            g.create_dataset("density", data=t.density, **COMPRESSION)
            g.attrs["axes"] = json.dumps([vars(a) for a in t.axes])
            g.attrs["bandwidth"] = t.bandwidth
            g.attrs["info"] = json.dumps(t.info, sort_keys=True)


def read_templates(path: str | os.PathLike[str]) -> tuple[dict[str, Template], dict[str, Any]]:
    """The templates of ``path`` (variant -> template) and the file's metadata."""
    import h5py

    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)}: not a calibflow KDE template file")
        out = {}
        for variant in json.loads(h5.attrs["variants"]):
            g = h5["templates"][variant]
            axes = tuple(Axis(**a) for a in json.loads(g.attrs["axes"]))
            out[variant] = Template(axes, g["density"][...], np.asarray(g.attrs["bandwidth"], dtype=float),
                                    json.loads(g.attrs["info"]))
        return out, json.loads(h5.attrs["meta"])


def export_root(path: str | os.PathLike[str], templates: Mapping[str, Template]) -> None:
    """Write each template as a TH1D/TH2D/TH3D named after its variant (axes titled by name), atomically."""
    import boost_histogram as bh
    import uproot

    from calibflow.io.store import atomic_path

    with atomic_path(path) as tmp, uproot.recreate(tmp) as f:
        for variant, t in templates.items():
            if len(t.axes) > 3:
                raise ValueError(f"template {variant!r} has {len(t.axes)} axes: ROOT export takes at most 3")
            h = bh.Histogram(*(bh.axis.Regular(a.bins, a.lo, a.hi, metadata=a.name) for a in t.axes),
                             storage=bh.storage.Double())
            h.view()[...] = t.density
            f[variant] = h
