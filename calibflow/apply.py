"""Apply corrections back to simulation: an ordered calibrator sequence adding weight columns.

A calibrator declares the columns it changes, its variations and whether it applies to simulation only
(PocketCoffea style). The sequence runs the steps in order — each sees the columns written by the
steps before it — and checks that no step writes a column it did not declare. Every variation of a
step reruns the sequence from that step on, with that step varied and the others nominal: the step's own
columns are stored as ``<column>_<variation>``, and later steps' columns that change because of it as
``<column>_<step>_<variation>``.

The standard calibrator, :class:`CorrectionWeight`, evaluates a correctionlib correction (e.g. a
calibflow ``corrections.json``) with inputs computed by expressions and writes a weight column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from calibflow.config import ConfigError, format_loc, load_yaml
from calibflow.expr import Expression, compile_expression

Columns = dict[str, np.ndarray]


class CalibratorError(RuntimeError):
    """A calibrator broke the sequence's contract (undeclared column, wrong length)."""


@dataclass
class Calibrator:
    """Base class: ``name``, declared ``changes`` and ``variations``, simulation-only flag."""

    name: str
    changes: tuple[str, ...]
    variations: tuple[str, ...] = ()
    mc_only: bool = True

    @property
    def inputs(self) -> frozenset[str]:
        """Columns the calibrator reads (for reading only what is needed)."""
        return frozenset()

    def calibrate(self, events: Mapping[str, np.ndarray], variation: str | None) -> Columns:
        """New values of (some of) the declared columns for ``variation`` (None = nominal)."""
        raise NotImplementedError


@dataclass
class CorrectionWeight(Calibrator):
    """Weight column from a correctionlib correction; correction inputs from expressions.

    The string input of the correction (``syst`` in calibflow files) takes ``nominal`` or the variation.
    """

    correction: Any = None
    input_exprs: dict[str, Expression] = field(default_factory=dict)
    syst_input: str | None = "syst"

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset().union(*(e.branches for e in self.input_exprs.values()))

    def calibrate(self, events: Mapping[str, np.ndarray], variation: str | None) -> Columns:
        args = []
        n = len(next(iter(events.values())))
        for inp in self.correction.inputs:
            if inp.name == self.syst_input:
                args.append(variation or "nominal")  # correctionlib takes string inputs as scalars
            else:
                args.append(np.broadcast_to(np.asarray(self.input_exprs[inp.name].evaluate(events), dtype=float), (n,)))
        return {self.changes[0]: np.asarray(self.correction.evaluate(*args), dtype=float)}


@dataclass
class CalibratorSequence:
    """Ordered calibrators applied to one sample."""

    steps: list[Calibrator]

    def _run(self, events: Mapping[str, np.ndarray], is_mc: bool, start: int, varied: str | None) -> Columns:
        cols: Columns = dict(events)
        written: Columns = {}
        n = len(next(iter(events.values())))
        for i, step in enumerate(self.steps):
            if i < start or (step.mc_only and not is_mc):
                continue
            out = step.calibrate(cols, varied if i == start else None)
            extra = sorted(set(out) - set(step.changes))
            if extra:
                raise CalibratorError(
                    f"calibrator {step.name!r} wrote undeclared column(s) {extra} (declared: {list(step.changes)})"
                )
            for k, v in out.items():
                if np.shape(v) != (n,):
                    raise CalibratorError(f"calibrator {step.name!r}: column {k!r} has shape {np.shape(v)}, not ({n},)")
            cols.update(out)
            written.update(out)
        return written

    def apply(self, events: Mapping[str, np.ndarray], is_mc: bool = True) -> Columns:
        """Nominal columns of every step plus ``<column>_<variation>`` for every step's variations."""
        out = self._run(events, is_mc, 0, None)
        for i, step in enumerate(self.steps):
            if step.mc_only and not is_mc:
                continue
            for var in step.variations:
                varied = self._run(events, is_mc, i, var)
                for k, v in varied.items():
                    if k in step.changes:
                        out[f"{k}_{var}"] = v
                    elif not np.array_equal(v, out[k], equal_nan=True):
                        out[f"{k}_{step.name}_{var}"] = v
        return out

    @property
    def inputs(self) -> frozenset[str]:
        """Input columns every step reads, minus those produced by earlier steps."""
        produced: set[str] = set()
        needed: set[str] = set()
        for step in self.steps:
            needed |= set(step.inputs) - produced
            produced |= set(step.changes)
        return frozenset(needed)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorrectionStep(_Strict):
    """Config of a correctionlib weight step."""

    name: str
    type: Literal["correction"] = "correction"
    file: str
    correction: str
    inputs: dict[str, str]
    output: str
    variations: list[str] | None = None
    mc_only: bool = True


class ApplyConfig(_Strict):
    """Config of ``calibflow apply``: the tree to read and the ordered calibrator steps."""

    tree: str = "DecayTree"
    aliases: dict[str, str] = Field(default_factory=dict)
    calibrators: list[CorrectionStep] = Field(min_length=1)


def load_apply_config(path: str | os.PathLike[str]) -> tuple[ApplyConfig, CalibratorSequence]:
    """Read an apply config and build its sequence; ConfigError names the key to fix."""
    import correctionlib
    from pydantic import ValidationError

    data = load_yaml(path)  # duplicate keys, alias bombs, non-UTF-8 text: ConfigError
    try:
        cfg = ApplyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in exc.errors())) from None
    base = os.path.dirname(os.path.abspath(path))
    steps: list[Calibrator] = []
    for i, s in enumerate(cfg.calibrators):
        where = f"calibrators[{i}]"
        file = s.file if os.path.isabs(s.file) else os.path.join(base, s.file)
        if not os.path.exists(file):
            raise ConfigError(f"{path}: {where}.file: no such file {file!r}")
        cset = correctionlib.CorrectionSet.from_file(file)
        names = list(cset.keys())
        if s.correction not in names:
            raise ConfigError(f"{path}: {where}.correction: {s.correction!r} not in {file} (has {', '.join(names)})")
        corr = cset[s.correction]
        real = [inp.name for inp in corr.inputs if inp.type != "string"]
        missing = [r for r in real if r not in s.inputs]
        if missing:
            raise ConfigError(f"{path}: {where}.inputs: no expression for correction input(s) {missing}")
        exprs = {k: compile_expression(v, cfg.aliases, where=f"{where}.inputs.{k}") for k, v in s.inputs.items()}
        syst = next((inp.name for inp in corr.inputs if inp.type == "string"), None)
        variations = tuple(s.variations) if s.variations is not None else tuple(_categories(file, s.correction))
        steps.append(CorrectionWeight(name=s.name, changes=(s.output,), variations=variations, mc_only=s.mc_only,
                                      correction=corr, input_exprs=exprs, syst_input=syst))
    return cfg, CalibratorSequence(steps)


def _categories(file: str, name: str) -> list[str]:
    """Non-nominal keys of the top-level category node of correction ``name`` in ``file``."""
    import correctionlib.schemav2 as cs

    with open(file) as f:
        cset = cs.CorrectionSet.model_validate_json(f.read())
    corr = next(c for c in cset.corrections if c.name == name)
    if isinstance(corr.data, cs.Category):
        return [str(item.key) for item in corr.data.content if item.key != "nominal"]
    return []


def apply_to_file(
    src: str, dst: str, cfg: ApplyConfig, sequence: CalibratorSequence, is_mc: bool = True
) -> list[str]:
    """Copy the tree of ROOT file ``src`` to ``dst`` with the sequence's new columns; return their names.

    HDF5 inputs (calibflow prepared tuples, ``.h5``) are supported too: the columns are added to a copy.
    """
    from calibflow.io.root import write_ttree

    if src.endswith((".h5", ".hdf5")):
        import shutil

        import h5py

        from calibflow.io.store import COLUMNS, COMPRESSION, atomic_path, read_columns

        events = read_columns(src)
        new = sequence.apply(events, is_mc)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
            with h5py.File(tmp, "a") as h5:
                for k, v in new.items():
                    if k in h5[COLUMNS]:
                        del h5[COLUMNS][k]
                    h5[COLUMNS].create_dataset(k, data=v, **COMPRESSION)
        return sorted(new)
    import uproot

    try:
        tree = uproot.open(src)[cfg.tree]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{src}: cannot read tree {cfg.tree!r} ({exc})") from None
    except KeyError:
        raise ConfigError(f"{src}: no tree {cfg.tree!r}") from None
    missing = sorted(b for b in sequence.inputs if b not in tree)
    if missing:
        raise ConfigError(f"{src}: tree {cfg.tree!r} has no branch(es) {', '.join(missing)}")
    events = tree.arrays(library="np")
    new = sequence.apply(events, is_mc)
    write_ttree(dst, {**events, **new}, cfg.tree)
    return sorted(new)
