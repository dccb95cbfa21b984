"""Exports of the combined tables and their publication under ``<result_dir>/<name>/``.

``export_tables`` writes the exports of one folder of combined tables: ``corrections.json`` (correctionlib),
``corrections.root`` (TH1D/TH2D/TH3D, with ``corrections_root.txt``), ``tables.md``, ``tables.tex``
(grids) and ``plots/``; ``export_all`` does it for every folder of a plan, adds the report page (and
``LIMITED.txt`` for a quick try), and ``publish`` copies the set with its ``manifest.json``.

After a failed ``calibflow run`` the published files stay (the last good ones) and are marked stale
(:func:`mark_stale`: ``STALE.txt``, ``manifest.json``'s ``stale``, a report banner) until a run succeeds
(:func:`clear_stale`, and every :func:`publish`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

from calibflow.binning.scheme import BinningScheme
from calibflow.config import OutputsConfig, Variation
from calibflow.export.galleries import write_galleries
from calibflow.export.labels import VariableLabel, variable_labels
from calibflow.export.report import set_banner, write_report
from calibflow.io import jsonio
from calibflow.io.store import atomic_path
from calibflow.plan import Plan
from calibflow.tables.assemble import (
    base_folders,
    prep_reports,
    product_folders,
    write_masters,
)
from calibflow.tables.rows import YIELD_METHOD, Row, read_csv
from calibflow.tables.write import CORRECTIONS, EFFICIENCIES, ROC, ROOT_FILE, SCALE_FACTORS

MANIFEST = "manifest.json"
LIMITED = "LIMITED.txt"
"""Published with the outputs of a quick try (``calibflow run --limit/--max-files``): what was left out."""
STALE = "STALE.txt"
"""Beside the published files after a failed run: which run failed, which run the files come from."""
REPORTS = ("report.html", "report.md")


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
    out_dir: str, scheme: BinningScheme, name: str, outputs: OutputsConfig, sources: Sequence[Variation],
    labels: Mapping[str, VariableLabel] | None = None, limited: str = "",
) -> list[str]:
    """Exports of the combined tables in ``out_dir``: correctionlib, ROOT, Markdown, LaTeX, plots.
    ``labels``: per binning variable its label and unit (default: the name, no unit); ``limited``: what a
    quick try left out (said in the correctionlib description)."""
    labels = {v: labels[v] if labels and v in labels else VariableLabel(v, "") for v in scheme.variables}
    from calibflow.export.correctionlib import build_correction, write_correction_set
    from calibflow.export.grid import tables_of
    from calibflow.export.root import export_root
    from calibflow.export.text import write_text_tables

    written = []
    eff = read_csv(os.path.join(out_dir, EFFICIENCIES))
    sf_path = os.path.join(out_dir, SCALE_FACTORS)
    sf = read_csv(sf_path) if os.path.exists(sf_path) else []  # none without simulation
    datas = sorted({r["data"] for r in sf})

    def cname(data: str, rows: Sequence[Row]) -> str:
        return f"{name}_{data}_over_{rows[0]['mc']}" if len(datas) > 1 else name

    if outputs.correctionlib and sf:
        corrections = []
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            corrections.append(build_correction(cname(data, rows), scheme, _categories(rows, sources), flow=outputs.flow))
        path = os.path.join(out_dir, CORRECTIONS)
        description = f"calibflow scale factors of {name}" + (f" (LIMITED: {limited})" if limited else "")
        write_correction_set(path, corrections, description=description)
        written.append(path)
    tables = tables_of(eff, sf)
    axes = {v: lab.axis for v, lab in labels.items()}
    source_names = [s.name for s in sources]
    if outputs.root:
        written += export_root(out_dir, ROOT_FILE, name, scheme, tables, axes, source_names)
    variables = list(scheme.variables)
    for latex, ext, wanted in ((False, "md", outputs.markdown), (True, "tex", outputs.latex)):
        if wanted:
            path = os.path.join(out_dir, f"tables.{ext}")
            write_text_tables(path, name, scheme, tables, axes, source_names, latex)
            written.append(path)
    if outputs.plots:
        written += _plots(out_dir, variables, eff, sf, name, labels, outputs)
    return written


def _plots(
    out_dir: str, variables: Sequence[str], eff: Sequence[Row], sf: Sequence[Row], name: str,
    labels: Mapping[str, VariableLabel], outputs: OutputsConfig,
) -> list[str]:
    """``plots/efficiency_vs_<var>`` (a grid of slices of the other variables; ``_<samples>`` when more
    than four samples are split into groups) and, for 2-D schemes, ``plots/efficiency_map_<sample>`` and
    ``plots/scale_factor_map_<data>``, in every format of ``outputs.plot_formats``. Samples of method ``yield``
    have no efficiency: for 2-D schemes ``plots/yield_map_<sample>`` instead."""
    from calibflow.export.figures import (
        SF_LABEL,
        efficiency_range,
        plot_efficiency_grid,
        plot_map,
        sample_groups,
        sample_label,
    )
    from calibflow.export.grid import yield_rows

    kw = {"labels": labels, "style": outputs.plot_style, "formats": outputs.plot_formats}
    plots = os.path.join(out_dir, "plots")
    yields = yield_rows(eff)
    eff = [r for r in eff if r.get("method") != YIELD_METHOD]
    groups = sample_groups(sorted({r["sample"] for r in eff}), sorted({(r["data"], r["mc"]) for r in sf})) if eff else []
    written = []
    for group in groups:
        suffix = "" if len(groups) == 1 else "_" + "_".join(group)
        g_eff = [r for r in eff if r["sample"] in group]
        g_sf = [r for r in sf if r["data"] in group and r["mc"] in group]
        for var in variables:
            path = os.path.join(plots, f"efficiency_vs_{var}{suffix}")
            written += plot_efficiency_grid(g_eff, g_sf, var, [v for v in variables if v != var], path,
                                            title=name, **kw)
    if len(variables) == 2:
        xvar, yvar = variables
        vrange = efficiency_range(eff)
        pairs = sorted({(r["data"], r["mc"]) for r in sf})
        for sample in sorted({r["sample"] for r in eff}):
            path = os.path.join(plots, f"efficiency_map_{sample}")
            written += plot_map([r for r in eff if r["sample"] == sample], xvar, yvar, "efficiency", path,
                                title=f"{name}: {sample}", vrange=vrange, **kw,
                                colorbar_label=f"efficiency: {sample_label(sample, sample in {m for _, m in pairs})}")
        for data, mc in pairs:
            path = os.path.join(plots, f"scale_factor_map_{data}")
            written += plot_map([r for r in sf if r["data"] == data and r["mc"] == mc], xvar, yvar, "scale_factor",
                                path, title=f"{name}: {data}/{mc}", **kw,
                                colorbar_label=SF_LABEL + (f" ({data}/{mc})" if len(pairs) > 1 else ""))
        for sample in sorted({r["sample"] for r in yields}):
            written += plot_map([r for r in yields if r["sample"] == sample], xvar, yvar, "n_sig",
                                os.path.join(plots, f"yield_map_{sample}"), title=f"{name}: {sample}", **kw,
                                colorbar_label=f"signal yield: {sample}")
    return written


def publish(out_dir: str, workdir: str, key: str, files: Sequence[str], config: str | None = None,
            **record: Any) -> list[str]:
    """Copy ``files`` (under ``out_dir``) to ``workdir`` and record ``key`` (the ``config`` path they come
    from and the items of ``record``) in manifest.json last; a stale marker (``STALE.txt``) goes."""
    old = _manifest(workdir).get("files", [])
    published = []
    for src in files:
        dst = os.path.join(workdir, os.path.relpath(src, out_dir))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        published.append(dst)
    _write_manifest(workdir, {"key": key, "config": config, **record,
                              "files": [os.path.relpath(p, workdir) for p in published]})
    for rel in [*set(old) - {os.path.relpath(p, workdir) for p in published}, STALE]:
        stale = os.path.join(workdir, rel)
        if os.path.isfile(stale):
            os.remove(stale)
    return published


def _write_manifest(workdir: str, manifest: Mapping[str, Any]) -> None:
    with atomic_path(os.path.join(workdir, MANIFEST)) as tmp, open(tmp, "w") as f:
        jsonio.dump(manifest, f, indent=1)


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



def export_all(plan: Plan) -> list[str]:
    """Every export, the report, and publication; returns the published paths."""
    cfg = plan.nominal_config
    out = plan.combined_dir()
    files: list[str] = prep_reports(plan, out) + write_masters(plan)
    for base, folder in [*base_folders(plan), *[(v, f) for _, f, v in product_folders(plan)]]:
        scheme = plan.with_variant(base).load_scheme()
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".csv", ".json", ".h5"))]
        files += export_tables(folder, scheme, cfg.outputs.correction_name or cfg.name, cfg.outputs,
                               cfg.systematics.sources, variable_labels(plan.with_variant(base).config),
                               plan.limits.note() if plan.limits else "")
    if cfg.roc:
        roc = os.path.join(out, ROC)
        if cfg.outputs.plots:
            from calibflow.export.figures import plot_roc

            rows = read_csv(roc)
            for r in rows:
                r["label"] = "inclusive" if r["bin"] == "inclusive" else f"bin {r['bin']}"
            files += plot_roc(rows, os.path.join(out, "plots", "roc"),
                              title=f"{cfg.name}: {cfg.roc.signal} vs {cfg.roc.background}",
                              style=cfg.outputs.plot_style, formats=cfg.outputs.plot_formats)
    if plan.limits:
        files.append(os.path.join(out, LIMITED))
        with atomic_path(files[-1]) as tmp, open(tmp, "w") as f:
            f.write(f"LIMITED: {plan.limits.note()}.\n")
    files = sorted(set(files))
    galleries = write_galleries(plan, out)  # fit figures: the report sees their index pages only
    if cfg.outputs.report:
        files += write_report(plan, out, files + [g for g in galleries if g.endswith(".html")])
    limits = {"limits": plan.limits.describe()} if plan.limits else {}
    return publish(out, plan.workdir, plan.export_key(), sorted(set(files + galleries)),
                   config=plan.config_path, config_sha256=plan.config_sha256(), **limits)


# ---------------------------------------------------------------- stale after a failed run ------------


def stale_state(workdir: str) -> dict[str, Any] | None:
    """What ``manifest.json`` says of a failed run after the published one (None: not stale)."""
    return _manifest(workdir).get("stale")


def mark_stale(plan: Plan, failures: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """After a failed run of ``plan``: mark the files published under its folder as stale (the record in
    manifest.json, ``STALE.txt`` and a banner in the published report) until a run succeeds. They stay: they
    are the last good ones. ``failures`` are (task label, reason). Returns the record (None: nothing is
    published, so nothing is marked)."""
    manifest = _manifest(plan.workdir)
    if not manifest:
        return None
    try:
        wanted: str | None = plan.export_key()
    except (OSError, ValueError):  # inputs gone since the run started: the key is unknown
        wanted = None
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    previous = manifest.get("stale") or {}
    record = {"since": previous.get("since", now), "failed_at": now, "config": plan.config_path,
              "config_sha256": plan.config_sha256(), "key": wanted, "why": _why_stale(plan, manifest, wanted),
              "limits": plan.limits.describe(),
              "failures": [f"{label}: {reason}" for label, reason in failures]}
    _write_manifest(plan.workdir, {**manifest, "stale": record})
    text = stale_text(manifest, record)
    with atomic_path(os.path.join(plan.workdir, STALE)) as tmp, open(tmp, "w") as f:
        f.write(f"STALE: {text}\n" + "".join(f"  FAILED {line}\n" for line in record["failures"]))
    _set_report_banners(plan.workdir, manifest, text)
    return record


def _why_stale(plan: Plan, manifest: Mapping[str, Any], wanted: str | None) -> str:
    """How the failed run differs from the published one, in a few words."""
    if manifest.get("config") != plan.config_path:
        return f"another config with the same name, {plan.config_path}"
    if manifest.get("config_sha256") not in (None, plan.config_sha256()):
        return "the config file changed"
    if wanted == manifest.get("key"):
        return "same config, inputs and options; published files were missing"
    return "same config file, changed inputs or run options"


def stale_text(manifest: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    """One line: the latest run failed, and which run the published files come from."""
    limited = " (a quick try)" if manifest.get("limits") else ""
    since = f", failing since {record['since']}" if record["since"] != record["failed_at"] else ""
    return (f"the latest calibflow run failed ({record['failed_at']}{since}: {record['why']}; "
            f"{len(record['failures'])} failure(s)). These files are the last good ones, of config "
            f"{manifest.get('config')}{limited}, key {manifest.get('key')}: not the tables of the latest "
            "config and inputs. They stay marked until a run succeeds")


def clear_stale(workdir: str) -> bool:
    """After a successful run whose outputs were already published (nothing re-exported): drop the stale
    marks of an earlier failed run. Returns whether there were any."""
    manifest = _manifest(workdir)
    marker = os.path.join(workdir, STALE)
    if "stale" not in manifest and not os.path.exists(marker):
        return False
    if "stale" in manifest:
        _write_manifest(workdir, {k: v for k, v in manifest.items() if k != "stale"})
    if os.path.exists(marker):
        os.remove(marker)
    _set_report_banners(workdir, manifest, None)
    return True


def _set_report_banners(workdir: str, manifest: Mapping[str, Any], text: str | None) -> None:
    """Set or remove (None) the ``stale`` banner of the published report pages."""
    for name in REPORTS:
        if name in manifest.get("files", []) and os.path.exists(os.path.join(workdir, name)):
            set_banner(os.path.join(workdir, name), "stale", text)
