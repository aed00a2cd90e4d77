"""A FastAPI app for the real-app ASGI tests (tests/test_asgi_apps.py, Apache, lighttpd).

Routes: path and query params, a pydantic body (422 when invalid), a dependency reading a
header, two Set-Cookie headers, a StreamingResponse produced slowly, a streamed upload
hashed as it arrives, the state the lifespan set, a redirect made with ``url_for`` (so it
carries ``root_path``), and an ``asyncio.sleep`` route.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"started_pid": os.getpid(), "greeting": "hello from lifespan"}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def client_name(x_client: str | None = Header(default=None)) -> str:
    return x_client or "anonymous"


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, who: str = Depends(client_name)):
    return {"item_id": item_id, "q": q, "who": who}


@app.post("/items")
async def create_item(item: Item):
    return {"created": item.model_dump(), "total": item.price * 2}


@app.get("/cookies")
async def cookies(response: Response):
    response.set_cookie("flavour", "oatmeal")
    response.set_cookie("session", "abc123", httponly=True)
    return {"ok": True}


@app.get("/stream")
async def stream(n: int = 5, delay: float = 0.3):
    async def chunks():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()}


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting, "started_pid": request.state.started_pid}


@app.get("/go")
async def go(request: Request):
    return RedirectResponse(str(request.url_for("read_item", item_id=3)), status_code=303)


@app.get("/where")
async def where(request: Request):
    return {"root_path": request.scope.get("root_path"), "path": request.url.path, "url": str(request.url)}


@app.get("/sleep")
async def sleep(s: float = 0.5):
    await asyncio.sleep(s)
    return {"slept": s}
