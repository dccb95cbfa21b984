"""The luigi central scheduler (``luigid``) for a user: start, stop, status, and its JSON API.

``luigid`` is started in the foreground of a new session, listening on localhost only, with everything
it keeps under one state folder (default ``~/.calibflow/luigid``)::

    luigid.json          pid, host and port of the running server (the pid file)
    state.pickle         the scheduler's task state, saved when it stops and reloaded when it starts
    logs/                luigi-server.log and the server's own stdout/stderr (luigid.out)

Nothing here imports luigi: the server is a subprocess and the API is read with urllib.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8082
PID_FILE = "luigid.json"


class SetupError(RuntimeError):
    """The run environment is wrong (scheduler unreachable, batch settings): one line says what to fix."""


def default_state_dir() -> str:
    """``$CALIBFLOW_STATE_DIR``, else ``~/.calibflow/luigid``."""
    return os.environ.get("CALIBFLOW_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".calibflow", "luigid")


def check_port(port: int) -> int:
    """``port`` if it is a valid TCP port, else SetupError."""
    if not 0 < port < 65536:
        raise SetupError(f"--port {port}: a TCP port is 1..65535")
    return port


def url(host: str, port: int) -> str:
    """Base URL of the scheduler at ``host:port``."""
    return f"http://{host}:{port}"


def api(host: str, port: int, method: str, timeout: float = 10.0, **data: Any) -> Any:
    """Call ``/api/<method>`` of the scheduler with keyword ``data``; return the ``response`` object."""
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    address = f"{url(host, port)}/api/{method}?{query}"
    try:
        with urllib.request.urlopen(address, timeout=timeout) as r:
            body = json.load(r)
    except urllib.error.HTTPError as exc:
        raise SetupError(f"scheduler at {url(host, port)}: /api/{method} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SetupError(f"no luigi scheduler answers at {url(host, port)} ({reason}); "
                         f"start one with 'calibflow scheduler start --port {port}'") from None
    return body.get("response") if isinstance(body, dict) else body


def ping(host: str, port: int, timeout: float = 5.0) -> None:
    """SetupError unless a luigi scheduler answers at ``host:port``."""
    api(host, port, "task_list", timeout=timeout, status="DONE", upstream_status="", search="-no-such-task-")


@dataclass(frozen=True)
class Server:
    """A luigid started by :func:`start`, as recorded in its pid file."""

    pid: int
    host: str
    port: int
    state_dir: str

    @property
    def url(self) -> str:
        """Base URL (the web UI is at this address)."""
        return url(self.host, self.port)


def _pid_file(state_dir: str) -> str:
    return os.path.join(state_dir, PID_FILE)


def _is_luigid(pid: int) -> bool:
    """Whether process ``pid`` exists, is not a zombie and runs luigid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ")
    except OSError:
        return False
    return b"luigid" in cmdline and _running(pid)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (whatever it runs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def server(state_dir: str | None = None) -> Server | None:
    """The luigid recorded in ``state_dir`` if it is still running, else None (a stale pid file is removed)."""
    state_dir = os.path.abspath(state_dir or default_state_dir())
    try:
        with open(_pid_file(state_dir)) as f:
            info = json.load(f)
        srv = Server(int(info["pid"]), str(info["host"]), int(info["port"]), state_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _is_luigid(srv.pid):
        return srv
    os.remove(_pid_file(state_dir))
    return None


def luigid_command() -> list[str]:
    """The ``luigid`` executable next to this Python, else on PATH; SetupError when there is none."""
    here = os.path.join(os.path.dirname(sys.executable), "luigid")
    exe = here if os.access(here, os.X_OK) else shutil.which("luigid")
    if not exe:
        raise SetupError("luigid not found next to this Python or on PATH (pip install luigi)")
    return [exe]


def start(port: int = DEFAULT_PORT, state_dir: str | None = None, timeout: float = 20.0) -> Server:
    """Start luigid on localhost:``port`` with its state under ``state_dir``; wait until it answers."""
    check_port(port)
    state_dir = os.path.abspath(state_dir or default_state_dir())
    running = server(state_dir)
    if running is not None:
        raise SetupError(f"a scheduler from {state_dir} already runs at {running.url} (pid {running.pid}); "
                         "stop it first or give another --state-dir")
    logs = os.path.join(state_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    cmd = [*luigid_command(), "--address", DEFAULT_HOST, "--port", str(port),
           "--state-path", os.path.join(state_dir, "state.pickle"), "--logdir", logs]
    with open(os.path.join(logs, "luigid.out"), "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=state_dir)
    srv = Server(proc.pid, DEFAULT_HOST, port, state_dir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SetupError(f"luigid exited at start with code {proc.returncode}: {_last_line(logs)}")
        try:
            ping(DEFAULT_HOST, port, timeout=1.0)
            break
        except SetupError:
            if time.monotonic() > deadline:
                _terminate(proc.pid)
                raise SetupError(f"luigid did not answer on port {port} within {timeout:.0f} s: "
                                 f"{_last_line(logs)}") from None
            time.sleep(0.1)
    tmp = f"{_pid_file(state_dir)}.tmp-{os.getpid()}"  # atomic (no calibflow.io.store here: it imports h5py)
    with open(tmp, "w") as f:
        json.dump({"pid": srv.pid, "host": srv.host, "port": srv.port}, f)
    os.replace(tmp, _pid_file(state_dir))
    return srv


def stop(state_dir: str | None = None, timeout: float = 20.0) -> Server:
    """Stop the luigid recorded in ``state_dir`` (it saves its state); SetupError when none runs."""
    state_dir = os.path.abspath(state_dir or default_state_dir())
    srv = server(state_dir)
    if srv is None:
        raise SetupError(f"no scheduler runs from {state_dir} (nothing to stop)")
    _terminate(srv.pid, timeout)
    if os.path.exists(_pid_file(state_dir)):
        os.remove(_pid_file(state_dir))
    return srv


def _terminate(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM ``pid`` and wait for it to end (SIGKILL after ``timeout``)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _running(pid):  # not _is_luigid: an exiting process's cmdline is already empty
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child (start and stop in one process)
        os.waitpid(pid, os.WNOHANG)


def _last_line(logs: str) -> str:
    """Last non-empty line of luigid's output, for error messages."""
    try:
        with open(os.path.join(logs, "luigid.out"), errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
