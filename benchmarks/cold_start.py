"""Benchmark: a calibration's run on an empty kernel cache (cold: every numba kernel compiled) vs a full one (warm).

    python benchmarks/cold_start.py [--workers W] [--repeat R] [--small]

Runs ``calibflow run`` of the tiny demo (``--small``: the small demo of the pool tests) in a fresh interpreter,
first on an empty kernel cache (``CALIBFLOW_KERNEL_CACHE`` in a temporary folder), then again on the cache it
filled, each into a new result folder (toys, preparation, histograms, fits and exports all run). It prints the
wall time of each run and the kernels compiled per process (numba's compile events of calibflow's kernels: the
scheduling process before the pool forks, then each worker). The median over ``--repeat`` pairs of runs is
taken; the last line is ``cold_start: <a> s cold vs <b> s warm with <W> workers, <c> s saved``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_RUN = """
import os, sys
from numba.core import event

class Compiled(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        if ev.data["dispatcher"].py_func.__module__.startswith("calibflow"):
            with open(sys.argv[1], "a") as log:
                log.write(f"{os.getpid()}\\n")

event.register("numba:compile", Compiled())
from tasks.cli import main
print("parent", os.getpid())
sys.exit(main(["run", *sys.argv[2:], "--quiet"]))
"""


def run(config: Path, results: Path, cache: Path, workers: int) -> tuple[float, list[int]]:
    """Seconds of ``calibflow run`` of ``config`` on the kernel cache ``cache``; kernels compiled per process
    (the scheduling process first)."""
    log = results.with_suffix(".log")
    env = {**os.environ, "CALIBFLOW_KERNEL_CACHE": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RUN, str(log), str(config), "--workers", str(workers),
                          "--result-dir", str(results)], env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    parent = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("parent "))
    counts = Counter(log.read_text().split()) if log.exists() else Counter()
    return seconds, [counts.pop(parent, 0), *sorted(counts.values(), reverse=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="the small demo (40k + 30k candidates, 3 x 2 bins)")
    args = ap.parse_args()
    from tests.conftest import small_demo_dict, tiny_demo_dict

    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.yaml"
        config.write_text(yaml.safe_dump(small_demo_dict() if args.small else tiny_demo_dict(), sort_keys=False))
        for r in range(args.repeat):
            cache = Path(tmp) / f"kernels{r}"
            for label, times in (("cold", cold), ("warm", warm)):
                seconds, compiled = run(config, Path(tmp) / f"{label}{r}", cache, args.workers)
                times.append(seconds)
                print(f"{label} run {r + 1}: {seconds:.1f} s, kernels compiled: {compiled[0]} before the fork, "
                      f"{compiled[1:] or 'none'} in the workers")
    a, b = statistics.median(cold), statistics.median(warm)
    print(f"cold_start: {a:.1f} s cold vs {b:.1f} s warm with {args.workers} workers, {a - b:.1f} s saved")


if __name__ == "__main__":
    main()
