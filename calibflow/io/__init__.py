"""Input and output formats: ROOT files in, HDF5 stores between the stages.

Takes paths; gives arrays. ``baskets`` reads flat ROOT branches basket by basket, ``root`` sets up
decompression and writes ROOT trees, ``inspect`` lists a file's trees and branches (names only, quickly),
``lumi`` applies golden-JSON lumi masks, ``store`` writes and reads the HDF5 tables the stages exchange (open
it first), ``jsonio`` writes strict JSON and reads numeric records back, ``integrity`` checksums intermediates.
"""
