"""start_response, write(), body iteration and the FCGI_STDOUT header block.

flup.md §3 ("Stdout framing") and §5 are the reference: ``Status: <status>\\r\\n`` then
the app's headers in order, sent with the first non-empty chunk; Content-Length added
for one-element bodies. Invalid status/headers are rejected with a 500 always (flup
only asserted).
"""

from __future__ import annotations

import pytest

from oxfcgi.client import FCGI_END_REQUEST, FCGI_STDOUT

APPS = "tests.apps.wsgi_apps"


def serve(start_server, name, *args):
    return start_server(f"{APPS}:{name}", "--threads", "2", *args)


def ok(resp, status=200):
    assert resp.protocol_status == 0, resp
    assert resp.status == status, (resp.status, resp.body[:2000], resp.stderr[-3000:])
    return resp


def header_names(resp):
    return [name.lower() for name, _ in resp.headers]


def test_write_and_iterable_combine_in_order(start_server):
    s = serve(start_server, "write_and_iter_app")
    r = ok(s.request("GET", "/"))
    assert r.body == b"w1,w2,i1,w3,i2"
    assert r.header("Content-Length") is None  # a generator: no length known
    assert r.app_status == 0
    assert r.records[-1].type == FCGI_END_REQUEST


@pytest.mark.parametrize("status", ["201 Created", "404 Not Here", "202 Accepted"])
def test_start_response_inside_generator(start_server, status):
    s = serve(start_server, "late_start_app")
    r = ok(s.request("GET", "/", query="status=" + status.replace(" ", "+")), int(status[:3]))
    assert r.reason == status[4:]
    assert r.header("X-Late") == "yes"
    assert r.body == b"late body"


@pytest.mark.parametrize(
    "shape, body, length",
    [
        ("one", b"hello", "5"),
        ("empty_chunk", b"", "0"),
        ("tuple_one", b"hello", "5"),
        ("one_str", b"caf\xe9", "4"),
        ("two", b"hello", None),
        ("generator", b"hello", None),
        ("empty_list", b"", None),
    ],
)
def test_automatic_content_length(start_server, shape, body, length):
    s = serve(start_server, "body_shape_app")
    r = ok(s.request("GET", "/", query="shape=" + shape))
    assert r.body == body
    assert r.header("Content-Length") == length
    assert header_names(r).count("content-length") == (0 if length is None else 1)


def test_app_content_length_is_kept_and_not_duplicated(start_server):
    s = serve(start_server, "body_shape_app")
    r = ok(s.request("GET", "/", query="shape=own_length"))
    assert r.body == b"abcde"
    assert header_names(r).count("content-length") == 1
    assert r.header("Content-Length") == "5"


def test_header_block_exact_bytes(start_server):
    """'Status: <status>\\r\\n' + the headers in the app's order, names/values as given."""
    s = serve(start_server, "headers_app")
    r = ok(s.request("GET", "/"), 299)
    assert r.reason == "Custom Reason Phrase"
    expected = (
        b"Status: 299 Custom Reason Phrase\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"X-Zeta: last-alphabetically-first-in-order\r\n"
        b"Set-Cookie: a=1; Path=/\r\n"
        b"X-Alpha: v\r\n"
        b"Set-Cookie: b=2; Path=/\r\n"
        b"X-Latin1: caf\xe9\r\n"
        b"\r\n"
    )
    assert r.stdout == expected + b"body-two"
    # the stream is ended by an empty STDOUT record, then END_REQUEST
    stdout_records = [rec for rec in r.records if rec.type == FCGI_STDOUT]
    assert stdout_records[-1].content == b""
    assert all(len(rec.content) <= 65535 for rec in stdout_records)
    assert r.records[-1].type == FCGI_END_REQUEST
    assert r.app_status == 0


@pytest.mark.parametrize("status", ["200 OK", "418 I'm a teapot", "200 ", "599 x y  z", "302 Found"])
def test_reason_phrase_preserved(start_server, status):
    s = serve(start_server, "status_app")
    r = s.request("GET", "/", query="status=" + status.replace(" ", "+").replace("'", "%27"))
    assert r.protocol_status == 0
    assert r.stdout.startswith(b"Status: " + status.encode() + b"\r\n")
    assert r.status == int(status[:3])


def test_204_no_body(start_server):
    s = serve(start_server, "status_app")
    r = ok(s.request("GET", "/", query="status=204+No+Content"), 204)
    assert r.body == b""
    assert r.header("X-Status-App") == "1"


@pytest.mark.parametrize(
    "case",
    [
        "crlf_value",
        "lf_value",
        "cr_value",
        "crlf_name",
        "nonlatin1_value",
        "nonlatin1_name",
        "status_crlf",
        "status_header",
    ],
)
def test_invalid_header_gives_500(start_server, case):
    s = serve(start_server, "bad_header_app")
    r = s.request("GET", "/", query="case=" + case)
    assert r.protocol_status == 0
    assert r.status == 500, (r.status, r.stdout[:500])
    assert b"accepted" not in r.body
    assert b"Injected" not in r.stdout  # no header injection into the CGI block
    assert r.header("Injected") is None
    stderr = r.stderr.decode("utf-8", "replace")
    assert "Traceback" in stderr, stderr


def test_bytes_status_is_accepted_like_flup(start_server):
    s = serve(start_server, "bytes_status_app")
    r = s.request("GET", "/")
    assert (r.status, r.reason, r.body) == (203, "From Bytes", b"ok")


@pytest.mark.parametrize(
    "case",
    [
        "status_words",
        "status_two_digits",
        "status_no_space",
        "status_only_code",
        "status_letters",
        "status_four_digits",
    ],
)
def test_invalid_status_gives_500(start_server, case):
    s = serve(start_server, "bad_header_app")
    r = s.request("GET", "/", query="case=" + case)
    assert r.protocol_status == 0
    assert r.status == 500, (r.status, r.stdout[:500])
    assert b"accepted" not in r.body
    assert "Traceback" in r.stderr.decode("utf-8", "replace")


def test_invalid_headers_checked_under_python_O(start_server):
    """The checks are not asserts: they hold under ``python -O`` too (flup's vanish)."""
    s = start_server(f"{APPS}:bad_header_app", "--threads", "2", env={"PYTHONOPTIMIZE": "1"})
    for case in ("crlf_value", "status_words", "nonlatin1_value"):
        r = s.request("GET", "/", query="case=" + case)
        assert r.status == 500, (case, r.stdout[:300])
        assert b"Injected" not in r.stdout


def test_start_response_twice_without_exc_info(start_server):
    s = serve(start_server, "double_start_app")
    r = s.request("GET", "/")
    assert r.protocol_status == 0
    assert r.status == 500, (r.status, r.body[:300])
    assert b"second start_response was accepted" not in r.body
    assert "Traceback" in r.stderr.decode("utf-8", "replace")


def test_exc_info_before_headers_replaces_status(start_server):
    s = serve(start_server, "exc_info_before_app")
    r = ok(s.request("GET", "/"), 503)
    assert r.reason == "Service Unavailable"
    assert r.body == b"sorry"
    assert r.header("X-Second") == "1"
    assert r.header("X-First") is None  # the first headers are replaced, not merged
    assert r.app_status == 0


def test_exc_info_after_headers_reraises(start_server, tmp_path):
    marker = tmp_path / "marker"
    s = serve(start_server, "exc_info_after_app")
    r = s.request("GET", "/", headers={"X-Marker": str(marker)})
    assert r.protocol_status == 0
    assert r.status == 200  # the headers were out already
    assert r.body == b"first-part|"  # cut short, nothing after the re-raise
    assert r.app_status not in (None, 0)
    assert marker.read_text().split() == ["reraised", "closed"]
    assert "exc-info-after-headers" in r.stderr.decode("utf-8", "replace")


def test_str_chunks_latin1_encoded(start_server):
    s = serve(start_server, "str_chunks_app")
    r = ok(s.request("GET", "/"))
    assert r.body == "café naïve".encode("latin-1")


def test_bytes_like_chunks(start_server):
    s = serve(start_server, "byteslike_app")
    r = ok(s.request("GET", "/"))
    assert r.body == b"abcdefgh"


def test_keep_conn_sequence_of_responses(start_server):
    """Several different responses on one kept connection: each one framed on its own."""
    s = serve(start_server, "body_shape_app")
    with s.connect() as conn:
        for shape, body in [("one", b"hello"), ("two", b"hello"), ("empty_list", b""), ("one_str", b"caf\xe9")]:
            r = ok(conn.request("GET", "/", query="shape=" + shape, keep_conn=True))
            assert r.body == body
