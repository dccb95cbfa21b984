"""Stage 5, exports: the combined tables in the formats consumers read, the report, publication.

Takes combined tables; gives correctionlib JSON, ROOT, Markdown/LaTeX, figures, a report, published under
``<result_dir>/<name>/``. Open ``publish`` first (``export_all``); ``correctionlib``, ``root``, ``text`` one format each
(``grid``: tables on the bins' edges), ``figures``, ``labels``, ``report``, ``galleries``, ``coverage`` (its page),
``uncertainty`` (eigen-variations, correlations), ``closure_apply`` (closure after applying), ``merge`` (eras, WPs),
``storage`` (a copy of the published set in a folder or on XRootD: ``outputs.publish_to``).
"""
