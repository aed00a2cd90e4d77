"""FastCGI 1.0 protocol conformance of ``oxfcgi serve``, record by record.

Every test starts a real server process (``start_server`` in tests/support/fixtures.py) running
tests/apps/protocol_apps.py and talks to it with ``oxfcgi.client``. Section numbers
refer to the FastCGI 1.0 specification. Timing checks use generous margins: they
tell "concurrent" from "serial" and "prompt" from "never", not fast from slow.
"""

from __future__ import annotations

import fcntl
import json
import re
import signal
import struct
import termios
import threading
import time
from pathlib import Path

import pytest

from oxfcgi.client import (
    FCGI_AUTHORIZER,
    FCGI_BEGIN_REQUEST,
    FCGI_CANT_MPX_CONN,
    FCGI_END_REQUEST,
    FCGI_FILTER,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_OVERLOADED,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_UNKNOWN_ROLE,
    FCGI_UNKNOWN_TYPE,
    Connection,
    Record,
    Response,
    cgi_params,
    decode_params,
    encode_params,
    encode_record,
)
from tests.apps.protocol_apps import pattern

APP = "tests.apps.protocol_apps:app"


# --- helpers ------------------------------------------------------------------------------


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_for_log(server, pattern_: str, since: int = 0, timeout: float = 5.0) -> str:
    """Wait until the server log (from offset ``since``) matches ``pattern_``; return that part."""
    regex = re.compile(pattern_, re.I)
    found = wait_for(lambda: regex.search(server.log()[since:]), timeout)
    text = server.log()[since:]
    assert found, f"no log line matching {pattern_!r} within {timeout}s; log since mark:\n{text}"
    return text


def wait_for_new_log(server, since: int, timeout: float = 5.0) -> str:
    """Wait until the server wrote something after offset ``since``."""
    assert wait_for(lambda: server.log()[since:].strip(), timeout), f"the server logged nothing within {timeout}s"
    return server.log()[since:]


def read_until_closed(conn: Connection, timeout: float = 5.0) -> list[Record]:
    """Read records until the server closes the connection; fail if it stays open."""
    conn.settimeout(timeout)
    records = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rec = conn.read_record()
        except ConnectionError:  # reset or truncated record: closed as well
            return records
        except TimeoutError:
            break
        if rec is None:
            return records
        records.append(rec)
    pytest.fail(f"the server did not close the connection within {timeout}s (got {records})")


def send_all_or_closed(conn: Connection, *chunks: bytes) -> None:
    """Send chunks; stop quietly if the server has already closed the connection."""
    try:
        for chunk in chunks:
            conn.send(chunk)
    except ConnectionError:
        pass


def start_request(
    conn: Connection, request_id: int, path: str, *, keep_conn=True, params=None, body=b"", end_stdin=True, method="GET"
) -> None:
    """Send BEGIN_REQUEST, PARAMS and STDIN without reading the answer."""
    p = cgi_params(method, path, body_length=len(body))
    p.update(params or {})
    conn.begin_request(request_id, keep_conn=keep_conn)
    conn.send_params(request_id, p)
    conn.send_stdin(request_id, body, end=end_stdin)


def stdout_records(resp: Response) -> list[Record]:
    return [r for r in resp.records if r.type == FCGI_STDOUT]


def assert_well_formed(resp: Response) -> None:
    """§3.3/§5.3/§5.5 framing of one finished request: STDOUT starts with the header block,
    has exactly one empty record that ends it, END_REQUEST is last and present once."""
    types = [r.type for r in resp.records]
    assert types.count(FCGI_END_REQUEST) == 1, f"END_REQUEST count in {resp.records}"
    assert types[-1] == FCGI_END_REQUEST, f"END_REQUEST is not last: {resp.records}"
    assert resp.protocol_status == FCGI_REQUEST_COMPLETE
    outs = stdout_records(resp)
    assert outs, "no FCGI_STDOUT at all"
    assert outs[0].content, f"empty FCGI_STDOUT before the header block: {resp.records}"
    assert b":" in outs[0].content.split(b"\n")[0], f"STDOUT does not start with a header: {outs[0]}"
    empties = [i for i, r in enumerate(outs) if not r.content]
    assert empties == [len(outs) - 1], f"the STDOUT stream must end with exactly one empty record: {outs}"
    for r in resp.records:
        assert len(r.content) <= 65535 and r.version == 1


@pytest.fixture
def server(start_server):
    return start_server(APP, "--threads", "4")


# --- FCGI_GET_VALUES (§4.1) ---------------------------------------------------------------


def test_get_values_reports_limits(start_server):
    srv = start_server(APP, "--max-conns", "9", "--max-in-flight", "7")
    with srv.connect() as conn:
        conn.send_record(
            FCGI_GET_VALUES, 0, encode_params([(FCGI_MAX_CONNS, ""), (FCGI_MAX_REQS, ""), (FCGI_MPXS_CONNS, "")])
        )
        rec = conn.read_record()
        assert rec is not None and rec.type == FCGI_GET_VALUES_RESULT, rec
        assert rec.request_id == 0
        values = {n.decode(): v.decode() for n, v in decode_params(rec.content)}
        assert values == {"FCGI_MAX_CONNS": "9", "FCGI_MAX_REQS": "7", "FCGI_MPXS_CONNS": "0"}
        # a management record does not end the connection
        assert conn.request("GET", "/hello").body == b"hello"


def test_get_values_multiplexed(start_server):
    srv = start_server(APP, "--multiplexed", "--max-conns", "5", "--max-in-flight", "11")
    with srv.connect() as conn:
        assert conn.get_values() == {"FCGI_MAX_CONNS": "5", "FCGI_MAX_REQS": "11", "FCGI_MPXS_CONNS": "1"}


def test_get_values_answers_only_known_names_asked(server):
    with server.connect() as conn:
        assert conn.get_values([FCGI_MPXS_CONNS, "FCGI_NO_SUCH_VARIABLE"]) == {"FCGI_MPXS_CONNS": "0"}
        assert conn.get_values([]) == {}
        assert set(conn.get_values()) == {FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS}


def test_get_values_while_a_request_runs(server):
    """Management records may arrive at any time (§3.3); the answer must not wait for the app."""
    with server.connect() as conn:
        start_request(conn, 1, "/sleep?t=0.5")
        time.sleep(0.1)
        conn.send_record(FCGI_GET_VALUES, 0, encode_params([(FCGI_MPXS_CONNS, "")]))
        records = []
        while not records or records[-1].type != FCGI_END_REQUEST:
            rec = conn.read_record()
            assert rec is not None, records
            records.append(rec)
        types = [r.type for r in records]
        assert FCGI_GET_VALUES_RESULT in types, records
        assert types.index(FCGI_GET_VALUES_RESULT) < types.index(FCGI_STDOUT), (
            "GET_VALUES_RESULT waited for the running request"
        )


def test_records_for_inactive_ids_are_ignored(server):
    """§3.3: while request id R is inactive, records with id R other than BEGIN_REQUEST are ignored."""
    with server.connect() as conn:
        conn.send_record(FCGI_PARAMS, 9, encode_params({"PATH_INFO": "/hello"}))
        conn.send_record(FCGI_PARAMS, 9)
        conn.send_record(FCGI_STDIN, 9, b"stray")
        conn.send_record(FCGI_STDIN, 9)
        conn.abort(9)
        resp = conn.request("GET", "/hello", keep_conn=True)
        assert (resp.status, resp.body) == (200, b"hello")
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):
            extra = conn.read_record()
            pytest.fail(f"unexpected record {extra}")


# --- FCGI_UNKNOWN_TYPE (§4.2) ------------------------------------------------------------


@pytest.mark.parametrize("rtype", [42, 0, 255])
def test_unknown_management_type(server, rtype):
    with server.connect() as conn:
        conn.send_record(rtype, 0, b"whatever")
        rec = conn.read_record()
        assert rec is not None, "connection closed instead of FCGI_UNKNOWN_TYPE"
        assert (rec.type, rec.request_id) == (FCGI_UNKNOWN_TYPE, 0), rec
        assert rec.content == bytes([rtype]) + bytes(7)
        resp = conn.request("GET", "/hello", keep_conn=True)
        assert resp.body == b"hello"


# --- roles (§5.1, §6) ---------------------------------------------------------------------


@pytest.mark.parametrize("role", [9, FCGI_AUTHORIZER, FCGI_FILTER])
def test_unknown_role_rejected_at_begin(server, role):
    with server.connect(timeout=5) as conn:
        conn.begin_request(1, role=role, keep_conn=True)
        # nothing else sent: the answer must come right after BEGIN_REQUEST
        rec = conn.read_record()
        assert rec is not None and rec.request_id == 1, rec
        assert rec.type == FCGI_END_REQUEST, f"expected only END_REQUEST, got {rec}"
        assert rec.end_request()[1] == FCGI_UNKNOWN_ROLE
        # a web server may already have sent the rest of the request: it is ignored, and
        # the kept connection serves the next request (same id reused)
        conn.send_params(1, cgi_params("GET", "/hello"))
        conn.send_stdin(1)
        resp = conn.request("GET", "/hello", keep_conn=True)
        assert (resp.status, resp.body) == (200, b"hello")
        assert_well_formed(resp)


def test_roles_option_accepts_authorizer(start_server):
    srv = start_server(APP, "--roles", "responder,authorizer")
    with srv.connect() as conn:
        resp = conn.request("GET", "/hello", role=FCGI_AUTHORIZER, keep_conn=True)
        assert (resp.status, resp.body) == (200, b"hello")
        conn.begin_request(2, role=FCGI_FILTER)
        rec = conn.read_record()
        assert rec.type == FCGI_END_REQUEST and rec.end_request()[1] == FCGI_UNKNOWN_ROLE


# --- malformed input closes the connection, is logged, and the server keeps serving -------


def test_begin_request_with_id_zero_closes(server):
    mark = len(server.log())
    with server.connect() as conn:
        send_all_or_closed(
            conn,
            encode_record(FCGI_BEGIN_REQUEST, 0, bytes([0, FCGI_RESPONDER, 0, 0, 0, 0, 0, 0])),
            encode_record(FCGI_PARAMS, 0, encode_params(cgi_params("GET", "/hello"))),
            encode_record(FCGI_PARAMS, 0),
            encode_record(FCGI_STDIN, 0),
        )
        records = read_until_closed(conn)
        assert not [r for r in records if r.type == FCGI_STDOUT], records
    wait_for_log(server, r"id\W{0,4}0\b", since=mark)
    assert server.request("GET", "/hello").body == b"hello"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_closes(server, version):
    mark = len(server.log())
    with server.connect() as conn:
        send_all_or_closed(
            conn,
            encode_record(FCGI_BEGIN_REQUEST, 1, bytes([0, 1, 0, 0, 0, 0, 0, 0]), version=version),
            encode_record(FCGI_PARAMS, 1, encode_params(cgi_params("GET", "/hello"))),
            encode_record(FCGI_PARAMS, 1),
            encode_record(FCGI_STDIN, 1),
        )
        records = read_until_closed(conn)
        assert not [r for r in records if r.type == FCGI_STDOUT], records
    wait_for_log(server, r"version", since=mark)
    assert server.request("GET", "/hello").body == b"hello"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # an HTTP client on the FastCGI port
        bytes(range(256)) * 4,
    ],
)
def test_garbage_then_close(server, garbage):
    mark = len(server.log())
    with server.connect() as conn:
        send_all_or_closed(conn, garbage)
        read_until_closed(conn)
    wait_for_new_log(server, mark)
    assert server.request("GET", "/hello").body == b"hello"


@pytest.mark.parametrize("cut", [3, 8 + 10])
def test_truncated_record_then_close(server, cut):
    mark = len(server.log())
    conn = server.connect()
    conn.begin_request(1)
    record = encode_record(FCGI_PARAMS, 1, encode_params(cgi_params("GET", "/hello")))
    conn.send(record[:cut])  # inside the header, or inside the content
    conn.close()
    wait_for_new_log(server, mark)
    assert server.request("GET", "/hello").body == b"hello"


def test_params_over_limit_close_connection(start_server):
    srv = start_server(APP, "--max-params-size", "4096")
    assert srv.request("GET", "/hello", headers={"X-Small": "s" * 1000}).body == b"hello"
    mark = len(srv.log())
    with srv.connect() as conn:
        conn.begin_request(1)
        try:
            conn.send_params(1, cgi_params("GET", "/hello", headers={"X-Big": "b" * 8000}))
            conn.send_stdin(1)
        except ConnectionError:
            pass  # closed while we were still sending
        records = read_until_closed(conn)
        assert not [r for r in records if r.type == FCGI_STDOUT and r.content], records
    text = wait_for_log(srv, r"4096", since=mark)
    assert re.search(r"param", text, re.I), text
    assert srv.request("GET", "/hello").body == b"hello"


# --- multiplexing (§3.3, §5.5 FCGI_CANT_MPX_CONN) ----------------------------------------


def test_cant_mpx_conn_for_a_request_beside_one_still_receiving_input(server):
    """Not multiplexed: a BEGIN_REQUEST while another request's body is still arriving is a
    genuinely concurrent request and gets FCGI_CANT_MPX_CONN at once."""
    with server.connect() as conn:
        start_request(conn, 1, "/echo", method="POST", body=b"x" * 10, end_stdin=False)
        start_request(conn, 2, "/hello")
        rec = conn.read_record()
        assert rec is not None and (rec.type, rec.request_id) == (FCGI_END_REQUEST, 2), rec
        assert rec.end_request()[1] == FCGI_CANT_MPX_CONN
        conn.send_stdin(1, b"")
        first = conn.read_response(1)
        assert (first.status, first.body) == (200, b"x" * 10)


def test_a_begin_request_after_a_complete_one_waits_its_turn(server):
    """php-fpm serialises: a BEGIN_REQUEST that follows a request whose input is complete
    (HAProxy's keep-conn sends it before the first FCGI_END_REQUEST) is served after it,
    not refused."""
    with server.connect() as conn:
        start_request(conn, 1, "/sleep?t=0.5")
        time.sleep(0.1)
        start_request(conn, 2, "/hello")
        records = []
        while not any(r.type == FCGI_END_REQUEST and r.request_id == 2 for r in records):
            rec = conn.read_record()
            assert rec is not None, f"connection closed early: {records}"
            records.append(rec)
        ends = {r.request_id: i for i, r in enumerate(records) if r.type == FCGI_END_REQUEST}
        assert ends[1] < ends[2], "served in turn"
        assert records[ends[2]].end_request()[1] == FCGI_REQUEST_COMPLETE
        first = Response.from_records([r for r in records if r.request_id == 1])
        second = Response.from_records([r for r in records if r.request_id == 2])
        assert (first.status, first.body) == (200, b"slept") and (second.status, second.body) == (200, b"hello")
        assert_well_formed(first)


def test_multiplexed_requests_run_concurrently(start_server):
    srv = start_server(APP, "--multiplexed", "--threads", "3")
    with srv.connect() as conn:
        t0 = time.monotonic()
        for rid in (1, 2, 3):
            start_request(conn, rid, "/sleep?t=0.5")
        responses = {rid: conn.read_response(rid) for rid in (3, 1, 2)}
        elapsed = time.monotonic() - t0
    for rid, resp in responses.items():
        assert (resp.status, resp.body) == (200, b"slept"), (rid, resp)
        assert_well_formed(resp)
    assert elapsed < 1.2, f"3 x 0.5 s requests took {elapsed:.2f}s: not concurrent"


def test_multiplexed_interleaved_streams(start_server):
    srv = start_server(APP, "--multiplexed", "--threads", "3")
    with srv.connect(timeout=30) as conn:
        start_request(conn, 7, "/bytes?n=300000&chunk=1000")
        start_request(conn, 65535, "/echo", body=pattern(200000), method="POST")
        start_request(conn, 256, "/hello")
        assert conn.read_response(256).body == b"hello"
        assert conn.read_response(65535).body == pattern(200000)
        assert conn.read_response(7).body == pattern(300000)


def test_multiplexed_abort_leaves_other_requests_alone(start_server, tmp_path):
    srv = start_server(APP, "--multiplexed", "--threads", "3")
    marker = tmp_path / "closed.txt"
    with srv.connect(timeout=10) as conn:
        start_request(conn, 1, "/stream?n=50&delay=0.05&size=100", params={"MARKER": str(marker)})
        start_request(conn, 2, "/sleep?t=0.5")
        time.sleep(0.2)
        conn.abort(1)
        aborted = conn.read_response(1)
        assert aborted.protocol_status is not None
        other = conn.read_response(2)
        assert (other.status, other.body) == (200, b"slept")
        assert_well_formed(other)
        assert wait_for(marker.exists, 3)


def test_overloaded_when_over_max_in_flight(start_server):
    """Multiplexed, 1 thread, --max-in-flight 2: a third concurrent request gets FCGI_OVERLOADED
    at once (§5.5) and the first two are served."""
    srv = start_server(APP, "--multiplexed", "--threads", "1", "--max-in-flight", "2")
    with srv.connect(timeout=10) as conn:
        start_request(conn, 1, "/sleep?t=0.5")
        start_request(conn, 2, "/sleep?t=0.5")
        time.sleep(0.1)
        start_request(conn, 3, "/hello")
        third = conn.read_response(3)
        assert third.protocol_status == FCGI_OVERLOADED, third.records
        assert not third.stdout
        for rid in (1, 2):
            resp = conn.read_response(rid)
            assert (resp.status, resp.body) == (200, b"slept")


# --- FCGI_KEEP_CONN (§5.1) ----------------------------------------------------------------


def test_keep_conn_sequential_requests(server):
    with server.connect() as conn:
        for i in range(3):
            resp = conn.request("GET", f"/environ?i={i}", keep_conn=True)
            assert resp.status == 200
            assert json.loads(resp.body)["QUERY_STRING"] == f"i={i}"
            assert_well_formed(resp)
        assert conn.get_values([FCGI_MPXS_CONNS]) == {FCGI_MPXS_CONNS: "0"}


def test_without_keep_conn_server_closes(server):
    with server.connect(timeout=5) as conn:
        resp = conn.request("GET", "/hello")
        assert resp.body == b"hello"
        try:
            assert conn.read_record() is None
        except ConnectionResetError:
            pass


def peer_gone(conn: Connection) -> bool:
    """Whether the server has closed its socket for good (a write finds no reader: EPIPE on a
    Unix socket); False while it still reads (a lingering half-close)."""
    try:
        conn.sock.send(encode_record(FCGI_STDIN, 1))
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_a_request_read_whole_closes_at_once(server):
    """Without FCGI_KEEP_CONN, once the whole request was read and nothing more is waiting, the
    close cannot become a reset: the server closes at once (as uWSGI does) instead of
    half-closing and waiting up to 2 s for the web server's EOF."""
    with server.connect(timeout=5) as conn:
        # In one write, as nginx and Apache send a request without a body: nothing is left to
        # arrive once the app answers.
        begin = FCGI_RESPONDER.to_bytes(2, "big") + bytes(6)
        params = encode_params(cgi_params("GET", "/hello"))
        conn.send(
            encode_record(FCGI_BEGIN_REQUEST, 1, begin)
            + encode_record(FCGI_PARAMS, 1, params)
            + encode_record(FCGI_PARAMS, 1)
            + encode_record(FCGI_STDIN, 1)
        )
        resp = conn.read_response(1)
        assert resp.body == b"hello"
        assert conn.read_record() is None
        assert wait_for(lambda: peer_gone(conn), timeout=0.5), "the server is still reading"


def test_a_request_answered_before_its_body_ended_lingers_for_the_rest(server):
    """The app answers without reading the body, whose end is still on its way: the server
    half-closes and keeps reading what the web server still sends (until its EOF, at most
    2 s), so that input arriving after the close cannot reset the connection and destroy the
    response before the web server reads it (php-fpm and flup linger the same way)."""
    with server.connect(timeout=5) as conn:
        start_request(conn, 1, "/hello", keep_conn=False, body=b"x" * 5, end_stdin=False)
        resp = conn.read_response(1)
        assert resp.body == b"hello"
        assert conn.read_record() is None, "no half-close"
        time.sleep(0.2)
        conn.send(encode_record(FCGI_STDIN, 1, b"rest of the body"))
        time.sleep(0.2)
        assert not peer_gone(conn), "closed while the body was still arriving"


# --- PARAMS as a stream (§3.4, §5.2, Appendix B example 2) --------------------------------

SPLIT_PARAMS = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/environ",
    "QUERY_STRING": "a=1&b=2",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "X_EMPTY": "",
    "X_LATIN1": "caf\xe9",
    "X_LONG": "L" * 200,  # 4-byte value length
    "X_" + "N" * 130: "named",  # 4-byte name length
}


def _check_environ(resp: Response, expected: dict) -> None:
    assert resp.status == 200, resp
    env = json.loads(resp.body)
    for key, value in expected.items():
        assert env.get(key) == value, f"{key}: {env.get(key)!r} != {value!r}"


def test_params_split_at_every_byte_boundary(server):
    block = encode_params(SPLIT_PARAMS)
    assert 300 < len(block) < 600
    with server.connect() as conn:
        for cut in range(1, len(block)):
            conn.begin_request(1, keep_conn=True)
            conn.send_record(FCGI_PARAMS, 1, block[:cut])
            conn.send_record(FCGI_PARAMS, 1, block[cut:])
            conn.send_record(FCGI_PARAMS, 1, b"")
            conn.send_stdin(1)
            _check_environ(conn.read_response(1), SPLIT_PARAMS)


def test_params_every_record_size(server):
    size = len(encode_params(SPLIT_PARAMS))
    with server.connect() as conn:
        for split in range(1, size + 1):
            conn.begin_request(1, keep_conn=True)
            conn.send_params(1, SPLIT_PARAMS, split=split)
            conn.send_stdin(1)
            _check_environ(conn.read_response(1), SPLIT_PARAMS)


def test_params_one_byte_per_record(server):
    params = cgi_params("POST", "/environ?x=y", headers={"Content-Type": "text/plain", "X-A": "b"}, body_length=4)
    with server.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, params, split=1)
        conn.send_stdin(1, b"body")
        _check_environ(conn.read_response(1), params)


def test_params_four_byte_lengths(start_server):
    srv = start_server(APP, "--max-params-size", "1048576")
    extra = {
        "X_127": "a" * 127,
        "X_128": "b" * 128,  # 1-/4-byte value length boundary
        "Y" * 127: "1",
        "Z" * 128: "2",  # 1-/4-byte name length boundary
        "X_200": "v" * 200,
        "HTTP_" + "H" * 300: "long name",
    }
    resp = srv.request("GET", "/environ", headers={"X-Big": "B" * 100_000}, params=extra)
    _check_environ(resp, {**extra, "HTTP_X_BIG": "B" * 100_000})


def test_padding_variants(server):
    """Padding is honoured whatever its length (0..255), on every record type."""
    with server.connect() as conn:
        block = encode_params(cgi_params("POST", "/echo", body_length=5))
        conn.send(encode_record(FCGI_BEGIN_REQUEST, 1, bytes([0, FCGI_RESPONDER, 0, 0, 0, 0, 0, 0]), padding=255))
        conn.send(encode_record(FCGI_PARAMS, 1, block, padding=0))
        conn.send(encode_record(FCGI_PARAMS, 1, b"", padding=7))
        conn.send(encode_record(FCGI_STDIN, 1, b"hello", padding=1))
        conn.send(encode_record(FCGI_STDIN, 1, b"", padding=200))
        resp = conn.read_response(1)
        assert (resp.status, resp.body) == (200, b"hello")


# --- FCGI_ABORT_REQUEST (§5.4) -------------------------------------------------------------


def test_abort_before_params_end(server):
    with server.connect(timeout=5) as conn:
        conn.begin_request(1, keep_conn=True)
        conn.send_record(FCGI_PARAMS, 1, encode_params({"REQUEST_METHOD": "GET", "PATH_INFO": "/hello"}))
        t0 = time.monotonic()
        conn.abort(1)
        resp = conn.read_response(1)
        elapsed = time.monotonic() - t0
        assert resp.protocol_status is not None, f"no END_REQUEST after ABORT: {resp.records}"
        assert elapsed < 1.0, f"END_REQUEST came {elapsed:.2f}s after ABORT"
        assert not resp.stdout, "the app must not have run"
        again = conn.request("GET", "/hello", keep_conn=True)
        assert again.body == b"hello"


def test_abort_mid_response_stops_app_and_calls_close(server, tmp_path):
    marker = tmp_path / "closed.txt"
    with server.connect(timeout=5) as conn:
        start_request(conn, 1, "/stream?n=100&delay=0.1&size=1000", params={"MARKER": str(marker)})
        got = 0
        while got < 3000:  # a few chunks have arrived: the app is mid-body
            rec = conn.read_record()
            assert rec is not None and rec.type in (FCGI_STDOUT, FCGI_STDERR), rec
            got += len(rec.content)
        t0 = time.monotonic()
        conn.abort(1)
        resp = conn.read_response(1)
        elapsed = time.monotonic() - t0
        assert resp.protocol_status is not None, "no END_REQUEST after ABORT"
        assert elapsed < 1.5, f"END_REQUEST came {elapsed:.2f}s after ABORT"
        assert got + len(resp.stdout) < 50_000, "the app kept streaming after ABORT"
        assert wait_for(marker.exists, 3), "the body's close() did not run after ABORT"
        assert conn.request("GET", "/hello", keep_conn=True).body == b"hello"


def test_abort_while_app_blocks_reading_input(start_server, tmp_path):
    srv = start_server(APP, "--threads", "1")
    marker = tmp_path / "read.txt"
    with srv.connect(timeout=5) as conn:
        start_request(
            conn,
            1,
            "/read-block",
            method="POST",
            body=b"partial",
            end_stdin=False,
            params={"MARKER": str(marker), "CONTENT_LENGTH": "1000000"},
        )
        assert wait_for(Path(str(marker) + ".started").exists, 5), "the app did not start"
        time.sleep(0.2)  # now blocked inside wsgi.input.read()
        t0 = time.monotonic()
        conn.abort(1)
        resp = conn.read_response(1)
        elapsed = time.monotonic() - t0
        assert resp.protocol_status is not None, "no END_REQUEST after ABORT"
        assert elapsed < 1.5, f"END_REQUEST came {elapsed:.2f}s after ABORT"
    assert wait_for(marker.exists, 3), "wsgi.input.read() stayed blocked after ABORT"
    # the only worker thread is free again
    assert srv.request("GET", "/hello", timeout=5).body == b"hello"


# --- a fresh connection's request is consumed once answered ---------------------------------


def whole_request(path: str, params: dict | None = None, keep_conn: bool = False) -> bytes:
    """BEGIN_REQUEST, PARAMS and an empty STDIN in one buffer, for one send."""
    p = cgi_params("GET", path)
    p.update(params or {})
    begin = struct.pack(">HB5x", FCGI_RESPONDER, 1 if keep_conn else 0)
    return b"".join(
        [
            encode_record(FCGI_BEGIN_REQUEST, 1, begin),
            encode_record(FCGI_PARAMS, 1, encode_params(p)),
            encode_record(FCGI_PARAMS, 1),
            encode_record(FCGI_STDIN, 1),
        ]
    )


def unconsumed(conn: Connection) -> int:
    """What this end sent that the server has not consumed yet, in the kernel's accounting
    (SIOCOUTQ of a unix socket: 0 once the server has read everything)."""
    return struct.unpack("i", fcntl.ioctl(conn.sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def held_request(server, path: str, marker: Path, keep_conn: bool = False) -> Connection:
    """A connection whose whole request was sent at once, with the app running it and the
    request still unconsumed. The request is sent right after connecting; if the server
    looked before it arrived (it then reads it as usual), try again: 5 tries."""
    started = Path(str(marker) + ".started")
    for _ in range(5):
        started.unlink(missing_ok=True)
        conn = server.connect(timeout=5)
        conn.send(whole_request(path, {"MARKER": str(marker)}, keep_conn))
        assert wait_for(started.exists, 5), "the app did not start"
        if unconsumed(conn) > 0:
            return conn
        conn.close()
        time.sleep(0.2)
    pytest.fail("the request was consumed before its answer on 5 connections")


def test_fresh_request_is_consumed_after_its_answer(server, tmp_path):
    """The first request of a fresh connection is looked at (MSG_PEEK) and consumed only
    once answered: consuming it frees room in the web server's send buffer, which wakes it
    if it waits for EPOLLOUT (nginx does), and that before the answer: a second wake-up of
    the web server per request (issue 11)."""
    conn = held_request(server, "/stuck?t=0.3", tmp_path / "stuck")
    resp = conn.read_response(1)
    assert resp.body == b"unstuck"
    assert wait_for(lambda: unconsumed(conn) == 0, 5), "the request was never consumed"
    assert conn.read_record() is None, "no FCGI_KEEP_CONN: the server closes"
    conn.close()


def test_abort_reaches_a_request_still_unconsumed(server, tmp_path):
    """While the request waits unconsumed, what the web server sends next (here
    FCGI_ABORT_REQUEST) is still read at once."""
    marker = tmp_path / "closed.txt"
    conn = held_request(server, "/stream?n=100&delay=0.05&size=1000", marker, keep_conn=True)
    rec = conn.read_record()
    assert rec is not None and rec.type == FCGI_STDOUT, rec
    t0 = time.monotonic()
    conn.abort(1)
    resp = conn.read_response(1)
    assert resp.protocol_status is not None, "no END_REQUEST after ABORT"
    assert time.monotonic() - t0 < 1.5
    assert wait_for(lambda: marker.exists() and marker.read_text(), 5), "close() did not run after ABORT"
    assert "closed after 100 chunks" not in marker.read_text()
    assert conn.request("GET", "/hello", keep_conn=True).body == b"hello"
    conn.close()


def test_disconnect_reaches_a_request_still_unconsumed(server, tmp_path):
    """The web server goes away while the request waits unconsumed: seen at once (the
    app's close() runs long before its 100 chunks are out), and the server keeps serving."""
    marker = tmp_path / "closed.txt"
    conn = held_request(server, "/stream?n=100&delay=0.05&size=1000", marker)
    rec = conn.read_record()
    assert rec is not None and rec.type == FCGI_STDOUT, rec
    conn.close()
    assert wait_for(lambda: marker.exists() and marker.read_text(), 5), "close() did not run after the disconnect"
    assert "closed after 100 chunks" not in marker.read_text()
    assert server.request("GET", "/hello").body == b"hello"


# --- FCGI_STDIN (§5.3) --------------------------------------------------------------------


def test_stdin_one_byte_records(server):
    body = pattern(3000)
    with server.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("POST", "/echo", body_length=len(body)))
        conn.send_stdin(1, body, chunk=1)
        resp = conn.read_response(1)
    assert resp.body == body


def test_unread_body_does_not_break_kept_connection(server):
    """The app ignores a 2 MB body; the rest of it must not be taken for the next request."""
    with server.connect(timeout=20) as conn:
        resp = conn.request("POST", "/hello", body=pattern(2 * 1024 * 1024), keep_conn=True)
        assert resp.body == b"hello"
        resp = conn.request("POST", "/echo", body=b"second", keep_conn=True)
        assert resp.body == b"second"


def test_client_disconnect_mid_response(server, tmp_path):
    """The web server goes away mid-body: the app's close() runs and the server keeps serving."""
    marker = tmp_path / "closed.txt"
    conn = server.connect(timeout=5)
    start_request(conn, 1, "/stream?n=100&delay=0.05&size=1000", params={"MARKER": str(marker)})
    rec = conn.read_record()
    assert rec.type == FCGI_STDOUT
    conn.close()
    # The app creates the marker file before it writes to it: wait for the text.
    closed = wait_for(lambda: marker.exists() and marker.read_text(), 5)
    assert closed, "close() did not run after the peer disconnected"
    text = marker.read_text()
    assert text.startswith("closed after ") and "closed after 100 chunks" not in text, text
    assert server.request("GET", "/hello").body == b"hello"


# --- FCGI_STDOUT / FCGI_STDERR / FCGI_END_REQUEST framing (§5.3, §5.5) -------------------


@pytest.mark.parametrize(
    "path",
    ["/bytes?n=1048576", "/bytes?n=1048576&chunk=200000", "/write?n=1048576&chunk=100000", "/bytes?n=1048576&chunk=10"],
)
def test_one_megabyte_body(server, path):
    with server.connect(timeout=30) as conn:
        resp = conn.request("GET", path)
    assert resp.status == 200
    assert len(resp.body) == 1048576 and resp.body == pattern(1048576)
    assert_well_formed(resp)
    assert max(len(r.content) for r in resp.records) <= 65535


@pytest.mark.parametrize(
    "path,status,body",
    [
        ("/hello", 200, b"hello"),
        ("/empty", 204, b""),
        ("/empty-first", 200, b"data"),
        ("/stderr", 200, b"ok"),
        ("/nowhere", 404, b"no route /nowhere"),
        ("/error", 500, None),
    ],
)
def test_stream_framing_and_end_request(server, path, status, body):
    resp = server.request("GET", path)
    assert resp.status == status, resp
    if body is not None:
        assert resp.body == body
    assert_well_formed(resp)


def test_error_after_headers_still_ends_request(server):
    resp = server.request("GET", "/error-late")
    assert resp.status == 200
    assert resp.body.startswith(b"partial")
    assert_well_formed(resp)
    assert resp.stderr, "the traceback should go to FCGI_STDERR"


def test_stderr_stream_is_terminated(server):
    resp = server.request("GET", "/stderr")
    assert b"to stderr" in resp.stderr
    errs = [r for r in resp.records if r.type == FCGI_STDERR]
    assert not errs[-1].content, f"FCGI_STDERR stream not ended by an empty record: {errs}"
    assert [r for r in errs if not r.content] == [errs[-1]]
    assert resp.records.index(errs[-1]) < len(resp.records) - 1  # before END_REQUEST


def test_five_megabyte_post_echo(server):
    body = pattern(5 * 1024 * 1024)
    resp = server.request("POST", "/echo", body=body, headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert resp.status == 200 and resp.header("Content-Length") == str(len(body))
    assert resp.body == body
    assert_well_formed(resp)


def test_streaming_echo_with_concurrent_sender(server):
    """Request body and response flow at the same time (as nginx does): no deadlock."""
    body = pattern(8 * 1024 * 1024)
    with server.connect(timeout=60) as conn:
        p = cgi_params("POST", "/echo-stream", body_length=len(body))
        conn.begin_request(1)
        conn.send_params(1, p)
        sender = threading.Thread(target=conn.send_stdin, args=(1, body), daemon=True)
        sender.start()
        resp = conn.read_response(1)
        sender.join(10)
    assert resp.body == body
    assert_well_formed(resp)


def test_slow_reader(start_server):
    srv = start_server(APP, "--threads", "2")
    size = 8 * 1024 * 1024
    with srv.connect(timeout=30) as slow:
        start_request(slow, 1, f"/bytes?n={size}&chunk=65536", keep_conn=False)
        time.sleep(1.0)  # read nothing: the server must wait, not fail
        assert srv.request("GET", "/hello", timeout=5).body == b"hello"  # others are served
        records = []
        while True:
            rec = slow.read_record()
            if rec is None:
                break
            records.append(rec)
            if len(records) % 16 == 0:
                time.sleep(0.01)
            if rec.type == FCGI_END_REQUEST:
                break
        resp = Response.from_records(records)
    assert resp.body == pattern(size)
    assert_well_formed(resp)


def test_many_connections_in_parallel(server):
    """20 kept-open connections, 4 worker threads: idle connections must not pin a worker."""
    results, errors = [], []

    def worker():
        try:
            with server.connect(timeout=20) as conn:
                for _ in range(5):
                    results.append(conn.request("GET", "/hello", keep_conn=True).body)
        except Exception as e:  # reported below, with the others
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, f"{len(errors)} of 20 connections failed, e.g. {errors[0]}"
    assert results == [b"hello"] * 100


# --- signals and shutdown (§7 "Errors": SIGTERM) -----------------------------------------


def test_sigterm_idle_with_kept_connection(server):
    with server.connect(timeout=5) as conn:
        assert conn.request("GET", "/hello", keep_conn=True).body == b"hello"
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        rc = server.wait(timeout=5)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0, f"exit took {elapsed:.2f}s with an idle keep-alive connection"
        assert rc == 0
        assert read_until_closed(conn) == []


def test_sigterm_lets_in_flight_request_finish(server):
    with server.connect(timeout=10) as conn:
        start_request(conn, 1, "/sleep?t=1.0", keep_conn=True)
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        resp = conn.read_response(1)
        assert (resp.status, resp.body) == (200, b"slept")
        assert_well_formed(resp)
    assert server.wait(timeout=5) == 0


def test_sighup_stops_with_status_zero(server):
    assert server.request("GET", "/hello").body == b"hello"
    t0 = time.monotonic()
    server.signal(signal.SIGHUP)
    assert server.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2.0


def test_graceful_timeout_bounds_shutdown(start_server, tmp_path):
    srv = start_server(APP, "--graceful-timeout", "1")
    marker = tmp_path / "stuck.txt"
    conn = srv.connect(timeout=10)
    start_request(conn, 1, "/stuck?t=30", params={"MARKER": str(marker)})
    assert wait_for(Path(str(marker) + ".started").exists, 5), "the app did not start"
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    srv.wait(timeout=10)
    elapsed = time.monotonic() - t0
    conn.close()
    assert 0.7 <= elapsed < 4.0, f"exited {elapsed:.2f}s after SIGTERM with --graceful-timeout 1"
