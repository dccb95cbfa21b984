"""The coverage table, figure and page of ``calibflow coverage`` (docs/fits.md, "Coverage").

From the per-bin coverage records (:func:`calibflow.fit.coverage.bin_coverage`) and the bins' results:
``coverage.csv`` (one row per sample and bin, with ``coverage_off``), ``coverage.png`` (coverage of ε per bin
against 68.27 % with binomial errors, and the pull widths) and ``coverage.html``/``coverage.md``. The
scale-factor coverage pairs toy i of the data sample with toy i of the simulation sample: the toy scale
factor ε_d,i/ε_m,i with the interval the tables give it (:func:`calibflow.tables.rows.ratio_errors`) against
the generating ε₀_d/ε₀_m; it is in the data sample's row.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.fit.coverage import MAX_SIGMA, NOMINAL, WIDTH_RANGE, Summary, summarise
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row, bin_columns, ratio_errors, write_csv

CSV, PNG, HTML, MARKDOWN = "coverage.csv", "coverage.png", "coverage.html", "coverage.md"
Records = Mapping[tuple[str, int], Mapping[str, Any]]


def sf_summary(data: Mapping[str, Any], mc: Mapping[str, Any]) -> Summary | None:
    """Scale-factor coverage of paired toys of a data and a simulation bin (None when either has no toys)."""
    n = min(len(data["efficiency"]), len(mc["efficiency"]))
    eff_m0 = float(mc["generating_efficiency"])
    if n == 0 or not eff_m0:
        return None
    sf, down, up = np.full(n, math.nan), np.full(n, math.nan), np.full(n, math.nan)
    for i in range(n):
        d = [float(data[k][i]) for k in ("efficiency", "err_down", "err_up")]
        m = [float(mc[k][i]) for k in ("efficiency", "err_down", "err_up")]
        if all(map(math.isfinite, d + m)) and m[0]:
            sf[i] = d[0] / m[0]
            down[i], up[i] = ratio_errors(*d, *m)
    return summarise(float(data["generating_efficiency"]) / eff_m0, sf, down, up)


def coverage_rows(scheme: BinningScheme, results: Records, records: Records,
                  pairs: Sequence[tuple[str, str]]) -> list[Row]:
    """One row per (sample, bin): the bin's result, the toys' pulls and coverage of ε and, in a data sample's
    row, of the scale factor with its simulation sample (``sf_mc``); ``coverage_off`` if either is off."""
    mc_of = dict(reversed(pairs))  # the first pair of a data sample
    rows = []
    for (sample, index), rec in sorted(records.items()):
        r = results[(sample, index)]
        row: Row = {"sample": sample, "bin": index, **bin_columns(scheme, index), "method": rec["method"],
                    "efficiency": r["efficiency"], "err_down": r["err_down"], "err_up": r["err_up"],
                    "fit_status": r["status"], "n_toys": rec["n_toys"], "toy_seed": rec["seed"]}
        eff = {k.removeprefix("eff_"): v for k, v in rec.items() if k.startswith("eff_")}
        n = eff["n_toys"]
        row.update({"failed_fraction": eff["n_failed"] / n if n else math.nan,
                    **{k: eff[k] for k in ("pull_mean", "pull_mean_err", "pull_width", "pull_width_err")},
                    "coverage_eff": eff["coverage"], "coverage_eff_err": eff["coverage_err"]})
        mc = mc_of.get(sample)
        sf = sf_summary(rec, records[(mc, index)]) if mc is not None and (mc, index) in records else None
        row.update({"sf_mc": mc if sf else "", "coverage_sf": sf.coverage if sf else math.nan,
                    "coverage_sf_err": sf.coverage_err if sf else math.nan,
                    "sf_pull_mean": sf.pull_mean if sf else math.nan,
                    "sf_pull_width": sf.pull_width if sf else math.nan,
                    "coverage_off": bool(eff["off"] or (sf is not None and sf.off)),
                    "off_reason": ",".join([*filter(None, eff.get("reason", "").split(",")),
                                            *(f"sf_{x}" for x in (sf.reason.split(",") if sf and sf.reason else []))]),
                    "skipped": rec["skipped"]})
        rows.append(row)
    return rows


def plot_coverage(rows: Sequence[Row], path: str) -> None:
    """Coverage of ε per bin (binomial errors) against 68.27 %, and the pull widths against [0.8, 1.2]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for k, sample in enumerate(dict.fromkeys(r["sample"] for r in rows)):
        mine = [r for r in rows if r["sample"] == sample and r["n_toys"]]
        x = np.array([r["bin"] for r in mine]) + 0.15 * k
        top.errorbar(x, [r["coverage_eff"] for r in mine], [r["coverage_eff_err"] for r in mine], fmt="o", ms=3,
                     label=sample)
        bottom.errorbar(x, [r["pull_width"] for r in mine], [r["pull_width_err"] for r in mine], fmt="o", ms=3)
        off = [r for r in mine if is_flagged(r)]
        top.plot(np.array([r["bin"] for r in off]) + 0.15 * k, [r["coverage_eff"] for r in off], "rx", ms=8)
    top.axhline(NOMINAL, color="k", lw=1)
    n = [r["n_toys"] for r in rows if r["n_toys"]]
    if n:  # the coverage test's band for the typical number of toys
        half = MAX_SIGMA * math.sqrt(NOMINAL * (1.0 - NOMINAL) / float(np.median(n)))
        top.axhspan(NOMINAL - half, NOMINAL + half, color="0.85", zorder=0, label="3 binomial σ")
    top.set_ylabel("coverage of ε (±1σ)")
    top.legend(title="× coverage_off", fontsize="small")
    for w in (*WIDTH_RANGE, 1.0):
        bottom.axhline(w, color="k", lw=1, ls="-" if w == 1.0 else ":")
    bottom.set_ylabel("pull width")
    bottom.set_xlabel("bin")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def is_flagged(row: Row) -> bool:
    """Whether ``row`` is ``coverage_off`` (a row as written, or as read back from the CSV)."""
    return str(row["coverage_off"]) in ("True", "1")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    return str(v)


PAGE_COLUMNS = ("sample", "bin", "method", "efficiency", "n_toys", "failed_fraction", "pull_mean", "pull_width",
                "coverage_eff", "coverage_eff_err", "coverage_sf", "off_reason", "skipped")


def verdicts(rows: Sequence[Row]) -> list[str]:
    """One line per sample: bins with toys, mean coverage of ε and of the scale factor, bins off."""
    out = []
    for sample in dict.fromkeys(r["sample"] for r in rows):
        mine = [r for r in rows if r["sample"] == sample and r["n_toys"]]
        if not mine:
            out.append(f"{sample}: no bin with toys")
            continue
        covs = [r["coverage_eff"] for r in mine if math.isfinite(r["coverage_eff"])]
        cov = float(np.mean(covs)) if covs else math.nan
        sfs = [r["coverage_sf"] for r in mine if math.isfinite(r["coverage_sf"])]
        sf = f", scale factor {np.mean(sfs):.3f}" if sfs else ""
        off = [r for r in mine if is_flagged(r)]
        under = sum("under_coverage" in str(r["off_reason"]) for r in off)
        out.append(f"{sample}: {len(mine)} bin(s) x {mine[0]['n_toys']} toys, mean coverage of ε {cov:.3f}{sf} "
                   f"(nominal {NOMINAL}); {len(off)} bin(s) coverage_off, {under} of them under-covering")
    return out


def write_page(folder: str, title: str, rows: Sequence[Row]) -> list[str]:
    """``coverage.html`` and ``coverage.md``: the verdicts, the figure and every bin that is off or skipped."""
    lines = verdicts(rows)
    shown = [r for r in rows if is_flagged(r) or r["skipped"]]
    rule = (f"coverage_off: |coverage − {NOMINAL}| > 3 binomial σ, or pull width outside "
            f"[{WIDTH_RANGE[0]}, {WIDTH_RANGE[1]}] (docs/fits.md, \"Coverage\"). Every bin: {CSV}.")
    head = "".join(f"<th>{c}</th>" for c in PAGE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in PAGE_COLUMNS) + "</tr>"
                   for r in shown)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "".join(f"<p>{html.escape(v)}</p>" for v in lines)
            + f"<p>{html.escape(rule)}</p><img src='{PNG}' alt='coverage per bin'>"
            + f"<h2>Bins off or skipped ({len(shown)})</h2><table><tr>{head}</tr>{body}</table></body></html>\n")
    md = [f"# {title}", "", *(f"* {v}" for v in lines), "", rule, "", f"![coverage per bin]({PNG})", "",
          f"## Bins off or skipped ({len(shown)})", "", "| " + " | ".join(PAGE_COLUMNS) + " |",
          "|" + " --- |" * len(PAGE_COLUMNS), *("| " + " | ".join(_fmt(r[c]) for c in PAGE_COLUMNS) + " |"
                                              for r in shown)]
    paths = [os.path.join(folder, HTML), os.path.join(folder, MARKDOWN)]
    for path, text in zip(paths, (page, "\n".join(md) + "\n"), strict=True):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(text)
    return paths


def write_coverage(folder: str, title: str, scheme: BinningScheme, results: Records, records: Records,
                   pairs: Sequence[tuple[str, str]]) -> list[Row]:
    """Write the figure, the page and, last (its existence says the folder is complete), ``coverage.csv``."""
    os.makedirs(folder, exist_ok=True)
    rows = coverage_rows(scheme, results, records, pairs)
    plot_coverage(rows, os.path.join(folder, PNG))
    write_page(folder, title, rows)
    write_csv(os.path.join(folder, CSV), rows)
    return rows
