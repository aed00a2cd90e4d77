"""CGI mode for an ASGI application: one request from ``os.environ``, stdin and stdout.

The counterpart of :func:`oxfcgi._cgi.serve_cgi` (flup's ``forceCGI``, ``FCGI_FORCE_CGI=Y``):
the event loop runs once — lifespan startup (``lifespan`` setting), the request, lifespan
shutdown. The scope follows the same rules as the engine's (``src/asgi/scope.rs``): ASGI 3.0,
HTTP spec 2.4, built from the CGI/1.1 variables (RFC 3875 §4.1) instead of FastCGI params.
"""

from __future__ import annotations

import asyncio
import http
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any, BinaryIO

from ._asgi import _Lifespan
from ._interface import LifespanFailed

#: Bytes of the request body per ``http.request`` event.
CHUNK = 64 * 1024


def cgi_scope(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ASGI ``http`` scope for the CGI request in ``environ`` (str values)."""
    script, path_info = environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")
    path = (script + path_info) or "/"
    raw = environ.get("REQUEST_URI", "").split("?", 1)[0] or path
    headers = [
        (name[5:].lower().replace("_", "-").encode("latin-1"), _raw(value))
        for name, value in environ.items()
        if name.startswith("HTTP_") and name not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")
    ]
    if environ.get("CONTENT_TYPE"):
        headers.append((b"content-type", _raw(environ["CONTENT_TYPE"])))
    if environ.get("CONTENT_LENGTH", "").isdigit():
        headers.append((b"content-length", _raw(environ["CONTENT_LENGTH"])))
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1"
    port = environ.get("SERVER_PORT", "")
    client = environ.get("REMOTE_ADDR")
    remote_port = environ.get("REMOTE_PORT", "")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "2" if protocol.startswith("2") else protocol,
        "method": environ.get("REQUEST_METHOD", "GET"),
        "scheme": "https" if environ.get("HTTPS", "off").lower() in ("on", "1") else "http",
        "path": path,
        "raw_path": _raw(raw),
        "root_path": script,
        "query_string": _raw(environ.get("QUERY_STRING", "")),
        "headers": headers,
        "client": (client, int(remote_port) if remote_port.isdigit() else 0) if client else None,
        "server": (environ.get("SERVER_NAME", ""), int(port) if port.isdigit() else None),
        "extensions": {"cgi": {"environ": dict(environ)}},
    }


def _raw(value: str) -> bytes:
    """A CGI variable's bytes as the web server sent them (``os.environ`` decoded them with the
    file system encoding and surrogate escapes)."""
    return os.fsencode(value)


class _Exchange:
    """``receive``/``send`` over stdin/stdout for one request."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, length: int | None) -> None:
        self.stdin, self.stdout, self.left = stdin, stdout, length
        self.head: bytes | None = None
        self.started = self.finished = False
        self.body_done = False

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            # The body was read; the next event is the end of the exchange.
            while not self.finished:
                await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}
        want = CHUNK if self.left is None else min(CHUNK, self.left)
        data = self.stdin.read(want) if want else b""
        if self.left is not None:
            self.left -= len(data)
        self.body_done = not data or self.left == 0
        return {"type": "http.request", "body": data, "more_body": not self.body_done}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "http.response.start" and not self.started:
            status = int(message["status"])
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Unknown"
            lines = [f"Status: {status} {reason}".encode()]
            for name, value in message.get("headers", []):
                name, value = bytes(name), bytes(value)
                if any(c in name + value for c in b"\r\n\0"):
                    raise ValueError(f"response header {name!r} contains CR, LF or NUL")
                lines.append(name + b": " + value)
            self.head = b"\r\n".join(lines) + b"\r\n\r\n"
            self.started = True
        elif kind == "http.response.body" and self.started and not self.finished:
            out = (self.head or b"") + bytes(message.get("body", b""))
            self.head = None
            self.stdout.write(out)
            self.stdout.flush()
            self.finished = not message.get("more_body", False)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in this state (CGI mode)")


async def _once(app: Any, environ: Mapping[str, str], lifespan: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    state: dict[str, Any] = {}
    life = None if lifespan == "off" else _Lifespan(app, state, required=lifespan == "on")
    if life is not None:
        await life.startup()
    # RFC 3875 §4.1.2: no CONTENT_LENGTH, no body (stdin is not read to its end).
    length_text = environ.get("CONTENT_LENGTH", "")
    exchange = _Exchange(stdin, stdout, int(length_text) if length_text.isdigit() else 0)
    try:
        scope = cgi_scope(environ)
        if life is not None and life.supported:
            scope["state"] = dict(state)
        await app(scope, exchange.receive, exchange.send)
        if not exchange.finished:
            raise RuntimeError("the ASGI application returned without completing its response")
    except Exception as e:
        sys.stderr.write(f"Error in the ASGI application (CGI mode): {e}\n{''.join(traceback.format_exception(e))}")
        sys.stderr.flush()
        if exchange.head is not None or not exchange.started:  # nothing went out yet
            body = b"The server could not complete the request. The error was logged.\n"
            stdout.write(
                b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            stdout.flush()
    finally:
        exchange.finished = True
        if life is not None and life.supported:
            await life.shutdown()


def serve_cgi_asgi(app: Any, environ: Mapping[str, str], *, lifespan: str = "auto", loop: str = "auto") -> None:
    """Serve exactly one CGI request with the ASGI ``app``. ``environ``: the CGI variables
    (``os.environ`` and the ``environ`` setting's additions). ``lifespan``/``loop``: the
    settings of the same names. Raises :class:`LifespanFailed` when startup fails."""
    from ._asgi import new_event_loop

    event_loop = new_event_loop(loop)
    try:
        event_loop.run_until_complete(_once(app, environ, lifespan, sys.stdin.buffer, sys.stdout.buffer))
    finally:
        event_loop.close()


__all__ = ["LifespanFailed", "cgi_scope", "serve_cgi_asgi"]
