"""Closure after applying the corrections (config ``closure_after_apply``; issue 20 item 7).

After the export, the simulation sample's prepared candidates (the config's selection, mass range and bins) are
reweighted as ``calibflow apply`` does: every candidate's scale factor SF(x) is evaluated from the published
``corrections.json`` by correctionlib (``syst`` = ``nominal``), and the efficiency is measured again, as method
count with weights:

    ε_corr = Σ_pass w·SF / Σ_all w          (w: the sample's own weight, 1 if none)

An efficiency scale factor weights the *passing* candidates only: weighting every candidate (an event weight)
would leave the efficiency unchanged. Closure holds when ε_corr equals the data efficiency per bin.

Errors: σ_corr² = Σ w²(pass·SF − ε_corr)² / (Σw)² (delta method of the ratio, the closure sample's statistics);
the scale factor's own errors enter through ε_corr = ε'·ε_data/ε_MC (ε' the closure sample's uncorrected
efficiency, ε_MC the reference's): its simulation part as ε'·stat_mc (``stat_mc`` of ``scale_factors.csv``), the
data efficiency to first order not at all (it is in both terms of the difference), to second order as
(ε'/ε_MC − 1)·σ_data. So ``eff_mc_corrected_err`` = σ_corr ⊕ ε'·stat_mc and pull = (ε_corr − ε_data) /
(eff_mc_corrected_err ⊕ (ε'/ε_MC − 1)·σ_data); symmetric errors are the mean of the two sides; systematics are left
out (a statistical closure). With the reference sample itself ε' = ε_MC and closure is exact by construction
(pulls 0 up to rounding: a check of the chain — lookup, clamping, bin assignment); an independent simulation sample
(``closure_after_apply: {sample: ...}``) gives pulls that follow N(0, 1) when the correction closes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from calibflow.export.report import Figure, Folder, Heading, Links, Section, pull_stats
from calibflow.io.store import atomic_path, read_columns
from calibflow.plan import Plan
from calibflow.prep.spec import MASS, WEIGHT
from calibflow.tables.assemble import base_folders
from calibflow.tables.rows import Row, read_csv, write_csv
from calibflow.tables.write import CORRECTIONS, EFFICIENCIES, SCALE_FACTORS

TABLE = "closure_after_apply.csv"
FIGURE = os.path.join("plots", "closure_after_apply.png")
EXACT = 1e-9
"""Largest |ε_corr − ε_data| of a closure on the reference sample itself that counts as exact."""


def corrected_sums(plan: Plan, sample: str, evaluate: Callable[..., Any]) -> tuple[np.ndarray, ...]:
    """Per bin of ``plan``'s scheme: Σw, Σw·pass, Σw·pass·SF and Σw²(pass·SF)², Σw²·pass·SF, Σw² over the prepared
    candidates of ``sample`` in the mass range (``evaluate``: the correction's evaluate, binning variables then
    ``syst``)."""
    scheme = plan.load_scheme()
    lo, hi = plan.config.mass_spec.range
    n = len(scheme)
    sums = [np.zeros(n) for _ in range(6)]
    for i in range(len(plan.input_files(sample))):
        if plan.is_excluded(sample, i):
            continue
        cols = read_columns(plan.prep_path(sample, i))
        idx = scheme.locate(cols)
        keep = (idx >= 0) & (cols[MASS] >= lo) & (cols[MASS] < hi)
        w = np.asarray(cols[WEIGHT], dtype=float)[keep] if WEIGHT in cols else np.ones(int(keep.sum()))
        passed = np.broadcast_to(np.asarray(cols[plan.pass_column], dtype=bool), keep.shape)[keep]
        sf = np.asarray(evaluate(*[np.asarray(cols[v], dtype=float)[keep] for v in scheme.variables], "nominal"))
        y = np.where(passed, sf, 0.0)
        for acc, val in zip(sums, (w, w * passed, w * y, (w * y) ** 2, w * w * y, w * w), strict=True):
            acc += np.bincount(idx[keep], weights=val, minlength=n)
    return tuple(sums)


def closure_rows(plan: Plan, folder: str, sample: str | None) -> list[Row]:
    """The rows of :data:`TABLE` for every data sample of ``folder``'s scale factors (module docstring)."""
    import correctionlib

    sf_rows = read_csv(os.path.join(folder, SCALE_FACTORS))
    eff = {(r["sample"], int(r["bin"])): r for r in read_csv(os.path.join(folder, EFFICIENCIES))}
    cset = correctionlib.CorrectionSet.from_file(os.path.join(folder, CORRECTIONS))
    names = list(cset.keys())
    out: list[Row] = []
    for data, mc in dict.fromkeys((r["data"], r["mc"]) for r in sf_rows):
        name = names[0] if len(names) == 1 else next(n for n in names if n.endswith(f"_{data}_over_{mc}"))
        closure = sample or mc
        s_w, s_p, s_c, s_c2, s_wc, s_w2 = corrected_sums(plan, closure, cset[name].evaluate)
        for r in (r for r in sf_rows if r["data"] == data):
            k = int(r["bin"])
            d, m = eff[(data, k)], eff[(mc, k)]
            row: Row = {"data": data, "mc": mc, "sample": closure, "bin": k,
                        **{c: v for c, v in r.items() if c.endswith(("_lo", "_hi"))}}
            corr = s_c[k] / s_w[k] if s_w[k] > 0 else math.nan
            raw = s_p[k] / s_w[k] if s_w[k] > 0 else math.nan
            # Σ w²(y − ε)² = Σw²y² − 2ε Σw²y + ε² Σw²
            var_c = (s_c2[k] - 2 * corr * s_wc[k] + corr**2 * s_w2[k]) / s_w[k] ** 2 if s_w[k] > 0 else math.nan
            sig_data = 0.5 * (float(d["err_down"]) + float(d["err_up"]))
            stat_mc = 0.5 * (float(r["stat_mc_down"]) + float(r["stat_mc_up"]))
            err = math.sqrt(max(var_c, 0.0) + (raw * stat_mc) ** 2)
            second = (raw / float(m["efficiency"]) - 1.0) * sig_data
            diff = corr - float(d["efficiency"])
            denom = math.hypot(err, second)
            row.update(eff_data=float(d["efficiency"]), eff_data_err=sig_data, eff_mc=raw,
                       eff_mc_corrected=corr, eff_mc_corrected_err=err,
                       pull=diff / denom if denom > 0 else math.nan, same_sample=int(closure == mc))
            out.append(row)
    return out


def verdict(rows: Sequence[Row]) -> tuple[str, bool]:
    """One line per (data, closure sample) pair and whether every one closes: exact for the reference sample
    itself, pulls consistent with N(0, 1) (report's closure rule) for an independent sample."""
    lines, good = [], True
    for data, sample in dict.fromkeys((r["data"], r["sample"]) for r in rows):
        mine = [r for r in rows if (r["data"], r["sample"]) == (data, sample)]
        if int(mine[0]["same_sample"]):
            diffs = [abs(r["eff_mc_corrected"] - r["eff_data"]) for r in mine]
            worst = max((x for x in diffs if math.isfinite(x)), default=0.0)  # bins without a measurement: none
            ok = worst < EXACT
            lines.append(f"{sample} corrected to {data}: " + (f"exact (largest |Δε| {worst:.1e}; the reference "
                         "itself: by construction)" if ok else f"NOT exact: largest |Δε| {worst:.3g}"))
        else:
            s = pull_stats(f"{sample} corrected to {data}", [r["pull"] for r in mine])
            ok = s.consistent
            lines.append(f"{s.label}: pulls mean {s.mean:+.2f}, width {s.width:.2f} over {len(s.pulls)} bins: "
                         f"{s.verdict}")
        good &= ok
    return "\n".join(lines), good


def clear_closure_after_apply(folder: str) -> None:
    """Remove the :data:`TABLE` of an earlier export from ``folder`` (every CSV of a folder is published)."""
    if os.path.exists(os.path.join(folder, TABLE)):
        os.remove(os.path.join(folder, TABLE))


def write_closure_after_apply(plan: Plan, folder: str) -> list[str]:
    """:data:`TABLE` in ``folder`` when the config asks for it and the folder has a
    ``corrections.json`` (not for products of methods); returns the files written."""
    opt = plan.nominal_config.closure_after_apply
    if opt is None or not os.path.exists(os.path.join(folder, CORRECTIONS)):
        return []
    if folder not in {f for _, f in base_folders(plan)}:  # a product of methods has no candidates of its own
        return []
    table = os.path.join(folder, TABLE)
    write_csv(table, closure_rows(plan, folder, opt.sample))
    return [table]


def plot_closure_after_apply(rows: Sequence[Row], path: str) -> None:
    """Per bin: data, uncorrected and corrected simulation efficiencies; below, the pulls (±1, ±2 bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = list(dict.fromkeys((r["data"], r["sample"]) for r in rows))
    with plt.style.context("default"):
        fig, axes = plt.subplots(2, len(groups), figsize=(max(6.0, 0.3 * len(rows) + 2), 4.8), dpi=100,
                                 squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 1.3]})
        for (data, sample), top, bottom in zip(groups, axes[0], axes[1], strict=True):
            mine = [r for r in rows if (r["data"], r["sample"]) == (data, sample)]
            x = np.arange(len(mine))
            top.errorbar(x - 0.15, [r["eff_data"] for r in mine], [r["eff_data_err"] for r in mine], fmt="o", ms=3,
                         color="k", label=data)
            top.plot(x, [r["eff_mc"] for r in mine], "s", mfc="none", ms=4, color="#3182bd", label=f"{sample}")
            top.errorbar(x + 0.15, [r["eff_mc_corrected"] for r in mine], [r["eff_mc_corrected_err"] for r in mine],
                         fmt="D", ms=3, color="#e6550d", label=f"{sample} × SF")
            top.set_ylabel("efficiency")
            top.set_title(f"{data} vs {sample} weighted by the scale factors", fontsize=10)
            top.legend(fontsize=8, frameon=False)
            bottom.axhspan(-2, 2, color="0.93")
            bottom.axhspan(-1, 1, color="0.85")
            bottom.plot(x, [r["pull"] for r in mine], "o", ms=3, color="#e6550d")
            bottom.set_ylim(-4, 4)
            bottom.set_ylabel("pull")
            bottom.set_xlabel("bin")
            bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def add_to_section(section: Section, folders: Sequence[Folder], out_dir: str) -> list[str]:
    """Append the closure after applying (figure, verdict, link to the table) of every folder that has it to the
    report's closure ``section`` (:func:`calibflow.export.report.closure_section`); returns the figures drawn
    (:data:`FIGURE` per folder, drawn here as the report's own figures are)."""
    found, drawn = [], []
    for folder in folders:
        table = os.path.join(folder.path, TABLE)
        if folder.plan.nominal_config.closure_after_apply is None or not os.path.exists(table):
            continue  # a table left from an earlier export of the same tables does not count
        rows = read_csv(table)
        text, good = verdict(rows)
        drawn.append(os.path.join(folder.path, FIGURE))
        plot_closure_after_apply(rows, drawn[-1])
        label = folder.label
        section.blocks += [Heading("After applying the corrections" + (f" ({label})" if label else "")),
                           Figure(os.path.relpath(os.path.join(folder.path, FIGURE), out_dir),
                                  "efficiency of the simulation weighted by the scale factor vs data", "wide"),
                           Links([(TABLE, os.path.relpath(table, out_dir), text)], ["ok" if good else "warn"])]
        found.append((f"{label}: {text}" if label else text, good))
    if found:
        lines = [t for t, _ in found]
        first = section.verdict if section.verdict and not section.verdict.startswith("no closure table") else ""
        section.verdict = "\n".join(x for x in [first, "after applying: " + "; ".join(lines)] if x)
        if not all(g for _, g in found):
            section.level = "warn"
    return drawn
