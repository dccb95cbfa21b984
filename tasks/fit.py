"""Binning, per-sample histogram filling and per-bin fits."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import b2luigi

from calibflow.io import jsonio
from tasks.base import RESULTS_MADE, CalibTask, tolerated_path
from tasks.prep import prep_task

if TYPE_CHECKING:
    from calibflow.binning.scheme import Bin
    from calibflow.fit.histograms import BinCandidates, BinHistograms
    from calibflow.plan import Plan


class MakeBinning(CalibTask):
    """Write the binning scheme JSON (and, when made from the data, a plot of it with the counts)."""

    kernel_stages = ("binning",)  # loaded before the pool forks (tasks.pool.preload_modules)

    def requires(self):
        plan = self.plan
        if plan.config.binning.data_driven:
            src = plan.binning_source
            for s in src.config.samples:
                for i in range(len(src.input_files(s))):
                    yield prep_task(self, src, s, i)

    def output(self):
        return self.target(self.plan.binning_path())

    def run(self) -> None:
        from calibflow.binning.make import data_scheme, write_scheme

        plan = self.plan
        scheme = plan.scheme()
        if scheme is not None:
            write_scheme(scheme, self.output().path)
            return
        src = plan.binning_source
        paths = {s: [src.prep_path(s, i) for i in range(len(src.input_files(s)))] for s in src.config.samples}
        scheme, counts, names = data_scheme(plan.config.binning, paths, plan.binning_pass_columns(),
                                            src.config.mass_spec, src.yield_samples())
        write_scheme(scheme, self.output().path, counts, names)


class _PerSample(CalibTask):
    """A pass over every prepared tuple of ``sample`` in the current binning."""

    kernel_stages = ("histograms",)
    sample = b2luigi.Parameter()

    def requires(self):
        yield MakeBinning(**self.same_content(lambda p: p.binning_key()))
        plan = self.plan
        for i in range(len(plan.input_files(self.sample))):
            yield prep_task(self, plan, self.sample, i)

    def prep_paths(self) -> list[str]:
        """Prepared tuples of the sample, without the inputs left out as bad (``--skip-bad-files``)."""
        plan = self.plan
        n = len(plan.input_files(self.sample))
        paths = [plan.prep_path(self.sample, i) for i in range(n) if not plan.is_excluded(self.sample, i)]
        if not paths:
            raise RuntimeError(f"sample {self.sample}: all {n} input file(s) were left out as bad files")
        return paths

    writer = ""
    """Name of the calibflow.fit.histograms function writing this task's output from the prepared tuples."""

    def run(self) -> None:
        from calibflow.fit import histograms

        plan = self.plan
        getattr(histograms, self.writer)(self.prep_paths(), plan.load_scheme(), plan.config.mass_spec,
                                     self.output().path, plan.pass_column)


class FillHistograms(_PerSample):
    """Per-bin pass/fail mass histograms of ``sample``, one pass over its prepared tuples."""

    writer = "fill_histograms"

    def output(self):
        return self.target(self.plan.hist_path(self.sample))


class SplitByBin(_PerSample):
    """In-range candidates of ``sample`` stored contiguously per bin (unbinned fits, sWeights)."""

    writer = "split_by_bin"

    def output(self):
        return self.target(self.plan.split_path(self.sample))


FIGURES_DRAWN = "fit figures drawn:"
"""Start of the log line of a FitBin task that drew figures: ``fit figures drawn: <n>, <k> failed, in <t> s
(cpu <c> s)`` (read by ``benchmarks/plots.py``)."""

@dataclass
class Figures:
    """The fit figures a task draws right after its fits (``fit.plots``: every bin, or only those not ``ok``),
    counted for the task's log line (:data:`FIGURES_DRAWN`): ``drawn``, ``failed``, ``wall`` and ``cpu`` (s)."""

    drawn: int = 0
    failed: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    def draw(self, plan: Plan, sample: str, b: Bin, data: BinHistograms | BinCandidates, result: dict[str, Any],
             figure: str, constraint: bool = False) -> None:
        """Draw bin ``b``'s figure into ``figure`` if ``fit.plots`` asks for it (``constraint``: the simulation
        fit of ``fit.constrain``); a failure is logged and left beside it, never raised."""
        from calibflow.fit.plots import plot_bin

        if plan.config.fit.plots != "all" and result["status"] == "ok":
            return
        t0, c0 = time.perf_counter(), time.process_time()
        error = plot_bin(plan.config, sample, b, data, result, figure, plan.plot_error_path(figure), constraint)
        self.wall, self.cpu = self.wall + time.perf_counter() - t0, self.cpu + time.process_time() - c0
        self.drawn += 1
        if error is not None:  # reported, never fatal: the gallery shows it
            self.failed += 1
            logging.getLogger("calibflow.task").warning("bin %d (%s): figure failed: %s", b.index, b.label(), error)

    def log(self) -> None:
        """The task's log line, if it drew any figure."""
        if self.drawn:
            logging.getLogger("calibflow.task").info("%s %d, %d failed, in %.3f s (cpu %.3f s)", FIGURES_DRAWN,
                                                     self.drawn, self.failed, self.wall, self.cpu)


FIT_CHUNK = 20
"""Bins per FitBin task of the tables. luigi's cost per task (several ms in the scheduling process, growing
with the number of tasks in the graph, plus the task process's own checks and log) is that of a binned
fit, so the tables fit chunks of bins; results stay one per bin (docs/design.md, "Per-bin fits in chunks")."""


class FitBin(CalibTask):
    """Efficiencies of bins ``bin_index`` to ``bin_index + bin_count - 1`` of ``sample``, one result per bin
    keyed by the bin's content.

    One bin by default (``calibflow fit-bin``); the tables use chunks of :data:`FIT_CHUNK` bins. A task
    fits only the bins whose result is missing, so after re-binning only the changed bins are refitted,
    and the run report counts bins (:meth:`results`, and the number fitted sent by :meth:`on_success`).
    """

    pool_preload = ("calibflow.fit.measure", "calibflow.fit.plots", "calibflow.kernels.warm:warm_up")
    kernel_stages = ("fits",)
    sample = b2luigi.Parameter()
    bin_index = b2luigi.IntParameter(description="first bin")
    bin_count = b2luigi.IntParameter(default=1, description="number of consecutive bins")

    def _candidates(self) -> bool:
        from calibflow.fit.measure import needs_candidates

        cfg = self.plan.config
        return needs_candidates(cfg.samples[self.sample].method, cfg.fit)

    def requires(self):
        per_sample = self.same_content(lambda p: p.hist_key(self.sample))
        if self._candidates():
            yield SplitByBin(sample=self.sample, **per_sample)
        else:
            yield FillHistograms(sample=self.sample, **per_sample)
        yield from reference_tasks(self, self.sample, self.bin_index, self.bin_count)

    def bin_indices(self) -> range:
        """The bins of this task."""
        return range(self.bin_index, self.bin_index + self.bin_count)

    def result_paths(self) -> list[str]:
        """Result JSON of each bin (none past the last bin); a placeholder while the binning does not exist."""
        plan = self.plan
        try:
            keys = plan.bin_keys()[self.bin_index : self.bin_index + self.bin_count]
        except FileNotFoundError:
            return [plan.fit_path(self.sample, "unknown-binning-not-yet-made")]
        return plan.fit_paths(self.sample, keys)

    def output(self):
        """The target of the bin (one bin), or the list of the bins' targets (a chunk)."""
        targets = [self.target(p) for p in self.result_paths()]
        return targets[0] if self.bin_count == 1 else targets

    def complete(self) -> bool:
        """Every bin has its result, or the task's failure is tolerated in this run (resources.FitBin.tolerance)."""
        return super().complete() or os.path.exists(tolerated_path(self))

    def results(self) -> int:
        """Bins of this task (the run report counts fits, not tasks); the binning must exist."""
        return len(self.plan.bin_keys()[self.bin_index : self.bin_index + self.bin_count])

    def run(self) -> None:
        from calibflow.fit.histograms import read_bin_candidates, read_bins
        from calibflow.fit.measure import measure_bin

        plan = self.plan
        cfg = plan.config
        sample = cfg.samples[self.sample]
        bins = plan.load_scheme().bins[self.bin_index : self.bin_index + self.bin_count]
        paths = self.result_paths()
        figures = self._figures(sample.method, [b.key for b in bins])
        todo = [k for k, path in enumerate(paths) if not os.path.exists(path)]  # done by a rerun or another run
        hists = None
        if todo and not self._candidates():  # one read for the chunk
            hists = read_bins(plan.hist_path(self.sample), self.bin_index, self.bin_index + len(bins))
        references = reference_inputs(plan, self.sample, self.bin_index, [b.key for b in bins]) if todo else []
        self._made = 0
        failures = []
        drawing = Figures()
        for k in todo:
            b = bins[k]
            data: dict = ({"hist": hists[k]} if hists is not None
                          else {"cands": read_bin_candidates(plan.split_path(self.sample), b.index)})
            if sample.method == "sweights":
                data["splot_cache"] = plan.splot_path(self.sample, b.key)
            if references and references[k]:
                data["reference"] = references[k]
            try:
                result = measure_bin(sample.method, plan.fit_config(b.key), interval=sample.interval, **data)
            except Exception as exc:  # fit the other bins, then fail with the first reason
                logging.getLogger("calibflow.task").exception("bin %d (%s) failed", b.index, b.label())
                failures.append(f"bin {b.index} ({b.label()}): {type(exc).__name__}: {exc}")
                continue
            result["bin"] = b.label()
            jsonio.write_record(paths[k], result, indent=1)
            self._made += 1
            if figures:
                drawing.draw(plan, self.sample, b, data["hist"] if "hist" in data else data["cands"], result,
                             figures[k])
        drawing.log()
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(todo)} bin(s) failed; " + failures[0])

    def on_success(self) -> dict[str, int]:
        """Send the number of bins fitted to the run report (luigi passes it on as the explanation)."""
        super().on_success()
        return {RESULTS_MADE: getattr(self, "_made", 0)}

    def _figures(self, method: str, bin_keys: list[str]) -> list[str]:
        """Figure paths of the bins (none when the method is neither a pass/fail fit nor sideband subtraction, or
        ``fit.plots`` is none)."""
        cfg = self.plan.config
        if method not in ("fit", "sideband") or cfg.fit.plots == "none":
            return []
        return self.plan.figure_paths(self.sample, bin_keys)


class ConstraintFit(CalibTask):
    """Fits of the simulation ``fit.constrain.from`` in bins ``bin_index`` to ``bin_index + bin_count - 1`` (the
    bins' fit sections without ``constrain``), one result per bin keyed by :meth:`calibflow.plan.Plan.constraint_keys`:
    the constraints of the data fits of those bins. Each fit gets its figure as ``FitBin``'s do
    (:meth:`calibflow.plan.Plan.constraint_figure_paths`, ``fit.plots``), shown in the gallery
    :meth:`calibflow.plan.Plan.constraint_gallery_dir`."""

    pool_preload = ("calibflow.fit.measure", "calibflow.fit.plots")
    kernel_stages = ("fits",)
    bin_index = b2luigi.IntParameter(description="first bin")
    bin_count = b2luigi.IntParameter(default=1, description="number of consecutive bins")

    def requires(self):
        fit = self.plan.config.fit
        assert fit.constrain is not None
        yield FillHistograms(sample=fit.constrain.from_, **self.same_content(lambda p: p.hist_key(fit.constrain.from_)))
        if fit.signal == "template" and fit.template is not None:
            src = fit.template.from_
            yield FillHistograms(sample=src, **self.same_content(lambda p: p.hist_key(src)))

    def _keys(self) -> list[str]:
        return list(self.plan.bin_keys()[self.bin_index : self.bin_index + self.bin_count])

    def output(self):
        """The targets of the bins' simulation fits (a placeholder while the binning does not exist)."""
        try:
            keys = self._keys()
        except FileNotFoundError:
            keys = ["unknown-binning-not-yet-made"]
        return [self.target(p) for p in self.plan.constraint_paths(keys)]

    def run(self) -> None:
        from calibflow.fit.histograms import read_bins
        from calibflow.fit.measure import measure_bin

        plan = self.plan
        fit = plan.config.fit
        assert fit.constrain is not None
        bins = plan.load_scheme().bins[self.bin_index : self.bin_index + self.bin_count]
        paths = plan.constraint_paths([b.key for b in bins])
        figures = plan.constraint_figure_paths([b.key for b in bins]) if fit.plots != "none" else []
        hists = read_bins(plan.hist_path(fit.constrain.from_), self.bin_index, self.bin_index + len(bins))
        templates = _templates(plan, self.bin_index, len(bins))
        drawing = Figures()
        for k, b in enumerate(bins):
            if os.path.exists(paths[k]):
                continue
            reference = {"template": templates[k]} if templates else {}
            reference["keep"] = fit.constrain.parameters  # no fallback to a signal without them
            result = measure_bin("fit", plan.constraint_fit_config(b.key), hist=hists[k], reference=reference)
            result["bin"] = b.label()
            jsonio.write_record(paths[k], result, indent=1)
            if figures:
                drawing.draw(plan, fit.constrain.from_, b, hists[k], result, figures[k], constraint=True)
        drawing.log()


def _templates(plan: Plan, start: int, count: int) -> list[BinHistograms]:
    """The template sample's histograms of bins ``start`` to ``start + count - 1`` (``fit.signal: template``;
    else [])."""
    from calibflow.fit.histograms import read_bins

    fit = plan.config.fit
    if fit.signal != "template" or fit.template is None:
        return []
    return read_bins(plan.hist_path(fit.template.from_), start, start + count)


def reference_tasks(task: CalibTask, sample: str, bin_index: int, bin_count: int) -> list[CalibTask]:
    """What the fits of ``sample`` in these bins need of the reference simulation: its histograms
    (``fit.signal: template``) and its constraint fits (``fit.constrain``)."""
    plan = task.plan
    fit = plan.config.fit
    out: list[CalibTask] = []
    if plan.uses_template(sample):
        src = fit.template.from_  # type: ignore[union-attr]
        out.append(FillHistograms(sample=src, **task.same_content(lambda p: p.hist_key(src))))
    if plan.uses_constraints(sample):
        out.append(ConstraintFit(bin_index=bin_index, bin_count=bin_count,
                                 **task.same_content(lambda p: (p.constraint_keys([""]), p.binning_key()))))
    return out


def reference_inputs(plan: Plan, sample: str, start: int, bin_keys: list[str]) -> list[dict[str, Any]]:
    """Per bin, the ``reference`` of :func:`calibflow.fit.measure.measure_bin`: the template sample's histograms
    and the simulation fit's result, as ``sample``'s fits use them ([] when they use neither)."""
    templates = _templates(plan, start, len(bin_keys)) if plan.uses_template(sample) else []
    constraints = [jsonio.read_record(p) for p in plan.constraint_paths(bin_keys)] \
        if plan.uses_constraints(sample) else []
    if not templates and not constraints:
        return []
    return [{**({"template": templates[k]} if templates else {}),
             **({"constraint": constraints[k]} if constraints else {})} for k in range(len(bin_keys))]


def fit_tasks(task: CalibTask, chunk: int | None = None) -> list[FitBin]:
    """FitBin tasks of ``chunk`` bins (default: ``resources.FitBin.bins_per_task``, else :data:`FIT_CHUNK`)
    covering every sample and bin of the current binning (which must exist)."""
    n = len(task.plan.load_scheme())
    chunk = chunk or task.plan.config.resources_for("FitBin").bins_per_task or FIT_CHUNK
    out = []
    for s in task.plan.config.samples:
        params = fit_params(task, s)
        out += [FitBin(sample=s, bin_index=i, bin_count=min(chunk, n - i), **params) for i in range(0, n, chunk)]
    return out


def fit_params(task: CalibTask, sample: str) -> dict[str, str]:
    """Parameters of the FitBin tasks of ``sample`` for the tables of ``task``: the first variant with the
    same fits (so variants sharing them share the tasks)."""
    return task.same_content(lambda p: (p.fit_key(sample, ""), p.binning_key()))
