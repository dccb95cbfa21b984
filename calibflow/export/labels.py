"""How binning variables are shown on figures, tables and ROOT axes: label (LaTeX allowed) and unit."""

from __future__ import annotations

from typing import NamedTuple

from calibflow.config import CalibrationConfig, axis_label


class VariableLabel(NamedTuple):
    """How a binning variable is shown: ``label`` (LaTeX allowed) and ``unit`` (empty: none)."""

    label: str
    unit: str

    @property
    def axis(self) -> str:
        """``label [unit]``."""
        return axis_label(self.label, self.unit)


def variable_labels(cfg: CalibrationConfig) -> dict[str, VariableLabel]:
    """Label and unit of every binning variable of ``cfg``."""
    return {v.name: VariableLabel(v.display, v.display_unit) for v in cfg.binning.variables}
