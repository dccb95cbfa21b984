"""Benchmark: per-bin fits.

    python benchmarks/fits.py [--repeat R] [--seed S] [--only t1|t2|t3 ...]

* t1: median wall time of one binned simultaneous pass/fail fit (100 mass bins, crystalball +
  exponential, Migrad + HESSE + MINOS on ε), over ``--repeat`` toys, after a warm-up fit (JIT/cache).
* t2: median wall time of one extended unbinned signal + background fit of 100k candidates
  (crystalball + exponential, Migrad + HESSE; :func:`calibflow.fit.unbinned.fit_extended`).
* t3: the whole table, 200 bins × {data, simulation} × 5 variations through the task graph with 2
  workers (:func:`time_table`; 2000 bin fits, run as chunks of bins: see docs/design.md).

The last line printed is ``fits: binned pass/fail <t1> ms, unbinned 100k <t2> s, table 200x2x5 <t3> s``.
Goals: t1 ≤ 15 ms, t2 ≤ 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

from calibflow.fit.passfail import fit_pass_fail
from calibflow.fit.unbinned import fit_extended

LO, HI = 2900.0, 3300.0
SIGNAL = stats.crystalball(1.5, 4.0, 3097.0, 12.0)


def _truncated(dist: stats.rv_continuous, n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = dist.cdf([LO, HI])
    return dist.ppf(rng.uniform(a, b, n))


def binned_toy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges and pass/fail histograms: 5000 signal (ε = 0.8), 3000/6000 exponential background."""
    edges = np.linspace(LO, HI, 101)
    sig = _truncated(SIGNAL, 5000, rng)
    passed = rng.random(sig.size) < 0.8
    hp = np.histogram(np.concatenate([sig[passed], _truncated(stats.expon(loc=LO, scale=250.0), 3000, rng)]), edges)[0]
    hf = np.histogram(np.concatenate([sig[~passed], _truncated(stats.expon(loc=LO, scale=500.0), 6000, rng)]), edges)[0]
    return edges, hp.astype(float), hf.astype(float)


def time_binned(repeat: int, rng: np.random.Generator) -> float:
    """Median seconds of one binned pass/fail fit with MINOS on ε."""
    fit_pass_fail(*binned_toy(rng))
    times = []
    for _ in range(repeat):
        toy = binned_toy(rng)
        t0 = time.perf_counter()
        r = fit_pass_fail(*toy, signal="crystalball", background="exponential", minos=True)
        times.append(time.perf_counter() - t0)
        if r.status != "ok":
            print(f"  binned fit status: {r.status}")
    return float(np.median(times))


def time_unbinned(repeat: int, rng: np.random.Generator) -> float:
    """Median seconds of one extended unbinned fit of 100k candidates (50k signal, 50k background)."""
    def sample() -> np.ndarray:
        return np.concatenate([_truncated(SIGNAL, 50_000, rng), _truncated(stats.expon(loc=LO, scale=400.0), 50_000, rng)])

    fit_extended(sample()[:2000], LO, HI)
    times = []
    for _ in range(repeat):
        x = sample()
        t0 = time.perf_counter()
        fit = fit_extended(x, LO, HI)
        times.append(time.perf_counter() - t0)
        if fit.status != "ok":
            print(f"  unbinned fit status: {fit.status}")
    return float(np.median(times))


TABLE_CONFIG = {
    "name": "bench_table",
    "toy": {"seed": 5, "samples": {"data": {"candidates": 1_000_000, "files": 2},
                                   "mc": {"candidates": 1_000_000, "files": 2}}},
    "samples": {"data": {"role": "data"}, "mc": {"role": "mc"}},
    "aliases": {"p": "probe_P", "eta": "probe_ETA"},
    "selection": {"tag": "tag_PT > 1.0 and tag_isMuon == 1"},
    "pass": "probe_Assoc == 1",
    "mass": {"variable": "Jpsi_M", "range": [2950, 3250], "bins": 100},
    "binning": {"variables": [{"name": "p", "range": [2, 200], "log": 20},
                              {"name": "eta", "range": [2.0, 5.0], "uniform": 10}]},
    "fit": {"signal": "crystalball", "background": "exponential", "plots": "none",
            "parameters": {"mu": {"value": 3097, "limits": [3070, 3120]}, "n": {"value": 5, "fixed": True}}},
    "systematics": {"sources": [
        {"name": "sigmodel", "vary": {"fit": {"signal": "gauss", "parameters": {"n": None}}}},
        {"name": "bkgmodel", "vary": {"fit": {"background": "chebyshev2"}}},
        {"name": "massrange", "up": {"mass": {"range": [2970, 3230], "bins": 86}},
         "down": {"mass": {"range": [2930, 3270], "bins": 113}}},
    ]},
}


def time_table() -> float | None:
    """Seconds to build the 200 bins × {data, simulation} × 5 variations table (nominal and four varied
    runs, every bin of both samples fitted) through the task graph with 2 local workers, including
    scheduling and the histogram filling; toy generation and tuple preparation run before the clock."""
    import tempfile

    import yaml

    from calibflow.plan import Plan
    from tasks import CombineTables, PrepareTuple
    from tasks.runner import build

    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "table.yaml")
        with open(cfg, "w") as f:
            yaml.safe_dump(TABLE_CONFIG, f)
        plan = Plan.create(cfg, os.path.join(tmp, "res"))
        common = {"config": plan.config_path, "result_dir": plan.result_dir}
        prep = [PrepareTuple(sample=s, index=i, **common) for s in ("data", "mc") for i in range(2)]
        if not build(plan, prep, workers=2).ok:
            raise RuntimeError("tuple preparation failed")
        from calibflow.ops.warmup import warm_up

        t0 = time.perf_counter()
        warm_up()  # as `calibflow run` does before forking its workers
        report = build(plan, [CombineTables(**common)], workers=2)
        seconds = time.perf_counter() - t0
        if not report.ok:
            raise RuntimeError(f"table build failed: {report.failed[:3]}")
        print(f"table: {report.summary()}")
        if report.ran["FitBin"] != 200 * 2 * 5:
            raise RuntimeError(f"expected 2000 fits, ran {report.ran['FitBin']}")
        return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, help="binned fits to time (unbinned: repeat // 10, ≥ 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("t1", "t2", "t3"), action="append",
                    help="time only these targets (repeatable); the others are printed as n/a")
    args = ap.parse_args()
    only = set(args.only or ("t1", "t2", "t3"))
    rng = np.random.default_rng(args.seed)
    t1 = t2 = t3 = None
    if "t1" in only:
        t1 = time_binned(args.repeat, rng)
        print(f"binned pass/fail fit, median of {args.repeat}: {t1 * 1e3:.1f} ms")
    if "t2" in only:
        n_unbinned = max(3, args.repeat // 10)
        t2 = time_unbinned(n_unbinned, rng)
        print(f"unbinned 100k fit, median of {n_unbinned}: {t2:.2f} s")
    if "t3" in only:
        t3 = time_table()
    t1_text = "n/a" if t1 is None else f"{t1 * 1e3:.1f}"
    t2_text = "n/a" if t2 is None else f"{t2:.2f}"
    t3_text = "n/a" if t3 is None else f"{t3:.1f}"
    print(f"fits: binned pass/fail {t1_text} ms, unbinned 100k {t2_text} s, table 200x2x5 {t3_text} s")


if __name__ == "__main__":
    main()
