"""ASGI over FastCGI: the scope, receive and send (ASGI 3.0, HTTP 2.4), lifespan, and the
engine's behaviour around them, driven with the raw FastCGI client (oxfcgi.client).

The apps are plain ASGI callables (tests/apps/asgi_apps.py); real frameworks behind real web
servers are in tests/test_asgi_apps.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from oxfcgi.client import FCGI_END_REQUEST, FCGI_STDERR, FCGI_STDOUT, cgi_params
from tests.support.servers import wait_for

APP = "tests.apps.asgi_apps:app"


@pytest.fixture
def asgi(start_server):
    return start_server(APP)


def scope_of(server, path="/scope", **kw):
    resp = server.request("GET", path, **kw)
    assert resp.status == 200, (resp.status, resp.body[:500], resp.stderr[:2000])
    return json.loads(resp.body)


# --- the scope --------------------------------------------------------------------------


def test_the_scope_of_a_request(asgi):
    scope = scope_of(
        asgi,
        "/scope?a=1&b=%20x",
        headers=[("Accept", "text/html"), ("X-Forwarded-For", "10.0.0.9"), ("Cookie", "a=1")],
        params={
            "REMOTE_ADDR": "192.0.2.7",
            "REMOTE_PORT": "51234",
            "SERVER_ADDR": "192.0.2.1",
            "SERVER_PORT": "8443",
            "HTTPS": "on",
            "REMOTE_USER": "alice",
            "SERVER_PROTOCOL": "HTTP/1.1",
        },
    )
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["http_version"], scope["method"], scope["scheme"]) == ("1.1", "GET", "https")
    assert scope["path"] == "/scope" and scope["root_path"] == ""
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20x"
    headers = [tuple(h) for h in scope["headers"]]
    assert ("accept", "text/html") in headers
    assert ("x-forwarded-for", "10.0.0.9") in headers
    assert ("cookie", "a=1") in headers
    assert all(name == name.lower() and "_" not in name for name, _ in headers)
    assert scope["client"] == ["192.0.2.7", 51234]
    assert scope["server"] == ["192.0.2.1", 8443]
    assert scope["extensions"]["fastcgi"]["params"]["REMOTE_USER"] == "alice"
    assert "http.response.pathsend" in scope["extensions"]
    assert "state" not in scope or scope["state"] == {}


def test_path_is_decoded_utf8_and_includes_root_path(asgi):
    scope = scope_of(asgi, "/app/scope", script_name="/app")
    assert (scope["root_path"], scope["path"]) == ("/app", "/app/scope")
    # PATH_INFO is decoded by the web server; REQUEST_URI keeps the bytes as sent.
    scope = scope_of(asgi, "/scope", params={"PATH_INFO": "/scope", "REQUEST_URI": "/sc%6Fpe?x=1"})
    assert scope["raw_path"] == "/sc%6Fpe"
    # The path the web server decoded is UTF-8: é arrives as two bytes.
    resp = asgi.request("GET", "/caf\u00e9")
    assert resp.status == 404
    scope = scope_of(asgi, "/scope", params={"PATH_INFO": "/scope", "SCRIPT_NAME": ""})
    assert scope["path"] == "/scope"


def test_script_name_setting_sets_root_path(start_server):
    server = start_server(APP, "--script-name", "/mount")
    scope = scope_of(server, "/mount/scope")
    assert (scope["root_path"], scope["path"]) == ("/mount", "/mount/scope")


def test_content_headers_come_once_as_nginx_sends_them(asgi):
    """nginx sends CONTENT_TYPE and HTTP_CONTENT_TYPE (and the length twice): one header each,
    else Django joins them into "a,a" and parses no form. Empty ones (a GET) give none."""
    form = {
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_CONTENT_TYPE": "application/x-www-form-urlencoded",
    }
    scope = scope_of(asgi, params={**form, "CONTENT_LENGTH": "0", "HTTP_CONTENT_LENGTH": "0"})
    names = [name for name, _ in scope["headers"]]
    assert names.count("content-type") == 1 and names.count("content-length") == 1, names
    scope = scope_of(asgi, params={"CONTENT_TYPE": "", "CONTENT_LENGTH": ""})
    names = [name for name, _ in scope["headers"]]
    assert "content-type" not in names and "content-length" not in names, names
    scope = scope_of(asgi, params={"CONTENT_LENGTH": "-1"})
    assert "content-length" not in [name for name, _ in scope["headers"]]


def test_params_split_one_byte_per_record(asgi):
    with asgi.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("GET", "/scope?split=1", headers=[("X-Test", "yes")]), split=1)
        conn.send_stdin(1, b"")
        resp = conn.read_response(1)
    scope = json.loads(resp.body)
    assert scope["query_string"] == "split=1" and ["x-test", "yes"] in scope["headers"]


# --- receive ------------------------------------------------------------------------------


def test_a_large_body_streams_through_receive(asgi):
    body = os.urandom(3 * 1024 * 1024 + 17)
    resp = asgi.request("POST", "/echo?sizes=1", body=body, headers=[("Content-Type", "application/octet-stream")])
    data = json.loads(resp.body)
    assert (data["size"], data["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert data["last_more_body"] is False
    assert data["events"] > 1, "the body came in one event: it was buffered whole"
    assert max(data["sizes"]) <= 256 * 1024 + 65535, "receive() joins queued records up to 256 KiB"


def test_an_empty_body_is_one_event_without_more_body(asgi):
    data = json.loads(asgi.request("POST", "/echo").body)
    assert data == {"size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "last_more_body": False, "events": 1}


def test_a_slow_body_arrives_while_the_app_waits(asgi):
    with asgi.connect(timeout=20) as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("POST", "/echo", body_length=30000))
        for _ in range(3):
            conn.send_stdin(1, b"z" * 10000, end=False)
            time.sleep(0.2)
        conn.send_stdin(1, b"")
        resp = conn.read_response(1)
    data = json.loads(resp.body)
    assert data["size"] == 30000 and data["events"] >= 3


def test_keep_conn_serves_requests_one_after_another(asgi):
    with asgi.connect() as conn:
        for i in range(5):
            resp = conn.request("GET", f"/scope?i={i}", keep_conn=True)
            assert json.loads(resp.body)["query_string"] == f"i={i}"


def test_abort_mid_body_is_http_disconnect_for_the_app(asgi, tmp_path):
    mark = tmp_path / "mark"
    with asgi.connect(timeout=20) as conn:
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, cgi_params("POST", f"/wait-disconnect?mark={mark}", body_length=100))
        conn.send_stdin(1, b"a" * 100)
        deadline = time.monotonic() + 5
        got = b""
        while b"waiting" not in got and time.monotonic() < deadline:
            rec = conn.read_record()
            if rec.type == FCGI_STDOUT:
                got += rec.content
        conn.abort(1)
        end = conn.read_response(1)
        assert end.protocol_status is not None
    # The app creates the mark file before it writes to it: wait for the text.
    assert wait_for(lambda: mark.exists() and mark.read_text(), timeout=5), "the app never got http.disconnect"
    assert mark.read_text().startswith("http.disconnect")
    assert asgi.request("GET", "/scope").status == 200


def test_abort_mid_response_makes_send_raise_an_oserror(asgi, tmp_path):
    mark = tmp_path / "mark"
    with asgi.connect(timeout=20) as conn:
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, cgi_params("GET", f"/stream-until-gone?mark={mark}"))
        conn.send_stdin(1, b"")
        while conn.read_record().type != FCGI_STDOUT:
            pass
        conn.abort(1)
        conn.read_response(1)
    assert wait_for(lambda: mark.exists() and mark.read_text(), timeout=5)
    assert mark.read_text() == "ClientDisconnected"
    assert asgi.request("GET", "/scope").status == 200
    assert "Traceback" not in asgi.log(), asgi.log()


def test_an_abort_before_the_last_body_still_ends_the_request(asgi, tmp_path):
    """The app's final send fails (ClientDisconnected); FCGI_END_REQUEST must still come, or the
    connection would wait for ever."""
    mark = tmp_path / "mark"
    with asgi.connect(timeout=5) as conn:
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, cgi_params("GET", f"/late-final?s=0.5&mark={mark}"))
        conn.send_stdin(1, b"")
        time.sleep(0.1)
        conn.abort(1)
        end = conn.read_response(1)
        assert end.protocol_status is not None
        # The kept connection goes on.
        conn.begin_request(2, keep_conn=True)
        conn.send_params(2, cgi_params("GET", "/scope"))
        conn.send_stdin(2, b"")
        assert conn.read_response(2).status == 200
    assert wait_for(lambda: mark.exists() and mark.read_text(), timeout=5) == "ClientDisconnected"


def test_a_receive_waiting_after_the_response_gets_http_disconnect(asgi, tmp_path):
    mark = tmp_path / "mark"
    resp = asgi.request("GET", f"/listen-after-response?mark={mark}")
    assert resp.status == 200 and resp.body == b"done", resp.stderr
    assert mark.read_text() == "http.disconnect"


def test_a_cancelled_receive_loses_no_body(asgi):
    body = os.urandom(300_000)
    with asgi.connect(timeout=20) as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("POST", "/cancelled-receive", body_length=len(body)))
        time.sleep(0.2)  # the app's first receive() times out meanwhile
        conn.send_stdin(1, body)
        resp = conn.read_response(1)
    data = json.loads(resp.body)
    assert (data["early"], data["size"], data["sha256"]) == (False, len(body), hashlib.sha256(body).hexdigest())


def test_a_failure_after_start_but_before_any_body_is_a_500(asgi):
    resp = asgi.request("GET", "/start-then-raise")
    assert resp.status == 500, resp
    assert b"failed after http.response.start" in resp.stderr


def test_system_exit_in_a_request_does_not_stop_the_loop(asgi):
    resp = asgi.request("GET", "/system-exit")
    assert resp.status == 500
    assert asgi.request("GET", "/scope").status == 200, "the event loop still serves"


# --- send -----------------------------------------------------------------------------------


def test_a_streamed_response_arrives_before_it_ends(asgi):
    with asgi.connect(timeout=20) as conn:
        started = time.monotonic()
        conn.begin_request(1)
        conn.send_params(1, cgi_params("GET", "/stream?n=4&size=1000&delay=0.4"))
        conn.send_stdin(1, b"")
        first = None
        body = b""
        while True:
            rec = conn.read_record()
            if rec.type == FCGI_STDOUT and rec.content and first is None:
                first = time.monotonic() - started
            if rec.type == FCGI_STDOUT:
                body += rec.content
            if rec.type == FCGI_END_REQUEST:
                break
        total = time.monotonic() - started
    assert body.split(b"\r\n\r\n", 1)[1] == b"".join((b"%05d" % i) * 200 for i in range(4))
    assert first is not None and first < total / 2, (first, total)


def test_exception_before_the_response_is_a_500_with_the_traceback_on_stderr(asgi):
    resp = asgi.request("GET", "/boom?token=t123")
    assert resp.status == 500
    assert b"t123" not in resp.body
    stderr = resp.stderr.decode()
    assert "Traceback" in stderr and "asgi boom t123" in stderr
    assert resp.app_status == 1
    assert "asgi boom t123" in asgi.log()


def test_exception_after_the_response_started_cuts_it_short(asgi):
    resp = asgi.request("GET", "/boom-late?token=t456")
    assert resp.status == 200 and resp.body == b"partial"
    assert resp.app_status == 1
    assert "asgi late boom t456" in resp.stderr.decode()


def test_an_app_that_sends_nothing_gets_a_500(asgi):
    resp = asgi.request("GET", "/nothing")
    assert resp.status == 500
    assert "without sending a response" in resp.stderr.decode()


def test_trailers_are_refused_cleanly(asgi):
    resp = asgi.request("GET", "/trailers")
    assert resp.status == 200 and b"refused" in resp.body and b"trailers" in resp.body


def test_pathsend_sends_the_file_from_the_engine(asgi, tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(data)
    resp = asgi.request("GET", f"/pathsend?path={tmp_path / 'f.bin'}")
    assert resp.status == 200 and resp.body == data and resp.app_status == 0


def test_invalid_header_values_are_refused(start_server, tmp_path):
    (tmp_path / "bad_asgi.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'x-bad', b'a\\r\\nb')]})\n"
        "    await send({'type': 'http.response.body', 'body': b'no'})\n"
    )
    server = start_server(str(tmp_path / "bad_asgi.py"))
    resp = server.request("GET", "/")
    assert resp.status == 500
    assert "CR, LF or NUL" in resp.stderr.decode()


@pytest.mark.parametrize("workers", [(), ("--workers", "1")])
def test_a_wsgi_app_is_served_without_importing_asyncio(start_server, tmp_path, workers):
    """asyncio (and the ssl module it imports) costs about 8 MB per process: only an ASGI
    app's process loads it."""
    (tmp_path / "plain_wsgi.py").write_text(
        "import sys\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'asyncio ' + str('asyncio' in sys.modules).encode()]\n"
    )
    server = start_server(str(tmp_path / "plain_wsgi.py"), *workers)
    assert server.request("GET", "/").body == b"asyncio False"


# --- concurrency, limits, engine pages ------------------------------------------------------------


def test_many_sleeping_requests_run_at_once_on_one_loop(asgi):
    def one(i):
        return asgi.request("GET", "/sleep?s=0.5", timeout=30).body

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        bodies = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - started
    assert bodies == [b"slept"] * 50
    assert elapsed < 3.0, f"50 concurrent 0.5 s sleeps took {elapsed:.1f} s: requests did not overlap"


def test_over_max_in_flight_gets_503(start_server):
    server = start_server(APP, "--max-in-flight", "2")
    results = []

    def one():
        results.append(server.request("GET", "/sleep?s=1", timeout=30).status)

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(200) == 2 and results.count(503) == 3, results


def test_ping_and_status_pages_are_answered_by_the_engine(start_server):
    server = start_server(APP, "--ping-path", "/ping", "--status-path", "/status")
    assert server.request("GET", "/ping").body == b"pong\n"
    assert b"accepted conn" in server.request("GET", "/status").body


# --- interface, lifespan, processes ---------------------------------------------------------


def test_an_object_with_an_async_call_is_detected(start_server):
    server = start_server("tests.apps.asgi_apps:instance")
    assert scope_of(server)["type"] == "http"
    assert "does not support lifespan" in server.log()


def test_interface_wsgi_for_an_asgi_app_is_an_error(start_server):
    server = start_server(APP, "--interface", "wsgi", wait=False)
    assert server.wait(20) != 0
    assert "is an ASGI application" in server.log()


def test_lifespan_state_reaches_requests_and_shutdown_runs(start_server, tmp_path):
    marks = tmp_path / "lifespan.txt"
    server = start_server("tests.apps.asgi_apps:lifespan_app", env={"OXFCGI_TEST_LIFESPAN_FILE": str(marks)})
    # The socket listens before the startup runs; the first request is answered after it.
    state = json.loads(server.request("GET", "/state").body)
    assert state["greeting"] == "hello from startup"
    assert "startup" in marks.read_text(), "startup ran before the first request was served"
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    assert "shutdown" in marks.read_text()


def test_a_failed_lifespan_startup_stops_the_server(start_server):
    server = start_server("tests.apps.asgi_apps:failing_lifespan_app", wait=False)
    assert server.wait(20) == 3
    assert "the database is not there" in server.log()


def test_lifespan_runs_in_every_prefork_worker(start_server, tmp_path):
    marks = tmp_path / "lifespan.txt"
    server = start_server(
        "tests.apps.asgi_apps:lifespan_app", "--workers", "2", env={"OXFCGI_TEST_LIFESPAN_FILE": str(marks)}
    )
    assert wait_for(lambda: marks.exists() and marks.read_text().count("startup") == 2, timeout=10), (
        marks.read_text() if marks.exists() else "no worker started its lifespan"
    )
    pids = {json.loads(server.request("GET", "/state").body)["started_by"] for _ in range(20)}
    assert pids, "no answers"
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert marks.read_text().count("shutdown") == 2, marks.read_text()


def test_stderr_records_carry_the_traceback_in_pieces(asgi):
    resp = asgi.request("GET", "/boom?token=pieces")
    assert all(len(r.content) <= 1800 for r in resp.records if r.type == FCGI_STDERR)


# --- slow and stuck requests ------------------------------------------------------------


def test_request_slowlog_timeout_logs_the_task_stack(start_server):
    srv = start_server(APP, "--request-slowlog-timeout", "0.3")
    resp = srv.request("GET", "/sleep", query="s=0.8")
    assert resp.status == 200 and resp.body == b"slept", "the slow request itself completes"
    assert wait_for(lambda: "request_slowlog_timeout (0.3s)" in srv.log()), srv.log()
    log = srv.log()
    assert "GET /sleep has run for" in log and "asgi_apps.py" in log, log[-3000:]


def test_request_terminate_timeout_answers_504_and_cancels_the_task(start_server):
    srv = start_server(APP, "--request-terminate-timeout", "0.5")
    started = time.monotonic()
    resp = srv.request("GET", "/sleep", query="s=10")
    assert resp.status == 504, resp
    assert time.monotonic() - started < 4, "answered at the deadline, not when the app is done"
    assert wait_for(lambda: "its task cancelled" in srv.log()), srv.log()
    # The loop is free and the server goes on.
    assert srv.request("GET", "/sleep", query="s=0.01").body == b"slept"
