"""Benchmark: fused selection + 3-D histogram fill, numba kernel vs. boost-histogram.

    python benchmarks/binning.py [--events N] [--repeat R] [--seed S]

Toy calibration rows (p, eta, nTracks, mass, pid, weight). The selection is a mass window and a PID cut;
the histogram has a variable p axis and regular eta and nTracks axes, with sums of weights and of squared
weights. numba: one pass of :func:`calibflow.kernels.binindex.fill_bins` over the columns (the scheme is
flattened once, outside the timing). boost-histogram: numpy selection mask, masked copies of the
columns, ``bh.Histogram.fill`` (single-threaded) with Weight storage. Both must give the same sums. Times
are the minimum over ``--repeat`` runs after a warm-up call. The last line printed is
``binning: <r>x boost-histogram`` with ``r = t_boost_histogram / t_numba``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import boost_histogram as bh
import numpy as np

from calibflow.binning import BinningScheme
from calibflow.kernels.binindex import Cut, fill_bins

P_EDGES = [2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 100.0]  # GeV
ETA = (20, 2.0, 5.0)  # bins, lo, hi
NTRACKS = (10, 0.0, 500.0)
MASS_WINDOW = (3.0, 3.2)  # GeV
PID_MIN = 0.3


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


def fill_numba(scheme: BinningScheme, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Fused selection + fill: (sumw, sumw2) per bin of ``scheme``."""
    cuts = (Cut("mass", *MASS_WINDOW), Cut("pid", PID_MIN))
    return fill_bins(scheme.flatten(), rows, cuts, weights=rows["weight"])


def fill_boost(rows: dict[str, np.ndarray]) -> bh.Histogram:
    """numpy selection mask, then a weighted 3-D boost-histogram fill of the selected rows."""
    sel = (rows["mass"] >= MASS_WINDOW[0]) & (rows["mass"] < MASS_WINDOW[1]) & (rows["pid"] >= PID_MIN)
    h = bh.Histogram(
        bh.axis.Variable(P_EDGES), bh.axis.Regular(*ETA), bh.axis.Regular(*NTRACKS), storage=bh.storage.Weight()
    )
    h.fill(rows["p"][sel], rows["eta"][sel], rows["nTracks"][sel], weight=rows["weight"][sel])
    return h


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Minimum wall time (s) of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rows = make_rows(args.events, args.seed)
    scheme = BinningScheme.product(
        [("p", P_EDGES), ("eta", np.linspace(ETA[1], ETA[2], ETA[0] + 1)), ("nTracks", np.linspace(*NTRACKS[1:], NTRACKS[0] + 1))]
    )
    sumw, sumw2 = fill_numba(scheme, rows)
    h = fill_boost(rows)
    shape = (len(P_EDGES) - 1, ETA[0], NTRACKS[0])
    np.testing.assert_allclose(sumw.reshape(shape), h.view().value, rtol=1e-12)
    np.testing.assert_allclose(sumw2.reshape(shape), h.view().variance, rtol=1e-12)
    n_sel = int(np.count_nonzero(sumw2))
    print(f"{args.events} rows, {len(scheme)} bins ({n_sel} filled), selected sum of weights {sumw.sum():.6g}: same in both")

    t_numba = best_time(lambda: fill_numba(scheme, rows), args.repeat)
    t_bh = best_time(lambda: fill_boost(rows), args.repeat)
    for name, t in (("numba fused selection + fill", t_numba), ("numpy mask + boost-histogram fill", t_bh)):
        print(f"{name:36s} {t * 1e3:8.1f} ms  {args.events / t / 1e6:6.1f} M rows/s")
    print(f"binning: {t_bh / t_numba:.1f}x boost-histogram")


if __name__ == "__main__":
    main()
