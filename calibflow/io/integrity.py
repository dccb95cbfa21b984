"""Verified intermediates: every HDF5 and JSON file calibflow writes between stages carries checksums of its
content, checked when the file is read, and quickly (size and header) when a stage asks whether its outputs
exist. A file that fails a check raises :class:`CorruptIntermediate`, naming the path and what is wrong.

* HDF5 (prepared tuples, histograms, per-bin candidates): written with ``libver=LIBVER`` (superblock
  version 3 and version-2 object headers and chunk indexes, each with a checksum of its own) and Fletcher32 on
  every dataset (:data:`CHECKSUM`: a checksum per chunk, after compression, checked by HDF5 on every read of
  the chunk). The quick check reads the superblock (the first 48 bytes): the signature, its version (0 or 1:
  a file written without checksums) and the end-of-file address, which must equal the file's size (a
  truncated file is shorter).
* JSON (binning, per-bin fit results, sPlot caches): one top-level key :data:`DIGEST`, the SHA-256 of the
  canonical dump of the rest (sorted keys, no spaces). The quick check: the file starts with ``{`` and ends
  with ``}`` (a truncated file does not); reading parses and compares the digest (the files are small).
* Tables (CSV, JSON, HDF5 of a table folder): the folder's done marker seals them (:func:`seal_text`: size and
  SHA-256 of each); the quick check compares the sizes, the task reading the folder the SHA-256s.

Files without checksums (written by calibflow before these checks) fail the checks: they are rebuilt. Only
prepared tuples of before pass the quick check (they have superblock 3, but no chunk checksums): the full
check finds them, and the version of the prepared tuples that came with the checks gives them new keys.
Imports no h5py until an HDF5 file is checked in full (the plan reads verified JSON without it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

LIBVER = "v110"
"""Lowest HDF5 file-format version of calibflow's HDF5 intermediates: checksummed metadata (superblock 3)."""
CHECKSUM: dict[str, Any] = {"fletcher32": True}
"""h5py dataset option of every dataset of an intermediate: a Fletcher32 checksum per chunk."""
DIGEST = "sha256"
"""Top-level key of a verified JSON record: SHA-256 (hex) of :func:`canonical` of the other keys."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
DONE = ".done"
"""Extension of a done marker sealing its folder's files (:func:`seal_text`): the tables."""
VERIFIED: dict[str, str] = {"prep": ".h5", "hists": ".h5", "binning": ".json", "fits": ".json", "splots": ".json",
                            "tables": DONE, "combined": DONE}
"""Folders of a calibration's working folder holding verified intermediates, and the kind of file in each
(other files there, e.g. figures and bad-file markers, are not intermediates)."""


class CorruptIntermediate(OSError):
    """An intermediate file failed its integrity check; ``path`` names it, ``reason`` says what is wrong."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled by worker pools and batch jobs
        return type(self), (self.path, self.reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# --- HDF5 ---------------------------------------------------------------------------------------------
@contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn HDF5's errors while ``path`` is opened and read (a truncated file, a chunk failing its Fletcher32
    checksum, a damaged object header) into :class:`CorruptIntermediate`; a missing file stays
    FileNotFoundError, a refused one PermissionError."""
    try:
        yield
    except (CorruptIntermediate, FileNotFoundError, PermissionError):
        raise
    except (OSError, RuntimeError) as exc:
        raise CorruptIntermediate(path, f"unreadable HDF5 ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _h5_quick(path: str, f: Any) -> None:
    """Superblock signature, version and end-of-file address (= size) of the open file ``f``."""
    head = f.read(48)
    if not head.startswith(HDF5_SIGNATURE):
        raise CorruptIntermediate(path, "not an HDF5 file (no signature at its start)")
    if len(head) < 12:
        raise CorruptIntermediate(path, f"truncated HDF5 file ({len(head)} bytes)")
    version, size_of_offsets = head[8], head[9]
    if version < 2:
        raise CorruptIntermediate(path, f"HDF5 file without checksums (superblock version {version}: written "
                                        "before verified intermediates)")
    # superblock 2/3: signature, version, offset and length sizes, flags, then base, extension, end-of-file
    start = 12 + 2 * size_of_offsets
    if size_of_offsets not in (4, 8) or len(head) < start + size_of_offsets:
        raise CorruptIntermediate(path, "truncated or damaged HDF5 superblock")
    base = int.from_bytes(head[12 : 12 + size_of_offsets], "little")
    end = base + int.from_bytes(head[start : start + size_of_offsets], "little")
    size = os.fstat(f.fileno()).st_size
    if size != end:
        what = "truncated" if size < end else "longer than written"
        raise CorruptIntermediate(path, f"{what}: {size} bytes, its superblock says {end}")


def _h5_full(path: str) -> None:
    """:func:`_h5_quick`, then open the file and read every chunk of every dataset (HDF5 checks each
    chunk's Fletcher32 and each object header's checksum) and every attribute."""
    import h5py
    import hdf5plugin  # noqa: F401  (the Blosc filter of prepared tuples)

    with open(path, "rb") as f:
        _h5_quick(path, f)

    def visit(name: str, obj: Any) -> None:
        dict(obj.attrs)
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.shape and not obj.fletcher32:
            raise CorruptIntermediate(path, f"dataset {name} has no checksum (written before verified "
                                            "intermediates)")
        for sel in obj.iter_chunks() if obj.chunks and obj.size else [()]:
            obj[sel]

    with reading(path), h5py.File(path, "r") as h5:
        dict(h5.attrs)
        h5.visititems(visit)


def h5_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """h5py dataset ``options`` (compression) with the checksum of :data:`CHECKSUM`."""
    return {**options, **CHECKSUM}


# --- JSON ---------------------------------------------------------------------------------------------
def canonical(value: Any) -> bytes:
    """The bytes a digest is taken of: compact JSON, sorted keys, ASCII, no NaN or Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def seal(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` (a JSON object as read back: plain dicts, lists, str, numbers, None) with its digest."""
    rest = {k: v for k, v in record.items() if k != DIGEST}
    return {**rest, DIGEST: hashlib.sha256(canonical(rest)).hexdigest()}


def unseal(record: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record without its digest; CorruptIntermediate if the digest is missing or does not match."""
    if not isinstance(record, dict) or not isinstance(record.get(DIGEST), str):
        raise CorruptIntermediate(path, f"JSON without its {DIGEST} digest (damaged, or written before verified "
                                        "intermediates)")
    rest = {k: v for k, v in record.items() if k != DIGEST}
    if hashlib.sha256(canonical(rest)).hexdigest() != record[DIGEST]:
        raise CorruptIntermediate(path, f"content does not match its {DIGEST} digest")
    return rest


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified JSON record at ``path`` (written with :func:`seal`), without its digest."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        record = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise CorruptIntermediate(path, f"not valid JSON ({_first_line(exc)})") from None
    return unseal(record, path)


def _json_quick(path: str, f: Any) -> None:
    """The open JSON file ``f`` starts with ``{`` and ends with ``}`` (white space aside)."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(1)
    f.seek(max(0, size - 16))
    tail = f.read().rstrip()
    if head != b"{" or not tail.endswith(b"}") or size < 2:
        raise CorruptIntermediate(path, f"truncated or damaged JSON ({size} bytes; not one object)")


# --- sealed folders (tables) --------------------------------------------------------------------------
SEALED = "# sealed: sha256 size path"
"""Second line of a done marker that seals its folder (:func:`seal_text`)."""


def sha256_file(path: str) -> str:
    """SHA-256 (hex) of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_files(folder: str | os.PathLike[str], skip: str = "") -> dict[str, int]:
    """Relative path -> inode of every file under ``folder`` (sub-folders included), but ``skip`` (a path) and
    temporaries; none if there is no folder."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if path != skip and ".tmp-" not in name:
                out[os.path.relpath(path, folder)] = os.stat(path).st_ino
    return out


def seal_text(marker: str | os.PathLike[str], first_line: str, before: Mapping[str, int] | None = None) -> str:
    """Text of the done marker ``marker`` sealing the files under its folder (sub-folders included; the marker
    and temporaries left out) but those of ``before`` (:func:`folder_files` before the task wrote) that are
    still the same file: every writer replaces a file by a new one, so what is sealed is what the task wrote,
    not what a later stage (the export) writes into the folder. The text: ``first_line`` (e.g. the folder's
    content key), :data:`SEALED`, one line ``<sha256> <bytes> <relative path>`` per file, then
    ``sha256 <digest of the lines before>``."""
    marker = os.fspath(marker)
    folder = os.path.dirname(marker)
    lines = [first_line, SEALED]
    for rel, inode in sorted(folder_files(folder, marker).items()):
        if (before or {}).get(rel) != inode:
            path = os.path.join(folder, rel)
            lines.append(f"{sha256_file(path)} {os.path.getsize(path)} {rel}")
    text = "\n".join(lines) + "\n"
    return f"{text}{DIGEST} {hashlib.sha256(text.encode()).hexdigest()}\n"


def _check_seal(marker: str, full: bool) -> None:
    """The marker's own digest and, for every file it seals, its size (and with ``full`` its SHA-256)."""
    with open(marker, "rb") as f:
        raw = f.read()
    body, _, last = raw.rstrip(b"\n").rpartition(b"\n")
    body += b"\n"
    lines = body.decode(errors="replace").splitlines()
    if len(lines) < 2 or lines[1] != SEALED:
        raise CorruptIntermediate(marker, "done marker without its seal (damaged, or written before verified "
                                          "intermediates)")
    if last != f"{DIGEST} {hashlib.sha256(body).hexdigest()}".encode():
        raise CorruptIntermediate(marker, f"done marker does not match its {DIGEST} digest")
    folder = os.path.dirname(marker)
    for line in lines[2:]:
        digest, size, rel = line.split(" ", 2)
        path = os.path.join(folder, rel)
        try:
            actual = os.path.getsize(path)
        except FileNotFoundError:
            raise CorruptIntermediate(marker, f"{rel}: sealed here, missing") from None
        if actual != int(size):
            raise CorruptIntermediate(marker, f"{rel}: {actual} bytes, sealed with {size}")
        if full and sha256_file(path) != digest:
            raise CorruptIntermediate(marker, f"{rel}: content does not match its sealed {DIGEST}")


# --- checks -------------------------------------------------------------------------------------------
def check_quick(path: str | os.PathLike[str]) -> None:
    """Cheap check of an intermediate by size and header (no parsing, a few dozen bytes read): HDF5 by its
    superblock, JSON by its first and last characters, a done marker by its digest and the sizes of the files
    it seals; other files only exist. Raises CorruptIntermediate (FileNotFoundError if there is no file)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if ext == DONE:
        _check_seal(path, full=False)
    elif ext in (".h5", ".json"):
        with open(path, "rb") as f:
            (_h5_quick if ext == ".h5" else _json_quick)(path, f)
    elif not os.path.exists(path):
        raise FileNotFoundError(path)


def check_full(path: str | os.PathLike[str]) -> None:
    """Every checksum of an intermediate: each HDF5 chunk's and object header's, a JSON record's digest, the
    SHA-256 of every file a done marker seals. Raises CorruptIntermediate (FileNotFoundError if there is no file)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if ext == ".h5":
        _h5_full(path)
    elif ext == ".json":
        read_json(path)
    elif ext == DONE:
        _check_seal(path, full=True)
    elif not os.path.exists(path):
        raise FileNotFoundError(path)


def intermediates(workdir: str | os.PathLike[str]) -> list[str]:
    """The verified intermediates of a calibration's working folder (:data:`VERIFIED`), sorted."""
    out = []
    for folder, ext in VERIFIED.items():
        for dirpath, _, names in os.walk(os.path.join(workdir, folder)):
            out += [os.path.join(dirpath, n) for n in names if n.endswith(ext)]
    return sorted(out)


def verify_folder(workdir: str | os.PathLike[str],
                  paths: Sequence[str] | None = None) -> Iterator[tuple[str, CorruptIntermediate | None]]:
    """(path, None) for every intact intermediate of ``workdir`` (or of ``paths``: a KDE config's templates),
    (path, the error) for every corrupt one (full checks: every byte of every intermediate is read)."""
    for path in intermediates(workdir) if paths is None else paths:
        try:
            check_full(path)
        except CorruptIntermediate as exc:
            yield path, exc
        except FileNotFoundError:  # removed meanwhile (a run rebuilding it)
            continue
        else:
            yield path, None
