"""Boundary correction of the binned KDE by reflection at the grid edges.

A bounded variable (a PID probability in [0, 1], a momentum above a threshold) loses density at its
edges with a plain kernel estimate: the kernels of candidates near an edge spill out of the range. With
``reflect`` the candidates' mirror images about each edge are added (Schuster's reflection method). On
the grid this is exact and cheap: grid points are cell centres, so the mirror image of cell ``i`` about
the lower edge is cell ``-1 - i``, and padding the binned counts symmetrically (``numpy.pad`` mode
``symmetric``, repeated as needed for wide kernels) before the convolution adds every reflection. The
density inside the range then integrates to the total weight of the candidates in the range: nothing is
lost at the edge, and the density's slope at the edge is 0 (the known bias of reflection, O(sigma) wide).
``none`` pads with zeros: the density leaks out of the range (for unbounded variables with margin).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Boundary = Literal["reflect", "none"]
MODES: dict[str, str] = {"reflect": "symmetric", "none": "constant"}


def pad_axis(values: np.ndarray, axis: int, width: int, boundary: Boundary) -> np.ndarray:
    """``values`` with ``width`` cells added on both sides of ``axis``: mirror images or zeros."""
    if boundary not in MODES:
        raise ValueError(f"unknown boundary {boundary!r} (known: {', '.join(MODES)})")
    pad = [(0, 0)] * values.ndim
    pad[axis] = (width, width)
    return np.pad(values, pad, mode=MODES[boundary])  # type: ignore[call-overload]
