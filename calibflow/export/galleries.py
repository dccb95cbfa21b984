"""Every fit gallery of a plan, assembled at export: per variant and fitted sample, the figures of the
current binning under readable names and an ``index.html`` (:mod:`calibflow.fit.gallery`); with ``fit.constrain``
also one of the simulation fits giving the constraints (``Plan.constraint_gallery_dir``).

Figures are drawn where the data are in memory, by ``FitBin`` right after each fit, and kept beside the
results under a key of what they show (``Plan.figure_paths``). A figure missing here (labels changed,
``fit.plots`` raised from ``flagged`` to ``all``, results made before the gallery existed; an empty file
counts as missing) is drawn now from the sample's histograms, serially in the export (about 20 ms a
figure); a figure that cannot be drawn is reported on the page, never raised. The galleries are written
under the combined tables' folder at the path ``Plan.gallery_dir`` has under the result folder, and
published with the set (``export.publish``), so the files of bins that are gone leave with the previous set.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from calibflow.fit.gallery import GalleryEntry, file_stems, plain_label, write_gallery
from calibflow.io.jsonio import load_numbers
from calibflow.plan import Plan
from calibflow.variants import NOMINAL

LOG = logging.getLogger("calibflow.task")
GALLERY_TIME = "fit galleries:"
"""Start of the log line saying how long the galleries took (read by ``benchmarks/plots.py``)."""


def _read(path: str) -> dict[str, Any] | None:
    """The result JSON at ``path`` (None: no result)."""
    try:
        return load_numbers(path)
    except FileNotFoundError:
        return None


def _drawn(figure: str) -> bool:
    """Whether the figure ``figure`` exists and is not empty (an empty file, left by a writer before atomic
    writes on a full disk, is drawn again)."""
    try:
        return os.path.getsize(figure) > 0
    except OSError:
        return False


def _error(path: str) -> str | None:
    """The reason a figure could not be drawn, kept at ``path`` (None: no error)."""
    try:
        with open(path) as f:
            return f.readline().strip() or "unknown error"
    except FileNotFoundError:
        return None


def _draw_missing(plan: Plan, sample: str, todo: list[int], results: list[dict[str, Any] | None],
                  figures: list[str], constraint: bool = False) -> dict[int, str]:
    """Draw the figures of bins ``todo`` of ``sample`` from its histograms (or candidates), errors written
    beside the figures as by ``FitBin`` (``constraint``: of its binned simulation fits, as by ``ConstraintFit``);
    returns the bins whose inputs are gone, with the reason."""
    from calibflow.fit.histograms import read_bin_candidates, read_bins
    from calibflow.fit.measure import needs_candidates
    from calibflow.fit.plots import plot_bin

    cfg = plan.config
    bins = plan.load_scheme().bins
    gone: dict[int, str] = {}
    try:
        hists = None if not constraint and needs_candidates(cfg.samples[sample].method, cfg.fit) else \
            read_bins(plan.hist_path(sample), 0, len(bins))
    except OSError as exc:  # the histograms were removed
        return dict.fromkeys(todo, f"no histograms to draw from: {type(exc).__name__}: {exc}")
    for k in todo:
        try:
            data = hists[k] if hists is not None else read_bin_candidates(plan.split_path(sample), k)
        except OSError as exc:
            gone[k] = f"no candidates to draw from: {type(exc).__name__}: {exc}"
            continue
        plot_bin(cfg, sample, bins[k], data, results[k] or {}, figures[k], plan.plot_error_path(figures[k]),
                 constraint)
    return gone


def sample_gallery(plan: Plan, sample: str, folder: str) -> list[str]:
    """The gallery of ``sample`` in ``plan``'s variant, written to ``folder``; returns the paths written."""
    keys = plan.bin_keys()
    title = f"{plan.config.name}: fits of {sample} ({plan.variant or 'nominal'})"
    return _gallery(plan, sample, folder, plan.fit_paths(sample, keys), plan.figure_paths(sample, keys), title)


def constraint_gallery(plan: Plan, folder: str) -> list[str]:
    """The gallery of the simulation fits of ``fit.constrain`` (``ConstraintFit``) in ``plan``'s variant, written
    to ``folder``; returns the paths written."""
    fit = plan.config.fit
    assert fit.constrain is not None
    keys = plan.bin_keys()
    title = (f"{plan.config.name}: simulation fits of {fit.constrain.from_} for fit.constrain "
             f"({plan.variant or 'nominal'})")
    return _gallery(plan, fit.constrain.from_, folder, plan.constraint_paths(keys),
                    plan.constraint_figure_paths(keys), title, constraint=True)


def _gallery(plan: Plan, sample: str, folder: str, paths: list[str], figures: list[str], title: str,
             constraint: bool = False) -> list[str]:
    """A gallery of the fits of ``sample`` whose results are at ``paths`` and figures at ``figures`` (one per bin;
    missing figures drawn now), written to ``folder`` under ``title``; returns the paths written."""
    cfg = plan.config
    scheme = plan.load_scheme()
    results = [_read(p) for p in paths]
    errors = [plan.plot_error_path(f) for f in figures]
    todo = [k for k, r in enumerate(results)
            if r is not None and (cfg.fit.plots == "all" or r.get("status") != "ok")
            and not _drawn(figures[k]) and not os.path.exists(errors[k])]
    gone: dict[int, str] = {}
    if todo:
        LOG.info("drawing %d missing fit figure(s) of %s (%s)", len(todo), sample, plan.variant or "nominal")
        gone = _draw_missing(plan, sample, todo, results, figures, constraint)
    units = {v.name: v.display_unit for v in cfg.binning.variables}
    entries = []
    nan = float("nan")
    for k, (b, name) in enumerate(zip(scheme.bins, file_stems(scheme.bins), strict=True)):
        r = results[k] or {"status": "failed: no result", "efficiency": nan, "err_down": nan, "err_up": nan}
        error = gone.get(k) or _error(errors[k])
        figure = figures[k] if error is None and _drawn(figures[k]) else None
        entries.append(GalleryEntry(b.index, plain_label(b, units), name, str(r["status"]), float(r["efficiency"]),
                                    float(r["err_down"]), float(r["err_up"]), r.get("candidates_pass"),
                                    r.get("candidates_fail"), figure, error))
    return write_gallery(folder, title, entries, no_figure=f"no figure (fit.plots: {cfg.fit.plots})")


def write_galleries(plan: Plan, out_dir: str) -> list[str]:
    """The galleries of every variant and fitted sample (methods ``fit`` and ``sideband``) and of the simulation fits of
    ``fit.constrain`` under ``out_dir``, each at the path ``Plan.gallery_dir`` (``Plan.constraint_gallery_dir``) has
    under the result folder; a variant whose results of a sample are an earlier variant's (same files) gets none.
    Returns the paths written."""
    t0 = time.perf_counter()
    written: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for v in [NOMINAL, *plan.all_variants()]:
        vplan = plan.with_variant(v)
        cfg = vplan.config
        if cfg.fit.plots == "none":
            continue
        for sample, spec in cfg.samples.items():
            if spec.method not in ("fit", "sideband"):
                continue
            paths = tuple(vplan.fit_paths(sample, vplan.bin_keys()))
            if paths in seen:
                continue
            seen.add(paths)
            folder = os.path.join(out_dir, os.path.relpath(vplan.gallery_dir(sample), vplan.workdir))
            written += sample_gallery(vplan, sample, folder)
        if cfg.fit.constrain is not None and any(vplan.uses_constraints(s) for s in cfg.samples):
            paths = tuple(vplan.constraint_paths(vplan.bin_keys()))
            if paths not in seen:
                seen.add(paths)
                folder = os.path.join(out_dir, os.path.relpath(vplan.constraint_gallery_dir(), vplan.workdir))
                written += constraint_gallery(vplan, folder)
    LOG.info("%s %d file(s) in %.3f s", GALLERY_TIME, len(written), time.perf_counter() - t0)
    return written
