"""Benchmark: per-bin fits.

    python benchmarks/fits.py [--repeat R] [--seed S] [--only t1|t2|t3|t4 ...] [--reference]

* t1: median wall time of one binned simultaneous pass/fail fit (100 mass bins, crystalball +
  exponential, Migrad + HESSE + MINOS on ε), over ``--repeat`` toys, after a warm-up fit (JIT/cache).
* t2: median wall time of one extended unbinned signal + background fit of 100k candidates
  (crystalball + exponential, Migrad + HESSE; :func:`calibflow.fit.unbinned.fit_extended`).
* t3: the whole table, 200 bins × {data, simulation} × 5 variations through the task graph with 2
  workers (:func:`time_table`; 2000 bin fits, run as chunks of bins: see docs/design.md).
* t4: median wall time of one template fit (``fit.signal: template``; EGM's bin: 60 mass bins of 1 GeV on
  [60, 120], pass and fail templates of the same binning each ⊗ a Gaussian, RooCMSShape background, Migrad + HESSE
  + MINOS on ε), over ``--repeat`` toys; ``--reference`` also times the numpy cost (the shapes without their
  ``table``) on the same toys and prints the ratio.

The last line printed is ``fits: binned pass/fail <t1> ms, unbinned 100k <t2> s, table 200x2x5 <t3> s, template
<t4> ms``. Goals: t1 ≤ 15 ms, t2 ≤ 0.2 s; t4 is compared with its numpy reference (``--reference``).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
from scipy import special, stats

from calibflow.fit.models import Shape
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


Z_LO, Z_HI = 60.0, 120.0
Z_EDGES = np.linspace(Z_LO, Z_HI, 61)


def _z_peak(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Z → ee-like peak (GeV): Gaussian core and a radiative tail."""
    return np.where(rng.random(n) < 0.8, rng.normal(91.0, 2.5, n), 91.0 - rng.exponential(6.0, n))


def _turn_on(n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A RooCMSShape-like background (GeV): an exponential of ``scale`` times an erfc turn-on at 70 GeV."""
    x = Z_LO + rng.exponential(scale, n)
    return x[rng.random(n) < 0.5 * special.erfc((70.0 - x) * 0.05)]


def template_toys(repeat: int, rng: np.random.Generator) -> tuple[Shape, Shape, list[tuple[np.ndarray, np.ndarray]]]:
    """Pass/fail templates (50k/20k simulated candidates) and ``repeat`` data histograms: 2400 signal (ε = 0.8)
    shifted and smeared per category, 1500/3500 background candidates before the turn-on."""
    from calibflow.fit.templates import template_record, template_signals

    sim = np.stack([np.histogram(_z_peak(k, rng), Z_EDGES)[0] for k in (50_000, 20_000)]).astype(float)
    sp, sf = template_signals(template_record(Z_EDGES, sim, None, False, 0.0))
    toys = []
    for _ in range(repeat):
        n = rng.poisson(3000)
        k = rng.binomial(n, 0.8)
        mp = np.concatenate([_z_peak(k, rng) + rng.normal(0.3, 1.0, k), _turn_on(1500, 40.0, rng)])
        mf = np.concatenate([_z_peak(n - k, rng) + rng.normal(-0.3, 2.0, n - k), _turn_on(3500, 25.0, rng)])
        toys.append((np.histogram(mp, Z_EDGES)[0].astype(float), np.histogram(mf, Z_EDGES)[0].astype(float)))
    return sp, sf, toys


def time_template(repeat: int, rng: np.random.Generator, reference: bool) -> tuple[float, float | None]:
    """Median seconds of one template fit with MINOS on ε (fused cost), and with ``reference`` that of the numpy
    cost on the same toys (else None)."""
    sp, sf, toys = template_toys(repeat, rng)
    variants = [(sp, sf)] + ([(replace(sp, table=None), replace(sf, table=None))] if reference else [])
    medians: list[float] = []
    for signal, signal_fail in variants:
        fit_pass_fail(Z_EDGES, *toys[0], signal=signal, signal_fail=signal_fail, background="cms")  # warm-up
        times = []
        for hp, hf in toys:
            t0 = time.perf_counter()
            r = fit_pass_fail(Z_EDGES, hp, hf, signal=signal, signal_fail=signal_fail, background="cms", minos=True)
            times.append(time.perf_counter() - t0)
            if r.status != "ok":
                print(f"  template fit status: {r.status}")
        medians.append(float(np.median(times)))
    return medians[0], (medians[1] if reference else None)


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
        t0 = time.perf_counter()  # the pool loads the kernels of the stages to run before forking its workers
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
    ap.add_argument("--only", choices=("t1", "t2", "t3", "t4"), action="append",
                    help="time only these targets (repeatable); the others are printed as n/a")
    ap.add_argument("--reference", action="store_true", help="t4: also time the numpy cost of template fits")
    args = ap.parse_args()
    only = set(args.only or ("t1", "t2", "t3", "t4"))
    rng = np.random.default_rng(args.seed)
    t1 = t2 = t3 = t4 = None
    if "t1" in only:
        t1 = time_binned(args.repeat, rng)
        print(f"binned pass/fail fit, median of {args.repeat}: {t1 * 1e3:.1f} ms")
    if "t2" in only:
        n_unbinned = max(3, args.repeat // 10)
        t2 = time_unbinned(n_unbinned, rng)
        print(f"unbinned 100k fit, median of {n_unbinned}: {t2:.2f} s")
    if "t3" in only:
        t3 = time_table()
    if "t4" in only:
        t4, t4_numpy = time_template(args.repeat, rng, args.reference)
        print(f"template fit (60 bins, cms), median of {args.repeat}: {t4 * 1e3:.1f} ms")
        if t4_numpy is not None:
            print(f"template fit, numpy cost: {t4_numpy * 1e3:.1f} ms ({t4_numpy / t4:.1f}x)")
    t1_text = "n/a" if t1 is None else f"{t1 * 1e3:.1f}"
    t2_text = "n/a" if t2 is None else f"{t2:.2f}"
    t3_text = "n/a" if t3 is None else f"{t3:.1f}"
    t4_text = "n/a" if t4 is None else f"{t4 * 1e3:.1f}"
    print(f"fits: binned pass/fail {t1_text} ms, unbinned 100k {t2_text} s, table 200x2x5 {t3_text} s, "
          f"template {t4_text} ms")


if __name__ == "__main__":
    main()
