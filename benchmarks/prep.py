"""Benchmark: tuple preparation (PrepareTuple tasks) vs. a naive pandas reader and vs. raw decompression.

    python benchmarks/prep.py [--events N] [--files F] [--seed S] [--fresh]

Generates ``F`` ROOT files (half ZLIB-1, half LZ4-1; ``N`` events in total, default 5M) with 13 flat
branches, of which the calibration needs 4 (``probe_P``, ``probe_ETA``, ``Jpsi_M``, ``probe_Assoc``), and
a jagged ``Track`` collection (counter ``nTrack``, 3 fields, 5 tracks per event on average). They go to
a folder under the system temp dir and are reused by later runs with the same arguments (``--fresh``
rewrites them). Every file is read once before timing, so all measurements read from the page cache.

Timed, each over all files:

(a) naive: per file, every branch read with uproot (flat ones into a pandas DataFrame, the jagged
    collection as awkward arrays), then the selection applied with pandas and the needed columns kept;
    run by a fresh Python process, with uproot's defaults as an analysis script has them;
(b) calibflow: the real ``PrepareTuple`` tasks (``prepare_file``: needed branches only, cuts, HDF5
    output) run by luigi local workers, with 1 and with 2 workers (fresh result folders), each run in a
    freshly forked process like a new ``calibflow run`` (imports and numba's start-up done, not timed:
    printed once), so that neither the one-worker run (in that process) nor the two-worker pool (forked
    by it) reuses an earlier run's memory; also with one worker and numpy instead of the fused loop;
(c) the limit: just the needed branches decompressed into numpy, no cuts, no output: the faster of
    uproot's ``TTree.arrays`` and prep's own basket reader (calibflow.io.baskets), with prep's settings
    (memory-mapped files, ZLIB inflated by libdeflate); also shown with Python's
    zlib, uproot's default, which the naive reader (a) uses.

Then the HDF5 codecs are compared on the columns of one prepared file (write speed, size). The last line
is ``prep: <x> Mevt/s/core, <r>x naive, <f> of decompression limit, <s>x on 2 workers`` with x the
events per second of (b) with one worker, r = t_naive / t_prep(1), f = t_limit / t_prep(1) and
s = t_prep(1) / t_prep(2).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import h5py
import hdf5plugin
import numpy as np
import uproot
import yaml
from clock import cpu_pressure

from calibflow.io.root import use_default_zlib, use_fast_zlib

NEEDED = ["Jpsi_M", "probe_ETA", "probe_P", "probe_Assoc"]
CUTS = {"probe": "probe_P > 2 and probe_ETA > 2 and probe_ETA < 5", "pair": "abs(Jpsi_M - 3097) < 120"}
BASKET_ROWS = 200_000
STEP_SIZE = "64 MB"
"""Chunk size of prep (``prepare_file``'s default), used by the basket-reader limit too."""


def flat_branches(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """13 flat branches of an LHCb-like J/psi tag-and-probe ntuple (momenta in GeV, mass in MeV)."""
    return {
        "Jpsi_M": rng.normal(3097.0, 15.0, n),
        "probe_P": rng.exponential(20.0, n) + 1.0,
        "probe_ETA": rng.uniform(1.8, 5.2, n).astype(np.float32),
        "probe_Assoc": (rng.random(n) < 0.9).astype(np.int32),
        "tag_PT": rng.exponential(2.0, n).astype(np.float32),
        "tag_isMuon": (rng.random(n) < 0.8).astype(np.int32),
        "tag_P": rng.exponential(30.0, n).astype(np.float32),
        "tag_ETA": rng.uniform(2.0, 5.0, n).astype(np.float32),
        "probe_PT": rng.exponential(2.0, n).astype(np.float32),
        "Jpsi_PT": rng.exponential(4.0, n).astype(np.float32),
        "nPVs": rng.integers(1, 10, n).astype(np.int32),
        "runNumber": rng.integers(200000, 210000, n).astype(np.int32),
        "eventNumber": rng.integers(0, 2**40, n).astype(np.int64),
    }


def write_file(path: Path, n: int, compression: object, seed: int) -> None:
    """One input file: the flat branches plus a jagged Track collection (pt, eta, chi2)."""
    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=compression) as f:
        tree = None
        for start in range(0, n, BASKET_ROWS):
            m = min(BASKET_ROWS, n - start)
            counts = rng.poisson(5.0, m)
            k = int(counts.sum())
            tracks = ak.zip({"pt": ak.unflatten(rng.exponential(1.0, k).astype(np.float32), counts),
                             "eta": ak.unflatten(rng.uniform(2, 5, k).astype(np.float32), counts),
                             "chi2": ak.unflatten(rng.exponential(1.5, k).astype(np.float32), counts)})
            chunk = {**flat_branches(rng, m), "Track": tracks}
            if tree is None:
                tree = f.mktree("DecayTree", {k: (v.type.content if k == "Track" else v.dtype) for k, v in chunk.items()})
            tree.extend(chunk)


def make_inputs(folder: Path, events: int, files: int, seed: int) -> list[str]:
    """Write (or reuse) the input files; half ZLIB-1, half LZ4-1."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = events // files
    for i in range(files):
        comp = uproot.ZLIB(1) if i % 2 == 0 else uproot.LZ4(1)
        path = folder / f"bench_{i}_{type(comp).__name__.lower()}.root"
        if not path.exists():
            write_file(path, per_file, comp, seed + i)
        paths.append(str(path))
    return paths


def config(folder: Path, files: list[str]) -> Path:
    """A counted calibration over ``files`` that needs 4 of their branches."""
    cfg = {
        "name": "bench_prep",
        "samples": {"data": {"role": "data", "files": files, "method": "count"}},
        "aliases": {"p": "probe_P", "eta": "probe_ETA"},
        "selection": CUTS,
        "pass": "probe_Assoc == 1",
        "mass": {"variable": "Jpsi_M", "range": [2950, 3250], "bins": 100},
        "binning": {"variables": [{"name": "p", "edges": [2, 10, 200]}, {"name": "eta", "edges": [2, 3.5, 5]}]},
    }
    path = folder / "bench_prep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def naive(files: list[str]) -> int:
    """Every branch of every file into pandas (jagged ones as awkward), cut with pandas; rows kept.
    uproot's defaults, as an analysis script has them (ZLIB inflated by Python's zlib)."""
    import pandas as pd

    use_default_zlib()
    kept = []
    for path in files:
        with uproot.open(path) as f:
            tree = f["DecayTree"]
            names = tree.keys()
            flat = [b for b in names if not isinstance(tree[b].interpretation, uproot.AsJagged)]
            jagged = [b for b in names if b not in flat]
            df = tree.arrays(flat, library="pd")
            tree.arrays(jagged, library="ak")  # read and decompressed, as a full read would
        sel = (df.probe_P > 2) & (df.probe_ETA > 2) & (df.probe_ETA < 5) & ((df.Jpsi_M - 3097).abs() < 120)
        kept.append(df.loc[sel, NEEDED])
    return len(pd.concat(kept))


def limit(files: list[str], fast_zlib: bool = True) -> int:
    """Just the needed branches, decompressed into numpy by uproot (same file source and ZLIB inflater as
    prep unless ``fast_zlib`` is False): entries read."""
    if fast_zlib:
        use_fast_zlib()
    else:
        use_default_zlib()
    n = 0
    for path in files:
        with uproot.open(path, handler=uproot.source.file.MemmapSource) as f:
            n += len(f["DecayTree"].arrays(NEEDED, library="np")["Jpsi_M"])
    return n


def limit_baskets(files: list[str]) -> int:
    """Just the needed branches, decompressed into numpy by prep's own basket reader (same chunks as
    prep); entries read."""
    from calibflow.io.baskets import read_flat

    use_fast_zlib()
    n = 0
    for path in files:
        with uproot.open(path, handler=uproot.source.file.MemmapSource) as f:
            for chunk in read_flat(path, f["DecayTree"], NEEDED, STEP_SIZE):
                n += len(chunk["Jpsi_M"])
    return n


def naive_in_subprocess(files: list[str]) -> tuple[float, float, int]:
    """(wall s, cpu s, rows kept) of :func:`naive` run by a fresh Python process that never imported
    calibflow's prep (so it has uproot's defaults, as an analysis script does)."""
    out = subprocess.run([sys.executable, __file__, "--naive", *files], check=True, capture_output=True, text=True)
    wall, cpu, rows = out.stdout.split()[-3:]
    return float(wall), float(cpu), int(rows)


def prepare(cfg: Path, result_dir: Path, workers: int) -> float:
    """Run every PrepareTuple task of the calibration with ``workers`` luigi workers; seconds."""
    from calibflow.plan import Plan
    from tasks import PrepareTuple
    from tasks.runner import build

    shutil.rmtree(result_dir, ignore_errors=True)
    plan = Plan.create(cfg, result_dir)
    tasks = [PrepareTuple(config=plan.config_path, result_dir=plan.result_dir, sample="data", index=i)
             for i in range(len(plan.input_files("data")))]
    t0 = time.perf_counter()
    report = build(plan, tasks, workers)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"prep failed: {report.failed}")
    return seconds


def prepare_fresh(cfg: Path, result_dir: Path, workers: int, repeat: int) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of :func:`prepare` over ``repeat`` runs, each in a freshly forked
    process (as every ``calibflow run`` is a new process, with its imports done: they are not timed).
    One worker runs the tasks in that process, two in the pool it forks; neither reuses the memory of an
    earlier run."""
    import multiprocessing

    def child(conn: Any) -> None:
        r0 = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        wall = prepare(cfg, result_dir, workers)
        r1 = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        conn.send((wall, sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(r0, r1, strict=True))))

    ctx = multiprocessing.get_context("fork")
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(target=child, args=(send,))
        process.start()
        wall, cpu = receive.recv()
        process.join()
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu


def codecs(h5_path: str, repeat: int = 3) -> list[str]:
    """Write speed (MB/s of uncompressed columns) and size of one prepared file's columns (as stored:
    float32 ones stay float32) per codec, each written as prep writes (TableWriter, one append)."""
    from calibflow.io.store import COLUMNS, COMPRESSION, TableWriter, prep_compression

    with h5py.File(h5_path) as h5:
        cols = {k: ds[...] for k, ds in h5[COLUMNS].items()}
    raw = sum(v.nbytes for v in cols.values())
    blosc = hdf5plugin.Blosc
    options = {
        "gzip-1 + shuffle": COMPRESSION,
        "prep: blosc-lz4 + byte/bit shuffle": prep_compression,
        "blosc-lz4 + bitshuffle": dict(blosc(cname="lz4", clevel=5, shuffle=blosc.BITSHUFFLE)),
        "blosc-lz4 + byte shuffle": dict(blosc(cname="lz4", clevel=5, shuffle=blosc.SHUFFLE)),
        "lz4 (no shuffle)": dict(hdf5plugin.LZ4()),
        "blosc-zstd-1 + bitshuffle": dict(blosc(cname="zstd", clevel=1, shuffle=blosc.BITSHUFFLE)),
        "none": {},
    }
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in options.items():
            path = os.path.join(tmp, "c.h5")
            best = np.inf
            for _ in range(repeat):
                if os.path.exists(path):  # a new file, as prep writes (truncating one with dirty pages is slow)
                    os.remove(path)
                t0 = time.perf_counter()
                with h5py.File(path, "w", libver="v110", rdcc_nbytes=0) as h5, TableWriter(h5, compression=opts) as writer:
                    writer.append(cols)
                best = min(best, time.perf_counter() - t0)
            lines.append(f"  {name:36s} write {raw / best / 1e6:6.0f} MB/s, size {os.path.getsize(path) / raw:.3f} "
                         "of raw")
    return lines


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (this process, its threads and its finished children) of
    ``repeat`` calls of ``fn``."""
    wall, cpu = np.inf, np.inf
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(r0, r1, strict=True)))
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="timings are the best of this many runs")
    ap.add_argument("--fresh", action="store_true", help="rewrite the input files")
    ap.add_argument("--naive", nargs="+", metavar="FILE", help=argparse.SUPPRESS)  # the subprocess of (a)
    args = ap.parse_args()
    if args.naive:
        kept = []
        wall, cpu = timed(lambda: kept.append(naive(args.naive)), 1)
        print(wall, cpu, kept[0])
        return
    folder = Path(tempfile.gettempdir()) / f"calibflow_bench_prep_{args.events}_{args.files}_{args.seed}"
    if args.fresh:
        shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    files = make_inputs(folder / "inputs", args.events, args.files, args.seed)
    size = sum(os.path.getsize(p) for p in files) / 1e6
    print(f"inputs: {len(files)} files, {size:.0f} MB in {folder} ({time.perf_counter() - t0:.1f} s to make or find)")
    for p in files:  # into the page cache
        Path(p).read_bytes()
    cfg = config(folder, files)
    t0 = time.perf_counter()
    import calibflow.prep.prepare  # noqa: F401  (imported once, as `calibflow run` does before forking workers)
    from calibflow.kernels.warm import warm_up

    t_import = time.perf_counter() - t0
    t_numba = warm_up()  # as the pool's preload does before forking (a one-worker run pays it at its first file)
    print(f"start-up, not timed below (once per run, not per file): imports {t_import:.2f} s, numba {t_numba:.2f} s")

    n = limit(files)
    if limit_baskets(files) != n:
        raise SystemExit("the basket reader and uproot read different numbers of entries")
    t_uproot = timed(lambda: limit(files), args.repeat)
    t_baskets = timed(lambda: limit_baskets(files), args.repeat)
    t_limit = min(t_uproot[0], t_baskets[0]), min(t_uproot[1], t_baskets[1])
    print(f"(c) limit, needed branches to numpy: {t_limit[0]:.2f} s, {n / t_limit[0] / 1e6:.1f} Mevt/s "
          f"(cpu {t_limit[1]:.2f} s), the faster of uproot's TTree.arrays {t_uproot[0]:.2f} s and prep's basket "
          f"reader {t_baskets[0]:.2f} s; ZLIB inflated by {use_fast_zlib()}, as in prep")
    t_slow = timed(lambda: limit(files, fast_zlib=False), args.repeat)
    print(f"    the same with Python's zlib (uproot's default): {t_slow[0]:.2f} s (cpu {t_slow[1]:.2f} s)")
    prepare(cfg, folder / "results_warmup", 1)  # first-use costs of this process (inherited by the runs)
    t_prep = {w: prepare_fresh(cfg, folder / f"results_{w}", w, args.repeat) for w in (1, 2)}
    for w, (wall, cpu) in t_prep.items():
        print(f"(b) calibflow PrepareTuple, {w} worker(s): {wall:.2f} s, {n / wall / 1e6:.1f} Mevt/s (cpu {cpu:.2f} s)")
    os.environ["CALIBFLOW_FUSED"] = "0"
    t_numpy = prepare_fresh(cfg, folder / "results_numpy", 1, args.repeat)
    del os.environ["CALIBFLOW_FUSED"]
    print(f"    1 worker with numpy cuts and gathers instead of the fused loop: {t_numpy[0]:.2f} s (cpu {t_numpy[1]:.2f} s)")
    *t_naive, kept = naive_in_subprocess(files)
    print(f"(a) naive pandas, all branches: {t_naive[0]:.2f} s, {n / t_naive[0] / 1e6:.2f} Mevt/s "
          f"(cpu {t_naive[1]:.2f} s, {kept} rows kept; a fresh process with uproot's defaults)")
    from calibflow.plan import Plan

    plan = Plan.create(cfg, folder / "results_1")
    print("HDF5 codecs on the prepared columns of one file:")
    print("\n".join(codecs(plan.prep_path("data", 0))))
    (w1, c1), (w2, c2) = t_prep[1], t_prep[2]
    print(f"cpu-time view (load-independent): {n / c1 / 1e6:.1f} Mevt/s/core, {t_naive[1] / c1:.1f}x naive, "
          f"{t_limit[1] / c1:.2f} of decompression limit, 2 workers use {c2 / c1:.2f}x the cpu of 1 "
          f"(so {2 * c1 / c2:.2f}x on 2 idle cores)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {cpu_pressure()}")
    print(f"prep: {n / w1 / 1e6:.1f} Mevt/s/core, {t_naive[0] / w1:.1f}x naive, {t_limit[0] / w1:.2f} of decompression "
          f"limit, {w1 / w2:.2f}x on 2 workers")


if __name__ == "__main__":
    main()
