"""Benchmark: a 3-D (PID, p, cos theta) KDE template from sWeighted candidates, and resampling simulation.

    python benchmarks/kde.py [--data N] [--sim M] [--bins 200,100,100] [--scipy-points K] [--seed S]

The sWeighted toy of :mod:`calibflow.toys.sweighted` (60% signal; negative sWeights included) gives the
data; ``build`` is the wall time of :func:`calibflow.kde.template.build_template` (linear binning, three FFT
convolutions, clipping and the per-cell normalisation) on the grid of ``--bins``. ``resample`` is the rate of
:func:`calibflow.kde.sample.resample` with the per-candidate hashed uniforms (:func:`uniforms`) on ``--sim``
simulated candidates, best of 3 after a warm-up. The scipy comparison is density evaluation at equal
bandwidth: scipy's ``gaussian_kde`` of the same candidates and weights (the same diagonal bandwidth) is
timed at ``--scipy-points`` grid points and scaled to the whole grid; ``x`` = scipy's time for the grid /
the grid KDE's time (binning + convolutions). Its values at those points are compared with the grid's.
Compared points lie 4 sigma from the edges (the grid reflects there, scipy does not).
The last line printed is ``kde: build <t> s, resample <r> Mcand/s, <x>x scipy gaussian_kde``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from calibflow.kde.bandwidth import bandwidths
from calibflow.kde.grid import Axis, kde_grid, scipy_kde
from calibflow.kde.sample import key_of, resample, uniforms
from calibflow.kde.template import build_template
from calibflow.toys.sweighted import COS_RANGE, P_RANGE, generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=int, default=1_000_000)
    ap.add_argument("--sim", type=int, default=1_000_000)
    ap.add_argument("--bins", default="200,100,100")
    ap.add_argument("--scipy-points", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    data, sim = generate(args.data, True, rng), generate(args.sim, False, rng)
    nb = [int(b) for b in args.bins.split(",")]
    axes = (Axis("pid", 0.0, 1.0, nb[0]), Axis("p", *P_RANGE, nb[1]), Axis("cosTheta", *COS_RANGE, nb[2]))
    points = np.column_stack([data["pid"], data["p"], data["cosTheta"]])
    w = data["sw"]
    sigma = bandwidths(points, w) * np.array([0.4, 1.0, 1.0])  # a narrower PID kernel for the peaked score
    print(f"{args.data} sWeighted candidates ({(w < 0).sum()} negative), grid {'x'.join(map(str, nb))}, "
          f"bandwidth {np.array2string(sigma, precision=4)}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_template(points[:1000], w[:1000], axes, sigma)  # numba warm-up
        t0 = time.perf_counter()
        template = build_template(points, w, axes, sigma)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        grid = kde_grid(points, w, axes, sigma)
        t_grid = time.perf_counter() - t0

    kin = np.column_stack([sim["p"], sim["cosTheta"]])
    ids = [sim["__run__"], sim["__event__"], sim["__candidate__"]]
    key = key_of(1, "pid_resampled")
    resample(template, kin[:100], uniforms([i[:100] for i in ids], key))
    t_res = min(_timed(lambda: resample(template, kin, uniforms(ids, key))) for _ in range(3))
    print(f"build {t_build:.2f} s (grid KDE {t_grid:.2f} s); resample {args.sim} candidates in {t_res:.3f} s")

    kde = scipy_kde(points, w, sigma)
    k = args.scipy_points
    reach = [int(np.ceil(4 * s / a.width)) for a, s in zip(axes, sigma, strict=True)]  # away from reflections
    idx = tuple(rng.integers(m, n - m, k) for n, m in zip(nb, reach, strict=True))
    at = np.column_stack([a.centres[i] for a, i in zip(axes, idx, strict=True)])
    t0 = time.perf_counter()
    ref = kde(at.T)
    t_scipy = (time.perf_counter() - t0) / k * grid.size
    ours = grid[idx] / w.sum()
    big = ref > 0.05 * ref.max()
    dev = np.max(np.abs(ours[big] / ref[big] - 1))
    print(f"scipy gaussian_kde: {k} points in {t_scipy * k / grid.size:.2f} s, {t_scipy:.0f} s for the grid's "
          f"{grid.size} points; grid vs scipy at those points: max relative deviation {dev:.2%} "
          f"(where the density > 5% of its maximum, 4 sigma from the edges)")
    print(f"kde: build {t_build:.2f} s, resample {args.sim / t_res / 1e6:.1f} Mcand/s, "
          f"{t_scipy / t_grid:.0f}x scipy gaussian_kde")


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
