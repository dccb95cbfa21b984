"""Load, before the worker pool forks, the numba kernels of the stages a run will execute, and only those.

luigi runs each task of a multi-worker run in a process of a pool forked once per run (``tasks.pool``);
forked processes inherit what the scheduling process has loaded. A kernel first called in the pool is
compiled (or loaded from the kernel cache) by every worker that calls it: with two workers and a cold cache
the pairing, histogram and fit kernels cost +23 s. :func:`warm_up` calls the kernels of the given
:data:`STAGES` once on a few rows of the types the run passes them (the number of binning variables, the
configured fit shapes), so each is compiled once per machine into the kernel cache
(:mod:`calibflow.kernels.cache`) and loaded once per run. A stage the run does not execute loads nothing: a
run whose fits are done pays no fit kernels, a calibration without pairing no pairing kernels. The fused
loop of flat tuples needs the input files' column types, which toy inputs only have once generated: one
worker compiles it while the others wait (:func:`calibflow.kernels.fused.fused_selection`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

import numpy as np

from calibflow.plan import Plan

STAGES = ("prep", "binning", "histograms", "fits")
"""Stages with kernels: tuple preparation (pairing, matching), binning (bin index, optimisation), histograms (bin
index, mass histograms), fits."""

_log = logging.getLogger("calibflow.warmup")


def warm_up(plan: Plan, stages: Collection[str]) -> list[str]:
    """Load (compile, the first time on the machine) the kernels ``plan``'s ``stages`` call; the kernel groups
    loaded, in order. A group that fails is left to the tasks (logged): the warm-up costs time, never the run."""
    from calibflow.kernels import warm

    groups: list[tuple[str, Callable[[], object]]] = [("numba", warm.warm_up)]
    if "prep" in stages:
        import calibflow.prep.prepare  # noqa: F401  (the module every preparation imports)

        specs = [plan.prep_spec(s) for s in plan.config.samples]
        pairings = [s.pairing for s in specs if s.pairing is not None]
        if pairings:
            groups.append(("pairing", lambda: warm.warm_pairing(any(p.matches for p in pairings))))
        hit_matches = any(s.hit_matches for s in specs)
        if hit_matches:
            groups.append(("hit matching", warm.warm_hit_matching))
        if pairings or hit_matches:  # jagged branches
            groups.append(("jagged baskets", warm.warm_jagged_baskets))
    if {"binning", "histograms"} & set(stages):
        groups.append(("bin index", lambda: _warm_bin_index(plan)))
    if "binning" in stages and plan.config.binning.optimise is not None:
        groups.append(("binning optimisation", _warm_optimise))
    if "histograms" in stages:
        groups.append(("histograms", warm.warm_histograms))
    if "fits" in stages:
        groups.append(("fits", lambda: _warm_fits(plan)))
    loaded = []
    for name, load in groups:
        t0 = time.perf_counter()
        try:
            load()
        except Exception:  # the task that needs the kernel compiles it, and fails if it must
            _log.debug("warming up the %s kernels failed", name, exc_info=True)
            continue
        loaded.append(name)
        _log.debug("%s kernels loaded in %.2f s", name, time.perf_counter() - t0)
    return loaded


def _warm_bin_index(plan: Plan) -> None:
    """The scheme walk (``calibflow.kernels.binindex``) of as many columns as the binning has variables."""
    from calibflow.binning.scheme import BinningScheme

    names = [v.name for v in plan.config.binning.variables]
    scheme = BinningScheme.product([(n, [0.0, 1.0, 2.0]) for n in names])
    scheme.locate({n: np.array([0.5, 1.5]) for n in names})


def _warm_optimise() -> None:
    """The grouping of fine bins of ``binning.optimise`` (``calibflow.binning.optimise.best_partition``)."""
    from calibflow.binning.optimise import best_partition

    best_partition(np.ones((3, 3), dtype=bool), np.zeros((3, 3)), 2)


def _warm_fits(plan: Plan) -> None:
    """One fit per method of the samples, with the configured fit section, on a toy peak over a flat
    background in the mass range: the fit kernels of the configured shapes."""
    from calibflow.fit.histograms import BinCandidates, BinHistograms
    from calibflow.fit.measure import measure_bin, needs_candidates
    from calibflow.fit.models import SIGNALS, normalised_cdf

    fit, mass = plan.config.fit, plan.config.mass_spec
    lo, hi = mass.range
    rng = np.random.default_rng(0)
    m = np.concatenate([rng.normal(0.5 * (lo + hi), 0.05 * (hi - lo), 400), rng.uniform(lo, hi, 200)])
    passed = rng.uniform(size=m.size) < 0.7
    edges = np.linspace(lo, hi, mass.bins + 1)
    sumw = np.stack([np.histogram(m[passed], edges)[0], np.histogram(m[~passed], edges)[0]]).astype(float)
    hist = BinHistograms(edges, sumw, sumw.copy(), False)
    cands = BinCandidates(m, passed, np.ones(m.size), False, lo, hi)
    normalised_cdf(SIGNALS["gauss"], edges, lo, hi, 0.5 * (lo + hi), 0.05 * (hi - lo))  # the shapes' cdf kernel
    for method in sorted({s.method for s in plan.config.samples.values()}):
        data = {"cands": cands} if needs_candidates(method, fit) else {"hist": hist}
        try:
            measure_bin(method, fit, **data)
        except Exception:  # e.g. a template fit needs its reference: its kernels load in the task
            _log.debug("warming up the fits of method %s failed", method, exc_info=True)
