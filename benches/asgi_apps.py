"""ASGI apps for the benchmarks (benches/compare.py's ASGI table), selectable by name.

    oxfcgi serve benches.asgi_apps:asgi_hello ...
    uvicorn benches.asgi_apps:fastapi_json ...

Names:
    asgi_hello      a plain ASGI callable answering 13 bytes, "Hello, World!"
    fastapi_json    a FastAPI app whose every GET answers {"message": "Hello, World!"} (JSON)
    wsgi_asgi_hello, wsgi_fastapi_json
                    the same two wrapped by a2wsgi's ASGIMiddleware, for a WSGI server (how
                    people serve ASGI over FastCGI today); built on first use
"""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, World!"
_HEAD = [(b"content-type", b"text/plain"), (b"content-length", str(len(HELLO)).encode())]


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEAD})
    await send({"type": "http.response.body", "body": HELLO})


def _fastapi() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/{path:path}")
    async def message(path: str) -> dict[str, str]:
        return {"message": "Hello, World!"}

    return app


def __getattr__(name: str) -> Any:
    """``fastapi_json`` and the a2wsgi-wrapped apps, imported only when asked for (the
    WSGI benchmarks do not need FastAPI or a2wsgi installed)."""
    if name == "fastapi_json":
        app = _fastapi()
    elif name.startswith("wsgi_"):
        from a2wsgi import ASGIMiddleware

        app = ASGIMiddleware(globals()["asgi_hello"] if name == "wsgi_asgi_hello" else __getattr__(name[5:]))
    else:
        raise AttributeError(name)
    globals()[name] = app
    return app
