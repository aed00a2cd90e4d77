"""The Python API: run(), WSGIServer flavours, bind targets, signals, CGI mode.

Servers run as real processes; requests go through the raw FastCGI client.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oxfcgi import _bind
from oxfcgi.client import Connection, request
from tests.support import addresses
from tests.support.imports import MODULES_APP, imported_needlessly
from tests.support.servers import free_port, wait_for_text

ROOT = Path(__file__).resolve().parent.parent

APP = textwrap.dedent(
    """
    import os, sys, signal, threading
    sys.path.insert(0, {root!r})
    import oxfcgi

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"pid=%d" % os.getpid()]
    """
)


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "server_script.py"
    path.write_text(APP.format(root=str(ROOT / "python")) + textwrap.dedent(body))
    return path


def spawn(path: Path, *, env=None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, **kw
    )


def wait_connectable(address: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}: {out.decode()} {err.decode()}")
        try:
            request(address, "GET", "/")
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{address} never answered")


# --- bind forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), addresses.FORMS + addresses.SERVER_ONLY)
def test_bind_forms(given, expected):
    assert _bind.parse_bind(given) == expected


@pytest.mark.parametrize("bad", addresses.BAD)
def test_bad_bind_forms_are_value_errors(bad):
    with pytest.raises(ValueError):
        _bind.parse_bind(bad)


def test_bind_wrong_type_is_type_error():
    with pytest.raises(TypeError):
        _bind.parse_bind(["127.0.0.1", 9000])


# --- run() contract --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum, expected", [(signal.SIGHUP, "True"), (signal.SIGTERM, "False"), (signal.SIGINT, "False")]
)
def test_run_return_value_follows_flup(tmp_path, signum, expected):
    sock = tmp_path / "s.sock"
    proc = spawn(
        script(
            tmp_path,
            f"""
        result = oxfcgi.run(app, bind={str(sock)!r})
        print("RESULT", result, flush=True)
        print("SIGINT handler restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """,
        )
    )
    wait_connectable(f"unix:{sock}", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert f"RESULT {expected}" in out.decode(), out.decode() + err.decode()
    assert "SIGINT handler restored: True" in out.decode()
    assert not sock.exists(), "the socket file is removed on exit"


def test_run_from_a_non_main_thread(tmp_path):
    sock = tmp_path / "s.sock"
    proc = spawn(
        script(
            tmp_path,
            f"""
        results = []
        t = threading.Thread(target=lambda: results.append(oxfcgi.run(app, bind={str(sock)!r})))
        t.start()
        t.join()
        print("RESULT", results, flush=True)
    """,
        )
    )
    wait_connectable(f"unix:{sock}", proc)
    assert request(f"unix:{sock}", "GET", "/").status == 200
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert "RESULT [False]" in out.decode(), err.decode()


def test_server_stop_from_another_thread(tmp_path):
    sock = tmp_path / "s.sock"
    proc = spawn(
        script(
            tmp_path,
            f"""
        server = oxfcgi.make_server(app, threads=1)
        threading.Timer(1.0, lambda: server.stop(reload=True)).start()
        print("RESULT", server.serve(oxfcgi.listen({str(sock)!r})), flush=True)
    """,
        )
    )
    out, err = proc.communicate(timeout=15)
    assert "RESULT True" in out.decode(), err.decode()


def test_unknown_run_option_is_type_error():
    import oxfcgi

    with pytest.raises(TypeError, match="unknown option"):
        oxfcgi.run(lambda e, s: [], bind="unix:/nonexistent/x.sock", bogus=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"threads": 0}, {"max_conns": 0}, {"graceful_timeout": -1.0}, {"script_name": "app"}, {"roles": ("bouncer",)}],
)
def test_bad_settings_are_value_errors(kwargs):
    import oxfcgi

    with pytest.raises(ValueError):
        oxfcgi.make_server(lambda e, s: [], **kwargs)


# --- flup flavours ---------------------------------------------------------------------------


def test_flup_module_paths_and_kwargs():
    from oxfcgi.server import fcgi, fcgi_fork, fcgi_single

    app = lambda e, s: []  # noqa: E731
    server = fcgi.WSGIServer(app, bindAddress="/tmp/x.sock", maxThreads=3, minSpare=1, maxSpare=2, jobClass=object)
    assert server.options["threads"] == 3
    assert fcgi.WSGIServer(app, bindAddress="/tmp/x.sock", multithreaded=False).options["threads"] == 1
    with pytest.raises(TypeError):
        fcgi.WSGIServer(app, bindAddress="/tmp/x.sock", maxChildren=4)
    with pytest.raises(TypeError):
        fcgi_fork.WSGIServer(app, bindAddress="/tmp/x.sock", maxThreads=4)
    with pytest.raises(ValueError):
        fcgi_fork.WSGIServer(app, bindAddress="/tmp/x.sock", minSpare=0)
    with pytest.raises(ValueError):
        fcgi_fork.WSGIServer(app, bindAddress="/tmp/x.sock", minSpare=3, maxSpare=2)
    with pytest.raises(ValueError):
        fcgi_fork.WSGIServer(app, bindAddress="/tmp/x.sock", sockTimeout=-1)
    forked = fcgi_fork.WSGIServer(
        app, bindAddress="/tmp/x.sock", multithreaded=True, maxSpare=3, maxChildren=4, maxRequests=100, timeout=3
    )
    assert forked.options["workers"] == 3 and forked.options["threads"] == 1
    assert forked.options["max_requests"] == 100 and forked.options["request_terminate_timeout"] == 3.0
    assert forked.options["multiprocess"] is True
    fcgi_single.WSGIServer(app, bindAddress="/tmp/x.sock", maxThreads=3, bogus=1)  # flup ignores these


def test_flup_style_script_serves(tmp_path):
    sock = tmp_path / "s.sock"
    proc = spawn(
        script(
            tmp_path,
            f"""
        from oxfcgi.server.fcgi import WSGIServer  # noqa
        print("RESULT", WSGIServer(app, bindAddress={str(sock)!r}, environ={{"X_EXTRA": "1"}}).run())
    """,
        )
    )
    wait_connectable(f"unix:{sock}", proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=10)
    assert "RESULT True" in out.decode(), err.decode()


# --- inherited sockets -------------------------------------------------------------------------


def test_fd0_listening_socket_is_used(tmp_path):
    """FCGI_LISTENSOCK_FILENO: mod_fcgid, lighttpd and spawn-fcgi pass the socket as fd 0."""
    path = str(tmp_path / "fd0.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    proc = spawn(script(tmp_path, "oxfcgi.run(app)\n"), stdin=listener.fileno())
    listener.close()
    wait_connectable(f"unix:{path}", proc)
    assert request(f"unix:{path}", "GET", "/").body.startswith(b"pid=")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_run_imports_only_what_serving_needs(tmp_path):
    """run(app) as mod_fcgid starts it (socket on fd 0): while it serves, none of the modules
    only the CLI, `oxfcgi check`, `oxfcgi config` or an ASGI app use has been imported."""
    path = str(tmp_path / "fd0.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    body = MODULES_APP + "oxfcgi.run(modules)\n"
    proc = spawn(script(tmp_path, body), stdin=listener.fileno())
    listener.close()
    try:
        wait_connectable(f"unix:{path}", proc)
        assert imported_needlessly(request(f"unix:{path}", "GET", "/").body) == set()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_systemd_listen_fds(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    path = script(tmp_path, "oxfcgi.run(app)\n")

    def as_fd3():
        os.dup2(listener.fileno(), 3)

    proc = subprocess.Popen(
        ["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "{sys.executable}" "{path}"'],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=as_fd3,
        close_fds=False,
    )
    listener.close()
    wait_connectable(f"127.0.0.1:{port}", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"tcp:127.0.0.1:{port}" in err.decode()


def test_not_started_by_a_manager_says_how_to_start(tmp_path):
    proc = spawn(script(tmp_path, "oxfcgi.run(app)\n"))
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 2
    text = err.decode()
    assert "is a FastCGI application" in text and "stdin is not a socket" in text
    assert "oxfcgi serve" in text and "--bind" in text and "oxfcgi request" in text
    assert "Traceback" not in text


def test_run_from_a_terminal_explains_and_exits_2(tmp_path):
    """./app.fcgi typed in a shell: no hang, no traceback, how to start and try it."""
    import pty

    path = script(tmp_path, "oxfcgi.run(app)\n")
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, str(path)])
    output = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert b"stdin is a terminal" in output and b"oxfcgi request" in output


def test_bad_bind_in_run_is_value_error():
    import oxfcgi

    with pytest.raises(ValueError):
        oxfcgi.run(lambda e, s: [], bind="9000")


# --- unix socket files -----------------------------------------------------------------------


def test_socket_mode_default_and_logged(start_server):
    srv = start_server("tests.apps.protocol_apps:app")
    assert stat.S_IMODE(os.stat(srv.socket_path).st_mode) == 0o660
    assert "socket mode 0660" in srv.log()


def test_socket_mode_setting(start_server):
    srv = start_server("tests.apps.protocol_apps:app", "--socket-mode", "600")
    assert stat.S_IMODE(os.stat(srv.socket_path).st_mode) == 0o600


def test_stale_socket_replaced_live_refused_file_kept(start_server, tmp_path):
    path = tmp_path / "x.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves a socket file nobody answers on
    srv = start_server("tests.apps.protocol_apps:app", "--bind", f"unix:{path}")
    assert "stale socket" in srv.log()
    # A second server on the same path must refuse: the first one answers there.
    second = start_server("tests.apps.protocol_apps:app", "--bind", f"unix:{path}", wait=False)
    assert second.wait(timeout=15) != 0
    assert "in use" in second.log()
    assert request(f"unix:{path}", "GET", "/hello").status == 200
    # A regular file is never replaced.
    regular = tmp_path / "regular"
    regular.write_text("precious")
    third = start_server("tests.apps.protocol_apps:app", "--bind", f"unix:{regular}", wait=False)
    assert third.wait(timeout=15) != 0
    assert "not a socket" in third.log()
    assert regular.read_text() == "precious"


# --- TCP and FCGI_WEB_SERVER_ADDRS ---------------------------------------------------------------


def test_web_server_addrs_filter(start_server):
    port = free_port()
    srv = start_server(
        "tests.apps.protocol_apps:app",
        "--bind",
        f"127.0.0.1:{port}",
        env={"FCGI_WEB_SERVER_ADDRS": "10.1.2.3, ::1"},
        wait=False,
    )
    deadline = time.monotonic() + 15
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            with Connection(f"127.0.0.1:{port}", timeout=5) as conn:
                conn.begin_request(1)
                refused = conn.read_record() is None
        except OSError:
            time.sleep(0.1)
            refused = "FCGI_WEB_SERVER_ADDRS" in srv.log()
    assert refused
    # The refusal is logged by the engine's log thread, a moment after the close.
    assert "not in FCGI_WEB_SERVER_ADDRS" in wait_for_text(srv.log, "not in FCGI_WEB_SERVER_ADDRS")
    allowed = start_server(
        "tests.apps.protocol_apps:app", "--bind", f"127.0.0.1:{free_port()}", env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}
    )
    assert allowed.request("GET", "/hello").body == b"hello"


def test_ipv6_loopback(start_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv = start_server("tests.apps.protocol_apps:app", "--bind", f"[::1]:{free_port()}")
    assert srv.request("GET", "/hello").body == b"hello"


# --- CGI mode -------------------------------------------------------------------------------------


def run_cgi(path, body: bytes, **variables: str) -> subprocess.CompletedProcess:
    """Run ``path`` as a CGI request (``FCGI_FORCE_CGI=Y``) with ``body`` on stdin."""
    env = {
        "FCGI_FORCE_CGI": "Y",
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        **variables,
    }
    return subprocess.run(
        [sys.executable, str(path)], input=body, capture_output=True, env={**os.environ, **env}, timeout=15
    )


def test_force_cgi_serves_one_request(tmp_path):
    path = script(
        tmp_path,
        """
        def echo(environ, start_response):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            start_response("201 Made", [("Content-Type", "text/plain")])
            return [b"got " + body]
        oxfcgi.run(echo)
    """,
    )
    proc = run_cgi(path, b"hello", PATH_INFO="/")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"Status: 201 Made\r\n")
    assert proc.stdout.endswith(b"got hello")


def test_force_cgi_serves_one_asgi_request(tmp_path):
    """An ASGI app in CGI mode: the body through receive(), the response through send(),
    lifespan state in the scope; an exception before the start message gives a 500."""
    path = script(
        tmp_path,
        """
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                await receive()
                scope["state"]["greeting"] = "got"
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            if scope["path"].endswith("/boom"):
                raise RuntimeError("deliberate ASGI failure")
            body, more = b"", True
            while more:
                event = await receive()
                body, more = body + event["body"], event["more_body"]
            head = [(b"content-type", b"text/plain"), (b"x-path", scope["path"].encode())]
            await send({"type": "http.response.start", "status": 201, "headers": head})
            await send({"type": "http.response.body", "body": scope["state"]["greeting"].encode() + b" " + body})
        oxfcgi.run(app)
    """,
    )
    proc = run_cgi(path, b"hello", SCRIPT_NAME="/s.cgi", PATH_INFO="/p")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"Status: 201 Created\r\n"), proc.stdout
    assert b"x-path: /s.cgi/p\r\n" in proc.stdout
    assert proc.stdout.endswith(b"\r\n\r\ngot hello")
    proc = run_cgi(path, b"", SCRIPT_NAME="/s.cgi", PATH_INFO="/boom")
    assert proc.stdout.startswith(b"Status: 500 Internal Server Error\r\n"), proc.stdout
    assert b"deliberate ASGI failure" in proc.stderr and b"Traceback" in proc.stderr


# --- the typed stub -------------------------------------------------------------------------------


def test_stub_matches_the_built_module():
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "oxfcgi._oxfcgi"], capture_output=True, text=True, cwd="/", timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
