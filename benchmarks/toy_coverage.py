"""Benchmark: coverage toys (``calibflow coverage``).

    python benchmarks/toy_coverage.py [--toys N] [--workers W]

The table of ``benchmarks/fits.py`` (200 bins of p × η, 1M candidates per sample) without its systematic
runs, the data fitted (crystalball + exponential, binned, MINOS on ε) and the truth-matched simulation
counted (Clopper-Pearson), as the demo does. Its fits run before the clock; then the clock times
:class:`tasks.coverage.CoverageTable` through the task graph with ``--workers`` local workers: every bin of
both samples gets ``--toys`` toys, each measured like the bin (200 × N fits and 200 × N counts), and the
table, figure and page are written.

The last line printed is ``coverage: <t> s for 200 bins x <N> toys``. Goal: ≤ 120 s for 100 toys on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# this file has the name of the ``coverage`` package numba imports: its folder must not be on the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]


def config() -> dict:
    """The benchmark's calibration: fits.py's table, nominal only, the simulation truth-matched and counted."""
    spec = importlib.util.spec_from_file_location("bench_fits", os.path.join(HERE, "fits.py"))
    assert spec is not None and spec.loader is not None
    fits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fits)
    d = copy.deepcopy(fits.TABLE_CONFIG)
    d["name"] = "bench_coverage"
    d.pop("systematics")
    d["samples"]["mc"].update({"cut": "probe_TRUEID_match == 1", "method": "count"})
    return d


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the forked workers)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    from calibflow.export.coverage import verdicts
    from calibflow.plan import Plan
    from calibflow.tables.rows import read_csv
    from tasks import CombineTables
    from tasks.coverage import CoverageTable
    from tasks.runner import build

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        cfg = os.path.join(tmp, "coverage.yaml")
        with open(cfg, "w") as f:
            yaml.safe_dump(config(), f)
        plan = Plan.create(cfg, os.path.join(tmp, "res"))
        common = {"config": plan.config_path, "result_dir": plan.result_dir}
        if not build(plan, [CombineTables(**common)], workers=args.workers).ok:
            raise RuntimeError("the fits failed")
        n_bins = len(plan.load_scheme())
        shutil.rmtree(os.path.join(plan.workdir, "coverage"), ignore_errors=True)  # --keep: the fits only
        t0, cpu0 = time.perf_counter(), _cpu()  # the pool loads the fit kernels before forking its workers
        top = CoverageTable(toys=args.toys, **common)
        report = build(plan, [top], workers=args.workers)
        seconds = time.perf_counter() - t0
        if not report.ok:
            raise RuntimeError(f"coverage failed: {report.failed[:3]}")
        print(f"coverage: {report.summary()}")
        print(f"cpu of the workers and this process: {_cpu() - cpu0:.1f} s (wall {seconds:.1f} s)")
        for line in verdicts(read_csv(top.output().path)):
            print(f"  {line}")
    print(f"coverage: {seconds:.1f} s for {n_bins} bins x {args.toys} toys")


if __name__ == "__main__":
    main()
