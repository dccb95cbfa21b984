"""Benchmark: reading the branch names of a wide NanoAOD-like tree, as the config check before a run does.

    python benchmarks/inputs.py [--collections C] [--fields F] [--repeat R]

Writes (once, under the system temp folder) a NanoAOD-like file of C collections of F jagged fields each
(counters included) plus 102 event branches, then times, interleaved R times, uproot's
``uproot.open(f)[tree].keys()`` (the baseline: it deserialises every TBranch with its leaves and basket
tables) and ``calibflow.io.inspect.branch_names`` (each branch's TNamed only). The last line printed is
``inputs: branch names <ms> ms, uproot <ms> ms, <ratio>x faster`` (medians of wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import awkward as ak
import numpy as np
import uproot

from calibflow.io.inspect import branch_names
from calibflow.toys.nanoaod import write_tree


def wide_file(collections: int, fields: int, events: int = 2000) -> str:
    """The benchmark file (written if missing): ``Coll<i>_f<k>`` fields, ``HLT_path<k>``, run, lumi."""
    path = os.path.join(tempfile.gettempdir(), f"calibflow-bench-nano-{collections}x{fields}.root")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(1)
    data: dict[str, object] = {}
    for c in range(collections):
        counts = rng.integers(0, 4, events)
        data[f"Coll{c}"] = ak.zip({f"f{k}": ak.unflatten((rng.random(counts.sum()) * 100).astype(
            [np.float32, np.int32, np.uint8][k % 3]), counts) for k in range(fields)})
    data.update({f"HLT_path{k}": rng.random(events) > 0.5 for k in range(100)})
    data.update(run=np.ones(events, np.uint32), luminosityBlock=np.ones(events, np.uint32))
    write_tree(path, data, tree="Events")
    return path


def _uproot_keys(path: str, tree: str) -> list[str]:
    with uproot.open(path) as f:
        return list(f[tree].keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=20)
    parser.add_argument("--fields", type=int, default=94)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    path = wide_file(args.collections, args.fields)
    assert list(branch_names(path, "Events")) == _uproot_keys(path, "Events")  # also warms imports and cache
    times: dict[str, list[float]] = {"names": [], "uproot": []}
    for _ in range(args.repeat):
        for label, read in (("names", branch_names), ("uproot", _uproot_keys)):
            t0 = time.perf_counter()
            n = len(read(path, "Events"))
            times[label].append(time.perf_counter() - t0)
    names, full = (statistics.median(times[k]) * 1e3 for k in ("names", "uproot"))
    print(f"{n} branches, {os.path.getsize(path) / 1e6:.0f} MB, median of {args.repeat}")
    print(f"inputs: branch names {names:.1f} ms, uproot {full:.1f} ms, {full / names:.1f}x faster")


if __name__ == "__main__":
    main()
