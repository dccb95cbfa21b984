"""Variants of a calibration: systematic variations, working points and the inclusive (one-bin) table.

A variant is named by ``/``-separated parts applied in order to the nominal config:

* ``<source>`` / ``<source>Up`` / ``<source>Down`` — the overrides of a systematic source
  (``systematics.sources``), merged into the config as a JSON merge patch (mappings merge, ``null``
  deletes a key, other values replace);
* ``wp=<name>`` — measure working point ``<name>`` (``working_points``) instead of ``pass``;
* ``method=<name>`` — the overrides of an alternative probe definition (``methods``);
* ``inclusive`` — one bin spanning the whole binning range (integrated efficiencies).

The empty name is the nominal calibration. Because every stage is keyed by content, variants share
every result they do not change (a fit-model variation reuses the prepared tuples and histograms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calibflow.config import CalibrationConfig, ConfigError, Variation, parse_config

NOMINAL = ""
INCLUSIVE = "inclusive"
WP_PREFIX = "wp="
METHOD_PREFIX = "method="


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in (JSON merge patch, RFC 7386): nested mappings merge key by
    key, ``None`` deletes a key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Variant:
    """A parsed variant: the config to run, the working point (or None) and the systematic part."""

    config: CalibrationConfig
    working_point: str | None
    systematic: str | None
    inclusive: bool


def _source(cfg: CalibrationConfig, name: str) -> tuple[int, Variation, dict[str, Any]]:
    for i, src in enumerate(cfg.systematics.sources):
        if src.vary is not None and name == src.name:
            return i, src, src.vary
        if src.vary is None and name == f"{src.name}Up":
            return i, src, src.up or {}
        if src.vary is None and name == f"{src.name}Down":
            return i, src, src.down or {}
    known = [v for s in cfg.systematics.sources for v in s.variants]
    raise ConfigError(f"unknown systematic variation {name!r}; known: {', '.join(known) or 'none'}")


def _overridden(cfg: CalibrationConfig, override: Mapping[str, Any], where: str) -> CalibrationConfig:
    data = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=False)
    data = deep_merge(data, override)
    return parse_config(data, source=where)


def resolve(base: CalibrationConfig, variant: str) -> Variant:
    """Apply ``variant`` to the nominal config ``base``; ConfigError names the source of a problem."""
    cfg, wp, syst, inclusive = base, None, None, False
    for part in filter(None, variant.split("/")):
        if part.startswith(WP_PREFIX):
            wp = part[len(WP_PREFIX) :]
            if wp not in base.working_points:
                raise ConfigError(f"unknown working point {wp!r}; working_points: {', '.join(base.working_points)}")
        elif part.startswith(METHOD_PREFIX):
            name = part[len(METHOD_PREFIX) :]
            if name not in base.methods:
                raise ConfigError(f"unknown method {name!r}; methods: {', '.join(base.methods) or 'none'}")
            override = {**base.methods[name], "methods": None, "products": None}
            cfg = _overridden(cfg, override, _part_origin(base, part))
        elif part == INCLUSIVE:
            inclusive = True
            one_bin = [{"name": v.name, "expression": v.expression, "edges": list(v.limits)}
                       for v in cfg.binning.variables]
            cfg = _overridden(cfg, {"binning": {"variables": one_bin, "optimise": None}}, f"{INCLUSIVE} binning")
        else:
            _, _, override = _source(base, part)
            syst = part
            cfg = _overridden(cfg, override, _part_origin(base, part))
    return Variant(cfg, wp, syst, inclusive)


def _part_origin(base: CalibrationConfig, part: str) -> str:
    """The config key overriding the nominal config in variant part ``part`` (empty for working points and
    the inclusive binning, which add no keys of their own)."""
    if part.startswith(METHOD_PREFIX):
        return f"methods.{part[len(METHOD_PREFIX):]}"
    if part.startswith(WP_PREFIX) or part == INCLUSIVE:
        return ""
    return f"systematics.sources[{_source(base, part)[0]}] ({part})"


def origin(base: CalibrationConfig, variant: str) -> str:
    """Where the config of ``variant`` comes from besides the nominal keys, for messages:
    ``systematics.sources[0] (sigmodel)``, ``methods.loose``, both joined by `` + ``; empty: nominal."""
    return " + ".join(filter(None, (_part_origin(base, p) for p in filter(None, variant.split("/")))))


def join(*parts: str | None) -> str:
    """Variant name from its parts (empty parts dropped)."""
    return "/".join(p for p in parts if p)


def systematic_variants(cfg: CalibrationConfig) -> list[str]:
    """Names of every systematic run of the config (one per one-sided source, two per two-sided)."""
    return [v for s in cfg.systematics.sources for v in s.variants]


def working_point_variants(cfg: CalibrationConfig) -> list[str]:
    """``wp=<name>`` for every working point."""
    return [f"{WP_PREFIX}{w}" for w in cfg.working_points]


def method_variants(cfg: CalibrationConfig) -> list[str]:
    """``method=<name>`` for every alternative probe definition."""
    return [f"{METHOD_PREFIX}{m}" for m in cfg.methods]
