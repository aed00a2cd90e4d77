"""Helpers shared by the tests that run real server processes.

The oxfcgi fixtures (tests/conftest.py), the web-server drivers (tests/support/nginx.py,
tests/support/apache.py, tests/support/lighttpd.py) and the spawner tests (tests/test_spawners.py)
all need the same few things: a free loopback port, waiting until a server accepts
connections, stopping a process, reading /proc about the processes a server
started, polling a log, and a small HTTP response record. One copy of each lives
here. Times are seconds (``float``) throughout.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
#: How often the waiting helpers look again, in seconds.
POLL_INTERVAL = 0.05


# ---------------------------------------------------------------------------------------
# Environment of child Python processes
# ---------------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """A copy of ``os.environ`` with the repository root first on ``PYTHONPATH`` (so the
    child imports ``tests.apps.*`` as the test process does), updated with ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------
# Ports and listening sockets
# ---------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` (default 127.0.0.1) that was free a moment ago.

    The servers under test cannot bind port 0 and report it, so callers that race
    other processes for the port retry on "Address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def accepts(address: str | tuple[str, int]) -> bool:
    """True if one connection to ``address`` succeeds (it is closed at once).

    ``address`` is a unix socket path (``str``) or a ``(host, port)`` pair; a TCP
    connect gives up after 1 s."""
    try:
        if isinstance(address, str):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(address)
        else:
            socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def wait_accepting(address: str | tuple[str, int], proc: subprocess.Popen | None = None, timeout: float = 20.0) -> bool:
    """Poll until ``address`` (see :func:`accepts`) accepts a connection.

    Returns True once it does; False after ``timeout`` seconds (default 20) or as soon
    as ``proc`` (the server process, optional) has exited. The caller raises its own
    error with the server's log, which only it knows where to find."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if accepts(address):
            return True
        time.sleep(POLL_INTERVAL)
    return False


# ---------------------------------------------------------------------------------------
# Stopping processes
# ---------------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` if it still runs, wait up to ``timeout`` seconds (default 10),
    then SIGKILL it and reap it. Only ``proc`` itself is signalled, not its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_survivors(pids: Iterable[int]) -> None:
    """SIGKILL each pid of ``pids`` that still runs (see :func:`pid_alive`); pass only
    pids this test started."""
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds until none of ``pids`` runs; return those still running."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``pid (comm)`` (state, ppid, ...), or None if gone.
    ``comm`` may contain spaces and parentheses, hence the split at the last ``)``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (the container's init may not reap)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process in /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and len(fields) > 1:
                parents[int(entry)] = int(fields[1])
    return parents


def children_of(pid: int) -> list[int]:
    """Sorted pids whose parent is ``pid``, zombies included."""
    return sorted(p for p, pp in _parents().items() if pp == pid)


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) descendants of ``pid``: children, grandchildren ..."""
    parents = _parents()
    found, frontier = [], {pid}
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier and p not in found]
        found += children
        frontier = set(children)
    return [p for p in found if pid_alive(p)]


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` from /proc/PID/cmdline; [] if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------
# Polling and logs
# ---------------------------------------------------------------------------------------


def read_log(path: Path) -> str:
    """The text of ``path`` (undecodable bytes replaced), or "" while it does not exist."""
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = POLL_INTERVAL):
    """Call ``predicate()`` every ``interval`` seconds (default 0.05) until it returns a true
    value, for at most ``timeout`` seconds (default 10); return that value, or the result of
    one last call once the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def wait_for_text(read: Callable[[], str], needle: str, timeout: float = 5.0) -> str:
    """Call ``read()`` until its text contains ``needle`` or ``timeout`` seconds (default 5)
    have passed; return the last text either way (for the caller's assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if needle in text or time.monotonic() >= deadline:
            return text
        time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


@dataclass
class HTTPResult:
    """One HTTP response from a web server under test, body read in full."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HTTPResult {self.status} {self.body[:300]!r}>"
