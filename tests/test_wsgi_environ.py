"""PEP 3333 environ built by the engine from FastCGI params (flup.md §2 is the reference).

Every test runs ``tests/apps/wsgi_apps.py:environ_app`` in a real ``oxfcgi serve``
process and looks at the JSON report of what the app saw.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.servers import wait_for_text

APP = "tests.apps.wsgi_apps:environ_app"

# The params a web server sends for "GET /": a complete, ordinary request.
BASE = [
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("REQUEST_METHOD", "GET"),
    ("SCRIPT_NAME", ""),
    ("PATH_INFO", "/"),
    ("QUERY_STRING", ""),
    ("REQUEST_URI", "/"),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "80"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REMOTE_ADDR", "127.0.0.1"),
]


def params(*, drop=(), **set_):
    """BASE without the names in ``drop``, with ``set_`` values replacing/adding names."""
    out = [(k, v) for k, v in BASE if k not in drop and k not in set_]
    out += list(set_.items())
    return out


def raw_request(server, pairs, body=b"", *, stdin_chunk=65535, request_id=1):
    """Send exactly ``pairs`` as PARAMS (duplicates and bytes allowed) and ``body`` as STDIN."""
    with server.connect() as conn:
        conn.begin_request(request_id)
        conn.send_params(request_id, pairs)
        conn.send_stdin(request_id, body, chunk=stdin_chunk)
        return conn.read_response(request_id)


def report(resp):
    assert resp.protocol_status == 0, resp
    assert resp.status == 200, (resp.status, resp.body[:2000], resp.stderr)
    return json.loads(resp.body)


@pytest.fixture
def env_server(start_server):
    return start_server(APP, "--threads", "2")


def test_basic_environ_values(env_server):
    r = report(env_server.request("GET", "/hello/world", query="a=1&b=2", headers={"X-Custom": "v"}))
    env, wsgi = r["environ"], r["wsgi"]
    assert r["dict_type"] == "dict"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/hello/world"
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["SCRIPT_NAME"] == ""
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == "80"
    assert wsgi["version"] == [1, 0] and wsgi["version_type"] == "tuple"
    assert wsgi["url_scheme"] == "http"
    assert wsgi["multiprocess"] is False
    assert wsgi["run_once"] is False
    assert wsgi["input_terminated"] is True
    assert wsgi["has_errors"] and wsgi["has_input"]
    assert wsgi["has_file_wrapper"] and wsgi["file_wrapper_callable"]
    assert r["input_methods"] == ["__iter__", "read", "readline", "readlines"]
    assert r["errors_methods"] == ["flush", "write", "writelines"]
    # PEP 3333: every CGI key (no dot in the name) is a native str
    for key, typ in r["types"].items():
        if "." not in key:
            assert typ == "str", (key, typ)
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_params_are_latin1_str(env_server):
    """Bytes 0x80-0xFF in params reach the app as the same code points (PEP 3333)."""
    pairs = params(PATH_INFO=b"/caf\xe9", HTTP_X_BYTES=b"\xe9\xff\x80 end", HTTP_X_UTF8="é".encode(), HTTP_X_EMPTY="")
    pairs.append((b"HTTP_X_N\xe9ME", b"v"))
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_X_N\xe9ME"] == "v"
    assert env["PATH_INFO"] == "/caf\xe9"
    assert env["HTTP_X_BYTES"] == "\xe9\xff\x80 end"
    assert env["HTTP_X_UTF8"] == "\xc3\xa9"  # UTF-8 bytes, each as one latin-1 character


def test_values_that_repeat_and_values_that_change_at_one_position(start_server):
    """Each thread reuses the string it made for a param value while the next request sends
    the same bytes at the same position; whatever repeats, changes, comes back or changes every
    time (which refreshes the kept string after 1, 2, 4, … misses), every request sees exactly
    what it was sent. One thread, so that every request goes through the same cache."""
    server = start_server(APP, "--threads", "1")
    sent = ["a", "a", "b", "b", "a", "caf\xe9", "caf\xe9", "x" * 300, "x" * 300, ""]
    sent += [f"v{i}" for i in range(40)] + ["v39", "v39", "a", "a"]
    with server.connect() as conn:
        for value in sent:
            resp = conn.request("GET", "/", params=params(X_VAL=value, SERVER_NAME=f"host-{value[:4]}"), keep_conn=True)
            seen = report(resp)["environ"]
            assert (seen["X_VAL"], seen["SERVER_NAME"]) == (value, f"host-{value[:4]}")


def test_params_split_across_records_one_byte_each(env_server):
    """PARAMS is a stream: pairs split over records must not corrupt the environ (flup bug)."""
    pairs = params(HTTP_X_LONG="L" * 300, HTTP_X_SHORT="s")
    with env_server.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, pairs, split=1)
        conn.send_stdin(1)
        env = report(conn.read_response(1))["environ"]
    assert env["HTTP_X_LONG"] == "L" * 300
    assert env["HTTP_X_SHORT"] == "s"
    sent = {k for k, _ in pairs}
    junk = {k for k in env if "." not in k and k not in sent and k not in ("SERVER_SOFTWARE",)}
    assert not junk, junk


@pytest.mark.parametrize(
    "https, scheme",
    [("on", "https"), ("1", "https"), ("off", "http"), ("0", "http"), ("", "http"), (None, "http")],
)
def test_url_scheme_from_https_param(env_server, https, scheme):
    pairs = params() if https is None else params(HTTPS=https)
    r = report(raw_request(env_server, pairs))
    assert r["wsgi"]["url_scheme"] == scheme
    assert r["environ"]["wsgi.url_scheme"] == scheme


@pytest.mark.parametrize("threads, expected", [("1", False), ("2", True)])
def test_multithread_follows_threads(start_server, threads, expected):
    server = start_server(APP, "--threads", threads)
    r = report(server.request("GET", "/"))
    assert r["wsgi"]["multithread"] is expected
    assert r["wsgi"]["multiprocess"] is False


def test_duplicate_params_merged(env_server):
    pairs = params() + [
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_X_FOO", "x"),
        ("HTTP_COOKIE", "b=2"),
        ("HTTP_X_FOO", "y"),
    ]
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_FOO"] == "x, y"


def test_script_name_defaults_to_empty(env_server):
    env = report(raw_request(env_server, params(drop=("SCRIPT_NAME",))))["environ"]
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/"


@pytest.mark.parametrize("path_info", [None, ""])
def test_path_info_from_request_uri(env_server, path_info):
    drop = ("PATH_INFO", "QUERY_STRING") if path_info is None else ("QUERY_STRING",)
    extra = {} if path_info is None else {"PATH_INFO": path_info}
    pairs = params(drop=drop, REQUEST_URI="/some/path?k=v&x=1", **extra)
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "k=v&x=1"


def test_path_info_from_request_uri_strips_script_name(env_server):
    pairs = params(drop=("PATH_INFO",), SCRIPT_NAME="/app", REQUEST_URI="/app/sub/page?q=1")
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/sub/page"
    assert env["QUERY_STRING"] == "q=1"


def test_path_info_empty_at_the_mount_point(env_server):
    """nginx's prefix recipe at the prefix itself: PATH_INFO is sent, empty; kept as is."""
    pairs = params(drop=("QUERY_STRING",), SCRIPT_NAME="/app", PATH_INFO="", REQUEST_URI="/app")
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == ""
    assert env["QUERY_STRING"] == ""


def test_script_name_that_is_the_whole_path_is_repaired_and_warned_once(env_server):
    """nginx's default fastcgi_params / mod_proxy_fcgi: SCRIPT_NAME = whole path, no PATH_INFO."""
    pairs = params(drop=("PATH_INFO",), SCRIPT_NAME="/items/3", REQUEST_URI="/items/3?x=1")
    first = raw_request(env_server, pairs)
    env = report(first)["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/items/3", "x=1")
    # A configuration warning goes to the server's log, once, never to the request's FCGI_STDERR.
    assert "fastcgi_param SCRIPT_NAME" in wait_for_text(env_server.log, "fastcgi_param SCRIPT_NAME")
    assert not first.stderr
    second = raw_request(env_server, pairs)
    assert report(second)["environ"]["PATH_INFO"] == "/items/3"
    time.sleep(0.2)
    assert env_server.log().count("fastcgi_param SCRIPT_NAME") == 1, "warned once per process, not per request"


@pytest.mark.parametrize(
    "script_name, uri",
    [("/app", "/application/x"), ("/app", "/apple"), ("/dj", "/other/place")],
)
def test_path_info_from_request_uri_script_name_not_a_path_prefix(env_server, script_name, uri):
    """PEP 3333: a non-empty PATH_INFO starts with '/'. SCRIPT_NAME '/app' is not a path
    prefix of '/application/x' (flup cut 4 characters and produced 'lication/x')."""
    pairs = params(drop=("PATH_INFO",), SCRIPT_NAME=script_name, REQUEST_URI=uri)
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["PATH_INFO"] == "" or env["PATH_INFO"].startswith("/"), env["PATH_INFO"]


@pytest.mark.parametrize(
    "uri, path_info",
    [
        ("/x%20y", "/x y"),
        ("/caf%C3%A9/%2541", "/caf\xc3\xa9/%41"),  # decoded once, bytes → latin-1 chars
        ("/plain", "/plain"),
    ],
)
def test_path_info_from_request_uri_is_percent_decoded(env_server, uri, path_info):
    pairs = params(drop=("PATH_INFO",), REQUEST_URI=uri)
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["PATH_INFO"] == path_info
    assert env["REQUEST_URI"] == uri  # the param itself is untouched


def test_given_path_info_and_query_are_kept(env_server):
    """The fix-ups apply only when PATH_INFO / QUERY_STRING are missing or empty."""
    pairs = params(PATH_INFO="/given", QUERY_STRING="given=1", REQUEST_URI="/other?other=1")
    env = report(raw_request(env_server, pairs))["environ"]
    assert env["PATH_INFO"] == "/given"
    assert env["QUERY_STRING"] == "given=1"


def test_no_request_uri_no_path_info(env_server):
    env = report(raw_request(env_server, params(drop=("PATH_INFO", "QUERY_STRING", "REQUEST_URI"))))["environ"]
    assert env["PATH_INFO"] == ""
    assert env["QUERY_STRING"] == ""


@pytest.mark.parametrize(
    "name, default",
    [
        ("REQUEST_METHOD", "GET"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.0"),
    ],
)
def test_missing_required_param_defaults_with_warning(env_server, name, default):
    pairs = params(
        drop=(name,), SERVER_NAME="example.org", SERVER_PORT="8080", SERVER_PROTOCOL="HTTP/1.1", REQUEST_METHOD="POST"
    )
    pairs = [(k, v) for k, v in pairs if k != name]
    resp = raw_request(env_server, pairs)
    env = report(resp)["environ"]
    assert env[name] == default
    assert not resp.stderr, "configuration warnings go to the server log"
    log = wait_for_text(env_server.log, f"missing FastCGI param {name}")
    assert f"missing FastCGI param {name} required by WSGI" in log
    # only the missing one is warned about
    for other in ("REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"):
        if other != name:
            assert f"missing FastCGI param {other}" not in log, log
            assert env[other] != ""


def test_complete_params_give_no_warning(env_server):
    resp = raw_request(env_server, params())
    report(resp)
    assert resp.stderr == b""


def test_all_defaults_at_once(env_server):
    pairs = [("PATH_INFO", "/")]
    resp = raw_request(env_server, pairs)
    env = report(resp)["environ"]
    assert (env["REQUEST_METHOD"], env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == (
        "GET",
        "localhost",
        "80",
        "HTTP/1.0",
    )
    log = wait_for_text(env_server.log, "missing FastCGI param SERVER_PROTOCOL")
    for name in ("REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"):
        assert f"missing FastCGI param {name}" in log


def test_content_length_and_type_are_not_http_prefixed(env_server):
    env = report(env_server.request("POST", "/", body=b"abc", headers={"Content-Type": "text/plain"}))["environ"]
    assert env["CONTENT_LENGTH"] == "3"
    assert env["CONTENT_TYPE"] == "text/plain"


def test_environ_is_fresh_per_request(env_server):
    """A key set by one request must not leak into the next one on a kept connection."""
    with env_server.connect() as conn:
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, params(HTTP_X_ONLY_FIRST="1", HTTPS="on"))
        conn.send_stdin(1)
        first = report(conn.read_response(1))
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, params())
        conn.send_stdin(1)
        second = report(conn.read_response(1))
    assert first["environ"]["HTTP_X_ONLY_FIRST"] == "1"
    assert "HTTP_X_ONLY_FIRST" not in second["environ"]
    assert first["wsgi"]["url_scheme"] == "https"
    assert second["wsgi"]["url_scheme"] == "http"


def test_large_param_value(env_server):
    big = "v" * 70000  # a 4-byte length, and more than one PARAMS record
    env = report(raw_request(env_server, params(HTTP_X_BIG=big)))["environ"]
    assert env["HTTP_X_BIG"] == big


def test_server_keeps_serving_after_many_requests(env_server):
    t0 = time.monotonic()
    for i in range(20):
        env = report(env_server.request("GET", f"/n{i}"))["environ"]
        assert env["PATH_INFO"] == f"/n{i}"
    assert time.monotonic() - t0 < 20
