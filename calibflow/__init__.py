"""calibflow: efficiency and data/MC correction tables from calibration samples.

One package per stage, in pipeline order: ``prep`` (ROOT files to compact tables), ``binning``, ``fit``
(per-bin measurements), ``tables``, ``export``; beside them ``io``, ``kernels``, ``toys`` and ``ops``.
``config``, ``expr`` and ``variants`` are the language of a calibration; ``plan`` knows every content key
and path. No module here imports luigi: the tasks and the command are in the ``tasks`` package.
"""

__version__ = "0.1.0"
