"""Unit tests of oxfcgi.client (the FastCGI client the tests and `oxfcgi request` use) and of
the `oxfcgi request` command, against scripted in-process peers. No oxfcgi server runs here.

Spec references are to FastCGI 1.0 (§3.3 records, §3.4 name-value pairs, Appendix B).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from oxfcgi import client
from oxfcgi.client import (
    FCGI_BEGIN_REQUEST,
    FCGI_CANT_MPX_CONN,
    FCGI_END_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_KEEP_CONN,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    ConnectError,
    Connection,
    ProtocolError,
    Record,
    Response,
    TruncatedRecordError,
    cgi_params,
    decode_params,
    encode_params,
    encode_record,
    parse_address,
    request,
)
from tests.support import addresses

# --- records (§3.3) ----------------------------------------------------------------------


def test_record_header_layout():
    rec = encode_record(FCGI_STDOUT, 0x1234, b"abc")
    assert rec[:8] == bytes([1, FCGI_STDOUT, 0x12, 0x34, 0, 3, 5, 0])
    assert rec[8:11] == b"abc" and rec[11:] == bytes(5)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 65535])
def test_default_padding_aligns_to_8(n):
    rec = encode_record(FCGI_STDIN, 1, b"x" * n)
    assert len(rec) % 8 == 0
    assert rec[6] == -n % 8
    assert struct.unpack(">H", rec[4:6])[0] == n


def test_explicit_padding_and_version():
    rec = encode_record(FCGI_STDIN, 1, b"ab", padding=255, version=2)
    assert rec[0] == 2 and rec[6] == 255 and len(rec) == 8 + 2 + 255
    assert encode_record(FCGI_STDIN, 1, b"ab", padding=0) == bytes([1, 5, 0, 1, 0, 2, 0, 0]) + b"ab"


def test_content_over_65535_is_rejected():
    with pytest.raises(ValueError, match="65535"):
        encode_record(FCGI_STDOUT, 1, b"x" * 65536)


@pytest.mark.parametrize(
    "kwargs", [dict(request_id=65536), dict(request_id=-1), dict(padding=256), dict(rtype=256), dict(version=-1)]
)
def test_out_of_range_fields(kwargs):
    args = dict(rtype=1, request_id=1, content=b"", padding=None, version=1) | kwargs
    with pytest.raises(ValueError):
        encode_record(**args)


# --- name-value pairs (§3.4) --------------------------------------------------------------


def test_params_spec_example():
    # Appendix B: {FCGI_PARAMS, 1, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"}
    data = encode_params([("SERVER_PORT", "80"), ("SERVER_ADDR", "199.170.183.42")])
    assert data == b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42"
    assert decode_params(data) == [(b"SERVER_PORT", b"80"), (b"SERVER_ADDR", b"199.170.183.42")]


def test_params_length_boundaries():
    assert encode_params({"A": "v" * 127})[:2] == bytes([1, 127])
    four = encode_params({"A": "v" * 128})
    assert four[:5] == bytes([1, 0x80, 0, 0, 128])
    long_name = encode_params({"N" * 200: ""})
    assert long_name[:5] == bytes([0x80, 0, 0, 200, 0])
    big = encode_params({"X": "y" * 100_000})
    assert big[1:5] == struct.pack(">I", 100_000 | 0x80000000)


@pytest.mark.parametrize(
    "pairs",
    [
        {},
        {"A": ""},
        {"": "empty name"},
        {"K" * 127: "v" * 128, "K" * 128: "v" * 127},
        [("DUP", "1"), ("DUP", "2")],
        [(b"RAW", b"\xff\x00\x01")],
        {"X_LATIN1": "caf\xe9", "BIG": "b" * 70_000},
    ],
)
def test_params_roundtrip(pairs):
    items = list(pairs.items()) if isinstance(pairs, dict) else pairs
    expected = [
        (n if isinstance(n, bytes) else n.encode("latin-1"), v if isinstance(v, bytes) else v.encode("latin-1"))
        for n, v in items
    ]
    assert decode_params(encode_params(pairs)) == expected


def test_params_str_is_latin1():
    assert encode_params({"V": "\xe9"}) == b"\x01\x01V\xe9"
    with pytest.raises(UnicodeEncodeError):
        encode_params({"V": "\u20ac"})
    with pytest.raises(TypeError):
        encode_params({"V": 3})


@pytest.mark.parametrize(
    "data",
    [
        b"\x05",  # value length missing
        b"\x80\x00",  # 4-byte name length cut short
        b"\x03\x03ABCde",  # value cut short
        b"\x01\x80\x00\x00\x10X",  # 4-byte value length says 16, nothing follows
    ],
)
def test_decode_truncated_params(data):
    with pytest.raises(ProtocolError):
        decode_params(data)


# --- CGI response parsing -------------------------------------------------------------------


def _response(stdout: bytes, end=(0, FCGI_REQUEST_COMPLETE), stderr=b"") -> Response:
    records = [Record(1, FCGI_STDOUT, 1, stdout), Record(1, FCGI_STDOUT, 1, b"")]
    if stderr:
        records.append(Record(1, FCGI_STDERR, 1, stderr))
    if end:
        records.append(Record(1, FCGI_END_REQUEST, 1, struct.pack(">IB3x", *end)))
    return Response.from_records(records)


def test_response_status_and_headers():
    r = _response(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody\r\n\r\nmore",
        end=(3, 0),
        stderr=b"err",
    )
    assert (r.status, r.reason) == (404, "Not Found")
    assert r.headers == [("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")]
    assert r.header("content-type") == "text/plain" and r.header("X-a") == "1" and r.header("nope") is None
    assert r.body == b"body\r\n\r\nmore"
    assert (r.stderr, r.app_status, r.protocol_status) == (b"err", 3, 0)


def test_response_defaults_and_lf_only():
    r = _response(b"Content-Type: text/plain\n\nhello")
    assert (r.status, r.reason, r.body) == (200, "OK", b"hello")
    assert _response(b"Location: http://x/\r\n\r\n").status == 302
    assert _response(b"Status: 201\r\n\r\n").reason == "Created"
    assert _response(b"Status: 599 Custom Thing\r\n\r\n").reason == "Custom Thing"


def test_response_without_header_block():
    r = _response(b"just text, no headers")
    assert (r.status, r.headers, r.body) == (0, [], b"just text, no headers")


def test_response_without_end_request():
    r = _response(b"Status: 200 OK\r\n\r\npartial", end=None)
    assert r.app_status is None and r.protocol_status is None and r.body == b"partial"


# --- cgi_params ------------------------------------------------------------------------------


def test_cgi_params_like_nginx():
    p = cgi_params(
        "post",
        "/app/x%20y/caf\xe9?a=1",
        headers={"Content-Type": "text/plain", "X-Forwarded-For": "1.2.3.4", "Host": "example.org"},
        body_length=12,
        script_name="/app",
    )
    assert p["REQUEST_METHOD"] == "POST"
    assert p["SCRIPT_NAME"] == "/app"
    assert p["PATH_INFO"] == "/x y/caf\xc3\xa9"  # decoded bytes as latin-1 (PEP 3333)
    assert p["REQUEST_URI"] == "/app/x%20y/caf%C3%A9?a=1"
    assert p["QUERY_STRING"] == "a=1"
    assert p["CONTENT_LENGTH"] == "12" and p["CONTENT_TYPE"] == "text/plain"
    assert p["HTTP_X_FORWARDED_FOR"] == "1.2.3.4" and p["HTTP_HOST"] == "example.org"
    assert "HTTP_CONTENT_TYPE" not in p
    for key, value in {
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }.items():
        assert p[key] == value


def test_cgi_params_get_defaults():
    p = cgi_params()
    assert (p["REQUEST_METHOD"], p["PATH_INFO"], p["SCRIPT_NAME"], p["QUERY_STRING"]) == ("GET", "/", "", "")
    assert "CONTENT_LENGTH" not in p and "CONTENT_TYPE" not in p
    assert p["HTTP_HOST"] == "localhost"
    assert cgi_params("GET", "/", query="x=1")["REQUEST_URI"] == "/?x=1"
    assert cgi_params(headers=[("Accept", "a"), ("Accept", "b")])["HTTP_ACCEPT"] == "a, b"


# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "bound"), addresses.FORMS)
def test_parse_address_takes_every_bind_form(given, bound):
    family, sockaddr = parse_address(given)
    if bound[0] == "unix":
        path = bound[1]
        assert (family, sockaddr) == (socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path)
    else:
        assert family == (socket.AF_INET6 if ":" in bound[1] else socket.AF_INET)
        assert sockaddr == (bound[1], bound[2])


@pytest.mark.parametrize("bad", addresses.BAD + [given for given, _ in addresses.SERVER_ONLY])
def test_parse_address_refuses_what_it_cannot_connect_to(bad):
    with pytest.raises(ValueError):
        parse_address(bad)


def test_client_imports_without_the_engine():
    """A broken or missing native module must not take the client (and oxfcgi request's
    parsing of addresses) with it."""
    code = (
        "import sys, importlib.abc\n"
        "class NoEngine(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'oxfcgi._oxfcgi':\n"
        "            raise ImportError('no engine here')\n"
        "sys.meta_path.insert(0, NoEngine())\n"
        "import oxfcgi.client, oxfcgi.settings\n"
        "assert 'oxfcgi._oxfcgi' not in sys.modules\n"
        "print(oxfcgi.client.parse_address('[::1]:9000'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "('::1', 9000)" in proc.stdout


def test_client_reaches_an_abstract_socket(start_server):
    name = f"@oxfcgi-test-{os.getpid()}"
    srv = start_server("tests.apps.protocol_apps:app", "--bind", name, wait=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            assert request(name, "GET", "/hello").body == b"hello"
            break
        except ConnectError:
            assert time.monotonic() < deadline and srv.proc.poll() is None, srv.log()
            time.sleep(0.05)
    proc = subprocess.run([sys.executable, "-m", "oxfcgi", "request", name, "/hello"], capture_output=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == b"hello", proc.stderr


def test_connect_error_names_the_address(tmp_path):
    path = tmp_path / "missing.sock"
    with pytest.raises(ConnectError, match=f"cannot connect to unix:{path}: No such file"):
        Connection(f"unix:{path}")
    with pytest.raises(ConnectionError):
        Connection(str(path))


# --- Connection against a scripted peer (socketpair) ---------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    conn = Connection(a, timeout=5)
    peer = Connection(b, timeout=5)
    yield conn, peer
    conn.close()
    peer.close()


def test_begin_params_stdin_on_the_wire(pair):
    conn, peer = pair
    conn.begin_request(3, keep_conn=True)
    conn.send_params(3, {"A": "1", "B": "22"}, split=3)
    conn.send_stdin(3, b"x" * 10, chunk=4)
    conn.send_data(3, b"", end=True)
    conn.abort(3)
    got = [peer.read_record() for _ in range(1 + 3 + 1 + 3 + 1 + 1 + 1)]
    assert got[0].type == FCGI_BEGIN_REQUEST and got[0].content == bytes(
        [0, FCGI_RESPONDER, FCGI_KEEP_CONN, 0, 0, 0, 0, 0]
    )
    params = got[1:5]
    assert [r.type for r in params] == [FCGI_PARAMS] * 4 and [len(r.content) for r in params] == [3, 3, 3, 0]
    assert decode_params(b"".join(r.content for r in params)) == [(b"A", b"1"), (b"B", b"22")]
    assert [len(r.content) for r in got[5:9]] == [4, 4, 2, 0]
    assert got[9].type == client.FCGI_DATA and got[9].content == b""
    assert got[10].type == client.FCGI_ABORT_REQUEST and got[10].request_id == 3
    assert all(r.request_id == 3 and r.padding == -len(r.content) % 8 for r in got)


def test_read_record_eof_and_truncation(pair):
    conn, peer = pair
    peer.send(encode_record(FCGI_STDOUT, 1, b"hi") + encode_record(FCGI_STDOUT, 1, b"cut")[:10])
    peer.shutdown_write()
    assert conn.read_record().content == b"hi"
    with pytest.raises(TruncatedRecordError, match="FCGI_STDOUT"):
        conn.read_record()


def test_read_record_clean_eof_and_header_truncation():
    for data, expect_none in ((b"", True), (b"\x01\x06\x00", False)):
        a, b = socket.socketpair()
        b.sendall(data)
        b.close()
        conn = Connection(a, timeout=5)
        if expect_none:
            assert conn.read_record() is None
        else:
            with pytest.raises(ProtocolError):
                conn.read_record()
        conn.close()


def test_read_response_keeps_other_ids(pair):
    conn, peer = pair
    end = struct.pack(">IB3x", 0, FCGI_REQUEST_COMPLETE)
    peer.send(
        b"".join(
            [
                encode_record(FCGI_STDOUT, 2, b"Status: 200 OK\r\n\r\ntwo"),
                encode_record(FCGI_STDOUT, 1, b"Status: 500 Oops\r\n\r\none"),
                encode_record(FCGI_END_REQUEST, 2, struct.pack(">IB3x", 0, FCGI_CANT_MPX_CONN)),
                encode_record(FCGI_STDERR, 1, b"warn"),
                encode_record(FCGI_STDOUT, 1, b""),
                encode_record(FCGI_END_REQUEST, 1, end),
                encode_record(FCGI_STDOUT, 2, b"late"),
            ]
        )
    )
    r1 = conn.read_response(1)
    assert (r1.status, r1.reason, r1.body, r1.stderr) == (500, "Oops", b"one", b"warn")
    assert r1.complete and [r.type for r in r1.records][-1] == FCGI_END_REQUEST
    r2 = conn.read_response(2)
    assert (r2.status, r2.body, r2.protocol_status) == (200, b"two", FCGI_CANT_MPX_CONN)
    assert conn.read_record().content == b"late"


def test_get_values_roundtrip(pair):
    conn, peer = pair

    def serve():
        rec = peer.read_record()
        assert rec.type == FCGI_GET_VALUES and rec.request_id == 0
        names = [n for n, _ in decode_params(rec.content)]
        peer.send(encode_record(FCGI_STDOUT, 1, b"unrelated"))
        peer.send(encode_record(FCGI_GET_VALUES_RESULT, 0, encode_params([(names[0], b"10"), (names[2], b"0")])))

    t = threading.Thread(target=serve)
    t.start()
    assert conn.get_values() == {"FCGI_MAX_CONNS": "10", "FCGI_MPXS_CONNS": "0"}
    t.join()
    assert conn.read_record().content == b"unrelated"  # kept for later


def test_get_values_eof(pair):
    conn, peer = pair
    peer.shutdown_write()
    with pytest.raises(ProtocolError, match="closed"):
        conn.get_values()


# --- `oxfcgi request` against a scripted FastCGI responder ----------------------------------------


class FakeResponder:
    """A tiny FastCGI responder on a Unix socket: answers by PATH_INFO, one connection at a time."""

    def __init__(self, path):
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.seen: list[dict] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with Connection(sock, timeout=5) as conn:
                self._serve(conn)

    def _serve(self, conn):
        params, stdin, rid = b"", b"", 1
        while True:
            rec = conn.read_record()
            if rec is None:
                return
            rid = rec.request_id
            if rec.type == FCGI_PARAMS:
                params += rec.content
            if rec.type == FCGI_STDIN:
                if not rec.content:
                    break
                stdin += rec.content
        env = {n.decode("latin-1"): v.decode("latin-1") for n, v in decode_params(params)}
        env["_stdin"] = stdin
        self.seen.append(env)
        path = env.get("PATH_INFO")
        end = struct.pack(">IB3x", 0, FCGI_REQUEST_COMPLETE)
        if path == "/eof":
            return
        if path == "/mpx":
            conn.send_record(FCGI_END_REQUEST, rid, struct.pack(">IB3x", 0, FCGI_CANT_MPX_CONN))
            return
        status = {"/missing": "404 Not Found", "/moved": "302 Found"}.get(path, "200 OK")
        body = stdin if path == "/echo" else b"hello " + path.encode()
        conn.send_record(FCGI_STDERR, rid, b"app warning\n")
        conn.send_record(FCGI_STDOUT, rid, f"Status: {status}\r\nContent-Type: text/plain\r\n\r\n".encode() + body)
        conn.send_record(FCGI_STDOUT, rid, b"")
        conn.send_record(FCGI_STDERR, rid, b"")
        conn.send_record(FCGI_END_REQUEST, rid, end)

    def close(self):
        self.listener.close()


@pytest.fixture
def fake(tmp_path):
    srv = FakeResponder(tmp_path / "fake.sock")
    yield srv
    srv.close()


def run_cli(capfdbinary, *argv):
    from oxfcgi.cli import main

    rc = main(list(argv))
    out, err = capfdbinary.readouterr()
    return rc, out, err


def test_request_cli_ok(fake, capfdbinary):
    rc, out, err = run_cli(
        capfdbinary,
        "request",
        f"unix:{fake.path}",
        "/hi?x=1",
        "-H",
        "X-Test: yes",
        "--param",
        "SCRIPT_NAME=/mnt",
        "--param",
        "REMOTE_ADDR",
    )
    assert rc == 0 and out == b"hello /hi" and b"app warning" in err
    env = fake.seen[-1]
    assert env["QUERY_STRING"] == "x=1" and env["HTTP_X_TEST"] == "yes"
    assert env["SCRIPT_NAME"] == "/mnt" and "REMOTE_ADDR" not in env


def test_request_cli_include_and_statuses(fake, capfdbinary):
    rc, out, _ = run_cli(capfdbinary, "request", fake.path, "/missing", "-i", "--no-stderr")
    assert rc == 1
    assert out == b"Status: 404 Not Found\nContent-Type: text/plain\n\nhello /missing"
    assert run_cli(capfdbinary, "request", fake.path, "/moved")[0] == 0


def test_request_cli_data(fake, capfdbinary, tmp_path):
    f = tmp_path / "body.bin"
    f.write_bytes(b"\x00\x01file body")
    rc, out, _ = run_cli(capfdbinary, "request", fake.path, "/echo", "--data", f"@{f}")
    assert rc == 0 and out == b"\x00\x01file body"
    env = fake.seen[-1]
    assert env["REQUEST_METHOD"] == "POST" and env["CONTENT_LENGTH"] == "11"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    rc, out, _ = run_cli(
        capfdbinary, "request", fake.path, "/echo", "-X", "PUT", "-d", "caf\xe9", "-H", "Content-Type: text/plain"
    )
    assert out == "caf\xe9".encode() and fake.seen[-1]["CONTENT_TYPE"] == "text/plain"


@pytest.mark.parametrize("path,message", [("/eof", b"before FCGI_END_REQUEST"), ("/mpx", b"FCGI_CANT_MPX_CONN")])
def test_request_cli_protocol_failures(fake, capfdbinary, path, message):
    rc, out, err = run_cli(capfdbinary, "request", fake.path, path)
    assert rc == 2 and message in err


def test_request_cli_cannot_connect(tmp_path, capfdbinary):
    rc, out, err = run_cli(capfdbinary, "request", f"unix:{tmp_path}/x.sock")
    assert rc == 2
    assert b"cannot connect to unix:" in err and b"No such file or directory" in err
    assert b"is oxfcgi serve running" in err
    rc, _, err = run_cli(capfdbinary, "request", "host:port")
    assert rc == 2 and b"'port' is not a port number" in err
