"""A real Flask app served by oxfcgi behind Debian's real nginx.

nginx runs with its own config (tests/support/nginx.py) and Debian's
/etc/nginx/fastcgi_params, so the app sees exactly what production sees:
SCRIPT_NAME/PATH_INFO from Flask's ``fastcgi_split_path_info`` recipe, empty
CONTENT_* on GET, HTTP_HOST without the port, two HTTP_COOKIE params for two
Cookie lines (nginx 1.22), FCGI_KEEP_CONN from an upstream keepalive pool, and
FCGI_STDERR in nginx's error log.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.apps.flask_app import stream_chunk

APP = "tests.apps.flask_app:app"
MB = 1024 * 1024


@pytest.fixture
def site(start_server, start_nginx):
    """oxfcgi (4 threads) serving the Flask app, with nginx in front."""
    server = start_server(APP, "--threads", "4")
    nginx = start_nginx(server)
    return server, nginx


def expect_json(result, status=200):
    assert result.status == status, (
        f"HTTP {result.status} {result.reason}, expected {status}; body: {result.body[:2000]!r}"
    )
    return json.loads(result.body)


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def socket_fd_count(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if fd.readlink().as_posix().startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


# ---------------------------------------------------------------------------------
# Routing and url_for under a mount prefix


def test_routes_and_url_for_under_app_prefix(site):
    server, nginx = site
    index = expect_json(nginx.get("/app/"))
    assert index["page"] == "index"
    assert index["script_name"] == "/app"
    assert index["path_info"] == "/"
    assert index["item_url"] == "/app/items/3"
    # Debian's fastcgi_params (since 1.22.1-9+deb12u10) sends HTTP_HOST=$host: no port.
    assert index["item_external"] in (
        "http://127.0.0.1/app/items/3",
        f"http://127.0.0.1:{nginx.port}/app/items/3",
    )

    item = expect_json(nginx.get("/app/items/3"))
    assert item["page"] == "item"
    assert item["item_id"] == 3
    assert item["self_url"] == "/app/items/3"
    assert item["index_url"] == "/app/"
    assert (item["script_name"], item["path_info"]) == ("/app", "/items/3")

    other = expect_json(nginx.get("/app/items/41"))
    assert other["item_id"] == 41 and other["self_url"] == "/app/items/41"

    assert nginx.get("/app/items/notanumber").status == 404
    assert nginx.get("/app/no/such/page").status == 404


def test_root_mount(site):
    """Flask's root recipe: ``PATH_INFO $fastcgi_script_name; SCRIPT_NAME ""``.

    nginx sends SCRIPT_NAME twice here (the full path from fastcgi_params, then
    the empty override); the later value must win, as in every CGI gateway.
    """
    server, nginx = site
    item = expect_json(nginx.get("/items/5"))
    assert item["item_id"] == 5
    assert (item["script_name"], item["path_info"]) == ("", "/items/5")
    assert item["self_url"] == "/items/5"
    assert item["index_url"] == "/"
    index = expect_json(nginx.get("/"))
    assert index["page"] == "index" and index["item_url"] == "/items/3"


def test_environ_from_nginx(site):
    server, nginx = site
    env = expect_json(nginx.get("/app/env?x=1"))
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == "x=1"
    assert env["REQUEST_URI"] == "/app/env?x=1"
    assert env["HTTP_HOST"] in ("127.0.0.1", f"127.0.0.1:{nginx.port}")
    assert env["SERVER_PORT"] == str(nginx.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "http"


# ---------------------------------------------------------------------------------
# Query strings, forms, cookies


def test_query_string(site):
    server, nginx = site
    query = "a=1&b=two%20words&a=3&empty=&u=%C3%A9t%C3%A9&plus=x+y&amp=%26"
    data = expect_json(nginx.get(f"/app/query?{query}"))
    assert data["query_string"] == query
    assert data["args"] == {
        "a": ["1", "3"],
        "b": ["two words"],
        "empty": [""],
        "u": ["été"],
        "plus": ["x y"],
        "amp": ["&"],
    }
    assert expect_json(nginx.get("/app/query"))["args"] == {}


def test_form_post_urlencoded(site):
    server, nginx = site
    fields = [("name", "Zoë & co"), ("tags", "a"), ("tags", "b=c"), ("empty", "")]
    body = urllib.parse.urlencode(fields).encode()
    data = expect_json(
        nginx.request(
            "POST",
            "/app/form",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    assert data["form"] == {"name": ["Zoë & co"], "tags": ["a", "b=c"], "empty": [""]}
    assert data["content_length"] == len(body)


def test_form_post_multipart(site):
    server, nginx = site
    boundary = "----oxfcgi" + uuid.uuid4().hex
    parts = [("title", "hello"), ("comment", "line1\r\nline2"), ("title", "again")]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    data = expect_json(
        nginx.request(
            "POST",
            "/app/form",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    )
    assert data["form"] == {"title": ["hello", "again"], "comment": ["line1\r\nline2"]}


def test_cookies_two_cookie_headers(site):
    """nginx 1.22 sends one HTTP_COOKIE param per Cookie line; both must reach the app."""
    server, nginx = site
    data = expect_json(nginx.get("/app/cookies", headers=[("Cookie", "a=1"), ("Cookie", "b=2; c=three")]))
    assert data["cookies"] == {"a": "1", "b": "2", "c": "three"}
    assert data["http_cookie"] == "a=1; b=2; c=three"

    single = expect_json(nginx.get("/app/cookies", headers=[("Cookie", "only=one")]))
    assert single["cookies"] == {"only": "one"}


def test_set_cookie_headers_survive(site):
    server, nginx = site
    result = nginx.get("/app/cookies/set")
    assert result.status == 200
    set_cookies = result.headers.get_all("Set-Cookie") or []
    assert len(set_cookies) == 2, set_cookies
    assert any(c.startswith('flavour="oatmeal raisin"') for c in set_cookies), set_cookies
    assert any(c.startswith("session_id=abc123") and "HttpOnly" in c for c in set_cookies)

    # Send them back as a browser would.
    jar = "; ".join(c.split(";", 1)[0] for c in set_cookies)
    back = expect_json(nginx.get("/app/cookies", headers={"Cookie": jar}))
    assert back["cookies"] == {"flavour": "oatmeal raisin", "session_id": "abc123"}


# ---------------------------------------------------------------------------------
# Request body streaming


def _random_body(total: int, chunk: int = MB, seed: int = 1234):
    """Yield ``total`` pseudo-random bytes in ``chunk`` pieces; return their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    chunks = []
    sent = 0
    while sent < total:
        piece = rng.randbytes(min(chunk, total - sent))
        digest.update(piece)
        chunks.append(piece)
        sent += len(piece)
    return chunks, digest.hexdigest()


def test_large_upload_streams_with_bounded_memory(site):
    """50 MB through nginx (fastcgi_request_buffering off) to an app that reads
    64 KB at a time, slowly: the server must not buffer the body in memory."""
    server, nginx = site
    size = 50 * MB
    chunks, sha = _random_body(size)

    # Warm up the code path (imports, allocator arenas) with a small upload.
    warm = expect_json(nginx.request("POST", "/app/upload", body=b"x" * 300_000))
    assert warm["size"] == 300_000
    pid = warm["pid"]
    assert pid == server.proc.pid, "the app should run inside the oxfcgi server process"

    # Reset the peak-RSS counter when the kernel allows it (write 5 to clear_refs).
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
    before = proc_status(pid)

    started = time.monotonic()
    data = expect_json(
        nginx.request(
            "POST",
            "/app/upload?throttle=0.001",
            body=iter(chunks),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            timeout=60,
        )
    )
    elapsed = time.monotonic() - started
    after = proc_status(pid)

    assert data["size"] == size
    assert data["on_disk"] == size
    assert data["sha256"] == sha
    assert data["largest_read"] <= 64 * 1024
    growth = after["VmHWM"] - before["VmRSS"]
    assert growth < 20 * MB, (
        f"server peak RSS grew by {growth / MB:.1f} MB during a 50 MB streamed upload "
        f"(VmRSS before {before['VmRSS'] / MB:.1f} MB, VmHWM after {after['VmHWM'] / MB:.1f} MB, "
        f"{elapsed:.1f}s)"
    )


def test_chunked_upload_without_content_length(site):
    """A chunked upload with fastcgi_request_buffering off reaches the app while
    nginx does not know the length yet, so CONTENT_LENGTH is empty. The body is
    still terminated (FastCGI's empty STDIN record), which the server announces
    with ``wsgi.input_terminated``; Flask/Werkzeug only read such a body then."""
    server, nginx = site
    size = 5 * MB
    chunks, sha = _random_body(size, chunk=256 * 1024, seed=99)

    def slow_chunks():
        for piece in chunks:
            time.sleep(0.01)
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"
        yield b"0\r\n\r\n"

    data = expect_json(
        nginx.request(
            "POST",
            "/app/upload",
            body=slow_chunks(),
            headers={"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"},
            timeout=60,
        )
    )
    assert data["size"] == size, data
    assert data["sha256"] == sha


# ---------------------------------------------------------------------------------
# Response streaming


def test_streamed_response_arrives_in_full(site):
    server, nginx = site
    count, size = 200, 16384
    expected = b"".join(stream_chunk(i, size) for i in range(count))
    for extra in ("", "&nginx_buffering=1"):
        result = nginx.get(f"/app/stream?n={count}&size={size}{extra}")
        assert result.status == 200
        assert len(result.body) == len(expected)
        assert hashlib.sha256(result.body).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_streamed_response_is_not_held_back(site):
    """Each yielded block is sent when it is yielded (PEP 3333): the first one
    reaches the client long before the generator finishes."""
    server, nginx = site
    count, size, delay = 6, 4096, 0.5
    conn = nginx.connection(timeout=30)
    try:
        started = time.monotonic()
        conn.request("GET", f"/app/stream?n={count}&size={size}&delay={delay}")
        resp = conn.getresponse()
        assert resp.status == 200
        first_at = None
        received = b""
        while True:
            piece = resp.read1(65536)
            if not piece:
                break
            if first_at is None:
                first_at = time.monotonic() - started
            received += piece
        total = time.monotonic() - started
    finally:
        conn.close()
    assert received == b"".join(stream_chunk(i, size) for i in range(count))
    assert total >= count * delay * 0.9
    assert first_at is not None and first_at < count * delay / 2, (
        f"first body bytes after {first_at:.2f}s, whole response took {total:.2f}s"
    )


# ---------------------------------------------------------------------------------
# Errors


def test_app_exception_gives_500_and_traceback_in_nginx_error_log(site):
    server, nginx = site
    token = uuid.uuid4().hex
    result = nginx.get(f"/app/boom?token={token}")
    assert result.status == 500
    assert token.encode() not in result.body, "the traceback must not be shown to the client"

    log = nginx.wait_for_log(f"deliberate failure {token}")
    assert "FastCGI sent in stderr" in log, log[-4000:]
    assert f"deliberate failure {token}" in log, "the exception message is not in nginx's error log:\n" + log[-4000:]
    assert "Traceback" in log or "AppBoom" in log, log[-4000:]

    # The server survives and keeps serving.
    assert expect_json(nginx.get("/app/items/3"))["item_id"] == 3


def test_deep_traceback_keeps_exception_message_in_nginx_error_log(site):
    """Real tracebacks (Django, Flask extensions, recursion) run to several KB.
    nginx cuts every error-log entry at about 2 KB (NGX_MAX_ERROR_STR), one entry
    per FCGI_STDERR record, so a traceback sent as one big record loses its last
    line: the exception type and message. It must still be findable there."""
    server, nginx = site
    token = uuid.uuid4().hex
    result = nginx.get(f"/app/boom-deep?token={token}&depth=25")
    assert result.status == 500
    log = nginx.wait_for_log(f"deep failure {token}")
    assert "FastCGI sent in stderr" in log, log[-4000:]
    assert f"deep failure {token}" in log, (
        "the exception message of a long traceback is not in nginx's error log "
        "(one FCGI_STDERR record per traceback gets truncated by nginx); tail:\n" + log[-2500:]
    )


def test_wsgi_errors_reach_nginx_error_log(site):
    """Flask's default log handler writes to wsgi.errors during a request."""
    server, nginx = site
    token = uuid.uuid4().hex
    data = expect_json(nginx.get(f"/app/logged-error?token={token}"), status=500)
    assert data == {"logged": token}
    log = nginx.wait_for_log(f"handled failure {token}")
    assert f"logged via wsgi.errors {token}" in log, log[-4000:]
    assert f"handled failure {token}" in log, log[-4000:]


# ---------------------------------------------------------------------------------
# Persistent connections


def test_keepalive_pool_with_more_clients_than_threads(start_server, start_nginx):
    """fastcgi_keep_conn on + upstream keepalive 8, 16 HTTP keep-alive clients,
    2 Python threads: idle kept connections must not pin the threads (a
    thread-per-connection server times out with 504 here)."""
    server = start_server(APP, "--threads", "2")
    nginx = start_nginx(server)
    clients, per_client = 16, 20

    warm = expect_json(nginx.get("/app/sleep?ms=1"))
    pid = warm["pid"]
    baseline_sockets = socket_fd_count(pid)

    statuses: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(n: int) -> None:
        conn = nginx.connection(timeout=30)
        try:
            barrier.wait()
            for i in range(per_client):
                conn.request("GET", f"/keep/sleep?ms=20&c={n}&i={i}")
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    statuses.append(resp.status)
                    if resp.status != 200:
                        failures.append(f"client {n} request {i}: {resp.status} {body[:200]!r}")
        except Exception as exc:
            with lock:
                failures.append(f"client {n}: {exc!r}")
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    elapsed = time.monotonic() - started

    log = nginx.error_log()
    assert not failures, f"{len(failures)} failures in {elapsed:.1f}s: {failures[:10]}\n{log[-3000:]}"
    assert len(statuses) == clients * per_client
    assert all(s == 200 for s in statuses)
    for symptom in (
        "upstream timed out",
        "upstream prematurely closed",
        "Connection reset by peer",
        "no live upstreams",
    ):
        assert symptom not in log, log[-3000:]

    # The pool really held persistent FastCGI connections open to the server.
    kept = socket_fd_count(pid) - baseline_sockets
    assert kept >= 1, "no kept-alive FastCGI connection is open after the burst (FCGI_KEEP_CONN ignored?)"
    assert expect_json(nginx.get("/keep/items/7"))["self_url"] == "/keep/items/7"


def test_unread_request_body_then_more_requests_on_kept_connections(start_server, start_nginx):
    """The app answers without reading a 10 MB body (405 from Flask); the server
    must discard the rest of STDIN, and later requests on the same persistent
    FastCGI connections must still be answered correctly."""
    server = start_server(APP, "--threads", "2")
    nginx = start_nginx(server)
    body = b"z" * (10 * MB)
    for _ in range(3):
        result = nginx.request("POST", "/keep/items/3", body=body, timeout=30)
        assert result.status == 405, (result.status, result.body[:300], nginx.error_log()[-2000:])
    for i in range(20):
        item = expect_json(nginx.get(f"/keep/items/{i}"))
        assert item["item_id"] == i and item["self_url"] == f"/keep/items/{i}"
    upload = expect_json(nginx.request("POST", "/app/upload", body=b"y" * 1000))
    assert upload["size"] == 1000


def test_client_abort_mid_stream_leaves_server_healthy(site):
    """A client that hangs up in the middle of a streamed response makes nginx
    close the FastCGI connection; the server must carry on serving."""
    server, nginx = site
    for _ in range(3):
        conn = nginx.connection(timeout=30)
        conn.request("GET", "/keep/stream?n=400&size=65536&delay=0.005")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read1(65536)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    time.sleep(0.5)
    assert server.proc.poll() is None, server.log()
    for i in range(10):
        assert expect_json(nginx.get(f"/app/items/{i}"))["item_id"] == i
        assert expect_json(nginx.get(f"/keep/items/{i}"))["item_id"] == i
    count, size = 30, 10000
    streamed = nginx.get(f"/keep/stream?n={count}&size={size}")
    assert streamed.body == b"".join(stream_chunk(i, size) for i in range(count))
