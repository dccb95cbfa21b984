"""Benchmark: a NanoAOD tag-and-probe count by calibflow against coffea NanoEvents and the decompression limit.

    python benchmarks/nanoaod.py [--files F] [--events N] [--branches B] [--repeat R] [--compression zlib|lzma|both]

Inputs (written once under the system temp folder, reused by later runs with the same sizes): F files (default
8) of N events (default 50,000) of the Z→μμ NanoAOD toy data (``calibflow.toys.nanoaod.write_z_mumu_file``,
``is_data=True``) padded to about B branches (default 2000) of NanoAOD's names and types, compressed like CMS
NanoAOD: ZLIB-1 (the real files of issue 22) and LZMA (CMS's NanoAOD production uses LZMA-9; these files are
written at level 4, which on these baskets gives the same compressed bytes, 2578 per event at both levels, and
the same decoding time, 0.20 against 0.22 s for 400 branches of 2000 events, in a third of the writing time),
with NanoAOD's basket layout. CMSSW's ``NanoAODOutputModule`` disables ROOT's auto-flush, flushes every
branch after the first 1000 events, then every ``n`` events with
``n = 1000 × 10 MB / (compressed bytes of those 1000 events)`` (its ``autoFlush = -10000000``, cms-sw/cmssw
PR 22624): every branch has one basket per cluster, the first of 1000 events, then about 10 MB of compressed
file per cluster. The toy's compressed bytes per event are measured on a 1000-event file of the same
generator, which gives ``n`` (about 3,200 events with ZLIB-1 and 3,900 with LZMA for 2000 branches).

The job is the ``cms_muon_id_z`` recipe's nominal measurement (``task_configs/cms_muon_id_z.yaml``) with the
data sample counted (``method: count``), the golden-JSON lumi mask, no toy, simulation, methods,
systematics, closure, plots or correctionlib: preparation, histograms, counting and tables. Timed, per
compression, after one untimed run of each (imports, numba's kernel cache, page cache):

(a) coffea: ``NanoEventsFactory.from_root(..., schemaclass=NanoAODSchema, mode="virtual")`` per file in one
    warm process (its imports are not timed, which favours coffea; virtual mode reads a branch when it is first
    touched, so only the needed ones, but like uproot it parses the whole TTree's metadata first), the
    selection as a CMS analyst writes it with awkward and coffea's vector behaviours (:func:`coffea_counts`):
    lumi mask (``coffea.lumi_tools.LumiMask``), ``HLT_IsoMu24``, tags matched (ΔR < 0.1) to a trigger muon
    with the recipe's filter bits, every ordered (tag, probe) pair of different muons (``ak.argcartesian``),
    opposite charge, 70 < m < 115 GeV, then pairs and pairs passing ``probe.tightId`` counted per bin of the
    recipe's pT × |η| binning. Its counts must equal calibflow's (``efficiencies.csv``: ``n_sig``, ``n_pass``;
    ``cutflow_data.csv``: pairs after the pair stage): asserted, and both printed;
(b) calibflow: ``python -m tasks.cli run CONFIG --workers W --result-dir NEW`` (a fresh process and result
    folder each time, so start-up, luigi's scheduling, histograms and tables are in) with 1 and 2 workers;
    also the preparation alone, in this process: ``calibflow.prep.prepare.prepare_file`` of every file in
    turn (the pure preparation throughput), the same on a forked pool of 2 processes, and one file's breakdown (:func:`breakdown`): open + metadata
    (``uproot.open`` and ``calibflow.io.tree_meta.read_tree_meta``), reading (the needed baskets decompressed
    into arrays by ``calibflow.io.baskets.read_layout``), writing (``TableWriter`` appends and flushes, and
    the metadata), and pairing + cuts: the rest of ``prepare_file``, whatever implementation is current;
(c) the limit: only the needed branches' baskets (``prep_spec(...).branches``, their byte ranges from
    ``read_tree_meta``) of every file decompressed, raw (``calibflow.io.baskets._inflate``, libdeflate for ZLIB
    as prep), no conversion, one core.

Times are medians over ``--repeat`` (default 3) runs. Per compression it prints x = events per second per core
of calibflow's one-worker run, r = t_coffea / t_calibflow(1 worker), f = t_limit / t_calibflow(1 worker),
s = t_calibflow(1 worker) / t_calibflow(2 workers), all end to end (the ``calibflow run`` a user waits for,
start-up included), and the same for the preparation alone. The last line, for ZLIB when both compressions
run (the issue's real files; else the one run), is
``nanoaod: <x> kevt/s/core, <r>x coffea, <f> of decompression limit, <s>x on 2 workers``.
"""

from __future__ import annotations

import argparse
import csv
import math
import mmap
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uproot
import yaml
from clock import cpu_pressure, wall_and_cpu

from calibflow.toys.nanoaod import write_z_mumu_file

ROOT = Path(__file__).resolve().parents[1]
COMPRESSION = {"zlib": uproot.ZLIB(1), "lzma": uproot.LZMA(4)}
FIRST_FLUSH, FLUSH_BYTES = 1000, 10_000_000
"""NanoAODOutputModule: baskets flushed after the first 1000 events, then per ~10 MB of compressed output."""
RECIPE = ROOT / "task_configs" / "cms_muon_id_z.yaml"


# --- inputs ------------------------------------------------------------------------------------------------
def folder() -> Path:
    out = Path(tempfile.gettempdir()) / "calibflow-bench-nanoaod"
    out.mkdir(exist_ok=True)
    return out


def _tag(compression: str) -> str:
    """``zlib1``, ``lzma4``: the algorithm and level, in the names of the input files."""
    return f"{compression}{COMPRESSION[compression].level}"


def cluster_rows(compression: str, branches: int) -> int:
    """Events per basket after the first 1000, by NanoAOD's rule: 1000 × 10 MB / the compressed bytes of the
    first 1000 events (measured on a 1000-event file of the toy, written once)."""
    probe = folder() / f"probe-{_tag(compression)}-{branches}.root"
    if not probe.exists():
        write_z_mumu_file(str(probe), FIRST_FLUSH, True, 99, pad_to=branches, compression=COMPRESSION[compression],
                          basket_rows=FIRST_FLUSH)
    with uproot.open(probe) as f:
        zipped = sum(b.compressed_bytes for b in f["Events"].branches)
    return max(math.ceil(FIRST_FLUSH * FLUSH_BYTES / zipped), 1)


def inputs(files: int, events: int, branches: int, compression: str) -> list[str]:
    """The benchmark's data files of one compression (written if missing)."""
    rows = cluster_rows(compression, branches)
    paths = [str(folder() / f"nano-{_tag(compression)}-{events}x{branches}-{i}.root") for i in range(files)]
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            write_z_mumu_file(path, events, True, 1000 + i, pad_to=branches, compression=COMPRESSION[compression],
                              basket_rows=(FIRST_FLUSH, rows))
    return paths


def config(out: Path, files: Sequence[str], name: str) -> Path:
    """The recipe's nominal measurement on ``files`` as one counted data sample (lumi mask made absolute): no toy,
    simulation, methods, systematics, closure, plots, correctionlib or report; the config's path."""
    d = yaml.safe_load(RECIPE.read_text())
    data = d["samples"]["data"]
    cfg = {
        "name": name,
        "description": "benchmarks/nanoaod.py: the cms_muon_id_z nominal measurement, counted",
        "samples": {"data": {"role": "data", "tree": "Events", "method": "count", "files": list(files),
                             "lumi_mask": str(RECIPE.parent / data["lumi_mask"])}},
        "pairing": d["pairing"],
        "aliases": {k: v for k, v in d["aliases"].items() if k != "true_eff"},
        "selection": d["selection"],
        "pass": d["pass"],
        "mass": d["mass"],
        "binning": d["binning"],
        "outputs": {"correctionlib": False, "plots": False, "report": False},
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def recipe_cuts() -> dict[str, Any]:
    """What the coffea implementation hard-codes, checked against the recipe (so that they cannot drift)."""
    d = yaml.safe_load(RECIPE.read_text())
    expected = {
        "tag": "Muon_pt > 29 and abs(Muon_eta) < 2.4 and Muon_tightId and Muon_pfRelIso04_all < 0.15 and Muon_trigMatch",
        "probe": "Muon_pt > 15 and abs(Muon_eta) < 2.4",
        "match": "TrigObj_id == 13 and (TrigObj_filterBits & 2) != 0 and (TrigObj_filterBits & 8) != 0",
        "event": "HLT_IsoMu24 == 1", "pair": "pair_charge < 0 and pair_mass > 70 and pair_mass < 115",
        "pass": "probe_tightId",
    }
    found = {"tag": d["pairing"]["tag"], "probe": d["pairing"]["probe"], "match": d["pairing"]["match"][0]["cut"],
             "event": d["selection"]["event"], "pair": d["selection"]["pair"], "pass": d["pass"]}
    if found != expected or d["pairing"]["match"][0]["max_dr"] != 0.1:
        raise SystemExit(f"the recipe's cuts changed: update coffea_counts ({found})")
    return {v["name"]: np.asarray(v["edges"], float) for v in d["binning"]["variables"]}


# --- (a) coffea --------------------------------------------------------------------------------------------
def coffea_counts(files: Sequence[str], lumi_mask: str, edges: dict[str, np.ndarray]) -> dict[str, Any]:
    """The tag-and-probe count as a CMS analyst writes it with coffea NanoEvents (virtual mode) and awkward, file
    by file: pairs and passing pairs per (pt, |eta|) bin, all pairs after the pair cuts, and the seconds spent
    building the events (``from_root(...).events()``: uproot's TTree and NanoAODSchema's form)."""
    import warnings

    import awkward as ak
    from coffea.lumi_tools import LumiMask
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    golden = LumiMask(lumi_mask)
    shape = (len(edges["pt"]) - 1, len(edges["abseta"]) - 1)
    n_all, n_pass, pairs, opening = np.zeros(shape, np.int64), np.zeros(shape, np.int64), 0, 0.0
    for path in files:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # the padding's charge/mass fields of jets and photons
            warnings.simplefilter("ignore", RuntimeWarning)
            events = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, mode="virtual").events()
        opening += time.perf_counter() - t0
        events = events[golden(events.run, events.luminosityBlock) & events.HLT.IsoMu24]
        muons, trig = events.Muon, events.TrigObj
        trig = trig[(trig.id == 13) & ((trig.filterBits & 2) != 0) & ((trig.filterBits & 8) != 0)]
        matched = ak.any(muons.metric_table(trig) < 0.1, axis=-1)
        is_tag = ((muons.pt > 29) & (abs(muons.eta) < 2.4) & muons.tightId & (muons.pfRelIso04_all < 0.15)
                  & matched)
        is_probe = (muons.pt > 15) & (abs(muons.eta) < 2.4)
        index = ak.argcartesian({"tag": muons, "probe": muons})
        index = index[(index.tag != index.probe) & is_tag[index.tag] & is_probe[index.probe]]
        tag, probe = muons[index.tag], muons[index.probe]
        mass = (tag + probe).mass
        keep = (tag.charge * probe.charge < 0) & (mass > 70) & (mass < 115)
        probe = ak.flatten(probe[keep])
        pairs += len(probe)
        hist = np.histogram2d(np.asarray(probe.pt), np.abs(np.asarray(probe.eta)), bins=[edges["pt"], edges["abseta"]])
        passing = probe[probe.tightId]
        hist_pass = np.histogram2d(np.asarray(passing.pt), np.abs(np.asarray(passing.eta)),
                                   bins=[edges["pt"], edges["abseta"]])
        n_all += hist[0].astype(np.int64)
        n_pass += hist_pass[0].astype(np.int64)
    return {"pairs": pairs, "n_sig": n_all, "n_pass": n_pass, "open": opening}


# --- (b) calibflow -----------------------------------------------------------------------------------------
def calibflow_run(cfg: Path, workers: int, result_dir: Path) -> float:
    """Wall seconds of ``calibflow run`` of ``cfg`` in a fresh process, into the new folder ``result_dir``."""
    shutil.rmtree(result_dir, ignore_errors=True)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(cfg), "--workers", str(workers),
                          "--result-dir", str(result_dir), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"calibflow run failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds


def calibflow_counts(result_dir: Path, name: str, edges: dict[str, np.ndarray]) -> dict[str, Any]:
    """calibflow's counts in its published tables: ``n_sig``, ``n_pass`` per bin (``efficiencies.csv``) and the
    pairs after the pair stage (``cutflow_data.csv``)."""
    shape = (len(edges["pt"]) - 1, len(edges["abseta"]) - 1)
    n_all, n_pass = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    with open(result_dir / name / "efficiencies.csv", newline="") as f:
        for row in csv.DictReader(f):
            i = int(np.searchsorted(edges["pt"], float(row["pt_lo"])))
            j = int(np.searchsorted(edges["abseta"], float(row["abseta_lo"])))
            n_all[i, j], n_pass[i, j] = round(float(row["n_sig"])), round(float(row["n_pass"]))
    with open(result_dir / name / "cutflow_data.csv", newline="") as f:
        flow = {row["stage"]: int(row["entries"]) for row in csv.DictReader(f)}
    return {"pairs": flow["pair"], "n_sig": n_all, "n_pass": n_pass, "flow": flow}


def prepare_all(files: Sequence[str], spec: Any, out: Path) -> None:
    """The preparation alone: ``prepare_file`` of every file in turn, in this process."""
    from calibflow.prep.prepare import prepare_file

    for i, path in enumerate(files):
        prepare_file(path, spec, str(out / f"prep{i}.h5"))


_JOB: tuple[Sequence[str], Any, Path] | None = None
"""(files, spec, output folder) of :func:`prepare_parallel`, inherited by the forked pool (specs hold compiled
expressions: not pickled)."""


def _prepare_one(i: int) -> None:
    from calibflow.prep.prepare import prepare_file

    assert _JOB is not None
    files, spec, out = _JOB
    prepare_file(files[i], spec, str(out / f"par{i}.h5"))


def prepare_parallel(pool: Any, n_files: int) -> None:
    """The preparation alone on the processes of ``pool`` (forked after :data:`_JOB` was set), a file each."""
    pool.map(_prepare_one, range(n_files), chunksize=1)


@contextmanager
def _timing(owner: Any, name: str, into: dict[str, float], label: str, generator: bool = False) -> Iterator[None]:
    """Add the seconds spent in ``owner.name`` (and, with ``generator``, in iterating what it returns) to
    ``into[label]`` while the block runs."""
    real = getattr(owner, name)

    def iterate(it: Iterator[Any]) -> Iterator[Any]:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                into[label] += time.perf_counter() - t0
                return
            into[label] += time.perf_counter() - t0
            yield item

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = real(*args, **kwargs)
        finally:
            into[label] += time.perf_counter() - t0
        return iterate(out) if generator and out is not None else out

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, real)


def breakdown(path: str, spec: Any, out: Path) -> dict[str, float]:
    """Seconds of one ``prepare_file`` call and of its parts, timed around the public functions it calls: open
    (``uproot.open``) + metadata (``read_tree_meta``), reading (iterating ``read_layout``'s chunks: baskets
    decompressed into arrays), writing (the output's ``h5py.File`` opened and closed, ``TableWriter.append``
    and ``ensure``, ``write_metadata``); pairing + cuts is the rest."""
    import h5py

    import calibflow.io.baskets
    import calibflow.io.tree_meta
    import calibflow.prep.prepare
    from calibflow.io.store import TableWriter
    from calibflow.prep.prepare import prepare_file

    t = dict.fromkeys(("open", "read", "write"), 0.0)
    with _timing(uproot, "open", t, "open"), _timing(calibflow.io.tree_meta, "read_tree_meta", t, "open"), \
            _timing(calibflow.io.baskets, "read_layout", t, "read", generator=True), \
            _timing(h5py.File, "__init__", t, "write"), _timing(h5py.File, "__exit__", t, "write"), \
            _timing(TableWriter, "append", t, "write"), _timing(TableWriter, "ensure", t, "write"), \
            _timing(calibflow.prep.prepare, "write_metadata", t, "write"):
        t0 = time.perf_counter()
        prepare_file(path, spec, str(out / "breakdown.h5"))
        total = time.perf_counter() - t0
    return {**t, "pairs": total - sum(t.values()), "total": total}


# --- (c) the limit -----------------------------------------------------------------------------------------
def layouts(files: Sequence[str], names: Sequence[str]) -> list[Any]:
    """The needed branches' basket tables of every file (``read_tree_meta``; not timed)."""
    from calibflow.io.tree_meta import read_tree_meta

    out = []
    for path in files:
        with uproot.open(path, handler=uproot.source.file.MemmapSource) as f:
            meta = read_tree_meta(f, "Events", list(names))
        if meta is None:
            raise SystemExit(f"{path}: read_tree_meta cannot read the needed branches")
        out.append(meta.branches)
    return out


def decompress(files: Sequence[str], branches: Sequence[Any]) -> int:
    """Every basket of the needed branches of every file decompressed, raw (no conversion); bytes out."""
    from calibflow.io.baskets import _KEY, _inflate
    from calibflow.io.root import use_fast_zlib

    use_fast_zlib()
    total = 0
    for path, layout in zip(files, branches, strict=True):
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            for b in layout:
                for seek, size in zip(b.seeks.tolist(), b.sizes.tolist(), strict=True):
                    basket = view[seek:seek + size]
                    _, _, objlen, _, keylen = _KEY.unpack_from(basket, 0)
                    payload = basket[keylen:]
                    total += len(payload) if len(payload) == objlen else len(_inflate(payload, objlen, b.name))
                    del basket, payload
            view.release()
    return total


# --- main --------------------------------------------------------------------------------------------------
def median_of(run: Callable[[], Any], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls of ``run``."""
    return statistics.median(wall_and_cpu(run)[0] for _ in range(repeat))


def measure(compression: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Everything for the files of one compression; prints the breakdown and returns the ratios."""
    from calibflow.config import load_config
    from calibflow.prep.spec import prep_spec

    t0 = time.perf_counter()
    files = inputs(args.files, args.events, args.branches, compression)
    for p in files:  # into the page cache
        Path(p).read_bytes()
    events = args.files * args.events
    edges = recipe_cuts()
    name = f"bench_nanoaod_{compression}"
    cfg = config(work, files, name)
    spec = prep_spec(load_config(cfg), "data", str(cfg.parent))
    size = sum(os.path.getsize(p) for p in files) / 1e6
    with uproot.open(files[0]) as f:
        n_branches = len(f["Events"].keys())
    rows = cluster_rows(compression, args.branches)
    print(f"[{compression}] {len(files)} files x {args.events} events, {n_branches} branches, {size:.0f} MB "
          f"({type(COMPRESSION[compression]).__name__}-{COMPRESSION[compression].level}, baskets of {FIRST_FLUSH} "
          f"then {rows} events); {len(spec.branches)} branches needed; inputs ready in {time.perf_counter() - t0:.0f} s")

    # untimed warm-up runs: imports, kernel cache, page cache; and the counts agree
    calibflow_run(cfg, 1, work / f"{name}-warm")
    ours = calibflow_counts(work / f"{name}-warm", name, edges)
    theirs = coffea_counts(files, str(spec.lumi.path), edges)
    print(f"  counts: calibflow {ours['pairs']} pairs, {int(ours['n_sig'].sum())} in bins, "
          f"{int(ours['n_pass'].sum())} passing; coffea {theirs['pairs']}, {int(theirs['n_sig'].sum())}, "
          f"{int(theirs['n_pass'].sum())} (cut flow {ours['flow']})")
    for key in ("pairs", "n_sig", "n_pass"):
        if not np.array_equal(ours[key], theirs[key]):
            raise SystemExit(f"calibflow and coffea disagree on {key}:\n{ours[key]}\n{theirs[key]}")
    prep_out = work / f"{name}-prep"
    prep_out.mkdir(exist_ok=True)
    prepare_all(files, spec, prep_out)
    layout = layouts(files, sorted(spec.branches))
    decompress(files, layout)

    r = args.repeat
    coffea_runs = []
    for _ in range(r):
        t0 = time.perf_counter()
        opening = coffea_counts(files, str(spec.lumi.path), edges)["open"]
        coffea_runs.append((time.perf_counter() - t0, opening))
    t_coffea, t_coffea_open = (statistics.median(v) for v in zip(*coffea_runs, strict=True))
    runs: dict[int, list[float]] = {1: [], 2: []}
    for k in range(r):  # interleaved, so that a drift of the machine's load hits both alike
        for w, times in runs.items():
            times.append(calibflow_run(cfg, w, work / f"{name}-{w}-{k}"))
    t_run = {w: statistics.median(times) for w, times in runs.items()}
    t_prep = median_of(lambda: prepare_all(files, spec, prep_out), r)
    global _JOB
    _JOB = (files, spec, prep_out)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        prepare_parallel(pool, len(files))  # warm-up: each process's imports and kernels
        t_prep2 = median_of(lambda: prepare_parallel(pool, len(files)), r)
    t_limit = median_of(lambda: decompress(files, layout), r)
    parts = [breakdown(files[0], spec, prep_out) for _ in range(r)]
    part = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    for d in work.glob(f"{name}-*-*"):
        shutil.rmtree(d, ignore_errors=True)

    print(f"  (a) coffea NanoEvents (virtual) + awkward, one process: {t_coffea:.2f} s, "
          f"{events / t_coffea / 1e3:.0f} kevt/s, of which building the events {t_coffea_open:.2f} s")
    for w, t in t_run.items():
        print(f"  (b) calibflow run, {w} worker(s), end to end: {t:.2f} s, {events / t / 1e3:.0f} kevt/s")
    print(f"      preparation alone (prepare_file of each file, this process): {t_prep:.2f} s, "
          f"{events / t_prep / 1e3:.0f} kevt/s; the 1-worker run's rest (start-up, input checks, scheduling, "
          f"histograms, tables) {t_run[1] - t_prep:.2f} s")
    print(f"      preparation alone on 2 processes (a forked pool, a file each): {t_prep2:.2f} s, "
          f"{events / t_prep2 / 1e3:.0f} kevt/s")
    print(f"  (c) decompressing the needed baskets only: {t_limit:.2f} s, {events / t_limit / 1e3:.0f} kevt/s")
    total = part["total"]
    print(f"  one file's prepare_file, {total * 1e3:.0f} ms: " + ", ".join(
        f"{label} {part[k] * 1e3:.0f} ms ({part[k] / total:.0%})"
        for k, label in (("open", "open + metadata"), ("read", "reading/decompressing"),
                         ("pairs", "pairing + cuts"), ("write", "writing HDF5"))))
    x, ratio, f, s = events / t_run[1] / 1e3, t_coffea / t_run[1], t_limit / t_run[1], t_run[1] / t_run[2]
    print(f"  end to end: {x:.0f} kevt/s/core, {ratio:.2f}x coffea, {f:.2f} of decompression limit, {s:.2f}x on 2 "
          f"workers")
    print(f"  preparation alone: {events / t_prep / 1e3:.0f} kevt/s/core, {t_coffea / t_prep:.2f}x coffea, "
          f"{t_limit / t_prep:.2f} of decompression limit, {t_prep / t_prep2:.2f}x on 2 processes")
    return {"x": x, "r": ratio, "f": f, "s": s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--branches", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3, help="timings are medians of this many runs")
    ap.add_argument("--compression", choices=("zlib", "lzma", "both"), default="both")
    args = ap.parse_args()
    chosen = ("zlib", "lzma") if args.compression == "both" else (args.compression,)
    work = Path(tempfile.mkdtemp(prefix="calibflow-bench-nanoaod-"))
    try:
        results = {c: measure(c, args, work) for c in chosen}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {cpu_pressure()}")
    last = results[chosen[0]]
    print(f"nanoaod: {last['x']:.0f} kevt/s/core, {last['r']:.1f}x coffea, {last['f']:.2f} of decompression limit, "
          f"{last['s']:.2f}x on 2 workers")


if __name__ == "__main__":
    main()
