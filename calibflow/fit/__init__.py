"""Stage 3, per-bin measurements: pass/fail mass histograms per bin, and a fit or count per bin.

Takes prepared tuples and a scheme; gives one result per bin and sample (efficiency, errors, yields, fit
quality). Open ``measure`` first (``measure_bin``: one bin, any method); ``histograms`` fills the per-bin
histograms, ``models`` holds the shapes, ``passfail`` and ``unbinned`` the simultaneous fits, ``sweights``,
``counting``, ``sideband`` and ``tistos`` (TIS/TOS trigger efficiencies) the other methods, ``diagnostics``
the checks, ``plots`` the fit figures and ``gallery`` a sample's page of them.
"""
