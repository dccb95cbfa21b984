"""numba's one-time start-up in a process, done before worker processes fork so that they inherit it."""

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
