"""luigi/b2luigi tasks of calibflow: thin wrappers, one library call each."""

from tasks.fit import FillHistograms, FitBin, MakeBinning, SplitByBin
from tasks.prep import GenerateToys, PrepareTuple
from tasks.tables import CombineTables, EfficiencyTable, ExportTables

__all__ = [
    "CombineTables", "EfficiencyTable", "ExportTables", "FillHistograms", "FitBin", "GenerateToys", "MakeBinning",
    "PrepareTuple", "SplitByBin",
]
