"""Calibration configuration: pydantic models of one YAML recipe and ``load_config`` with precise errors.

Every error names the key path the user must fix, e.g.
``binning.variables[1].edges: must be strictly increasing``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import glob
import itertools
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)


class ConfigError(ValueError):
    """A calibration config is wrong; ``str()`` names the file, the key path and what to fix."""


def located(exc: Exception, path: str | os.PathLike[str]) -> ConfigError:
    """``exc`` (a ConfigError, or an ExprError naming its key) as a ConfigError whose message starts with the
    config's ``path`` exactly once."""
    text, prefix = str(exc), f"{os.fspath(path)}:"
    return ConfigError(text if text.startswith(prefix) else f"{prefix} {text}")


def suggestion(name: str, choices: Iterable[str], listing: str | None = "allowed") -> str:
    """`` (did you mean 'x'?)`` with the choice closest to ``name`` (one differing only in case first), else
    `` (<listing>: a, b, c)``, or nothing when ``listing`` is None."""
    choices = list(dict.fromkeys(choices))
    close = [c for c in choices if c.lower() == name.lower() and c != name] or difflib.get_close_matches(
        name, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" ({listing}: {', '.join(choices) or 'none'})" if listing is not None else ""


@functools.lru_cache(maxsize=256)
def _numeric(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` holds numbers (int or float, alone or in a union, list, tuple or
    mapping) and never a boolean."""
    parts: list[Any] = [annotation]
    seen: set[Any] = set()
    while parts:
        part = parts.pop()
        seen.add(part)
        parts += [a for a in getattr(part, "__args__", ()) if a not in seen]
    return bool(seen & {int, float}) and bool not in seen and Any not in seen


def _holds_bool(value: Any) -> bool:
    """Whether ``value`` is a boolean or a list, tuple or mapping holding one."""
    if isinstance(value, bool):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return any(_holds_bool(v) for v in items)


class _Strict(BaseModel):
    """Base model: unknown keys are errors, values are not coerced silently (``true`` is not the number 1),
    numbers are finite (no NaN, no ±inf: ``.nan``, ``.inf`` and ``1e400`` are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _numeric(field.annotation) and _holds_bool(value):
            raise ValueError("true and false are not numbers")
        return value


class _KeepsKeys(_Strict):
    """A section with fields added after the first results: each is left out of the dump (and so of every content
    key) while it holds its default, so that configs written before it keep their keys. :attr:`NEW_DEFAULTS`
    maps such a field to its default, or to a test of whether a value counts as the default."""

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _without_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name, default in self.NEW_DEFAULTS.items():
            value = getattr(self, name)
            if default(value) if callable(default) else value == default:
                data.pop(name, None)
        return data


MAX_NAME = 64
"""Characters of a name (of the calibration, a sample, a binning variable, a systematic source, a working
point, a method, a product), at most: names become folder and file names."""
SAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""Sample names (folder and file names: no ``/``, no leading dot)."""
MAX_TOY_FILES = 10_000
"""Toy input files per sample, at most (one task each)."""
MAX_TOY_CANDIDATES_PER_FILE = 5_000_000
"""Toy candidates per file, at most: a file is generated in memory (the J/psi toy: ~220 MB per million)."""
MAX_BINS = 100_000
"""Fine bins of a binning (the product of the variables' numbers of bins), at most: a scheme holds ~0.4 kB
per bin and every bin is a result file."""
MAX_HISTOGRAM_CELLS = 10_000_000
"""Fine bins times mass bins, at most: the per-bin pass/fail histograms of a sample take 32 bytes a cell
(sums of weights and of squared weights, pass and fail), 320 MB at the limit."""


def _finite(value: Any, where: str) -> None:
    """ValueError naming ``where`` when ``value`` holds a NaN or an infinite number at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}")


class ToySample(_Strict):
    """How many toy candidates to generate for one sample, split into ``files`` ROOT files."""

    candidates: int = Field(gt=0)
    files: int = Field(default=1, gt=0, le=MAX_TOY_FILES)

    @model_validator(mode="after")
    def _fits_in_memory(self) -> ToySample:
        if self.candidates < self.files:
            raise ValueError(f"{self.candidates} candidates cannot fill {self.files} files (one at least "
                             "each)")
        if self.candidates > self.files * MAX_TOY_CANDIDATES_PER_FILE:
            raise ValueError(f"{self.candidates:,} candidates in {self.files} file(s) are more than "
                             f"{MAX_TOY_CANDIDATES_PER_FILE:,} per file (generated in memory); give more "
                             "files")
        return self


class ToyConfig(_Strict):
    """Generate the input files instead of reading them (demo and closure tests)."""

    generator: str = "jpsi_tag_and_probe"
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=1, ge=0)
    samples: dict[str, ToySample]

    @field_validator("options")
    @classmethod
    def _finite_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            _finite(value, str(key))
        return v


class Sample(_KeepsKeys):
    """One input sample: real data or simulation, and how its bins are measured.

    ``method``: ``fit`` (simultaneous pass/fail mass fit), ``count`` (cut-and-count with a binomial
    ``interval``), ``sweighted`` (counts of the per-candidate ``weight``, e.g. an sWeight column, with the
    PIDCalib2 variance), ``sweights`` (per-bin sPlot from an unbinned mass fit, then as ``sweighted``) or
    ``yield`` (a signal yield from a mass fit of all the bin's candidates: no pass/fail, no efficiency) or
    ``sideband`` (sideband-subtracted pass and fail yields in the windows of ``fit.sideband``) or ``tistos``
    (TIS/TOS trigger efficiencies from the counts of ``fit.tistos``; no ``pass`` needed).
    """

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"event_id": None}

    role: Literal["data", "mc"]
    files: list[str] = Field(default_factory=list)
    tree: str = "DecayTree"
    weight: str | None = None
    cut: str | None = None
    method: Literal["fit", "count", "sweighted", "sweights", "yield", "sideband", "tistos"] = "fit"
    interval: Literal["clopper_pearson", "wilson", "jeffreys"] = "clopper_pearson"
    lumi_mask: str | None = None
    """CMS certification ("golden") JSON, relative to the config file; keeps certified ``run`` and
    ``luminosityBlock`` only (first cut-flow stage, ``lumi``)."""
    aliases: dict[str, str] = Field(default_factory=dict)
    """Aliases of this sample only, merged over the global ``aliases`` (e.g. ``p: K_p`` for a kaon
    sample and ``p: pi_p`` for a pion sample read from the same ntuple)."""
    event_id: str | None = None
    """Expression identifying a candidate's event (e.g. ``eventNumber``, or ``runNumber * 2**32 + eventNumber``),
    prepared as a column: methods ``count``, ``sweighted`` and ``fit`` (through its signal weights) then get the
    statistical correlation between bins by a Poisson bootstrap over events (docs/tables.md, "Covariance"). Left out
    of the dump while unset."""

    @model_validator(mode="after")
    def _event_id_counts(self) -> Sample:
        if self.event_id is not None and self.method not in ("count", "sweighted", "fit"):
            raise ValueError(f"event_id: only methods count, sweighted and fit use it (the bootstrap over events), "
                             f"not method {self.method}; remove it (event_id: null in a variant with that method)")
        return self


class Selection(_Strict):
    """Offline selection, as expressions over branches and aliases.

    ``event`` is applied per event before tag-and-probe pairing (with ``pairing``; otherwise per row,
    first); ``tag``, ``probe`` and ``pair`` per candidate (per pair with ``pairing``), in this order.
    """

    tag: str | None = None
    probe: str | None = None
    pair: str | None = None
    event: str | None = None


class MatchConfig(_Strict):
    """Flag the objects of the pairing collection matched in ΔR to selected objects of another collection.

    The flag is the per-object column ``as`` (``<collection>_<field>``), true when the nearest object of
    ``objects`` passing ``cut`` lies within ``max_dr`` (η, φ in rad; ``<objects>_eta``/``_phi``).
    """

    objects: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    cut: str | None = None
    max_dr: float = Field(gt=0)
    as_: str = Field(alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PairingConfig(_Strict):
    """Tag-and-probe pairing of a NanoAOD-style jagged collection (branches ``<collection>_<field>``).

    ``tag`` and ``probe`` are per-object expressions; every ordered (tag, probe) pair of different
    objects of an event becomes one row with the columns ``tag_<field>``, ``probe_<field>``,
    ``pair_mass`` (GeV), ``pair_charge`` (product of the charges) and ``pair_dr``, plus the event-level
    branches under their own names. ``mass`` is the object mass in GeV, or the name of a mass field.
    """

    collection: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    tag: str
    probe: str
    mass: float | str = 0.0
    charge: str = "charge"
    match: list[MatchConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _match_names(self) -> PairingConfig:
        prefix = f"{self.collection}_"
        names = [m.as_ for m in self.match]
        for i, name in enumerate(names):
            if not name.startswith(prefix) or name == prefix:
                raise ValueError(f"match[{i}].as: {name!r} must name a field of {self.collection}, "
                                 f"e.g. {prefix}trigMatch")
            if names.count(name) > 1:
                raise ValueError(f"match[{i}].as: {name!r} is given twice")
        return self


class HitMatchConfig(_Strict):
    """Shared-hit-fraction matching of a flat ntuple's probe track to a list of target tracks (LHCb
    tracking efficiency: VeloMuon / Downstream / MuonUT probe versus the event's long tracks).

    Per row, ``probe_hits`` is a jagged branch of the probe's hit IDs (e.g. LHCbIDs), ``target_hits``
    the hit IDs of all target tracks concatenated and ``target_counts`` the number of hits of each target
    track (jagged; without it ``target_hits`` must be doubly jagged, one list per track). The new column
    ``as`` is the largest fraction |H_probe ∩ H_target| / |H_probe| over the targets (hit sets, 0.0 when no
    hit is shared), so that e.g. ``pass: probe_matchFraction >= 0.7``.
    """

    probe_hits: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    target_hits: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    target_counts: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    as_: str = Field(alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_interval(lo: float, hi: float, problem: str) -> None:
    """ValueError ``problem`` unless lo < hi, or when the width overflows (``[-1e308, 1e308]``)."""
    if not lo < hi:
        raise ValueError(problem)
    if not math.isfinite(hi - lo):
        raise ValueError(f"[{lo:g}, {hi:g}] is wider than the largest finite number")


PRESENTATION = {"presentation": True}
"""``json_schema_extra`` of fields that change only how results are shown (labels, units, styles): they are
left out of every content key except the exports' (:func:`calibflow.hashing.content_key`)."""


class MassConfig(_Strict):
    """Discriminating variable of the fits: expression, fit range and number of histogram bins;
    ``label`` (LaTeX allowed) and ``unit`` name it on figures and tables."""

    variable: str
    range: tuple[float, float]
    bins: int = Field(default=100, ge=1, le=MAX_HISTOGRAM_CELLS)
    label: str = Field(default="mass", json_schema_extra=PRESENTATION)
    unit: str = Field(default="", json_schema_extra=PRESENTATION)

    @property
    def axis_label(self) -> str:
        """``label [unit]`` (or the label alone without a unit)."""
        return axis_label(self.label, self.unit)

    @field_validator("range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        _check_interval(*v, "must be [low, high] with low < high")
        return v


COUNT_ONLY_MASS = MassConfig(variable="0", range=(-1.0, 1.0), bins=1)
"""Stand-in mass section of calibrations without a mass fit (methods count, sweighted): every candidate in one
bin."""
MASS_METHODS = ("fit", "sweights", "yield")
"""Methods that fit the mass (they need the ``mass`` section)."""
SIDEBAND = "sideband"
"""The method subtracting sidebands of the mass histogram (needs ``mass`` and ``fit.sideband``, fits nothing)."""
TISTOS = "tistos"
"""The method counting TIS and TOS candidates (needs ``fit.tistos``; weighted by the sample's ``weight``)."""
NO_PASS_METHODS = ("yield", TISTOS)
"""Methods that need no ``pass`` expression."""
EVERY_CANDIDATE_PASSES = "True"
"""Stand-in ``pass`` of yield-only calibrations (every candidate in the pass category)."""


KNOWN_LABELS: dict[str, str] = {
    "p": "$p$", "pt": "$p_\\mathrm{T}$", "PT": "$p_\\mathrm{T}$", "eta": "$\\eta$", "abseta": "$|\\eta|$",
    "abs_eta": "$|\\eta|$", "phi": "$\\phi$", "costheta": "$\\cos\\theta$", "cos_theta": "$\\cos\\theta$",
    "ntracks": "$N_\\mathrm{tracks}$", "nTracks": "$N_\\mathrm{tracks}$", "npv": "$N_\\mathrm{PV}$",
    "nPV": "$N_\\mathrm{PV}$",
}
"""Default labels of common binning-variable names (any other name is its own label). Units have no default:
momenta are in GeV in one experiment's tuples and in MeV in another's."""


def axis_label(label: str, unit: str) -> str:
    """``label [unit]``, or ``label`` without a unit."""
    return f"{label} [{unit}]" if unit else label


class BinVariable(_Strict):
    """One binning variable: name (the column in tables), optional expression, and its fine binning.

    Give ``edges``, or a ``range`` with ``uniform``, ``log`` or ``equal_population`` (number of bins;
    equal-population edges come from the data). The fine bins are the final ones unless
    ``binning.optimise`` merges them. ``label`` (LaTeX allowed, e.g. ``$p_\\mathrm{T}$``) and ``unit``
    name it on figures, tables and ROOT axes; the label defaults from :data:`KNOWN_LABELS` or the name, the unit to none.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=MAX_NAME)
    label: str | None = Field(default=None, json_schema_extra=PRESENTATION)
    unit: str | None = Field(default=None, json_schema_extra=PRESENTATION)
    expression: str | None = None
    edges: list[float] | None = None
    range: tuple[float, float] | None = None
    uniform: int | None = Field(default=None, ge=1, le=MAX_BINS)
    log: int | None = Field(default=None, ge=1, le=MAX_BINS)
    equal_population: int | None = Field(default=None, ge=1, le=MAX_BINS)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("needs at least two edges")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("must be strictly increasing")
        _check_interval(v[0], v[-1], "must be strictly increasing")
        return v

    @model_validator(mode="after")
    def _one_binning(self) -> BinVariable:
        rules = [k for k in ("uniform", "log", "equal_population") if getattr(self, k) is not None]
        if self.edges is not None:
            if rules or self.range is not None:
                raise ValueError(f"{self.name}: give either edges or a range with {' / '.join(rules or ['a rule'])}")
            return self
        if len(rules) != 1 or self.range is None:
            raise ValueError(f"{self.name}: give edges, or a range and one of uniform, log, equal_population")
        lo, hi = self.range
        _check_interval(lo, hi, f"{self.name}: range must be [low, high] with low < high")
        if self.log is not None and lo <= 0:
            raise ValueError(f"{self.name}: log binning needs a positive range")
        return self

    @property
    def expr(self) -> str:
        """Expression computing this variable (defaults to its name)."""
        return self.expression or self.name

    @property
    def display(self) -> str:
        """The label shown for this variable: ``label``, else the known label of its name, else the name."""
        return self.label if self.label is not None else KNOWN_LABELS.get(self.name, self.name)

    @property
    def display_unit(self) -> str:
        """The unit shown for this variable (empty: none)."""
        return self.unit or ""

    @property
    def axis_label(self) -> str:
        """``label [unit]`` for axes and column headers."""
        return axis_label(self.display, self.display_unit)

    @property
    def limits(self) -> tuple[float, float]:
        """Lowest and highest edge."""
        if self.edges is not None:
            return self.edges[0], self.edges[-1]
        assert self.range is not None
        return self.range

    @property
    def data_driven(self) -> bool:
        """Whether the edges come from the data (equal population)."""
        return self.equal_population is not None

    @property
    def fine_bins(self) -> int:
        """Number of fine bins (equal population: at most)."""
        if self.edges is not None:
            return len(self.edges) - 1
        return next(n for n in (self.uniform, self.log, self.equal_population) if n is not None)


class OptimiseConfig(_Strict):
    """Merge neighbouring fine bins (nested-rectangular) until every bin has ``min_count`` candidates in
    every fitted category (pass and fail of every sample and working point); effective counts
    (Σw)²/Σw² for weighted samples. ``efficiency: true`` places the merged edges where the efficiency
    changes most; ``max_intervals`` caps the bins per variable and node."""

    min_count: float = Field(default=100.0, gt=0)
    use_effective: bool = True
    max_intervals: dict[str, int] = Field(default_factory=dict)
    efficiency: bool = False


class BinningConfig(_Strict):
    """Binning of the efficiency tables: product of the variables' fine binnings, optionally merged."""

    variables: list[BinVariable] = Field(min_length=1)
    optimise: OptimiseConfig | None = None

    @field_validator("variables")
    @classmethod
    def _unique(cls, v: list[BinVariable]) -> list[BinVariable]:
        names = [b.name for b in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate variable names {sorted(dup)}")
        return v

    @field_validator("variables")
    @classmethod
    def _fits_in_memory(cls, v: list[BinVariable]) -> list[BinVariable]:
        bins = math.prod(b.fine_bins for b in v)
        if bins > MAX_BINS:
            sizes = " x ".join(str(b.fine_bins) for b in v)
            raise ValueError(f"{sizes} = {bins:,} fine bins; at most {MAX_BINS:,} are allowed")
        return v

    @property
    def data_driven(self) -> bool:
        """Whether making the binning reads the prepared data."""
        return self.optimise is not None or any(v.data_driven for v in self.variables)

    @property
    def fine_bins(self) -> int:
        """Number of fine bins: the product of the variables' (the bins of the tables, unless merged)."""
        return math.prod(v.fine_bins for v in self.variables)


class ParamSpec(_Strict):
    """Starting value and optional limits of one fit parameter."""

    value: float | None = None
    limits: tuple[float, float] | None = None
    fixed: bool = False

    @model_validator(mode="after")
    def _within_limits(self) -> ParamSpec:
        if self.limits is not None:
            lo, hi = self.limits
            _check_interval(lo, hi, "limits must be [low, high] with low < high")
            if self.value is not None and not lo <= self.value <= hi:
                raise ValueError(f"value {self.value:g} is outside the limits [{lo:g}, {hi:g}]")
        return self


BinRanges = dict[str, tuple[float, float]]


class FitOverride(_Strict):
    """``fit.parameters`` for some bins only (the hard bins tuned by hand): ``bins`` lists bin indices (as in
    ``calibflow fit-bin --bin N``, the gallery and the tables) and/or ranges of binning variables
    (``{pt: [20, 30], eta: [-2.5, -1.5]}``: the bins lying inside every range given); ``parameters`` as in
    ``fit.parameters``, merged over them key by key (given keys win)."""

    bins: list[int | BinRanges] = Field(min_length=1)
    parameters: dict[str, ParamSpec] = Field(min_length=1)

    @field_validator("bins")
    @classmethod
    def _ranges(cls, v: list[int | BinRanges]) -> list[int | BinRanges]:
        for item in v:
            if isinstance(item, int) and item < 0:
                raise ValueError(f"bin index {item} is negative")
            if isinstance(item, dict):
                if not item:
                    raise ValueError("an empty range selects every bin; list the variables' ranges")
                for name, (lo, hi) in item.items():
                    _check_interval(lo, hi, f"{name}: range must be [low, high] with low < high")
        return v

    def selects(self, index: int, bounds: Sequence[tuple[str, float, float]]) -> bool:
        """Whether the bin ``index`` with ``bounds`` (variable, low, high) is one of :attr:`bins`; ValueError for
        a range of a variable the binning does not have."""
        edges = {v: (lo, hi) for v, lo, hi in bounds}
        for item in self.bins:
            if isinstance(item, int):
                if item == index:
                    return True
                continue
            unknown = sorted(set(item) - set(edges))
            if unknown:
                raise ValueError(f"fit.overrides: {unknown[0]!r} is not a binning variable "
                                 f"({', '.join(edges) or 'none'})")
            if all(_inside(edges[n], r) for n, r in item.items()):
                return True
        return False


def _inside(bin_range: tuple[float, float], wanted: tuple[float, float]) -> bool:
    """Whether [lo, hi) of a bin lies in ``wanted`` (edges equal to 1e-9 relative count as inside)."""
    tol = 1e-9 * max(1.0, abs(wanted[0]), abs(wanted[1]))
    return bin_range[0] >= wanted[0] - tol and bin_range[1] <= wanted[1] + tol


class GofConfig(_Strict):
    """Goodness-of-fit thresholds: a bin whose χ² p-value (binned) or KS p-value of a category (unbinned) is
    below ``min_pvalue`` is flagged ``low_gof_pvalue`` (docs/fits.md, "Goodness of fit")."""

    min_pvalue: float = Field(default=0.0, ge=0.0, lt=1.0)


class SidebandConfig(_Strict):
    """Windows of method ``sideband`` (mass units): the ``signal`` window and one or more ``sidebands``, each
    ``[low, high]`` on edges of the mass histogram (``mass.range`` in ``mass.bins``); ``background``: ``flat``
    (α = window width / sideband width) or ``fitted`` (α from an exponential fitted to the sidebands), see
    docs/fits.md, "Sideband subtraction"."""

    signal: tuple[float, float]
    sidebands: list[tuple[float, float]] = Field(min_length=1)
    background: Literal["flat", "fitted"] = "flat"

    @model_validator(mode="after")
    def _ordered(self) -> SidebandConfig:
        windows = [("signal", self.signal), *((f"sidebands[{i}]", w) for i, w in enumerate(self.sidebands))]
        for where, (lo, hi) in windows:
            if not lo < hi:
                raise ValueError(f"{where}: [{lo:g}, {hi:g}] is not an interval (low < high)")
        spans = sorted(w for _, w in windows)
        for (_, hi), (lo, _) in itertools.pairwise(spans):
            if lo < hi:
                raise ValueError("signal window and sidebands overlap")
        return self

    def check_edges(self, mass: MassConfig) -> None:
        """ValueError naming the first window edge outside ``mass.range`` or between two mass-histogram edges."""
        lo, hi = mass.range
        width = (hi - lo) / mass.bins
        for where, window in [("signal", self.signal), *((f"sidebands[{i}]", w) for i, w in enumerate(self.sidebands))]:
            for x in window:
                k = (x - lo) / width
                if not -1e-9 <= k <= mass.bins + 1e-9 or abs(k - round(k)) > 1e-6:
                    near = lo + width * min(max(math.floor(k), 0), mass.bins)
                    raise ValueError(f"fit.sideband.{where}: edge {x:g} is not an edge of the mass histogram "
                                     f"({mass.bins} bins in [{lo:g}, {hi:g}]: nearest {near:g} or {near + width:g})")


class TisTosConfig(_Strict):
    """Method ``tistos`` (LHCb-PUB-2014-039): per-candidate expressions of ``tis`` (triggered independently of
    the signal), ``tos`` (triggered on the signal) and the ``trigger`` decision whose efficiency is wanted (None:
    TIS or TOS); ``efficiency``: the one the tables report, ``tos`` (N_TIS&TOS/N_TIS), ``tis`` (N_TIS&TOS/N_TOS)
    or ``trigger`` (N_Trig·N_TIS&TOS/(N_TIS·N_TOS)); docs/fits.md, "TIS/TOS"."""

    tis: str
    tos: str
    trigger: str | None = None
    efficiency: Literal["tos", "tis", "trigger"] = "tos"


class TemplateConfig(_Strict):
    """``fit.signal: template``: the signal of each category is the ``from`` sample's (truth-matched simulation,
    its own ``cut``) mass histogram of that category and bin, convolved with a Gaussian (``shift_pass``,
    ``smear_pass``, ``shift_fail``, ``smear_fail``); ``smooth`` first spreads templates by a Gaussian of that
    width (mass units), or ``auto`` (Silverman's bandwidth of each template), 0: not (docs/fits.md)."""

    from_: str = Field(alias="from")
    smooth: float | Literal["auto"] = Field(default=0.0)

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    @field_validator("smooth")
    @classmethod
    def _non_negative(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v < 0:
            raise ValueError(f"smooth: {v:g} is negative (0: no smoothing, or a width in mass units, or auto)")
        return v


class ConstrainConfig(_KeepsKeys):
    """``fit.constrain``: fit the ``from`` sample (simulation) per bin first with the same fit section (without
    ``constrain``; with ``background: false`` its signal alone, the background yields fixed to 0, as for
    truth-matched simulation), then constrain ``parameters`` in every other fit to its values: Gaussian terms of
    width ``scale`` × its errors, or fixed to its values with ``fix`` (docs/fits.md)."""

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"background": True}

    from_: str = Field(alias="from")
    parameters: list[str] = Field(min_length=1)
    scale: float = Field(default=1.0, gt=0)
    fix: bool = False
    background: bool = True  # False: the simulation is fitted with its signal alone (egm_tnp_analysis's --mcSig)

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


class FitConfig(_KeepsKeys):
    """Per-bin fit model: signal and background shapes by name, parameter starts and limits.

    ``fail_gauss`` adds a Gaussian to the fail signal shape only (egm_tnp_analysis's ``--addGaus``),
    ``overrides`` per-bin ``parameters`` (:class:`FitOverride`), ``gof`` the goodness-of-fit thresholds,
    ``template`` the simulation of ``signal: template`` (:class:`TemplateConfig`), ``constrain`` constraints from
    a fit of the simulation (:class:`ConstrainConfig`). These are left out of the dump (and so of every content
    key) while at their defaults (:data:`FIT_NEW_DEFAULTS`), so that configs without them keep their keys;
    fit keys leave ``template`` out while the signal is not a template (:meth:`keyed`).
    """

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"fail_gauss": False, "overrides": [], "gof": GofConfig(), "sideband": None,
                                                  "tistos": None, "template": None, "constrain": None}

    signal: str = "crystalball"
    background: str = "exponential"
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)
    strategy: int = Field(default=1, ge=0, le=2)
    minos: bool = True
    binned: bool = True
    fail_width_shift: bool = False
    fail_gauss: bool = False
    overrides: list[FitOverride] = Field(default_factory=list)
    gof: GofConfig = GofConfig()
    sideband: SidebandConfig | None = None  # method sideband: its windows
    tistos: TisTosConfig | None = None  # method tistos: TIS, TOS and trigger expressions
    template: TemplateConfig | None = None  # fit.signal template: the reference simulation
    constrain: ConstrainConfig | None = None  # constraints from a fit of the simulation
    max_chi2_ndof: float = Field(default=3.0, gt=0)
    min_candidates: int = Field(default=50, ge=0)  # fewer in pass or fail: status low_statistics
    min_significance: float = Field(default=3.0, ge=0)
    plots: Literal["none", "flagged", "all"] = Field(default="all", json_schema_extra=PRESENTATION)
    # fit figures of every bin, flagged bins only, or none: which figures are drawn never changes a fit
    sweights_variance: Literal["sandwich", "pidcalib2"] = "sandwich"  # method sweights: see docs/fits.md

    @model_validator(mode="after")
    def _template_given(self) -> FitConfig:
        if self.signal == "template" and self.template is None:
            raise ValueError("fit.template: required by signal template: give from: <simulation sample> (and "
                             "optionally smooth:)")
        if self.signal == "template" and self.fail_width_shift:
            raise ValueError("fit.fail_width_shift: the template signal has a width per category already "
                             "(smear_pass, smear_fail)")
        return self

    def keyed(self) -> FitConfig:
        """This section as fit keys see it: ``template`` left out while the signal is not a template (a variation
        to an analytic signal keeps it unused, and its changes refit nothing there)."""
        return self if self.signal == "template" or self.template is None else self.model_copy(update={"template": None})

    def for_bin(self, index: int, bounds: Sequence[tuple[str, float, float]]) -> FitConfig:
        """The fit of bin ``index`` (``bounds``: (variable, low, high) per variable): ``parameters`` with every
        override selecting the bin merged over them in order, and no ``overrides`` (so that a bin no override
        selects has the fit, and the content key, of the config without overrides)."""
        params = dict(self.parameters)
        for o in self.overrides:
            if o.selects(index, bounds):
                for name, spec in o.parameters.items():
                    given = spec.model_dump(include=spec.model_fields_set)
                    base = params[name].model_dump(include=params[name].model_fields_set) if name in params else {}
                    params[name] = ParamSpec(**{**base, **given})
        return self.model_copy(update={"parameters": params, "overrides": []})


FIT_NEW_DEFAULTS = FitConfig.NEW_DEFAULTS
"""Fit options added after the first results: left out of :class:`FitConfig`'s dump while at these defaults."""


class ClosureConfig(_Strict):
    """Toy truth, read only by the closure table: per-candidate true efficiency and signal flag."""

    true_efficiency: str
    signal: str


class ClosureAfterApplyConfig(_Strict):
    """Closure after applying the corrections (docs/tables.md): the simulation ``sample`` (default: each data
    sample's reference) reweighted by the per-candidate scale factor of ``corrections.json`` and measured again."""

    sample: str | None = None


class CoverageConfig(_Strict):
    """Coverage of the nominal tables' intervals, part of ``calibflow run``: ``toys`` parametric toys per bin and
    sample from the bin's own result, each measured as the bin was, with ``seed`` (combined with each bin's key);
    the tables get coverage columns and the flag ``coverage_off`` (docs/fits.md, "Coverage")."""

    toys: int = Field(default=100, ge=1)
    seed: int = 1


class PlotStyle(_Strict):
    """Experiment label of the figures (mplhep): ``experiment`` (``LHCb``, ``CMS``, ``ATLAS``, ``ALICE``,
    ``Belle II`` or any text), ``label`` (``Preliminary``, ``Simulation``, ...), integrated luminosity
    ``lumi`` (fb^-1) and centre-of-mass ``energy`` (text, e.g. ``13.6 TeV``); none of it by default."""

    experiment: str | None = None
    label: str | None = None
    lumi: float | None = Field(default=None, gt=0)
    energy: str | None = None


MAX_REPLICAS = 100_000
"""Largest ``outputs.replicas``."""
STAT_FORMS = ("merged", "per_bin", "both")
"""How ``corrections.json`` carries the statistical uncertainty (``outputs.correctionlib.stat``): ``merged``
(``statUp/Down``: every bin moves together), ``per_bin`` (``stat_data_bin<k>_up/down`` and
``stat_mc_bin<k>_up/down``: bin k alone moves, by its data or its simulation statistical error) or ``both``."""


EIGEN_OF = ("total", "per_source")
"""What ``outputs.correctionlib.eigen`` decomposes: the total covariance of a scale-factor table (``eig<i>_up/down``)
or each part on its own (``<part>_eig<i>_up/down``; parts: ``stat_data``, ``stat_mc``, every source)."""


class EigenOutput(_Strict):
    """``outputs.correctionlib.eigen``: the leading ``count`` eigen-variations, or as many as explain ``fraction``
    of the covariance's trace, of the covariance ``of`` (:data:`EIGEN_OF`); docs/tables.md, "Eigen-variations"."""

    count: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)
    of: Literal["total", "per_source"] = "total"

    @model_validator(mode="after")
    def _one_rule(self) -> EigenOutput:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("outputs.correctionlib.eigen: give count (an integer >= 1) or fraction (0 < f <= 1), "
                             "one of the two")
        return self


def _eigen_form(v: Any) -> EigenOutput:
    """``outputs.correctionlib.eigen`` from a count (``eigen: 5``) or a mapping (``{fraction: 0.99}``), with errors
    naming the key."""
    where = "outputs.correctionlib.eigen"
    if isinstance(v, bool) or not isinstance(v, int | dict):
        raise ValueError(f"{where}: give a count (eigen: 5) or a mapping {{count: N}} or {{fraction: f}} "
                         f"(and of: {'|'.join(EIGEN_OF)}), not {v!r}")
    v = {"count": v} if isinstance(v, int) else v
    _check_names(v, ["count", "fraction", "of"], f"{{key}} is not an option of {where}", "options")
    count, fraction, of = v.get("count"), v.get("fraction"), v.get("of", "total")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"{where}.count: {count!r} is not an integer >= 1")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                                 or not 0 < fraction <= 1):
        raise ValueError(f"{where}.fraction: {fraction!r} is not a number in (0, 1]")
    if of not in EIGEN_OF:
        raise ValueError(f"{where}.of: {of!r} is not one of {', '.join(EIGEN_OF)}{suggestion(str(of), EIGEN_OF, None)}")
    return EigenOutput(**v)


class CorrectionlibOutput(_KeepsKeys):
    """``outputs.correctionlib`` given as a mapping: ``stat`` is one of :data:`STAT_FORMS`; ``eigen`` (optional,
    :class:`EigenOutput`) adds eigen-variations of the scale factors' covariance. ``eigen`` is left out of the
    dump while unset (keys of configs without it unchanged)."""

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"eigen": None}

    stat: Literal["merged", "per_bin", "both"] = "merged"
    eigen: EigenOutput | None = None


class OutputsConfig(_KeepsKeys):
    """What to export besides the CSV tables and the master table; ``plot_style`` labels the figures and
    ``plot_formats`` lists the figure files written (``png``, ``pdf``). ``correctionlib``: ``true`` (the
    merged statistical uncertainty), ``false`` (no ``corrections.json``) or ``{stat: merged|per_bin|both, eigen: ...}``;
    ``replicas``: the number of toy scale-factor tables in ``calibration.h5`` (none by default)."""

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"replicas": None, "publish_to": None}

    correctionlib: bool | CorrectionlibOutput = True
    root: bool = True
    markdown: bool = True
    latex: bool = True
    plots: bool = True
    report: bool = True
    correction_name: str | None = None
    flow: Literal["clamp", "error"] = "clamp"
    missing: Literal["fail", "unity"] = "fail"
    plot_style: PlotStyle = PlotStyle()
    plot_formats: list[Literal["png", "pdf"]] = Field(default_factory=lambda: ["png", "pdf"], min_length=1)
    replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    """Toy scale-factor tables sampled from each scale-factor table's covariance, in ``calibration.h5``
    (``replicas/<table>``); left out of the dump while None."""
    publish_to: str | None = Field(default=None, min_length=1)
    """Storage receiving a copy of each published set after a successful run: a folder (relative to the
    config's) or a ``root://`` URL (calibflow.export.storage); left out of the dump while None."""

    @field_validator("publish_to")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        if v is not None and _is_url(v):
            from calibflow.io.remote import XROOTD_SCHEMES, RemoteError, check_url

            try:
                check_url(v)
            except RemoteError as exc:
                raise ValueError(str(exc)) from None
            if v.split("://", 1)[0].lower() not in XROOTD_SCHEMES:
                raise ValueError(f"{v}: storage is a folder or an XRootD URL (root://host//path), not HTTP")
        return v

    @field_validator("correctionlib", mode="before")
    @classmethod
    def _correctionlib_form(cls, v: Any) -> Any:
        if isinstance(v, bool | CorrectionlibOutput):
            return v
        if not isinstance(v, dict):
            raise ValueError(f"give true, false or a mapping {{stat: {'|'.join(STAT_FORMS)}}}, not {v!r}")
        _check_names(v, ["stat", "eigen"], "{key} is not an option of outputs.correctionlib", "options")
        if v.get("stat", "merged") not in STAT_FORMS:
            raise ValueError(f"stat: {v['stat']!r} is not one of {', '.join(STAT_FORMS)}"
                             f"{suggestion(str(v['stat']), STAT_FORMS, None)}")
        eigen = _eigen_form(v["eigen"]) if v.get("eigen") is not None else None
        out = CorrectionlibOutput(stat=v.get("stat", "merged"), eigen=eigen)
        return True if out.stat == "merged" and eigen is None else out  # the same outputs as true, and export key

    @property
    def eigen(self) -> EigenOutput | None:
        """The eigen-variations asked for in ``corrections.json`` (None: none)."""
        return self.correctionlib.eigen if isinstance(self.correctionlib, CorrectionlibOutput) else None

    @property
    def correctionlib_stat(self) -> str | None:
        """How ``corrections.json`` carries the statistical uncertainty (:data:`STAT_FORMS`); None: no
        ``corrections.json``."""
        if isinstance(self.correctionlib, CorrectionlibOutput):
            return self.correctionlib.stat
        return "merged" if self.correctionlib else None


QUANTITIES = ("data", "mc", "sf")
"""What a systematic source may apply to (``applies_to``): data efficiencies, simulation efficiencies, scale
factors."""
EGM_ROLES = {"altSig": "data", "altBkg": "data", "altSigBkg": "data", "altMC": "mc", "altTag": "mc"}
"""EGM roles of systematic sources and the efficiency each one's deviation is measured on (data or simulation)."""
EGM_CONVENTIONS = {
    "egm_classic": (("altSig", "altBkg", "altMC", "altTag"), ()),
    "egm_2023": (("altSig", "altBkg", "altSigBkg", "altMC"), ("altSig", "altBkg", "altSigBkg")),
}
"""Per EGM convention (``systematics.combine``): the roles it knows and those it needs."""

VARIABLE_KEYS = ("aliases", "selection", "pass", "mass", "binning", "fit", "samples", "working_points",
                 "pairing")
"""Top-level config keys a systematic variation or a method may override (listed in docs/tables.md)."""


def _check_names(keys: Any, allowed: Sequence[str], problem: str, listing: str) -> None:
    """ValueError ``<problem> (did you mean ...?)`` for the first key not in ``allowed``."""
    for key in keys:
        if key not in allowed:
            raise ValueError(f"{problem.format(key=repr(key))}{suggestion(key, allowed, listing)}")


def _check_overrides(v: dict[str, Any] | None) -> dict[str, Any] | None:
    _check_names(v or {}, VARIABLE_KEYS, "{key} cannot be varied", "variable keys")
    return v


class Variation(_KeepsKeys):
    """One systematic source: overrides of the nominal config, one-sided (``vary``) or ``up``/``down``.

    A one-sided variation is symmetrised: ``<name>Up``/``<name>Down`` = nominal ± |varied − nominal|.
    """

    NEW_DEFAULTS: ClassVar[Mapping[str, Any]] = {"role": None, "applies_to": lambda v: set(v) == set(QUANTITIES)}

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=MAX_NAME)
    vary: dict[str, Any] | None = None
    up: dict[str, Any] | None = None
    down: dict[str, Any] | None = None
    role: Literal["altSig", "altBkg", "altSigBkg", "altMC", "altTag"] | None = None
    """The source's part in the EGM conventions (:data:`EGM_ROLES`); default: the name when it is a role."""
    applies_to: list[Literal["data", "mc", "sf"]] = Field(default_factory=lambda: list(QUANTITIES), min_length=1)
    """Quantities whose systematic counts this source (spark_tnp's split): ``data`` (efficiencies of data
    samples), ``mc`` (efficiencies of simulation samples), ``sf`` (scale factors); default all three."""

    _check = field_validator("vary", "up", "down")(_check_overrides)

    @field_validator("applies_to")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) < len(v):
            raise ValueError(f"{v}: name each of data, mc, sf at most once")
        return v

    @property
    def egm_role(self) -> str | None:
        """``role``, else the name when it is one of :data:`EGM_ROLES`, else None."""
        return self.role or (self.name if self.name in EGM_ROLES else None)

    @model_validator(mode="after")
    def _one_or_two_sided(self) -> Variation:
        if (self.vary is None) == (self.up is None and self.down is None):
            raise ValueError(f"variation {self.name!r}: give either 'vary' (one-sided) or 'up' and 'down'")
        if self.vary is None and (self.up is None or self.down is None):
            raise ValueError(f"variation {self.name!r}: a two-sided variation needs both 'up' and 'down'")
        return self

    @property
    def variants(self) -> list[str]:
        """Names of the runs this source needs: ``name`` (one-sided) or ``nameUp``, ``nameDown``."""
        return [self.name] if self.vary is not None else [f"{self.name}Up", f"{self.name}Down"]


class SystematicsConfig(_Strict):
    """Systematic sources and how they combine into a total (docs/tables.md, "Uncertainty model").

    ``quadrature_max`` (default; ``quadrature`` is the same): per source the larger of |up − nominal| and
    |down − nominal|, summed in quadrature over sources. ``egm_rms``: the root mean square of all variations'
    deviations from nominal (every Up, Down and one-sided value counts once; not what EGM's code computes).
    ``egm_classic`` and ``egm_2023``: egm_tnp_analysis' ``combineSyst`` (classic forks, and cms-egamma's 2023
    proposal), from sources with an EGM ``role``.
    """

    combine: Literal["quadrature_max", "egm_rms", "egm_classic", "egm_2023"] = "quadrature_max"
    sources: list[Variation] = Field(default_factory=list)

    @field_validator("combine", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return "quadrature_max" if v == "quadrature" else v

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[Variation]) -> list[Variation]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate source names {dup}")
        return v

    @model_validator(mode="after")
    def _egm_roles(self) -> SystematicsConfig:
        if self.combine not in EGM_CONVENTIONS:
            return self
        allowed, required = EGM_CONVENTIONS[self.combine]
        seen: dict[str, Variation] = {}
        for i, src in enumerate(self.sources):
            where, role = f"sources[{i}] ({src.name})", src.egm_role
            if role is None:
                raise ValueError(f"{where}.role: combine {self.combine} needs the EGM role of every source "
                                 f"(one of {', '.join(allowed)}), or name the source after its role")
            if role not in allowed:
                raise ValueError(f"{where}.role: {role} is not part of {self.combine} (roles: {', '.join(allowed)})")
            if role in seen:
                raise ValueError(f"{where}.role: {role} is the role of {seen[role].name!r} already (one source each)")
            if src.vary is None:
                raise ValueError(f"{where}: an EGM role takes one alternative: give 'vary', not 'up'/'down'")
            seen[role] = src
        missing = [r for r in required if r not in seen]
        if missing:
            raise ValueError(f"sources: combine {self.combine} needs a source of each role {', '.join(required)}; "
                             f"missing: {', '.join(missing)}")
        if self.combine == "egm_2023" and len({tuple(sorted(seen[r].applies_to)) for r in required}) > 1:
            raise ValueError(f"sources: the {', '.join(required)} sources of egm_2023 are averaged together: give "
                             "them the same applies_to")
        return self


class RocConfig(_Strict):
    """ROC of the working points: efficiency of ``signal`` versus that of ``background`` (samples)."""

    signal: str
    background: str


TASK_FAMILIES = (
    "GenerateToys", "PrepareTuple", "MakeBinning", "FillHistograms", "FitBin", "EfficiencyTable", "ExportTables",
    "CoverageBin",
)
"""Task families of the calibflow graph: the keys of ``resources`` besides ``default``."""


class TaskResources(_Strict):
    """Batch resources of one task family; unset fields fall back to ``resources.default``."""

    memory_mb: int | None = Field(default=None, gt=0)
    time_minutes: int | None = Field(default=None, gt=0)
    cpus: int | None = Field(default=None, gt=0)
    bins_per_task: int | None = Field(default=None, gt=0)
    """``FitBin`` only: consecutive bins fitted by one task (default 20; 1 = one task per bin). Results
    stay one content-keyed file per bin, so any value reuses the others' results."""
    retries: int | None = Field(default=None, ge=0, le=10)
    """Batch mode: resubmissions of a job that died for an infrastructure reason (cancelled, node failure, out of
    memory, time limit, no ``result.json``), each with memory and time ×1.5 (at most ×4); default 0."""
    tolerance: float | None = Field(default=None, ge=0, lt=1)
    """``FitBin`` only: fraction of FitBin tasks that may fail while the run still completes, their bins
    missing from the tables and named in the summary (default 0)."""


def _check_resource_keys(v: dict[str, TaskResources]) -> dict[str, TaskResources]:
    _check_names(v, ["default", *TASK_FAMILIES], "unknown task family {key}", "allowed")
    for field_name in ("bins_per_task", "tolerance"):
        wrong = [k for k, r in v.items() if k != "FitBin" and getattr(r, field_name) is not None]
        if wrong:
            raise ValueError(f"resources.{wrong[0]}.{field_name}: only FitBin tasks fit bins; "
                             "set it under resources.FitBin")
    return v


class CalibrationConfig(_Strict):
    """One calibration: samples, selection, pass criterion, mass fit, binning and outputs."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=MAX_NAME)
    """The result folder's name under the result dir."""
    description: str = ""
    toy: ToyConfig | None = None
    samples: dict[str, Sample] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    selection: Selection = Selection()
    pairing: PairingConfig | None = None
    hit_match: list[HitMatchConfig] = Field(default_factory=list)
    pass_: str | None = Field(default=None, alias="pass")
    """The probe passes; may be left out when every sample's method is ``yield``."""
    mass: MassConfig | None = None
    binning: BinningConfig
    fit: FitConfig = FitConfig()
    closure: ClosureConfig | None = None
    coverage: CoverageConfig | None = None
    closure_after_apply: ClosureAfterApplyConfig | None = None
    """``true`` or ``{sample: <mc sample>}``: the table ``closure_after_apply.csv`` (docs/tables.md)."""
    reference: str | dict[str, str] | None = None
    outputs: OutputsConfig = OutputsConfig()
    systematics: SystematicsConfig = SystematicsConfig()
    working_points: dict[str, str] = Field(default_factory=dict)
    roc: RocConfig | None = None
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    products: dict[str, list[str]] = Field(default_factory=dict)
    resources: dict[str, TaskResources] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _resource_keys = field_validator("resources")(_check_resource_keys)

    @field_validator("closure_after_apply", mode="before")
    @classmethod
    def _closure_after_apply_form(cls, v: Any) -> Any:
        return ({} if v else None) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _closure_after_apply_sample(self) -> CalibrationConfig:
        wanted = self.closure_after_apply.sample if self.closure_after_apply else None
        mcs = [n for n, s in self.samples.items() if s.role == "mc"]
        if wanted is not None and wanted not in mcs:
            raise ValueError(f"closure_after_apply.sample: {wanted!r} is not a simulation sample"
                             f"{suggestion(wanted, mcs, 'simulation samples')}")
        return self

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not v.strip("."):
            raise ValueError(f"{v!r} is not a folder name (the result folder is <result dir>/<name>)")
        return v

    @model_validator(mode="after")
    def _names_fit_in_paths(self) -> CalibrationConfig:
        for name in self.samples:
            if not SAMPLE_NAME.fullmatch(name):
                raise ValueError(f"samples.{name}: a sample name holds letters, digits, '_', '.' and '-' "
                                 "(not first)")
        for key in ("samples", "working_points", "methods", "products"):
            for name in getattr(self, key):
                if len(name) > MAX_NAME:
                    raise ValueError(f"{key}.{name[:20]}...: a name has at most {MAX_NAME} characters")
        return self

    @model_validator(mode="after")
    def _histograms_fit_in_memory(self) -> CalibrationConfig:
        cells = self.binning.fine_bins * self.mass_spec.bins
        if cells > MAX_HISTOGRAM_CELLS:
            bins, mass = self.binning.fine_bins, self.mass_spec.bins
            raise ValueError(f"mass.bins: {bins:,} fine bins x {mass:,} mass bins = {cells:,} histogram "
                             f"cells per sample; at most {MAX_HISTOGRAM_CELLS:,} are allowed")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationConfig:
        toy_samples = set(self.toy.samples) if self.toy else set()
        for name, s in self.samples.items():
            if not s.files and name not in toy_samples:
                raise ValueError(f"samples.{name}.files: give at least one file or glob (or a toy.samples.{name})")
        if self.toy:
            for name in toy_samples - set(self.samples):
                raise ValueError(f"toy.samples.{name}: no sample of that name in 'samples'")
        if self.mass is None:
            fitted = [n for n, smp in self.samples.items() if smp.method in (*MASS_METHODS, SIDEBAND)]
            if fitted:
                raise ValueError(f"mass: required for fitted samples ({', '.join(fitted)}); or set their method: "
                                 "count or sweighted")
        subtracted = [n for n, smp in self.samples.items() if smp.method == SIDEBAND]
        if subtracted and self.fit.sideband is None:
            raise ValueError(f"fit.sideband: required by method sideband (samples {', '.join(subtracted)}): give "
                             "signal: [low, high] and sidebands: [[low, high], ...]")
        if subtracted and self.mass is not None and self.fit.sideband is not None:
            self.fit.sideband.check_edges(self.mass)
        pass_fraction = [n for n, smp in self.samples.items() if smp.method not in NO_PASS_METHODS]
        counted = [n for n, smp in self.samples.items() if smp.method == TISTOS]
        if counted and self.fit.tistos is None:
            raise ValueError(f"fit.tistos: required by method tistos (samples {', '.join(counted)}): give tis: and "
                             "tos: expressions (and optionally trigger:, efficiency: tos|tis|trigger)")
        if self.pass_ is None and pass_fraction:
            raise ValueError(f"pass: required key is missing (samples {', '.join(pass_fraction)} measure a pass "
                             "fraction; only method yield needs none)")
        if self.pass_ is None and self.working_points:
            raise ValueError("working_points: every sample's method is yield, which measures no pass fraction")
        for key, sample in (("roc.signal", self.roc and self.roc.signal), ("roc.background", self.roc and self.roc.background)):
            if sample and sample not in self.samples:
                raise ValueError(f"{key}: unknown sample {sample!r}; samples are {sorted(self.samples)}")
        for m, override in self.methods.items():
            if not m.replace("_", "").isalnum():
                raise ValueError(f"methods.{m}: names may hold letters, digits and '_' only")
            try:
                _check_overrides(override)
            except ValueError as exc:
                raise ValueError(f"methods.{m}: {exc}") from None
        for prod, members in self.products.items():
            unknown = [m for m in members if m not in self.methods]
            if unknown or len(members) < 2:
                raise ValueError(f"products.{prod}: needs two or more of the methods {sorted(self.methods)}"
                                 + (f"; unknown: {unknown}" if unknown else ""))
            if prod in self.methods:
                raise ValueError(f"products.{prod}: name already used by a method")
        if self.hit_match and self.pairing is not None:
            raise ValueError("hit_match: works on flat ntuples (one row per candidate), not with pairing")
        hit_names = [h.as_ for h in self.hit_match]
        for i, name in enumerate(hit_names):
            if name in hit_names[:i]:
                raise ValueError(f"hit_match[{i}].as: {name!r} is given twice")
        if self.roc and not self.working_points:
            raise ValueError("roc: needs working_points to scan")
        for wp in self.working_points:
            if not wp.replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"working_points.{wp}: names may hold letters, digits, '_' and '.' only")
        refs = self.reference if isinstance(self.reference, dict) else {"": self.reference} if self.reference else {}
        for data, ref in refs.items():
            key = f"reference.{data}" if data else "reference"
            if data and (data not in self.samples or self.samples[data].role != "data"):
                raise ValueError(f"{key}: {data!r} is not a data sample; data samples are {self.data_samples}")
            if ref not in self.samples:
                raise ValueError(f"{key}: unknown sample {ref!r}; samples are {sorted(self.samples)}")
            for which in (data, ref):
                if which in self.samples and self.samples[which].method == "yield":
                    raise ValueError(f"{key}: sample {which!r} has method yield, which measures no efficiency "
                                     "to compare")
        return self

    @property
    def mass_spec(self) -> MassConfig:
        """The mass section, or a single constant bin for calibrations without a mass fit."""
        return self.mass if self.mass is not None else COUNT_ONLY_MASS

    @property
    def pass_expression(self) -> str:
        """The ``pass`` expression (yield-only calibrations: every candidate passes)."""
        return self.pass_ if self.pass_ is not None else EVERY_CANDIDATE_PASSES

    @property
    def data_samples(self) -> list[str]:
        """Names of the samples with role ``data``."""
        return [n for n, s in self.samples.items() if s.role == "data"]

    @property
    def reference_sample(self) -> str | None:
        """The simulation sample data are compared with (``reference``, or the only mc sample measuring an
        efficiency); None when ``reference`` maps data samples to their own simulation (see
        :attr:`scale_factor_pairs`)."""
        if isinstance(self.reference, dict):
            return None
        if self.reference is not None:
            return self.reference
        mc = [n for n, s in self.samples.items() if s.role == "mc" and s.method != "yield"]
        return mc[0] if len(mc) == 1 else None

    @property
    def scale_factor_pairs(self) -> list[tuple[str, str]]:
        """(data, simulation) sample pairs of the scale-factor table: ``reference`` as a mapping
        data sample -> simulation sample, else every data sample measuring an efficiency (not ``yield``)
        with :attr:`reference_sample`."""
        if isinstance(self.reference, dict):
            return list(self.reference.items())
        ref = self.reference_sample
        return [(d, ref) for d in self.data_samples if self.samples[d].method != "yield"] if ref else []

    def sample_aliases(self, sample: str) -> dict[str, str]:
        """Aliases seen by the expressions of ``sample``: the global ones, then the sample's own."""
        return {**self.aliases, **self.samples[sample].aliases}

    def resources_for(self, family: str) -> TaskResources:
        """Batch resources of task ``family``: its own entry over ``resources.default``."""
        merged = self.resources.get("default", TaskResources()).model_dump(exclude_none=True)
        merged.update(self.resources.get(family, TaskResources()).model_dump(exclude_none=True))
        return TaskResources(**merged)


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _step(current: Any, part: Any) -> Any:
    """The annotation reached from ``current`` by one location part (field name, dict key or index)."""
    args = [a for a in getattr(current, "__args__", ()) if a is not type(None)]
    origin = getattr(current, "__origin__", None)
    if _is_model(current):
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        return None if field is None else field.annotation
    if origin is dict:
        return args[1]
    if origin in (list, tuple):
        return args[0]
    if args:  # Optional[X] / Union: follow the model member
        models = [a for a in args if _is_model(a)]
        return _step(models[0] if models else args[0], part)
    return None


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Allowed keys of the mapping at ``loc[:-1]`` (for did-you-mean suggestions), best effort."""
    current: Any = model
    for part in loc[:-1]:
        current = _step(current, part)
        if current is None:
            return []
    while not _is_model(current) and getattr(current, "__args__", None):
        models = [a for a in current.__args__ if _is_model(a)]
        if not models:
            return []
        current = models[0]
    return [f.alias or n for n, f in current.model_fields.items()] if _is_model(current) else []


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('binning', 'variables', 1, 'edges')`` -> ``binning.variables[1].edges``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """One validation error of ``model`` (default :class:`CalibrationConfig`) as ``<key path>: <problem>``."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        allowed = _fields_of(model or CalibrationConfig, loc)
        return f"{format_loc(loc)}: unknown key{suggestion(str(loc[-1]), sorted(allowed))}"
    if err["type"] == "missing":
        return f"{format_loc(loc)}: required key is missing"
    if ":" in msg and not loc:
        return msg
    where = format_loc(loc)
    return f"{where}: {msg}" if where else msg


def parse_config(data: Any, source: str = "<config>") -> CalibrationConfig:
    """Validate a mapping as a calibration config; raise ConfigError naming every wrong key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return CalibrationConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


MAX_ALIAS_NODES = 100_000
"""YAML aliases (``*name``) may add at most this many nodes to a document, counting each alias as a copy of
the node it names (an "alias bomb" of nested aliases expands exponentially)."""
MAX_NESTING = 50
"""Nesting depth of mappings and lists in a YAML document, at most (aliases expanded)."""
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without implicit timestamps (``2024-01-31`` stays text), whose values that cannot
    be constructed (``!!int abc``) are YAML errors with a position."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """The node's value; ValueError, TypeError and OverflowError become a ConstructorError at the node."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag.rsplit(':', 1)[-1]} {node.value!r}: {exc}"
                if isinstance(node, yaml.ScalarNode) else f"cannot read this value: {exc}", node.start_mark
            ) from None


class _NodeCheck:
    """The checks of a composed YAML document before it is constructed: no key twice in one mapping (merge
    keys ``<<`` aside: their keys may be overridden), no alias inside the node it names, at most
    :data:`MAX_NESTING` levels and :data:`MAX_ALIAS_NODES` nodes added by aliases."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth) with aliases expanded
        self.open: set[int] = set()  # nodes being walked (an alias to one of them is recursive)

    def run(self, root: yaml.Node) -> None:
        """ConfigError (without the file name) for the first problem of the document ``root``."""
        nodes, _ = self.walk(root, (), 1)
        if nodes - len(self.sizes) > MAX_ALIAS_NODES:
            raise ConfigError(f"aliases (*name) expand the document from {len(self.sizes):,} to {nodes:,} "
                              f"nodes; at most {MAX_ALIAS_NODES:,} more are allowed")

    def walk(self, node: yaml.Node, loc: tuple[Any, ...], level: int) -> tuple[int, int]:
        """(nodes, depth) of ``node`` at key path ``loc``, ``level`` levels down, aliases expanded."""
        if id(node) in self.open:
            raise ConfigError(f"{format_loc(loc) or 'top level'}: line {node.start_mark.line + 1}: an alias "
                              "refers to a node that contains it")
        if id(node) not in self.sizes:
            self.open.add(id(node))
            children = list(self.children(node, loc))
            if children and level >= MAX_NESTING:
                raise ConfigError(f"line {node.start_mark.line + 1}: nested more than {MAX_NESTING} levels "
                                  "deep")
            sizes = [self.walk(child, where, level + 1) for child, where in children]
            self.sizes[id(node)] = (1 + sum(n for n, _ in sizes), 1 + max((d for _, d in sizes), default=0))
            self.open.discard(id(node))
        nodes, depth = self.sizes[id(node)]
        if level + depth - 1 > MAX_NESTING:
            raise ConfigError(f"line {node.start_mark.line + 1}: nested more than {MAX_NESTING} levels deep "
                              "(aliases expanded)")
        return nodes, depth

    def children(self, node: yaml.Node, loc: tuple[Any, ...]) -> list[tuple[yaml.Node, tuple[Any, ...]]]:
        """The nodes inside ``node`` with their key paths; ConfigError for a key given twice."""
        if isinstance(node, yaml.SequenceNode):
            return [(child, (*loc, i)) for i, child in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return []
        out: list[tuple[yaml.Node, tuple[Any, ...]]] = []
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            if key is not None and key in lines:
                raise ConfigError(f"{format_loc((*loc, key))}: given twice in one mapping (lines "
                                  f"{lines[key]} and {key_node.start_mark.line + 1}); YAML would keep the last, "
                                  "remove one")
            if key is not None:
                lines[key] = key_node.start_mark.line + 1
            out += [(key_node, loc), (value_node, loc if key is None else (*loc, key))]
        return out

    def key(self, node: yaml.Node) -> Any:
        """The value of a plain mapping key (None: a merge key ``<<`` or a key that is not a scalar)."""
        if node.tag == _MERGE or not isinstance(node, yaml.ScalarNode):
            return None
        key = self.loader.construct_object(node)
        try:
            hash(key)
        except TypeError:
            return None
        return key


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """The YAML document at ``path`` (UTF-8; PyYAML's safe loader); ConfigError, one line naming the file and
    the line, for an unreadable file, text that is not UTF-8, a syntax error, a key given twice in one
    mapping, an alias inside the node it names, more than :data:`MAX_NESTING` levels or an alias expansion
    of more than :data:`MAX_ALIAS_NODES` nodes."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = raw.count(b"\n", 0, exc.start) + 1, exc.start - raw.rfind(b"\n", 0, exc.start)
        raise ConfigError(f"{p}: line {line}, column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                          "save the config as UTF-8") from None
    try:
        return _load_text(text)
    except ConfigError as exc:
        raise located(exc, p) from None
    except yaml.reader.ReaderError as exc:
        line, column = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigError(f"{p}: line {line}, column {column}: YAML syntax error: {exc.reason} (character "
                          f"{exc.character!r})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(f"{p}:{where}: {kind}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested more than {MAX_NESTING} levels deep") from None


def _load_text(text: str) -> Any:
    """The YAML document ``text``, checked by :class:`_NodeCheck` before it is constructed."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _NodeCheck(loader).run(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


BASE_KEY = "base"
"""Top-level key naming the config a config derives from (:func:`load_document`)."""
MAX_BASES = 8
"""Length of a ``base:`` chain, at most."""


@functools.lru_cache(maxsize=64)
def _cached_yaml(path: str, mtime_ns: int) -> Any:
    return load_yaml(path)


def _document(path: str) -> Any:
    try:
        return _cached_yaml(path, os.stat(path).st_mtime_ns)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None


def config_chain(path: str | os.PathLike[str]) -> list[str]:
    """The config file at ``path`` and the files of its ``base:`` chain, the derived one first (absolute paths;
    a base is relative to the folder of the file naming it). ConfigError for a missing base, a base that is not
    text, a cycle or a chain of more than :data:`MAX_BASES` bases."""
    chain = [os.path.abspath(path)]
    while isinstance(doc := _document(chain[-1]), dict) and BASE_KEY in doc:
        base = doc[BASE_KEY]
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{chain[-1]}: {BASE_KEY}: give the path of the config this one derives from, got "
                              f"{base!r}")
        full = os.path.abspath(os.path.join(os.path.dirname(chain[-1]), os.path.expanduser(base)))
        if full in chain:
            raise ConfigError(f"{chain[-1]}: {BASE_KEY}: {' -> '.join([*chain, full])} is a cycle; remove a base")
        if not os.path.isfile(full):
            raise ConfigError(f"{chain[-1]}: {BASE_KEY}: {base!r} is not a file ({full}; relative paths are "
                              "relative to this config's folder)")
        if len(chain) > MAX_BASES:
            raise ConfigError(f"{path}: {BASE_KEY}: more than {MAX_BASES} bases in the chain")
        chain.append(full)
    return chain


def merge_documents(base: Any, derived: Any) -> Any:
    """``derived`` laid over ``base``: mappings merged key by key (recursively), anything else (lists, scalars,
    null) replaced by the derived value."""
    if not (isinstance(base, dict) and isinstance(derived, dict)):
        return derived
    out = dict(base)
    for key, value in derived.items():
        out[key] = merge_documents(base[key], value) if key in base else value
    return out


def load_document(path: str | os.PathLike[str]) -> Any:
    """The YAML config at ``path`` with its ``base:`` chain applied (:func:`config_chain`, :func:`merge_documents`):
    an era's config can be its base recipe plus its own files, lumi mask and name."""
    chain = config_chain(path)
    for file in chain[1:]:
        if not isinstance(_document(file), dict):
            raise ConfigError(f"{file}: a base config must be a mapping of keys")
    doc = _document(chain[-1])
    for file in reversed(chain[:-1]):
        derived = _document(file)
        doc = merge_documents(doc, {k: v for k, v in derived.items() if k != BASE_KEY})
    return copy.deepcopy(doc)


def load_config(path: str | os.PathLike[str]) -> CalibrationConfig:
    """Read a YAML recipe (:func:`load_document`: its ``base:`` chain applied) and validate it; raise ConfigError
    on any problem."""
    return parse_config(load_document(path), source=str(Path(path)))


def resolve_files(config: CalibrationConfig, sample: str, base_dir: str | os.PathLike[str]) -> list[str]:
    """Expand a sample's file globs (relative to ``base_dir``) into sorted absolute paths.

    Raises ConfigError naming the key of a glob that matches no file. URLs (``root://``, ``https://``) stay
    URLs, their wildcards expanded by the server's listing (:mod:`calibflow.io.remote`); a bad URL or an
    unreachable server is a ConfigError naming the key and the URL.
    """
    out: list[str] = []
    for i, pattern in enumerate(config.samples[sample].files):
        pattern = pattern.removeprefix("file://")  # a local file written as a URL
        if _is_url(pattern):
            out.extend(_expand_url(pattern, f"samples.{sample}.files[{i}]"))
            continue
        full = pattern if os.path.isabs(pattern) else os.path.join(base_dir, pattern)
        matches = _expand(os.path.expanduser(full))
        if not matches:
            raise ConfigError(f"samples.{sample}.files[{i}]: no file matches {full!r}")
        out.extend(matches)
    return out


def _is_url(pattern: str) -> bool:
    """Whether ``pattern`` is a URL (``scheme://``) rather than a path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", pattern) is not None


def _expand_url(pattern: str, key: str) -> tuple[str, ...]:
    """The files the URL ``pattern`` matches (:func:`calibflow.io.remote.expand`); ConfigError naming ``key``
    for a bad URL, an unreachable server or no match."""
    from calibflow.io.remote import RemoteError, expand

    try:
        matches = expand(pattern)
    except RemoteError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not matches:
        raise ConfigError(f"{key}: no file matches {pattern!r}")
    return matches


_GLOBS: dict[str, tuple[int, tuple[str, ...]]] = {}
"""Expanded globs whose wildcards are all in the file name: pattern -> (folder mtime, sorted matches)."""
_SETTLED_NS = 2_000_000_000
"""A folder changed less than this long ago (ns) may change again within its mtime's granularity (a
clock tick): its glob is not cached (the racy-timestamp rule of git's index)."""


def _expand(pattern: str) -> tuple[str, ...]:
    """Sorted absolute paths matching ``pattern``. A pattern with wildcards only in its file name is expanded
    again only when its folder changed (a file added, removed or renamed there changes the folder's mtime), so
    asking for the N inputs of a sample one by one costs N stats, not N globs; other patterns are always
    expanded."""
    folder = os.path.dirname(pattern) or "."
    if glob.has_magic(folder):
        return _matches(pattern)
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return ()
    cached = _GLOBS.get(pattern)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    matches = _matches(pattern)
    if time.time_ns() - mtime > _SETTLED_NS:
        _GLOBS[pattern] = (mtime, matches)
    return matches


def _matches(pattern: str) -> tuple[str, ...]:
    return tuple(sorted(os.path.abspath(m) for m in glob.glob(pattern)))
