"""Tables and exports: per-variant tables, systematic combination, exports and publication."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from calibflow.export.publish import is_published
from calibflow.io.jsonio import load_numbers, write_record
from calibflow.plan import Plan
from calibflow.variants import NOMINAL
from tasks.base import CalibTask, tolerated_path, tolerating
from tasks.fit import FillHistograms, MakeBinning, fit_tasks

DONE = "tables.done"
PARTIAL = "tables.partial"
"""In a variant's table folder when bins had no result (FitBin failures tolerated by resources.FitBin.tolerance):
their indices per sample. The tables are made again by the next run, which retries those fits."""


class EfficiencyTable(CalibTask):
    """Collect every per-bin result of one variant into efficiencies/scale_factors/closure CSVs; with the config's
    ``coverage`` (nominal variant), the toys of every bin first and their columns in the tables."""

    def requires(self):
        yield MakeBinning(**self.same_content(lambda p: p.binning_key()))

    def output(self):
        return self.target(os.path.join(self.plan.table_dir(), DONE))

    def complete(self) -> bool:
        """Sealed, and not missing bins of an earlier run's tolerated failures."""
        return super().complete() and not partial(self.plan)

    def pending_kernel_stages(self) -> set[str]:
        """Kernel stages (``tasks.pool.kernel_stages``) of the tasks :meth:`run` will yield that are not complete:
        none when every fit is done, fits and histograms while the binning is not made."""
        from tasks.pool import pending_stages

        plan = self.plan
        if not os.path.exists(plan.binning_path()):
            return {"histograms", "fits"}
        toys = []
        if plan.coverage() is not None:
            from tasks.coverage import coverage_tasks

            toys = coverage_tasks(self, plan.coverage().toys, plan.coverage().seed)
        return pending_stages([*fit_tasks(self), *toys, *self.closure_histograms()])

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
        missing: dict[str, list[int]] = {}
        for t in fits:
            for i, path in zip(t.bin_indices(), t.result_paths(), strict=True):
                if os.path.exists(path) or not os.path.exists(tolerated_path(t)):
                    results[(t.sample, i)] = load_numbers(path)
                else:  # its FitBin task failed within the tolerance: a row without a result
                    results[(t.sample, i)] = missing_result(plan.config.samples[t.sample].method)
                    missing.setdefault(t.sample, []).append(i)
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
        partial_path = os.path.join(plan.table_dir(), PARTIAL)
        if os.path.exists(partial_path):
            os.remove(partial_path)
        before = folder_files(plan.table_dir())
        write_tables(plan.table_dir(), plan.load_scheme(), results, plan.scale_factor_pairs(), truth, coverage)
        if missing:
            write_record(partial_path, missing)
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

    def extra_inputs(self) -> list[str]:
        """The prepared tuples of samples with ``event_id``: the bootstrap of the covariances reads them."""
        plan = self.plan
        out = []
        for v in [NOMINAL, *plan.all_variants()]:
            vp = plan.with_variant(v)
            for s, smp in vp.config.samples.items():
                if smp.event_id is not None:
                    out += [vp.prep_path(s, i) for i in range(len(vp.input_files(s))) if not vp.is_excluded(s, i)]
        return out

    def complete(self) -> bool:
        """Sealed, and no table it combines misses bins of an earlier run's tolerated failures."""
        return super().complete() and not (any_partial(self.plan) and any(partial(t.plan) for t in self.requires()))

    def run(self) -> None:
        from calibflow.io.integrity import folder_files
        from calibflow.tables.assemble import combine_all

        check_sealed(self.requires())
        before = folder_files(self.plan.combined_dir())
        combine_all(self.plan)
        seal(self, self.plan.combined_key(), before)


class ExportTables(CalibTask):
    """Export every format and publish under ``<result_dir>/<name>/`` (manifest names the key)."""

    publishes = True

    def requires(self):
        yield CombineTables(**self.common())

    def complete(self) -> bool:
        plan = self.plan
        return is_published(plan.workdir, plan.export_key()) and not (
            any_partial(plan) and any(partial(t.plan) for c in self.requires() for t in c.requires()))

    def outputs_key(self) -> str:
        """The published outputs are those of the export key."""
        return self.plan.export_key()

    def run(self) -> None:
        from calibflow.export.publish import export_all

        check_sealed(self.requires())
        export_all(self.plan)


def partial(plan: Plan) -> bool:
    """Whether the tables of ``plan``'s variant miss bins whose fits failed within the tolerance of an earlier
    run (:data:`PARTIAL`; not during the run that tolerates them)."""
    return os.path.exists(os.path.join(plan.table_dir(), PARTIAL)) and not tolerating(plan)


def any_partial(plan: Plan) -> bool:
    """Whether any table folder of the calibration is :data:`PARTIAL` (one glob: before asking the variants)."""
    import glob

    return bool(glob.glob(os.path.join(plan.workdir, "tables", "*", PARTIAL))) and not tolerating(plan)


def missing_result(method: str) -> dict[str, object]:
    """The per-bin result of a bin whose FitBin task failed within ``resources.FitBin.tolerance``: no efficiency,
    status ``missing``."""
    nan = float("nan")
    return {"method": method, "efficiency": nan, "err_down": nan, "err_up": nan,
            "status": "missing: its FitBin task failed (resources.FitBin.tolerance)"}


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

