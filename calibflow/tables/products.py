"""Combined efficiencies as products of independent methods (e.g. LHCb long-track efficiency from
the VeloMuon and Downstream tag-and-probe methods): values multiply, relative errors add in quadrature."""

from __future__ import annotations

import math
from collections.abc import Sequence

from calibflow.tables.rows import Row

ERROR_PAIRS = (("err_down", "err_up"), ("total_down", "total_up"))


def product_rows(tables: Sequence[Sequence[Row]], value: str, keys: Sequence[str], method_names: Sequence[str]) -> list[Row]:
    """Per-bin product of ``value`` over ``tables`` (one per method, same binning), with propagated
    ``err_down/up``, ``syst`` and ``total_down/up``, and the product of the varied values of every systematic
    column ``<source>Up``/``<source>Down``; the methods' own values are kept as ``<value>_<method>``.

    Raises ValueError when a bin's boundaries differ between methods.
    """
    index = [{tuple(r[k] for k in keys): r for r in rows} for rows in tables]
    out = []
    for key, first in index[0].items():
        rows = [ix.get(key) for ix in index]
        if any(r is None for r in rows):
            continue
        bounds = {k: v for k, v in first.items() if k.endswith(("_lo", "_hi"))}
        for name, r in zip(method_names, rows, strict=True):
            if any(r[k] != v for k, v in bounds.items()):
                raise ValueError(f"method {name!r}: bin {key} has other boundaries than {method_names[0]!r}")
        values = [float(r[value]) for r in rows]
        prod = math.prod(values)
        new: Row = {k: first[k] for k in keys}
        new.update(bounds)
        new[value] = prod
        for name, v in zip(method_names, values, strict=True):
            new[f"{value}_{name}"] = v
        for pair in ERROR_PAIRS:
            for side in pair:
                if all(side in r for r in rows):
                    new[side] = abs(prod) * math.sqrt(sum((float(r[side]) / v) ** 2 for r, v in zip(rows, values, strict=True)))
        for k in first:  # a systematic source varies every method coherently: the product of the varied values
            if k.endswith(("Up", "Down")) and k not in new and all(k in r for r in rows):
                new[k] = math.prod(float(r[k]) for r in rows)
        if all("syst" in r for r in rows):
            new["syst"] = abs(prod) * math.sqrt(sum((float(r["syst"]) / v) ** 2 for r, v in zip(rows, values, strict=True)))
        status = [str(r.get("fit_status", r.get("status", "ok"))) for r in rows]
        new["status"] = "ok" if all(s == "ok" for s in status) else "|".join(status)
        out.append(new)
    return out
