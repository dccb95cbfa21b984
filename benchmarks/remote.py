"""Benchmark: tuple preparation of inputs read from a local XRootD server vs the same files read locally.

    python benchmarks/remote.py [--files F] [--candidates N] [--repeat R]

Writes (once, under the system temp folder) F toy files of the demo's J/psi generator (N candidates each, 15
branches of which the demo config reads 8), starts Debian's ``xrootd`` on 127.0.0.1 exporting them
(tests/xrootd_server.py) and times, interleaved R times, calibflow's prep stage (``prepare_file`` with the
demo's spec: the needed branches, the cuts, the HDF5 output) over all files given as local paths
(memory-mapped) and as ``root://127.0.0.1:<port>//...`` URLs (each chunk's baskets fetched in one vector read
through uproot's fsspec source and fsspec-xrootd), both inflated by calibflow's basket reader. Both read from
the page cache (the server's files are copies in the same file system), so the difference is the cost of the
remote path: the protocol, the server's and the client's copies and threads. The last line is ``remote: <f> of
local speed`` with f = t_local / t_remote (medians of wall time).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test server helper

from calibflow.config import load_config  # noqa: E402
from calibflow.io.store import read_metadata  # noqa: E402
from calibflow.prep.prepare import prepare_file  # noqa: E402
from calibflow.prep.spec import prep_spec  # noqa: E402
from calibflow.toys.registry import write_toy_file  # noqa: E402
from tests.xrootd_server import XRootDServer  # noqa: E402


def toy_files(files: int, candidates: int) -> list[Path]:
    """The benchmark's inputs (written if missing)."""
    folder = Path(tempfile.gettempdir()) / f"calibflow-bench-remote-{files}x{candidates}"
    folder.mkdir(exist_ok=True)
    paths = [folder / f"data_{i}.root" for i in range(files)]
    for i, path in enumerate(paths):
        if not path.exists():
            write_toy_file(str(path), candidates, is_data=True, seed=100 + i)
    return paths


def prepare_all(sources: list[str], spec: object, out: Path) -> float:
    """Wall time (s) of preparing every source into ``out``."""
    t0 = time.perf_counter()
    for i, source in enumerate(sources):
        prepare_file(source, spec, str(out / f"{i}.h5"))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    paths = toy_files(args.files, args.candidates)
    spec = prep_spec(load_config(ROOT / "task_configs" / "demo.yaml"), "data")
    server = XRootDServer()
    out = Path(tempfile.mkdtemp(prefix="calibflow-bench-remote-out-"))
    try:
        server.start()
        urls = [server.put(f"store/{p.name}", p) for p in paths]
        local = [str(p) for p in paths]
        prepare_all(local, spec, out)  # warm-up: imports, kernels, page cache, the client's connection
        prepare_all(urls, spec, out)
        times: dict[str, list[float]] = {"local": [], "remote": []}
        for _ in range(args.repeat):
            times["local"].append(prepare_all(local, spec, out))
            times["remote"].append(prepare_all(urls, spec, out))
        fetched = read_metadata(str(out / "0.h5"))["fetched"]
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    t_local, t_remote = (statistics.median(times[k]) for k in ("local", "remote"))
    size = paths[0].stat().st_size
    n = args.files * args.candidates
    print(
        f"{args.files} files of {args.candidates} candidates ({size / 1e6:.0f} MB each), median of",
        args.repeat,
    )
    print(f"local  {t_local:.2f} s ({n / t_local / 1e6:.2f} M candidates/s)")
    got = f"{fetched['bytes'] / 1e6:.1f} MB of {size / 1e6:.1f} MB"
    calls = f"{fetched['requests']} requests ({fetched['ranges']} byte ranges)"
    speed = f"{n / t_remote / 1e6:.2f} M candidates/s"
    print(f"remote {t_remote:.2f} s ({speed}), fetched {got} in {calls} per file")
    print(f"remote: {t_local / t_remote:.2f} of local speed")


if __name__ == "__main__":
    main()
