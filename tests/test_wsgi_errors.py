"""Application errors, wsgi.errors, and close() of the response iterable.

flup.md §5: a traceback in FCGI_STDERR, a 500 text/html page before the headers went
out, a cut body after; we also log the traceback through the ``oxfcgi`` logger and
report a non-zero appStatus when the body was cut.  Every response ends with
END_REQUEST(protocolStatus 0).
"""

from __future__ import annotations

import html
import time

from oxfcgi.client import FCGI_END_REQUEST, FCGI_STDOUT
from tests.support.servers import wait_for

APPS = "tests.apps.wsgi_apps"


def serve(start_server, name, *args):
    return start_server(f"{APPS}:{name}", "--threads", "2", *args)


def read_marker(path):
    """The marker file's lines once a whole line is in it, else None: the app creates the file
    before it writes (``open(path, "a")``), so an empty or half-written file is not read yet."""
    text = path.read_text() if path.exists() else ""
    return text.split("\n") if text.endswith("\n") else None


def ends_cleanly(resp):
    assert resp.records, "no records"
    assert resp.records[-1].type == FCGI_END_REQUEST
    assert resp.protocol_status == 0


# --- exceptions ----------------------------------------------------------------------------------


def test_exception_before_headers_gives_500_page(start_server):
    s = serve(start_server, "raise_before_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 500
    assert (r.header("Content-Type") or "").startswith("text/html")
    assert r.body  # some page
    stderr = r.stderr.decode("utf-8", "replace")
    assert "Traceback (most recent call last)" in stderr, stderr
    assert "ValueError: <b>x</b>" in stderr
    # without --debug the page does not leak the exception
    assert b"<b>x</b>" not in r.body and b"&lt;b&gt;x&lt;/b&gt;" not in r.body
    assert b"Traceback" not in r.body
    log = wait_for(lambda: "ValueError" in s.log() and s.log())
    assert "Traceback (most recent call last)" in log and "ValueError: <b>x</b>" in log, log


def test_exception_page_with_debug_is_escaped(start_server):
    s = serve(start_server, "raise_before_app", "--debug")
    message = "<b>x</b> & <script>alert(1)</script>"
    r = s.request("GET", "/", headers={"X-Message": message})
    ends_cleanly(r)
    assert r.status == 500
    assert (r.header("Content-Type") or "").startswith("text/html")
    page = r.body.decode("utf-8", "replace")
    assert html.escape(message, quote=False) in page or html.escape(message) in page, page
    assert "<script>alert(1)</script>" not in page
    assert "<b>x</b>" not in page
    assert "Traceback" in page
    assert "raise_before_app" in page  # the frame of the app is in the traceback
    assert "ValueError" in page
    assert "Traceback" in r.stderr.decode("utf-8", "replace")


def test_exception_after_start_response_before_body(start_server):
    """start_response called but nothing sent yet: a clean 500, none of the app's headers."""
    s = serve(start_server, "raise_after_start_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 500
    assert r.header("X-Should-Not-Appear") is None
    assert "raised-after-start-response" in r.stderr.decode("utf-8", "replace")


def test_exception_after_headers_cuts_body(start_server):
    s = serve(start_server, "raise_after_headers_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 200
    assert r.body == b"partial-body|"
    assert r.app_status not in (None, 0)
    stderr = r.stderr.decode("utf-8", "replace")
    assert "Traceback" in stderr and "raised-after-headers" in stderr
    assert wait_for(lambda: "raised-after-headers" in s.log()), s.log()


def test_exception_after_write(start_server):
    s = serve(start_server, "raise_in_write_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 200
    assert r.body == b"written|"
    assert r.app_status not in (None, 0)
    assert "raised-after-write" in r.stderr.decode("utf-8", "replace")


def test_server_survives_errors(start_server):
    """Errors on one request leave the connection and the server usable."""
    s = serve(start_server, "raise_after_headers_app")
    with s.connect() as conn:
        for _ in range(3):
            r = conn.request("GET", "/", keep_conn=True)
            ends_cleanly(r)
            assert r.body == b"partial-body|"
    s2 = serve(start_server, "raise_before_app")
    for _ in range(3):
        assert s2.request("GET", "/").status == 500


# --- wsgi.errors ---------------------------------------------------------------------------------


def test_wsgi_errors_reach_fcgi_stderr_and_log(start_server):
    s = serve(start_server, "errors_app")
    r = s.request("GET", "/", headers={"X-Marker": "m4rk3r"})
    ends_cleanly(r)
    assert r.status == 200 and r.body == b"ok"
    stderr = r.stderr.decode("utf-8")
    for text in ("write:m4rk3r\n", "lines1:m4rk3r\n", "lines2:m4rk3r\n", "nonascii:m4rk3r:caf\u00e9\n"):
        assert text in stderr, stderr
    # in the order written
    assert (
        stderr.index("write:m4rk3r")
        < stderr.index("lines1:m4rk3r")
        < stderr.index("lines2:m4rk3r")
        < stderr.index("nonascii:m4rk3r")
    )
    log = wait_for(lambda: "nonascii:m4rk3r" in s.log() and s.log())
    for text in ("write:m4rk3r", "lines1:m4rk3r", "lines2:m4rk3r"):
        assert text in log, log


# --- close() -------------------------------------------------------------------------------------


def test_close_called_on_success(start_server, tmp_path):
    marker = tmp_path / "closed"
    s = serve(start_server, "close_ok_app")
    r = s.request("GET", "/", headers={"X-Marker": str(marker)})
    ends_cleanly(r)
    assert r.body == b"abc"
    assert wait_for(lambda: read_marker(marker)) == ["closed after 3", ""]


def test_close_called_on_exception_mid_iteration(start_server, tmp_path):
    marker = tmp_path / "closed"
    s = serve(start_server, "close_error_app")
    r = s.request("GET", "/", headers={"X-Marker": str(marker)})
    ends_cleanly(r)
    assert r.body == b"one|two|"
    assert r.app_status not in (None, 0)
    assert "boom-mid-iteration" in r.stderr.decode("utf-8", "replace")
    assert wait_for(lambda: read_marker(marker)) == ["closed after 2", ""]


def _start_slow(server, marker):
    conn = server.connect()
    conn.begin_request(1, keep_conn=True)
    from oxfcgi.client import cgi_params

    conn.send_params(1, cgi_params("GET", "/", headers={"X-Marker": str(marker)}))
    conn.send_stdin(1)
    # wait until the body is streaming
    got = 0
    while got < 3 * 8192:
        rec = conn.read_record()
        assert rec is not None and rec.type != FCGI_END_REQUEST, rec
        if rec.type == FCGI_STDOUT:
            got += len(rec.content)
    return conn


def test_close_called_when_client_aborts(start_server, tmp_path):
    marker = tmp_path / "closed"
    s = serve(start_server, "close_slow_app")
    conn = _start_slow(s, marker)
    try:
        t0 = time.monotonic()
        conn.abort(1)
        r = conn.read_response(1)
        assert r.records and r.records[-1].type == FCGI_END_REQUEST
        assert time.monotonic() - t0 < 5  # promptly, not after the 30 s the body would take
        lines = wait_for(lambda: read_marker(marker))
        assert lines and lines[0].startswith("closed after "), lines
        assert int(lines[0].split()[-1]) < 200
        # the kept connection still serves requests
        r2 = conn.request(
            "GET", "/", headers={"X-Marker": str(tmp_path / "m2"), "X-Limit": "2"}, keep_conn=True, request_id=2
        )
        assert r2.status == 200 and r2.protocol_status == 0
        assert r2.body == b"x" * 8192 * 2
        assert wait_for(lambda: read_marker(tmp_path / "m2")) == ["closed after 2", ""]
    finally:
        conn.close()


def test_close_called_when_client_disconnects(start_server, tmp_path):
    marker = tmp_path / "closed"
    s = serve(start_server, "close_slow_app")
    conn = _start_slow(s, marker)
    conn.close()
    lines = wait_for(lambda: read_marker(marker), timeout=10)
    assert lines and lines[0].startswith("closed after "), lines
    assert int(lines[0].split()[-1]) < 200
    # and the server still works
    r = s.request("GET", "/", headers={"X-Marker": str(tmp_path / "other"), "X-Limit": "1"})
    assert r.status == 200 and r.protocol_status == 0
    assert r.body == b"x" * 8192
