"""WSGI apps for the FastCGI protocol tests (tests/test_protocol.py).

One dispatching app, ``app``, chosen by PATH_INFO. Query parameters tune it. A few
routes write marker files so tests can see what happened inside the server process;
the marker path comes from the ``MARKER`` FastCGI param (``environ["MARKER"]``).

Routes:
  /hello                   b"hello"
  /environ                 JSON of every str-valued environ entry
  /sleep?t=0.5             sleep t seconds, then b"slept"
  /bytes?n=N&chunk=C       N bytes of pattern(N), in chunks of C bytes (C=0: one chunk)
  /write?n=N&chunk=C       the same through the write() callable of start_response
  /echo                    read all of wsgi.input, return it
  /echo-stream             read wsgi.input 64 KiB at a time, yield each piece
  /stream?n=100&delay=0.1&size=1000   yield n chunks, sleeping delay s before each;
                           close() writes MARKER ("closed after K chunks")
  /read-block              write MARKER.started, then wsgi.input.read(); afterwards
                           (returned or raised) write MARKER with what happened
  /empty                   empty body
  /empty-first             yield b"" then b"data" (an empty chunk must not end STDOUT)
  /error                   raise before start_response (-> 500)
  /error-late              yield b"partial" then raise
  /stderr                  write b"to stderr\n" to wsgi.errors, body b"ok"
  /stuck?t=30              write MARKER.started, sleep t seconds
  /cookies?n=30&size=200   n Set-Cookie headers with values of size bytes (also /big-header)
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs


def pattern(n: int) -> bytes:
    """n deterministic bytes that are not all alike (so a shifted or lost record shows)."""
    block = bytes(range(256)) + bytes(range(255, -1, -1)) + b"0123456789abcdef" * 3
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def _q(environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _write_marker(environ, text: str, suffix: str = "") -> None:
    path = environ.get("MARKER") or environ.get("HTTP_X_MARKER")
    if path:
        with open(path + suffix, "w") as f:
            f.write(text)


class _Stream:
    """Iterable body whose close() records how many chunks went out."""

    def __init__(self, environ, n: int, delay: float, size: int):
        self.environ, self.n, self.delay, self.size = environ, n, delay, size
        self.sent = 0

    def __iter__(self):
        for _ in range(self.n):
            time.sleep(self.delay)
            self.sent += 1
            yield b"x" * self.size

    def close(self):
        _write_marker(self.environ, f"closed after {self.sent} chunks")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _q(environ)
    text = [("Content-Type", "text/plain")]
    binary = [("Content-Type", "application/octet-stream")]

    if path == "/hello":
        start_response("200 OK", text)
        return [b"hello"]

    if path == "/environ":
        data = {k: v for k, v in environ.items() if isinstance(v, str)}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(data).encode("ascii")]

    if path == "/sleep":
        time.sleep(float(q.get("t", "0.5")))
        start_response("200 OK", text)
        return [b"slept"]

    if path in ("/bytes", "/write"):
        n, chunk = int(q.get("n", "1000")), int(q.get("chunk", "0"))
        data = pattern(n)
        pieces = [data] if chunk <= 0 else [data[i : i + chunk] for i in range(0, n, chunk)]
        if path == "/bytes":
            start_response("200 OK", binary)
            return pieces
        write = start_response("200 OK", binary)
        for piece in pieces:
            write(piece)
        return []

    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", binary + [("Content-Length", str(len(body)))])
        return [body]

    if path == "/echo-stream":
        stream = environ["wsgi.input"]
        start_response("200 OK", binary)

        def pieces():
            while True:
                piece = stream.read(65536)
                if not piece:
                    return
                yield piece

        return pieces()

    if path == "/stream":
        _write_marker(environ, "streaming", ".started")
        start_response("200 OK", text)
        return _Stream(environ, int(q.get("n", "100")), float(q.get("delay", "0.1")), int(q.get("size", "1000")))

    if path == "/read-block":
        _write_marker(environ, "reading", ".started")
        try:
            data = environ["wsgi.input"].read()
        except BaseException as e:
            _write_marker(environ, f"read raised {type(e).__name__}: {e}")
            raise
        _write_marker(environ, f"read returned {len(data)} bytes")
        start_response("200 OK", text)
        return [b"read %d" % len(data)]

    if path == "/empty":
        start_response("204 No Content", [])
        return [b""]

    if path == "/empty-first":
        start_response("200 OK", text)

        def gen():
            yield b""
            yield b"data"

        return gen()

    if path == "/error":
        raise RuntimeError("boom (raised on purpose by protocol_apps)")

    if path == "/error-late":
        start_response("200 OK", text)

        def gen():
            yield b"partial"
            raise RuntimeError("late boom (raised on purpose by protocol_apps)")

        return gen()

    if path == "/stderr":
        environ["wsgi.errors"].write("to stderr\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", text)
        return [b"ok"]

    if path in ("/cookies", "/big-header"):
        n, size = int(q.get("n", "1")), int(q.get("size", "10"))
        start_response("200 OK", text + [("Set-Cookie", f"c{i}={'v' * size}; Path=/") for i in range(n)])
        return [b"cookies"]

    if path == "/stuck":
        _write_marker(environ, "stuck", ".started")
        time.sleep(float(q.get("t", "30")))
        start_response("200 OK", text)
        return [b"unstuck"]

    start_response("404 Not Found", text)
    return [b"no route " + path.encode("latin-1")]


application = app
