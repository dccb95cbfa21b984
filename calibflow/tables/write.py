"""Tables of a run from per-bin results: per-variant CSVs, combined with systematics, master tables.

Per variant: ``efficiencies.csv``, ``scale_factors.csv`` (none without a data/simulation pair:
:func:`no_scale_factors` says why) and (toys) ``closure.csv``. Combined (nominal
with every systematic source): the same files with ``<source>Up/Down``, ``syst`` and ``total_up/down``
columns, and the master table ``calibration.json``/``calibration.h5``. The exports of these tables are
:mod:`calibflow.export`'s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.config import CalibrationConfig, Variation
from calibflow.io import jsonio
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row, closure_rows, efficiency_rows, read_csv, scale_factor_rows, write_csv
from calibflow.tables.systematics import Runs, combine

EFFICIENCIES, SCALE_FACTORS, CLOSURE, CORRECTIONS = "efficiencies.csv", "scale_factors.csv", "closure.csv", "corrections.json"
MASTER_JSON, MASTER_H5, ROOT_FILE, ROC = "calibration.json", "calibration.h5", "corrections.root", "roc.csv"


def write_tables(
    out_dir: str,
    scheme: BinningScheme,
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    truth: Mapping[str, np.ndarray | None],
    coverage: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
) -> list[str]:
    """Write efficiencies.csv, scale_factors.csv (only with data/simulation ``pairs``) and (with toy truth)
    closure.csv; return the files. ``coverage``: per (sample, bin) the coverage record, whose columns and
    ``coverage_off`` flags the tables then carry (:mod:`calibflow.tables.coverage`)."""
    from calibflow.tables.coverage import add_efficiency_coverage, add_scale_factor_coverage

    eff = efficiency_rows(scheme, results)
    if coverage is not None:
        add_efficiency_coverage(eff, coverage)
    sf = [row for d, m in pairs for row in scale_factor_rows(eff, d, m)]
    if coverage is not None:
        add_scale_factor_coverage(sf, coverage)
    written = [os.path.join(out_dir, EFFICIENCIES)]
    write_csv(written[0], eff)
    if sf:
        written.append(os.path.join(out_dir, SCALE_FACTORS))
        write_csv(written[-1], sf)
    true = {(s, i): float(t[i]) for s, t in truth.items() if t is not None for i in range(len(t)) if np.isfinite(t[i])}
    closure = closure_rows(eff, sf, true) if true else []  # none of yields (method yield): no efficiency
    if closure:
        written.append(os.path.join(out_dir, CLOSURE))
        write_csv(written[-1], closure)
    return written


def combine_tables(
    out_dir: str, nominal_dir: str, varied_dirs: Mapping[str, str], sources: Sequence[Variation], method: str,
    sides: Mapping[str, str] | None = None,
) -> list[str]:
    """Nominal tables extended with the systematic columns of ``sources`` (runs in ``varied_dirs``) combined by
    ``method``; ``sides``: each sample's role (data, mc: what ``applies_to`` and the EGM roles count on); no
    scale factors where the nominal run has none."""
    written = []
    for name, keys, value in ((EFFICIENCIES, ("sample", "bin"), "efficiency"), (SCALE_FACTORS, ("data", "bin"), "scale_factor")):
        src = os.path.join(nominal_dir, name)
        nominal = read_csv(src) if os.path.exists(src) else []
        if not nominal and name == SCALE_FACTORS:  # no data/simulation pair (tables of older runs: an empty file)
            continue
        varied = {run: read_csv(os.path.join(d, name)) for run, d in varied_dirs.items()}
        path = os.path.join(out_dir, name)
        write_csv(path, combine(nominal, Runs(varied, sources, method, sides), value, keys))
        written.append(path)
    if os.path.exists(os.path.join(nominal_dir, CLOSURE)):
        path = os.path.join(out_dir, CLOSURE)
        os.makedirs(out_dir, exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(os.path.join(nominal_dir, CLOSURE), tmp)
        written.append(path)
    return written


def no_scale_factors(cfg: CalibrationConfig) -> str:
    """Why ``cfg`` has no scale factors, in one line (empty: it has some)."""
    if cfg.scale_factor_pairs:
        return ""
    if all(s.method == "yield" for s in cfg.samples.values()):
        return "every sample measures a signal yield (method yield), not an efficiency"
    mc = [n for n, s in cfg.samples.items() if s.role == "mc" and s.method != "yield"]
    if not [n for n in cfg.data_samples if cfg.samples[n].method != "yield"]:
        return "no data sample (role: data) to compare with the simulation"
    if not mc:
        return "no simulation sample (role: mc) to compare the data with (a data-only calibration)"
    return f"several simulation samples ({', '.join(mc)}) and no reference naming the one to compare the data with"


def _columns(rows: Sequence[Row]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        out[k] = np.array(vals, dtype="S") if any(isinstance(v, str) for v in vals) else np.array(vals, dtype=float)
    return out


def write_master(out_dir: str, metadata: Mapping[str, Any], extra: Mapping[str, Sequence[Row]] = {},
                 h5_extra: Callable[[h5py.File], None] | None = None) -> list[str]:
    """The master table of ``out_dir``: every table plus metadata, as JSON and as HDF5 (one group each);
    ``h5_extra`` writes further groups into the HDF5 file (covariances: :mod:`calibflow.tables.covariance`)."""
    tables: dict[str, list[Row]] = {
        name[:-4]: read_csv(os.path.join(out_dir, name))
        for name in (EFFICIENCIES, SCALE_FACTORS, CLOSURE)
        if os.path.exists(os.path.join(out_dir, name))
    }
    tables.update({k: list(v) for k, v in extra.items()})
    jpath, hpath = os.path.join(out_dir, MASTER_JSON), os.path.join(out_dir, MASTER_H5)
    with atomic_path(jpath) as tmp, open(tmp, "w") as f:
        jsonio.dump({"metadata": metadata, "tables": tables}, f, indent=1, default=str)
    with atomic_path(hpath) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["metadata"] = jsonio.dumps(metadata, default=str)
        for name, rows in tables.items():
            g = h5.create_group(name)
            for col, arr in _columns(rows).items():
                g[col] = arr
        if h5_extra is not None:
            h5_extra(h5)
    return [jpath, hpath]
