"""The one folder of compiled kernels: numba's machine code of every calibflow kernel and the fused loops' sources.

numba keeps the machine code of a ``cache=True`` kernel beside its source file (``__pycache__`` of the installed
package) unless ``NUMBA_CACHE_DIR`` names a folder when the kernel is defined. :func:`use_kernel_cache`, called
when ``calibflow`` is imported (before any kernel module), points it at :func:`kernel_cache_dir`
(``$CALIBFLOW_KERNEL_CACHE``, default ``$XDG_CACHE_HOME/calibflow/kernels``, else ``~/.cache/calibflow/kernels``),
so that a read-only install works and every kernel is compiled once per machine. A ``NUMBA_CACHE_DIR`` set by
the user is kept. The folder must be this user's and private (numba's index files are pickles: a planted one
would run): one that is not is refused with a ``RuntimeWarning``; one that cannot be created (read-only home)
is replaced by a private temporary folder, shared by the processes the run forks.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["NUMBA_EXTENSIONS", "compile_lock", "kernel_cache_dir", "lazy_ufunc", "numba_extensions_of",
           "private_dir", "trusted_folder", "use_kernel_cache"]

NUMBA_EXTENSIONS = ("awkward",)
"""Packages whose numba extensions calibflow's own processes load (calibflow's kernels take numpy arrays;
awkward's, 0.07 s, is kept for calls with awkward arrays)."""


def kernel_cache_dir() -> str:
    """Folder of the generated kernels' sources and numba's cache of every kernel's machine code."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("CALIBFLOW_KERNEL_CACHE") or os.path.join(base, "calibflow", "kernels")


def _unsafe(path: str) -> str | None:
    """Why the folder ``path`` cannot be trusted (another user's, or writable by others), or None."""
    if not hasattr(os, "getuid"):  # no POSIX owners and modes (Windows)
        return None
    info = os.stat(path)
    if info.st_uid != os.getuid():
        return "belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
    return None


@functools.lru_cache(maxsize=8)
def trusted_folder(folder: str, *inside: str) -> str | None:
    """``folder`` if kernels may be kept there: it and its subfolders ``inside`` are created private (mode
    0700) when missing, and must belong to this user and be writable by nobody else (else a ``RuntimeWarning``:
    a planted file would run). None also where it cannot be created."""
    for path in (folder, *(os.path.join(folder, sub) for sub in inside)):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            problem = _unsafe(path)
        except OSError:
            return None
        if problem is not None:
            warnings.warn(f"calibflow: kernel cache {path} {problem}, so it is not used: kernels are compiled in a "
                          f"private temporary folder instead (make it yours and 'chmod go-w' it to use it)",
                          RuntimeWarning, stacklevel=4)
            return None
    return folder


@functools.lru_cache(maxsize=1)
def private_dir() -> str:
    """A temporary folder of this process (mode 0700), for kernels when the cache folder cannot be used."""
    return tempfile.mkdtemp(prefix="calibflow-kernels-")


def use_kernel_cache() -> str:
    """Point numba's cache (``NUMBA_CACHE_DIR``, and numba's loaded configuration) at the kernel cache, unless
    the user set it; returns the folder numba uses. Must run before any kernel is defined."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder:
        folder = trusted_folder(kernel_cache_dir()) or private_dir()
        os.environ["NUMBA_CACHE_DIR"] = folder  # also for numba's later reloads of its configuration
    config = sys.modules.get("numba.core.config")
    if config is not None and not config.CACHE_DIR:  # numba was imported first: its configuration is read
        config.CACHE_DIR = folder
    return folder


@contextlib.contextmanager
def compile_lock(folder: str, name: str) -> Iterator[None]:
    """Hold an exclusive lock ``<folder>/<name>.lock`` (one process of the machine compiles a kernel, the
    others then load it from the cache); without POSIX locks, or where the file cannot be made, no lock."""
    try:
        import fcntl

        fd = os.open(os.path.join(folder, name + ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def lazy_ufunc(signatures: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``numba.vectorize(signatures, cache=True)`` of the function, built at its first call instead of at
    the import of its module (building a ufunc takes ~0.25 s even from numba's cache: too much for every process
    that imports a kernel module and never calls it). The result broadcasts and casts as the ufunc does."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.cache
        def ufunc() -> Callable[..., Any]:
            import numba

            return numba.vectorize(signatures, cache=True)(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return ufunc()(*args, **kwargs)

        call.ufunc = ufunc  # type: ignore[attr-defined]
        return call

    return wrap


def numba_extensions_of(packages: tuple[str, ...] = NUMBA_EXTENSIONS) -> list[str] | None:
    """Let numba load only the extensions of ``packages`` in this process; the entry points loaded, or None when
    numba had loaded its extensions already (then nothing changes).

    At the first kernel call of a process numba loads the ``numba_extensions`` entry point of every installed
    package: with coffea installed (CMS analysts' environments), vector's costs ~0.45 s per process, a sixth of a
    NanoAOD run's fixed cost. calibflow's command and batch jobs call this before any kernel (worker processes
    forked later inherit it); as a library calibflow leaves numba alone, so that a user's own numba code keeps
    the extensions it relies on. An extension that fails to load warns, as numba's own loader does."""
    import importlib.metadata

    from numba.core import entrypoints

    if getattr(entrypoints, "_already_initialized", True):  # loaded, or a numba without this switch
        return None
    entrypoints._already_initialized = True  # numba's own flag: its init_all() then loads nothing
    loaded = []
    for ep in importlib.metadata.entry_points(group="numba_extensions"):
        if ep.name != "init" or ep.module.split(".")[0] not in packages:
            continue
        try:
            ep.load()()
        except Exception as exc:  # as numba: a broken extension warns, the process goes on
            warnings.warn(f"numba extension {ep.value!r} failed to load: {exc!r}", stacklevel=2)
            continue
        loaded.append(ep.value)
    return loaded
