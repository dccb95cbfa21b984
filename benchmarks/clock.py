"""Timing helpers shared by the benchmarks (run as scripts: ``python benchmarks/<name>.py`` puts this folder on
``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wall_and_cpu(run: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU time (s) of ``run()`` (CPU: this process only)."""
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - t0, time.process_time() - c0


def cpu_pressure() -> str:
    """Share of the last 60 s in which runnable tasks waited for a CPU (Linux PSI), if available."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f"cpu pressure {f.readline().split()[2].split('=')[1]}% (avg60)"
    except (OSError, IndexError):
        return "cpu pressure unknown"
