"""The HTTP side of every web server the tests run: one client, shared.

:class:`WebServer` is the base of the running nginx, Apache, lighttpd, HAProxy, Caddy and
H2O objects (``host``/``port`` set by them): ``request()`` sends one HTTP/1.1 request on
a fresh connection and reads the whole response; :func:`send` does the same on an open
(possibly kept-alive) connection.
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.servers import HTTPResult, free_port, read_log, stop_process, wait_accepting, wait_for_text

if TYPE_CHECKING:
    from tests.support.netns import Netns

Headers = dict[str, str] | list[tuple[str, str]] | None


def send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: Headers = None,
) -> HTTPResult:
    """One request on ``conn``. ``headers`` may be (name, value) pairs to send a header
    several times (two ``Cookie`` lines); a bytes body gets a Content-Length unless given,
    an iterable body is sent piece by piece as it is (give Transfer-Encoding yourself)."""
    conn.putrequest(method, path, skip_accept_encoding=True)
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in pairs}
    if isinstance(body, (bytes, bytearray)) and "content-length" not in names:
        pairs.append(("Content-Length", str(len(body))))
    for name, value in pairs:
        conn.putheader(name, value)
    conn.endheaders()
    if isinstance(body, (bytes, bytearray)):
        conn.send(body)
    elif body is not None:
        for chunk in body:
            conn.send(chunk)
    resp = conn.getresponse()
    data = resp.read()
    return HTTPResult(resp.status, resp.reason, resp.headers, data)


class WebServer:
    """A web server listening on ``host:port`` (set by the subclass), in the network
    namespace ``netns`` when set (requests are then made from a thread inside it)."""

    host = "127.0.0.1"
    port: int
    netns: Netns | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: Headers = None,
        timeout: float = 30.0,
    ) -> HTTPResult:
        """One HTTP/1.1 request on a fresh connection (see :func:`send`)."""
        if self.netns is not None:
            return self.netns.call(self.direct_request, method, path, body, headers, timeout)
        return self.direct_request(method, path, body, headers, timeout)

    def direct_request(self, method: str, path: str, body, headers: Headers, timeout: float = 30.0) -> HTTPResult:
        """:meth:`request` from the calling thread, whatever namespace it is in."""
        conn = self.connection(timeout=timeout)
        try:
            return send(conn, method, path, body, headers)
        finally:
            conn.close()

    def get(self, path: str, **kw) -> HTTPResult:
        return self.request("GET", path, **kw)


class ForegroundServer(WebServer):
    """A web server process run in the foreground by :func:`launch`, its output in ``log_path``."""

    def __init__(
        self,
        proc: subprocess.Popen,
        port: int,
        log_path: Path,
        conf: Path,
        host: str = "127.0.0.1",
        netns: Netns | None = None,
    ):
        self.proc = proc
        self.host = host
        self.netns = netns
        self.port = port
        self.log_path = log_path
        self.conf = conf

    def log(self) -> str:
        """Everything the server wrote so far (its log goes to its stderr)."""
        return read_log(self.log_path)

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        return wait_for_text(self.log, needle, timeout)

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def launch(
    write_config: Callable[[int], tuple[list[str], Path]],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    netns: Netns | None = None,
    attempts: int = 5,
    timeout: float = 15.0,
) -> tuple[subprocess.Popen, int, Path]:
    """Start a web server on a free port of ``host``: ``write_config(port)`` writes its
    configuration and returns (argv, config path). Another port is tried when the process
    exits before it listens (the port was taken meanwhile); ``RuntimeError`` with the log
    after ``attempts`` tries or when it does not listen within ``timeout`` seconds. With
    ``netns`` the server runs in that network namespace (and is probed from inside it)."""

    def inside(fn, *args):
        return netns.call(fn, *args) if netns is not None else fn(*args)

    failures = []
    for _ in range(attempts):
        port = inside(free_port, host)
        argv, conf = write_config(port)
        if netns is not None:
            argv = netns.wrap(argv)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        if inside(wait_accepting, (host, port), proc, timeout):
            return proc, port, conf
        stop_process(proc, timeout=5)
        failures.append(f"port {port}: exit {proc.returncode}")
        if "address already in use" not in read_log(log_path).lower():
            break
    raise RuntimeError(f"{argv[0]} did not start ({'; '.join(failures)}):\n{read_log(log_path)[-4000:]}")
