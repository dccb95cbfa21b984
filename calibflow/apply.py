"""Apply corrections back to simulation: an ordered calibrator sequence adding weight columns.

A calibrator declares the columns it changes, its variations and whether it applies to simulation only
(PocketCoffea style). The sequence runs the steps in order — each sees the columns written by the
steps before it — and checks that no step writes a column it did not declare. Every variation of a
step reruns the sequence from that step on, with that step varied and the others nominal: the step's own
columns are stored as ``<column>_<variation>``, and later steps' columns that change because of it as
``<column>_<step>_<variation>``.

The standard calibrator, :class:`CorrectionWeight`, evaluates a correctionlib correction (e.g. a
calibflow ``corrections.json``) with inputs computed by expressions and writes a weight column.
:class:`PidResample` and :class:`PidTransform` (issue 19) write a data-like PID column from kernel density
templates of calibration data (:mod:`calibflow.kde`): ``<variable>_resampled`` drawn per candidate, or
``<variable>_transformed`` mapped from the simulated value; the templates' variants (``bandwidthUp``, ...)
are the variations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from calibflow.config import ConfigError, format_loc, load_yaml
from calibflow.expr import Expression, compile_expression

if TYPE_CHECKING:
    from calibflow.kde.sample import Branch
    from calibflow.kde.template import Template

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
class PidCalibrator(Calibrator):
    """Base of the PID calibrators: data templates per variant (``nominal`` and the variations) and the
    expressions of the templates' kinematic axes on the simulation, in the templates' order."""

    data: Mapping[str, Template] = field(default_factory=dict)
    kin_exprs: tuple[Expression, ...] = ()

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset().union(*(e.branches for e in self.kin_exprs))

    def kinematics(self, events: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N, K) kinematics of the candidates."""
        n = len(next(iter(events.values())))
        return np.column_stack([np.broadcast_to(np.asarray(e.evaluate(events), dtype=float), (n,))
                                for e in self.kin_exprs]) if self.kin_exprs else np.zeros((n, 0))


def _variant(templates: Mapping[str, Template], variation: str | None) -> Template:
    """The template of ``variation`` (nominal: None), or the nominal one where the file has no such variant."""
    return templates.get(variation or "nominal", templates["nominal"])


@dataclass
class PidResample(PidCalibrator):
    """``<variable>_resampled``: a PID value drawn from the data template at the candidate's kinematics.

    The uniform number of a candidate comes from its identity columns and ``key`` (seed and column name),
    so it is the same for every variation: a variation's shift is the template's alone."""

    identity_exprs: tuple[Expression | Branch, ...] = ()  # plain names as branches: see identity_expression
    key: int = 0

    @property
    def inputs(self) -> frozenset[str]:
        return super().inputs.union(*(e.branches for e in self.identity_exprs))

    def calibrate(self, events: Mapping[str, np.ndarray], variation: str | None) -> Columns:
        from calibflow.kde.sample import resample, uniforms

        n = len(next(iter(events.values())))
        ids = [np.broadcast_to(np.asarray(e.evaluate(events)), (n,)) for e in self.identity_exprs]
        u = uniforms(ids, np.uint64(self.key))
        return {self.changes[0]: resample(_variant(self.data, variation), self.kinematics(events), u)}


@dataclass
class PidTransform(PidCalibrator):
    """``<variable>_transformed``: the simulated PID value through the simulation CDF, then the inverse data CDF
    (both at the candidate's kinematics). A variation uses the variant of both files (nominal where the
    simulation file lacks it)."""

    simulation: Mapping[str, Template] = field(default_factory=dict)
    pid_expr: Expression | None = None

    @property
    def inputs(self) -> frozenset[str]:
        return super().inputs | (self.pid_expr.branches if self.pid_expr else frozenset())

    def calibrate(self, events: Mapping[str, np.ndarray], variation: str | None) -> Columns:
        from calibflow.kde.sample import transform

        assert self.pid_expr is not None
        n = len(next(iter(events.values())))
        pid = np.broadcast_to(np.asarray(self.pid_expr.evaluate(events), dtype=float), (n,))
        out = transform(_variant(self.simulation, variation), _variant(self.data, variation), pid,
                        self.kinematics(events))
        return {self.changes[0]: out}


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


class PidStep(_Strict):
    """Common keys of the PID steps: the data template file (``calibflow.kde.template``), the expressions of
    its kinematic axes on the simulation, the output column (default ``<PID axis>_resampled`` or
    ``_transformed``) and the variations (default: every variant in the file but nominal)."""

    name: str
    templates: str
    kinematics: dict[str, str] = Field(default_factory=dict)
    output: str | None = None
    variations: list[str] | None = None
    mc_only: bool = True


class PidResampleStep(PidStep):
    """Config of a ``pid_resample`` step: identity expressions (run, event, candidate index) and a seed.

    A plain name is read as a branch as it is, dunder names included (Belle II's ``__event__``)."""

    type: Literal["pid_resample"]
    identity: list[str] = Field(min_length=1)
    seed: int = 0


class PidTransformStep(PidStep):
    """Config of a ``pid_transform`` step: the simulation template file and the simulated PID expression."""

    type: Literal["pid_transform"]
    simulation_templates: str
    pid: str


def _step_type(value: Any) -> str:
    """The ``type`` of a step (``correction`` when left out)."""
    return (value.get("type") if isinstance(value, dict) else getattr(value, "type", None)) or "correction"


Step = Annotated[
    Annotated[CorrectionStep, Tag("correction")]
    | Annotated[PidResampleStep, Tag("pid_resample")]
    | Annotated[PidTransformStep, Tag("pid_transform")],
    Discriminator(_step_type),
]


class ApplyConfig(_Strict):
    """Config of ``calibflow apply``: the tree to read and the ordered calibrator steps."""

    tree: str = "DecayTree"
    aliases: dict[str, str] = Field(default_factory=dict)
    calibrators: list[Step] = Field(min_length=1)


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
        if isinstance(s, PidStep):
            steps.append(_pid_calibrator(s, cfg, str(path), where, base))
            continue
        file = _existing(s.file, base, path, f"{where}.file")
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


def _existing(file: str, base: str, path: str | os.PathLike[str], where: str) -> str:
    """``file`` relative to the config's folder ``base``; ConfigError if missing."""
    full = file if os.path.isabs(file) else os.path.join(base, file)
    if not os.path.exists(full):
        raise ConfigError(f"{path}: {where}: no such file {full!r}")
    return full


def _templates(file: str, path: str, where: str, kinematics: Mapping[str, str]) -> dict[str, Template]:
    """The templates of ``file``, checked to have the axes ``kinematics`` names (in any order)."""
    from calibflow.kde.template import read_templates

    try:
        templates, _ = read_templates(file)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: {where}: cannot read KDE templates {file!r} ({exc})") from None
    axes = [a.name for a in templates["nominal"].kinematics]
    if sorted(kinematics) != sorted(axes):
        raise ConfigError(f"{path}: {where}: kinematics {sorted(kinematics)} differ from the template's axes {axes}")
    return templates


def _pid_calibrator(s: PidStep, cfg: ApplyConfig, path: str, where: str, base: str) -> Calibrator:
    """The calibrator of a ``pid_resample`` / ``pid_transform`` step."""
    from calibflow.kde.sample import identity_expression, key_of

    data = _templates(_existing(s.templates, base, path, f"{where}.templates"), path, f"{where}.templates",
                      s.kinematics)
    kin = tuple(compile_expression(s.kinematics[a.name], cfg.aliases, where=f"{where}.kinematics.{a.name}")
                for a in data["nominal"].kinematics)
    variations = tuple(s.variations) if s.variations is not None else tuple(v for v in data if v != "nominal")
    unknown = [v for v in variations if v not in data]
    if unknown:
        raise ConfigError(f"{path}: {where}.variations: {unknown} not in {s.templates} (has {', '.join(data)})")
    suffix = "resampled" if isinstance(s, PidResampleStep) else "transformed"
    output = s.output or f"{data['nominal'].pid.name}_{suffix}"
    common = {"name": s.name, "changes": (output,), "variations": variations, "mc_only": s.mc_only, "data": data,
              "kin_exprs": kin}
    if isinstance(s, PidResampleStep):
        ids = tuple(identity_expression(v, cfg.aliases, f"{where}.identity[{j}]") for j, v in enumerate(s.identity))
        return PidResample(**common, identity_exprs=ids, key=int(key_of(s.seed, output)))
    assert isinstance(s, PidTransformStep)
    sim = _templates(_existing(s.simulation_templates, base, path, f"{where}.simulation_templates"), path,
                     f"{where}.simulation_templates", s.kinematics)
    if [a.name for a in sim["nominal"].kinematics] != [a.name for a in data["nominal"].kinematics]:
        raise ConfigError(f"{path}: {where}.simulation_templates: kinematic axes in another order than the data's")
    return PidTransform(**common, simulation=sim, pid_expr=compile_expression(s.pid, cfg.aliases, where=f"{where}.pid"))


def _categories(file: str, name: str) -> list[str]:
    """Non-nominal keys of the top-level category node of correction ``name`` in ``file``; for calibflow's per-bin
    form (a ``Transform`` around the category: :mod:`calibflow.export.correctionlib`) the merged keys, not the
    per-bin ones (those are applied when listed in ``variations``)."""
    import correctionlib.schemav2 as cs

    with open(file) as f:
        cset = cs.CorrectionSet.model_validate_json(f.read())
    corr = next(c for c in cset.corrections if c.name == name)
    data = corr.data.content if isinstance(corr.data, cs.Transform) else corr.data
    if isinstance(data, cs.Category):
        return [str(item.key) for item in data.content if item.key != "nominal"]
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
