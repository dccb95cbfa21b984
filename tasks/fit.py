"""Binning, per-sample histogram filling and per-bin fits."""

from __future__ import annotations

import json

import b2luigi
import luigi

from calibflow.io.store import atomic_path
from tasks.base import CalibTask
from tasks.prep import PrepareTuple


class MakeBinning(CalibTask):
    """Write the binning scheme JSON."""

    def output(self):
        return self.target(self.plan.binning_path())

    def run(self) -> None:
        with atomic_path(self.output().path) as tmp:
            self.plan.scheme().save(tmp)


class FillHistograms(CalibTask):
    """Per-bin pass/fail mass histograms of ``sample``, one pass over its prepared tuples."""

    sample = b2luigi.Parameter()

    def requires(self):
        yield MakeBinning(**self.common())
        for i in range(len(self.plan.input_files(self.sample))):
            yield PrepareTuple(sample=self.sample, index=i, **self.common())

    def output(self):
        return self.target(self.plan.hist_path(self.sample))

    def run(self) -> None:
        from calibflow.histos import fill_histograms

        plan = self.plan
        paths = [plan.prep_path(self.sample, i) for i in range(len(plan.input_files(self.sample)))]
        fill_histograms(paths, plan.load_scheme(), plan.config.mass, self.output().path, plan.pass_column)


class FitBin(CalibTask):
    """Efficiency of bin ``bin_index`` of ``sample``; the output is keyed by the bin's content."""

    sample = b2luigi.Parameter()
    bin_index = b2luigi.IntParameter()

    def requires(self):
        yield FillHistograms(sample=self.sample, **self.common())

    def output(self):
        plan = self.plan
        try:
            bin_key = plan.load_scheme().bins[self.bin_index].key
        except FileNotFoundError:
            return self.target(plan.fit_path(self.sample, "unknown-binning-not-yet-made"))
        return self.target(plan.fit_path(self.sample, bin_key))

    def run(self) -> None:
        from calibflow.binfit import measure_bin
        from calibflow.histos import read_bin

        plan = self.plan
        h = read_bin(plan.hist_path(self.sample), self.bin_index)
        result = measure_bin(h, plan.config.samples[self.sample].method, plan.config.fit)
        result["bin"] = plan.load_scheme().bins[self.bin_index].label()
        with atomic_path(self.output().path) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=1)


def fit_tasks(task: CalibTask) -> list[luigi.Task]:
    """FitBin tasks of every sample and bin of the current binning (binning must exist)."""
    n = len(task.plan.load_scheme())
    return [FitBin(sample=s, bin_index=i, **task.common()) for s in task.plan.config.samples for i in range(n)]
