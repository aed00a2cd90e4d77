"""wsgi.input: io semantics, compared operation by operation with io.BytesIO.

``tests/apps/wsgi_apps.py:input_ops_app`` applies the operations listed in the X-Ops
header to wsgi.input and reports every result; the test applies the same operations
to ``io.BytesIO(body)`` and compares.  flup's ``readline(size)`` ignored ``size``; the
engine must not.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

OPS_APP = "tests.apps.wsgi_apps:input_ops_app"
DIGEST_APP = "tests.apps.wsgi_apps:input_digest_app"


def expected(body: bytes, ops) -> list:
    """What the ops give on io.BytesIO(body), in input_ops_app's JSON shape."""
    f = io.BytesIO(body)
    out = []
    for op in ops:
        name, args = op[0], op[1:]
        if name == "next":
            try:
                out.append(next(iter(f)).decode("latin-1"))
            except StopIteration:
                out.append({"stop": True})
        elif name == "iter":
            out.append([x.decode("latin-1") for x in f])
        elif name == "readlines":
            out.append([x.decode("latin-1") for x in f.readlines(*args)])
        elif name == "readinto":
            buf = bytearray(args[0])
            n = f.readinto(buf)
            out.append(bytes(buf[:n]).decode("latin-1"))
        else:
            out.append(getattr(f, name)(*args).decode("latin-1"))
    return out


def cgi_pairs(body_length: int, ops) -> list[tuple[str, str]]:
    return [
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_LENGTH", str(body_length)),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("HTTP_X_OPS", json.dumps(ops)),
    ]


def run_ops(server, body: bytes, ops, *, chunk: int = 65535) -> list:
    with server.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_pairs(len(body), ops))
        conn.send_stdin(1, body, chunk=chunk)
        resp = conn.read_response(1)
    assert resp.protocol_status == 0
    assert resp.status == 200, (resp.status, resp.body[:1000], resp.stderr[-3000:])
    return json.loads(resp.body)["results"]


@pytest.fixture
def ops_server(start_server):
    return start_server(OPS_APP, "--threads", "2")


BODY = b"first line\nsecond\n\nfourth line is longer than the others\nno newline at end"

CASES = {
    "read_all": [["read"]],
    "read_minus_one": [["read", -1]],
    "read_none": [["read", None]],
    "read_n_exact": [["read", 5], ["read", 5], ["read", 1000], ["read", 5]],
    "read_zero": [["read", 0], ["read", 3]],
    "readline_plain": [["readline"], ["readline"], ["readline"], ["readline"], ["readline"], ["readline"]],
    "readline_size": [["readline", 5], ["readline", 5], ["readline", 100], ["readline", 0], ["readline", -1]],
    "readline_size_with_newline_buffered": [["read", 1], ["readline", 3], ["readline", 3], ["readline"]],
    "readline_none": [["readline", None], ["readline", 1]],
    "readlines_all": [["readlines"]],
    "readlines_hint": [["readlines", 1], ["readlines", 12], ["readlines", 0], ["readlines"]],
    "readlines_hint_negative": [["readlines", -1]],
    "iteration": [["iter"], ["iter"], ["read"]],
    "next_lines": [["next"], ["next"], ["read", 2], ["next"], ["iter"], ["next"]],
    "mix": [
        ["read", 3],
        ["readline"],
        ["read", 4],
        ["readline", 2],
        ["readlines", 5],
        ["read"],
        ["read", 10],
        ["readline"],
        ["readlines"],
    ],
    "readinto": [["readinto", 4], ["readline"], ["readinto", 1000], ["readinto", 3]],
    "after_eof": [["read"], ["read"], ["read", 10], ["readline"], ["readlines"], ["next"], ["iter"]],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_ops_match_bytesio(ops_server, case):
    ops = CASES[case]
    assert run_ops(ops_server, BODY, ops) == expected(BODY, ops)


@pytest.mark.parametrize("case", ["mix", "readline_size", "next_lines", "readlines_hint"])
def test_input_ops_same_over_seven_byte_records(ops_server, case):
    """A body over many 7-byte STDIN records behaves exactly like one sent in one record."""
    ops = CASES[case]
    one = run_ops(ops_server, BODY, ops)
    many = run_ops(ops_server, BODY, ops, chunk=7)
    assert one == many == expected(BODY, ops)


def test_input_empty_body(ops_server):
    ops = [["read"], ["read", 5], ["readline"], ["readlines"], ["next"], ["iter"]]
    assert run_ops(ops_server, b"", ops) == expected(b"", ops)


def test_input_readline_size_is_honoured(ops_server):
    """flup returned the whole line for readline(5) when a newline was buffered."""
    body = b"0123456789\nabcdef\n"
    res = run_ops(ops_server, body, [["readline", 5], ["readline", 5], ["readline", 5], ["readline"]])
    assert res == ["01234", "56789", "\n", "abcdef\n"]


def test_input_long_line_over_many_records(ops_server):
    """One 300 KB line (no newline for several records), then short lines."""
    body = b"L" * 300_000 + b"\nshort\n" + b"M" * 70_000
    ops = [["readline"], ["readline", 3], ["readline"], ["readline", 65536], ["readline"], ["readline"]]
    for chunk in (65535, 4096):
        assert run_ops(ops_server, body, ops, chunk=chunk) == expected(body, ops)


def test_input_binary_bytes_roundtrip(ops_server):
    body = bytes(range(256)) * 4 + b"\r\n\r\n" + bytes(range(255, -1, -1))
    ops = [["readline"], ["read", 300], ["readlines"]]
    assert run_ops(ops_server, body, ops) == expected(body, ops)


def test_input_random_sequences(ops_server):
    """Deterministic random walks over long bodies with lines across record boundaries."""
    rng = random.Random(1234)
    for _ in range(6):
        lines = [os.urandom(rng.randint(0, 200)).replace(b"\n", b"") + b"\n" for _ in range(rng.randint(1, 60))]
        body = b"".join(lines) + (os.urandom(rng.randint(0, 50)).replace(b"\n", b"x") if rng.random() < 0.5 else b"")
        ops = []
        for _ in range(rng.randint(5, 25)):
            kind = rng.choice(["read", "readline", "readlines", "next"])
            if kind == "next":
                ops.append(["next"])
            elif kind == "readlines":
                ops.append(["readlines", rng.choice([1, 50, 300])])
            else:
                ops.append([kind, rng.choice([None, -1, 0, 1, 7, 64, 1000])])
        ops.append(["read"])
        chunk = rng.choice([1, 7, 100, 65535])
        assert run_ops(ops_server, body, ops, chunk=chunk) == expected(body, ops), (ops, chunk)


op_strategy = st.one_of(
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(-1, 40))).map(list),
    st.tuples(st.just("readline"), st.one_of(st.none(), st.integers(-1, 20))).map(list),
    st.tuples(st.just("readlines"), st.integers(-1, 30)).map(list),
    st.tuples(st.just("readinto"), st.integers(0, 40)).map(list),
    st.just(["next"]),
    st.just(["iter"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\xff", b"long-ish segment "]), max_size=60).map(
        b"".join
    ),
    ops=st.lists(op_strategy, min_size=1, max_size=10),
    chunk=st.sampled_from([1, 3, 7, 65535]),
)
def test_input_property_matches_bytesio(ops_server, body, ops, chunk):
    assert run_ops(ops_server, body, ops, chunk=chunk) == expected(body, ops)


# --- large bodies, read(n) exactness ------------------------------------------------------------


def digest(server, body: bytes, *, read_size: int = 65536, chunk: int = 65535):
    pairs = [
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_LENGTH", str(len(body))),
        ("HTTP_X_CHUNK", str(read_size)),
    ]
    with server.connect(timeout=60) as conn:
        conn.begin_request(1)
        conn.send_params(1, pairs)
        conn.send_stdin(1, body, chunk=chunk)
        resp = conn.read_response(1)
    assert resp.protocol_status == 0
    assert resp.status == 200, (resp.status, resp.body[:1000], resp.stderr[-3000:])
    return json.loads(resp.body)


def test_ten_megabyte_body_in_64k_reads(start_server):
    server = start_server(DIGEST_APP, "--threads", "2")
    body = os.urandom(10 * 1024 * 1024 + 12345)
    r = digest(server, body)
    assert r["length"] == len(body)
    assert r["sha256"] == hashlib.sha256(body).hexdigest()
    assert r["short_reads"] == []  # read(65536) returned 65536 bytes every time before EOF
    assert r["after_eof"] == ""
    assert r["reads"] == len(body) // 65536 + 2


@pytest.mark.parametrize("read_size, chunk", [(1000, 7), (65536, 1), (3, 65535), (100000, 4096)])
def test_read_n_returns_n_until_eof(start_server, read_size, chunk):
    """read(n) waits for n bytes even when they arrive in records of another size."""
    server = start_server(DIGEST_APP, "--threads", "2")
    body = os.urandom(20000 if chunk == 1 else 300001)
    r = digest(server, body, read_size=read_size, chunk=chunk)
    assert r["length"] == len(body)
    assert r["sha256"] == hashlib.sha256(body).hexdigest()
    assert r["short_reads"] == []


def test_unread_body_does_not_break_next_request(start_server):
    """An app that ignores a large body; the next request on the same connection still works."""
    server = start_server("tests.apps.wsgi_apps:environ_app", "--threads", "2")
    with server.connect() as conn:
        for i in range(3):
            body = os.urandom(300000)
            resp = conn.request("POST", f"/r{i}", body=body, keep_conn=True)
            assert resp.status == 200 and resp.protocol_status == 0
            assert json.loads(resp.body)["environ"]["PATH_INFO"] == f"/r{i}"
