"""Bounded load and connection timeouts: over max_in_flight a request is refused at
once (never an unbounded queue), and a peer that stalls costs nothing for long."""

from __future__ import annotations

import threading
import time

from oxfcgi.client import FCGI_PARAMS, cgi_params, encode_params, encode_record

APP = "tests.apps.protocol_apps:app"


def test_over_max_in_flight_gets_503_with_retry_after(start_server):
    srv = start_server(APP, "--threads", "1", "--max-in-flight", "1")
    busy = threading.Thread(target=lambda: srv.request("GET", "/sleep", query="t=1.5"))
    busy.start()
    time.sleep(0.4)  # the first request holds the only slot
    t0 = time.monotonic()
    resp = srv.request("GET", "/hello")
    elapsed = time.monotonic() - t0
    busy.join()
    assert resp.status == 503
    assert resp.header("Retry-After") == "1"
    assert resp.protocol_status == 0 and resp.app_status == 0
    assert elapsed < 1.0, "refused at once, not queued"
    assert "max_in_flight" in srv.log() and "503" in srv.log()
    assert srv.request("GET", "/hello").status == 200, "the slot is free again afterwards"


def test_requests_within_max_in_flight_wait_for_a_thread(start_server):
    """max_in_flight counts queued requests too: 3 requests, 1 thread, max_in_flight 4: all succeed."""
    srv = start_server(APP, "--threads", "1", "--max-in-flight", "4")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(srv.request("GET", "/sleep", query="t=0.3").status))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]


def closed_within(conn, seconds: float) -> bool:
    conn.settimeout(seconds)
    try:
        return conn.read_record() is None
    except OSError:
        return False


def test_idle_timeout_closes_a_silent_connection(start_server):
    srv = start_server(APP, "--idle-timeout", "0.5")
    with srv.connect() as conn:
        t0 = time.monotonic()
        assert closed_within(conn, 5)
        assert time.monotonic() - t0 < 3
    assert "idle_timeout" in srv.log()


def test_keepalive_timeout_closes_an_idle_kept_connection(start_server):
    srv = start_server(APP, "--keepalive-timeout", "0.5")
    with srv.connect() as conn:
        assert conn.request("GET", "/hello", keep_conn=True).body == b"hello"
        assert closed_within(conn, 5)
    assert "keepalive_timeout" in srv.log()


def test_read_timeout_closes_a_stalled_request(start_server):
    srv = start_server(APP, "--read-timeout", "0.5")
    with srv.connect() as conn:
        conn.begin_request(1)
        conn.send(encode_record(FCGI_PARAMS, 1, encode_params(cgi_params("GET", "/hello"))))  # no end of params
        assert closed_within(conn, 5)
    assert "read_timeout" in srv.log()


def test_timeouts_do_not_cut_a_slow_application(start_server):
    srv = start_server(APP, "--read-timeout", "0.3", "--idle-timeout", "0.3", "--keepalive-timeout", "0.3")
    resp = srv.request("GET", "/sleep", query="t=1.2")
    assert resp.status == 200 and resp.protocol_status == 0
