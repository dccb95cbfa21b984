"""Stage 2, binning: the nested-rectangular bin scheme of a calibration.

Takes the binning section and, for data-driven binnings, the prepared tuples; gives a ``BinningScheme``
(JSON) whose bins carry content keys. Open ``scheme`` first (bins, keys, locating rows); ``optimise``
merges fine bins until every fitted category is populated, ``make`` builds a scheme from the config,
``plot`` draws it.
"""
