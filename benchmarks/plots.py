"""Benchmark: the cost of the fit figures and galleries in the demo.

    python benchmarks/plots.py [--workers N] [--repeat R] [--keep DIR]

Runs the demo (``task_configs/demo.yaml``, 156 bins, data fitted in the nominal run and in the ``sigmodel``
variation: 312 fits) from scratch, each time a fresh ``calibflow run`` process with ``--workers N`` (default
2) into its own result folder, alternately with ``fit.plots: none`` and ``fit.plots: all`` (the default),
``R`` times each (default 2; the fastest run of each kind counts). The task logs of the fastest run with
figures say how long the figures took where they are drawn: each FitBin task logs ``fit figures drawn: <n>,
<k> failed, in <t> s (cpu <c> s)`` and the export ``fit galleries: ... in <t> s`` (missing figures drawn
there included).

* ms/fit figure: the FitBin figure time divided by the figures drawn (wall time inside the tasks, so it
  includes what other jobs on the machine take from the workers; the CPU time is printed beside it);
* f: all figure work (FitBin figures and galleries) spread over the N workers, over the wall time of the
  run with figures: ``(figures + galleries) / N / wall(all)``. The difference of the two runs' wall times
  is printed too; on a shared machine it is noisier than f.

The last line printed is ``plots: <ms> ms/fit figure, <f> of the demo's wall time`` (goal: f ≤ 0.2).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "task_configs" / "demo.yaml"
FIGURES = re.compile(r"fit figures drawn: (\d+), (\d+) failed, in ([0-9.]+) s \(cpu ([0-9.]+) s\)")
GALLERIES = re.compile(r"fit galleries: \d+ file\(s\) in ([0-9.]+) s")


def run_demo(folder: Path, plots: str, workers: int) -> float:
    """Wall seconds of ``calibflow run`` of the demo with ``fit.plots: plots`` into ``folder``."""
    d = yaml.safe_load(DEMO.read_text())
    d.setdefault("fit", {})["plots"] = plots
    cfg = folder / "demo.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    command = [sys.executable, "-c", "import sys; from tasks.cli import main; sys.exit(main(sys.argv[1:]))",
               "run", str(cfg), "--workers", str(workers), "--result-dir", str(folder / "res")]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"demo with fit.plots {plots} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def figure_times(workdir: Path) -> tuple[int, int, float, float, float]:
    """(figures drawn, figures failed, wall and CPU seconds in FitBin, seconds of the galleries) from the
    task logs."""
    drawn = failed = 0
    wall = cpu = gallery_seconds = 0.0
    for log in (workdir / "logs").rglob("*.log"):
        text = log.read_text(errors="replace")
        for n, k, t, c in FIGURES.findall(text):
            drawn, failed, wall, cpu = drawn + int(n), failed + int(k), wall + float(t), cpu + float(c)
        gallery_seconds += sum(float(t) for t in GALLERIES.findall(text))
    return drawn, failed, wall, cpu, gallery_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each kind (the fastest counts)")
    ap.add_argument("--keep", type=Path, help="keep the result folders under this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        walls: dict[str, list[float]] = {"none": [], "all": []}
        for i in range(args.repeat):
            for plots in ("none", "all"):
                folder = base / f"plots_{plots}_{i}"
                folder.mkdir(parents=True, exist_ok=True)
                walls[plots].append(run_demo(folder, plots, args.workers))
                print(f"demo, fit.plots {plots}: {walls[plots][-1]:.1f} s wall (load {os.getloadavg()[0]:.1f})")
        fastest = min(range(args.repeat), key=lambda i: walls["all"][i])
        drawn, failed, wall, cpu, gallery_seconds = figure_times(base / f"plots_all_{fastest}" / "res" / "demo_jpsi")
    best = {k: min(v) for k, v in walls.items()}
    if drawn == 0:
        raise RuntimeError("the run with fit.plots all drew no figure")
    f = (wall + gallery_seconds) / args.workers / best["all"]
    print(f"figures: {drawn} drawn ({failed} failed) in {wall:.2f} s of FitBin time ({1e3 * cpu / drawn:.1f} ms "
          f"CPU each), galleries {gallery_seconds:.2f} s; wall difference {best['all'] - best['none']:+.1f} s "
          f"({(best['all'] - best['none']) / best['all']:+.2f} of the run with figures)")
    print(f"plots: {1e3 * wall / drawn:.1f} ms/fit figure, {f:.2f} of the demo's wall time")


if __name__ == "__main__":
    main()
