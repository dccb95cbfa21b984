"""Fits constrained by simulation (``fit.constrain``): parameters of a fit of the reference simulation of the
same bin become Gaussian constraints, or fixed values, in the fit of the data.

With value v ± σ from the simulation fit and ``scale`` s, the constrained cost is C(x) + Σ_k ((x_k − v_k)/(s·σ_k))²
(the fits' costs are −2 ln L: this is −2 ln of a Gaussian likelihood term of width s·σ_k). A parameter whose
simulation error is 0 (fixed there), or every listed parameter with ``fix``, is fixed to v instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Constraints = Mapping[str, tuple[float, float]]
"""Parameter name -> (centre, width) of its Gaussian constraint (unit of the parameter)."""


def from_result(result: Mapping[str, Any], names: Sequence[str], scale: float = 1.0,
                fix: bool = False) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, Any]]]:
    """(Gaussian constraints, fixed-parameter overrides) of the parameters ``names`` of a fit ``result`` (its
    ``values`` and ``errors``); the width is ``scale``·error. ValueError for a name the result has not, or a
    value that is not finite (the simulation fit failed)."""
    constraints: dict[str, tuple[float, float]] = {}
    fixed: dict[str, dict[str, Any]] = {}
    values, errors = result.get("values", {}), result.get("errors", {})
    for n in names:
        if n not in values:
            raise ValueError(f"fit.constrain.parameters: {n!r} is not a parameter of the simulation fit "
                             f"(status {result.get('status', '?')}); it has {', '.join(values) or 'none'}")
        v, e = float(values[n]), float(errors.get(n, 0.0))
        if not math.isfinite(v):
            raise ValueError(f"fit.constrain: the simulation fit gives {n} = {v}")
        if fix or not (math.isfinite(e) and e > 0):
            fixed[n] = {"value": v, "fixed": True}
        else:
            constraints[n] = (v, scale * e)
    return constraints, fixed


def penalty(names: Sequence[str], constraints: Constraints | None) -> Callable[[np.ndarray], float] | None:
    """Σ_k ((x_k − v_k)/σ_k)² over the constrained parameters present in ``names`` (the parameter vector's
    order), or None when none is."""
    pairs = [(names.index(n), v, s) for n, (v, s) in (constraints or {}).items() if n in names]
    if not pairs:
        return None
    idx = np.array([p[0] for p in pairs])
    centre, width = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])

    def term(x: np.ndarray) -> float:
        return float(np.sum(((np.asarray(x, dtype=float)[idx] - centre) / width) ** 2))

    return term


def constraint_chi2(names: Sequence[str], constraints: Constraints | None, x: np.ndarray) -> tuple[float, int]:
    """(Σ_k ((x_k − v_k)/σ_k)², number of terms) at the parameters ``x`` (``names``' order): what the constraints
    add to a fit's χ² and to its ndof, each constraint a measurement of its parameter ((0, 0) without any)."""
    term = penalty(names, constraints)
    if term is None:
        return 0.0, 0
    return term(x), sum(n in names for n in constraints or {})


def constrained(cost: Callable[[np.ndarray], float], names: Sequence[str],
                constraints: Constraints | None) -> Callable[[np.ndarray], float]:
    """``cost`` plus the :func:`penalty` of ``constraints`` (``cost`` itself when none applies)."""
    term = penalty(names, constraints)
    if term is None:
        return cost

    def with_penalty(x: np.ndarray) -> float:
        return cost(x) + term(x)

    return with_penalty


def merge_fixed(parameters: Mapping[str, Mapping[str, Any]] | None,
                fixed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``parameters`` (``fit.parameters`` overrides) with the simulation's fixed values merged over them."""
    out = {k: dict(v) for k, v in (parameters or {}).items()}
    for name, spec in fixed.items():
        out[name] = {**out.get(name, {}), **spec}
    return out


NO_TEMPLATE = "no_template"
"""Status of a template fit whose reference simulation has no candidates in the bin's pass or fail category."""
NO_CONSTRAINT = "no_constraint"
"""Status of a constrained fit whose simulation fit gives no usable value of a constrained parameter."""


def reference_options(fit: Any, parameters: Mapping[str, Mapping[str, Any]], template: Any = None,
                      constraint: Mapping[str, Any] | None = None,
                      keep: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, Any], str]:
    """What the reference simulation adds to a pass/fail fit of ``fit`` (a :class:`calibflow.config.FitConfig`):
    (fit options: ``signal``/``signal_fail`` templates, ``constraints``, ``parameters`` with fixed values,
    ``keep``; fields for the result: ``template``, ``constraints``; a status if the fit cannot be made, else '').
    ``template``: the reference sample's histograms of the bin (:class:`calibflow.fit.histograms.BinHistograms`),
    ``constraint``: the result of its simulation fit of the bin; ``keep``: parameters the reported model must have
    (the simulation fit of ``fit.constrain`` keeps the constrained ones: no retry with a simpler signal lacking
    them)."""
    from calibflow.fit.templates import TEMPLATE, template_record, template_signals

    opts: dict[str, Any] = {"keep": tuple(keep)} if keep else {}
    extra: dict[str, Any] = {}
    if fit.signal == TEMPLATE:
        if template is None or fit.template is None:
            raise ValueError("fit.signal template: needs fit.template.from and the reference sample's histograms")
        record = template_record(template.edges, template.sumw, template.sumw2, template.weighted, fit.template.smooth)
        extra["template"] = record
        try:
            opts["signal"], opts["signal_fail"] = template_signals(record)
        except ValueError:
            return opts, extra, NO_TEMPLATE
    if fit.constrain is not None:
        if constraint is None:
            raise ValueError("fit.constrain: needs the simulation fit of the bin")
        try:
            cons, fixed = from_result(constraint, fit.constrain.parameters, fit.constrain.scale, fit.constrain.fix)
        except ValueError:
            return opts, extra, NO_CONSTRAINT
        opts["constraints"] = cons
        opts["parameters"] = merge_fixed(parameters, fixed)
        extra["constraints"] = {n: list(v) for n, v in cons.items()}
        extra["constraints_fixed"] = {n: s["value"] for n, s in fixed.items()}
        extra["constraint_status"] = str(constraint.get("status", ""))
    return opts, extra, ""
