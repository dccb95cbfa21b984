"""Writing ROOT TTrees with uproot (toys, tests, exports)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import uproot

from calibflow.io.store import atomic_path


def write_ttree(
    path: str | os.PathLike[str],
    branches: Mapping[str, np.ndarray],
    tree: str = "DecayTree",
    compression: object | None = None,
    basket_rows: int = 200_000,
) -> None:
    """Write flat numpy branches as a TTree (not an RNTuple) to ``path``, atomically.

    ``compression`` is an uproot compression object (default ZLIB level 1); baskets hold
    ``basket_rows`` entries, as a typical production ntuple would.
    """
    write_ttrees(path, {tree: branches}, compression, basket_rows)


def write_ttrees(
    path: str | os.PathLike[str],
    trees: Mapping[str, Mapping[str, np.ndarray]],
    compression: object | None = None,
    basket_rows: int = 200_000,
) -> None:
    """Write several TTrees of flat numpy branches (tree name -> branches) to one file, atomically
    (as Belle II ntuples hold one tree per particle list); options as :func:`write_ttree`."""
    with atomic_path(path) as tmp, uproot.recreate(tmp, compression=compression or uproot.ZLIB(1)) as f:
        for tree, branches in trees.items():
            n = len(next(iter(branches.values()))) if branches else 0
            t = f.mktree(tree, {k: np.asarray(v).dtype for k, v in branches.items()})
            for start in range(0, max(n, 1), basket_rows):
                chunk = {k: np.asarray(v)[start : start + basket_rows] for k, v in branches.items()}
                if n:
                    t.extend(chunk)
