"""Debian's real lighttpd starting oxfcgi itself (mod_fastcgi ``bin-path``).

The lighttpd configuration is what ``oxfcgi config lighttpd`` prints (included unchanged
into a test-private lighttpd.conf, tests/support/lighttpd.py): lighttpd creates the sockets, starts
``max-procs`` = 2 oxfcgi processes per mount with the listening socket as fd 0, sends them
requests, and SIGTERMs them when it stops. Three mounts:

- ``/`` (root, ``fix-root-scriptname``) and ``/app``: the Flask app (tests/apps/flask_app.py);
- ``/probe``: the plain WSGI probe (tests/apps/spawn_app.py) that reports its process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.support.fixtures import need_binary
from tests.support.lighttpd import start_lighttpd
from tests.support.servers import ROOT, cmdline, kill_survivors, pid_alive

FLASK_APP = "tests.apps.flask_app:app"
PROBE_APP = "tests.apps.spawn_app:app"


def generated(target: str, **kw) -> str:
    """The configuration ``oxfcgi config TARGET`` prints for these options (the CLI itself)."""
    args = [sys.executable, "-m", "oxfcgi", "config", target, "--python", sys.executable, "--workdir", str(ROOT)]
    for key, value in kw.items():
        args += [f"--{key}", value]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"oxfcgi config {target} failed ({out.returncode}):\n{out.stderr}"
    return out.stdout


@pytest.fixture
def site(tmp_path):
    """lighttpd with the generated configs for /, /app (Flask) and /probe (probe app)."""
    binary = need_binary("lighttpd")
    snippets = [
        # The root mount first: the /app and /probe conditions must still win for their URLs.
        generated("lighttpd", app=FLASK_APP, socket=str(tmp_path / "root.sock"), prefix="/"),
        generated("lighttpd", app=FLASK_APP, socket=str(tmp_path / "app.sock"), prefix="/app"),
        generated("lighttpd", app=PROBE_APP, socket=str(tmp_path / "probe.sock"), prefix="/probe"),
    ]
    server = start_lighttpd(tmp_path / "lighttpd", snippets, binary=binary)
    spawned: set[int] = set()
    try:
        wait_backends(server, 6)
        spawned.update(server.backend_pids())
        yield server
    finally:
        spawned.update(server.backend_pids())
        server.stop()
        kill_survivors(spawned)  # only processes this lighttpd started


def wait_backends(server, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = server.backend_pids()
        if len(pids) >= count or time.monotonic() >= deadline:
            assert len(pids) == count, (
                f"lighttpd should have started {count} oxfcgi processes, found {pids}\n{server.logs()}"
            )
            return pids
        time.sleep(0.05)


def expect_json(result, status=200, server=None):
    assert result.status == status, (
        f"HTTP {result.status} {result.reason}, expected {status}; body: {result.body[:2000]!r}"
        + (f"\n{server.logs()}" if server else "")
    )
    return json.loads(result.body)


# ---------------------------------------------------------------------------------
# Routing: SCRIPT_NAME / PATH_INFO / url_for at a prefix and at the root


def test_prefix_mount_routes_and_url_for(site):
    index = expect_json(site.get("/app/"), server=site)
    assert index["page"] == "index"
    assert index["script_name"] == "/app"
    assert index["path_info"] == "/"
    assert index["item_url"] == "/app/items/3"
    assert index["item_external"] == f"http://127.0.0.1:{site.port}/app/items/3"

    item = expect_json(site.get("/app/items/42"), server=site)
    assert item == {
        "page": "item",
        "item_id": 42,
        "self_url": "/app/items/42",
        "index_url": "/app/",
        "script_name": "/app",
        "path_info": "/items/42",
    }

    query = expect_json(site.get("/app/query?a=1&b=two&a=3"), server=site)
    assert query["args"] == {"a": ["1", "3"], "b": ["two"]}
    assert query["query_string"] == "a=1&b=two&a=3"


def test_exact_prefix_url_redirects_to_the_app_index(site):
    """``/app`` itself reaches the app with SCRIPT_NAME=/app, PATH_INFO="" (Flask
    redirects to /app/), not the root app and not the app as if mounted at /."""
    result = site.get("/app")
    assert result.status in (301, 308), (result.status, result.body[:500], site.logs())
    assert result.header("Location").endswith("/app/")


def test_root_mount(site):
    item = expect_json(site.get("/items/5"), server=site)
    assert item["script_name"] == ""
    assert item["path_info"] == "/items/5"
    assert item["self_url"] == "/items/5"
    assert item["index_url"] == "/"
    env = expect_json(site.get("/env?x=1"), server=site)
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{site.port}"
    # A URL that only starts like a mount prefix belongs to the root app.
    other = site.get("/apple")
    assert other.status == 404
    assert b"requested URL was not found on the server" in other.body, other.body[:500]


def test_form_post_and_authorization(site):
    form = expect_json(
        site.request(
            "POST",
            "/app/form",
            body=b"name=Ada&lang=py&lang=rs",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        server=site,
    )
    assert form["form"] == {"name": ["Ada"], "lang": ["py", "rs"]}
    assert form["content_length"] == len(b"name=Ada&lang=py&lang=rs")

    probe = expect_json(site.get("/probe/who?q=1", headers={"Authorization": "Bearer s3cret"}), server=site)
    assert probe["environ"]["HTTP_AUTHORIZATION"] == "Bearer s3cret"
    assert probe["environ"]["SCRIPT_NAME"] == "/probe"
    assert probe["environ"]["PATH_INFO"] == "/who"
    body = os.urandom(200_000)
    echoed = expect_json(
        site.request("POST", "/probe/body", body=body, headers={"Content-Type": "application/octet-stream"}),
        server=site,
    )
    import hashlib

    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------------------------
# Processes: who started what, with which fds


def test_bin_path_processes_are_oxfcgi_with_socket_off_fd0(site):
    pids = site.backend_pids()
    commands = {pid: cmdline(pid) for pid in pids}
    for pid, argv in commands.items():
        assert argv[:4] == [sys.executable, "-m", "oxfcgi", "serve"], (pid, argv)
    assert sum(1 for argv in commands.values() if FLASK_APP in argv) == 4
    assert sum(1 for argv in commands.values() if PROBE_APP in argv) == 2

    probe = expect_json(site.get("/probe/"), server=site)
    assert probe["pid"] in pids
    assert probe["ppid"] == site.proc.pid
    # lighttpd sets this on every bin-path backend; oxfcgi must not prefork because of it.
    assert probe["process_env"]["PHP_FCGI_CHILDREN"] == "1"
    # fd hygiene: the listening socket (lighttpd's fd 0) is moved off fd 0, which gets
    # /dev/null; fd 1 is lighttpd's /dev/null, fd 2 the breakage log.
    assert probe["fds"]["0"] == "/dev/null", probe["fds"]
    assert probe["fds"]["1"] == "/dev/null", probe["fds"]
    assert probe["fds"]["2"] == str(site.base / "breakage.log"), probe["fds"]


def test_max_procs_two_distinct_workers_serve(site):
    """Concurrent slow requests spread over both processes of the /app mount."""
    base = site.base.parent
    banners = serving_banners(site, 6)
    app_pids = {pid for sock, pid in banners.items() if sock.startswith(f"unix:{base}/app.sock-")}
    assert len(app_pids) == 2, app_pids
    seen: set[int] = set()
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(3):
                data = expect_json(site.get(f"/app/sleep?ms=300&n={n}&i={i}"))
                with lock:
                    seen.add(data["pid"])
        except Exception as e:
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen == app_pids, f"served by {seen}, lighttpd's /app processes are {app_pids}\n{site.logs()}"


def test_killed_backend_is_respawned_and_serving_continues(site):
    before = expect_json(site.get("/probe/"), server=site)["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 15
    pids = set()
    while time.monotonic() < deadline:
        result = site.get("/probe/")
        if result.status == 200:
            pids.add(result.json()["pid"])
            if pids - {before}:
                break
        time.sleep(0.2)
    assert pids - {before}, f"no request served by a new process after kill -9 of {before}\n{site.logs()}"


# ---------------------------------------------------------------------------------
# Logs: the app's stderr and exceptions reach lighttpd's logs


def test_app_exception_reaches_lighttpd_error_log(site):
    token = uuid.uuid4().hex
    result = site.get(f"/app/boom?token={token}")
    assert result.status == 500
    assert token.encode() not in result.body  # no traceback to the client
    # FCGI_STDERR -> server.errorlog, one "FastCGI-stderr:" entry per record.
    log = site.wait_for(site.error_log, f"deliberate failure {token}")
    assert "FastCGI-stderr:" in log, site.logs()
    assert f"deliberate failure {token}" in log, site.logs()
    assert "AppBoom" in log, site.logs()
    # The oxfcgi logger writes the traceback to stderr too: lighttpd's breakagelog.
    breakage = site.wait_for(site.breakage_log, f"deliberate failure {token}")
    assert f"deliberate failure {token}" in breakage, site.logs()
    # Still serving.
    assert expect_json(site.get("/app/items/1"), server=site)["item_id"] == 1


def test_wsgi_errors_and_print_to_stderr_reach_lighttpd_logs(site):
    token = uuid.uuid4().hex
    expect_json(site.get(f"/probe/stderr?token={token}"), server=site)
    log = site.wait_for(site.error_log, f"probe-stderr {token}")
    assert f"probe-stderr {token}" in log, site.logs()
    # print(file=sys.stderr) is the process's fd 2: lighttpd's breakagelog.
    breakage = site.wait_for(site.breakage_log, f"probe-print {token}")
    assert f"probe-print {token}" in breakage, site.logs()

    token = uuid.uuid4().hex
    result = site.get(f"/app/logged-error?token={token}")
    assert result.status == 500
    log = site.wait_for(site.error_log, f"handled failure {token}")
    assert f"logged via wsgi.errors {token}" in log, site.logs()


def serving_banners(site, wanted: int, timeout: float = 10.0) -> dict[str, int]:
    """``{"unix:/...sock-N": pid}`` from the startup lines in the breakage log."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for m in re.finditer(r"oxfcgi\[(\d+)\] INFO: .*?serving on (unix:\S+?):? ", site.breakage_log()):
            found[m.group(2)] = int(m.group(1))
        if len(found) >= wanted or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def test_startup_banner_in_breakage_log(site):
    """Each process logs which socket it serves (lighttpd's per-process `-N` sockets)."""
    base = site.base.parent
    wanted = {f"unix:{base}/{name}.sock-{n}" for name in ("app", "root", "probe") for n in (0, 1)}
    found = serving_banners(site, 6)
    assert set(found) == wanted, site.breakage_log()
    assert set(found.values()) == set(site.backend_pids())


# ---------------------------------------------------------------------------------
# Stopping


def test_sigterm_to_lighttpd_stops_every_oxfcgi_process(site):
    expect_json(site.get("/app/"), server=site)
    pids = site.backend_pids()
    assert len(pids) == 6
    started = time.monotonic()
    site.proc.send_signal(signal.SIGTERM)
    site.proc.wait(timeout=15)
    deadline = started + 5.0
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    alive = [p for p in pids if pid_alive(p)]
    assert not alive, (
        f"still running {time.monotonic() - started:.1f} s after SIGTERM to lighttpd: {alive}\n{site.logs()}"
    )


# ---------------------------------------------------------------------------------
# The commented variant: lighttpd connecting to an oxfcgi started on its own


def uncomment_variant(text: str) -> str:
    """The commented-out standalone block of a generated lighttpd config, uncommented."""
    lines = text[text.index("# Variant") :].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(("# $HTTP", "# fastcgi.server")))
    return 'server.modules += ( "mod_fastcgi" )\n' + "\n".join(ln[2:] for ln in lines[start:] if ln.startswith("# "))


def test_standalone_variant_connects_to_a_running_oxfcgi(tmp_path, start_server):
    binary = need_binary("lighttpd")
    server_app = start_server(FLASK_APP)
    server_root = start_server(PROBE_APP)
    snippets = [
        uncomment_variant(generated("lighttpd", app=PROBE_APP, socket=server_root.socket_path, prefix="/")),
        uncomment_variant(generated("lighttpd", app=FLASK_APP, socket=server_app.socket_path, prefix="/app")),
    ]
    for text in snippets:
        assert "bin-path" not in text
    site = start_lighttpd(tmp_path / "lighttpd", snippets, binary=binary)
    try:
        assert site.backend_pids() == []  # lighttpd started nothing
        item = expect_json(site.get("/app/items/12"), server=site)
        assert item["self_url"] == "/app/items/12" and item["script_name"] == "/app"
        assert item["path_info"] == "/items/12"
        assert site.get("/app").header("Location").endswith("/app/")
        probe = expect_json(site.get("/elsewhere/x", headers={"Authorization": "Basic YTpi"}), server=site)
        assert probe["pid"] == server_root.proc.pid
        assert probe["environ"]["SCRIPT_NAME"] == "" and probe["environ"]["PATH_INFO"] == "/elsewhere/x"
        assert probe["environ"]["HTTP_AUTHORIZATION"] == "Basic YTpi"
    finally:
        site.stop()


# ---------------------------------------------------------------------------------
# Real uploads, and touch-to-reload


def test_a_20_mb_upload_through_the_generated_config(site):
    import hashlib

    body = os.urandom(20 << 20)
    r = site.request("POST", "/app/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, (r, site.logs()[-2000:])
    assert json.loads(r.body)["sha256"] == hashlib.sha256(body).hexdigest()


def test_touch_to_reload_under_lighttpd(tmp_path):
    """reload_on_change=script: touch the .fcgi and the next requests get the new code
    from fresh processes lighttpd starts, with no error reply."""
    binary = need_binary("lighttpd")
    marker = tmp_path / "version.txt"
    marker.write_text("one")
    script = tmp_path / "versioned.fcgi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'python')!r})\n"
        "import oxfcgi\n"
        f"VERSION = open({str(marker)!r}).read()\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [f'{VERSION} {os.getpid()}'.encode()]\n"
        "oxfcgi.run(app, reload_on_change=['script'])\n"
    )
    os.chmod(script, 0o755)
    snippet = generated("lighttpd", app=str(script), socket=str(tmp_path / "v.sock"), prefix="/v")
    server = start_lighttpd(tmp_path / "lighttpd", [snippet], binary=binary)
    spawned: set[int] = set()
    try:
        first = server.get("/v/")
        assert first.status == 200 and first.body.startswith(b"one "), (first, server.logs())
        spawned.update(server.backend_pids())
        marker.write_text("two")
        os.utime(script)
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            r = server.get("/v/")
            assert r.status == 200, (r, server.logs()[-3000:])  # never an error reply
            seen.append(r.body)
            spawned.update(server.backend_pids())
            if r.body.startswith(b"two "):
                break
            time.sleep(0.2)
        assert seen[-1].startswith(b"two "), (seen[-5:], server.logs()[-3000:])
    finally:
        spawned.update(server.backend_pids())
        server.stop()
        kill_survivors(spawned)


def test_fastapi_under_bin_path(tmp_path):
    """An ASGI app (FastAPI) spawned by lighttpd's bin-path from the generated config: the
    interface is detected, the socket on fd 0 is served by the event loop."""
    binary = need_binary("lighttpd")
    snippet = generated("lighttpd", app="tests.apps.fastapi_app:app", socket=str(tmp_path / "fa.sock"), prefix="/fapi")
    server = start_lighttpd(tmp_path / "lighttpd", [snippet], binary=binary)
    spawned: set[int] = set()
    try:
        wait_backends(server, 2)
        spawned.update(server.backend_pids())
        item = expect_json(server.get("/fapi/items/5?q=x", headers={"X-Client": "lighty"}), server=server)
        assert item == {"item_id": 5, "q": "x", "who": "lighty"}
        where = expect_json(server.get("/fapi/where"), server=server)
        assert where["root_path"] == "/fapi"
        body = json.dumps({"name": "w", "price": 1.5}).encode()
        created = server.request("POST", "/fapi/items", body=body, headers={"Content-Type": "application/json"})
        assert expect_json(created, server=server)["total"] == 3.0
        assert server.get("/fapi/items/zz").status == 422
    finally:
        spawned.update(server.backend_pids())
        server.stop()
        kill_survivors(spawned)
