"""Signal templates from simulation (``fit.signal: template``): per category, the reference simulation's mass
histogram of the same bin convolved with a Gaussian of its own mean shift and width.

The pass template has parameters ``shift_pass``, ``smear_pass``, the fail template ``shift_fail``,
``smear_fail`` (unit of the mass; ``smear`` 0: the histogram itself). ``smooth`` treats templates of few
candidates first: a Gaussian of that width (unit of the mass) spread over the histogram, or ``auto``, the
normal-reference bandwidth 1.06·σ̂·n_eff^(−1/5) of the template's own spread σ̂ and effective entries
n_eff (Silverman's rule, as a KDE of the template's candidates would use, computed on its bins).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special

from calibflow.fit.models import Shape, template_shape

TEMPLATE = "template"
"""The name of the template signal in ``fit.signal``."""
TEMPLATE_PARAMS = {"pass": ("shift_pass", "smear_pass"), "fail": ("shift_fail", "smear_fail")}
"""Parameter names of the pass and fail templates (mean shift and Gaussian width, unit of the mass)."""
Smooth = float | str


def auto_width(edges: np.ndarray, sumw: np.ndarray, sumw2: np.ndarray | None = None) -> float:
    """Silverman's bandwidth 1.06·σ̂·n_eff^(−1/5) of a histogram (unit of the mass; 0 when empty): σ̂ the
    weighted standard deviation of the bin centres, n_eff = (Σw)²/Σw² (Σw when ``sumw2`` is None)."""
    w = np.clip(np.asarray(sumw, dtype=float), 0.0, None)
    total = float(w.sum())
    if total <= 0:
        return 0.0
    c = 0.5 * (edges[1:] + edges[:-1])
    mean = float(np.dot(w, c) / total)
    sd = math.sqrt(max(float(np.dot(w, (c - mean) ** 2) / total), 0.0))
    w2 = float(np.sum(sumw2)) if sumw2 is not None else total
    n_eff = total * total / w2 if w2 > 0 else total
    return 1.06 * sd * n_eff ** -0.2


def smooth_counts(edges: np.ndarray, counts: np.ndarray, width: float) -> np.ndarray:
    """``counts`` with each bin's content spread by a Gaussian of σ = ``width`` (unit of the mass) over the bins
    of ``edges`` (bin-integrated; what leaves the range is lost, then the total is restored); ``width`` ≤ 0:
    unchanged."""
    c = np.clip(np.asarray(counts, dtype=float), 0.0, None)
    if width <= 0 or c.sum() <= 0:
        return c
    centres = 0.5 * (edges[1:] + edges[:-1])
    spread = np.diff(special.ndtr((edges[None, :] - centres[:, None]) / width), axis=1)  # row: from bin i
    out = c @ spread
    return out * (c.sum() / out.sum())


def smoothing_width(smooth: Smooth, edges: np.ndarray, sumw: np.ndarray, sumw2: np.ndarray | None) -> float:
    """The width of ``smooth`` (a number, or ``auto``: :func:`auto_width`) for one template (unit of the mass)."""
    return auto_width(edges, sumw, sumw2) if smooth == "auto" else float(smooth)


def template_counts(edges: np.ndarray, sumw: np.ndarray, sumw2: np.ndarray | None, smooth: Smooth) -> np.ndarray:
    """The (smoothed) counts of one category's template histogram, negative contents set to 0."""
    return smooth_counts(edges, sumw, smoothing_width(smooth, edges, sumw, sumw2))


def template_record(edges: np.ndarray, sumw: np.ndarray, sumw2: np.ndarray | None, weighted: bool,
                    smooth: Smooth) -> dict[str, Any]:
    """JSON-ready templates of one bin from a reference sample's (pass, fail) histograms ``sumw``/``sumw2``
    (shape (2, n)): ``edges``, ``pass``, ``fail`` (smoothed counts) and the smoothing widths used; stored with
    the fit result so that its figure and any reader rebuild the model (:func:`template_signals`)."""
    out: dict[str, Any] = {"edges": [float(e) for e in edges]}
    for c, cat in enumerate(("pass", "fail")):
        w2 = sumw2[c] if weighted else None
        width = smoothing_width(smooth, edges, sumw[c], w2)
        out[cat] = [float(v) for v in smooth_counts(edges, sumw[c], width)]
        out[f"smooth_{cat}"] = width
    return out


def template_signals(record: Mapping[str, Any]) -> tuple[Shape, Shape]:
    """(pass, fail) template shapes of a :func:`template_record`; ValueError naming the empty category."""
    edges = np.asarray(record["edges"], dtype=float)
    shapes = []
    for cat in ("pass", "fail"):
        counts = np.asarray(record[cat], dtype=float)
        if not counts.sum() > 0:
            raise ValueError(f"fit.template: the reference simulation has no {cat} candidates in this bin")
        shapes.append(template_shape(edges, counts, TEMPLATE, TEMPLATE_PARAMS[cat]))
    return shapes[0], shapes[1]


def placeholder_signals(lo: float = 0.0, hi: float = 1.0) -> tuple[Shape, Shape]:
    """Template shapes of a flat histogram on [lo, hi]: their parameter names, for checks of ``fit.parameters``."""
    edges = np.linspace(lo, hi, 3)
    return template_signals({"edges": edges, "pass": [1.0, 1.0], "fail": [1.0, 1.0]})
