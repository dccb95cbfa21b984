"""Tables and exports: efficiency/scale-factor/closure tables, correctionlib JSON, plots, publication."""

from __future__ import annotations

import json
import os

from calibflow.outputs import is_published
from tasks.base import CalibTask
from tasks.fit import FillHistograms, FitBin, MakeBinning, fit_tasks

DONE = "tables.done"


class EfficiencyTable(CalibTask):
    """Collect every per-bin result into efficiencies.csv, scale_factors.csv and closure.csv."""

    def requires(self):
        yield MakeBinning(**self.common())

    def output(self):
        return self.target(os.path.join(self.plan.table_dir(), DONE))

    def run(self):
        from calibflow.histos import read_truth
        from calibflow.outputs import write_tables

        plan = self.plan
        fits = fit_tasks(self)
        yield fits  # dynamic dependencies: the bins are known once the binning exists
        results = {}
        for t in fits:
            assert isinstance(t, FitBin)
            with open(t.output().path) as f:
                results[(t.sample, t.bin_index)] = json.load(f)
        truth = {}
        if plan.config.closure:
            hists = [FillHistograms(sample=s, **self.common()) for s in plan.config.samples]
            yield hists
            truth = {h.sample: read_truth(h.output().path) for h in hists}
        write_tables(plan.table_dir(), plan.load_scheme(), results, plan.scale_factor_pairs(), truth)
        with open(self.output().path, "w") as f:
            f.write(plan.table_key() + "\n")


class ExportTables(CalibTask):
    """Export correctionlib JSON and plots, then publish everything under ``<result_dir>/<name>/``."""

    def requires(self):
        yield EfficiencyTable(**self.common())

    def complete(self) -> bool:
        plan = self.plan
        return is_published(plan.workdir, plan.table_key())

    def run(self) -> None:
        from calibflow.outputs import export_tables, publish

        plan = self.plan
        out = plan.table_dir()
        cfg = plan.config
        files = [os.path.join(out, n) for n in ("efficiencies.csv", "scale_factors.csv", "closure.csv")]
        files = [f for f in files if os.path.exists(f)]
        files += export_tables(out, plan.load_scheme(), cfg.outputs.correction_name or cfg.name,
                               cfg.outputs.correctionlib, cfg.outputs.plots)
        publish(out, plan.workdir, plan.table_key(), files)
