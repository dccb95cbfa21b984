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

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import uproot

from calibflow.expr import ExprError
from calibflow.hashing import file_identity
from calibflow.io.integrity import LIBVER
from calibflow.io.root import use_fast_zlib
from calibflow.io.store import TableWriter, atomic_path, prep_compression, read_metadata, write_metadata
from calibflow.prep.spec import STAGE_ORDER, PrepError, PrepExpressionError, PrepSpec, is_flag
from calibflow.prep.steps import (
    Test,
    add_hit_matches,
    cut_flow,
    event_arrays,
    fused_enabled,
    fused_outputs,
    make_pairs,
    output_columns,
    select_rows,
    spec_fused_loop,
    stage_tests,
)

if TYPE_CHECKING:
    from calibflow.kernels.fused import FusedSelection


# --- one file --------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (uproot and awkward errors span many lines), at most 300 chars."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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


def _chunks(path: str, tree: Any, branches: Sequence[str], step_size: str | int, library: str,
            entry_stop: int | None = None) -> Iterator[dict[str, Any]]:
    """The branches of ``tree`` in chunks of about ``step_size`` (entries, or bytes of the branches as
    text such as ``"64 MB"``), up to entry ``entry_stop`` (None: all): flat numeric branches of a local file
    by :mod:`calibflow.io.baskets`, everything else by uproot. Flat numeric branches come as numpy arrays,
    jagged and string branches as awkward arrays (uproot's numpy strings are Python objects, ~5x slower to
    read)."""
    from calibflow.io.baskets import read_flat, string_branches

    flat = read_flat(path.removeprefix("file://"), tree, branches, step_size, entry_stop) if (
        library == "np" and _is_local(path)) else None
    if flat is not None:
        return flat
    options = {"step_size": step_size, "entry_stop": entry_stop, "how": dict}
    if library == "np" and not string_branches(tree, branches):
        return tree.iterate(branches, library="np", **options)
    return (event_arrays(c) for c in tree.iterate(branches, library="ak", **options))


def prepare_file(
    path: str, spec: PrepSpec, out_path: str, step_size: str | int = "64 MB", metadata: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Prepare one ROOT file into the HDF5 file ``out_path`` (atomic); return the cut flow counts.

    The cut flow maps ``read`` (entries of the tree read: at most ``spec.entry_limit``) and each stage
    (:attr:`PrepSpec.stages`) to the
    number of entries remaining after it: events up to ``event``, candidates (pairs) after.
    Raises PrepError, one line naming the file and the problem, for a file that cannot be prepared.
    """
    use_fast_zlib()
    pre, post = stage_tests(spec)
    flow = dict.fromkeys(spec.stages, 0)
    with _open(path) as f:
        tree = _tree(path, f, spec.tree)
        jagged = _check_input(path, tree, spec)
        library = "ak" if jagged or spec.pairing is not None or spec.hit_matches else "np"
        # no chunk cache: TableWriter writes whole chunks, which then go straight to the filter (15% faster)
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w", libver=LIBVER, rdcc_nbytes=0) as h5:
            writer = TableWriter(h5, compression=prep_compression)
            fusable = library == "np" and spec.pairing is None and not spec.hit_matches and fused_enabled()
            fused: FusedSelection | None = None
            try:
                for cols in _chunks(path, tree, spec.branches, step_size, library, spec.entry_limit):
                    n = len(next(iter(cols.values())))
                    flow["read"] += n
                    if spec.pairing is not None:
                        keep = cut_flow(cols, n, pre, flow)
                        cols, n = make_pairs(select_rows(cols, keep) if not keep.all() else cols, spec.pairing)
                        flow["pairs"] += n
                        pre_pair: list[tuple[str, str, Test]] = []
                    else:
                        pre_pair = pre
                    stages = [*pre_pair, *post]
                    if fusable and n:
                        fused = fused or spec_fused_loop(spec, cols)
                        fusable = fused is not None
                    if fused is not None:
                        writer.append(fused_outputs(fused, spec, cols, n, flow, pre[0][2] if spec.lumi else None))
                        continue
                    if spec.pairing is None and spec.hit_matches:  # fractions only for rows that can be kept
                        first = spec.first_hit_match_stage
                        keep = cut_flow(cols, n, stages[:first], flow)
                        add_hit_matches(cols, spec.hit_matches, np.flatnonzero(keep))
                        keep = cut_flow(cols, n, stages[first:], flow, keep)
                    else:
                        keep = cut_flow(cols, n, stages, flow)
                    writer.append(output_columns(cols, n, keep, spec.columns))
            except ExprError as exc:
                raise PrepExpressionError(f"{path}: {exc}") from None
            except Exception as exc:
                raise PrepError(f"{path}: reading failed ({_first_line(exc)})") from None
            writer.ensure({k: (bool if is_flag(k) else np.float64) for k in spec.columns})
            write_metadata(h5, {"source": file_identity(path), "spec": spec.describe(), "cutflow": flow,
                                "stages": list(flow), **(metadata or {})})
    return flow


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
