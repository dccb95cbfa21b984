"""What a ROOT file holds: its trees, their entries and branches with types and compression.

:func:`inspect_file` and :func:`format_inspection` are ``calibflow inspect FILE``: what a user needs to
write a config. :func:`branch_names` is what the config check before a run reads (``calibflow.prep.inputs``):
the names of a tree's branches and nothing else. uproot's ``file[tree]`` deserialises every ``TBranch`` with
its leaves and basket tables (a NanoAOD tree of 2000 branches: ~1.3 s), and its ``keys()`` needs that
object; :func:`branch_names` opens the file with uproot's ``custom_classes`` mapping ``TBranch`` to a model
that reads each branch's name (its ``TNamed``) and skips the rest by the branch's byte count, as
``uproot.num_entries`` reads only a tree's entry count (~0.1 s for the same tree). Nested branches of split
objects (``TBranchElement``) are read by uproot as usual; where the quick read fails, the full one is used.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import uproot

from calibflow.io.remote import filesystem, identity, is_remote

TREE_CLASSES = ("TTree", "ROOT::RNTuple")
"""Class names (prefixes) of the objects listed as trees."""
_KEY = struct.Struct(">iHiIH")
"""Start of a TKey: fNbytes, fVersion, fObjlen, fDatime, fKeylen."""
_ALGORITHMS = {b"ZL": "ZLIB", b"XZ": "LZMA", b"L4": "LZ4", b"ZS": "ZSTD", b"CS": "old ZLIB"}
"""First two bytes of a ROOT compression block -> algorithm."""
_SETTING_ALGORITHMS = {1: "ZLIB", 2: "LZMA", 4: "LZ4", 5: "ZSTD"}
"""``fCompress // 100`` -> algorithm (the level is ``fCompress % 100``)."""


class InputFileError(ValueError):
    """A ROOT file cannot be read, or has no such tree; ``str()`` is one line naming the file."""


class NoSuchTree(InputFileError):
    """The file has no tree of that name; :attr:`trees` lists the trees it has."""

    def __init__(self, path: str, tree: str, trees: Sequence[str]) -> None:
        self.path, self.tree, self.trees = path, tree, list(trees)
        super().__init__(f"{path}: no tree {tree!r} (trees: {', '.join(trees) or 'none'})")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def open_root(path: str, **options: Any) -> Any:
    """The ROOT file at ``path`` (or URL: :class:`calibflow.io.root.RemoteSource`) opened by uproot;
    InputFileError (one line) when it cannot be."""
    if is_remote(path):
        from calibflow.io.root import RemoteSource  # (imports h5py: only for URLs)

        options = {"handler": RemoteSource, **options}
    try:
        return uproot.open(path, **options)
    except FileNotFoundError:
        raise InputFileError(f"{path}: file not found") from None
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read as a ROOT file ({_first_line(exc)})") from None


def tree_names(f: Any) -> list[str]:
    """Paths of the trees (TTree, RNTuple) in the open file ``f``, in subfolders too (``Tuple/DecayTree``)."""
    out: list[str] = []
    for key, cls in f.classnames().items():
        name = key.rsplit(";", 1)[0]
        if cls.startswith(TREE_CLASSES) and name not in out:
            out.append(name)
    return out


def _tree(path: str, f: Any, tree: str) -> Any:
    """The tree ``tree`` of the open file ``f``; NoSuchTree, or InputFileError when it cannot be read."""
    trees = tree_names(f)
    if tree not in trees:
        raise NoSuchTree(path, tree, trees)
    try:
        return f[tree]
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read tree {tree!r} ({_first_line(exc)})") from None


class Model_TBranch(uproot.model.Model):  # uproot reads the class name from this one's
    """A ``TBranch`` read for its name only: its ``TNamed``, then a jump over the rest by its byte count."""

    def read_members(self, chunk: Any, cursor: Any, context: dict[str, Any], file: Any) -> None:
        """Reads the branch's ``TNamed`` (name and title) and skips its other members."""
        named = file.class_named("TNamed", 1)
        self._bases.append(named.read(chunk, cursor, context, file, self._file, self._parent,
                                      concrete=self.concrete))
        cursor.skip_after(self)


def _quick_names(path: str, tree: str) -> tuple[str, ...] | None:
    """Top-level branch names of ``tree`` read with :class:`Model_TBranch`, or None (then read it fully)."""
    classes = {**uproot.classes, "TBranch": Model_TBranch}
    with open_root(path, custom_classes=classes) as f:
        trees = tree_names(f)
        if tree not in trees:
            raise NoSuchTree(path, tree, trees)
        try:
            return tuple(b.member("fName") for b in f[tree].member("fBranches"))
        except Exception:
            return None  # an RNTuple, or a layout the quick read does not know: uproot's full read decides


def branch_names(path: str, tree: str) -> tuple[str, ...]:
    """Names of the branches of ``tree`` in the ROOT file ``path`` (top level; nested branches of split
    objects too when the quick read is not possible). InputFileError when the file or tree cannot be read."""
    quick = _quick_names(path, tree)
    return quick if quick is not None else tuple(all_branch_names(path, tree))


def all_branch_names(path: str, tree: str) -> list[str]:
    """Every branch name of ``tree``, nested ones as ``parent/child`` too (uproot's full read)."""
    with open_root(path) as f:
        return list(_tree(path, f, tree).keys())


def missing_branches(path: str, tree: str, names: Iterable[str], known: Sequence[str] = ()) -> list[str]:
    """Those of ``names`` that are not branches of ``tree`` (uproot's ``name in tree``, as tuple preparation
    tests them); ``known``: names already read (:func:`branch_names`), so that only the others need the full
    read of the tree."""
    unknown = [n for n in names if n not in set(known)]
    if not unknown:
        return []
    with open_root(path) as f:
        obj = _tree(path, f, tree)
        return [n for n in unknown if n not in obj]


# --- calibflow inspect -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BranchInfo:
    """One branch: name, C++ type as uproot names it (``double``, ``float[]`` for a jagged leaf, ``char*``),
    title, bytes on disk and in memory, and compression (algorithm of its baskets, level from its setting)."""

    name: str
    type: str
    title: str
    compressed: int
    uncompressed: int
    compression: str

    @property
    def ratio(self) -> float | None:
        """Uncompressed over compressed bytes (None without baskets)."""
        return self.uncompressed / self.compressed if self.compressed else None


@dataclass(frozen=True)
class TreeInfo:
    """One tree: path in the file, class, entries, number of branches and the branches shown."""

    name: str
    classname: str
    entries: int
    total: int
    branches: tuple[BranchInfo, ...]


def _setting(value: int) -> tuple[str, int] | None:
    """(algorithm, level) of a ROOT compression setting ``algorithm * 100 + level``; None: unset or none."""
    algorithm = _SETTING_ALGORITHMS.get(value // 100) if value > 0 else None
    return (algorithm, value % 100) if algorithm else None


def _compression(raw: Any, branch: Any, file_setting: int) -> str:
    """Algorithm of the branch's first basket (read from its compression block header) with the level of the
    branch's setting, else of the file's, when they name that algorithm; ``none``; ``-`` without baskets."""
    seeks = branch.member("fBasketSeek") if hasattr(branch, "member") else []
    if raw is None or not len(seeks) or int(seeks[0]) <= 0:
        return "-"
    raw.seek(int(seeks[0]))
    head = raw.read(_KEY.size)
    if len(head) < _KEY.size:
        return "?"
    nbytes, _, objlen, _, keylen = _KEY.unpack(head)
    if nbytes - keylen >= objlen:
        return "none"
    raw.seek(int(seeks[0]) + keylen)
    algorithm = _ALGORITHMS.get(raw.read(2), "?")
    for value in (int(branch.member("fCompress")), file_setting):
        setting = _setting(value)
        if setting and setting[0] == algorithm:
            return f"{algorithm}-{setting[1]}"
    return algorithm


def _leaf_title(name: str, title: str) -> bool:
    """Whether ``title`` is only the leaf list of branch ``name`` (``Muon_pt[nMuon]/F``), which says no more
    than the type."""
    return re.fullmatch(rf"{re.escape(name.rsplit('/', 1)[-1])}(\[[^\]]*\])*(/\w)?", title) is not None


def _branch_info(raw: Any, name: str, branch: Any, file_setting: int) -> BranchInfo:
    if not hasattr(branch, "compressed_bytes"):  # an RNTuple field
        return BranchInfo(name, str(getattr(branch, "typename", "?")), "", 0, 0, "-")
    title = str(branch.title or "")
    return BranchInfo(name, str(branch.typename), "" if _leaf_title(name, title) else title,
                      int(branch.compressed_bytes), int(branch.uncompressed_bytes),
                      _compression(raw, branch, file_setting))


def inspect_file(path: str, tree: str | None = None, pattern: str | None = None) -> list[TreeInfo]:
    """The trees of the ROOT file ``path`` (only ``tree`` if given) with their branches, those matching the
    glob ``pattern`` only (``fnmatch``, case-sensitive, on the full branch name). InputFileError names the
    file, or the missing tree with a did-you-mean."""
    with open_root(path) as f:
        names = tree_names(f)
        if tree is not None and tree not in names:
            close = difflib.get_close_matches(tree, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"trees: {', '.join(names) or 'none'}"
            raise InputFileError(f"{path}: no tree {tree!r} ({hint})")
        file_setting = int(getattr(f.file, "fCompress", 0) or 0)
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(_raw(path)) if is_remote(path) or os.path.isfile(path) else None
            return [_tree_info(path, f, t, pattern, raw, file_setting) for t in ([tree] if tree else names)]


def _raw(path: str) -> Any:
    """The file (or URL: fsspec's file object) opened for bytes: the basket headers naming the compression."""
    if is_remote(path):
        fs, inner = filesystem(path)
        return fs.open(inner, "rb")
    return open(path, "rb")  # closed by the caller's exit stack


def _file_size(path: str) -> int | None:
    """Bytes of the file or URL ``path``; None when unknown."""
    try:
        return int(identity(path)["size"]) if is_remote(path) else os.path.getsize(path)
    except OSError:
        return None


def _tree_info(path: str, f: Any, tree: str, pattern: str | None, raw: Any, file_setting: int) -> TreeInfo:
    obj = _tree(path, f, tree)
    items = list(obj.items())
    shown = [(k, b) for k, b in items if pattern is None or fnmatch.fnmatchcase(k, pattern)]
    return TreeInfo(tree, f.classname_of(tree), int(obj.num_entries), len(items),
                    tuple(_branch_info(raw, k, b, file_setting) for k, b in shown))


def _size(n: int) -> str:
    """Bytes as ``812 B``, ``61.2 kB``, ``1.31 MB``, ``2.04 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}" if n < 100 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def format_inspection(path: str, trees: Sequence[TreeInfo], pattern: str | None = None) -> str:
    """Plain-text report of :func:`inspect_file`: a line per tree, then a table of its branches (name, type,
    compressed size, compression ratio, compression, and the title where it says more than the type)."""
    size = _file_size(path)
    lines = [f"{path}: {len(trees)} tree(s), {'?' if size is None else _size(size)}"]
    for t in trees:
        on_disk = sum(b.compressed for b in t.branches)
        shown = f", {len(t.branches)} shown (--filter {pattern!r})" if pattern is not None else ""
        lines.append("")
        plural = "es" if t.total != 1 else ""
        lines.append(f"{t.classname} {t.name}: {t.entries:,} entries, {t.total} branch{plural}{shown}")
        if not t.branches:
            continue
        rows = [("branch", "type", "on disk", "ratio", "compression", "title")]
        for b in t.branches:
            ratio = f"{b.ratio:.2f}" if b.ratio is not None else "-"
            size = _size(b.compressed) if b.compressed else "-"
            rows.append((b.name, b.type, size, ratio, b.compression, b.title))
        if not any(r[5] for r in rows[1:]):
            rows = [r[:5] for r in rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        right = {2, 3}
        for r in rows:
            cells = [c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append(("  " + "  ".join(cells)).rstrip())
        lines.append(f"  total {_size(on_disk)} on disk{' (shown branches)' if pattern is not None else ''}")
    return "\n".join(lines)
