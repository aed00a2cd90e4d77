"""A plain Starlette app for the real-app ASGI tests (tests/test_asgi_apps.py)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def home(request):
    return PlainTextResponse("starlette home")


async def echo(request):
    body = await request.body()
    return JSONResponse({"method": request.method, "length": len(body), "query": dict(request.query_params)})


async def user(request):
    return JSONResponse({"user": request.path_params["name"], "url": str(request.url_for("user", name="x"))})


app = Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST"]), Route("/users/{name}", user)])
