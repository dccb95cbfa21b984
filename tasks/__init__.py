"""luigi/b2luigi tasks of calibflow: thin wrappers, one library call each."""

from tasks.fit import FillHistograms, FitBin, MakeBinning
from tasks.prep import GenerateToys, PrepareTuple
from tasks.tables import EfficiencyTable, ExportTables

__all__ = ["EfficiencyTable", "ExportTables", "FillHistograms", "FitBin", "GenerateToys", "MakeBinning", "PrepareTuple"]
