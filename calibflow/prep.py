"""Tuple preparation: one ROOT file in, one compact HDF5 file of the needed columns after cuts out.

Reads only the branches the config's expressions reference, chunk by chunk (bounded memory), and
applies, in order: the golden-JSON lumi mask (``lumi``), the event selection (``event``), tag-and-probe
pairing of a jagged collection (``pairs``, with a ``pairing`` section), then the candidate stages
``tag``, ``probe``, ``pair`` and the sample ``cut``. The cut flow (entries left after each stage) is
stored in the output's metadata.

Without ``pairing`` the input is a flat ntuple, one row per candidate. With it, every ordered
(tag, probe) pair of different objects of an event is one row: the later expressions see the per-pair
columns ``tag_<field>``, ``probe_<field>`` (from ``<collection>_<field>``), ``pair_mass`` (GeV),
``pair_charge`` (product of the charges), ``pair_dr`` and the event-level branches by their names.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import awkward as ak
import h5py
import numpy as np
import uproot

from calibflow.config import CalibrationConfig, ConfigError, PairingConfig
from calibflow.expr import ExprError, Expression, compile_expression
from calibflow.hashing import content_key, file_identity
from calibflow.io.root import use_fast_zlib
from calibflow.io.store import TableWriter, atomic_path, prep_compression, read_metadata, write_metadata

if TYPE_CHECKING:
    from calibflow.io.lumi import LumiMask
    from calibflow.kernels.fused import FusedSelection

PREP_VERSION = 1
MASS, PASS, WEIGHT, TRUE_EFF, IS_SIGNAL = "_mass", "_pass", "_weight", "_true_eff", "_is_signal"
LUMI_BRANCHES = ("run", "luminosityBlock")
"""Event-level branches the lumi mask is applied to (CMS NanoAOD names)."""
PAIR_COLUMNS = ("pair_mass", "pair_charge", "pair_dr")
"""Derived per-pair columns (with ``pairing``): mass in GeV, product of the charges, ΔR."""
TAG, PROBE = "tag_", "probe_"
STAGE_ORDER = ("read", "lumi", "event", "pairs", "tag", "probe", "pair", "sample")
"""Cut-flow stages in the order they apply (files written before ``stages`` was stored are sorted by it)."""


def pass_column(working_point: str) -> str:
    """Prepared column of the pass decision of ``working_point``."""
    return f"{PASS}:{working_point}"


def is_flag(column: str) -> bool:
    """Whether a prepared column holds booleans (pass decisions and the signal flag)."""
    return column in (IS_SIGNAL, PASS) or column.startswith(PASS + ":")


class PrepError(RuntimeError):
    """An input file cannot be prepared; ``str()`` is one line naming the file and the problem."""

    skippable = True
    """A bad file, which ``--skip-bad-files`` may leave out."""


class PrepExpressionError(PrepError):
    """An expression cannot be evaluated on an input file (a config problem: never skipped)."""

    skippable = False


# --- specification ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LumiSpec:
    """A certification JSON: absolute path and SHA-256 of its content (the content enters the keys)."""

    path: str
    sha256: str

    def mask(self) -> LumiMask:
        """The vectorised (run, luminosityBlock) lookup."""
        from calibflow.io.lumi import LumiMask

        return LumiMask(self.path)


@dataclass(frozen=True)
class MatchSpec:
    """ΔR matching of the pairing collection to ``objects`` passing ``cut``; the flag is column ``name``."""

    objects: str
    cut: Expression | None
    max_dr: float
    name: str


@dataclass(frozen=True)
class PairingSpec:
    """Tag-and-probe pairing of ``collection``: object selections, matches and the per-pair columns needed.

    ``fields`` are the collection fields exposed as ``tag_<field>``/``probe_<field>`` (match flags
    included), ``event_branches`` the event-level branches broadcast to pairs, ``derived`` the
    ``pair_*`` columns to compute. ``mass`` is the object mass in GeV or the name of a mass field.
    """

    collection: str
    tag: Expression
    probe: Expression
    mass: float | str
    charge: str
    matches: tuple[MatchSpec, ...]
    fields: tuple[str, ...]
    event_branches: tuple[str, ...]
    derived: tuple[str, ...]

    def branch(self, fld: str) -> str:
        """Branch of collection field ``fld`` (``pt`` -> ``Muon_pt``)."""
        return f"{self.collection}_{fld}"

    @property
    def computed(self) -> frozenset[str]:
        """Per-object columns computed by the matches (never read from the file)."""
        return frozenset(m.name for m in self.matches)

    def needed_fields(self) -> set[str]:
        """Collection fields needed for the per-pair columns (besides those of the selections)."""
        out = set(self.fields)
        if "pair_mass" in self.derived:
            out |= {"pt", "eta", "phi"} | ({self.mass} if isinstance(self.mass, str) else set())
        if "pair_charge" in self.derived:
            out.add(self.charge)
        if "pair_dr" in self.derived:
            out |= {"eta", "phi"}
        return out

    def branches(self) -> set[str]:
        """Branches to read for the pairing and the per-pair columns."""
        names = {self.branch(f) for f in self.needed_fields()} | set(self.event_branches)
        names |= self.tag.branches | self.probe.branches
        for m in self.matches:
            names |= {self.branch("eta"), self.branch("phi"), f"{m.objects}_eta", f"{m.objects}_phi"}
            names |= m.cut.branches if m.cut else set()
        names -= self.computed
        if not any(n.startswith(f"{self.collection}_") for n in names):
            names.add(f"n{self.collection}")  # object counts only
        return names

    def describe(self) -> dict[str, Any]:
        """Content that determines the pairs and their columns (for keys)."""
        return {
            "collection": self.collection,
            "tag": self.tag.text,
            "probe": self.probe.text,
            "mass": self.mass,
            "charge": self.charge,
            "match": [[m.objects, m.cut.text if m.cut else None, m.max_dr, m.name] for m in self.matches],
        }


@dataclass(frozen=True)
class HitMatchSpec:
    """Shared-hit-fraction column ``name`` of a flat ntuple (``hit_match``): the probe's hit IDs
    ``probe_hits`` against the target tracks' ``target_hits`` (with per-track ``target_counts``, or doubly
    jagged)."""

    probe_hits: str
    target_hits: str
    target_counts: str | None
    name: str

    @property
    def branches(self) -> set[str]:
        """Jagged branches read for this column."""
        return {self.probe_hits, self.target_hits} | ({self.target_counts} if self.target_counts else set())


@dataclass(frozen=True)
class PrepSpec:
    """What to read from one sample's files: tree, output column expressions and ordered cuts.

    ``event_cuts`` apply per event before ``pairing`` (per row without it), after the ``lumi`` mask;
    ``cuts`` apply per candidate (per pair with ``pairing``).
    """

    tree: str
    columns: dict[str, Expression]
    cuts: list[tuple[str, Expression]] = field(default_factory=list)
    event_cuts: list[tuple[str, Expression]] = field(default_factory=list)
    pairing: PairingSpec | None = None
    lumi: LumiSpec | None = None
    hit_matches: tuple[HitMatchSpec, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Alias definitions the expressions were compiled with (global merged with the sample's)."""

    @property
    def branches(self) -> list[str]:
        """Sorted names of every branch to read from the input files."""
        names: set[str] = set(LUMI_BRANCHES) if self.lumi else set()
        for _, e in self.event_cuts:
            names |= e.branches
        if self.pairing is not None:
            return sorted(names | self.pairing.branches())
        for e in [*self.columns.values(), *(c for _, c in self.cuts)]:
            names |= e.branches
        for h in self.hit_matches:
            names |= h.branches
        return sorted(names - {h.name for h in self.hit_matches})

    @property
    def first_hit_match_stage(self) -> int:
        """Index in the cut-flow stages (``lumi``, ``event``, candidate cuts) of the first one reading a
        ``hit_match`` column; the shared-hit fractions are computed for the rows surviving the stages before."""
        names = {h.name for h in self.hit_matches}
        exprs = [frozenset()] * (self.lumi is not None) + [e.branches for _, e in [*self.event_cuts, *self.cuts]]
        return next((i for i, b in enumerate(exprs) if b & names), len(exprs))

    @property
    def stages(self) -> list[str]:
        """Cut-flow stages in order: ``read``, then ``lumi``, ``event``, ``pairs`` and the cut stages present."""
        pre = (["lumi"] if self.lumi else []) + [s for s, _ in self.event_cuts]
        return ["read", *pre, *(["pairs"] if self.pairing else []), *(s for s, _ in self.cuts)]

    def describe(self) -> dict[str, Any]:
        """Content that determines the output (for keys)."""
        out: dict[str, Any] = {
            "tree": self.tree,
            "columns": {k: v.text for k, v in self.columns.items()},
            "cuts": [[k, v.text] for k, v in self.cuts],
            "aliases_expanded": sorted(self.branches),
            "version": PREP_VERSION,
        }
        if self.aliases:  # the column texts name aliases: their definitions determine the content
            out["aliases"] = dict(sorted(self.aliases.items()))
        if self.event_cuts:
            out["event_cuts"] = [[k, v.text] for k, v in self.event_cuts]
        if self.pairing is not None:
            out["pairing"] = self.pairing.describe()
        if self.lumi is not None:
            out["lumi_mask_sha256"] = self.lumi.sha256
        if self.hit_matches:
            out["hit_match"] = [[h.probe_hits, h.target_hits, h.target_counts, h.name] for h in self.hit_matches]
        return out


@functools.lru_cache(maxsize=64)
def _lumi_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a certification JSON, which is checked to be valid (cached per file version)."""
    from calibflow.io.lumi import LumiMask

    LumiMask(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _lumi_spec(text: str, base_dir: str | None, where: str) -> LumiSpec:
    from calibflow.io.lumi import LumiMaskError  # numba kernels: imported when needed (fast CLI start)

    path = os.path.abspath(text if os.path.isabs(text) or base_dir is None else os.path.join(base_dir, text))
    try:
        st = os.stat(path)
        return LumiSpec(path, _lumi_digest(path, st.st_size, st.st_mtime_ns))
    except FileNotFoundError:
        raise ConfigError(f"{where}: certification JSON {path!r} not found") from None
    except LumiMaskError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _pairing_spec(p: PairingConfig, later: Sequence[Expression], compile_: Callable[[str, str], Expression]
                  ) -> PairingSpec:
    """Pairing spec of ``p``; ``later`` are the per-pair expressions, whose names pick the columns needed."""
    prefix = f"{p.collection}_"
    fields, events, derived = set(), set(), set()
    for e in later:
        for name in e.branches:
            if name.startswith((TAG, PROBE)):
                fields.add(name.split("_", 1)[1])
            elif name in PAIR_COLUMNS:
                derived.add(name)
            elif name.startswith("pair_"):
                raise ConfigError(f"{e.where}: unknown pair column {name!r} (pair columns: {', '.join(PAIR_COLUMNS)})")
            elif name.startswith(prefix):
                fld = name[len(prefix):]
                raise ConfigError(f"{e.where}: {name!r} is a per-object branch of {p.collection}; per pair use "
                                  f"{TAG}{fld} or {PROBE}{fld}, or reduce it per event, e.g. count({name} > 0)")
            else:
                events.add(name)
    mass = p.mass.removeprefix(prefix) if isinstance(p.mass, str) else float(p.mass)
    matches = tuple(
        MatchSpec(m.objects, compile_(m.cut, f"pairing.match[{i}].cut") if m.cut else None, m.max_dr, m.as_)
        for i, m in enumerate(p.match)
    )
    return PairingSpec(
        collection=p.collection,
        tag=compile_(p.tag, "pairing.tag"),
        probe=compile_(p.probe, "pairing.probe"),
        mass=mass,
        charge=p.charge.removeprefix(prefix),
        matches=matches,
        fields=tuple(sorted(fields)),
        event_branches=tuple(sorted(events)),
        derived=tuple(d for d in PAIR_COLUMNS if d in derived),
    )


def prep_spec(config: CalibrationConfig, sample: str, base_dir: str | None = None) -> PrepSpec:
    """Build the PrepSpec of ``sample`` from the config (compiles every expression once).

    ``base_dir`` is the folder relative paths (the lumi mask) are resolved from: the config's folder.
    """
    s = config.samples[sample]
    al = config.sample_aliases(sample)

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
    sel = config.selection
    cuts = [
        (stage, c(text, f"selection.{stage}"))
        for stage, text in (("tag", sel.tag), ("probe", sel.probe), ("pair", sel.pair))
        if text
    ]
    if s.cut:
        cuts.append(("sample", c(s.cut, f"samples.{sample}.cut")))
    event_cuts = [("event", c(sel.event, "selection.event"))] if sel.event else []
    pairing = None
    if config.pairing is not None:
        pairing = _pairing_spec(config.pairing, [*columns.values(), *(e for _, e in cuts)], c)
    lumi = _lumi_spec(s.lumi_mask, base_dir, f"samples.{sample}.lumi_mask") if s.lumi_mask else None
    hits = tuple(HitMatchSpec(h.probe_hits, h.target_hits, h.target_counts, h.as_) for h in config.hit_match)
    return PrepSpec(tree=s.tree, columns=columns, cuts=cuts, event_cuts=event_cuts, pairing=pairing, lumi=lumi,
                    hit_matches=hits, aliases=al)


def prep_key(spec: PrepSpec, path: str) -> str:
    """Content key of preparing ``path`` with ``spec``."""
    return content_key(spec.describe(), file_identity(path))


# --- evaluation helpers ----------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (uproot and awkward errors span many lines), at most 300 chars."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _per_row(values: Any, n: int, where: str) -> np.ndarray:
    """``values`` as a numpy array of ``n`` rows (scalars broadcast); ExprError for a jagged result."""
    if isinstance(values, ak.Array):
        if values.ndim > 1:
            raise ExprError("gives several values per row (a per-object collection); reduce it with "
                            "any/all/count/sum/min/max", where)
        values = ak.to_numpy(values)
    return np.broadcast_to(np.asarray(values), (n,))


def _per_object(values: Any, counts: np.ndarray, where: str, what: str) -> np.ndarray:
    """Flat per-object booleans of a collection with ``counts`` objects per event (per-event values
    are repeated for every object of the event)."""
    if isinstance(values, ak.Array) and values.ndim > 1:
        if not np.array_equal(ak.to_numpy(ak.num(values, axis=1)), counts):
            raise ExprError(f"must be a per-object expression of {what} (its objects do not match)", where)
        return np.asarray(ak.to_numpy(ak.flatten(values, axis=1)), dtype=bool)
    return np.repeat(_per_row(values, len(counts), where).astype(bool), counts)


Test = Callable[[Mapping[str, Any]], Any]
"""A cut-flow stage's test: columns in, per-row booleans out."""


def _cut_flow(cols: Mapping[str, Any], n: int, stages: Sequence[tuple[str, str, Test]], flow: dict[str, int],
              keep: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``n`` rows of ``cols`` passing every (stage, config key, test), starting from the
    rows in ``keep`` (default: all); adds the survivors to ``flow``."""
    keep = np.ones(n, dtype=bool) if keep is None else keep.copy()
    for stage, where, test in stages:
        keep &= _per_row(test(cols), n, where).astype(bool, copy=False)
        flow[stage] += int(np.count_nonzero(keep))
    return keep


def _outputs(cols: Mapping[str, Any], n: int, keep: np.ndarray, columns: Mapping[str, Expression]
             ) -> dict[str, np.ndarray]:
    """The output columns of the rows in ``keep``: flags as bool, float32 values as float32 (exact, half the
    bytes of NanoAOD-style inputs), everything else as float64."""
    rows = None if keep.all() else np.flatnonzero(keep)  # one index array: take() is 2x faster than masks
    out = {}
    for name, e in columns.items():
        values = _per_row(e.evaluate(cols), n, e.where)
        values = values if rows is None else values.take(rows)
        out[name] = values.astype(_stored_dtype(name, values.dtype), copy=False)
    return out


def _stored_dtype(name: str, dtype: np.dtype) -> type:
    """Dtype of a prepared column: bool for flags, float32 kept, float64 for every other number."""
    return bool if is_flag(name) else np.float32 if dtype == np.float32 else np.float64


def _select_rows(cols: Mapping[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """Every column restricted to the rows in ``keep`` (numpy or awkward)."""
    return {k: v[keep] for k, v in cols.items()}


def _flat(cols: Mapping[str, Any], name: str, counts: np.ndarray) -> np.ndarray:
    """Flat per-object numpy values of jagged column ``name`` (checked against ``counts``)."""
    values = cols[name]
    if not (isinstance(values, ak.Array) and values.ndim == 2):
        raise ExprError(f"branch {name!r} must be a jagged per-object collection", "pairing")
    if not np.array_equal(ak.to_numpy(ak.num(values, axis=1)), counts):
        raise ExprError(f"branch {name!r} has other object counts than the rest of the collection", "pairing")
    return ak.to_numpy(ak.flatten(values, axis=1))


def make_pairs(cols: dict[str, Any], p: PairingSpec) -> tuple[dict[str, Any], int]:
    """Per-pair columns of the events in ``cols`` (branch name -> numpy / awkward array); also the pairs.

    Adds the match flags to ``cols`` (jagged, per object). Returns the columns ``tag_<field>``,
    ``probe_<field>``, the ``pair_*`` columns and the event-level branches (indexed per pair), and the
    number of pairs. Pairs are ordered by event, then tag, then probe.
    """
    from calibflow.kernels.matching import delta_phi, nearest_dr_match
    from calibflow.kernels.pairing import invariant_mass, offsets_from_counts, tag_probe_pairs

    ref = next((b for b in sorted(cols) if b.startswith(f"{p.collection}_")), None)
    counts = (ak.to_numpy(ak.num(cols[ref], axis=1)) if ref is not None
              else np.asarray(cols[f"n{p.collection}"], dtype=np.int64))
    offsets = offsets_from_counts(counts)
    flat: dict[str, np.ndarray] = {}

    def get(fld: str) -> np.ndarray:
        name = p.branch(fld)
        if name not in flat:
            flat[name] = _flat(cols, name, counts)
        return flat[name]

    for i, m in enumerate(p.matches):
        n_obj = ak.to_numpy(ak.num(cols[f"{m.objects}_eta"], axis=1))
        where = f"pairing.match[{i}].cut"
        mask_b = None if m.cut is None else _per_object(m.cut.evaluate(cols), n_obj, where, m.objects)
        index, _ = nearest_dr_match(offsets, get("eta"), get("phi"), offsets_from_counts(n_obj),
                                    _flat(cols, f"{m.objects}_eta", n_obj), _flat(cols, f"{m.objects}_phi", n_obj),
                                    mask_b, m.max_dr)
        flat[m.name] = index >= 0
        cols[m.name] = ak.unflatten(flat[m.name], counts)
    is_tag = _per_object(p.tag.evaluate(cols), counts, "pairing.tag", p.collection)
    is_probe = _per_object(p.probe.evaluate(cols), counts, "pairing.probe", p.collection)
    ev, t, pr = tag_probe_pairs(offsets, is_tag, is_probe)
    out: dict[str, Any] = {}
    for fld in p.fields:
        values = get(fld)
        out[TAG + fld], out[PROBE + fld] = values[t], values[pr]
    for name in p.event_branches:
        out[name] = cols[name][ev]
    if "pair_mass" in p.derived:
        pt, eta, phi = (get(f).astype(np.float64, copy=False) for f in ("pt", "eta", "phi"))
        m = get(p.mass).astype(np.float64) if isinstance(p.mass, str) else np.full(len(pt), p.mass)
        out["pair_mass"] = invariant_mass(pt[t], eta[t], phi[t], m[t], pt[pr], eta[pr], phi[pr], m[pr])
    if "pair_charge" in p.derived:
        q = get(p.charge).astype(np.int64)
        out["pair_charge"] = q[t] * q[pr]
    if "pair_dr" in p.derived:
        eta, phi = get("eta").astype(np.float64), get("phi").astype(np.float64)
        out["pair_dr"] = np.hypot(eta[t] - eta[pr], delta_phi(phi[t], phi[pr]))
    return out, len(ev)


def _jagged_flat(values: Any, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts per row, flat values) of the singly jagged branch ``name``; ExprError otherwise."""
    if not (isinstance(values, ak.Array) and values.ndim == 2):
        raise ExprError(f"branch {name!r} must be a jagged list per row", where)
    return ak.to_numpy(ak.num(values, axis=1)), ak.to_numpy(ak.flatten(values, axis=1))


def shared_hit_fraction(probe_hits: Any, target_hits: Any, target_counts: Any = None, where: str = "hit_match"
                        ) -> np.ndarray:
    """Per row, the largest shared-hit fraction |H_probe ∩ H_target| / |H_probe| of the probe track over the
    row's target tracks (0.0 without a shared hit), by :func:`calibflow.kernels.matching.shared_fraction_match`.

    ``probe_hits``: jagged hit IDs per row; ``target_hits``: the targets' hit IDs concatenated per row, split
    into tracks by the jagged ``target_counts`` (hits per track), or doubly jagged when ``target_counts`` is
    None. Raises ExprError (naming ``where``) when the counts do not add up.
    """
    from calibflow.kernels.matching import shared_fraction_match
    from calibflow.kernels.pairing import offsets_from_counts

    n_probe_hits, probe = _jagged_flat(probe_hits, "probe_hits", where)
    if target_counts is None:
        if not (isinstance(target_hits, ak.Array) and target_hits.ndim == 3):
            raise ExprError("target_hits must be doubly jagged (one list per track) without target_counts", where)
        target_counts = ak.num(target_hits, axis=2)
        target_hits = ak.flatten(target_hits, axis=2)
    n_tracks, hits_per_track = _jagged_flat(target_counts, "target_counts", where)
    n_target_hits, targets = _jagged_flat(target_hits, "target_hits", where)
    rows = len(n_probe_hits)
    if len(n_tracks) != rows or len(n_target_hits) != rows:
        raise ExprError("probe and target branches have different numbers of rows", where)
    track_offsets = offsets_from_counts(n_tracks)
    cumulative = np.concatenate([[0], np.cumsum(hits_per_track)])
    if np.any(hits_per_track < 0) or not np.array_equal(
            cumulative[track_offsets[1:]] - cumulative[track_offsets[:-1]], n_target_hits):
        raise ExprError("target_counts do not add up to the number of target_hits of each row", where)
    _, fraction = shared_fraction_match(np.arange(rows + 1, dtype=np.int64), offsets_from_counts(n_probe_hits), probe,
                                        track_offsets, offsets_from_counts(hits_per_track), targets,
                                        0.0)
    return fraction


def add_hit_matches(cols: dict[str, Any], matches: Sequence[HitMatchSpec], rows: np.ndarray | None = None) -> None:
    """Add the shared-hit-fraction column of every ``hit_match`` entry to ``cols`` (in place), computed for the
    row indices ``rows`` only (default: all; the other rows get 0.0)."""
    n = len(next(iter(cols.values())))
    for i, h in enumerate(matches):
        args = [cols[h.probe_hits], cols[h.target_hits], cols[h.target_counts] if h.target_counts else None]
        if rows is None:
            cols[h.name] = shared_hit_fraction(*args, where=f"hit_match[{i}]")
            continue
        cols[h.name] = np.zeros(n)
        cols[h.name][rows] = shared_hit_fraction(*(a if a is None else a[rows] for a in args), where=f"hit_match[{i}]")


def _event_arrays(chunk: Mapping[str, Any]) -> dict[str, Any]:
    """Flat awkward branches as numpy (fast expression evaluation); jagged ones stay awkward."""
    return {k: ak.to_numpy(v) if isinstance(v, ak.Array) and v.ndim == 1 else v for k, v in chunk.items()}


# --- fused cuts and outputs (flat tuples) -----------------------------------------------------------
def _fused_enabled() -> bool:
    """Whether flat tuples use the fused numba loop (``CALIBFLOW_FUSED=0`` keeps numpy, e.g. to compare)."""
    return os.environ.get("CALIBFLOW_FUSED", "1") != "0"


def _fused(spec: PrepSpec, cols: Mapping[str, np.ndarray]) -> FusedSelection | None:
    """The fused loop of the spec's event cuts, cuts and columns over the flat numpy ``cols`` (at least
    one row), or None where an expression needs numpy."""
    return fused_loop([e for _, e in [*spec.event_cuts, *spec.cuts]], spec.columns, cols, masked=spec.lumi is not None)


def fused_loop(stages: Sequence[Expression], columns: Mapping[str, Expression], cols: Mapping[str, np.ndarray],
               masked: bool = False) -> FusedSelection | None:
    """The fused loop of cut ``stages`` and output ``columns`` over the flat numpy ``cols`` (at least one
    row), storing each column in the dtype of the numpy path (:func:`_outputs`); None where an expression
    needs numpy. ``masked``: the loop takes a start mask (the lumi mask)."""
    from calibflow.kernels.fused import fused_selection

    first = {k: v[:1] for k, v in cols.items()}
    stored = {name: (e, _stored_dtype(name, _per_row(e.evaluate(first), 1, e.where).dtype))
              for name, e in columns.items()}
    return fused_selection(stages, stored, {k: v.dtype for k, v in cols.items()}, masked=masked)


def _fused_outputs(fused: FusedSelection, spec: PrepSpec, cols: Mapping[str, np.ndarray], n: int,
                   flow: dict[str, int], lumi: Test | None) -> dict[str, np.ndarray]:
    """Output columns of the kept rows of ``cols`` by the fused loop (the ``lumi`` mask test by numpy
    first); adds to the cut flow as :func:`_cut_flow` does."""
    start = None
    if lumi is not None:
        start = _per_row(lumi(cols), n, "lumi_mask").astype(bool)
        flow["lumi"] += int(np.count_nonzero(start))
    out, counts = fused.run(cols, n, start)
    for (stage, _), count in zip([*spec.event_cuts, *spec.cuts], counts, strict=True):
        flow[stage] += int(count)
    return out


# --- one file --------------------------------------------------------------------------------------
def _stage_tests(spec: PrepSpec) -> tuple[list[tuple[str, str, Test]], list[tuple[str, str, Test]]]:
    """(event-level stages: lumi mask and event cut; candidate stages) as (stage, config key, test)."""
    pre: list[tuple[str, str, Test]] = []
    if spec.lumi is not None:
        mask = spec.lumi.mask()
        pre.append(("lumi", "lumi_mask", lambda cols: mask(cols[LUMI_BRANCHES[0]], cols[LUMI_BRANCHES[1]])))
    pre += [(stage, e.where, e.evaluate) for stage, e in spec.event_cuts]
    return pre, [(stage, e.where, e.evaluate) for stage, e in spec.cuts]


def _check_input(path: str, tree: Any, spec: PrepSpec) -> bool:
    """PrepError for an empty tree or missing branches; returns whether any branch read is jagged."""
    try:
        entries = tree.num_entries
        missing = [b for b in spec.branches if b not in tree]
        jagged = any(isinstance(getattr(tree[b], "interpretation", None), uproot.AsJagged)
                     for b in spec.branches if b not in missing)
    except Exception as exc:
        raise PrepError(f"{path}: cannot read tree {spec.tree!r} ({_first_line(exc)})") from None
    if entries == 0:
        raise PrepError(f"{path}: tree {spec.tree!r} has zero entries")
    if missing:
        raise PrepError(f"{path}: tree {spec.tree!r} has no branch(es) {', '.join(missing)}")
    return jagged


def _is_local(path: str) -> bool:
    """Whether ``path`` names a local file (a plain path or a ``file://`` URL)."""
    return "://" not in path or path.startswith("file://")


def _open(path: str) -> Any:
    """The ROOT file at ``path``; local files are memory-mapped (10% less CPU than uproot's default source)."""
    try:
        return uproot.open(path, **({"handler": uproot.source.file.MemmapSource} if _is_local(path) else {}))
    except FileNotFoundError:
        raise PrepError(f"{path}: file not found") from None
    except Exception as exc:
        raise PrepError(f"{path}: cannot read as a ROOT file ({_first_line(exc)})") from None


def _tree(path: str, f: Any, tree: str) -> Any:
    try:
        classes = f.classnames()
        found = tree in f
        obj = f[tree] if found else None
    except Exception as exc:
        raise PrepError(f"{path}: cannot read tree {tree!r} ({_first_line(exc)})") from None
    if not found:
        trees = [k.split(";")[0] for k, cls in classes.items() if cls.startswith(("TTree", "ROOT::RNTuple"))]
        raise PrepError(f"{path}: no tree {tree!r} (trees in file: {', '.join(trees) or 'none'})")
    return obj


def _chunks(path: str, tree: Any, branches: Sequence[str], step_size: str | int, library: str
            ) -> Iterator[dict[str, Any]]:
    """The branches of ``tree`` in chunks of about ``step_size`` (entries, or bytes of the branches as
    text such as ``"64 MB"``): flat numeric branches of a local file by :mod:`calibflow.io.baskets`,
    everything else by uproot."""
    from calibflow.io.baskets import read_flat

    flat = read_flat(path.removeprefix("file://"), tree, branches, step_size) if (
        library == "np" and _is_local(path)) else None
    return flat if flat is not None else tree.iterate(branches, step_size=step_size, library=library, how=dict)


def prepare_file(
    path: str, spec: PrepSpec, out_path: str, step_size: str | int = "64 MB", metadata: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Prepare one ROOT file into the HDF5 file ``out_path`` (atomic); return the cut flow counts.

    The cut flow maps ``read`` (entries of the tree) and each stage (:attr:`PrepSpec.stages`) to the
    number of entries remaining after it: events up to ``event``, candidates (pairs) after.
    Raises PrepError, one line naming the file and the problem, for a file that cannot be prepared.
    """
    use_fast_zlib()
    pre, post = _stage_tests(spec)
    flow = dict.fromkeys(spec.stages, 0)
    with _open(path) as f:
        tree = _tree(path, f, spec.tree)
        jagged = _check_input(path, tree, spec)
        library = "ak" if jagged or spec.pairing is not None or spec.hit_matches else "np"
        # no chunk cache: TableWriter writes whole chunks, which then go straight to the filter (15% faster)
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w", libver="v110", rdcc_nbytes=0) as h5:
            writer = TableWriter(h5, compression=prep_compression)
            fusable = library == "np" and spec.pairing is None and not spec.hit_matches and _fused_enabled()
            fused: FusedSelection | None = None
            try:
                for chunk in _chunks(path, tree, spec.branches, step_size, library):
                    cols = _event_arrays(chunk) if library == "ak" else chunk
                    n = len(next(iter(cols.values())))
                    flow["read"] += n
                    if spec.pairing is not None:
                        keep = _cut_flow(cols, n, pre, flow)
                        cols, n = make_pairs(_select_rows(cols, keep) if not keep.all() else cols, spec.pairing)
                        flow["pairs"] += n
                        pre_pair: list[tuple[str, str, Test]] = []
                    else:
                        pre_pair = pre
                    stages = [*pre_pair, *post]
                    if fusable and n:
                        fused = fused or _fused(spec, cols)
                        fusable = fused is not None
                    if fused is not None:
                        writer.append(_fused_outputs(fused, spec, cols, n, flow, pre[0][2] if spec.lumi else None))
                        continue
                    if spec.pairing is None and spec.hit_matches:  # fractions only for rows that can be kept
                        first = spec.first_hit_match_stage
                        keep = _cut_flow(cols, n, stages[:first], flow)
                        add_hit_matches(cols, spec.hit_matches, np.flatnonzero(keep))
                        keep = _cut_flow(cols, n, stages[first:], flow, keep)
                    else:
                        keep = _cut_flow(cols, n, stages, flow)
                    writer.append(_outputs(cols, n, keep, spec.columns))
            except ExprError as exc:
                raise PrepExpressionError(f"{path}: {exc}") from None
            except Exception as exc:
                raise PrepError(f"{path}: reading failed ({_first_line(exc)})") from None
            writer.ensure({k: (bool if is_flag(k) else np.float64) for k in spec.columns})
            write_metadata(h5, {"source": file_identity(path), "spec": spec.describe(), "cutflow": flow,
                                "stages": list(flow), **(metadata or {})})
    return flow


def output_name(path: str, key: str) -> str:
    """File name of the prepared output of ``path``: its stem and its content key."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{key}.h5"


def merged_cutflow(paths: Sequence[str]) -> dict[str, int]:
    """Sum of the cut flows stored in prepared files, stages in order (entries left after each stage)."""
    total: dict[str, int] = {}
    for path in paths:
        meta = read_metadata(path)
        flow = meta.get("cutflow", {})
        order = meta.get("stages") or sorted(flow, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99)
        for stage in order:
            total[stage] = total.get(stage, 0) + int(flow[stage])
    return total
