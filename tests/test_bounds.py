"""No state without a deadline: what a hostile or broken peer can do to the server, and
the limit that stops it (php-fpm and nginx are the models: every wait has a timeout,
every input a limit, and a limit that is hit gets a log line, never a hang).

Each test is one of the reproducers of the issue "No state without a deadline", driven
with the raw FastCGI client over a real socket; the last one holds a server with small
limits against all of them at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from oxfcgi.client import (
    FCGI_BEGIN_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_KEEP_CONN,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_PARAMS,
    FCGI_RESPONDER,
    FCGI_STDIN,
    Connection,
    cgi_params,
    decode_params,
    encode_params,
    encode_record,
    request,
)
from tests.support.servers import child_env, wait_for, wait_for_text

APP = "tests.apps.protocol_apps:app"


def unix_socket(srv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(srv.socket_path)
    return s


def begin(request_id: int = 1, flags: int = 0) -> bytes:
    return encode_record(FCGI_BEGIN_REQUEST, request_id, FCGI_RESPONDER.to_bytes(2, "big") + bytes([flags]) + bytes(5))


def head(path: str, request_id: int = 1, flags: int = 0, **kw) -> bytes:
    """BEGIN_REQUEST and the whole PARAMS stream of a request for ``path``."""
    params = encode_params(cgi_params("GET" if "body_length" not in kw else "POST", path, **kw))
    return (
        begin(request_id, flags)
        + encode_record(FCGI_PARAMS, request_id, params)
        + encode_record(FCGI_PARAMS, request_id)
    )


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closes ``s`` (EOF or reset) within ``seconds``, whatever it sends first."""
    s.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return False


def served(srv, path: str = "/hello", timeout: float = 5.0) -> bool:
    return request(srv.address, "GET", path, timeout=timeout).status == 200


# --- 1. input before the end of PARAMS ---------------------------------------------------------


def test_stdin_before_params_end_is_refused_and_eof_noticed(start_server):
    """9 STDIN records before PARAMS ended used to fill a queue nobody read: the connection
    stopped reading, ignored EOF and held its max_conns slot for ever."""
    srv = start_server(APP)
    s = unix_socket(srv)
    pair = encode_params([("A", "b")])
    s.sendall(begin() + encode_record(FCGI_PARAMS, 1, pair) + encode_record(FCGI_STDIN, 1, b"x") * 9)
    s.shutdown(socket.SHUT_WR)
    assert closed_within(s, 3), "the connection is closed, not left waiting"
    assert "before its FCGI_PARAMS ended" in wait_for_text(srv.log, "before its FCGI_PARAMS ended")
    # 50 of them cannot take the server: every one is closed at once.
    hostile = [unix_socket(srv) for _ in range(50)]
    for h in hostile:
        h.sendall(begin() + encode_record(FCGI_PARAMS, 1, pair) + encode_record(FCGI_STDIN, 1, b"x") * 9)
    assert served(srv)
    assert all(closed_within(h, 3) for h in hostile)


# --- 2. send_timeout ------------------------------------------------------------------------------


def test_output_nobody_reads_is_aborted_at_send_timeout(start_server, tmp_path):
    """A client that never reads its response used to hold a Python thread for ever."""
    marker = tmp_path / "closed"
    srv = start_server(APP, "--threads", "1", "--send-timeout", "1")
    s = unix_socket(srv)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    params = encode_params({**cgi_params("GET", "/stream", query="n=100000&delay=0&size=65536"), "MARKER": str(marker)})
    s.sendall(
        begin() + encode_record(FCGI_PARAMS, 1, params) + encode_record(FCGI_PARAMS, 1) + encode_record(FCGI_STDIN, 1)
    )
    log = wait_for_text(srv.log, "send_timeout", timeout=10)
    assert "the web server accepted no output for 1s (send_timeout)" in log
    assert "request 1 (GET /stream?n=100000&delay=0&size=65536)" in log, "the request line is logged"
    # The app creates the marker file before it writes to it: wait for the text.
    text = wait_for(lambda: marker.exists() and marker.read_text(), timeout=5)
    assert text, "the app's close() ran"
    assert text.startswith("closed after"), text
    assert served(srv), "the only thread is free again"
    s.close()


# --- 3. slowloris and making room at max_conns --------------------------------------------------


def test_a_trickled_head_is_cut_at_params_timeout(start_server):
    srv = start_server(APP, "--params-timeout", "1", "--idle-timeout", "30", "--read-timeout", "30")
    data = head("/hello")
    s = unix_socket(srv)
    started = time.monotonic()
    cut = None
    for byte in data:
        try:
            s.send(bytes([byte]))
        except OSError:
            cut = time.monotonic() - started
            break
        if closed_within(s, 0.2):
            cut = time.monotonic() - started
            break
    assert cut is not None and 0.9 < cut < 3, f"closed after {cut}"
    assert "params_timeout" in wait_for_text(srv.log, "params_timeout")


def test_slowloris_connections_do_not_lock_out_a_new_request(start_server):
    """max_conns connections each trickling one byte a second used to hold the server."""
    srv = start_server(APP, "--max-conns", "8", "--params-timeout", "30", "--idle-timeout", "30")
    data = head("/hello")
    slow = [unix_socket(srv) for _ in range(8)]
    for s in slow:
        s.sendall(data[:3])
    time.sleep(0.3)
    started = time.monotonic()
    assert served(srv, timeout=5), "a new request gets a connection at once"
    assert time.monotonic() - started < 1.5
    assert "max_conns (8) reached" in wait_for_text(srv.log, "max_conns (8) reached")
    assert sum(closed_within(s, 0.5) for s in slow) >= 1, "the connection waiting longest was closed"


def test_at_max_conns_idle_kept_open_connections_make_room(start_server):
    srv = start_server(APP, "--max-conns", "2")
    kept = []
    for _ in range(2):
        c = Connection(srv.address, timeout=5)
        c.begin_request(1, keep_conn=True)
        c.send_params(1, cgi_params("GET", "/hello"))
        c.send_stdin(1)
        assert c.read_response(1).body == b"hello"
        kept.append(c)
    started = time.monotonic()
    assert served(srv), "a third connection is served though two idle ones are open"
    assert time.monotonic() - started < 1.5
    first = kept[0].sock
    assert closed_within(first, 1), "the oldest idle connection made room"


# --- 4. many params -------------------------------------------------------------------------------


def test_a_hundred_thousand_params_are_refused_quickly(start_server):
    """100,000 tiny params (under max_params_size) took 22.7 s to merge on the I/O thread."""
    srv = start_server(APP)
    s = unix_socket(srv)
    pairs = encode_params([(f"X{i}", "") for i in range(100_000)])
    stream = b"".join(encode_record(FCGI_PARAMS, 1, pairs[i : i + 65535]) for i in range(0, len(pairs), 65535))
    started = time.monotonic()
    s.sendall(begin() + stream + encode_record(FCGI_PARAMS, 1))
    assert closed_within(s, 5)
    assert time.monotonic() - started < 1.0
    assert "more than max_params (10000)" in wait_for_text(srv.log, "max_params")
    assert served(srv)


def test_many_params_within_the_limit_are_served(start_server):
    srv = start_server(APP, "--max-params", "20000")
    extra = {f"HTTP_X_{i}": "v" for i in range(15_000)}
    started = time.monotonic()
    resp = request(srv.address, "GET", "/hello", params=extra, timeout=10)
    assert resp.status == 200 and time.monotonic() - started < 2


# --- 5. an app that never loads under workers ---------------------------------------------------


def test_an_app_that_never_loads_under_workers_exits_3(tmp_path):
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "oxfcgi",
            "serve",
            "tests.apps.broken_app:app",
            "--workers",
            "2",
            "--bind",
            f"unix:{tmp_path}/s.sock",
            "--boot-attempts",
            "3",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 30
    assert "failed to load in 3 worker(s) in a row and no worker ever became ready" in proc.stderr
    assert "RuntimeError: this application cannot start" in proc.stderr.split("giving up")[-1], (
        "the traceback, once more"
    )
    assert not (tmp_path / "s.sock").exists()


# --- 6. privileges ----------------------------------------------------------------------------------


def test_group_without_user_is_an_error_naming_user(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", APP, "--bind", f"unix:{tmp_path}/s.sock", "--group", "www-data"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert proc.returncode == 2
    assert "without user" in proc.stderr and "--user" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_serving_as_root_is_never_silent(start_server):
    srv = start_server(APP)
    assert "serving as root (uid 0)" in wait_for_text(srv.log, "serving as root")
    # As www-data the app is imported after the switch: from a directory www-data can read
    # (the checkout may not be, e.g. a clone under mktemp -d, mode 0700).
    import tempfile

    readable = tempfile.mkdtemp(prefix="oxfcgi-app-")
    os.chmod(readable, 0o755)
    app_file = os.path.join(readable, "hello_app.py")
    with open(app_file, "w") as f:
        f.write(
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'hello']\n"
        )
    os.chmod(app_file, 0o644)
    srv2 = start_server(f"{app_file}:app", "--user", "www-data")
    assert served(srv2)
    assert "serving as root" not in srv2.log()


# --- 7. GET_VALUES --------------------------------------------------------------------------------


def test_get_values_with_repeated_names_is_answered_whole(start_server):
    srv = start_server(APP)
    with Connection(srv.address, timeout=5) as c:
        query = encode_params([(FCGI_MAX_CONNS, ""), (FCGI_MAX_REQS, "")] * 2000)
        c.send_record(FCGI_GET_VALUES, 0, query)
        rec = c.read_record()
    assert rec is not None and rec.type == FCGI_GET_VALUES_RESULT
    assert [k for k, _ in decode_params(rec.content)] == [b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS"]


# --- 8. SIGTERM with a lingering connection -------------------------------------------------------


def test_sigterm_is_not_delayed_by_a_lingering_connection(start_server):
    srv = start_server(APP)
    s = unix_socket(srv)
    s.sendall(head("/hello") + encode_record(FCGI_STDIN, 1))
    got = b""
    while b"\x01\x03\x00\x01" not in got:  # FCGI_END_REQUEST of request 1
        got += s.recv(65536)
    # The peer does not close: the server half-closed and waits for its EOF.
    time.sleep(0.1)
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=10) == 0
    assert time.monotonic() - started < 1.0
    s.close()


# --- 9. log flooding ---------------------------------------------------------------------------------


def test_a_flood_of_bad_connections_logs_a_few_lines(start_server):
    srv = start_server(APP)
    for _ in range(500):
        s = unix_socket(srv)
        s.sendall(b"\x07" + bytes(7))  # version 7
        s.close()
    assert served(srv)
    time.sleep(0.3)
    lines = [line for line in srv.log().splitlines() if "protocol error" in line]
    assert 1 <= len(lines) <= 3, lines


# --- 10. a rolling reload with kept-open clients ---------------------------------------------------


def test_reload_does_not_close_a_connection_in_the_middle_of_a_request(start_server):
    srv = start_server(APP, "--workers", "1", "--graceful-timeout", "5")
    c = Connection(srv.address, timeout=10)
    c.begin_request(1, keep_conn=True)
    c.send_params(1, cgi_params("GET", "/hello"))
    c.send_stdin(1)
    assert c.read_response(1).body == b"hello"
    # The next request has begun arriving when the reload starts.
    data = head("/hello", request_id=2, flags=FCGI_KEEP_CONN) + encode_record(FCGI_STDIN, 2)
    c.send(data[:20])
    srv.signal(signal.SIGHUP)
    assert "replacing worker" in wait_for_text(srv.log, "replacing worker", timeout=10)
    time.sleep(1.5)  # the replacement is ready; the old worker has stopped accepting and drains
    c.send(data[20:])
    assert c.read_response(2).body == b"hello", "served by the old worker, then closed"
    c.close()


# --- all at once: a server with small limits ---------------------------------------------------------


def test_resource_bounds_under_every_kind_of_hostile_connection(start_server, tmp_path):
    srv = start_server(
        APP,
        "--max-conns",
        "6",
        "--threads",
        "8",
        "--params-timeout",
        "2",
        "--read-timeout",
        "2",
        "--send-timeout",
        "2",
    )
    rss_before = psutil.Process(srv.proc.pid).memory_info().rss
    hostile = []
    # Stalled params: a head that never ends.
    for _ in range(2):
        s = unix_socket(srv)
        s.sendall(begin() + encode_record(FCGI_PARAMS, 1, encode_params([("A", "b")])))
        hostile.append(s)
    # Stalled body: the app waits in wsgi.input.read().
    for _ in range(2):
        s = unix_socket(srv)
        s.sendall(head("/read-block", body_length=1_000_000) + encode_record(FCGI_STDIN, 1, b"x" * 10))
        hostile.append(s)
    # Unread output.
    for _ in range(2):
        s = unix_socket(srv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(head("/stream", query="n=100000&delay=0&size=65536") + encode_record(FCGI_STDIN, 1))
        hostile.append(s)
    time.sleep(0.5)
    started = time.monotonic()
    assert served(srv, timeout=5)
    assert time.monotonic() - started < 1.0, "a fresh request is served at once"
    rss_after = psutil.Process(srv.proc.pid).memory_info().rss
    assert rss_after - rss_before < 30 << 20, (rss_before, rss_after)
    # Every hostile connection is closed by its own limit (2 s each). Nothing is read from
    # them before that: reading would un-stall the unread-output ones.
    time.sleep(3)
    closed: list[bool] = []
    closers = [threading.Thread(target=lambda s=s: closed.append(closed_within(s, 3))) for s in hostile]
    for t in closers:
        t.start()
    for t in closers:
        t.join()
    assert closed == [True] * len(hostile)
    srv.signal(signal.SIGTERM)
    started = time.monotonic()
    assert srv.wait(timeout=10) == 0
    assert time.monotonic() - started < 1.0
