"""Stage 5, exports: the combined tables in the formats consumers read, the report, publication.

Takes a folder of combined tables; gives correctionlib JSON, ROOT histograms, Markdown and LaTeX tables,
figures and a report page, published under ``<result_dir>/<name>/``. Open ``publish`` first (``export_all``);
``correctionlib``, ``root`` and ``text`` write one format each (``grid`` lays tables out on the bins' edges),
``figures`` the plots, ``labels`` the variables' names, ``report`` the page, ``galleries`` the fit galleries,
``coverage`` the coverage table and page (``calibflow coverage``).
"""
