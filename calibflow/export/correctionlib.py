"""Export scale factors as a correctionlib (schema v2) JSON, built with correctionlib's own models.

Inputs are the binning variables (outer first) and a string ``syst``: ``nominal``, ``up``/``down``
(total uncertainty), ``statUp``/``statDown``, ``systUp``/``systDown`` and ``<source>Up``/``<source>Down``
for every systematic source; nested schemes become nested ``Binning`` nodes; out-of-range inputs are
clamped to the edge bins (``flow="clamp"``) unless another flow is asked for. A bin without a finite
scale factor (an empty or failed bin) stops the export unless ``missing="unity"`` is asked for: then it holds
1 in ``nominal``, 2 in every up and 0 in every down category (a 100 % uncertainty), and the correction's
description names it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import correctionlib.schemav2 as cs

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.io.store import atomic_path


def _binning(node: Node, values: Mapping[int, float], counter: list[int], flow: str) -> cs.Binning:
    content: list[cs.Binning | float] = []
    for i in range(len(node.edges) - 1):
        if node.children is None:
            content.append(float(values[counter[0]]))
            counter[0] += 1
        else:
            content.append(_binning(node.children[i], values, counter, flow))
    return cs.Binning(nodetype="binning", input=node.variable, edges=list(node.edges), content=content, flow=flow)


def build_correction(
    name: str,
    scheme: BinningScheme,
    categories: Mapping[str, Mapping[int, float]],
    description: str = "",
    flow: str = "clamp",
    missing: str = "fail",
) -> cs.Correction:
    """Correction with one binned content per category (``nominal`` first), values per bin index.

    ``flow`` is correctionlib's treatment of out-of-range inputs: ``clamp`` or ``error``; ``missing`` that of
    bins without a finite value in some category: ``fail`` (ValueError naming them) or ``unity`` (see above).
    """
    bad = sorted({i for vals in categories.values() for i in range(len(scheme)) if not math.isfinite(vals.get(i, math.nan))})
    if bad and missing != "unity":
        labels = "; ".join(f"bin {i} ({scheme.bins[i].label()})" for i in bad[:5])
        raise ValueError(f"cannot export {name!r} to correctionlib: no finite scale factor in {len(bad)} bin(s): "
                         f"{labels}; change the binning or selection, or set outputs.missing: unity (1 +- 1 there) "
                         "or outputs.correctionlib: false")
    if bad:
        categories = {k: {**v, **{i: _unity(k) for i in bad}} for k, v in categories.items()}
        listed = ", ".join(map(str, bad))
        description = (f"{description or _default_description(scheme)}. Bins without a measurement ({listed}) "
                       "hold 1 with a 100 % uncertainty (outputs.missing: unity).")
    items = [cs.CategoryItem(key=k, value=_binning(scheme.root, v, [0], flow)) for k, v in categories.items()]
    inputs = [cs.Variable(name=v, type="real", description=f"binning variable {v}") for v in scheme.variables]
    inputs.append(cs.Variable(name="syst", type="string", description=", ".join(categories)))
    return cs.Correction(
        name=name,
        description=description or _default_description(scheme),
        version=1,
        inputs=inputs,
        output=cs.Variable(name="weight", type="real", description="scale factor"),
        data=cs.Category(nodetype="category", input="syst", content=items),
    )


def _default_description(scheme: BinningScheme) -> str:
    """What a correction holds, when the caller gives no description."""
    return f"data/simulation scale factor binned in {', '.join(scheme.variables)}"


def _unity(category: str) -> float:
    """The value of a bin without a measurement in ``category``: 2 in up, 0 in down categories, else 1."""
    low = category.lower()
    return 2.0 if low.endswith("up") else 0.0 if low.endswith("down") else 1.0


def write_correction_set(path: str | os.PathLike[str], corrections: list[cs.Correction], description: str = "") -> None:
    """Write a CorrectionSet (schema v2) of ``corrections`` to ``path`` atomically."""
    cset = cs.CorrectionSet(schema_version=2, description=description, corrections=corrections)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(cset.model_dump_json(exclude_unset=True, indent=1))
