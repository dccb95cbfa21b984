"""Toy generators by name: the registry behind ``toy.generator`` and the writer of one toy input file."""

from __future__ import annotations

import functools
import importlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from calibflow.config import ConfigError

ToyWriter = Callable[..., None]
"""``writer(path, n, is_data, seed, **options)``: generate ``n`` candidates (or events) into ``path``."""

GENERATORS: dict[str, str] = {
    "jpsi_tag_and_probe": "calibflow.toys.jpsi:write_jpsi_file",
    "belle2_dstar": "calibflow.toys.belle2:write_dstar_file",
    "belle2_v0": "calibflow.toys.belle2:write_v0_file",
    "belle2_dstar_sweighted": "calibflow.toys.sweighted:write_dstar_sweighted_file",
    "classifier_tracks": "calibflow.toys.classifier:write_classifier_file",
    "lhcb_tracking_jpsi": "calibflow.toys.lhcb:write_tracking_file",
    "lhcb_trigger_tistos": "calibflow.toys.tistos:write_tistos_file",
    "z_mumu_nanoaod": "calibflow.toys.nanoaod:write_z_mumu_file",
    "emu_nanoaod": "calibflow.toys.nanoaod:write_emu_file",
    "z_ee_nanoaod": "calibflow.toys.egamma:write_z_ee_file",
}
"""Toy generators by name: ``module:function`` of a :data:`ToyWriter` (imported on use)."""


def get_generator(name: str) -> ToyWriter:
    """The writer of toy generator ``name``; ValueError lists the known names."""
    if name not in GENERATORS:
        raise ValueError(f"toy.generator: unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    module, func = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), func)


def write_toy_file(path: str, n: int, is_data: bool, seed: int, generator: str = "jpsi_tag_and_probe",
                   **options: Any) -> None:
    """Write one toy input file with the named generator."""
    get_generator(generator)(path, n, is_data, seed, **options)


REFERENCE_CANDIDATES = 20
"""Candidates (or events) of :func:`reference_file`: enough for every branch, a few ms to write."""
_REFERENCE_DIR: tempfile.TemporaryDirectory[str] | None = None


@functools.lru_cache(maxsize=32)
def _reference(generator: str, options: str, is_data: bool) -> str:
    global _REFERENCE_DIR
    if _REFERENCE_DIR is None:
        _REFERENCE_DIR = tempfile.TemporaryDirectory(prefix="calibflow-toy-reference-")  # removed at exit
    name = f"{generator}-{'data' if is_data else 'mc'}-{len(os.listdir(_REFERENCE_DIR.name))}.root"
    path = os.path.join(_REFERENCE_DIR.name, name)
    write_toy_file(path, REFERENCE_CANDIDATES, is_data, seed=1, generator=generator, **json.loads(options))
    return path


def reference_file(generator: str, options: dict[str, Any], is_data: bool) -> str:
    """A small file written by toy generator ``generator`` with ``options`` for data or simulation, in a
    temporary folder of this process: its trees and branches are those of every file the generator writes
    so (the config is checked against them before the toys are generated)."""
    try:
        return _reference(generator, json.dumps(options, sort_keys=True), is_data)
    except (TypeError, ValueError) as exc:  # an unknown generator, or options it does not take
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(text if text.startswith("toy.") else f"toy.options: {text}") from None
