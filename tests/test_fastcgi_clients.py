"""A real Flask app behind Debian's real HAProxy, Caddy and H2O, configured by ``oxfcgi config``.

Each client runs with what ``oxfcgi config haproxy|caddy|h2o`` prints (tests/support/haproxy.py,
caddy.py, h2o.py paste it unchanged), in front of one oxfcgi server per mount point (``/app``
and ``/``) started with the arguments of the ``oxfcgi serve`` command printed in the config's
comments. The checks are the ones the nginx tests make: routes and ``url_for`` at a prefix and
at the root, a form POST, cookies, a 10 MB upload, a chunked upload, a streamed response, an
exception reaching the log where the client puts FastCGI stderr; then what only some clients
do: HAProxy's ``option keep-conn`` under 32 concurrent clients and ``option mpxs-conns`` with
``--multiplexed``, H2O's ``fastcgi.spawn``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import random
import re
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oxfcgi.config import ConfigOptions, generate
from tests.apps.flask_app import stream_chunk
from tests.support.fixtures import ServerProcess, need_binary
from tests.support.generated import serve_arguments
from tests.support.http import ForegroundServer
from tests.support.servers import ROOT

APP = "tests.apps.flask_app:app"
MB = 1024 * 1024
CLIENTS = ("haproxy", "caddy", "h2o")
#: Seconds the generated configs let the client wait for the app (`oxfcgi config --timeout`):
#: short, so a request that hangs shows up as a failure quickly.
TIMEOUT = 10


@dataclass
class Site:
    """One web server and the oxfcgi servers behind it, by mount point."""

    client: str
    web: ForegroundServer
    servers: dict[str, ServerProcess] = field(default_factory=dict)

    def stderr_log(self) -> str:
        """Where what the app sends on FCGI_STDERR ends up: the client's log, except Caddy's
        (Caddy 2.6 ignores FastCGI stderr; oxfcgi's own log has it)."""
        if self.client == "caddy":
            return "\n".join(s.log() for s in self.servers.values())
        return self.web.log()


def _start_client(client: str, base: Path, texts: list[str]) -> ForegroundServer:
    binary = need_binary(client)
    if client == "haproxy":
        from tests.support.haproxy import start_haproxy

        return start_haproxy(base, texts, binary=binary)
    if client == "caddy":
        from tests.support.caddy import start_caddy

        return start_caddy(base, texts, binary=binary)
    from tests.support.h2o import start_h2o

    return start_h2o(base, texts, binary=binary)


def start_site(client: str, tmp_path: Path, start_server, *, prefixes=("/app", "/"), extra_args=(), **options) -> Site:
    """``client`` in front of one oxfcgi server (4 threads) per prefix, all as generated."""
    texts, servers = [], {}
    for prefix in prefixes:
        slug = prefix.strip("/") or "root"
        text = generate(
            ConfigOptions(
                target=client,
                app=APP,
                socket=str(tmp_path / f"{slug}.sock"),
                prefix=prefix,
                python=sys.executable,
                workdir=str(ROOT),
                timeout=TIMEOUT,
                max_body_size=20 * MB,
                **options,
            )
        )
        servers[prefix] = start_server(APP, *serve_arguments(text), "--threads", "4", *extra_args)
        texts.append(text)
    web = _start_client(client, tmp_path / client, texts)
    return Site(client, web, servers)


@pytest.fixture(params=CLIENTS)
def site(request, tmp_path, start_server):
    site = start_site(request.param, tmp_path, start_server)
    yield site
    site.web.stop()


def expect_json(result, status=200):
    assert result.status == status, f"HTTP {result.status} {result.reason}, expected {status}: {result.body[:2000]!r}"
    return json.loads(result.body)


# ---------------------------------------------------------------------------------
# Routing


def test_routes_and_url_for_at_a_prefix(site):
    web = site.web
    index = expect_json(web.get("/app/"))
    assert (index["script_name"], index["path_info"]) == ("/app", "/")
    assert index["item_url"] == "/app/items/3"
    item = expect_json(web.get("/app/items/3"))
    assert (item["script_name"], item["path_info"]) == ("/app", "/items/3")
    assert (item["self_url"], item["index_url"]) == ("/app/items/3", "/app/")
    assert web.get("/app/no/such/page").status == 404
    env = expect_json(web.get("/app/env?x=1"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/app", "/env", "x=1")


def test_the_mount_point_itself(site):
    """``GET /app``: HAProxy's documented path-info recipe sends SCRIPT_NAME=/app and no
    PATH_INFO, Caddy's split the same with an empty PATH_INFO. That is the mount point, not a
    whole path to repair (which served it at / and answered 404), and no warning is needed."""
    result = site.web.get("/app")
    assert result.status in (200, 301, 302, 308), result
    if result.status != 200:  # Flask redirects the mount point to its slash form
        assert result.header("Location").endswith("/app/"), result.headers
    else:
        assert expect_json(result)["script_name"] == "/app"
    # The server goes on serving on its kept connections.
    assert expect_json(site.web.get("/app/items/4"))["item_id"] == 4
    log = site.servers["/app"].log()
    assert "SCRIPT_NAME" not in log, log


def test_root_mount(site):
    item = expect_json(site.web.get("/items/5"))
    assert (item["script_name"], item["path_info"]) == ("", "/items/5")
    assert (item["self_url"], item["index_url"]) == ("/items/5", "/")


# ---------------------------------------------------------------------------------
# Forms, cookies


def test_form_post_urlencoded(site):
    fields = [("name", "Zoë & co"), ("tags", "a"), ("tags", "b=c"), ("empty", "")]
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    data = expect_json(site.web.request("POST", "/app/form", body=body, headers=headers))
    assert data["form"] == {"name": ["Zoë & co"], "tags": ["a", "b=c"], "empty": [""]}
    assert data["content_length"] == len(body)


def test_cookies_set_and_sent_back(site):
    result = site.web.get("/app/cookies/set")
    assert result.status == 200
    set_cookies = result.headers.get_all("Set-Cookie") or []
    assert len(set_cookies) == 2, set_cookies
    jar = "; ".join(c.split(";", 1)[0] for c in set_cookies)
    back = expect_json(site.web.get("/app/cookies", headers={"Cookie": jar}))
    assert back["cookies"] == {"flavour": "oatmeal raisin", "session_id": "abc123"}


def test_authorization_reaches_the_app(site):
    """HAProxy drops the header unless told (the generated ``pass-header Authorization``)."""
    env = expect_json(site.web.get("/app/env", headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    assert env["HTTP_AUTHORIZATION"] == "Basic dXNlcjpwYXNz"


# ---------------------------------------------------------------------------------
# Request bodies


def _random_chunks(total: int, chunk: int, seed: int) -> tuple[list[bytes], str]:
    rng = random.Random(seed)
    chunks = [rng.randbytes(min(chunk, total - i)) for i in range(0, total, chunk)]
    return chunks, hashlib.sha256(b"".join(chunks)).hexdigest()


def test_ten_megabyte_upload(site):
    chunks, sha = _random_chunks(10 * MB, MB, seed=7)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(10 * MB)}
    data = expect_json(site.web.request("POST", "/app/upload", body=iter(chunks), headers=headers, timeout=60))
    assert (data["size"], data["sha256"]) == (10 * MB, sha)
    assert data["content_length"] == str(10 * MB)


def test_chunked_upload(site):
    """A body without Content-Length: Caddy sends CONTENT_LENGTH=-1 for it, which must not
    reach the app; the body ends at FastCGI's empty FCGI_STDIN (wsgi.input_terminated).
    HAProxy refuses (400) a chunked body larger than its 16 KiB buffer (it needs the length
    for FastCGI; the generated config says so), so it gets one that fits."""
    size = 12 * 1024 if site.client == "haproxy" else 3 * MB
    chunks, sha = _random_chunks(size, 4096 if site.client == "haproxy" else 256 * 1024, seed=11)

    def chunked():
        for piece in chunks:
            time.sleep(0.005)
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"
        yield b"0\r\n\r\n"

    headers = {"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"}
    data = expect_json(site.web.request("POST", "/app/upload", body=chunked(), headers=headers, timeout=60))
    assert (data["size"], data["sha256"]) == (size, sha)
    assert data["content_length"] in (None, str(size)), data  # a buffering client may count it
    assert data["input_terminated"] is True


# ---------------------------------------------------------------------------------
# Responses


def test_streamed_response_is_not_held_back(site):
    """Each yielded block reaches the client when it is yielded (Caddy needs the generated
    ``flush_interval -1`` for that)."""
    count, size, delay = 6, 4096, 0.5
    conn = site.web.connection(timeout=30)
    try:
        started = time.monotonic()
        conn.request("GET", f"/app/stream?n={count}&size={size}&delay={delay}")
        resp = conn.getresponse()
        assert resp.status == 200
        first_at, received = None, b""
        while piece := resp.read1(65536):
            first_at = first_at if first_at is not None else time.monotonic() - started
            received += piece
    finally:
        conn.close()
    assert received == b"".join(stream_chunk(i, size) for i in range(count))
    assert first_at is not None and first_at < count * delay / 2, f"first bytes after {first_at:.2f} s"


def _get_or_report(site, path: str):
    """GET ``path``; when the connection fails, say whether the client died and show its log."""
    try:
        return site.web.get(path)
    except OSError as e:
        status = site.web.proc.poll()
        raise AssertionError(f"{site.client} (exit status {status}): {e}; log:\n{site.web.log()[-3000:]}") from e


def _wait_for_log(site, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in site.stderr_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in site.stderr_log(), site.stderr_log()[-3000:]


@pytest.mark.parametrize("size", [16, 64, 1800, 8192, 40000])
def test_a_log_line_on_its_own_reaches_the_log(site, size):
    """A wsgi.errors line that travels alone (the app flushes it, then waits) reaches the
    client's log, and the client lives on. Sizes that are multiples of 8: HAProxy 2.6.12
    crashed (SIGSEGV) on the first such FCGI_STDERR record without padding."""
    for _ in range(3):
        token = uuid.uuid4().hex[:12]  # the line at size 16 has room for 15 bytes
        result = _get_or_report(site, f"/app/log?token={token}&size={size}")
        assert expect_json(result) == {"logged": token, "size": size}
    _wait_for_log(site, token)
    assert expect_json(_get_or_report(site, "/app/items/3"))["item_id"] == 3


def test_app_exception_reaches_the_log(site):
    """The 500 page reaches the client and the traceback the web server's log. Repeated:
    tracebacks come in many sizes (HAProxy 2.6.12 crashed on some)."""
    for _ in range(30):
        token = uuid.uuid4().hex
        result = _get_or_report(site, f"/app/boom?token={token}")
        assert result.status == 500
        assert token.encode() not in result.body
    _wait_for_log(site, f"deliberate failure {token}")
    assert expect_json(site.web.get("/app/items/3"))["item_id"] == 3


# ---------------------------------------------------------------------------------
# HAProxy: kept-open and multiplexed FastCGI connections


def _status(server: ServerProcess) -> dict:
    result = server.request("GET", "/oxfcgi-status", query="json")
    assert result.status == 200, result
    return json.loads(result.body)


def _load(site: Site, clients: int, per_client: int, path) -> list[str]:
    """``clients`` threads, each sending ``per_client`` requests on fresh HTTP connections;
    the failures, as text."""
    failures: list[str] = []
    lock = threading.Lock()

    def one_client(n: int) -> None:
        for i in range(per_client):
            token = f"{n}-{i}-{uuid.uuid4().hex[:8]}"
            try:
                result = site.web.get(path(token), timeout=TIMEOUT + 10)
                ok = result.status == 200 and token.encode() in result.body
                problem = None if ok else f"{token}: HTTP {result.status} {result.body[:200]!r}"
            except OSError as e:
                problem = f"{token}: {e!r}"
            if problem:
                with lock:
                    failures.append(problem)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    return failures


def test_haproxy_keep_conn_under_32_concurrent_clients(tmp_path, start_server):
    """``option keep-conn``: HAProxy sends the next FCGI_BEGIN_REQUEST on a connection as soon
    as a response's body is complete, before its FCGI_END_REQUEST. oxfcgi holds it until the
    current request ends (as php-fpm does) instead of answering FCGI_CANT_MPX_CONN, which
    HAProxy ignores (the request hung until `timeout server`: 504)."""
    site = start_site(
        "haproxy", tmp_path, start_server, prefixes=("/app",), extra_args=("--status-path", "/oxfcgi-status")
    )
    try:
        failures = _load(site, 32, 10, lambda token: f"/app/query?token={token}")
        assert failures == [], f"{len(failures)} of 320 failed: {failures[:5]}\n{site.web.log()[-3000:]}"
        status = _status(site.servers["/app"])
        assert status["accepted conn"] < 320 / 3, f"FastCGI connections were not reused: {status}"
    finally:
        site.web.stop()


def test_haproxy_multiplexed(tmp_path, start_server):
    """``option mpxs-conns`` + ``http-reuse always`` with ``--multiplexed``: 48 concurrent
    requests with unique answers share a few FastCGI connections and none gets another's body."""
    site = start_site(
        "haproxy",
        tmp_path,
        start_server,
        prefixes=("/app",),
        extra_args=("--status-path", "/oxfcgi-status"),
        multiplexed=True,
    )
    try:
        assert "--multiplexed" in site.servers["/app"].proc.args
        failures = _load(site, 48, 4, lambda token: f"/app/query?token={token}&pad={'x' * 2000}")
        assert failures == [], f"{len(failures)} of 192 failed: {failures[:5]}\n{site.web.log()[-3000:]}"
        status = _status(site.servers["/app"])
        assert status["accepted conn"] < 192 / 3, status
    finally:
        site.web.stop()


# ---------------------------------------------------------------------------------
# H2O: fastcgi.spawn


def test_h2o_spawns_a_fcgi_script(tmp_path):
    """``oxfcgi config h2o --spawn``: H2O starts ``oxfcgi serve app.fcgi`` itself, the
    listening socket on fd 0, and stops it when it stops."""
    script = tmp_path / "site.fcgi"
    script.write_text("from oxfcgi import run\nfrom tests.apps.flask_app import app\n\nrun(app)\n")
    texts = [
        generate(
            ConfigOptions(
                target="h2o",
                app=str(script),
                prefix=prefix,
                python=sys.executable,
                workdir=str(ROOT),
                user=getpass.getuser(),
                timeout=TIMEOUT,
                spawn=True,
            )
        )
        for prefix in ("/app", "/")
    ]
    web = _start_client("h2o", tmp_path / "h2o", texts)
    try:
        item = expect_json(web.get("/app/items/3"), 200)
        assert (item["script_name"], item["path_info"]) == ("/app", "/items/3")
        assert expect_json(web.get("/items/5"))["script_name"] == ""
        body = b"a=1&b=two"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        assert expect_json(web.request("POST", "/app/form", body=body, headers=headers))["form"] == {
            "a": ["1"],
            "b": ["two"],
        }
        spawned = re.findall(r"oxfcgi serve", " ".join(_cmdlines_of_children(web.proc.pid)))
        assert spawned, "H2O did not spawn oxfcgi"
    finally:
        web.stop()


def _cmdlines_of_children(pid: int) -> list[str]:
    from tests.support.servers import cmdline, descendants

    return [" ".join(cmdline(p)) for p in descendants(pid)]
