"""Plain ASGI 3 apps (no framework) for the ASGI conformance tests (tests/test_asgi.py).

``app`` dispatches on the path:

- ``/scope``: the scope as JSON (bytes shown as latin-1 text, headers as pairs).
- ``/echo``: reads the whole body with ``receive()``, answers its length, sha256 and the
  ``more_body`` flags seen (``?sizes=1`` lists each chunk's size).
- ``/stream?n=N&size=S&delay=D``: N chunks of S bytes, D seconds apart.
- ``/boom``: raises before the response starts; ``/boom-late``: after the first chunk.
- ``/nothing``: returns without sending anything.
- ``/wait-disconnect``: reads the body, then waits for ``http.disconnect`` and writes the
  time it came to the file named by ``?mark=``.
- ``/stream-until-gone?mark=F``: streams until ``send()`` raises; writes the exception's
  class name to F.
- ``/trailers``: asks for trailers (the server refuses).
- ``/pathsend?path=P``: sends the file P with the ``http.response.pathsend`` extension.
- ``/sleep?s=S``: ``await asyncio.sleep(S)``, then "slept".
- ``/state``: the lifespan state the scope carries.

``lifespan_app``: records startup and shutdown in ``state`` and in the file
``$OXFCGI_TEST_LIFESPAN_FILE``; ``failing_lifespan_app`` answers ``lifespan.startup.failed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import urllib.parse


def _text(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value


async def _respond(send, status, body, content_type=b"text/plain", headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send, data, status=200):
    await _respond(send, status, json.dumps(data).encode(), b"application/json")


def _query(scope):
    return {k: v[-1] for k, v in urllib.parse.parse_qs(scope["query_string"].decode()).items()}


async def app(scope, receive, send):
    assert scope["type"] == "http", scope["type"]
    path = (
        scope["path"][len(scope.get("root_path", "")) :]
        if scope["path"].startswith(scope.get("root_path", ""))
        else scope["path"]
    )
    q = _query(scope)
    if path == "/scope":
        shown = {k: _text(v) for k, v in scope.items() if k not in ("state",)}
        shown["state_keys"] = sorted(scope.get("state", {}))
        await _json(send, shown)
    elif path == "/echo":
        digest, total, flags, sizes = hashlib.sha256(), 0, [], []
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            digest.update(message["body"])
            total += len(message["body"])
            sizes.append(len(message["body"]))
            flags.append(message["more_body"])
            if not message["more_body"]:
                break
        data = {"size": total, "sha256": digest.hexdigest(), "last_more_body": flags[-1], "events": len(flags)}
        if q.get("sizes"):
            data["sizes"] = sizes
        await _json(send, data)
    elif path == "/stream":
        n, size, delay = int(q.get("n", 5)), int(q.get("size", 1000)), float(q.get("delay", 0))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": (b"%05d" % i) * (size // 5), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/boom":
        raise RuntimeError(f"asgi boom {q.get('token', '')}")
    elif path == "/boom-late":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError(f"asgi late boom {q.get('token', '')}")
    elif path == "/nothing":
        return
    elif path == "/wait-disconnect":
        while (await receive())["more_body"]:
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"waiting", "more_body": True})
        message = await receive()
        with open(q["mark"], "w") as f:
            f.write(f"{message['type']} {time.time()}")
    elif path == "/stream-until-gone":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
                await asyncio.sleep(0.01)
        except OSError as e:
            with open(q["mark"], "w") as f:
                f.write(type(e).__name__)
            raise
    elif path == "/late-final":
        # The last body goes out after a pause (the web server may abort meanwhile).
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(float(q.get("s", 0.5)))
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as e:
            with open(q["mark"], "w") as f:
                f.write(type(e).__name__)
    elif path == "/listen-after-response":
        # Django's pattern: a task waits for http.disconnect while the response is made.
        async def listen():
            message = await receive()
            with open(q["mark"], "w") as f:
                f.write(message["type"])

        while (await receive())["more_body"]:
            pass
        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.05)  # the listener waits in receive() before the response
        await _respond(send, 200, b"done")
        await asyncio.wait_for(listener, 5)
    elif path == "/cancelled-receive":
        # A receive() cancelled by a timeout, then the body read as usual.
        try:
            await asyncio.wait_for(receive(), 0.05)
            early = True
        except asyncio.TimeoutError:
            early = False
        body, more = b"", True
        while more:
            event = await receive()
            body, more = body + event.get("body", b""), event.get("more_body", False)
        await _json(send, {"early": early, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    elif path == "/start-then-raise":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        raise RuntimeError("failed after http.response.start, before any body")
    elif path == "/system-exit":
        raise SystemExit(3)
    elif path == "/trailers":
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        except RuntimeError as e:
            await _respond(send, 200, f"refused: {e}".encode())
    elif path == "/pathsend":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]}
        )
        await send({"type": "http.response.pathsend", "path": q["path"]})
    elif path == "/sleep":
        await asyncio.sleep(float(q.get("s", 0.1)))
        await _respond(send, 200, b"slept")
    elif path == "/state":
        await _json(send, {k: _text(v) for k, v in scope.get("state", {}).items()})
    else:
        await _respond(send, 404, b"not found")


def _mark(event: str) -> None:
    name = os.environ.get("OXFCGI_TEST_LIFESPAN_FILE")
    if name:
        with open(name, "a") as f:
            f.write(f"{event} {os.getpid()}\n")


async def lifespan_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started_by"] = os.getpid()
                scope["state"]["greeting"] = "hello from startup"
                _mark("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _mark("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await app(scope, receive, send)


async def failing_lifespan_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is not there"})
        return
    await app(scope, receive, send)


class AsgiObject:
    """An object whose __call__ is a coroutine function (as framework apps are)."""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        await app(scope, receive, send)


instance = AsgiObject()
