"""Toy generators by name: the registry behind ``toy.generator`` and the writer of one toy input file."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ToyWriter = Callable[..., None]
"""``writer(path, n, is_data, seed, **options)``: generate ``n`` candidates (or events) into ``path``."""

GENERATORS: dict[str, str] = {
    "jpsi_tag_and_probe": "calibflow.toys.jpsi:write_jpsi_file",
    "belle2_dstar": "calibflow.toys.belle2:write_dstar_file",
    "belle2_v0": "calibflow.toys.belle2:write_v0_file",
    "classifier_tracks": "calibflow.toys.classifier:write_classifier_file",
    "lhcb_tracking_jpsi": "calibflow.toys.lhcb:write_tracking_file",
    "z_mumu_nanoaod": "calibflow.toys.nanoaod:write_z_mumu_file",
    "emu_nanoaod": "calibflow.toys.nanoaod:write_emu_file",
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
