"""Stage 3, per-bin measurements: pass/fail mass histograms per bin, and a fit or count per bin.

Takes prepared tuples and a scheme; gives one result per bin and sample (efficiency, errors, yields, fit quality).
Open ``measure`` first (``measure_bin``: one bin, any method); ``histograms`` fills the histograms, ``models`` holds
the shapes, ``templates`` and ``constraints`` what fits take from simulation, ``passfail`` and ``unbinned`` the fits,
``sweights``, ``counting``, ``sideband``, ``tistos`` the other methods, ``diagnostics`` the checks, ``plots``
the figures, ``gallery`` a sample's page, ``coverage`` toys, ``linearise`` a fit as signal weights (bootstrap).
"""
