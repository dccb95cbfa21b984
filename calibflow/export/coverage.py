"""The coverage table, figure and page of ``calibflow coverage`` (docs/fits.md, "Coverage"), and the coverage
rows of the nominal tables for the report and the closing lines of ``calibflow run`` (config ``coverage``).

From the per-bin coverage records (:func:`calibflow.fit.coverage.bin_coverage`) and the bins' results:
``coverage.csv`` (one row per sample and bin, with ``coverage_off``), ``coverage.png`` (coverage per bin
against 68.27 % with binomial errors, and the pull widths) and ``coverage.html``/``coverage.md``. The
scale-factor coverage (:func:`calibflow.tables.coverage.sf_summary`) pairs toy i of the data sample with toy i of
the simulation sample; it is in the data sample's row. :func:`table_rows` reads the same quantities back from
the coverage columns of ``efficiencies.csv`` and ``scale_factors.csv`` (:mod:`calibflow.tables.coverage`).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.fit.coverage import MAX_SIGMA, NOMINAL, WIDTH_RANGE
from calibflow.io.store import atomic_path
from calibflow.tables.coverage import COVERAGE_OFF, sf_summary
from calibflow.tables.rows import Row, bin_columns, write_csv

CSV, PNG, HTML, MARKDOWN = "coverage.csv", "coverage.png", "coverage.html", "coverage.md"
Records = Mapping[tuple[str, int], Mapping[str, Any]]
MEANINGS = {
    "under_coverage": f"the ±1σ intervals hold the generating value in fewer toys than {NOMINAL:.2%} (3 binomial σ)",
    "over_coverage": f"the ±1σ intervals hold the generating value in more toys than {NOMINAL:.2%} (3 binomial σ)",
    "pull_width": f"the pull width is outside [{WIDTH_RANGE[0]}, {WIDTH_RANGE[1]}] (and 3 of its errors from 1)",
}
"""What each ``coverage_off`` reason means (``sf_``: of the scale factor's toys)."""


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


def off_reasons_of(status: object, scale_factor: bool = False) -> list[str]:
    """The ``coverage_off`` reasons in a table row's status (:mod:`calibflow.tables.coverage`): of the ε toys, or
    (``scale_factor``) of the scale factor's own toys (``sf_`` prefixed)."""
    tags = [t for part in str(status).split("|") for t in part.split(",") if t.startswith(f"{COVERAGE_OFF}:")]
    reasons = [r for t in tags for r in t.split(":", 1)[1].split("+") if r]
    return [r for r in reasons if r.startswith("sf_") == scale_factor]


def table_rows(eff: Sequence[Row], sf: Sequence[Row]) -> list[Row]:
    """The rows of the nominal ``efficiencies.csv`` and ``scale_factors.csv`` with coverage columns in the shape of
    :func:`coverage_rows`' (``sample``: ``ε <sample>`` or ``scale factor <data>/<mc>``, with the bin's bounds and
    ``status``), for :func:`plot_coverage`, :func:`verdicts` and the report."""
    out = []
    for what, rows, status in (("ε", eff, "fit_status"), ("scale factor", sf, "status")):
        for r in rows:
            if "coverage_toys" not in r:
                continue
            reasons = off_reasons_of(r[status], what != "ε")
            out.append({"sample": f"{what} {r['sample'] if what == 'ε' else r['data'] + '/' + r['mc']}",
                        "bin": r["bin"], **{k: v for k, v in r.items() if k.endswith(("_lo", "_hi"))},
                        "n_toys": r["coverage_toys"], "failed": r["coverage_failed"],
                        "coverage_eff": r["coverage"], "coverage_eff_err": r["coverage_err"],
                        "pull_mean": r["coverage_pull_mean"], "pull_width": r["coverage_pull_width"],
                        "pull_width_err": r["coverage_pull_width_err"], "coverage_sf": math.nan,
                        "coverage_off": bool(reasons), "off_reason": ",".join(reasons), "status": r[status]})
    return out


def folder_rows(folder: str) -> list[Row]:
    """:func:`table_rows` of the ``efficiencies.csv`` and ``scale_factors.csv`` in ``folder`` (none missing)."""
    from calibflow.tables.rows import read_csv
    from calibflow.tables.write import EFFICIENCIES, SCALE_FACTORS

    paths = [os.path.join(folder, t) for t in (EFFICIENCIES, SCALE_FACTORS)]
    eff, sf = (read_csv(p) if os.path.exists(p) else [] for p in paths)
    return table_rows(eff, sf)


def plot_coverage(rows: Sequence[Row], path: str) -> None:
    """Coverage per bin (binomial errors) against 68.27 %, and the pull widths against [0.8, 1.2]: one series per
    ``sample`` of ``rows`` (ε of a sample, or a scale factor), bins off crossed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
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
    top.set_ylabel("coverage of ±1σ")
    top.legend(title="× coverage_off", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
        out.append(f"{sample}: {len(mine)} bin(s) x {mine[0]['n_toys']} toys, mean coverage {cov:.3f}{sf} "
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
