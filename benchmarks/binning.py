"""Benchmark: fused selection + 3-D histogram fill, numba kernel vs. boost-histogram.

    python benchmarks/binning.py [--events N] [--repeat R] [--seed S]

Toy calibration rows (p, eta, nTracks, mass, pid, weight). The selection is a mass window and a PID cut;
the histogram has a variable p axis and regular eta and nTracks axes, with sums of weights and of squared
weights. numba: one pass of :func:`calibflow.kernels.binindex.fill_bins` over the columns (the scheme is
flattened once, outside the timing). boost-histogram: numpy selection mask, masked copies of the
columns, ``bh.Histogram.fill`` (single-threaded) with Weight storage. Both must give the same counts
(unweighted fill, exact) and sums. Times are the minimum over ``--repeat`` interleaved rounds after a
warm-up call. The last line printed is ``binning: <r>x boost-histogram`` with
``r = t_boost_histogram / t_numba``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import boost_histogram as bh
import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.kernels.binindex import Cut, fill_bins

P_EDGES = [2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 100.0]  # GeV
ETA = (20, 2.0, 5.0)  # bins, lo, hi
NTRACKS = (10, 0.0, 500.0)
MASS_WINDOW = (3.0, 3.2)  # GeV
PID_MIN = 0.3
CUTS = (Cut("mass", *MASS_WINDOW), Cut("pid", PID_MIN))


def make_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random columns: p (GeV), eta, nTracks, mass (GeV), pid response, weight."""
    rng = np.random.default_rng(seed)
    return {
        "p": rng.exponential(20.0, n) + 1.0,
        "eta": rng.uniform(1.8, 5.2, n),
        "nTracks": rng.gamma(4.0, 50.0, n),
        "mass": rng.normal(3.1, 0.08, n),
        "pid": rng.uniform(0.0, 1.0, n),
        "weight": rng.uniform(0.5, 1.5, n),
    }


def make_scheme() -> BinningScheme:
    """The product binning p x eta x nTracks of the benchmark (outer first)."""
    return BinningScheme.product(
        [
            ("p", P_EDGES),
            ("eta", np.linspace(ETA[1], ETA[2], ETA[0] + 1)),
            ("nTracks", np.linspace(NTRACKS[1], NTRACKS[2], NTRACKS[0] + 1)),
        ]
    )


def fill_numba(scheme: BinningScheme, rows: dict[str, np.ndarray], weighted: bool = True) -> np.ndarray:
    """Fused selection + fill: (sumw, sumw2) per bin of ``scheme``, shape (2, n_bins)."""
    return np.stack(fill_bins(scheme.flatten(), rows, CUTS, weights=rows["weight"] if weighted else None))


def fill_boost(rows: dict[str, np.ndarray], weighted: bool = True) -> bh.Histogram:
    """numpy selection mask, then a 3-D boost-histogram fill of the selected rows (Weight storage)."""
    sel = (rows["mass"] >= MASS_WINDOW[0]) & (rows["mass"] < MASS_WINDOW[1]) & (rows["pid"] >= PID_MIN)
    h = bh.Histogram(
        bh.axis.Variable(P_EDGES),
        bh.axis.Regular(*ETA),
        bh.axis.Regular(*NTRACKS),
        storage=bh.storage.Weight() if weighted else bh.storage.Double(),
    )
    h.fill(
        rows["p"][sel],
        rows["eta"][sel],
        rows["nTracks"][sel],
        weight=rows["weight"][sel] if weighted else None,
    )
    return h


def best_times(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Minimum wall time (s) of each function over ``repeat`` interleaved rounds, after one warm-up call."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rows = make_rows(args.events, args.seed)
    scheme = make_scheme()
    shape = (len(P_EDGES) - 1, ETA[0], NTRACKS[0])
    counts = fill_numba(scheme, rows, weighted=False)[0]
    np.testing.assert_array_equal(counts.reshape(shape), fill_boost(rows, weighted=False).view())
    sums = fill_numba(scheme, rows)
    h = fill_boost(rows)
    np.testing.assert_allclose(sums[0].reshape(shape), h.view().value, rtol=1e-12)
    np.testing.assert_allclose(sums[1].reshape(shape), h.view().variance, rtol=1e-12)
    print(f"{args.events} rows, {int(counts.sum())} selected in {len(scheme)} bins: same counts and sums")

    t = best_times({"numba": lambda: fill_numba(scheme, rows), "bh": lambda: fill_boost(rows)}, args.repeat)
    for label, key in (
        ("numba fused selection + fill", "numba"),
        ("numpy mask + boost-histogram fill", "bh"),
    ):
        print(f"{label:36s} {t[key] * 1e3:8.1f} ms  {args.events / t[key] / 1e6:6.1f} M rows/s")
    print(f"binning: {t['bh'] / t['numba']:.1f}x boost-histogram")


if __name__ == "__main__":
    main()
