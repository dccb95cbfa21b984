"""ROC points of a cut scan: efficiency of a signal sample versus that of a background sample per
working point, per bin and integrated over the binning range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from calibflow.tables.rows import Row


def roc_rows(per_wp: Mapping[str, Sequence[Row]], signal: str, background: str, binned: bool = True) -> list[Row]:
    """One row per (working point, bin): signal and background efficiencies with their errors.

    ``per_wp`` maps working point -> efficiency rows (``sample``, ``bin``, bounds, efficiency, errors).
    With ``binned=False`` the bin column reads ``inclusive``.
    """
    out = []
    for wp, rows in per_wp.items():
        by = {(r["sample"], r["bin"]): r for r in rows}
        for (sample, b), s in sorted(by.items()):
            if sample != signal or (background, b) not in by:
                continue
            bkg = by[(background, b)]
            bounds = {k: v for k, v in s.items() if k.endswith(("_lo", "_hi"))}
            out.append({
                "working_point": wp,
                "bin": b if binned else "inclusive",
                **bounds,
                "eff_signal": s["efficiency"],
                "err_signal_down": s["err_down"],
                "err_signal_up": s["err_up"],
                "eff_background": bkg["efficiency"],
                "err_background_down": bkg["err_down"],
                "err_background_up": bkg["err_up"],
            })
    return out
