"""Real ASGI frameworks served by oxfcgi behind Debian's real nginx (the generated config).

FastAPI (path and query params, pydantic validation with 422, a dependency, two Set-Cookie
headers, a StreamingResponse whose first chunk arrives before the last is made, a 20 MB
streamed upload hashed while the server's RSS stays bounded, lifespan state, ``url_for``
under a prefix), a plain Starlette app, Django's ``mysite.asgi:application`` and Quart.
The servers start with no interface setting: ``auto`` has to recognise each app. Also: 200
concurrent ``await asyncio.sleep(0.5)`` requests through nginx with the default settings
finish in under 3 s (an event loop, not a thread per request).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

MB = 1024 * 1024

if os.environ.get("CI") != "true":
    pytest.importorskip("fastapi")


def expect_json(result, status=200):
    assert result.status == status, f"HTTP {result.status}: {result.body[:2000]!r}"
    return json.loads(result.body)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def fastapi_site(start_server, start_nginx):
    server = start_server("tests.apps.fastapi_app:app")
    return server, start_nginx(server)


def test_fastapi_routes_params_and_dependencies(fastapi_site):
    server, nginx = fastapi_site
    assert expect_json(nginx.get("/items/5?q=hello", headers={"X-Client": "tester"})) == {
        "item_id": 5,
        "q": "hello",
        "who": "tester",
    }
    assert nginx.get("/items/notanumber").status == 422
    assert "Traceback" not in server.log()


def test_fastapi_pydantic_body_and_422(fastapi_site):
    _, nginx = fastapi_site
    body = json.dumps({"name": "widget", "price": 2.5, "tags": ["a"]}).encode()
    data = expect_json(nginx.request("POST", "/items", body=body, headers={"Content-Type": "application/json"}))
    assert data == {"created": {"name": "widget", "price": 2.5, "tags": ["a"]}, "total": 5.0}
    bad = nginx.request("POST", "/items", body=b'{"name": 3}', headers={"Content-Type": "application/json"})
    assert bad.status == 422
    assert "price" in bad.body.decode()


def test_fastapi_two_set_cookies(fastapi_site):
    _, nginx = fastapi_site
    result = nginx.get("/cookies")
    cookies = result.headers.get_all("Set-Cookie") or []
    assert len(cookies) == 2 and any(c.startswith("flavour=oatmeal") for c in cookies), cookies


def test_fastapi_streaming_response_is_not_held_back(fastapi_site):
    _, nginx = fastapi_site
    conn = nginx.connection(timeout=30)
    try:
        started = time.monotonic()
        conn.request("GET", "/stream?n=5&delay=0.4")
        resp = conn.getresponse()
        first_at, body = None, b""
        while piece := resp.read1(65536):
            first_at = first_at if first_at is not None else time.monotonic() - started
            body += piece
        total = time.monotonic() - started
    finally:
        conn.close()
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(5))
    assert first_at is not None and first_at < total / 2, (first_at, total)


def test_fastapi_twenty_megabyte_streamed_upload_with_bounded_memory(fastapi_site):
    server, nginx = fastapi_site
    warm = expect_json(nginx.request("POST", "/upload", body=b"x" * 100_000))
    pid = warm["pid"]
    before = rss(pid)
    rng = random.Random(5)
    chunks = [rng.randbytes(MB) for _ in range(20)]
    data = expect_json(
        nginx.request(
            "POST",
            "/upload",
            body=iter(chunks),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(20 * MB)},
            timeout=60,
        )
    )
    assert (data["size"], data["sha256"]) == (20 * MB, hashlib.sha256(b"".join(chunks)).hexdigest())
    growth = rss(pid) - before
    assert growth < 30 * MB, f"RSS grew by {growth / MB:.1f} MB during a 20 MB upload"


def test_fastapi_lifespan_state(fastapi_site):
    server, nginx = fastapi_site
    assert expect_json(nginx.get("/state"))["greeting"] == "hello from lifespan"
    assert "lifespan startup complete" in server.log()


def test_fastapi_under_a_prefix_makes_urls_with_root_path(start_server, start_nginx):
    server = start_server("tests.apps.fastapi_app:app")
    nginx = start_nginx(server)
    where = expect_json(nginx.get("/app/where"))
    assert where["root_path"] == "/app" and where["path"] == "/app/where"
    go = nginx.get("/app/go")
    assert go.status == 303 and go.header("Location").endswith("/app/items/3"), go.headers
    assert expect_json(nginx.get("/app/items/3"))["item_id"] == 3


def test_two_hundred_concurrent_sleeps_through_nginx_under_three_seconds(fastapi_site):
    _, nginx = fastapi_site
    expect_json(nginx.get("/sleep?s=0"))

    def one(_):
        return nginx.get("/sleep?s=0.5", timeout=30).status

    started = time.monotonic()
    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}
    assert elapsed < 3.0, f"200 concurrent 0.5 s sleeps took {elapsed:.1f} s"


def test_starlette(start_server, start_nginx):
    server = start_server("tests.apps.starlette_app:app")
    nginx = start_nginx(server)
    home = nginx.get("/")
    assert home.status == 200 and home.body == b"starlette home"
    data = expect_json(nginx.request("POST", "/echo?x=1", body=b"12345"))
    assert data == {"method": "POST", "length": 5, "query": {"x": "1"}}
    assert expect_json(nginx.get("/users/bob"))["user"] == "bob"


def test_quart(start_server, start_nginx):
    server = start_server("tests.apps.quart_app:app")
    nginx = start_nginx(server)
    assert expect_json(nginx.get("/")) == {"page": "index", "item_url": "/items/7"}
    assert expect_json(nginx.get("/app/"))["item_url"] == "/app/items/7"
    body = urllib.parse.urlencode([("a", "1"), ("a", "2")]).encode()
    form = nginx.request("POST", "/form", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert expect_json(form) == {"form": {"a": ["1", "2"]}}


def test_django_asgi_application(start_server, start_nginx, tmp_path):
    """Django's startproject site, served as ``mysite.asgi:application``: the admin login (a
    form POST with its CSRF token and session cookie) works through nginx at the root."""
    import sys

    from tests.support.django_site import Browser, make_project

    project = make_project(tmp_path / "dj", sys.executable)
    server = start_server("mysite.asgi:application", "--chdir", str(project))
    nginx = start_nginx(server)
    browser = Browser(nginx.host, nginx.port)
    browser.login("")
    status, _, page = browser.get("/admin/")
    assert status == 200 and "Site administration" in page, page[:1000]
    assert "ASGI application" in server.log()
