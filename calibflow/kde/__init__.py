"""Kernel density templates of a PID variable against kinematics, and PID resampling / transform from them.

Takes sWeighted calibration candidates; gives N-D densities on a grid and data-like PID values. Open ``template``
first (build, store, ROOT export). ``grid``: binned KDE (linear binning + FFT); ``boundary``: reflection at the
edges; ``bandwidth``: Scott/Silverman with Kish's N; ``sample``: per-candidate resampling and CDF transform
(numba, numpy references); ``validate``: cut-scan closure; ``config``, ``plan``, ``pipeline``, ``report``: the
KDE config, its keys and paths, its steps and its report page.
"""
