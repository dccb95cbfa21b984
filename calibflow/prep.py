"""Tuple preparation: one ROOT file in, one compact HDF5 file of the needed columns after cuts out.

Reads only the branches the config's expressions reference, chunk by chunk (bounded memory), applies
the selection stages in order and records the cut flow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import uproot

from calibflow.config import CalibrationConfig
from calibflow.expr import Expression, compile_expression
from calibflow.hashing import content_key, file_identity
from calibflow.io.store import TableWriter, atomic_path, write_metadata

PREP_VERSION = 1
MASS, PASS, WEIGHT, TRUE_EFF, IS_SIGNAL = "_mass", "_pass", "_weight", "_true_eff", "_is_signal"


def pass_column(working_point: str) -> str:
    """Prepared column of the pass decision of ``working_point``."""
    return f"{PASS}:{working_point}"


def is_flag(column: str) -> bool:
    """Whether a prepared column holds booleans (pass decisions and the signal flag)."""
    return column in (IS_SIGNAL, PASS) or column.startswith(PASS + ":")


class PrepError(RuntimeError):
    """An input file cannot be prepared; ``str()`` is one line naming the file and the problem."""


@dataclass(frozen=True)
class PrepSpec:
    """What to read from one sample's files: tree, output column expressions and ordered cuts."""

    tree: str
    columns: dict[str, Expression]
    cuts: list[tuple[str, Expression]] = field(default_factory=list)

    @property
    def branches(self) -> list[str]:
        """Sorted names of every branch any expression references."""
        names: set[str] = set()
        for e in [*self.columns.values(), *(c for _, c in self.cuts)]:
            names |= e.branches
        return sorted(names)

    def describe(self) -> dict[str, Any]:
        """Content that determines the output (for keys)."""
        return {
            "tree": self.tree,
            "columns": {k: v.text for k, v in self.columns.items()},
            "cuts": [[k, v.text] for k, v in self.cuts],
            "aliases_expanded": sorted(self.branches),
            "version": PREP_VERSION,
        }


def prep_spec(config: CalibrationConfig, sample: str) -> PrepSpec:
    """Build the PrepSpec of ``sample`` from the config (compiles every expression once)."""
    s = config.samples[sample]
    al = config.aliases

    def c(text: str, where: str) -> Expression:
        return compile_expression(text, al, where=where)

    columns = {v.name: c(v.expr, f"binning.variables[{i}]") for i, v in enumerate(config.binning.variables)}
    columns[MASS] = c(config.mass_spec.variable, "mass.variable")
    columns[PASS] = c(config.pass_, "pass")
    for wp, text in config.working_points.items():
        columns[pass_column(wp)] = c(text, f"working_points.{wp}")
    if s.weight:
        columns[WEIGHT] = c(s.weight, f"samples.{sample}.weight")
    if config.closure:
        columns[TRUE_EFF] = c(config.closure.true_efficiency, "closure.true_efficiency")
        columns[IS_SIGNAL] = c(config.closure.signal, "closure.signal")
    cuts = [
        (stage, c(text, f"selection.{stage}"))
        for stage, text in (("tag", config.selection.tag), ("probe", config.selection.probe), ("pair", config.selection.pair))
        if text
    ]
    if s.cut:
        cuts.append(("sample", c(s.cut, f"samples.{sample}.cut")))
    return PrepSpec(tree=s.tree, columns=columns, cuts=cuts)


def prep_key(spec: PrepSpec, path: str) -> str:
    """Content key of preparing ``path`` with ``spec``."""
    return content_key(spec.describe(), file_identity(path))


def _open_tree(path: str, tree: str) -> Any:
    try:
        f = uproot.open(path)
    except FileNotFoundError:
        raise PrepError(f"{path}: file not found") from None
    except Exception as exc:
        raise PrepError(f"{path}: cannot read as a ROOT file ({type(exc).__name__}: {exc})") from None
    if tree not in f:
        trees = [k.split(";")[0] for k, cls in f.classnames().items() if cls.startswith(("TTree", "ROOT::RNTuple"))]
        raise PrepError(f"{path}: no tree {tree!r} (trees in file: {', '.join(trees) or 'none'})")
    return f[tree]


def prepare_file(
    path: str, spec: PrepSpec, out_path: str, step_size: str | int = "64 MB", metadata: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Prepare one ROOT file into the HDF5 file ``out_path`` (atomic); return the cut flow counts.

    The cut flow maps ``read`` and each cut stage to the number of candidates remaining after it.
    """
    tree = _open_tree(path, spec.tree)
    if tree.num_entries == 0:
        raise PrepError(f"{path}: tree {spec.tree!r} has zero entries")
    missing = [b for b in spec.branches if b not in tree]
    if missing:
        raise PrepError(f"{path}: tree {spec.tree!r} has no branch(es) {', '.join(missing)}")
    flow = {"read": 0, **{stage: 0 for stage, _ in spec.cuts}}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        writer = TableWriter(h5)
        try:
            chunks = tree.iterate(spec.branches, step_size=step_size, library="np")
            for chunk in chunks:
                n = len(next(iter(chunk.values())))
                flow["read"] += n
                keep = np.ones(n, dtype=bool)
                for stage, cut in spec.cuts:
                    keep &= np.asarray(cut.evaluate(chunk), dtype=bool)
                    flow[stage] += int(keep.sum())
                out = {}
                for name, e in spec.columns.items():
                    values = np.broadcast_to(np.asarray(e.evaluate(chunk)), (n,))[keep]
                    out[name] = values.astype(bool) if is_flag(name) else values.astype(np.float64)
                writer.append(out)
        except PrepError:
            raise
        except Exception as exc:
            raise PrepError(f"{path}: reading failed ({type(exc).__name__}: {exc})") from None
        writer.ensure({k: (bool if is_flag(k) else np.float64) for k in spec.columns})
        write_metadata(
            h5, {"source": file_identity(path), "spec": spec.describe(), "cutflow": flow, **(metadata or {})}
        )
    return flow


def output_name(path: str, key: str) -> str:
    """File name of the prepared output of ``path``: its stem and its content key."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{key}.h5"
