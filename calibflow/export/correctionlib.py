"""Export scale factors as a correctionlib (schema v2) JSON, built with correctionlib's own models.

Inputs are the binning variables (outer first) and a string ``syst``: ``nominal``, ``up``/``down``
(total uncertainty), ``statUp``/``statDown``, ``systUp``/``systDown`` and ``<source>Up``/``<source>Down``
for every systematic source; nested schemes become nested ``Binning`` nodes; out-of-range inputs are
clamped to the edge bins (``flow="clamp"``) unless another flow is asked for. A bin without a finite
scale factor (an empty or failed bin) stops the export unless ``missing="unity"`` is asked for: then it holds
1 in ``nominal``, 2 in every up and 0 in every down category (a 100 % uncertainty), and the correction's
description names it.

Per-bin categories (``stat_data_bin<k>_up``, ...: bin k moves, every other bin is nominal) are written in a
compact form that grows linearly with the number of bins, not quadratically: the ``syst`` category's
``default`` is one binning whose every bin holds a small category of its own per-bin keys, with the nominal
value as its default; a ``Transform`` around it (the first binning variable rewritten to itself) checks
``syst`` against the list of every valid name first, so that a misspelt name is an error as without per-bin
categories, never a silent nominal.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import correctionlib.schemav2 as cs

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.io.store import atomic_path


def _binning(node: Node, values: Mapping[int, float | cs.Category], counter: list[int], flow: str) -> cs.Binning:
    """``node``'s binning with the value of bin ``counter[0]`` (then the next ...) at each leaf: a number, or a
    node (per-bin categories)."""
    content: list[cs.Binning | cs.Category | float] = []
    for i in range(len(node.edges) - 1):
        if node.children is None:
            leaf = values[counter[0]]
            content.append(leaf if isinstance(leaf, cs.Category) else float(leaf))
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
    per_bin: Mapping[str, Mapping[int, float]] | None = None,
) -> cs.Correction:
    """Correction with one binned content per category (``nominal`` first), values per bin index.

    ``flow`` is correctionlib's treatment of out-of-range inputs: ``clamp`` or ``error``; ``missing`` that of
    bins without a finite value in some category: ``fail`` (ValueError naming them) or ``unity`` (see above).
    ``per_bin`` maps templates of per-bin categories (``"stat_data_bin{k}_up"``) to a value per bin index: the
    category ``template.format(k=k)`` holds that value in bin k and the ``nominal`` value in every other bin.
    """
    per_bin = dict(per_bin or {})
    tables = {**categories, **per_bin}
    bad = sorted({i for vals in tables.values() for i in range(len(scheme)) if not math.isfinite(vals.get(i, math.nan))})
    if bad and missing != "unity":
        labels = "; ".join(f"bin {i} ({scheme.bins[i].label()})" for i in bad[:5])
        raise ValueError(f"cannot export {name!r} to correctionlib: no finite scale factor in {len(bad)} bin(s): "
                         f"{labels}; change the binning or selection, or set outputs.missing: unity (1 +- 1 there) "
                         "or outputs.correctionlib: false")
    if bad:
        categories = {k: {**v, **{i: _unity(k) for i in bad}} for k, v in categories.items()}
        per_bin = {t: {**v, **{i: _unity(t.format(k=i)) for i in bad}} for t, v in per_bin.items()}
        listed = ", ".join(map(str, bad))
        description = (f"{description or default_description(scheme)}. Bins without a measurement ({listed}) "
                       "hold 1 with a 100 % uncertainty (outputs.missing: unity).")
    items = [cs.CategoryItem(key=k, value=_binning(scheme.root, v, [0], flow)) for k, v in categories.items()]
    inputs = [cs.Variable(name=v, type="real", description=f"binning variable {v}") for v in scheme.variables]
    names = ", ".join([*categories, *(t.replace("{k}", "<k>") for t in per_bin)])
    if per_bin:
        names += f" (<k> = 0..{len(scheme) - 1}, the bin column of the tables: bin <k> alone moves)"
    inputs.append(cs.Variable(name="syst", type="string", description=names))
    data: cs.Category | cs.Transform = cs.Category(nodetype="category", input="syst", content=items)
    formulas: list[cs.Formula] = []
    if per_bin:
        data, formulas = _with_per_bin(scheme, categories["nominal"], items, per_bin, flow)
    return cs.Correction(
        name=name,
        description=description or default_description(scheme),
        version=1,
        inputs=inputs,
        output=cs.Variable(name="weight", type="real", description="scale factor"),
        **({"generic_formulas": formulas} if formulas else {}),
        data=data,
    )


def _with_per_bin(
    scheme: BinningScheme, nominal: Mapping[int, float], items: list[cs.CategoryItem],
    per_bin: Mapping[str, Mapping[int, float]], flow: str,
) -> tuple[cs.Transform, list[cs.Formula]]:
    """The compact form of per-bin categories (module docstring): (the correction's data, its generic formulas)."""
    leaves = {i: cs.Category(nodetype="category", input="syst", default=float(nominal[i]),
                             content=[cs.CategoryItem(key=t.format(k=i), value=float(v[i])) for t, v in per_bin.items()])
              for i in range(len(scheme))}
    spread = _binning(scheme.root, leaves, [0], flow)
    keys = [it.key for it in items] + [t.format(k=i) for i in range(len(scheme)) for t in per_bin]
    x = scheme.variables[0]
    same = cs.FormulaRef(nodetype="formularef", index=0, parameters=[])  # x -> x: only checks the name
    check = cs.Category(nodetype="category", input="syst", content=[cs.CategoryItem(key=k, value=same) for k in keys])
    content = cs.Category(nodetype="category", input="syst", content=items, default=spread)
    identity = cs.Formula(nodetype="formula", expression="x", parser="TFormula", variables=[x])
    return cs.Transform(nodetype="transform", input=x, rule=check, content=content), [identity]


def default_description(scheme: BinningScheme) -> str:
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
