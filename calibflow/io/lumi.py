"""CMS certification ("golden") JSON luminosity masks.

The JSON maps run numbers (as strings) to lists of inclusive luminosity-block ranges::

    {"297050": [[12, 137], [193, 776]], "297056": [[12, 203]]}

:class:`LumiMask` turns it into a vectorised ``(run, luminosityBlock) -> bool`` lookup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numba
import numpy as np

__all__ = ["LumiMask", "LumiMaskError", "LumiMaskFileNotFoundError"]

_MAX_INT = 2**63 - 1  # runs and lumis are stored as int64
_MAX_DENSE_RUNS = 1 << 22  # run spans up to this use an O(1) run -> ranges table (int32, <= 16 MB)


class LumiMaskError(ValueError):
    """Invalid certification JSON (message names the file and, where applicable, the run)."""


class LumiMaskFileNotFoundError(LumiMaskError, FileNotFoundError):
    """The certification JSON file does not exist (catchable as ValueError or FileNotFoundError)."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LumiMaskError(f"run {key!r} appears more than once")
        out[key] = value
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class LumiMask:
    """Vectorised lookup of certified (run, luminosity block) pairs.

    Parameters
    ----------
    source : path or mapping
        Path to a CMS certification JSON, or the already parsed mapping ``{run: [[lo, hi], ...]}``
        (run keys may be ``str`` or ``int``). Ranges are inclusive; overlapping or adjacent ranges of
        a run are merged (union). A run with an empty range list certifies nothing.

    Raises
    ------
    LumiMaskFileNotFoundError
        (a ``ValueError`` and ``FileNotFoundError``) if the file does not exist.
    LumiMaskError
        (a ``ValueError``) for unreadable/invalid JSON, duplicate runs, non-integer run numbers and
        malformed ranges (not ``[lo, hi]`` integers with ``1 <= lo <= hi``), naming file and run.

    Lookup is a numba kernel doing two binary searches per entry (run, then range), with the run
    search skipped for consecutive entries of the same run (typical of ntuples); with run numbers
    spanning fewer than 2^22 values (always, for real files) runs are found by a dense table.
    About 0.1 s per 10^7 unsorted entries on one core (coffea's LumiMask: about 0.5 s).
    """

    def __init__(self, source: str | os.PathLike[str] | Mapping[Any, Any]) -> None:
        if isinstance(source, Mapping):
            self.source = "<mapping>"
            data: Any = source
        else:
            path = Path(source)
            self.source = str(path)
            if not path.is_file():
                raise LumiMaskFileNotFoundError(f"{path}: certification JSON file not found")
            try:
                with path.open("rb") as fh:
                    data = json.load(fh, object_pairs_hook=_reject_duplicate_keys)
            except LumiMaskError as exc:
                raise LumiMaskError(f"{path}: {exc}") from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise LumiMaskError(f"{path}: not valid JSON: {exc}") from exc
        self._runs, self._run_start, self._lo, self._hi = self._build(data)
        # dense table run - run_min -> position in self._runs (-1: run not listed); empty if too sparse
        self._run_min = int(self._runs[0]) if self._runs.size else 0
        span = int(self._runs[-1]) - self._run_min + 1 if self._runs.size else 0
        self._dense = np.full(span if span <= _MAX_DENSE_RUNS else 0, -1, dtype=np.int32)
        if self._dense.size:
            self._dense[self._runs - self._run_min] = np.arange(self._runs.size, dtype=np.int32)

    # ------------------------------------------------------------------------------------------
    def _error(self, msg: str) -> LumiMaskError:
        return LumiMaskError(f"{self.source}: {msg}")

    def _build(self, data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat lookup tables: sorted runs, per-run start into the merged, sorted (lo, hi) ranges."""
        if not isinstance(data, Mapping):
            raise self._error(
                f"top level must be an object {{run: [[lo, hi], ...]}}, got {type(data).__name__}"
            )
        per_run: dict[int, list[tuple[int, int]]] = {}
        for key, ranges in data.items():
            run = self._parse_run(key)
            if run in per_run:
                raise self._error(f"run {key!r} appears more than once")
            per_run[run] = self._parse_ranges(key, ranges)
        runs = sorted(per_run)
        run_start = np.zeros(len(runs) + 1, dtype=np.int64)
        run_start[1:] = np.cumsum([len(per_run[r]) for r in runs])
        lo = np.asarray([lo for r in runs for lo, _ in per_run[r]], dtype=np.int64)
        hi = np.asarray([hi for r in runs for _, hi in per_run[r]], dtype=np.int64)
        return np.asarray(runs, dtype=np.int64), run_start, lo, hi

    def _parse_run(self, key: Any) -> int:
        is_digits = isinstance(key, str) and key.isascii() and key.strip().isdigit()
        if not (_is_int(key) or is_digits):
            raise self._error(f"run {key!r} is not a positive integer run number")
        run = int(key)
        if not 1 <= run <= _MAX_INT:
            raise self._error(f"run {key!r} out of range, need 1 <= run < 2**63")
        return run

    def _parse_ranges(self, key: Any, ranges: Any) -> list[tuple[int, int]]:
        if not isinstance(ranges, (list, tuple)):
            raise self._error(f"run {key!r}: expected a list of [lo, hi] ranges, got {ranges!r}")
        parsed: list[tuple[int, int]] = []
        for rng in ranges:
            if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(_is_int(v) for v in rng)):
                raise self._error(f"run {key!r}: malformed range {rng!r}, expected [lo, hi] integers")
            lo, hi = int(rng[0]), int(rng[1])
            if not 1 <= lo <= hi <= _MAX_INT:
                raise self._error(f"run {key!r}: invalid range {rng!r}, need 1 <= lo <= hi < 2**63")
            parsed.append((lo, hi))
        parsed.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in parsed:
            if merged and lo <= merged[-1][1] + 1:  # overlapping or adjacent
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged

    # ------------------------------------------------------------------------------------------
    @property
    def runs(self) -> np.ndarray:
        """Sorted int64 array of the runs listed in the JSON (including runs with no certified lumis)."""
        return self._runs.copy()

    def __len__(self) -> int:
        """Number of (merged) certified luminosity-block ranges."""
        return int(self._lo.shape[0])

    def __repr__(self) -> str:
        return f"LumiMask({self.source!r}, runs={self._runs.shape[0]}, ranges={len(self)})"

    def __call__(self, run: Any, lumi: Any) -> np.ndarray:
        """Boolean array: True where ``(run, lumi)`` is certified.

        ``run`` and ``lumi`` are integer arrays (numpy, flat awkward, lists or scalars) that broadcast
        against each other, e.g. the ``run`` and ``luminosityBlock`` branches. Values that cannot be
        certified (negative, zero, beyond the int64 range) give False.
        """
        run_arr = np.asarray(run)
        lumi_arr = np.asarray(lumi)
        for name, arr in (("run", run_arr), ("lumi", lumi_arr)):
            if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and arr.size == 0):
                raise TypeError(f"LumiMask: {name} must be an integer array, got dtype {arr.dtype}")
        try:
            run_arr, lumi_arr = np.broadcast_arrays(run_arr, lumi_arr)
        except ValueError:
            raise ValueError(
                f"LumiMask: run and lumi shapes do not broadcast: {run_arr.shape} vs {lumi_arr.shape}"
            ) from None
        shape = run_arr.shape
        run_flat = np.ascontiguousarray(run_arr).reshape(-1)
        lumi_flat = np.ascontiguousarray(lumi_arr).reshape(-1)
        if run_flat.dtype.kind == "f":  # empty float input (e.g. np.array([]))
            run_flat = run_flat.astype(np.int64)
        if lumi_flat.dtype.kind == "f":
            lumi_flat = lumi_flat.astype(np.int64)
        out = np.empty(run_flat.shape[0], dtype=np.bool_)
        _lumi_mask_kernel(
            run_flat,
            lumi_flat,
            self._runs,
            self._run_min,
            self._dense,
            self._run_start,
            self._lo,
            self._hi,
            out,
        )
        return out.reshape(shape)


@numba.njit(cache=True)
def _lumi_mask_kernel(
    run: np.ndarray,
    lumi: np.ndarray,
    runs: np.ndarray,
    run_min: int,
    dense: np.ndarray,
    run_start: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[i] = lumi[i] in some [lo, hi] of run[i].

    Run lookup: dense table if available, else binary search (cached for consecutive equal runs);
    then a binary search over the run's sorted, disjoint ranges.
    """
    n_runs = runs.shape[0]
    n_dense = dense.shape[0]
    last_run = np.int64(-1)
    k = -1
    for i in range(run.shape[0]):
        r = np.int64(run[i])  # uint64 beyond int64 wraps negative -> not certified
        lum = np.int64(lumi[i])
        if n_dense > 0:
            j = r - run_min
            k = dense[j] if (j >= 0 and j < n_dense) else -1
        elif r != last_run:
            a = 0
            b = n_runs
            while a < b:
                mid = (a + b) >> 1
                if runs[mid] < r:
                    a = mid + 1
                else:
                    b = mid
            k = a if (a < n_runs and runs[a] == r) else -1
            last_run = r
        if k < 0:
            out[i] = False
            continue
        first = run_start[k]
        a = first
        b = run_start[k + 1]
        while a < b:  # a = number of ranges with lo <= lum
            mid = (a + b) >> 1
            if lo[mid] <= lum:
                a = mid + 1
            else:
                b = mid
        out[i] = a > first and lum <= hi[a - 1]
