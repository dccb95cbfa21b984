"""Input and output formats: ROOT files in, HDF5 stores between the stages.

Takes paths and URLs; gives arrays. ``tree_meta`` reads the needed branches' basket tables of a TTree,
``baskets`` reads flat and jagged ROOT branches basket by basket, ``root`` sets up decompression, writes trees
and reads URLs, ``remote`` lists, identifies and retries ``root://``/``https://`` files, ``inspect`` lists
trees and branches (names only), ``lumi`` applies lumi masks, ``store`` writes and reads the HDF5 tables the
stages exchange (open it first), ``jsonio`` writes strict JSON, ``integrity`` checksums intermediates.
"""
