"""A real XRootD server on 127.0.0.1 for the tests of remote inputs and publishing (Debian's
``xrootd-server``): it exports a temporary folder over XRootD (``root://``) and HTTP (XrdHttp), can be stopped
and started again on the same ports, and is skipped with a reason where ``/usr/bin/xrootd`` is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

XROOTD = shutil.which("xrootd") or "/usr/bin/xrootd"
START_TIMEOUT_S = 15.0
"""Seconds a starting server has to accept connections."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class XRootDServer:
    """``xrootd`` exporting ``data`` (the folder ``<base>/data``) on ``port`` (XRootD) and ``http_port``
    (HTTP). As root it runs as ``nobody`` (xrootd refuses to run as the superuser), so ``base`` is a new
    folder of the system's temporary folder (pytest's are private to their user) and the folders it writes to
    are writable for everyone."""

    def __init__(self) -> None:
        self.base = base = Path(tempfile.mkdtemp(prefix="calibflow-xrootd-"))
        self.data = base / "data"
        self.port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        for folder in (base, self.data):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
        self.config = base / "xrootd.cfg"
        self.config.write_text(
            "all.export /\n"
            f"oss.localroot {self.data}\n"
            "xrd.allow host *\n"
            f"xrd.protocol XrdHttp:{self.http_port} libXrdHttp.so\n"
        )

    @property
    def url(self) -> str:
        """``root://127.0.0.1:<port>/`` (append ``/path``: ``root://host:port//path``)."""
        return f"root://127.0.0.1:{self.port}/"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<http_port>`` (append ``/path``)."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections on both ports."""
        user = ["-R", "nobody"] if os.geteuid() == 0 else []
        options = {
            "-p": self.port,
            "-c": self.config,
            "-n": "calibflow",
            "-l": self.base / "xrootd.log",
            "-a": self.base / "admin",
            "-s": self.base / "pid",
        }
        command = [XROOTD, *(str(x) for pair in options.items() for x in pair), *user]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_accepts(self.port) and _accepts(self.http_port)):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"xrootd exited with {self.process.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"xrootd did not accept connections on port {self.port} in {START_TIMEOUT_S} s"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGKILL: as a crash or a network cut looks to the client) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def put(self, rel: str, source: Path) -> str:
        """Copy ``source`` into the exported folder as ``rel`` (readable by the server) and return its URL."""
        target = self.data / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for folder in [target.parent, *target.parent.parents]:
            if folder == self.data.parent:
                break
            folder.chmod(0o777)
        shutil.copyfile(source, target)
        target.chmod(0o666)
        return f"{self.url}/{rel}"


def needs_xrootd() -> None:
    """Skip the calling test with a reason when the XRootD server or the Python client is missing."""
    if not os.path.exists(XROOTD):
        pytest.skip(f"{XROOTD} is missing: install Debian's xrootd-server (apt-get install xrootd-server)")
    pytest.importorskip("fsspec_xrootd", reason="fsspec-xrootd is missing: pip install '.[test]'")
    pytest.importorskip(
        "XRootD.client", reason="the xrootd Python bindings are missing: pip install '.[test]'"
    )


def running_server() -> Iterator[XRootDServer]:
    """A started :class:`XRootDServer`, stopped and its folder removed at the end (for a fixture to yield
    from)."""
    needs_xrootd()
    server = XRootDServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
