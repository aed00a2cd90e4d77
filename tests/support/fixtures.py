"""pytest fixtures that start real processes: ``start_server`` (an ``oxfcgi serve``
subprocess) and ``start_nginx`` (Debian's nginx in front of it), and ``need_binary``
(a real server binary: a failure under ``CI=true``, a skip elsewhere). tests/conftest.py
makes them available to every test.

Every test talks to a real server process over a real socket, through ``oxfcgi.client``
(our raw FastCGI client) or through a real web server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import child_env, stop_process, wait_accepting

IN_CI = os.environ.get("CI") == "true"


def need_binary(name: str) -> str:
    """Return the path of a real server binary; fail under CI, skip elsewhere."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} is not installed (scripts/test.sh installs it from Debian's packages)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class ServerProcess:
    """An ``oxfcgi serve`` subprocess listening on ``address``."""

    def __init__(self, proc: subprocess.Popen, address: str, log_path: Path):
        self.proc = proc
        self.address = address
        self.log_path = log_path

    @property
    def socket_path(self) -> str | None:
        return self.address[5:] if self.address.startswith("unix:") else None

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def connect(self, timeout: float = 10.0):
        from oxfcgi.client import Connection

        return Connection(self.address, timeout=timeout)

    def request(self, *args, **kwargs):
        from oxfcgi.client import request

        return request(self.address, *args, **kwargs)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


#: The engine's start-up line (src/wsgi/server.rs), WSGI and ASGI.
_BANNER = re.compile(r"oxfcgi \S+ serving (an ASGI application )?on ")


def _wait_until_listening(server: ServerProcess, timeout: float = 20.0) -> None:
    if server.socket_path:
        address = server.socket_path
    else:
        host, _, port = server.address.rpartition(":")
        address = (host.strip("[]"), int(port))
    if wait_accepting(address, server.proc, timeout):
        # The socket listens (the kernel queues connections) before the engine logs its
        # "oxfcgi VERSION serving on ..." banner: tests that read the log wait for that line
        # too (bounded). Not any " serving ": run as root, the "serving as root" warning
        # comes first.
        deadline = time.monotonic() + 5
        while not _BANNER.search(server.log()) and server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return
    if server.proc.poll() is not None:
        raise RuntimeError(f"oxfcgi exited with {server.proc.returncode}:\n{server.log()}")
    raise RuntimeError(f"oxfcgi did not start listening within {timeout}s:\n{server.log()}")


@pytest.fixture
def start_server(tmp_path):
    """Factory: ``start_server("tests.apps.basic:app", "--threads", "2")``.

    Starts ``python -m oxfcgi serve APP --bind unix:<tmp>/fcgi.sock ARGS...`` (unless
    ARGS contain ``--bind``), waits until it accepts connections and returns a
    :class:`ServerProcess`. All servers are stopped at the end of the test.
    """
    servers: list[ServerProcess] = []

    def start(app: str, *args: str, env: dict | None = None, wait: bool = True) -> ServerProcess:
        n = len(servers)
        args = list(args)
        if "--bind" in args:
            address = args[args.index("--bind") + 1]
        else:
            address = f"unix:{tmp_path}/fcgi{n}.sock"
            args += ["--bind", address]
        log_path = tmp_path / f"server{n}.log"
        full_env = child_env()
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "oxfcgi", "serve", app, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(tmp_path),
            )
        server = ServerProcess(proc, address, log_path)
        servers.append(server)
        if wait:
            _wait_until_listening(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_nginx(tmp_path):
    """Factory: ``start_nginx(server)`` starts Debian's nginx in front of ``server``.

    ``server`` is a :class:`ServerProcess` listening on a unix socket (or a socket
    path). Returns a :class:`tests.support.nginx.Nginx` (``.request()``, ``.get()``,
    ``.error_log()``, ``.port``); the config and its locations are described in
    tests/support/nginx.py. Every nginx is stopped at the end of the test. Without nginx
    installed the test is skipped, or fails when CI=true.
    """
    binary = need_binary("nginx")
    from tests.support.nginx import start_nginx as _start_nginx

    instances = []

    def start(server, **kwargs):
        socket_path = server.socket_path if isinstance(server, ServerProcess) else str(server)
        if not socket_path:
            raise ValueError("start_nginx needs a server bound to a unix socket")
        base = tmp_path / f"nginx{len(instances)}"
        base.mkdir()
        instance = _start_nginx(base, socket_path, nginx_binary=binary, **kwargs)
        instances.append(instance)
        return instance

    yield start
    for instance in instances:
        instance.stop()
