"""Coverage of the per-bin intervals (``calibflow coverage``): toys per bin, then the table, figure and page.

* ``CoverageBin``: the toys of bins ``bin_index`` to ``bin_index + bin_count - 1`` of ``sample``, one record
  per bin, ``<workdir>/coverage/<sample>/<key>.json``, keyed by the bin's fit key, the number of toys, the
  seed and :data:`calibflow.fit.coverage.COVERAGE_VERSION` (a rerun reuses them; the toys' seed comes from
  that key). Chunks of :data:`COVERAGE_CHUNK` bins, like FitBin.
* ``CoverageTable``: every bin of every sample (nominal variant), ``<workdir>/coverage/<key>/coverage.csv``,
  ``coverage.png``, ``coverage.html`` and ``coverage.md`` (:mod:`calibflow.export.coverage`).

With the config's ``coverage`` section the nominal ``EfficiencyTable`` of ``calibflow run`` requires the same
``CoverageBin`` tasks (:func:`coverage_tasks`), so the run and ``calibflow coverage`` with the same toys and seed
share their records.
"""

from __future__ import annotations

import os

import b2luigi

from calibflow.hashing import content_key
from calibflow.io import jsonio
from tasks.base import RESULTS_MADE, CalibTask
from tasks.fit import (
    FillHistograms,
    FitBin,
    MakeBinning,
    SplitByBin,
    fit_tasks,
    reference_inputs,
    reference_tasks,
)

COVERAGE_CHUNK = 5
"""Bins per CoverageBin task (each bin: ``toys`` fits, about 1 s per 100 toys of a binned fit)."""


def coverage_key(fit_key: str, toys: int, seed: int) -> str:
    """Key of a bin's coverage record: its fit, the number of toys, the seed and the record's version."""
    from calibflow.fit.coverage import COVERAGE_VERSION

    return content_key(fit_key, toys, seed, COVERAGE_VERSION)


class CoverageBin(CalibTask):
    """Toys of a chunk of bins of ``sample``, refitted; one coverage record per bin."""

    pool_preload = ("calibflow.fit.coverage", "calibflow.fit.measure", "calibflow.kernels.warm:warm_up")
    kernel_stages = ("fits",)
    sample = b2luigi.Parameter()
    bin_index = b2luigi.IntParameter(description="first bin")
    bin_count = b2luigi.IntParameter(default=1, description="number of consecutive bins")
    toys = b2luigi.IntParameter(description="toys per bin")
    seed = b2luigi.IntParameter(default=1, description="seed, combined with each bin's key")

    def requires(self):
        stop = self.bin_index + self.bin_count
        for t in fit_tasks(self):  # the chunks of fits holding this chunk's bins (the tables' own tasks)
            if t.sample == self.sample and t.bin_index < stop and self.bin_index < t.bin_index + t.bin_count:
                yield t
        per_sample = self.same_content(lambda p: p.hist_key(self.sample))
        yield (SplitByBin if self._candidates() else FillHistograms)(sample=self.sample, **per_sample)
        yield from reference_tasks(self, self.sample, self.bin_index, self.bin_count)  # templates, constraints

    _candidates = FitBin._candidates  # whether the sample's fits read candidates (else histograms)

    def keys(self) -> list[str]:
        """Coverage keys of the bins of this task."""
        plan = self.plan
        bins = plan.bin_keys()[self.bin_index : self.bin_index + self.bin_count]
        return [coverage_key(k, self.toys, self.seed) for k in plan.fit_keys(self.sample, bins)]

    def record_paths(self) -> list[str]:
        """The bins' coverage records."""
        folder = os.path.join(self.plan.workdir, "coverage", self.sample)
        return [os.path.join(folder, f"{k}.json") for k in self.keys()]

    def output(self):
        return [self.target(p) for p in self.record_paths()]

    def results(self) -> int:
        """Bins of this task (the run report counts bins)."""
        return len(self.plan.bin_keys()[self.bin_index : self.bin_index + self.bin_count])

    def run(self) -> None:
        from calibflow.fit.coverage import bin_coverage, toy_seed
        from calibflow.fit.histograms import read_bin_candidates, read_bins

        plan = self.plan
        sample = plan.config.samples[self.sample]
        bins = plan.load_scheme().bins[self.bin_index : self.bin_index + self.bin_count]
        fits = plan.fit_paths(self.sample, [b.key for b in bins])
        todo = [k for k, p in enumerate(self.record_paths()) if not os.path.exists(p)]
        hists = None
        if todo and not self._candidates():
            hists = read_bins(plan.hist_path(self.sample), self.bin_index, self.bin_index + len(bins))
        keys = self.keys()
        references = reference_inputs(plan, self.sample, self.bin_index, [b.key for b in bins]) if todo else []
        self._made = 0
        for k in todo:
            b = bins[k]
            data = ({"hist": hists[k]} if hists is not None
                    else {"cands": read_bin_candidates(plan.split_path(self.sample), b.index)})
            record = bin_coverage(sample.method, plan.fit_config(b.key), jsonio.load_numbers(fits[k]), self.toys,
                                  toy_seed(keys[k]), interval=sample.interval,
                                  reference=references[k] if references else None, **data)
            jsonio.write_record(self.record_paths()[k], {**record, "bin": b.label()})
            self._made += 1

    def on_success(self) -> dict[str, int]:
        """Send the number of bins done to the run report."""
        super().on_success()
        return {RESULTS_MADE: getattr(self, "_made", 0)}


class CoverageTable(CalibTask):
    """coverage.csv, coverage.png and the page of every bin and sample, from ``toys`` toys per bin."""

    toys = b2luigi.IntParameter(description="toys per bin")
    seed = b2luigi.IntParameter(default=1, description="seed, combined with each bin's key")

    def requires(self):
        yield MakeBinning(**self.same_content(lambda p: p.binning_key()))

    def pending_kernel_stages(self) -> set[str]:
        """Kernel stages of the toys :meth:`run` will yield that are not complete (all while no binning exists)."""
        from tasks.pool import pending_stages

        if not os.path.exists(self.plan.binning_path()):
            return {"histograms", "fits"}
        return pending_stages(coverage_tasks(self, self.toys, self.seed))

    def folder(self) -> str:
        """``<workdir>/coverage/<key>/``: the key of the tables (every fit's content), toys and seed."""
        from calibflow.fit.coverage import COVERAGE_VERSION

        key = content_key(self.plan.table_key(), self.toys, self.seed, COVERAGE_VERSION)
        return os.path.join(self.plan.workdir, "coverage", key)

    def output(self):
        from calibflow.export.coverage import CSV

        return self.target(os.path.join(self.folder(), CSV))

    def run(self):
        from calibflow.export.coverage import write_coverage

        plan = self.plan
        tasks = coverage_tasks(self, self.toys, self.seed)
        yield tasks  # dynamic dependencies: the bins are known once the binning exists
        results, records = coverage_outputs(tasks)
        write_coverage(self.folder(), f"Coverage of {plan.config.name}", plan.load_scheme(), results, records,
                       plan.scale_factor_pairs())


def coverage_tasks(task: CalibTask, toys: int, seed: int) -> list[CoverageBin]:
    """CoverageBin tasks of every sample and bin of ``task``'s plan (the binning must exist)."""
    n = len(task.plan.load_scheme())
    return [CoverageBin(sample=s, bin_index=i, bin_count=min(COVERAGE_CHUNK, n - i), toys=toys, seed=seed,
                        **task.common())
            for s in task.plan.config.samples for i in range(0, n, COVERAGE_CHUNK)]


def coverage_outputs(tasks: list[CoverageBin]) -> tuple[dict[tuple[str, int], dict], dict[tuple[str, int], dict]]:
    """(fit results, coverage records) of every (sample, bin) of ``tasks`` (done)."""
    results, records = {}, {}
    for t in tasks:
        plan = t.plan
        fits = plan.fit_paths(t.sample, plan.bin_keys()[t.bin_index : t.bin_index + t.bin_count])
        for i, fit, rec in zip(range(t.bin_index, t.bin_index + t.bin_count), fits, t.record_paths(), strict=True):
            results[(t.sample, i)] = jsonio.load_numbers(fit)
            records[(t.sample, i)] = jsonio.load_numbers(rec)
    return results, records
