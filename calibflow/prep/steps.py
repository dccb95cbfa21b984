"""The steps of preparing a chunk of rows: cut flows, output columns, pairing, matching, the fused loop.

Each step takes the chunk's columns (branch name -> numpy or awkward array) and a part of the
:class:`calibflow.prep.spec.PrepSpec`; :func:`calibflow.prep.prepare.prepare_file` chains them.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np

from calibflow.expr import ExprError, Expression
from calibflow.prep.spec import (
    LUMI_BRANCHES,
    PAIR_COLUMNS,
    PROBE,
    TAG,
    HitMatchSpec,
    PairingSpec,
    PrepSpec,
    is_flag,
)

if TYPE_CHECKING:
    from calibflow.kernels.fused import FusedSelection
    from calibflow.kernels.fused_pairs import FusedPairs


def _per_row(values: Any, n: int, where: str) -> np.ndarray:
    """``values`` as a numpy array of ``n`` rows (scalars broadcast); ExprError for a jagged result and
    for strings (or other objects), which are neither numbers nor decisions."""
    if isinstance(values, ak.Array):
        if values.ndim > 1:
            raise ExprError("gives several values per row (a per-object collection); reduce it with "
                            "any/all/count/sum/min/max", where)
        values = ak.to_numpy(values)
    values = np.asarray(values)
    if values.dtype.kind in "OSUT":
        what = "objects" if values.dtype.kind == "O" else "strings"
        raise ExprError(f"gives {what}, not numbers: a string branch can only be compared with string literals "
                        "in a cut (Type == 'GG', Type in ('GG', 'GE')), not used as a value", where)
    return np.broadcast_to(values, (n,))


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


def cut_flow(cols: Mapping[str, Any], n: int, stages: Sequence[tuple[str, str, Test]], flow: dict[str, int],
              keep: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``n`` rows of ``cols`` passing every (stage, config key, test), starting from the
    rows in ``keep`` (default: all); adds the survivors to ``flow``."""
    keep = np.ones(n, dtype=bool) if keep is None else keep.copy()
    for stage, where, test in stages:
        keep &= _per_row(test(cols), n, where).astype(bool, copy=False)
        flow[stage] += int(np.count_nonzero(keep))
    return keep


def output_columns(cols: Mapping[str, Any], n: int, keep: np.ndarray, columns: Mapping[str, Expression]
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


def select_rows(cols: Mapping[str, Any], keep: np.ndarray) -> dict[str, Any]:
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


def pairing_key(spec: PrepSpec) -> str | None:
    """What the pairs of ``spec`` depend on, aliases expanded: lumi mask, event cuts, the pairing's collection,
    tag and probe selections, mass, charge and matches. Preparations with equal keys form the same pairs of
    every chunk (:func:`union_pairing`). None without ``pairing``."""
    p = spec.pairing
    if p is None:
        return None

    def form(e: Expression | None) -> str | None:
        return None if e is None else ast.dump(e.tree) if e.tree is not None else e.text

    return json.dumps([spec.lumi.sha256 if spec.lumi else None, [[k, form(e)] for k, e in spec.event_cuts],
                       p.collection, form(p.tag), form(p.probe), p.mass, p.charge,
                       [[m.objects, form(m.cut), m.max_dr, m.name] for m in p.matches]])


def union_pairing(specs: Sequence[PrepSpec]) -> PairingSpec:
    """The pairing of ``specs`` (of equal :func:`pairing_key`) giving every per-pair column any of them needs."""
    first = specs[0].pairing
    assert first is not None
    pairings = [s.pairing for s in specs if s.pairing is not None]
    return dataclasses.replace(
        first, fields=tuple(sorted({f for p in pairings for f in p.fields})),
        event_branches=tuple(sorted({b for p in pairings for b in p.event_branches})),
        derived=tuple(d for d in PAIR_COLUMNS if any(d in p.derived for p in pairings)))


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


def event_arrays(chunk: Mapping[str, Any]) -> dict[str, Any]:
    """Flat awkward branches as numpy (fast expression evaluation); jagged ones and strings stay awkward
    (numpy would pad every string to the longest one)."""
    return {k: ak.to_numpy(v) if isinstance(v, ak.Array) and v.ndim == 1 and not _is_text(v) else v
            for k, v in chunk.items()}


def _is_text(values: ak.Array) -> bool:
    """Whether an awkward array holds strings or bytestrings."""
    return values.layout.purelist_parameter("__array__") in ("string", "bytestring")


# --- fused cuts and outputs (flat tuples) -----------------------------------------------------------
def fused_enabled() -> bool:
    """Whether the fused numba loops are used: of flat tuples (:func:`fused_loop`) and of pairing
    (:func:`spec_fused_pairs`); ``CALIBFLOW_FUSED=0`` keeps the reference paths, e.g. to compare."""
    return os.environ.get("CALIBFLOW_FUSED", "1") != "0"


def spec_fused_loop(spec: PrepSpec, cols: Mapping[str, np.ndarray]) -> FusedSelection | None:
    """The fused loop of the spec's event cuts, cuts and columns over the flat numpy ``cols`` (at least
    one row), or None where an expression needs numpy."""
    return fused_loop([e for _, e in [*spec.event_cuts, *spec.cuts]], spec.columns, cols, masked=spec.lumi is not None)


def fused_loop(stages: Sequence[Expression], columns: Mapping[str, Expression], cols: Mapping[str, np.ndarray],
               masked: bool = False) -> FusedSelection | None:
    """The fused loop of cut ``stages`` and output ``columns`` over the flat numpy ``cols`` (at least one
    row; string branches may be awkward arrays, which the loop never reads), storing each column in the dtype
    of the numpy path (:func:`output_columns`); None where an expression needs numpy. ``masked``: the loop
    takes a start mask (the lumi mask)."""
    from calibflow.kernels.fused import fused_selection

    first = {k: v[:1] for k, v in cols.items()}
    stored = {name: (e, _stored_dtype(name, _per_row(e.evaluate(first), 1, e.where).dtype))
              for name, e in columns.items()}
    dtypes = {k: v.dtype for k, v in cols.items() if isinstance(v, np.ndarray)}  # strings may be awkward
    return fused_selection(stages, stored, dtypes, masked=masked)


def fused_outputs(fused: FusedSelection, spec: PrepSpec, cols: Mapping[str, np.ndarray], n: int,
                   flow: dict[str, int], lumi: Test | None) -> dict[str, np.ndarray]:
    """Output columns of the kept rows of ``cols`` by the fused loop (the ``lumi`` mask test by numpy
    first); adds to the cut flow as :func:`cut_flow` does. Where the loop fails on the chunk, numpy evaluates
    it: after an integer overflow to report where (the same rows overflow in both), after anything else
    with a ``RuntimeWarning``."""
    from calibflow.kernels.fused import FusedOverflow

    start = None if lumi is None else _per_row(lumi(cols), n, "lumi_mask").astype(bool)
    try:
        out, counts = fused.run(cols, n, start)
    except Exception as exc:
        if not isinstance(exc, FusedOverflow):
            warnings.warn(f"calibflow: the fused loop failed on a chunk, numpy is used for it ({type(exc).__name__}: "
                          f"{exc})", RuntimeWarning, stacklevel=2)
        pre, post = stage_tests(spec)
        return output_columns(cols, n, cut_flow(cols, n, [*pre, *post], flow), spec.columns)
    if start is not None:
        flow["lumi"] += int(np.count_nonzero(start))
    for (stage, _), count in zip([*spec.event_cuts, *spec.cuts], counts, strict=True):
        flow[stage] += int(count)
    return out


# --- fused pairing (NanoAOD-style collections) ---------------------------------------------------------
def spec_fused_pairs(spec: PrepSpec, cols: Mapping[str, Any]) -> FusedPairs | None:
    """The fused pairing loop (:mod:`calibflow.kernels.fused_pairs`) of ``spec`` (with ``pairing``) over the chunk
    ``cols`` (the branches read: numpy for flat ones, awkward for jagged ones), or None where something needs the
    reference path (:func:`make_pairs`)."""
    from calibflow.kernels.fused_pairs import fused_pairs

    assert spec.pairing is not None
    kinds = _branch_kinds(spec.branches, cols)
    key = (json.dumps(spec.describe(), sort_keys=True, default=str), tuple(sorted((k, str(d), j) for k, (d, j) in
                                                                                  kinds.items())))
    if key not in _PAIR_LOOPS:  # the description determines the output, hence the loop (a worker prepares many files)
        _PAIR_LOOPS[key] = fused_pairs(spec.pairing, [e for _, e in spec.event_cuts], [e for _, e in spec.cuts],
                                       spec.columns, spec.branches, kinds, spec.lumi is not None, _stored_dtype)
    return _PAIR_LOOPS[key]


_PAIR_LOOPS: dict[tuple[str, tuple[tuple[str, str, bool], ...]], FusedPairs | None] = {}


def _branch_kinds(names: Sequence[str], cols: Mapping[str, Any]) -> dict[str, tuple[np.dtype, bool]]:
    """(dtype, jagged) of the number branches among ``names`` of the chunk ``cols`` (flat numpy arrays and singly
    jagged awkward arrays of numbers; others left out)."""
    from calibflow.kernels.fused_pairs import jagged_parts

    kinds: dict[str, tuple[np.dtype, bool]] = {}
    for name in names:
        values = cols[name]
        if isinstance(values, np.ndarray) and values.ndim == 1:
            kinds[name] = (values.dtype, False)
        elif isinstance(values, ak.Array) and values.ndim == 2 and not _is_text(values):
            try:
                kinds[name] = (jagged_parts(values)[1].dtype, True)  # no copy for the layouts read
            except (ValueError, TypeError):
                continue  # not numbers (records, options): never read by the loop
    return kinds


def fused_pair_outputs(fused: FusedPairs, spec: PrepSpec, cols: Mapping[str, Any], n: int, flow: dict[str, int],
                       lumi: Test | None) -> dict[str, np.ndarray] | None:
    """Output columns of the kept pairs of the ``n`` events of ``cols`` by the fused pairing loop (the ``lumi``
    mask test by numpy first), adding to the cut flow (``lumi``, event stages, ``pairs``, candidate stages) as
    the reference path does; None where the loop fails on the chunk (an integer overflow, branches of a collection
    with other counts: the reference path reports where; anything else also warns), then nothing was added."""
    from calibflow.kernels.fused import FusedOverflow
    from calibflow.kernels.fused_pairs import Mismatch

    start = None if lumi is None else _per_row(lumi(cols), n, "lumi_mask").astype(bool)
    try:
        out, counts = fused.run(cols, n, start)
    except (FusedOverflow, Mismatch):
        return None
    except Exception as exc:
        warnings.warn(f"calibflow: the fused pairing loop failed on a chunk, the reference path is used for it "
                      f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
        return None
    if start is not None:
        flow["lumi"] += int(np.count_nonzero(start))
    stages = [*(s for s, _ in spec.event_cuts), "pairs", *(s for s, _ in spec.cuts)]
    for stage, count in zip(stages, counts, strict=True):
        flow[stage] += int(count)
    return out


def stage_tests(spec: PrepSpec) -> tuple[list[tuple[str, str, Test]], list[tuple[str, str, Test]]]:
    """(event-level stages: lumi mask and event cut; candidate stages) as (stage, config key, test)."""
    pre: list[tuple[str, str, Test]] = []
    if spec.lumi is not None:
        mask = spec.lumi.mask()
        pre.append(("lumi", "lumi_mask", lambda cols: mask(cols[LUMI_BRANCHES[0]], cols[LUMI_BRANCHES[1]])))
    pre += [(stage, e.where, e.evaluate) for stage, e in spec.event_cuts]
    return pre, [(stage, e.where, e.evaluate) for stage, e in spec.cuts]

