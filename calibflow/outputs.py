"""Assemble tables from per-bin results, combine systematics, export and publish them.

Per variant: ``efficiencies.csv``, ``scale_factors.csv`` and (toys) ``closure.csv``. Combined (nominal
with every systematic source): the same files with ``<source>Up/Down``, ``syst`` and ``total_up/down``
columns, the master table ``calibration.json``/``calibration.h5``, and the exports: ``corrections.json``
(correctionlib), ``corrections.root`` (TH1D/TH2D), ``tables.md``, ``tables.tex``, ``plots/`` and a
``report.md``/``report.html`` page linking everything.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from calibflow.binning import BinningScheme
from calibflow.config import OutputsConfig, Variation
from calibflow.io.store import atomic_path
from calibflow.systematics import combine
from calibflow.tables import Row, closure_rows, efficiency_rows, read_csv, scale_factor_rows, write_csv

EFFICIENCIES, SCALE_FACTORS, CLOSURE, CORRECTIONS = "efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json"
MASTER_JSON, MASTER_H5, ROOT_FILE, ROC = "calibration.json", "calibration.h5", "corrections.root", "roc.csv"
MANIFEST = "manifest.json"


def write_tables(
    out_dir: str,
    scheme: BinningScheme,
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    truth: Mapping[str, np.ndarray | None],
) -> list[str]:
    """Write efficiencies.csv, scale_factors.csv and (with toy truth) closure.csv; return the files."""
    eff = efficiency_rows(scheme, results)
    sf = [row for d, m in pairs for row in scale_factor_rows(eff, d, m)]
    written = [os.path.join(out_dir, EFFICIENCIES), os.path.join(out_dir, SCALE_FACTORS)]
    write_csv(written[0], eff)
    write_csv(written[1], sf)
    true = {(s, i): float(t[i]) for s, t in truth.items() if t is not None for i in range(len(t)) if np.isfinite(t[i])}
    if true:
        written.append(os.path.join(out_dir, CLOSURE))
        write_csv(written[-1], closure_rows(eff, sf, true))
    return written


def combine_tables(
    out_dir: str, nominal_dir: str, varied_dirs: Mapping[str, str], sources: Sequence[Variation], method: str
) -> list[str]:
    """Nominal tables extended with the systematic columns of ``sources`` (runs in ``varied_dirs``)."""
    written = []
    for name, keys, value in ((EFFICIENCIES, ("sample", "bin"), "efficiency"), (SCALE_FACTORS, ("data", "bin"), "scale_factor")):
        nominal = read_csv(os.path.join(nominal_dir, name))
        varied = {run: read_csv(os.path.join(d, name)) for run, d in varied_dirs.items()}
        path = os.path.join(out_dir, name)
        write_csv(path, combine(nominal, varied, sources, method, value, keys))
        written.append(path)
    if os.path.exists(os.path.join(nominal_dir, CLOSURE)):
        path = os.path.join(out_dir, CLOSURE)
        os.makedirs(out_dir, exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(os.path.join(nominal_dir, CLOSURE), tmp)
        written.append(path)
    return written


def _columns(rows: Sequence[Row]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        out[k] = np.array(vals, dtype="S") if any(isinstance(v, str) for v in vals) else np.array(vals, dtype=float)
    return out


def write_master(out_dir: str, metadata: Mapping[str, Any], extra: Mapping[str, Sequence[Row]] = {}) -> list[str]:
    """The master table of ``out_dir``: every table plus metadata, as JSON and as HDF5 (one group each)."""
    tables: dict[str, list[Row]] = {
        name[:-4]: read_csv(os.path.join(out_dir, name))
        for name in (EFFICIENCIES, SCALE_FACTORS, CLOSURE)
        if os.path.exists(os.path.join(out_dir, name))
    }
    tables.update({k: list(v) for k, v in extra.items()})
    jpath, hpath = os.path.join(out_dir, MASTER_JSON), os.path.join(out_dir, MASTER_H5)
    with atomic_path(jpath) as tmp, open(tmp, "w") as f:
        json.dump({"metadata": metadata, "tables": tables}, f, indent=1, default=str)
    with atomic_path(hpath) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["metadata"] = json.dumps(metadata, default=str)
        for name, rows in tables.items():
            g = h5.create_group(name)
            for col, arr in _columns(rows).items():
                g[col] = arr
    return [jpath, hpath]


def _categories(rows: Sequence[Row], sources: Sequence[Variation]) -> dict[str, dict[int, float]]:
    def col(f) -> dict[int, float]:
        return {r["bin"]: float(f(r)) for r in rows}

    cats = {
        "nominal": col(lambda r: r["scale_factor"]),
        "up": col(lambda r: r["scale_factor"] + r["total_up"]),
        "down": col(lambda r: r["scale_factor"] - r["total_down"]),
        "statUp": col(lambda r: r["scale_factor"] + r["err_up"]),
        "statDown": col(lambda r: r["scale_factor"] - r["err_down"]),
        "systUp": col(lambda r: r["scale_factor"] + r["syst"]),
        "systDown": col(lambda r: r["scale_factor"] - r["syst"]),
    }
    for src in sources:
        for suffix in ("Up", "Down"):
            cats[f"{src.name}{suffix}"] = col(lambda r, k=f"{src.name}{suffix}": r[k])
    return cats


def export_tables(
    out_dir: str, scheme: BinningScheme, name: str, outputs: OutputsConfig, sources: Sequence[Variation]
) -> list[str]:
    """Exports of the combined tables in ``out_dir``: correctionlib, ROOT, Markdown, LaTeX, plots."""
    from calibflow.export.correctionlib import build_correction, write_correction_set
    from calibflow.export.root import histograms, write_root
    from calibflow.export.text import table_lines, write_text_tables

    written = []
    eff = read_csv(os.path.join(out_dir, EFFICIENCIES))
    sf = read_csv(os.path.join(out_dir, SCALE_FACTORS))
    datas = sorted({r["data"] for r in sf})

    def cname(data: str, rows: Sequence[Row]) -> str:
        return f"{name}_{data}_over_{rows[0]['mc']}" if len(datas) > 1 else name

    if outputs.correctionlib and sf:
        corrections = []
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            corrections.append(build_correction(cname(data, rows), scheme, _categories(rows, sources), flow=outputs.flow))
        path = os.path.join(out_dir, CORRECTIONS)
        write_correction_set(path, corrections, description=f"calibflow scale factors of {name}")
        written.append(path)
    if outputs.root and len(scheme.variables) <= 2:
        hists = {}
        for sample in sorted({r["sample"] for r in eff}):
            rows = [r for r in eff if r["sample"] == sample]
            hists.update(histograms(scheme, f"eff_{sample}", {r["bin"]: r["efficiency"] for r in rows},
                                    {r["bin"]: max(r["total_down"], r["total_up"]) for r in rows}))
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            hists.update(histograms(scheme, f"sf_{data}", {r["bin"]: r["scale_factor"] for r in rows},
                                    {r["bin"]: max(r["total_down"], r["total_up"]) for r in rows}))
        path = os.path.join(out_dir, ROOT_FILE)
        write_root(path, hists)
        written.append(path)
    variables = list(scheme.variables)
    if outputs.markdown or outputs.latex:
        eff_cols = [("efficiency", "efficiency", "total_down", "total_up")]
        sf_cols = [("scale factor", "scale_factor", "total_down", "total_up"), ("stat.", "scale_factor", "err_down", "err_up")]
        for latex, ext, wanted in ((False, "md", outputs.markdown), (True, "tex", outputs.latex)):
            if not wanted:
                continue
            sections = [(f"efficiency, {s}", table_lines([r for r in eff if r["sample"] == s], variables, eff_cols, latex))
                        for s in sorted({r["sample"] for r in eff})]
            sections += [(f"scale factor, {d}", table_lines([r for r in sf if r["data"] == d], variables, sf_cols, latex))
                         for d in datas]
            path = os.path.join(out_dir, f"tables.{ext}")
            write_text_tables(path, sections, latex)
            written.append(path)
    if outputs.plots:
        written += _plots(out_dir, variables, eff, sf, name)
    return written


def _plots(out_dir: str, variables: Sequence[str], eff: Sequence[Row], sf: Sequence[Row], name: str) -> list[str]:
    from calibflow.plots import plot_efficiency_vs, plot_map

    written = []
    for var in variables:
        others = [v for v in variables if v != var]
        path = os.path.join(out_dir, "plots", f"efficiency_vs_{var}.png")
        plot_efficiency_vs(eff, var, others, path, title=name, ratios=sf)
        written.append(path)
    if len(variables) == 2 and sf:
        for data in sorted({r["data"] for r in sf}):
            path = os.path.join(out_dir, "plots", f"scale_factor_map_{data}.png")
            plot_map([r for r in sf if r["data"] == data], variables[0], variables[1], "scale_factor", path,
                     title=f"{name}: {data}")
            written.append(path)
    return written


def write_report(workdir: str, title: str, files: Sequence[str], summary: Sequence[str] = ()) -> list[str]:
    """``report.md`` and ``report.html`` under ``workdir`` linking ``files`` (paths under workdir)."""
    rel = [os.path.relpath(f, workdir) for f in files]
    md = [f"# {title}", "", *summary, "", "## Tables and exports", ""]
    md += [f"- [{r}]({r})" for r in rel if not r.endswith(".png")]
    md += ["", "## Plots", ""] + [f"![{r}]({r})" for r in rel if r.endswith(".png")]
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(s)}</p>" for s in summary]
    body += ["<h2>Tables and exports</h2><ul>"]
    body += [f'<li><a href="{html.escape(r)}">{html.escape(r)}</a></li>' for r in rel if not r.endswith(".png")]
    body += ["</ul><h2>Plots</h2>"]
    body += [f'<figure><img src="{html.escape(r)}" width="640"><figcaption>{html.escape(r)}</figcaption></figure>'
             for r in rel if r.endswith(".png")]
    paths = [os.path.join(workdir, "report.md"), os.path.join(workdir, "report.html")]
    with atomic_path(paths[0]) as tmp, open(tmp, "w") as f:
        f.write("\n".join(md) + "\n")
    with atomic_path(paths[1]) as tmp, open(tmp, "w") as f:
        f.write("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title></head><body>"
                + "\n".join(body) + "</body></html>\n")
    return paths


def publish(out_dir: str, workdir: str, key: str, files: Sequence[str]) -> list[str]:
    """Copy ``files`` (under ``out_dir``) to ``workdir`` and record ``key`` in manifest.json last."""
    old = _manifest(workdir).get("files", [])
    published = []
    for src in files:
        dst = os.path.join(workdir, os.path.relpath(src, out_dir))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        published.append(dst)
    with atomic_path(os.path.join(workdir, MANIFEST)) as tmp, open(tmp, "w") as f:
        json.dump({"key": key, "files": [os.path.relpath(p, workdir) for p in published]}, f, indent=1)
    for rel in set(old) - {os.path.relpath(p, workdir) for p in published}:
        stale = os.path.join(workdir, rel)
        if os.path.isfile(stale):
            os.remove(stale)
    return published


def _manifest(workdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(workdir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_published(workdir: str, key: str) -> bool:
    """Whether ``workdir`` holds the published outputs of ``key`` (manifest and every file)."""
    manifest = _manifest(workdir)
    return bool(manifest) and manifest.get("key") == key and all(os.path.exists(os.path.join(workdir, p)) for p in manifest["files"])
