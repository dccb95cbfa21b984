"""Stage 4, tables: per-bin results into efficiency, scale-factor and closure tables with systematics.

Takes the per-bin results of every variant; gives CSV and master tables (JSON, HDF5). Open ``assemble`` first
(``combine_all``); ``rows`` makes rows from results, ``systematics`` combines the sources, ``products`` and ``roc``
derive tables, ``coverage`` adds the toys' coverage columns, ``covariance`` the bin-to-bin covariances, eigen-variations
and replicas (``bootstrap``: over events), ``write`` writes the files, ``fitstatus`` counts the bins by status.
"""
