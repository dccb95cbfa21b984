"""Apply exported corrections to a simulation (or data) tuple: one task per input file."""

from __future__ import annotations

import b2luigi
import luigi


class ApplyCorrections(b2luigi.Task):
    """Copy ``src`` to ``dst`` adding the weight columns of the calibrator sequence in ``apply_config``."""

    apply_config = b2luigi.Parameter(description="apply config YAML (calibrator sequence)")
    src = b2luigi.Parameter(description="input ROOT or HDF5 tuple")
    dst = b2luigi.Parameter(description="output file")
    is_mc = b2luigi.BoolParameter(default=True, description="simulation (apply mc_only steps)")

    def output(self):
        return luigi.LocalTarget(self.dst)

    def run(self) -> None:
        from calibflow.apply import apply_to_file, load_apply_config

        cfg, seq = load_apply_config(self.apply_config)
        apply_to_file(self.src, self.dst, cfg, seq, self.is_mc)
