"""Tuple preparation: one ROOT file in, one compact HDF5 file of the needed columns after cuts out.

Reads only the branches the config's expressions reference, chunk by chunk (bounded memory), and
applies, in order: the golden-JSON lumi mask (``lumi``), the event selection (``event``), tag-and-probe
pairing of a jagged collection (``pairs``, with a ``pairing`` section), then the candidate stages
``tag``, ``probe``, ``pair`` and the sample ``cut``. The cut flow (entries left after each stage) is
stored in the output's metadata. :func:`prepare_files` writes several outputs (the variants of a calibration
with other selections) from one read of the union of their branches.

Without ``pairing`` the input is a flat ntuple, one row per candidate. With it, every ordered
(tag, probe) pair of different objects of an event is one row: the later expressions see the per-pair
columns ``tag_<field>``, ``probe_<field>`` (from ``<collection>_<field>``), ``pair_mass`` (GeV),
``pair_charge`` (product of the charges), ``pair_dr`` and the event-level branches by their names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import uproot

from calibflow.expr import ExprError
from calibflow.hashing import file_identity
from calibflow.io.integrity import LIBVER
from calibflow.io.remote import RemoteError, is_transient, retrying
from calibflow.io.root import RemoteSource, use_fast_zlib
from calibflow.io.store import TableWriter, atomic_path, prep_compression, read_metadata, write_metadata
from calibflow.prep.spec import STAGE_ORDER, PrepError, PrepExpressionError, PrepSpec, is_flag
from calibflow.prep.steps import (
    Test,
    add_hit_matches,
    cut_flow,
    event_arrays,
    fused_enabled,
    fused_outputs,
    fused_pair_outputs,
    make_pairs,
    output_columns,
    pairing_key,
    select_rows,
    spec_fused_loop,
    spec_fused_pairs,
    stage_tests,
    union_pairing,
)

if TYPE_CHECKING:
    from calibflow.kernels.fused import FusedSelection
    from calibflow.kernels.fused_pairs import FusedPairs


# --- one file --------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (uproot and awkward errors span many lines), at most 300 chars."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _check_input(path: str, tree: Any, name: str, branches: Sequence[str]) -> frozenset[str]:
    """PrepError for an empty tree ``name`` or missing branches; returns the jagged branches among ``branches``."""
    try:
        entries = tree.num_entries
        missing = [b for b in branches if b not in tree]
        jagged = frozenset(b for b in branches
                           if b not in missing and isinstance(getattr(tree[b], "interpretation", None), uproot.AsJagged))
    except Exception as exc:
        raise _failure(path, f"cannot read tree {name!r}", exc) from None
    if entries == 0:
        raise PrepError(f"{path}: tree {name!r} has zero entries")
    if missing:
        raise PrepError(f"{path}: tree {name!r} has no branch(es) {', '.join(missing)}")
    return jagged


def _is_local(path: str) -> bool:
    """Whether ``path`` names a local file (a plain path or a ``file://`` URL)."""
    return "://" not in path or path.startswith("file://")


def _failure(path: str, what: str, exc: Exception) -> Exception:
    """The error to raise for ``exc`` while doing ``what`` to ``path``: a transient error of a remote input
    as it is (:func:`prepare_file` tries again), else PrepError ``<path>: <what> (<first line>)``."""
    if not _is_local(path) and is_transient(exc):
        return exc
    return PrepError(f"{path}: {what} ({_first_line(exc)})")


def _open(path: str) -> Any:
    """The ROOT file at ``path``; local files are memory-mapped (10% less CPU than uproot's default source),
    URLs read by uproot's fsspec source (only the byte ranges asked for, in vector reads for XRootD)."""
    try:
        return uproot.open(path, handler=uproot.source.file.MemmapSource if _is_local(path) else RemoteSource)
    except FileNotFoundError:
        raise PrepError(f"{path}: file not found") from None
    except Exception as exc:
        raise _failure(path, "cannot read as a ROOT file", exc) from None


def _tree(path: str, f: Any, tree: str) -> Any:
    try:
        classes = f.classnames()
        found = tree in f
        obj = f[tree] if found else None
    except Exception as exc:
        raise _failure(path, f"cannot read tree {tree!r}", exc) from None
    if not found:
        trees = [k.split(";")[0] for k, cls in classes.items() if cls.startswith(("TTree", "ROOT::RNTuple"))]
        raise PrepError(f"{path}: no tree {tree!r} (trees in file: {', '.join(trees) or 'none'})")
    return obj


def _columns(path: str, f: Any, tree: str, branches: Sequence[str], entry_limit: int | None, step_size: str | int,
             objects: bool) -> tuple[frozenset[str], Iterator[dict[str, Any]]]:
    """The jagged branches among ``branches`` and the chunks of ``branches`` of tree ``tree`` of the open file
    ``f`` (the first ``entry_limit`` entries; None: all). When every branch is one :mod:`calibflow.io.tree_meta`
    decodes, only their metadata is read and the basket reader reads them (jagged ones as awkward arrays);
    otherwise uproot parses the whole TTree (:func:`_chunks`), as awkward chunks when a branch is jagged or
    ``objects`` (a preparation forms pairs or hit matches)."""
    from calibflow.io.baskets import read_layout
    from calibflow.io.tree_meta import read_tree_meta

    try:
        meta = read_tree_meta(f, tree, branches)
    except Exception as exc:
        raise _failure(path, f"cannot read tree {tree!r}", exc) from None
    if meta is not None and meta.entries == 0:
        raise PrepError(f"{path}: tree {tree!r} has zero entries")
    chunks = None if meta is None else read_layout(
        path.removeprefix("file://"), meta.branches, step_size, entry_limit, _source(path, f))
    if meta is not None and chunks is not None:
        return frozenset(b.name for b in meta.branches if b.counter is not None), chunks
    obj = _tree(path, f, tree)
    jagged = _check_input(path, obj, tree, branches)
    library = "ak" if jagged or objects else "np"
    return jagged, _chunks(path, obj, branches, step_size, library, entry_limit)


def _source(path: str, obj: Any) -> Any:
    """uproot's source of the remote input ``path`` (``obj``: its open file or tree), through which the basket
    reader fetches; None for a local file (memory-mapped by the reader)."""
    return None if _is_local(path) else obj.file.source


def _forms_objects(spec: PrepSpec) -> bool:
    """Whether ``spec`` forms pairs or shared-hit matches (awkward chunks)."""
    return spec.pairing is not None or bool(spec.hit_matches)


def _chunks(path: str, tree: Any, branches: Sequence[str], step_size: str | int, library: str,
            entry_stop: int | None = None) -> Iterator[dict[str, Any]]:
    """The branches of ``tree`` in chunks of about ``step_size`` (entries, or bytes of the branches as
    text such as ``"64 MB"``), up to entry ``entry_stop`` (None: all): flat numeric branches by
    :mod:`calibflow.io.baskets` (a remote file's baskets fetched a chunk at a time), everything else by
    uproot. Flat numeric branches come as numpy arrays, jagged and string branches as awkward arrays (uproot's
    numpy strings are Python objects, ~5x slower to read)."""
    from calibflow.io.baskets import read_flat, string_branches

    flat = read_flat(path.removeprefix("file://"), tree, branches, step_size, entry_stop, _source(path, tree)) if (
        library == "np") else None
    if flat is not None:
        return flat
    options = {"step_size": step_size, "entry_stop": entry_stop, "how": dict}
    if library == "np" and not string_branches(tree, branches):
        return tree.iterate(branches, library="np", **options)
    return (event_arrays(c) for c in tree.iterate(branches, library="ak", **options))


@dataclass(frozen=True)
class Preparation:
    """One output of preparing a file: the spec, the HDF5 file to write (atomically) and metadata to add."""

    spec: PrepSpec
    out_path: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


def prepare_file(
    path: str, spec: PrepSpec, out_path: str, step_size: str | int = "64 MB", metadata: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Prepare one ROOT file (a path or a URL) into the HDF5 file ``out_path`` (atomic); return the cut flow
    counts.

    The cut flow maps ``read`` (entries of the tree read: at most ``spec.entry_limit``) and each stage
    (:attr:`PrepSpec.stages`) to the
    number of entries remaining after it: events up to ``event``, candidates (pairs) after.
    Raises PrepError, one line naming the file and the problem, for a file that cannot be prepared; a remote
    file failing on transient errors (a server down, a lost connection) is tried again with backoff
    (:func:`calibflow.io.remote.retrying`), then fails with :class:`RemoteInputError` naming the URL.
    """
    return prepare_files(path, [Preparation(spec, out_path, metadata or {})], step_size)[0]


def prepare_files(path: str, preparations: Sequence[Preparation], step_size: str | int = "64 MB"
                  ) -> list[dict[str, int]]:
    """Prepare one ROOT file into several outputs (the specs of several variants) with one read per tree: the
    union of their branches is read chunk by chunk (``step_size``: entries, or bytes such as ``"64 MB"``) and
    each preparation applies its own stages to its own branches of every chunk, writing what
    :func:`prepare_file` alone would write. Returns the cut flows in order. Raises as :func:`prepare_file`;
    the outputs of a read that fails are not written."""
    if _is_local(path):
        return _prepare(path, preparations, step_size)
    try:
        return retrying(lambda: _prepare(path, preparations, step_size), path)
    except RemoteError as exc:
        raise RemoteInputError(str(exc)) from None


def prepare_each(path: str, preparations: Sequence[Preparation], step_size: str | int = "64 MB"
                 ) -> list[dict[str, int] | PrepError]:
    """:func:`prepare_files` with an outcome per preparation (its cut flow, or the PrepError it fails with): when
    the shared read fails, each preparation is read alone, so a branch or an expression only one of them
    needs fails that one only, as separate preparations would. A remote input that stays unreachable
    (:class:`RemoteInputError`) fails them all at once."""
    try:
        return list(prepare_files(path, preparations, step_size))
    except PrepError as exc:
        if len(preparations) == 1 or isinstance(exc, RemoteInputError):
            return [exc] * len(preparations)
    out: list[dict[str, int] | PrepError] = []
    for p in preparations:
        try:
            out.append(prepare_files(path, [p], step_size)[0])
        except PrepError as exc:
            out.append(exc)
    return out


class RemoteInputError(PrepError):
    """A remote input could not be read for transient reasons (server down or unreachable): not a bad file,
    so never left out by ``--skip-bad-files``; the next run tries it again."""

    skippable = False


def _prepare(path: str, preparations: Sequence[Preparation], step_size: str | int) -> list[dict[str, int]]:
    """:func:`prepare_files`, tried once: one read per tree (and entry limit) of the file."""
    use_fast_zlib()
    groups: dict[tuple[str, int | None], list[int]] = {}
    for i, p in enumerate(preparations):
        groups.setdefault((p.spec.tree, p.spec.entry_limit), []).append(i)
    flows: dict[int, dict[str, int]] = {}
    with _open(path) as f:
        for members in groups.values():
            flows.update(zip(members, _read(path, f, [preparations[i] for i in members], step_size), strict=True))
    return [flows[i] for i in range(len(preparations))]


def _read(path: str, f: Any, preparations: Sequence[Preparation], step_size: str | int) -> list[dict[str, int]]:
    """Read the union of the branches of ``preparations`` (one tree, one entry limit) of the open file ``f``
    once and write every preparation's output; their cut flows."""
    first = preparations[0].spec
    branches = sorted(set().union(*(p.spec.branches for p in preparations)))
    jagged, chunks = _columns(path, f, first.tree, branches, first.entry_limit, step_size,
                              any(_forms_objects(p.spec) for p in preparations))
    keys = [pairing_key(p.spec) for p in preparations]
    groups: dict[str, list[PrepSpec]] = {}
    for p, key in zip(preparations, keys, strict=True):
        if key is not None:
            groups.setdefault(key, []).append(p.spec)
    pairs = {key: _Pairs(specs) for key, specs in groups.items()}
    with ExitStack() as stack:
        outputs = [_Output(p, jagged, stack, pairs.get(key or "")) for p, key in zip(preparations, keys, strict=True)]
        try:
            for cols in chunks:
                n = len(next(iter(cols.values())))
                for formed in pairs.values():
                    formed.chunk(cols, n)
                for out in outputs:
                    out.add({b: cols[b] for b in out.spec.branches}, n)
        except ExprError as exc:
            raise PrepExpressionError(f"{path}: {exc}") from None
        except Exception as exc:
            raise _failure(path, "reading failed", exc) from None
        for out in outputs:
            out.finish({"source": file_identity(path), **_fetched(path, f)})
    return [out.flow for out in outputs]


class _Pairs:
    """The tag-and-probe pairs of each chunk by the reference path, formed once for the preparations of one
    :func:`pairing_key` (the per-pair columns of all of them) when the first of them needs them (the others have
    their fused loops), with the entries left after the lumi mask and the event cuts."""

    def __init__(self, specs: Sequence[PrepSpec]) -> None:
        self.pre = stage_tests(specs[0])[0]
        self.pairing = union_pairing(specs)
        self.branches = sorted(set().union(*(s.branches for s in specs)))
        self.cols: dict[str, Any] = {}
        self.n = 0
        self.flow: dict[str, int] = {}
        self._chunk: tuple[Mapping[str, Any], int] | None = None

    def chunk(self, cols: Mapping[str, Any], n: int) -> None:
        """The next chunk of ``n`` events (``cols``: the branches read); its pairs are formed when asked for."""
        self._chunk = (cols, n)

    def form(self) -> None:
        """Form the pairs of the current chunk (once)."""
        if self._chunk is None:
            return
        cols, n = self._chunk
        self._chunk = None
        sub = {b: cols[b] for b in self.branches}
        self.flow = {stage: 0 for stage, _, _ in self.pre}
        keep = cut_flow(sub, n, self.pre, self.flow)
        self.cols, self.n = make_pairs(select_rows(sub, keep) if not keep.all() else sub, self.pairing)


class _Output:
    """One preparation being written from the chunks of a shared read: its stages, cut flow, HDF5 writer
    (opened in ``stack``: renamed into place when the stack closes without an error), fused loop and, with
    ``pairing``, the pairs it shares with the preparations that form them alike."""

    def __init__(self, prep: Preparation, jagged: frozenset[str], stack: ExitStack, pairs: _Pairs | None) -> None:
        spec = self.spec = prep.spec
        self.pairs = pairs
        self.metadata = prep.metadata
        self.pre, self.post = stage_tests(spec)
        self.flow = dict.fromkeys(spec.stages, 0)
        tmp = stack.enter_context(atomic_path(prep.out_path))
        # no chunk cache: TableWriter writes whole chunks, which then go straight to the filter (15% faster)
        self.h5 = stack.enter_context(h5py.File(tmp, "w", libver=LIBVER, rdcc_nbytes=0))
        self.writer = TableWriter(self.h5, compression=prep_compression)
        flat = not jagged.intersection(spec.branches) and not _forms_objects(spec)
        self.fusable = flat and fused_enabled()
        self.fused: FusedSelection | None = None
        self.pairs_fusable = pairs is not None and fused_enabled()
        self.fused_pairs: FusedPairs | None = None

    def add(self, cols: dict[str, Any], n: int) -> None:
        """Apply the stages to a chunk of ``n`` entries (``cols``: this spec's branches) and append its rows: with
        ``pairing``, by the fused pairing loop, else from the pairs formed by the reference path."""
        spec, pre, flow = self.spec, self.pre, self.flow
        flow["read"] += n
        if self.pairs_fusable and n:
            self.fused_pairs = self.fused_pairs or spec_fused_pairs(spec, cols)
            self.pairs_fusable = self.fused_pairs is not None
        if self.fused_pairs is not None:
            out = fused_pair_outputs(self.fused_pairs, spec, cols, n, flow, pre[0][2] if spec.lumi else None)
            if out is not None:
                self.writer.append(out)
                return
        if self.pairs is not None:
            self.pairs.form()
            for stage, count in self.pairs.flow.items():
                flow[stage] += count
            cols, n = self.pairs.cols, self.pairs.n
            flow["pairs"] += n
            pre_pair: list[tuple[str, str, Test]] = []
        else:
            pre_pair = pre
        stages = [*pre_pair, *self.post]
        if self.fusable and n:
            self.fused = self.fused or spec_fused_loop(spec, cols)
            self.fusable = self.fused is not None
        if self.fused is not None:
            self.writer.append(fused_outputs(self.fused, spec, cols, n, flow, pre[0][2] if spec.lumi else None))
            return
        if spec.pairing is None and spec.hit_matches:  # fractions only for rows that can be kept
            first = spec.first_hit_match_stage
            keep = cut_flow(cols, n, stages[:first], flow)
            add_hit_matches(cols, spec.hit_matches, np.flatnonzero(keep))
            keep = cut_flow(cols, n, stages[first:], flow, keep)
        else:
            keep = cut_flow(cols, n, stages, flow)
        self.writer.append(output_columns(cols, n, keep, spec.columns))

    def finish(self, source: Mapping[str, Any]) -> None:
        """Write the buffered rows, the empty columns and the metadata (``source``: the input's identity and
        what reading it fetched)."""
        spec = self.spec
        self.writer.ensure({k: (bool if is_flag(k) else np.float64) for k in spec.columns})
        write_metadata(self.h5, {"spec": spec.describe(), "cutflow": self.flow, "stages": list(self.flow), **source,
                                 **self.metadata})


def _fetched(path: str, f: Any) -> dict[str, Any]:
    """What reading the remote input ``path`` (the open file ``f``) fetched: ``fetched: {bytes, requests,
    ranges}`` (bytes asked of the server, the requests asking for them and their byte ranges: a vector read is
    one request for many ranges); nothing for a local file."""
    source = getattr(getattr(f, "file", None), "source", None)
    if _is_local(path) or source is None:
        return {}
    return {"fetched": {"bytes": int(source.num_requested_bytes), "requests": int(source.num_requests),
                        "ranges": int(source.num_requested_chunks)}}


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
