"""Tables and exports: per-variant tables, systematic combination, exports and publication."""

from __future__ import annotations

import os

from calibflow.export.publish import is_published
from calibflow.io.jsonio import load_numbers
from calibflow.variants import NOMINAL
from tasks.base import CalibTask
from tasks.fit import FillHistograms, MakeBinning, fit_tasks

DONE = "tables.done"


class EfficiencyTable(CalibTask):
    """Collect every per-bin result of one variant into efficiencies/scale_factors/closure CSVs."""

    def requires(self):
        yield MakeBinning(**self.same_content(lambda p: p.binning_key()))

    def output(self):
        return self.target(os.path.join(self.plan.table_dir(), DONE))

    def closure_histograms(self) -> list[FillHistograms]:
        """The histograms whose truth the closure table needs (none without ``closure``, or for a working
        point: the truth is of the nominal pass); required once the fits are done."""
        plan = self.plan
        if not plan.config.closure or plan.resolved.working_point is not None:
            return []
        return [FillHistograms(sample=s, **self.same_content(lambda p, s=s: p.hist_key(s)))
                for s in plan.config.samples]

    def run(self):
        from calibflow.fit.histograms import read_truth
        from calibflow.io.store import atomic_path
        from calibflow.tables.write import write_tables

        plan = self.plan
        fits = fit_tasks(self)
        yield fits  # dynamic dependencies: the bins are known once the binning exists
        results = {}
        for t in fits:
            for i, path in zip(t.bin_indices(), t.result_paths(), strict=True):
                results[(t.sample, i)] = load_numbers(path)
        truth = {}
        hists = self.closure_histograms()
        if hists:
            yield hists
            truth = {h.sample: read_truth(h.output().path) for h in hists}
        write_tables(plan.table_dir(), plan.load_scheme(), results, plan.scale_factor_pairs(), truth)
        with atomic_path(self.output().path) as tmp, open(tmp, "w") as f:
            f.write(plan.table_key() + "\n")


class CombineTables(CalibTask):
    """Nominal tables (and each working point's) with the systematic sources combined, the master
    table and, for cut scans, the ROC points."""

    def requires(self):
        plan = self.plan
        for v in [NOMINAL, *plan.all_variants()]:
            v_plan = plan.with_variant(v)
            yield EfficiencyTable(config=self.config, result_dir=self.result_dir,
                                  variant=v_plan.canonical(lambda p: p.table_key()))

    def output(self):
        return self.target(os.path.join(self.plan.combined_dir(), DONE))

    def run(self) -> None:
        from calibflow.io.store import atomic_path
        from calibflow.tables.assemble import combine_all

        combine_all(self.plan)
        with atomic_path(self.output().path) as tmp, open(tmp, "w") as f:
            f.write(self.plan.combined_key() + "\n")


class ExportTables(CalibTask):
    """Export every format and publish under ``<result_dir>/<name>/`` (manifest names the key)."""

    def requires(self):
        yield CombineTables(**self.common())

    def complete(self) -> bool:
        plan = self.plan
        return is_published(plan.workdir, plan.export_key())

    def outputs_key(self) -> str:
        """The published outputs are those of the export key."""
        return self.plan.export_key()

    def run(self) -> None:
        from calibflow.export.publish import export_all

        export_all(self.plan)

