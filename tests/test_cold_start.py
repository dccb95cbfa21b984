"""Cold start: every kernel compiled once per machine into the kernel cache, before the pool forks, and only the
kernels of the stages a run executes loaded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from calibflow.ops.warmup import warm_up
from calibflow.plan import Plan
from tasks import EfficiencyTable, PrepareTuple
from tasks.pool import KernelWarmUp, preload_modules

from .conftest import ROOT, tiny_demo_dict

_RUN = """
import os, sys
from numba.core import event

class Compiled(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):  # a real compilation (a kernel loaded from the cache triggers no event)
        f = ev.data["dispatcher"].py_func
        if f.__module__.startswith("calibflow"):
            with open(sys.argv[3], "a") as log:
                log.write(f"{os.getpid()}\\t{f.__module__}.{f.__qualname__}\\t{ev.data['args']}\\n")

event.register("numba:compile", Compiled())
from tasks.cli import main
print("parent", os.getpid())
sys.exit(main(["run", sys.argv[1], "--workers", "2", "--result-dir", sys.argv[2], "--quiet"]))
"""


def _run(config: Path, results: Path, log: Path, cache: Path) -> list[tuple[int, str, str]]:
    """Run ``config`` with 2 workers on the kernel cache ``cache``; the compilations (pid, kernel, types)."""
    env = {**os.environ, "CALIBFLOW_KERNEL_CACHE": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", _RUN, str(config), str(results), str(log)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    parent = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("parent ")))
    lines = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return [(int(pid) if int(pid) != parent else 0, kernel, types) for pid, kernel, types in lines]


@pytest.fixture(scope="module")
def cold_then_warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    """The tiny demo run twice on a fresh kernel cache: (folder, compilations cold, compilations warm)."""
    folder = tmp_path_factory.mktemp("cold")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    cache = folder / "kernels"
    beside_sources = set((ROOT / "calibflow").rglob("*.nbi"))
    cold = _run(config, folder / "cold", folder / "cold.log", cache)
    warm = _run(config, folder / "warm", folder / "warm.log", cache)
    assert set((ROOT / "calibflow").rglob("*.nbi")) <= beside_sources  # nothing cached beside the sources
    return folder, cold, warm


def test_a_fresh_kernel_cache_compiles_each_kernel_once_per_machine(cold_then_warm) -> None:
    """Each kernel (and type signature) is compiled once, by the scheduling process before the pool forks
    (pid 0 here), except the fused loops, which need the generated toy files' column types: one worker each.
    Everything lands in the one kernel cache; a second run compiles nothing."""
    folder, cold, warm = cold_then_warm
    counts = Counter((kernel, types) for _, kernel, types in cold)
    assert counts and max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    kernels = {kernel.rsplit(".", 1)[0] for _, kernel, _ in cold}
    assert {"calibflow.kernels.binindex", "calibflow.kernels.histogram", "calibflow.fit.passfail"} <= kernels
    in_workers = {kernel for pid, kernel, _ in cold if pid != 0}
    assert in_workers and all(k.startswith("calibflow_fused_") for k in in_workers), in_workers
    index = {p.relative_to(folder / "kernels").parts[0] for p in (folder / "kernels").rglob("*.nbi")}
    assert {"kernels", "fit"} <= {name.rsplit("_", 1)[0] for name in index}  # calibflow's packages, one folder
    assert warm == []


def test_a_run_loads_only_the_kernels_of_the_stages_it_executes(cold_then_warm) -> None:
    """Done fits load no fit kernels; a calibration without pairing loads no pairing kernels; tasks that call
    no kernel (the exports) warm nothing up."""
    folder, _, _ = cold_then_warm
    plan = Plan.create(folder / "tiny.yaml", folder / "cold")
    common = {"config": plan.config_path, "result_dir": plan.result_dir}
    assert EfficiencyTable(**common).pending_kernel_stages() == set()  # every fit of the run is done
    prep = [PrepareTuple(sample="data", index=0, **common)]
    assert preload_modules(prep)[-1] == KernelWarmUp(plan.config_path, plan.result_dir, "", "", frozenset({"prep"}))
    assert warm_up(plan, {"prep"}) == ["numba"]  # no pairing in the demo: its kernels are not loaded
    assert warm_up(plan, {"histograms"}) == ["numba", "bin index", "histograms"]
    import calibflow.kernels.pairing as pairing

    assert not pairing._tag_probe_pairs_kernel.signatures
    nanoaod = Plan.create(ROOT / "task_configs" / "cms_muon_id_z.yaml", folder / "nanoaod")
    assert warm_up(nanoaod, {"prep"}) == ["numba", "pairing", "jagged baskets"]  # NanoAOD: jagged branches
    from calibflow.kernels.jagged import _entry_offsets

    assert _entry_offsets.signatures


_CACHE_DIR = "import calibflow, numba; print(numba.config.CACHE_DIR)"


def _numba_cache_dir(env: dict[str, str]) -> tuple[str, str]:
    """numba's cache folder in a fresh interpreter importing calibflow with ``env``; and its warnings."""
    full = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | env
    out = subprocess.run([sys.executable, "-c", _CACHE_DIR], env=full, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip(), out.stderr


def test_numba_caches_every_kernel_in_the_private_kernel_cache_or_where_the_user_says(tmp_path: Path) -> None:
    """Importing calibflow points numba at the kernel cache (created 0700); a NUMBA_CACHE_DIR of the user's is
    kept; a kernel cache others can write is refused with a warning, one that cannot be made (read-only home)
    too: a private temporary folder then serves."""
    cache = tmp_path / "kernels"
    assert _numba_cache_dir({"CALIBFLOW_KERNEL_CACHE": str(cache)})[0] == str(cache)
    assert cache.stat().st_mode & 0o777 == 0o700
    mine = tmp_path / "mine"
    assert _numba_cache_dir({"CALIBFLOW_KERNEL_CACHE": str(cache), "NUMBA_CACHE_DIR": str(mine)})[0] == str(mine)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    folder, warnings = _numba_cache_dir({"CALIBFLOW_KERNEL_CACHE": str(shared)})
    assert "calibflow-kernels-" in folder and "is writable by others, so it is not used" in warnings
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert "calibflow-kernels-" in _numba_cache_dir({"CALIBFLOW_KERNEL_CACHE": str(blocked / "kernels")})[0]


_EXTENSIONS = """
import sys
import numpy as np
import calibflow.kernels.cache as cache
first = cache.numba_extensions_of() if sys.argv[1] == "only" else "numba's"
from calibflow.kernels.jagged import entry_offsets
offsets, bad = entry_offsets(np.array([80, 84]), np.array([2]), np.array([80]), np.array([12]), 4)
print(first, cache.numba_extensions_of(), offsets.tolist(), bad, "vector" in sys.modules)
"""


def test_calibflows_processes_load_no_other_packages_numba_extensions() -> None:
    """The command's processes (runner, batch jobs) load awkward's numba extension only; vector's, installed
    with coffea (a test dependency), costs ~0.45 s per process and is left out there, but not in a process
    that uses calibflow as a library. A second call changes nothing."""
    def run(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", _EXTENSIONS, mode], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run("only") == "['awkward.numba:_register'] None [0, 1, 3] -1 False"
    vector = importlib.util.find_spec("vector") is not None
    assert run("library") == f"numba's None [0, 1, 3] -1 {vector}"
