"""Binning, per-sample histogram filling and per-bin fits."""

from __future__ import annotations

import json
import os

import b2luigi
import luigi

from calibflow.io.store import atomic_path
from tasks.base import CalibTask
from tasks.prep import PrepareTuple


class MakeBinning(CalibTask):
    """Write the binning scheme JSON (and, when made from the data, a plot of it with the counts)."""

    def requires(self):
        plan = self.plan
        if plan.config.binning.data_driven:
            src = plan.binning_source
            for s in src.config.samples:
                for i in range(len(src.input_files(s))):
                    yield PrepareTuple(sample=s, index=i, config=self.config, result_dir=self.result_dir,
                                       variant=src.canonical(lambda p, s=s, i=i: p.prep_key(s, i)))

    def output(self):
        return self.target(self.plan.binning_path())

    def run(self) -> None:
        from calibflow.binmake import data_scheme, write_scheme

        plan = self.plan
        scheme = plan.scheme()
        if scheme is not None:
            write_scheme(scheme, self.output().path)
            return
        src = plan.binning_source
        paths = {s: [src.prep_path(s, i) for i in range(len(src.input_files(s)))] for s in src.config.samples}
        scheme, counts, names = data_scheme(plan.config.binning, paths, plan.binning_pass_columns(),
                                            src.config.mass_spec)
        write_scheme(scheme, self.output().path, counts, names)


class _PerSample(CalibTask):
    """A pass over every prepared tuple of ``sample`` in the current binning."""

    sample = b2luigi.Parameter()

    def requires(self):
        yield MakeBinning(**self.same_content(lambda p: p.binning_key()))
        for i in range(len(self.plan.input_files(self.sample))):
            yield PrepareTuple(sample=self.sample, index=i,
                               **self.same_content(lambda p, i=i: p.prep_key(self.sample, i)))

    def prep_paths(self) -> list[str]:
        """Prepared tuples of the sample, without the inputs left out as bad (``--skip-bad-files``)."""
        plan = self.plan
        n = len(plan.input_files(self.sample))
        paths = [plan.prep_path(self.sample, i) for i in range(n) if not plan.is_excluded(self.sample, i)]
        if not paths:
            raise RuntimeError(f"sample {self.sample}: all {n} input file(s) were left out as bad files")
        return paths

    writer = ""
    """Name of the calibflow.histos function writing this task's output from the prepared tuples."""

    def run(self) -> None:
        from calibflow import histos

        plan = self.plan
        getattr(histos, self.writer)(self.prep_paths(), plan.load_scheme(), plan.config.mass_spec,
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


class FitBin(CalibTask):
    """Efficiency of bin ``bin_index`` of ``sample``; the output is keyed by the bin's content."""

    sample = b2luigi.Parameter()
    bin_index = b2luigi.IntParameter()

    def _candidates(self) -> bool:
        from calibflow.binfit import needs_candidates

        cfg = self.plan.config
        return needs_candidates(cfg.samples[self.sample].method, cfg.fit)

    def requires(self):
        per_sample = self.same_content(lambda p: p.hist_key(self.sample))
        if self._candidates():
            yield SplitByBin(sample=self.sample, **per_sample)
        else:
            yield FillHistograms(sample=self.sample, **per_sample)

    def output(self):
        plan = self.plan
        try:
            bin_key = plan.load_scheme().bins[self.bin_index].key
        except FileNotFoundError:
            return self.target(plan.fit_path(self.sample, "unknown-binning-not-yet-made"))
        return self.target(plan.fit_path(self.sample, bin_key))

    def run(self) -> None:
        from calibflow.binfit import measure_bin
        from calibflow.histos import read_bin, read_bin_candidates

        plan = self.plan
        cfg = plan.config
        sample = cfg.samples[self.sample]
        if self._candidates():
            data = {"cands": read_bin_candidates(plan.split_path(self.sample), self.bin_index)}
        else:
            data = {"hist": read_bin(plan.hist_path(self.sample), self.bin_index)}
        if sample.method == "sweights":
            data["splot_cache"] = plan.splot_path(self.sample, plan.load_scheme().bins[self.bin_index].key)
        result = measure_bin(sample.method, cfg.fit, interval=sample.interval, **data)
        label = plan.load_scheme().bins[self.bin_index].label()
        result["bin"] = label
        with atomic_path(self.output().path) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        plots = cfg.fit.plots
        if sample.method == "fit" and (plots == "all" or (plots == "flagged" and result["status"] != "ok")):
            self._plot(result, f"{self.sample}: {label}")

    def _plot(self, result: dict, title: str) -> None:
        import numpy as np

        from calibflow.fitplots import plot_pass_fail_fit
        from calibflow.histos import read_bin, read_bin_candidates

        plan = self.plan
        cfg = plan.config
        if self._candidates():
            c = read_bin_candidates(plan.split_path(self.sample), self.bin_index)
            edges = np.linspace(c.lo, c.hi, cfg.mass_spec.bins + 1)
            hp, hf = (np.histogram(c.mass[sel], edges, weights=c.weight[sel])[0] for sel in (c.passed, ~c.passed))
        else:
            h = read_bin(plan.hist_path(self.sample), self.bin_index)
            edges, hp, hf = h.edges, h.sumw[0], h.sumw[1]
        path = os.path.splitext(self.output().path)[0] + ".png"
        plot_pass_fail_fit(edges, hp, hf, result, cfg.fit.background, cfg.fit.fail_width_shift, path, title)


def fit_tasks(task: CalibTask) -> list[luigi.Task]:
    """FitBin tasks of every sample and bin of the current binning (binning must exist)."""
    n = len(task.plan.load_scheme())
    out = []
    for s in task.plan.config.samples:
        params = task.same_content(lambda p, s=s: (p.fit_key(s, ""), p.binning_key()))
        out += [FitBin(sample=s, bin_index=i, **params) for i in range(n)]
    return out
