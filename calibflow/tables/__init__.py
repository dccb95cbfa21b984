"""Stage 4, tables: per-bin results into efficiency, scale-factor and closure tables with systematics.

Takes the per-bin results of every variant (nominal, systematic runs, working points, methods); gives
CSV and master tables (JSON, HDF5). Open ``assemble`` first (``combine_all`` for a plan); ``rows`` makes
table rows from results, ``systematics`` combines the sources, ``products`` and ``roc`` derive tables,
``coverage`` adds the toys' coverage columns and flags, ``write`` writes the files; ``fitstatus`` counts the
bins by result status (ok, flagged by reason, low statistics, failed) for the run's closing summary.
"""
