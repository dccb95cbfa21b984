"""Input and output formats: ROOT files in, HDF5 stores between the stages.

Takes paths; gives arrays. ``baskets`` reads flat ROOT branches basket by basket, ``root`` sets up
decompression and writes ROOT trees, ``inspect`` lists a file's trees and branches (and only their names,
quickly, for the config check), ``lumi`` applies golden-JSON lumi masks, ``store`` writes and reads the
compact HDF5 tables every stage exchanges (open ``store`` first), ``jsonio`` writes strict JSON (NaN as
``null``, ±inf as ``"inf"``/``"-inf"``) and reads calibflow's numeric records back.
"""
