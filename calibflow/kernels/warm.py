"""Kernels loaded (or compiled, the first time on the machine) in a process before worker processes fork.

Each function calls one group of kernels on a few rows of the argument types the stages pass (the public
functions convert their inputs: int64 offsets and indices, float64 coordinates and columns, bool flags), so
forked processes inherit the machine code instead of each compiling or loading it. Which groups a run needs
is decided by :mod:`calibflow.ops.warmup`.
"""

from __future__ import annotations

import time

import numba
import numpy as np


@numba.njit(cache=True)
def _first(x: np.ndarray) -> int:
    """A trivial kernel: its first call sets numba's dispatcher up."""
    return len(x)


def warm_up() -> float:
    """Set numba up in this process; seconds taken (about 0.8 s the first time, then nothing).

    The first call of any jitted function, even one loaded from numba's cache, loads numba's typing and
    target registries and the numba extensions of installed packages (awkward, vector). Pool processes
    forked afterwards inherit this instead of paying it each at their first kernel call."""
    t0 = time.perf_counter()
    _first(np.empty(0))
    return time.perf_counter() - t0


_OFFSETS = np.array([0, 2], dtype=np.int64)
"""One event of two objects."""


def warm_pairing(matches: bool) -> None:
    """Tag-and-probe pairs, the pair mass and ΔR (``calibflow.kernels.pairing``); with ``matches``, the ΔR
    matching of objects (``calibflow.kernels.matching.nearest_dr_match``)."""
    from calibflow.kernels.matching import delta_phi, nearest_dr_match
    from calibflow.kernels.pairing import invariant_mass, tag_probe_pairs

    x = np.array([1.0, 2.0])
    flags = np.ones(2, dtype=bool)
    tag_probe_pairs(_OFFSETS, flags, flags)
    invariant_mass(x, x, x, x, x, x, x, x)
    delta_phi(x, x)
    if matches:
        nearest_dr_match(_OFFSETS, x, x, _OFFSETS, x, x, flags, 0.1)
        nearest_dr_match(_OFFSETS, x, x, _OFFSETS, x, x, None, 0.1)


def warm_jagged_baskets() -> None:
    """The entry offsets of jagged baskets (``calibflow.kernels.jagged.entry_offsets``), which preparation
    calls for every jagged branch it reads (NanoAOD collections, hit lists)."""
    from calibflow.kernels.jagged import entry_offsets

    one = np.array([1], dtype=np.int64)
    entry_offsets(np.array([80], dtype=np.int64), one, np.array([80], dtype=np.int64), np.array([8]), 4)


def warm_hit_matching() -> None:
    """The shared-hit matching of tracks (``calibflow.kernels.matching.shared_fraction_match``)."""
    from calibflow.kernels.matching import shared_fraction_match

    hits = np.array([3, 5], dtype=np.int64)
    shared_fraction_match(np.array([0, 1]), _OFFSETS[:2], hits, np.array([0, 1]), _OFFSETS[:2], hits, 0.5)


def warm_histograms() -> None:
    """The pass/fail mass histograms (``calibflow.kernels.histogram.fill_pass_fail``) of float64 masses and
    weights, as the prepared tuples hold them."""
    from calibflow.kernels.histogram import fill_pass_fail

    x = np.array([0.5, 0.5])
    fill_pass_fail(np.array([0, 1]), np.array([True, False]), x, np.ones(2), 0.0, 1.0, np.zeros((2, 2, 4)),
                   np.zeros((2, 2, 4)))
