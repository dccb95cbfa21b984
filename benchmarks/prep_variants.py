"""Benchmark: preparing the files of a multi-variant config with one read per file against one read per variant.

    python benchmarks/prep_variants.py [--events N] [--files F] [--repeat R] [--compression lzma|zstd]

The ``cms_muon_id_z`` recipe (nominal ID, method Iso with its own probe selection and pass, the tag-selection
systematic ``tagsel``, the mass-range systematic: 4 distinct preparations of each data file) on F Z→μμ NanoAOD
toy data files of N events each (written once under the system temp folder, with the lumi mask), compressed
with LZMA-9 as CMS NanoAOD is (``--compression zstd``: the toys' own ZSTD-1, cheap to inflate). Timed,
interleaved R times, after one warm-up of each (imports, kernels, page cache):

* one read: :func:`calibflow.prep.prepare.prepare_files` per file, every distinct preparation of the file from one
  read of the union of their branches (what ``PrepareTuple`` does);
* per variant: :func:`calibflow.prep.prepare.prepare_file` once per distinct preparation and file (what one
  ``PrepareTuple`` task per variant did before).

Both write the same files (checked). The last line is ``prep_variants: <a> s one read vs <b> s per variant, <r>x``
(medians of wall time over all files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import uproot
import yaml
from clock import wall_and_cpu

import calibflow.toys.nanoaod
from calibflow.plan import Plan
from calibflow.prep.prepare import Preparation, prepare_file, prepare_files
from calibflow.toys.nanoaod import write_z_mumu_file

ROOT = Path(__file__).resolve().parents[1]
COMPRESSION = {"lzma": uproot.LZMA(9), "zstd": uproot.ZSTD(1)}


def inputs(events: int, files: int, compression: str) -> list[str]:
    """The benchmark's data files (written if missing)."""
    paths = [os.path.join(tempfile.gettempdir(), f"calibflow-bench-prep-variants-{events}-{compression}-{i}.root")
             for i in range(files)]
    toys = calibflow.toys.nanoaod
    default, toys.TOY_COMPRESSION = toys.TOY_COMPRESSION, COMPRESSION[compression]  # the toy's writer takes it
    try:
        for i, path in enumerate(paths):
            if not os.path.exists(path):
                write_z_mumu_file(path, events, True, 100 + i)
    finally:
        toys.TOY_COMPRESSION = default
    return paths


def config(folder: str, files: list[str]) -> str:
    """The recipe reading ``files`` as its data (no toy), its lumi mask made absolute; the config's path."""
    d = yaml.safe_load((ROOT / "task_configs" / "cms_muon_id_z.yaml").read_text())
    d.pop("toy")
    d["samples"]["data"]["files"] = files
    d["samples"]["data"]["lumi_mask"] = str(ROOT / "task_configs" / d["samples"]["data"]["lumi_mask"])
    d["samples"]["mc"]["files"] = files[:1]  # not prepared here
    path = os.path.join(folder, "cms_muon_id_z.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(d, f, sort_keys=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compression", choices=sorted(COMPRESSION), default="lzma")
    args = parser.parse_args()
    files = inputs(args.events, args.files, args.compression)
    work = tempfile.mkdtemp(prefix="calibflow-bench-prep-variants-")
    plan = Plan.create(config(work, files), os.path.join(work, "res"))
    variants = len(plan.all_variants()) + 1
    preps = {}  # input -> the distinct preparations of every variant
    for i, src in enumerate(files):
        found = plan.file_preparations("data", i)
        preps[src] = [Preparation(plan.with_variant(v).prep_spec("data"), path) for path, (v, _) in found.items()]

    def one_read(out: str) -> None:
        for src, ps in preps.items():
            prepare_files(src, [Preparation(p.spec, os.path.join(out, os.path.basename(p.out_path))) for p in ps])

    def per_variant(out: str) -> None:
        for src, ps in preps.items():
            for p in ps:
                prepare_file(src, p.spec, os.path.join(out, os.path.basename(p.out_path)))

    runs = {"one read": one_read, "per variant": per_variant}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    try:
        for label, run in runs.items():  # warm-up, and the outputs agree
            os.makedirs(os.path.join(work, label))
            run(os.path.join(work, label))
        for name in os.listdir(os.path.join(work, "one read")):
            assert Path(work, "one read", name).read_bytes() == Path(work, "per variant", name).read_bytes(), name
        for _ in range(args.repeat):
            for label, run in runs.items():
                times[label].append(wall_and_cpu(lambda run=run, label=label: run(os.path.join(work, label))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    n_preps = sum(len(p) for p in preps.values())
    branches = {src: len(set().union(*(p.spec.branches for p in ps))) for src, ps in preps.items()}
    print(f"{args.files} data file(s) of {args.events} events, {os.path.getsize(files[0]) / 1e6:.0f} MB each ({args.compression}); "
          f"{n_preps // len(files)} distinct preparations per file over {variants} variants, "
          f"{max(branches.values())} branches in their union; median of {args.repeat}")
    for label in runs:
        print(f"  {label}: {wall[label]:.2f} s (CPU {cpu[label]:.2f} s)")
    one, each = wall["one read"], wall["per variant"]
    print(f"prep_variants: {one:.2f} s one read vs {each:.2f} s per variant, {each / one:.1f}x")


if __name__ == "__main__":
    main()
