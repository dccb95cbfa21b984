"""One generated numba loop for NanoAOD-style tag-and-probe: event cuts, trigger-object matching, tag and probe
selections, pairs, pair cuts and output columns.

The reference path (:func:`calibflow.prep.steps.make_pairs` after :func:`calibflow.prep.steps.cut_flow`, then the
candidate stages and :func:`calibflow.prep.steps.output_columns`) evaluates each selection over whole chunks as
awkward arrays: on a NanoAOD file that is 2/3 of a file's preparation once the metadata is read lazily. The loop of
:func:`fused_pairs` walks the jagged offsets once per chunk::

    for each event:           event cuts (after the lumi mask), counted
      for each match:         the matched collection's objects passing the match cut, then for each object of
                              the collection the nearest of them in ΔR (:func:`calibflow.kernels.matching.
                              nearest_in_event`, the reference's own inner loop)
      for each object:        tag and probe selections
      for each (tag, probe):  pair_mass, pair_charge, pair_dr; the candidate cuts, counted; the output columns

Expressions are translated by :mod:`calibflow.kernels.fused` (the same operations in the same dtypes as numpy, so
the results are equal bit for bit; anything it does not translate keeps the reference path), with each name bound
to its scope: event branches to ``e<k>[ev]``, collection fields to ``b<k>[i]`` (the tag's at ``t``, the probe's at
``p`` in pair expressions), the matched collection's fields to ``g<q>_<k>[r]``. A chunk on which the loop fails
(an integer overflow, a collection whose branches disagree in their counts) is prepared by the reference path,
which reports it. Pairs are ordered by event, then tag, then probe, as in the reference.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import awkward as ak
import numpy as np

from calibflow.expr import Expression
from calibflow.kernels import fused
from calibflow.kernels.fused import _HEADER, FusedOverflow, _cast, _Translator, _truth, _Unsupported, compiled
from calibflow.kernels.matching import _wrap_dphi, nearest_in_event
from calibflow.kernels.pairing import pair_mass


class Match(Protocol):
    """A ΔR match of the pairing (:class:`calibflow.prep.spec.MatchSpec`)."""

    objects: str
    cut: Expression | None
    max_dr: float
    name: str


class PairingSpec(Protocol):
    """What the loop needs of a pairing (:class:`calibflow.prep.spec.PairingSpec`; kernels import no stage)."""

    collection: str
    tag: Expression
    probe: Expression
    mass: float | str
    charge: str
    matches: Sequence[Match]
    fields: Sequence[str]
    event_branches: Sequence[str]
    derived: Sequence[str]

    @property
    def computed(self) -> frozenset[str]: ...

    def branch(self, fld: str) -> str: ...

__all__ = ["FusedPairs", "Mismatch", "fused_pairs", "jagged_parts"]

DERIVED_DTYPES = {"pair_mass": np.dtype(np.float64), "pair_charge": np.dtype(np.int64),
                  "pair_dr": np.dtype(np.float64)}
"""dtypes of the per-pair columns the loop computes (as :func:`calibflow.prep.steps.make_pairs`)."""


class Mismatch(ValueError):
    """The branches of a collection disagree in their object counts: the reference path reports it."""


@functools.lru_cache(maxsize=1)
def _helpers_digest() -> str:
    """SHA-256 of the sources of the compiled helpers the loop calls: in the generated source, so that a change to
    them renames the kernel (numba's cache does not follow calls into other modules)."""
    text = "".join(inspect.getsource(f.py_func) for f in (pair_mass, nearest_in_event, _wrap_dphi))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def jagged_parts(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets from 0, flat numpy content) of a jagged awkward array of numbers (events × objects), without
    copies where its layout allows; ValueError for anything else."""
    if not isinstance(values, ak.Array) or values.ndim != 2:
        raise ValueError("not a jagged array")
    layout = values.layout
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        content = np.asarray(layout.content.data)
        if offsets[0] != 0:
            content, offsets = content[offsets[0]:offsets[-1]], offsets - offsets[0]
        return offsets, content[: offsets[-1]]
    counts = ak.to_numpy(ak.num(values, axis=1)).astype(np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, ak.to_numpy(ak.flatten(values, axis=1))


@dataclass(frozen=True)
class FusedPairs:
    """A compiled pairing loop: :meth:`run` gives the kept pairs' output columns and the cut-flow counts."""

    kernel: Callable[..., int]
    events: tuple[str, ...]
    """Event-level branches, in the kernel's argument order."""
    collection: tuple[str, ...]
    """The paired collection's branches (the first gives the offsets), in argument order."""
    matched: tuple[tuple[str, ...], ...]
    """Per match, the matched collection's branches (``<objects>_eta`` first), in argument order."""
    outputs: tuple[tuple[str, np.dtype], ...]
    event_stages: int
    pair_stages: int
    masked: bool
    source: str

    def run(self, columns: Mapping[str, Any], n: int, start: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(output columns of the kept pairs, counts) of the ``n`` events of ``columns`` (numpy event branches,
        awkward jagged ones; ``start``: the events the lumi mask keeps, when :attr:`masked`). Counts: events after
        each event cut, pairs formed, pairs after each candidate cut. :class:`FusedOverflow` if an integer
        operation overflowed, :class:`Mismatch` if a collection's branches disagree in their counts."""
        offsets, fields = self._collection(columns, self.collection)
        matched = [self._collection(columns, names) for names in self.matched]
        events = [np.ascontiguousarray(columns[b]) for b in self.events]
        return self.call(n, start, events, offsets, fields, matched)

    def call(self, n: int, start: np.ndarray | None, events: Sequence[np.ndarray], offsets: np.ndarray,
             fields: Sequence[np.ndarray], matched: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]]
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`run` on the loop's inputs: the event branches, the collection's offsets and flat fields, and
        per match the matched collection's (contiguous numpy arrays, in the orders of :attr:`events`,
        :attr:`collection` and :attr:`matched`)."""
        counts_per_event = np.diff(offsets)
        bound = int(np.dot(counts_per_event, counts_per_event - 1)) if n else 0  # ordered pairs of different objects
        outs = [np.empty(bound, dtype) for _, dtype in self.outputs]
        counts = np.zeros(self.event_stages + 1 + self.pair_stages + 1, np.int64)  # last: an overflow
        mask = () if not self.masked else (np.ascontiguousarray(start, dtype=np.bool_),)
        args = [a for off, arrays in matched for a in (off, *arrays)]
        kept = self.kernel(n, *mask, offsets, *events, *fields, *args, *outs, counts)
        if counts[-1]:
            raise FusedOverflow("an integer operation overflowed")
        return {name: o[:kept] for (name, _), o in zip(self.outputs, outs, strict=True)}, counts[:-1]

    @staticmethod
    def _collection(columns: Mapping[str, Any], names: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(offsets, flat contents) of the branches ``names`` of one collection; Mismatch if their counts differ."""
        parts = [jagged_parts(columns[b]) for b in names]
        offsets = parts[0][0]
        if any(not np.array_equal(off, offsets) for off, _ in parts[1:]):
            raise Mismatch(f"the branches {', '.join(names)} have different object counts")
        return offsets, [np.ascontiguousarray(c) for _, c in parts]


@dataclass(frozen=True)
class _Layout:
    """Names of the loop's inputs and the source bound to each name in each scope."""

    events: tuple[str, ...]
    collection: tuple[str, ...]
    matched: tuple[tuple[str, ...], ...]

    def event_scope(self) -> dict[str, str]:
        return {b: f"e{k}[ev]" for k, b in enumerate(self.events)}

    def object_scope(self, at: str, flags: Mapping[str, str]) -> dict[str, str]:
        """Collection fields at object ``at`` (``i``, ``t`` or ``p``), match flags and event branches."""
        return {**self.event_scope(), **{b: f"b{k}[{at}]" for k, b in enumerate(self.collection)},
                **{name: f"{flag}[{at}]" for name, flag in flags.items()}}

    def match_scope(self, q: int) -> dict[str, str]:
        return {**self.event_scope(), **{b: f"g{q}_{k}[r]" for k, b in enumerate(self.matched[q])}}


def _layout(pairing: PairingSpec, names: Sequence[str], kinds: Mapping[str, tuple[np.dtype, bool]]) -> _Layout:
    """Which of the branches ``names`` (with their (dtype, jagged)) are event branches, the collection's and each
    matched collection's; _Unsupported for a branch of another kind (another collection, strings)."""
    own = f"{pairing.collection}_"
    coll = sorted(b for b in names if b.startswith(own) and b not in pairing.computed)  # with eta, phi to match
    if not coll:
        raise _Unsupported("a collection read by its counter only")
    matched = []
    for m in pairing.matches:
        prefix = f"{m.objects}_"
        rest = sorted(b for b in names if b.startswith(prefix) and b not in (prefix + "eta", prefix + "phi"))
        matched.append((prefix + "eta", prefix + "phi", *rest))
    jagged = {*coll, *(b for g in matched for b in g)}
    events = sorted(b for b in names if b not in jagged and b not in pairing.computed)
    for b in [*jagged, *events]:
        if b not in kinds or kinds[b][1] != (b in jagged):
            raise _Unsupported(f"{b} is not a {'jagged' if b in jagged else 'flat'} number branch")
    return _Layout(tuple(events), tuple(coll), tuple(matched))


def _source(pairing: PairingSpec, event_stages: Sequence[Expression], pair_stages: Sequence[Expression],
            columns: Mapping[str, Expression], names: Sequence[str], kinds: Mapping[str, tuple[np.dtype, bool]],
            masked: bool, stored: Callable[[str, np.dtype], Any]
            ) -> tuple[str, _Layout, tuple[tuple[str, np.dtype], ...]]:
    """Source of the loop, its inputs and its output columns with their stored dtypes (``stored(name, dtype)``);
    _Unsupported where an expression or a branch is outside what the loop translates."""
    lay = _layout(pairing, names, kinds)
    dtypes = {b: np.dtype(d) for b, (d, _) in kinds.items()}
    flags = {m.name: f"m{q}" for q, m in enumerate(pairing.matches)}
    flag_dtypes = dict.fromkeys(flags, np.dtype(np.bool_))
    for e in [*event_stages, *pair_stages, *columns.values(), pairing.tag, pairing.probe,
              *(m.cut for m in pairing.matches if m.cut is not None)]:
        if e.tree is None:
            raise _Unsupported("no syntax tree")
    ev = _Translator(lay.event_scope(), {b: dtypes[b] for b in lay.events}, "u")
    event_tests = [_truth(ev.value(e.tree)) for e in event_stages]
    obj = _Translator(lay.object_scope("i", flags), {**{b: dtypes[b] for b in (*lay.events, *lay.collection)},
                                                     **flag_dtypes}, "v")
    tag, probe = _truth(obj.value(pairing.tag.tree)), _truth(obj.value(pairing.probe.tree))
    match_lines, match_tests = [], []
    for q, m in enumerate(pairing.matches):
        mt = _Translator(lay.match_scope(q), {b: dtypes[b] for b in (*lay.events, *lay.matched[q])}, f"w{q}_")
        match_tests.append("True" if m.cut is None else _truth(mt.value(m.cut.tree)))
        match_lines.append(mt.lines)
    # pair scope: tag_<field>, probe_<field>, event branches, the derived pair columns
    index = {b: k for k, b in enumerate(lay.collection)}

    def field(fld: str, at: str) -> tuple[str, np.dtype]:
        name = pairing.branch(fld)
        if name in flags:
            return f"{flags[name]}[{at}]", np.dtype(np.bool_)
        if name not in index:
            raise _Unsupported(f"no branch {name}")
        return f"b{index[name]}[{at}]", dtypes[name]

    pair_vars = {b: f"e{k}[ev]" for k, b in enumerate(lay.events) if b in pairing.event_branches}
    pair_dtypes = {b: dtypes[b] for b in pair_vars}
    for fld in pairing.fields:
        for role, at in (("tag_", "t"), ("probe_", "p")):
            pair_vars[role + fld], pair_dtypes[role + fld] = field(fld, at)
    derived = []

    def f64(fld: str, at: str) -> str:
        return f"np.float64({field(fld, at)[0]})"

    if "pair_mass" in pairing.derived:
        mass = ((lambda at: f64(pairing.mass, at)) if isinstance(pairing.mass, str)
                else (lambda at: repr(float(pairing.mass))))
        kin = {at: ", ".join([f64("pt", at), f64("eta", at), f64("phi", at), mass(at)]) for at in ("t", "p")}
        derived.append(f"pm = pair_mass({kin['t']}, {kin['p']})")
    if "pair_charge" in pairing.derived:
        q = {at: f"np.uint64(np.int64({field(pairing.charge, at)[0]}))" for at in ("t", "p")}
        derived.append(f"pq = np.int64({q['t']} * {q['p']})")  # int64 product, wrapping as numpy's
    if "pair_dr" in pairing.derived:
        derived.append(f"pdr = np.hypot({f64('eta', 't')} - {f64('eta', 'p')}, "
                       f"_wrap_dphi({f64('phi', 't')}, {f64('phi', 'p')}))")
    local = {"pair_mass": "pm", "pair_charge": "pq", "pair_dr": "pdr"}
    for d in pairing.derived:
        pair_vars[d], pair_dtypes[d] = local[d], DERIVED_DTYPES[d]
    pt = _Translator(pair_vars, pair_dtypes, "t")
    pair_tests = [_truth(pt.value(e.tree)) for e in pair_stages]
    outputs, values = [], []
    for name, e in columns.items():
        v = pt.value(e.tree)
        dtype = np.dtype(stored(name, v.dtype))
        outputs.append((name, dtype))
        values.append(_truth(v) if dtype == np.bool_ else _cast(v, dtype))
    source = _kernel_source(lay, masked, event_tests, ev.lines, [(m.max_dr, t, lines) for m, t, lines in zip(
        pairing.matches, match_tests, match_lines, strict=True)], obj.lines, tag, probe, derived, pt.lines,
        pair_tests, values, pairing)
    return source, lay, tuple(outputs)


def _kernel_source(lay: _Layout, masked: bool, event_tests: Sequence[str], event_lines: Sequence[str],
                   matches: Sequence[tuple[float, str, Sequence[str]]], object_lines: Sequence[str], tag: str,
                   probe: str, derived: Sequence[str], pair_lines: Sequence[str], pair_tests: Sequence[str],
                   values: Sequence[str], pairing: PairingSpec) -> str:
    """The generated module: :data:`calibflow.kernels.fused._HEADER`, the helpers' imports and the kernel."""
    m_args = [a for q, g in enumerate(lay.matched) for a in (f"mo{q}", *(f"g{q}_{k}" for k in range(len(g))))]
    args = ["n", *(["start"] if masked else []), "off", *(f"e{k}" for k in range(len(lay.events))),
            *(f"b{k}" for k in range(len(lay.collection))), *m_args, *(f"o{c}" for c in range(len(values))), "counts"]
    eta, phi = (lay.collection.index(pairing.branch(f)) if matches else -1 for f in ("eta", "phi"))
    body = [f"@numba.njit(cache=True, nogil=True, error_model='numpy')\ndef kernel({', '.join(args)}):",
            "    bad = False", "    j = 0", "    npairs = 0", "    n_obj = off[n]",
            *(f"    c{s} = 0" for s in range(len(event_tests))), *(f"    d{s} = 0" for s in range(len(pair_tests))),
            "    tg = np.zeros(n_obj, np.bool_)", "    pb = np.zeros(n_obj, np.bool_)"]
    for q in range(len(matches)):
        body += [f"    m{q} = np.zeros(n_obj, np.bool_)", f"    x{q} = 0", "    for ev in range(n):",
                 f"        x{q} = max(x{q}, mo{q}[ev + 1] - mo{q}[ev])",
                 f"    be{q} = np.empty(x{q}, np.float64)", f"    bp{q} = np.empty(x{q}, np.float64)"]
    body += ["    for ev in range(n):", *(f"        {line}" for line in event_lines),
             "        k = start[ev]" if masked else "        k = True"]
    for s, test in enumerate(event_tests):
        body += [f"        k = k & {test}", f"        c{s} += k"]
    body += ["        if not k:", "            continue", "        lo = off[ev]", "        hi = off[ev + 1]"]
    for q, (max_dr, test, lines) in enumerate(matches):
        body += [f"        s{q} = 0", f"        for r in range(mo{q}[ev], mo{q}[ev + 1]):",
                 *(f"            {line}" for line in lines),
                 f"            be{q}[s{q}] = np.float64(g{q}_0[r])", f"            bp{q}[s{q}] = np.float64(g{q}_1[r])",
                 f"            s{q} += {test}",
                 "        for i in range(lo, hi):",
                 f"            h, dr = nearest_in_event(np.float64(b{eta}[i]), np.float64(b{phi}[i]), be{q}, bp{q}, "
                 f"s{q})",
                 f"            m{q}[i] = h >= 0 and dr <= {float(max_dr)!r}"]
    body += ["        for i in range(lo, hi):", *(f"            {line}" for line in object_lines),
             f"            tg[i] = {tag}", f"            pb[i] = {probe}",
             "        for t in range(lo, hi):", "            if not tg[t]:", "                continue",
             "            for p in range(lo, hi):", "                if p == t or not pb[p]:",
             "                    continue", "                npairs += 1",
             *(f"                {line}" for line in [*derived, *pair_lines]), "                kk = True"]
    for s, test in enumerate(pair_tests):
        body += [f"                kk = kk & {test}", f"                d{s} += kk"]
    body += [f"                o{c}[j] = {v}" for c, v in enumerate(values)]
    body += ["                j += kk", *(f"    counts[{s}] = c{s}" for s in range(len(event_tests))),
             f"    counts[{len(event_tests)}] = npairs",
             *(f"    counts[{len(event_tests) + 1 + s}] = d{s}" for s in range(len(pair_tests))),
             f"    counts[{len(event_tests) + 1 + len(pair_tests)}] = bad", "    return j"]
    imports = ("from calibflow.kernels.matching import _wrap_dphi, nearest_in_event\n"
               "from calibflow.kernels.pairing import pair_mass\n"
               f"# helpers {_helpers_digest()}\n\n\n")
    return _HEADER.replace("calibflow.kernels.fused: cuts and outputs", "calibflow.kernels.fused_pairs: pairs, cuts "
                           "and outputs") + imports + "\n".join(body) + "\n"


def fused_pairs(pairing: PairingSpec, event_stages: Sequence[Expression], pair_stages: Sequence[Expression],
                columns: Mapping[str, Expression], names: Sequence[str], kinds: Mapping[str, tuple[Any, bool]],
                masked: bool, stored: Callable[[str, np.dtype], Any]) -> FusedPairs | None:
    """The pairing loop of ``pairing`` with event cuts ``event_stages``, candidate cuts ``pair_stages`` (in order)
    and output ``columns`` (stored in ``stored(name, dtype)``), reading the branches ``names`` of
    ``kinds`` (name: (numpy dtype, jagged)); None where something is outside what the loop translates (the caller
    keeps the reference path), and also, with a ``RuntimeWarning``, if making it fails otherwise. ``masked``:
    :meth:`FusedPairs.run` takes the lumi mask's decisions."""
    try:
        source, lay, outputs = _source(pairing, event_stages, pair_stages, columns, names, kinds, masked, stored)
    except _Unsupported:
        return None
    except Exception as exc:
        return fused._failed("could not be generated", exc)

    def made(kernel: Callable[..., int]) -> FusedPairs:
        loop = FusedPairs(kernel, lay.events, lay.collection, lay.matched, outputs, len(event_stages),
                          len(pair_stages), masked, source)

        def ones(names: Sequence[str], size: int) -> list[np.ndarray]:
            return [np.ones(size, np.dtype(kinds[b][0])) for b in names]

        two = np.array([0, 2], np.int64)  # the trial: one event of two objects, two objects in each match
        with contextlib.suppress(FusedOverflow):  # an overflow on the trial event: the kernel works
            loop.call(1, np.ones(1, bool) if masked else None, ones(lay.events, 1), two, ones(lay.collection, 2),
                      [(two, ones(g, 2)) for g in lay.matched])
        return loop

    return compiled(source, made)
