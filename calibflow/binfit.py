"""Measure the efficiency of one bin: a simultaneous pass/fail fit or a cut-and-count."""

from __future__ import annotations

from typing import Any

from calibflow.config import FitConfig
from calibflow.fit.counting import count_efficiency
from calibflow.fit.passfail import fit_pass_fail
from calibflow.histos import BinHistograms


def measure_bin(h: BinHistograms, method: str, fit: FitConfig) -> dict[str, Any]:
    """Efficiency, asymmetric errors, signal yields and status of one bin (JSON-ready dict)."""
    total_w = float(h.sumw.sum())
    if total_w <= 0:
        return {"method": method, "efficiency": float("nan"), "err_down": float("nan"), "err_up": float("nan"),
                "n_pass": 0.0, "n_fail": 0.0, "status": "empty_bin"}
    if method == "count":
        w2 = float(h.sumw2.sum()) if h.weighted else None
        c = count_efficiency(float(h.sumw[0].sum()), total_w, w2)
        return {"method": method, "efficiency": c.efficiency, "err_down": c.err_down, "err_up": c.err_up,
                "n_pass": c.passed, "n_fail": c.total - c.passed, "status": "ok"}
    r = fit_pass_fail(
        h.edges,
        h.sumw[0],
        h.sumw[1],
        h.sumw2[0] if h.weighted else None,
        h.sumw2[1] if h.weighted else None,
        signal=fit.signal,
        background=fit.background,
        parameters={k: v.model_dump() for k, v in fit.parameters.items()},
        strategy=fit.strategy,
        minos=fit.minos,
    )
    return {"method": method, **r.to_dict()}
