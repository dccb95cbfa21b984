"""Load the numerical modules and numba kernels once in the scheduling process.

luigi runs each task of a multi-worker run in a freshly forked process. A process that calls a numba
kernel for the first time pays for numba's initialisation and for loading the kernel from its cache
(about a second here, most of it numba's extension entry points); forked children inherit what the
parent has already loaded. Calling :func:`warm_up` before luigi forks makes every per-bin task start
warm, which matters when tasks take tens of milliseconds.
"""

from __future__ import annotations

import numpy as np


def warm_up() -> None:
    """Import the compute modules and call every hot kernel once on tiny inputs."""
    import calibflow.export.figures
    import calibflow.export.publish
    import calibflow.prep.prepare
    import calibflow.toys.jpsi  # noqa: F401
    from calibflow.binning.scheme import BinningScheme
    from calibflow.fit.passfail import fit_pass_fail
    from calibflow.fit.unbinned import fit_pass_fail_unbinned
    from calibflow.kernels.histogram import fill_pass_fail

    scheme = BinningScheme.product([("x", [0.0, 1.0, 2.0])])
    idx = scheme.locate({"x": np.array([0.5, 1.5])})
    fill_pass_fail(idx, np.array([True, False]), np.array([0.5, 0.5]), np.ones(2), 0.0, 1.0,
                   np.zeros((2, 2, 4)), np.zeros((2, 2, 4)))
    rng = np.random.default_rng(0)
    mass = np.concatenate([rng.normal(0.5, 0.05, 400), rng.uniform(0.0, 1.0, 200)])
    passed = rng.uniform(size=mass.size) < 0.7
    edges = np.linspace(0.0, 1.0, 21)
    hp, hf = np.histogram(mass[passed], edges)[0], np.histogram(mass[~passed], edges)[0]
    fit_pass_fail(edges, hp.astype(float), hf.astype(float), minos=False)
    fit_pass_fail_unbinned(mass[passed], mass[~passed], 0.0, 1.0, minos=False)
