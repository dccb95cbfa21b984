"""Exports of the combined tables and their publication under ``<result_dir>/<name>/``.

``export_tables`` writes the exports of one folder of combined tables: ``corrections.json`` (correctionlib),
``corrections.root`` (TH1D/TH2D/TH3D, with ``corrections_root.txt``), ``tables.md``, ``tables.tex``
(grids) and ``plots/``; ``export_all`` does it for every folder of a plan, adds the report page (and
``LIMITED.txt`` for a quick try), and ``publish`` publishes them with their ``manifest.json`` as one set.

Publishing switches a whole set at once (:func:`publish_set`): the set is built in its own folder
``<workdir>/.published/<n>-<key>.tmp-<pid>/`` (hard links to the exports, which calibflow only ever
replaces, never edits), renamed to ``<n>-<key>/`` when complete, and ``<workdir>/current`` (a symlink) is
switched to it by one atomic rename. The names readers open (``<workdir>/efficiencies.csv``, ``plots/``,
``manifest.json``, ...) are stable links ``<name> -> current/<name>``; :func:`published_dir` resolves
``current`` once, for a reader that must see one set across several files. The previous set stays (one
generation), older ones go. A folder of the per-file layout before sets is adopted as a set of its files
on its next publication (:func:`_adopt_legacy`).

After a failed ``calibflow run`` the published files stay (the last good ones) and are marked stale
(:func:`mark_stale`: ``STALE.txt``, ``manifest.json``'s ``stale``, a report banner) until a run succeeds
(:func:`clear_stale`, and every :func:`publish`); marking and clearing publish a new set too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from calibflow.binning.scheme import BinningScheme
from calibflow.config import OutputsConfig, Variation
from calibflow.export.closure_apply import (
    add_to_section,
    clear_closure_after_apply,
    write_closure_after_apply,
)
from calibflow.export.galleries import write_galleries
from calibflow.export.labels import VariableLabel, variable_labels
from calibflow.export.report import with_banner, write_report
from calibflow.export.uncertainty import correlations_section
from calibflow.io import jsonio
from calibflow.io.integrity import folder_files, sha256_file
from calibflow.io.store import atomic_path, pid_alive
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
SHA256 = "sha256"
"""Key of manifest.json: relative path -> SHA-256 of every other file of the set (``calibflow verify``)."""
LIMITED = "LIMITED.txt"
"""Published with the outputs of a quick try (``calibflow run --limit/--max-files``): what was left out."""
STALE = "STALE.txt"
"""Beside the published files after a failed run: which run failed, which run the files come from."""
REPORTS = ("report.html", "report.md")
PUBLISHED = ".published"
"""Folder of the published sets, ``<n>-<export key>/`` each (``.tmp-<pid>`` while one is built)."""
CURRENT = "current"
"""Link ``<workdir>/current -> .published/<set>``: the published set; switched by one atomic rename."""
KILL_AT = "CALIBFLOW_KILL_AT"
"""Environment variable naming a point of publication where the process group is killed (tests only)."""
_TMP = re.compile(r"\.tmp-(\d+)$")


PER_BIN_STAT = {
    "stat_data_bin{k}_up": ("stat_data_up", 1.0), "stat_data_bin{k}_down": ("stat_data_down", -1.0),
    "stat_mc_bin{k}_up": ("stat_mc_up", 1.0), "stat_mc_bin{k}_down": ("stat_mc_down", -1.0),
}
"""Per-bin statistical categories of ``corrections.json``: template -> (error column of the scale-factor table,
direction); bin k of ``template.format(k=k)`` is the scale factor moved by its own error, other bins nominal."""


def _categories(rows: Sequence[Row], sources: Sequence[Variation], stat: str = "merged") -> dict[str, dict[int, float]]:
    """Merged categories of ``corrections.json`` per bin: ``nominal``, total, statistical (unless ``stat`` is
    ``per_bin``), systematic and per-source variations."""
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
    if stat == "per_bin":
        del cats["statUp"], cats["statDown"]
    for src in sources:
        for suffix in ("Up", "Down"):
            cats[f"{src.name}{suffix}"] = col(lambda r, k=f"{src.name}{suffix}": r[k])
    return cats


def _per_bin(rows: Sequence[Row], stat: str) -> dict[str, dict[int, float]]:
    """Per-bin statistical categories (:data:`PER_BIN_STAT`) when ``stat`` asks for them; none for tables without
    the data and simulation parts of the statistical error (products of methods)."""
    if stat == "merged" or not all(c in r for r in rows for c, _ in PER_BIN_STAT.values()):
        return {}
    return {t: {r["bin"]: float(r["scale_factor"]) + sign * float(r[c]) for r in rows}
            for t, (c, sign) in PER_BIN_STAT.items()}


def export_tables(
    out_dir: str, scheme: BinningScheme, name: str, outputs: OutputsConfig, sources: Sequence[Variation],
    labels: Mapping[str, VariableLabel] | None = None, limited: str = "",
) -> list[str]:
    """Exports of the combined tables in ``out_dir``: correctionlib, ROOT, Markdown, LaTeX, plots.
    ``labels``: per binning variable its label and unit (default: the name, no unit); ``limited``: what a
    quick try left out (said in the correctionlib description)."""
    labels = {v: labels[v] if labels and v in labels else VariableLabel(v, "") for v in scheme.variables}
    from calibflow.export.correctionlib import build_correction, default_description, write_correction_set
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

    stat = outputs.correctionlib_stat
    if stat and sf:
        from calibflow.export.uncertainty import eigen_categories, folder_covariances

        corrections = []
        covariances = folder_covariances(out_dir) if outputs.eigen else {}
        for data in datas:
            rows = [r for r in sf if r["data"] == data]
            per_bin = _per_bin(rows, stat)
            merged = "merged" if stat != "merged" and not per_bin else stat  # a product: no per-bin parts
            notes = ["statistical uncertainty merged: a product of methods has no per-bin parts"] if merged != stat else []
            cov = covariances.get(f"scale_factor_{data}")
            eigen = eigen_categories(cov, outputs.eigen) if cov is not None and outputs.eigen else {}
            notes += ["no eigen-variations: a product of methods has no covariance"] if outputs.eigen and cov is None else []
            note = "; ".join(notes)
            corrections.append(build_correction(cname(data, rows), scheme, {**_categories(rows, sources, merged), **eigen},
                                               description=note and f"{default_description(scheme)}; {note}",
                                               flow=outputs.flow, missing=outputs.missing, per_bin=per_bin))
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
    """Publish ``files`` (under ``out_dir``) as one new set under ``workdir`` with its manifest.json
    recording ``key`` (the ``config`` path they come from and the items of ``record``), and switch to it at
    once (:func:`publish_set`); an earlier set's stale marks do not carry over. Returns the published paths
    (under ``workdir``'s stable names)."""
    rels = [os.path.relpath(src, out_dir) for src in files]
    _adopt_legacy(workdir)
    publish_set(workdir, key, dict(zip(rels, files, strict=True)),
                {"key": key, "config": config, **record, "files": rels})
    return [os.path.join(workdir, rel) for rel in rels]


# ---------------------------------------------------------------- sets, switched at once ---------------


def published_dir(workdir: str) -> str | None:
    """The folder of the set published under ``workdir``, resolved once: read every published file of one
    set from it (the stable names ``<workdir>/<name>`` follow ``current`` at each open). None: nothing is
    published as a set (nothing at all, or a folder of the per-file layout before sets)."""
    link = os.path.join(workdir, CURRENT)
    if not os.path.islink(link):
        return None
    target = os.path.realpath(link)
    return target if os.path.isdir(target) else None


def publish_set(workdir: str, key: str, links: Mapping[str, str], manifest: Mapping[str, Any],
                texts: Mapping[str, str] | None = None) -> str:
    """Build a new set ``<workdir>/.published/<n>-<key>/`` holding ``links`` (relative name -> source file;
    hard-linked, copied across file systems), ``texts`` (relative name -> content) and ``manifest``
    (manifest.json), then switch ``current`` to it with one atomic rename; the previous set stays one
    generation for readers in the middle of it, older ones go. Returns the new set's folder."""
    root = os.path.join(workdir, PUBLISHED)
    os.makedirs(root, exist_ok=True)
    building = _new_set(root, key)
    try:
        for rel, src in links.items():
            _link_or_copy(src, os.path.join(building, rel))
        for rel, text in (texts or {}).items():
            with open(_made(os.path.join(building, rel)), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        digests = {rel: sha256_file(os.path.join(building, rel)) for rel in sorted(folder_files(building))}
        with open(os.path.join(building, MANIFEST), "w") as f:  # the digests of what it lists: calibflow verify
            jsonio.dump({**manifest, SHA256: digests}, f, indent=1)
    except BaseException:  # a full disk, say: the published set stays as it was
        shutil.rmtree(building, ignore_errors=True)
        raise
    _sync_tree(building)  # the set's bytes on disk before any name points at it (an OS crash: old or new set)
    _fault("publish:built")
    final = building[: building.rindex(".tmp-")]
    os.rename(building, final)  # complete: a set without .tmp- in its name is whole
    _sync(root)
    _switch(workdir, os.path.basename(final), _top_names(final))
    return final


def _made(path: str) -> str:
    """``path``, its folder made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` as ``dst`` (safe: calibflow replaces files, never edits them in place); copy when
    the two are on different file systems (or links are refused)."""
    try:
        os.link(src, _made(dst))
    except OSError:
        shutil.copyfile(src, dst)


def _new_set(root: str, key: str) -> str:
    """A new, empty folder ``<root>/<n>-<key>.tmp-<pid>`` (``n``: one more than every set's number)."""
    n = 1 + max((_number(e) for e in os.listdir(root)), default=0)
    while True:
        path = os.path.join(root, f"{n}-{key}.tmp-{os.getpid()}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def _number(name: str) -> int:
    """The number of the set folder ``name`` (0: not a set)."""
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _top_names(folder: str) -> list[str]:
    """The names directly in ``folder``: the stable names of its set."""
    return sorted(os.listdir(folder))


def _switch(workdir: str, name: str, names: Sequence[str]) -> None:
    """Point ``<workdir>/current`` at ``.published/<name>`` (one atomic rename), with a stable link
    ``<workdir>/<n> -> current/<n>`` for each of ``names`` made before; then drop the links whose target
    is gone, and every set but this one and the previous."""
    link = os.path.join(workdir, CURRENT)
    previous = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
    for n in names:  # new names dangle until the switch: a reader sees the old set (or none) without them
        if not _legacy(os.path.join(workdir, n)):
            _stable_link(workdir, n)
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.join(PUBLISHED, name), tmp)
    _fault("publish:linked")
    os.replace(tmp, link)  # the switch: readers see the previous set or this one
    _sync(workdir)
    _fault("publish:switched")
    for n in names:  # files and folders of the per-file layout become links only now (see _adopt_legacy)
        _stable_link(workdir, n)
    _collect(workdir, {name, previous})


def _tidy(workdir: str) -> None:
    """Remove what killed publications left under ``workdir`` (see :func:`_collect`), keeping the current
    set and the newest other complete one."""
    current = published_dir(workdir)
    if current is None:
        return
    others = [e for e in os.listdir(os.path.dirname(current))
              if _number(e) and not _TMP.search(e) and e != os.path.basename(current)]
    _collect(workdir, {os.path.basename(current), max(others, key=_number, default=None)})


def _legacy(path: str) -> bool:
    """Whether ``path`` is a file or folder itself, not a link (a published name of the per-file layout)."""
    return os.path.lexists(path) and not os.path.islink(path)


def _stable_link(workdir: str, name: str) -> None:
    """Make ``<workdir>/<name>`` the link ``current/<name>``. A regular file there (the per-file layout) is
    replaced at once; a folder is moved away first, so it is briefly missing."""
    path = os.path.join(workdir, name)
    target = os.path.join(CURRENT, name)
    if os.path.islink(path) and os.readlink(path) == target:
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    old = None
    if _legacy(path) and os.path.isdir(path):
        old = os.path.join(workdir, PUBLISHED, f"legacy-{name}.tmp-{os.getpid()}")
        os.rename(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old)


def _sync_tree(folder: str) -> None:
    """fsync every file and folder under ``folder`` (hard links included: their data are the exports'), so
    that a crash of the machine after the switch cannot leave empty published files (docs/operations.md,
    "Guarantees": ~0.1 s for 400 files here)."""
    for base, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(base, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync(base)


def _sync(folder: str) -> None:
    """fsync ``folder``: the switch made in it is on disk when publication returns (a crash of the machine
    after it does not bring the previous set back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _collect(workdir: str, keep: set[str | None]) -> None:
    """Remove the sets of ``workdir`` not in ``keep`` and unfinished ones (``.tmp-<pid>``) whose builder is
    gone from this host; and the stable names the current set lacks, and switch links of killed builders."""
    for entry in os.listdir(workdir):
        path = os.path.join(workdir, entry)
        m = _TMP.search(entry)
        if os.path.islink(path) and ((os.readlink(path).startswith(CURRENT + os.sep) and not os.path.exists(path))
                                     or (m and not pid_alive(int(m.group(1))))):
            os.remove(path)
    root = os.path.join(workdir, PUBLISHED)
    for entry in os.listdir(root):
        m = _TMP.search(entry)
        if entry in keep or (m and pid_alive(int(m.group(1)))):
            continue
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _fault(point: str) -> None:
    """Fault injection for the kill -9 test: SIGKILL this process group at ``point`` when
    ``$CALIBFLOW_KILL_AT`` names it."""
    if os.environ.get(KILL_AT) == point:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _adopt_legacy(workdir: str) -> str | None:
    """The published set's folder; a folder of the per-file layout (a regular manifest.json, no
    ``current``) is first made a set of its files (hard links) and its names links to it. This one
    migration replaces name by name, not the set at once: it happens once, and the content is unchanged."""
    current = published_dir(workdir)
    path = os.path.join(workdir, MANIFEST)
    if current is not None or not os.path.isfile(path) or os.path.islink(path):
        return current
    manifest = _manifest(workdir)
    rels = [rel for rel in [*manifest.get("files", []), STALE] if os.path.isfile(os.path.join(workdir, rel))]
    return publish_set(workdir, str(manifest.get("key")), {rel: os.path.join(workdir, rel) for rel in rels},
                       manifest)


def _manifest(workdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(workdir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_published(workdir: str, key: str) -> bool:
    """Whether ``workdir`` holds the published outputs of ``key``: manifest and every file, of one set, and
    the stable name of each (a publication killed after its switch lacks some)."""
    folder = published_dir(workdir) or workdir
    manifest = _manifest(folder)
    if not manifest or manifest.get("key") != key:
        return False
    names = {rel.split("/", 1)[0] for rel in manifest["files"]} | {MANIFEST}
    return (all(os.path.exists(os.path.join(folder, p)) for p in manifest["files"])
            and (folder == workdir or all(os.path.islink(os.path.join(workdir, n)) for n in names)))


def export_all(plan: Plan) -> list[str]:
    """Every export, the report, and publication; returns the published paths."""
    cfg = plan.nominal_config
    out = plan.combined_dir()
    files: list[str] = prep_reports(plan, out) + write_masters(plan)
    for base, folder in [*base_folders(plan), *[(v, f) for _, f, v in product_folders(plan)]]:
        scheme = plan.with_variant(base).load_scheme()
        clear_closure_after_apply(folder)  # an earlier export's: written again below when the config asks
        files += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith((".csv", ".json", ".h5"))]
        files += export_tables(folder, scheme, cfg.outputs.correction_name or cfg.name, cfg.outputs,
                               cfg.systematics.sources, variable_labels(plan.with_variant(base).config),
                               plan.limits.note() if plan.limits else "")
        files += write_closure_after_apply(plan.with_variant(base), folder)  # config closure_after_apply
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
        files += write_report(plan, out, files + [g for g in galleries if g.endswith(".html")],
                              closure_extra=add_to_section, correlations=correlations_section)
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
    are the last good ones; the marked set is published as a new set (:func:`publish_set`). ``failures`` are
    (task label, reason). Returns the record (None: nothing is published, so nothing is marked)."""
    current = _adopt_legacy(plan.workdir)
    manifest = _manifest(current) if current is not None else {}
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
    text = stale_text(manifest, record)
    marker = f"STALE: {text}\n" + "".join(f"  FAILED {line}\n" for line in record["failures"])
    _republish(plan.workdir, current, {**manifest, "stale": record}, text, marker)
    return record


def _republish(workdir: str, current: str, manifest: Mapping[str, Any], banner: str | None,
               marker: str | None) -> None:
    """Publish the files of the set ``current`` again as a new set, with ``manifest``, the reports' stale
    banner set to ``banner`` (None: removed) and ``STALE.txt`` holding ``marker`` (None: no STALE.txt)."""
    rels = [rel for rel in manifest.get("files", []) if os.path.isfile(os.path.join(current, rel))]
    texts = {}
    for name in REPORTS:
        if name in rels:
            with open(os.path.join(current, name), encoding="utf-8", newline="") as f:
                texts[name] = with_banner(f.read(), "stale", banner, name.endswith(".md"))
    if marker is not None:
        texts[STALE] = marker
    publish_set(workdir, str(manifest.get("key")), {rel: os.path.join(current, rel) for rel in rels
                                                    if rel not in texts}, manifest, texts)


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
    marks of an earlier failed run, publishing the set again without them, and remove what killed
    publications left (:func:`_tidy`). Returns whether there were marks."""
    current = _adopt_legacy(workdir)
    if current is None:
        return False
    _tidy(workdir)
    manifest = _manifest(current)
    if "stale" not in manifest and not os.path.exists(os.path.join(current, STALE)):
        return False
    _republish(workdir, current, {k: v for k, v in manifest.items() if k != "stale"}, None, None)
    return True
