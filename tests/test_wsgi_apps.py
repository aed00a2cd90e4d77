"""Whole applications: wsgiref.validate-wrapped apps, wsgi.file_wrapper, and Django.

A validated app raises AssertionError (→ a 500 and a traceback) on any PEP 3333
violation the validator can see, and prints a complaint if the server never calls
close() on the iterable; so each must give 200 with no AssertionError anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time

import pytest

from tests.support.servers import wait_for

IN_CI = os.environ.get("CI") == "true"

APPS = "tests.apps.wsgi_apps"


# --- validated apps --------------------------------------------------------------------------------


@pytest.fixture
def validated(start_server):
    return start_server(f"{APPS}:validated_app", "--threads", "2")


def check_validated(server, resp):
    stderr = resp.stderr.decode("utf-8", "replace")
    assert resp.protocol_status == 0
    assert resp.status == 200, (resp.status, resp.body[:500], stderr)
    assert "AssertionError" not in stderr, stderr
    assert "garbage collected without being closed" not in stderr
    time.sleep(0.2)  # let an "iterator garbage collected" complaint reach the log
    log = server.log()
    assert "AssertionError" not in log, log
    assert "garbage collected without being closed" not in log, log
    assert "Traceback" not in log, log
    return resp


def test_validated_simple(validated):
    r = check_validated(validated, validated.request("GET", "/some/path", headers={"X-App": "simple"}))
    assert r.body == b"simple:/some/path"


def test_validated_streaming(validated):
    r = check_validated(validated, validated.request("GET", "/", headers={"X-App": "streaming"}))
    assert r.body == b"".join(b"chunk%d\n" % i for i in range(5))


def test_validated_post_echo(validated):
    body = os.urandom(100_000)
    r = check_validated(
        validated,
        validated.request(
            "POST", "/", headers={"X-App": "echo", "Content-Type": "application/octet-stream"}, body=body
        ),
    )
    assert r.body == body
    assert r.header("Content-Length") == str(len(body))


def test_validated_echo_many_small_records(validated):
    body = b"0123456789" * 500
    with validated.connect() as conn:
        from oxfcgi.client import cgi_params

        conn.begin_request(1)
        conn.send_params(1, cgi_params("POST", "/", headers={"X-App": "echo"}, body_length=len(body)))
        conn.send_stdin(1, body, chunk=7)
        r = check_validated(validated, conn.read_response(1))
    assert r.body == body


def test_validated_readline(validated):
    body = b"abc\ndefgh\nij\nkl"
    r = check_validated(validated, validated.request("POST", "/", headers={"X-App": "readline"}, body=body))
    # readline(), readline(3), readline(), readlines(1), then iteration
    assert r.body == b"abc\n|def|gh\n|ij\n|kl"


def test_validated_write(validated):
    r = check_validated(validated, validated.request("GET", "/", headers={"X-App": "write"}))
    assert r.body == b"from-write|again|from-iterable"


def test_validated_errors(validated):
    r = check_validated(validated, validated.request("GET", "/", headers={"X-App": "errors"}))
    stderr = r.stderr.decode()
    assert "validated-errors-line\n" in stderr and "validated-a\n" in stderr and "validated-b\n" in stderr


def test_validated_file_wrapper(validated, tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(1_000_003)
    path.write_bytes(data)
    r = check_validated(
        validated, validated.request("GET", "/", headers={"X-App": "file_wrapper", "X-File": str(path)})
    )
    assert r.body == data


def test_validated_many_in_a_row_on_one_connection(validated):
    with validated.connect() as conn:
        for name in ("simple", "streaming", "write", "errors", "simple"):
            r = conn.request("GET", "/x", headers={"X-App": name}, keep_conn=True)
            assert r.status == 200, (name, r.stderr)
            assert b"AssertionError" not in r.stderr
    time.sleep(0.2)
    assert "AssertionError" not in validated.log()


# --- wsgi.file_wrapper ----------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


@pytest.mark.parametrize(
    "kind, blksize",
    [("real", 65536), ("real", 8192), ("real", 1000000), ("open", 65536), ("nofileno", 65536), ("nofileno", 4096)],
)
def test_file_wrapper_serves_file_intact(start_server, big_file, tmp_path, kind, blksize):
    marker = tmp_path / "closed"
    s = start_server(f"{APPS}:file_wrapper_app", "--threads", "2")
    r = s.request(
        "GET",
        "/",
        query=f"kind={kind}&blksize={blksize}",
        headers={"X-File": str(big_file), "X-Marker": str(marker)},
        timeout=60,
    )
    assert r.protocol_status == 0 and r.app_status == 0
    assert r.status == 200, (r.status, r.stderr)
    data = big_file.read_bytes()
    assert len(r.body) == len(data)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(data).digest()
    assert all(len(rec.content) <= 65535 for rec in r.records)
    if kind != "open":
        assert wait_for(lambda: marker.exists() and marker.read_text()) == "file closed\n"


def test_file_wrapper_on_kept_connection(start_server, big_file, tmp_path):
    s = start_server(f"{APPS}:file_wrapper_app", "--threads", "2")
    data = big_file.read_bytes()
    with s.connect(timeout=60) as conn:
        for i in range(3):
            marker = tmp_path / f"closed{i}"
            r = conn.request("GET", "/", headers={"X-File": str(big_file), "X-Marker": str(marker)}, keep_conn=True)
            assert r.status == 200 and r.body == data
            assert wait_for(marker.exists)


# --- Django ------------------------------------------------------------------------------------------

HAVE_DJANGO = importlib.util.find_spec("django") is not None
needs_django = pytest.mark.skipif(not HAVE_DJANGO and not IN_CI, reason="django is not installed")


@pytest.fixture
def django_server(start_server):
    return start_server("tests.apps.django_app:application", "--threads", "2")


def dj_params(**extra):
    base = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.org",
        "REMOTE_ADDR": "127.0.0.1",
    }
    base.update(extra)
    return list(base.items())


def dj_request(server, pairs):
    with server.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, pairs)
        conn.send_stdin(1)
        r = conn.read_response(1)
    assert r.protocol_status == 0
    assert r.status == 200, (r.status, r.body[:1000], r.stderr[-3000:])
    return json.loads(r.body)


@needs_django
def test_django_under_script_name(django_server):
    d = dj_request(
        django_server,
        dj_params(
            SCRIPT_NAME="/dj",
            PATH_INFO="/hello/world",
            QUERY_STRING="a=1&a=2&b=x",
            REQUEST_URI="/dj/hello/world?a=1&a=2&b=x",
        ),
    )
    assert d["path"] == "/dj/hello/world"
    assert d["path_info"] == "/hello/world"
    assert d["script_name"] == "/dj"
    assert d["name"] == "world"
    assert d["GET"] == {"a": ["1", "2"], "b": ["x"]}
    assert d["link"] == "/dj/hello/other"
    assert d["absolute"] == "http://example.org/dj/hello/abs"
    assert d["is_secure"] is False


@needs_django
def test_django_path_info_derived_from_request_uri(django_server):
    """nginx style: SCRIPT_NAME and REQUEST_URI but no PATH_INFO; HTTPS=on."""
    d = dj_request(
        django_server,
        dj_params(SCRIPT_NAME="/dj", REQUEST_URI="/dj/hello/caf%C3%A9?q=%C3%A9t%C3%A9", HTTPS="on", SERVER_PORT="443"),
    )
    assert d["path_info"] == "/hello/caf\u00e9"  # Django decodes the latin-1 environ string as UTF-8
    assert d["path"] == "/dj/hello/caf\u00e9"
    assert d["name"] == "caf\u00e9"
    assert d["GET"] == {"q": ["\u00e9t\u00e9"]}
    assert d["link"] == "/dj/hello/other"
    assert d["absolute"] == "https://example.org/dj/hello/abs"
    assert d["is_secure"] is True


@needs_django
def test_django_post_form(django_server):
    body = b"x=1&y=%C3%A9"
    r = django_server.request("POST", "/echo", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, (r.status, r.body[:500], r.stderr[-2000:])
    d = json.loads(r.body)
    assert d["method"] == "POST"
    assert d["body"] == body.decode("latin-1")
    assert d["POST"] == {"x": "1", "y": "\u00e9"}


@needs_django
def test_django_404_is_a_404(django_server):
    r = django_server.request("GET", "/nope")
    assert r.protocol_status == 0
    assert r.status == 404
