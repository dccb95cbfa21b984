"""Export table columns as ROOT histograms (TH1D/TH2D with errors) written with uproot.

A product scheme of one or two variables becomes one TH1D/TH2D per quantity; a nested scheme whose
inner edges differ between outer bins becomes one histogram per outer bin (``<name>_<outer>_<i>``).
Bin errors are the symmetrised uncertainty max(err_down, err_up).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import boost_histogram as bh
import numpy as np
import uproot

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.io.store import atomic_path


def is_product(node: Node) -> bool:
    """Whether every outer interval of ``node`` holds the same inner binning (recursively)."""
    if node.children is None:
        return True
    first = node.children[0].to_dict()
    return all(c.to_dict() == first for c in node.children) and is_product(node.children[0])


def _hist(edges: Sequence[Sequence[float]], values: np.ndarray, errors: np.ndarray) -> bh.Histogram:
    h = bh.Histogram(*[bh.axis.Variable(e) for e in edges], storage=bh.storage.Weight())
    view = h.view()
    view.value[...] = values.reshape(view.shape)
    view.variance[...] = (errors**2).reshape(view.shape)
    return h


def histograms(
    scheme: BinningScheme, name: str, values: Mapping[int, float], errors: Mapping[int, float]
) -> dict[str, bh.Histogram]:
    """Histograms of per-bin ``values`` with ``errors`` (by bin index) for ``scheme``."""
    n = len(scheme)
    v = np.array([values[i] for i in range(n)], dtype=float)
    e = np.array([errors[i] for i in range(n)], dtype=float)
    root = scheme.root
    if len(scheme.variables) <= 2 and is_product(root):
        edges = [root.edges] + ([root.children[0].edges] if root.children else [])
        return {name: _hist(edges, v, e)}
    if len(scheme.variables) == 2:
        out, start = {}, 0
        for i, child in enumerate(root.children or ()):
            k = len(child.edges) - 1
            out[f"{name}_{root.variable}_{i}"] = _hist([child.edges], v[start : start + k], e[start : start + k])
            start += k
        return out
    raise ValueError(f"{name}: ROOT export supports 1-D and 2-D schemes, not {len(scheme.variables)}-D")


def write_root(path: str | os.PathLike[str], hists: Mapping[str, bh.Histogram]) -> None:
    """Write ``hists`` to the ROOT file ``path`` atomically."""
    with atomic_path(path) as tmp, uproot.recreate(tmp) as f:
        for name, h in hists.items():
            f[name] = h
