"""Benchmark: the TTree metadata of the needed branches of a 2000-branch NanoAOD-like file, and one file's prep.

    python benchmarks/tree_meta.py [--events N] [--branches B] [--repeat R]

Writes (once, under the system temp folder) the Z->mumu NanoAOD toy of N events padded to about B branches of
NanoAOD's names and types (``calibflow.toys.nanoaod.nanoaod_padding``), then times, interleaved R times:

* uproot: ``uproot.open`` and ``file["Events"]`` (every TBranch deserialised), then the basket tables of the
  needed branches (what prep used before);
* ours: ``uproot.open`` and ``calibflow.io.tree_meta.read_tree_meta`` for the needed branches;
* names through uproot's object models (``calibflow.io.inspect.branch_names``: each TBranch's TNamed read by
  uproot, the rest skipped by its byte count): the floor of "uproot restricted to the needed names";
* one file's ``prepare_file`` with the ``cms_muon_id_z`` recipe's spec (simulation: no lumi mask), before
  (``read_tree_meta`` disabled: uproot parses the tree and reads the jagged branches) and after.

uproot writes the TTree record uncompressed; real NanoAOD compresses it (LZMA, ZSTD, ZLIB), so the inflate
time of that record, compressed by each, is printed too. The last line is ``tree_meta: <t> s for the needed
metadata of a <n>-branch file, <r>x uproot`` (medians of wall time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uproot
from clock import wall_and_cpu

from calibflow.config import load_config
from calibflow.io import tree_meta
from calibflow.io.baskets import _inflate, flat_layout
from calibflow.io.inspect import branch_names
from calibflow.io.root import use_fast_zlib
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import prep_spec
from calibflow.toys.nanoaod import write_z_mumu_file

ROOT = Path(__file__).resolve().parents[1]


def padded_file(events: int, branches: int) -> str:
    """The benchmark file (written if missing)."""
    path = os.path.join(tempfile.gettempdir(), f"calibflow-bench-tree-meta-{events}x{branches}.root")
    if not os.path.exists(path):
        write_z_mumu_file(path, events, False, 11, pad_to=branches)
    return path


def _uproot_meta(path: str, names: list[str]) -> int:
    with uproot.open(path, handler=uproot.source.file.MemmapSource) as f:
        tree = f["Events"]
        for name in names:  # the basket tables prep took from uproot's branches
            b = tree[name]
            b.member("fBasketSeek"), b.member("fBasketBytes"), b.member("fBasketEntry")
        return len(tree.keys())


def _our_meta(path: str, names: list[str]) -> int:
    with uproot.open(path, handler=uproot.source.file.MemmapSource) as f:
        meta = tree_meta.read_tree_meta(f, "Events", names)
        assert meta is not None
        return len(meta.branches)


def _names(path: str, names: list[str]) -> int:
    return len(branch_names(path, "Events"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--branches", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    use_fast_zlib()
    path = padded_file(args.events, args.branches)
    config = load_config(ROOT / "task_configs" / "cms_muon_id_z.yaml")
    spec = prep_spec(config, "mc")
    names = list(spec.branches)
    n_branches = _uproot_meta(path, names)
    with uproot.open(path) as f:  # the layouts agree
        ours = tree_meta.read_tree_meta(f, "Events", names)
        theirs = flat_layout(f["Events"], [n for n in names if not n.startswith(("Muon_", "TrigObj_"))])
    assert ours is not None and theirs is not None
    assert all(any((a.seeks == b.seeks).all() for a in ours.branches if a.name == b.name) for b in theirs)

    out = tempfile.mkdtemp(prefix="calibflow-bench-tree-meta-")
    real = tree_meta.read_tree_meta

    def prep(before: bool) -> None:
        tree_meta.read_tree_meta = (lambda *a: None) if before else real
        try:
            prepare_file(path, spec, os.path.join(out, "out.h5"))
        finally:
            tree_meta.read_tree_meta = real

    prep(False)  # warm-up: imports, kernels, page cache
    prep(True)
    runs: dict[str, Callable[[], Any]] = {
        "uproot": lambda: _uproot_meta(path, names), "ours": lambda: _our_meta(path, names),
        "names": lambda: _names(path, names), "prep before": lambda: prep(True), "prep after": lambda: prep(False),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    try:
        for _ in range(args.repeat):
            for label, run in runs.items():
                times[label].append(wall_and_cpu(run))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}

    with uproot.open(path) as f:
        key = f.key("Events")
        record = key.get_uncompressed_chunk_cursor()[0].raw_data.tobytes()
    print(f"{n_branches} branches, {os.path.getsize(path) / 1e6:.0f} MB, {args.events} events, "
          f"{len(names)} needed; TTree record {len(record) / 1e6:.2f} MB; median of {args.repeat} (wall)")
    for algo in (uproot.ZLIB(1), uproot.LZMA(9), uproot.ZSTD(5), uproot.LZ4(1)):
        packed = memoryview(uproot.compression.compress(record, algo))
        t = min(wall_and_cpu(lambda p=packed: _inflate(p, len(record), "record"))[0] for _ in range(5))
        print(f"  inflating the record if {type(algo).__name__}-compressed ({len(packed) / 1e6:.2f} MB): "
              f"{t * 1e3:.1f} ms")
    for label, what in (("uproot", "uproot open + TTree + needed basket tables"),
                        ("names", "names only through uproot's models (floor of uproot restricted to names)"),
                        ("ours", "ours: open + needed metadata")):
        print(f"  {what}: {med[label] * 1e3:.1f} ms (CPU {cpu[label] * 1e3:.1f} ms)")
    for label in ("prep before", "prep after"):
        meta = med["uproot" if label.endswith("before") else "ours"]
        print(f"  {label}: {med[label]:.3f} s (CPU {cpu[label]:.3f} s), of which metadata {meta:.3f} s, "
              f"reading and the rest {med[label] - meta:.3f} s")
    print(f"tree_meta: {med['ours']:.4f} s for the needed metadata of a {n_branches}-branch file, "
          f"{med['uproot'] / med['ours']:.0f}x uproot")


if __name__ == "__main__":
    main()
