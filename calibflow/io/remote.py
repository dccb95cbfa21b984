"""Input files and storage given by URL: ``root://host//path`` (XRootD, through fsspec-xrootd) and
``http(s)://host/path`` (fsspec's HTTP file system), read by uproot's fsspec source.

* :func:`expand` lists the files a URL pattern matches: wildcards of a ``root://`` URL are expanded by the
  XRootD directory listing (``root://host//store/run1/*.root``); an HTTP URL names one file (no listing).
* :func:`identity` is what identifies a remote file in content keys, as path, size and mtime do a local one:
  the URL, its size (bytes) and mtime (ns) from the server's stat; an HTTP server without ``Last-Modified``
  gives a checksum header (``ETag``, ``Content-MD5``, ``Digest``) instead, and one with neither the SHA-256 of
  the file's first and last 64 kiB (a rewritten ROOT file changes there: header, keys list).
* :func:`retrying` runs a remote operation up to :data:`ATTEMPTS` times, waiting :data:`BACKOFF_S`, then
  twice that, ... between attempts, when it fails on a transient error (a refused or lost connection, a
  timeout); other errors (no such file, a bad URL) are raised at once. A last failure is :class:`RemoteError`
  naming the URL.

Reading is uproot's fsspec source (:class:`calibflow.io.root.RemoteSource`): only the byte ranges a reader
asks for are fetched, fsspec-xrootd sending many in one vector read
(:class:`calibflow.io.baskets.FetchedBaskets` asks for all baskets of a chunk at once). The XRootD client's
own timeouts are bounded here (:data:`XRD_ENV`, each overridable by its environment variable): its defaults
wait up to 30 minutes for a server that went away.
"""

from __future__ import annotations

import email.utils
import glob
import hashlib
import itertools
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMES = ("root", "roots", "xroot", "xroots", "http", "https")
"""URL schemes of remote inputs and storage (XRootD and HTTP)."""
XROOTD_SCHEMES = ("root", "roots", "xroot", "xroots")
ATTEMPTS = int(os.environ.get("CALIBFLOW_REMOTE_ATTEMPTS", "3"))
"""Attempts of a remote operation failing on transient errors (``$CALIBFLOW_REMOTE_ATTEMPTS``)."""
BACKOFF_S = float(os.environ.get("CALIBFLOW_REMOTE_BACKOFF", "1.0"))
"""Wait (s) before the second attempt, doubled before each further one (``$CALIBFLOW_REMOTE_BACKOFF``)."""
XRD_ENV = {
    "XRD_CONNECTIONWINDOW": "5",
    "XRD_CONNECTIONRETRY": "1",
    "XRD_REQUESTTIMEOUT": "120",
    "XRD_STREAMTIMEOUT": "60",
    "XRD_TIMEOUTRESOLUTION": "1",
    "XRD_STREAMERRORWINDOW": "1",
}
"""XRootD client settings (s) unless set in the environment: a connection is tried for 5 s, once (calibflow
retries with backoff), a request may take 2 minutes, and a server found down is tried again after 1 s (the
client's default: 30 minutes, so a restarted server would stay unreachable for the process); read by the
client when it first starts."""
for _name, _value in XRD_ENV.items():
    os.environ.setdefault(_name, _value)

_TRANSIENT = re.compile(  # errors of a server or network that may go away (not of a file's content)
    r"connect|expired|timed? ?out|socket|unreachable|refused|reset by peer|broken pipe|"
    r"temporar|\[FATAL\]|server disconnected|not connected",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(r"Failed to submit <bound method .*?>> request: |^[A-Za-z ]+ request failed: ")
_MISSING = re.compile(r"no such file|\[3011\]|not found|\b404\b", re.IGNORECASE)


class RemoteError(OSError):
    """A remote input or storage operation failed; ``url`` names the file or folder, ``reason`` the
    problem."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"{url}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled by worker pools and batch jobs
        return type(self), (self.url, self.reason)

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL of a remote file or folder (:data:`SCHEMES`)."""
    text = os.fspath(path)
    return "://" in text and text.split("://", 1)[0].lower() in SCHEMES


def check_url(url: str) -> None:
    """RemoteError naming ``url`` and what to fix when it is not a usable URL: an unknown scheme, no host,
    no path (an XRootD path is absolute: ``root://host//store/file.root``), a wildcard in an HTTP URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RemoteError(url, f"unknown URL scheme {parts.scheme!r} (use one of {', '.join(SCHEMES)}://)")
    if not parts.hostname:
        raise RemoteError(url, f"no host in the URL (write {scheme}://HOST[:PORT]/...)")
    try:
        parts.port  # noqa: B018  (a port that is not a number raises)
    except ValueError:
        raise RemoteError(url, f"bad port {parts.netloc.rsplit(':', 1)[-1]!r} in the URL") from None
    if parts.path in ("", "/"):
        raise RemoteError(url, "no file path in the URL")
    if scheme in XROOTD_SCHEMES and not parts.path.startswith("//"):
        raise RemoteError(url, f"an XRootD path is absolute: write {scheme}://{parts.netloc}/{parts.path}")
    if scheme.startswith("http") and glob.has_magic(parts.path):
        raise RemoteError(
            url,
            "HTTP servers offer no listing to expand wildcards: list the files one by one, "
            "or read them through XRootD (root://)",
        )


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it; RemoteError when the URL is bad or the
    package for its scheme (fsspec-xrootd, aiohttp) is missing."""
    import fsspec

    check_url(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise RemoteError(
            url, f"cannot read {url.split('://')[0]}:// URLs: {exc} (pip install fsspec-xrootd aiohttp)"
        ) from None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away when tried again: a timeout or a connection refused, lost or reset (not a
    missing file or a refused permission)."""
    if isinstance(exc, RemoteError | FileNotFoundError | PermissionError):
        return False
    text = f"{type(exc).__name__} {exc}"
    if _MISSING.search(text):
        return False
    return isinstance(exc, TimeoutError | ConnectionError) or (
        isinstance(exc, OSError | RuntimeError) and bool(_TRANSIENT.search(text))
    )


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message (its type when there is none), without the XRootD
    bindings' ``Failed to submit <bound method ...> request:`` preamble."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return _PREAMBLE.sub("", lines[0]) if lines else type(exc).__name__


def retrying(
    operation: Callable[[], T],
    url: str,
    what: str = "unreachable",
    attempts: int | None = None,
    backoff_s: float | None = None,
) -> T:
    """``operation()``, tried again after a transient error (:func:`is_transient`) up to ``attempts`` times
    (default :data:`ATTEMPTS`) with waits of ``backoff_s`` (default :data:`BACKOFF_S`), 2 ``backoff_s``, ...;
    after the last, RemoteError ``<url>: <what> after N attempts (<last error>)``. Other errors pass."""
    attempts = ATTEMPTS if attempts is None else max(attempts, 1)
    wait = BACKOFF_S if backoff_s is None else backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise RemoteError(
                    url,
                    f"{what} after {attempts} attempt(s) ({first_line(exc)}); check that the "
                    "server is up and reachable, then run again",
                ) from None
            time.sleep(wait * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def expand(pattern: str) -> tuple[str, ...]:
    """The URLs matching ``pattern``, sorted: its wildcards expanded by the server's listing (XRootD); a URL
    without wildcards when the file exists. RemoteError for a bad URL or a server that cannot be reached."""
    fs, path = filesystem(pattern)
    if glob.has_magic(path):
        fixed = path[: len(path) - len(path.lstrip("/"))] + "/".join(
            itertools.takewhile(lambda part: not glob.has_magic(part), path.lstrip("/").split("/")[:-1])
        )
        try:  # the listing below reports no error: a server down would look like an empty folder
            _stat(fs, fixed, pattern)
        except FileNotFoundError:
            return ()
        found = retrying(lambda: fs.glob(path), pattern, "cannot list the folder")
        return tuple(sorted(_url(pattern, p) for p in found))
    try:
        info = _stat(fs, path, pattern)
    except FileNotFoundError:
        return ()
    return (pattern,) if info.get("type", "file") == "file" else ()


def identity(url: str) -> dict[str, Any]:
    """What identifies the remote file ``url`` in content keys: ``path`` (the URL), ``size`` (bytes) and
    ``mtime_ns`` from the server's stat, or ``checksum`` (an HTTP checksum header) when the server gives no
    modification time, else ``ends_sha256`` (:func:`_ends_digest`). FileNotFoundError when there is no such
    file, RemoteError when the server cannot be reached."""
    fs, path = filesystem(url)
    info = _stat(fs, path, url)
    out: dict[str, Any] = {"path": url, "size": int(info["size"])}
    mtime = _mtime_s(info)
    checksum = next((str(info[k]).strip('"') for k in CHECKSUM_HEADERS if info.get(k)), None)
    if mtime is not None:
        out["mtime_ns"] = round(mtime * 1e9)
    elif checksum is not None:
        out["checksum"] = checksum
    else:  # a plain HTTP server: the ends of the file (a ROOT file's header and directory change with it)
        out["ends_sha256"] = retrying(lambda: _ends_digest(fs, path, out["size"]), url)
    return out


CHECKSUM_HEADERS = ("ETag", "Content-MD5", "Digest")
"""HTTP headers with a checksum of the content (fsspec's ``info``), used when a server gives no mtime."""
ENDS_BYTES = 1 << 16
"""Bytes at each end of a file digested when its server gives neither mtime nor checksum."""


def _ends_digest(fs: Any, path: str, size: int) -> str:
    """SHA-256 of the first and last :data:`ENDS_BYTES` of ``path`` (``size`` bytes)."""
    h = hashlib.sha256(fs.cat_file(path, 0, min(size, ENDS_BYTES)))
    if size > ENDS_BYTES:
        h.update(fs.cat_file(path, max(size - ENDS_BYTES, ENDS_BYTES), size))
    return h.hexdigest()


def _stat(fs: Any, path: str, url: str) -> dict[str, Any]:
    """The server's stat of ``path`` (no cached listing); FileNotFoundError naming ``url`` when it is
    missing."""
    fs.invalidate_cache()
    try:
        return retrying(lambda: fs.info(path), url)
    except RemoteError:
        raise
    except (FileNotFoundError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) or _MISSING.search(str(exc)):
            raise FileNotFoundError(f"{url}: no such file") from None
        raise RemoteError(url, f"stat failed ({first_line(exc)})") from None


def _mtime_s(info: dict[str, Any]) -> float | None:
    """Modification time (s since the epoch) of fsspec's ``info``: XRootD's ``mtime``, HTTP's
    ``Last-Modified``; None when the server gives none."""
    if isinstance(info.get("mtime"), int | float):
        return float(info["mtime"])
    modified = info.get("Last-Modified") or info.get("last_modified")
    if isinstance(modified, str):
        try:
            return email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            return None
    return None


def _url(pattern: str, path: str) -> str:
    """The URL of ``path`` on the server of ``pattern`` (scheme, host and port as written there)."""
    parts = urllib.parse.urlsplit(pattern)
    return f"{parts.scheme}://{parts.netloc}//{path.lstrip('/')}"
