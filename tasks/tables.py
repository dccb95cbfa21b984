"""Tables and exports: per-variant tables, systematic combination, exports and publication."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from calibflow.export.publish import is_published
from calibflow.io.jsonio import load_numbers
from calibflow.variants import NOMINAL
from tasks.base import CalibTask
from tasks.fit import FillHistograms, MakeBinning, fit_tasks

DONE = "tables.done"


class EfficiencyTable(CalibTask):
    """Collect every per-bin result of one variant into efficiencies/scale_factors/closure CSVs; with the config's
    ``coverage`` (nominal variant), the toys of every bin first and their columns in the tables."""

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
        from calibflow.io.integrity import folder_files
        from calibflow.tables.write import write_tables

        plan = self.plan
        fits = fit_tasks(self)
        yield fits  # dynamic dependencies: the bins are known once the binning exists
        results = {}
        for t in fits:
            for i, path in zip(t.bin_indices(), t.result_paths(), strict=True):
                results[(t.sample, i)] = load_numbers(path)
        coverage = None
        if plan.coverage() is not None:  # the config's coverage section: toys of every bin, then the columns
            from tasks.coverage import coverage_outputs, coverage_tasks

            toys = coverage_tasks(self, plan.coverage().toys, plan.coverage().seed)
            yield toys
            coverage = coverage_outputs(toys)[1]
        truth = {}
        hists = self.closure_histograms()
        if hists:
            yield hists
            truth = {h.sample: read_truth(h.output().path) for h in hists}
        before = folder_files(plan.table_dir())
        write_tables(plan.table_dir(), plan.load_scheme(), results, plan.scale_factor_pairs(), truth, coverage)
        seal(self, plan.table_key(), before)


class CombineTables(CalibTask):
    """Nominal tables (and each working point's) with the systematic sources combined, the master
    table and, for cut scans, the ROC points."""

    def requires(self):
        plan = self.plan
        for v in [NOMINAL, *plan.all_variants()]:
            v_plan = plan.with_variant(v)
            yield EfficiencyTable(**self.in_variant(v_plan.canonical(lambda p: p.table_key())))

    def output(self):
        return self.target(os.path.join(self.plan.combined_dir(), DONE))

    def run(self) -> None:
        from calibflow.io.integrity import folder_files
        from calibflow.tables.assemble import combine_all

        check_sealed(self.requires())
        before = folder_files(self.plan.combined_dir())
        combine_all(self.plan)
        seal(self, self.plan.combined_key(), before)


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

        check_sealed(self.requires())
        export_all(self.plan)


def seal(task: CalibTask, key: str, before: Mapping[str, int]) -> None:
    """Write the done marker of ``task`` (its output): ``key``, then the size and SHA-256 of every file it wrote
    into its folder (not in ``before``, the folder's files and inodes before it wrote:
    :func:`calibflow.io.integrity.seal_text`; the quick check of ``complete()`` compares the sizes)."""
    from calibflow.io.integrity import seal_text
    from calibflow.io.store import atomic_path

    path = task.output().path
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(seal_text(path, key, before))


def check_sealed(tasks: Iterable[CalibTask]) -> None:
    """Check the SHA-256 of every file the done markers of ``tasks`` (the required table tasks) seal, before
    their folders are read: CorruptIntermediate naming the marker (then removed: the tables are rebuilt)."""
    from calibflow.io.integrity import check_full

    for t in tasks:
        check_full(t.output().path)

