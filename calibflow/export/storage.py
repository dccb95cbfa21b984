"""A copy of the published set in storage: ``outputs.publish_to``, a local folder or a ``root://`` URL.

After a successful ``calibflow run`` the set published under ``<result_dir>/<name>/`` (:mod:`publish`) is
copied to ``<publish_to>/<name>/<key>-<manifest digest>/``, atomically: the files go to a temporary folder
``.<set>.tmp-<pid>`` first, which is renamed when complete (a folder without ``.tmp-`` in its name is whole),
then the text file ``<publish_to>/<name>/LATEST`` (the set's folder name) is replaced by a rename too. Readers
read ``LATEST``, then that folder. A set already there (the same manifest: a rerun with nothing changed) is
not copied again. The previous set stays one generation, older ones go when ``LATEST`` moves on, and so do
temporaries older than an hour (the remains of killed copies). Both kinds of storage go through
fsspec (the local file system, fsspec-xrootd's), with retries on transient errors
(:func:`calibflow.io.remote.retrying`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from typing import Any

from calibflow.export.publish import MANIFEST, published_dir
from calibflow.io.remote import RemoteError, filesystem, first_line, is_remote, retrying

LATEST = "LATEST"
"""Text file of ``<publish_to>/<name>/`` naming its latest complete set (one line)."""
TMP = ".tmp-"
KILLED_AFTER_S = 3600.0
"""Age (s) after which a temporary copy is taken for the remains of a killed one and removed."""


def storage(dest: str) -> tuple[Any, str]:
    """The fsspec file system of the storage ``dest`` (a URL, or a local absolute path) and its path there."""
    if is_remote(dest):
        return filesystem(dest)
    import fsspec

    return fsspec.filesystem("file"), os.path.abspath(dest)


def set_name(folder: str) -> str:
    """Name of the copy of the published set ``folder``: its key and the first 12 hex digits of the SHA-256
    of its manifest (which lists every file's digest)."""
    with open(os.path.join(folder, MANIFEST), "rb") as f:
        raw = f.read()
    key = os.path.basename(folder).split("-", 1)[-1]
    return f"{key}-{hashlib.sha256(raw).hexdigest()[:12]}"


def copy_published(workdir: str, dest: str, name: str) -> str:
    """Copy the set published under ``workdir`` to ``<dest>/<name>/<set>/`` (:func:`set_name`) and point
    ``<dest>/<name>/LATEST`` at it, each step by a rename; returns the copy's location (path or URL).
    RemoteError naming ``dest`` when the storage cannot be written (after retries for transient errors)."""
    folder = published_dir(workdir)
    if folder is None:
        raise FileNotFoundError(f"{workdir}: nothing published to copy to {dest}")
    fs, root = storage(dest)
    base = f"{root.rstrip('/')}/{name}"
    target = f"{base}/{set_name(folder)}"
    location = f"{dest.rstrip('/')}/{name}/{os.path.basename(target)}"
    try:
        retrying(lambda: _copy(fs, folder, base, target), dest, "cannot publish")
    except RemoteError:
        raise
    except OSError as exc:
        raise RemoteError(
            dest, f"cannot publish {name} there ({first_line(exc)}); check the path and its permissions"
        ) from None
    return location


def _copy(fs: Any, folder: str, base: str, target: str) -> None:
    """:func:`copy_published`, tried once: the set's files, the rename, ``LATEST``, the old sets removed."""
    fs.invalidate_cache()
    if not fs.exists(f"{target}/{MANIFEST}"):
        building = f"{base}/.{os.path.basename(target)}{TMP}{os.getpid()}"
        if fs.exists(building):  # an earlier attempt of this process
            fs.rm(building, recursive=True)
        for rel in _files(folder):
            dst = f"{building}/{rel}"
            fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
            with open(os.path.join(folder, rel), "rb") as src, fs.open(dst, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
        try:
            _rename(fs, building, target)  # complete: a set folder without .tmp- in its name is whole
        except OSError:
            fs.invalidate_cache()
            if not fs.exists(f"{target}/{MANIFEST}"):
                raise
            _remove(fs, building)  # another run copied the same set meanwhile
    latest = f"{base}/{LATEST}"
    previous = _read_latest(fs, latest)
    if previous == os.path.basename(target):
        return
    tmp = f"{latest}{TMP}{os.getpid()}"
    with fs.open(tmp, "wb") as out:
        out.write(f"{os.path.basename(target)}\n".encode())
    _rename(fs, tmp, latest)  # readers see the previous set or this one
    _tidy(fs, base, {os.path.basename(target), previous, LATEST})


def _tidy(fs: Any, base: str, keep: set[str | None]) -> None:
    """Remove the sets under ``base`` but ``keep``, and temporaries older than :data:`KILLED_AFTER_S` (those
    of a killed copy; younger ones may be another run's copy in progress)."""
    fs.invalidate_cache()
    for entry in fs.ls(base, detail=True):  # full paths (local), or names (fsspec-xrootd)
        name = os.path.basename(entry["name"].rstrip("/"))
        if name in keep:
            continue
        mtime = entry.get("mtime")
        if TMP in name and (mtime is None or time.time() - float(mtime) < KILLED_AFTER_S):
            continue
        _remove(fs, f"{base}/{name}")


def _rename(fs: Any, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` in one step: a file replaces ``dst``, a folder fails when ``dst`` exists (a
    POSIX rename locally, where fsspec's ``mv`` would move a folder into an existing one; XRootD's ``mv``)."""
    if getattr(fs, "local_file", False):
        os.rename(src, dst)
    else:
        fs.mv(src, dst)


def _remove(fs: Any, path: str) -> None:
    """Remove the old set or killed copy ``path`` (a folder); tidying only: what cannot be removed stays."""
    with contextlib.suppress(OSError):
        fs.rm(path, recursive=True)
    with contextlib.suppress(OSError):  # an empty folder fsspec-xrootd's rm does not list
        fs.rmdir(path)


def _files(folder: str) -> list[str]:
    """Relative paths of the files under ``folder`` (links followed: a set holds hard links), sorted."""
    out = []
    for dirpath, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(dirpath, n), folder) for n in names]
    return sorted(out)


def _read_latest(fs: Any, path: str) -> str | None:
    """The set ``LATEST`` names (None: no such file)."""
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return f.read().decode().strip() or None
