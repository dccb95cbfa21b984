"""calibflow: efficiency and data/MC correction tables from calibration samples.

One package per stage, in pipeline order: ``prep`` (ROOT files to compact tables), ``binning``, ``fit``
(per-bin measurements), ``tables``, ``export``; beside them ``io``, ``kernels``, ``toys`` and ``ops``.
``config``, ``expr`` and ``variants`` are the language of a calibration; ``plan`` knows every content key
and path. No module here imports luigi: the tasks and the command are in the ``tasks`` package. Importing
calibflow points numba's cache at the kernel cache (:mod:`calibflow.kernels.cache`).
"""

from calibflow.kernels.cache import use_kernel_cache

__version__ = "0.1.0"

use_kernel_cache()  # numba's machine code of every kernel in one folder, set before any kernel is defined
