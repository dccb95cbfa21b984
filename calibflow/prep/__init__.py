"""Stage 1, tuple preparation: one ROOT input file in, one compact HDF5 table of candidates out.

Takes a config's sample and an input file; gives the prepared columns (mass, pass decisions, binning
variables, weight) after the lumi mask and cuts, with the cut flow. Open ``prepare`` first
(``prepare_file``); ``spec`` is what a file needs (branches, cuts, columns: its key), ``inputs`` checks
it against a sample's first file before any task runs, ``steps`` the per-chunk steps (cut flow, pairing
of tags and probes, object matching, the fused numba loop).
"""
