"""Real Apache httpd 2.4 (Debian's apache2) in front of oxfcgi, with the configurations
``oxfcgi config apache-fcgid`` / ``apache-proxy`` generate, embedded as they are.

- mod_fcgid running a ``.fcgi`` (``AddHandler fcgid-script``) and a ``module:app``
  launcher (``FcgidWrapper``): Flask routes, url_for under the prefix, query
  strings, form POSTs, cookies, Authorization, FCGI_STDERR in the error log, the
  listening socket inherited on fd 0, and the app processes exiting on their own
  SIGTERM when httpd stops.
- mod_proxy_fcgi with ``enablereuse=on`` to a standalone ``oxfcgi serve --threads 2``:
  16 keep-alive clients x 10 requests, no 5xx and no starvation.
- mod_cgid running a ``.cgi`` that calls ``oxfcgi.run(app, force_cgi=True)`` (or
  with ``FCGI_FORCE_CGI=Y``).

Apache runs the apps as www-data, with Debian's /usr/bin/python3, from the
world-readable site directory that tests/support/apache.py prepares (oxfcgi copied fresh
from python/oxfcgi, Flask installed with pip --target). Without apache2 +
libapache2-mod-fcgid installed these tests are skipped, or fail when CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from oxfcgi.config import ConfigOptions, generate
from oxfcgi.config import apache as apache_config
from tests.support.fixtures import need_binary

BASIC_AUTH = "Basic YWxhZGRpbjpvcGVuc2VzYW1l"  # aladdin:opensesame


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apache_binary() -> str:
    binary = need_binary("apache2")
    if not os.path.exists("/usr/lib/apache2/modules/mod_fcgid.so"):
        message = "mod_fcgid is not installed (Debian package libapache2-mod-fcgid)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("the Apache tests start httpd as root with User www-data")
    return binary


@pytest.fixture(scope="session")
def apache_site():
    """The world-readable site (tests/support/apache.py make_site), rebuilt every session so the
    freshly built engine is the one that runs."""
    from tests.support.apache import check_site, make_site

    site = make_site()
    try:
        check_site(site)
        yield site
    finally:
        shutil.rmtree(site.base, ignore_errors=True)


@pytest.fixture
def apache(apache_binary, apache_site):
    """Factory: ``apache(config_text)`` starts a private httpd with that configuration."""
    from tests.support.apache import start_apache

    instances = []

    def start(body: str, **kwargs):
        root = apache_site.base / f"httpd-{uuid.uuid4().hex[:8]}"
        instance = start_apache(root, body, binary=apache_binary, **kwargs)
        instances.append(instance)
        return instance

    yield start
    for instance in instances:
        instance.stop()


def write_fcgi(site, directory: str, name: str = "hello.fcgi", extra: str = "") -> Path:
    """A classic hand-written ``.fcgi``: Debian's python, explicit sys.path, run(app)."""
    return site.write(
        f"{directory}/{name}",
        (
            f"#!{site.python}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(site.site)!r})\n"
            "from apache_app import application\n"
            "from oxfcgi import run\n"
            f"{extra}"
            "run(application)\n"
        ),
        0o755,
    )


def fcgid_config(site, app: str, prefix: str, **kw) -> str:
    return generate(ConfigOptions(target="apache-fcgid", app=app, prefix=prefix, python=site.python, **kw))


def check_flask_at_prefix(server, prefix: str) -> None:
    """Routes, url_for, query string, form POST and cookies through ``server`` at ``prefix``."""
    r = server.get(f"{prefix}/")
    assert r.status == 200, (r, server.error_log()[-3000:])
    data = r.json()
    assert data["page"] == "index"
    assert data["script_name"] == prefix
    assert data["path_info"] == "/"
    assert data["item_url"] == f"{prefix}/items/3"
    assert data["item_external"] == f"http://127.0.0.1:{server.port}{prefix}/items/3"

    r = server.get(f"{prefix}/items/42")
    assert r.status == 200, r
    data = r.json()
    assert data == {
        "page": "item",
        "item_id": 42,
        "self_url": f"{prefix}/items/42",
        "index_url": f"{prefix}/",
        "script_name": prefix,
        "path_info": "/items/42",
    }

    r = server.get(f"{prefix}/query?a=1&b=two%20words&a=3&c=%C3%A9")
    assert r.status == 200, r
    assert r.json() == {
        "args": {"a": ["1", "3"], "b": ["two words"], "c": ["\u00e9"]},
        "query_string": "a=1&b=two%20words&a=3&c=%C3%A9",
    }

    body = b"name=Ada+Lovelace&lang=en&lang=fr&empty="
    r = server.request(
        "POST", f"{prefix}/form", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status == 200, r
    data = r.json()
    assert data["form"] == {"name": ["Ada Lovelace"], "lang": ["en", "fr"], "empty": [""]}
    assert data["content_length"] == len(body)

    r = server.get(f"{prefix}/cookies/set")
    assert r.status == 200, r
    set_cookies = r.headers.get_all("Set-Cookie")
    assert any(c.startswith('flavour="oatmeal raisin"') for c in set_cookies), set_cookies
    assert any(c.startswith("session_id=abc123") and "HttpOnly" in c for c in set_cookies), set_cookies
    r = server.get(f"{prefix}/cookies", headers={"Cookie": "flavour=chocolate; session_id=xyz"})
    assert r.status == 200, r
    assert r.json()["cookies"] == {"flavour": "chocolate", "session_id": "xyz"}

    r = server.get(f"{prefix}/no/such/route")
    assert r.status == 404, r
    assert b"Not Found" in r.body


def check_mount_point_itself(server, prefix: str) -> None:
    """GET PREFIX (no trailing slash) is the app's: its index, or its redirect to PREFIX/
    (Flask answers 308 for an empty PATH_INFO), never a 404 for the whole path."""
    r = server.get(prefix)
    if r.status in (301, 308):
        assert r.header("Location") in (f"{prefix}/", f"http://127.0.0.1:{server.port}{prefix}/"), r.headers
        r = server.get(r.header("Location").replace(f"http://127.0.0.1:{server.port}", ""))
    assert r.status == 200, (r, server.error_log()[-2000:])
    data = r.json()
    assert data["page"] == "index" and data["script_name"] == prefix
    assert data["item_url"] == f"{prefix}/items/3"


# ---------------------------------------------------------------------------------------
# The generated text (no Apache needed)
# ---------------------------------------------------------------------------------------


def test_generate_fcgid_for_a_fcgi_script():
    text = generate(
        ConfigOptions(target="apache-fcgid", app="/srv/site/app.fcgi", prefix="/blog", python="/usr/bin/python3")
    )
    assert 'Alias "/blog" "/srv/site/app.fcgi"' in text
    assert '<Directory "/srv/site">' in text
    assert "AddHandler fcgid-script .fcgi" in text
    assert "Options +ExecCGI" in text
    assert "FcgidPassHeader Authorization" in text
    # The body limit and the timeouts are set, not left commented out (the issue: a 3 MB
    # push got a 500 from mod_fcgid's 128 KiB default).
    assert "\nFcgidMaxRequestLen 104857600\n" in text
    assert "LimitRequestBody" not in text, "Apache's own 1 GiB default stays (see _fcgid_limits)"
    assert "\nFcgidIOTimeout 300\n" in text and "\nFcgidBusyTimeout 330\n" in text
    unlimited = generate(ConfigOptions(target="apache-fcgid", app="/srv/site/app.fcgi", max_body_size=0))
    assert "\nFcgidMaxRequestLen 2147483647\n" in unlimited and "\nLimitRequestBody 0\n" in unlimited
    assert "FcgidMaxRequestsPerProcess" in text
    assert "FcgidWrapper" not in text
    assert apache_config.LAUNCHER_BEGIN not in text  # the user's own script needs no launcher
    root = generate(ConfigOptions(target="apache-fcgid", app="/srv/site/app.fcgi", prefix="/"))
    assert 'Alias / "/srv/site/app.fcgi/"' in root


def test_generate_fcgid_launcher_for_module_app(tmp_path):
    options = ConfigOptions(
        target="apache-fcgid",
        app="mysite.wsgi:application",
        prefix="/app/",
        python="/opt/venv/bin/python",
        workdir="/srv/mysite",
    )
    text = generate(options)
    assert 'Alias "/app" "/srv/mysite/wsgi.fcgi"' in text
    assert 'FcgidWrapper "/opt/venv/bin/python /srv/mysite/wsgi.fcgi"' in text
    assert "SetHandler fcgid-script" in text
    # Every line of the output is Apache configuration or a comment: it can be included as is.
    for line in text.splitlines():
        stripped = line.strip()
        assert not stripped or stripped.startswith("#") or re.match(r"</?[A-Za-z]|[A-Z][A-Za-z]+ ", stripped), line
        assert not line.endswith("\\"), line  # a trailing backslash would continue a comment line
    launcher = apache_config.extract_launcher(text)
    assert launcher == apache_config.launcher_text(options)
    assert launcher.startswith("#!/opt/venv/bin/python\n")
    assert "APP_DIR = '/srv/mysite'" in launcher and "sys.path.insert(0, APP_DIR)" in launcher
    assert "from mysite.wsgi import application as app" in launcher
    assert "from oxfcgi import run" in launcher and "run(app)" in launcher
    compile(launcher, "wsgi.fcgi", "exec")
    assert apache_config.launcher_path(options) == "/srv/mysite/wsgi.fcgi"

    # The launcher really loads module:attr (here a factory) from the workdir and hands it to run().
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "web.py").write_text("def make():\n    return 'the app'\n")
    options = ConfigOptions(
        target="apache-fcgid", app="pkg.web:make()", python="/usr/bin/python3", workdir=str(tmp_path)
    )
    code = apache_config.launcher_text(options).replace("from oxfcgi import run", "run = RESULT.append")
    namespace = {"RESULT": [], "__name__": "__main__"}
    cwd = os.getcwd()
    try:
        exec(compile(code, "launcher", "exec"), namespace)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp_path))
        for name in ("pkg", "pkg.web"):
            sys.modules.pop(name, None)
    assert namespace["RESULT"] == ["the app"]


def test_generate_proxy_forms():
    unix = generate(ConfigOptions(target="apache-proxy", socket="/run/oxfcgi/app.sock", prefix="/app"))
    assert 'ProxyPass "/app" "unix:/run/oxfcgi/app.sock|fcgi://localhost/app" enablereuse=on timeout=300' in unix
    assert "    LimitRequestBody 104857600\n" in unix
    assert "--user www-data" in unix, "the serve line switches user, as the nginx one does"
    assert "ProxyFCGIBackendType GENERIC" in unix
    assert "CGIPassAuth On" in unix
    assert 'ProxyFCGISetEnvIf "true" SCRIPT_NAME "/app"' in unix
    assert "--bind unix:/run/oxfcgi/app.sock" in unix
    tcp = generate(ConfigOptions(target="apache-proxy", socket="127.0.0.1:9000", prefix="/"))
    assert 'ProxyPass "/" "fcgi://127.0.0.1:9000/" enablereuse=on' in tcp
    assert 'ProxyFCGISetEnvIf "true" SCRIPT_NAME ""' in tcp
    v6 = generate(ConfigOptions(target="apache-proxy", socket="[::1]:9000", prefix="/x"))
    assert '"fcgi://[::1]:9000/x"' in v6
    with pytest.raises(ValueError):
        generate(ConfigOptions(target="apache-proxy", socket="nonsense"))


def test_generate_fcgid_for_a_py_file():
    options = ConfigOptions(target="apache-fcgid", app="/srv/blog/wsgi.py", prefix="/blog", python="/usr/bin/python3")
    text = generate(options)
    assert 'Alias "/blog" "/srv/blog/wsgi.fcgi"' in text
    assert 'FcgidWrapper "/usr/bin/python3 /srv/blog/wsgi.fcgi"' in text
    launcher = apache_config.extract_launcher(text)
    assert "APP_DIR = '/srv/blog'" in launcher
    assert "importlib.import_module('wsgi')" in launcher  # `application`, else `app`, as oxfcgi serve does
    compile(launcher, "wsgi.fcgi", "exec")


# ---------------------------------------------------------------------------------------
# mod_fcgid
# ---------------------------------------------------------------------------------------


def test_fcgid_addhandler_serves_flask_under_prefix(apache, apache_site):
    from tests.support.apache import socket_inodes, unix_sockets
    from tests.support.servers import cmdline

    script = write_fcgi(apache_site, "fcgid-basic")
    server = apache(fcgid_config(apache_site, str(script), "/app"))
    check_flask_at_prefix(server, "/app")

    env = server.get("/app/_environ").json()
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/_environ"
    assert env["SCRIPT_FILENAME"] == str(script)
    assert env["SERVER_SOFTWARE"].startswith("Apache/2.4") and "mod_fcgid" in env["SERVER_SOFTWARE"]
    assert env["_uid"] == 33  # www-data
    assert env["_executable"] == "/usr/bin/python3"

    # The process mod_fcgid spawned (fd 0 = its listening socket, backlog 5, under FcgidIPCDir)
    # is the one serving: the engine found the socket on fd 0 by itself (run(app), no bind).
    pid = env["_pid"]
    assert pid in server.app_processes(str(script)), (pid, server.descendants())
    assert str(script) in " ".join(cmdline(pid))
    listening = {
        row["inode"]: row["path"]
        for row in unix_sockets()
        if row["path"].startswith(str(server.fcgid_ipc_dir)) and row["flags"] & 0x10000
    }
    held = socket_inodes(pid)
    assert set(held.values()) & set(listening), (held, listening)
    # ... and moved it off fd 0, which is /dev/null now (stdin is harmless).
    assert env["_fd0"] == "char:/dev/null"
    assert 0 not in held


def test_fcgid_mount_point_itself(apache, apache_site):
    """GET /app (no slash) under ``Alias /app file.fcgi``: mod_fcgid sends SCRIPT_NAME=/app and
    no PATH_INFO (a correct CGI split: the script itself); that is the app's index."""
    script = write_fcgi(apache_site, "fcgid-bare")
    server = apache(fcgid_config(apache_site, str(script), "/app"))
    check_mount_point_itself(server, "/app")


def test_fcgid_root_mount(apache, apache_site):
    script = write_fcgi(apache_site, "fcgid-root")
    server = apache(fcgid_config(apache_site, str(script), "/"))
    r = server.get("/items/7")
    assert r.status == 200, (r, server.error_log()[-2000:])
    assert r.json()["self_url"] == "/items/7" and r.json()["script_name"] == ""
    r = server.get("/")
    assert r.status == 200, r
    assert r.json()["item_url"] == "/items/3"


def test_fcgid_app_exception_goes_to_error_log(apache, apache_site):
    script = write_fcgi(apache_site, "fcgid-boom")
    server = apache(fcgid_config(apache_site, str(script), "/app"))
    token = uuid.uuid4().hex
    r = server.get(f"/app/boom?token={token}")
    assert r.status == 500, r
    assert token.encode() not in r.body  # no traceback for the client
    log = server.wait_for_log(f"deliberate failure {token}")
    lines = [line for line in log.splitlines() if f"deliberate failure {token}" in line]
    assert lines, log[-3000:]
    # FCGI_STDERR, logged per line by mod_fcgid at warn level for this request.
    assert any("[fcgid:warn]" in line and "mod_fcgid: stderr:" in line for line in lines), lines
    assert re.search(r"mod_fcgid: stderr: .*Traceback", log), log[-3000:]
    # The process survives an app exception and serves the next request.
    assert server.get("/app/items/1").status == 200


def test_fcgid_passes_authorization(apache, apache_site):
    script = write_fcgi(apache_site, "fcgid-auth")
    server = apache(fcgid_config(apache_site, str(script), "/app"))
    env = server.get("/app/_environ", headers={"Authorization": BASIC_AUTH}).json()
    assert env.get("HTTP_AUTHORIZATION") == BASIC_AUTH
    env = server.get("/app/_environ").json()
    assert "HTTP_AUTHORIZATION" not in env


def test_fcgid_wrapper_runs_generated_launcher(apache, apache_site):
    """``--app module:attr``: the generated launcher (not executable, to show the wrapper
    does not need it) run by ``FcgidWrapper "/usr/bin/python3 LAUNCHER"``."""
    from tests.support.servers import cmdline

    options = ConfigOptions(
        target="apache-fcgid",
        app="apache_app:application",
        prefix="/wrapped",
        python=apache_site.python,
        workdir=str(apache_site.site),
    )
    # The text `oxfcgi config` prints is the text generate() returns.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "oxfcgi",
            "config",
            "apache-fcgid",
            "--app",
            options.app,
            "--prefix",
            "/wrapped/",
            "--python",
            options.python,
            "--workdir",
            options.workdir,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    text = cli.stdout
    assert text == generate(options)
    launcher = Path(apache_config.launcher_path(options))
    assert launcher.parent == apache_site.site
    apache_site.write(str(launcher.relative_to(apache_site.base)), apache_config.extract_launcher(text), 0o644)
    server = apache(text)
    check_flask_at_prefix(server, "/wrapped")

    env = server.get("/wrapped/_environ", headers={"Authorization": BASIC_AUTH}).json()
    assert env.get("HTTP_AUTHORIZATION") == BASIC_AUTH
    assert env["SCRIPT_NAME"] == "/wrapped" and env["PATH_INFO"] == "/_environ"
    assert cmdline(env["_pid"]) == ["/usr/bin/python3", str(launcher)]
    assert env["_uid"] == 33

    token = uuid.uuid4().hex
    assert server.get(f"/wrapped/boom?token={token}").status == 500
    assert "mod_fcgid: stderr:" in server.wait_for_log(f"deliberate failure {token}")


def test_fcgid_processes_exit_when_apache_stops(apache, apache_site):
    """httpd stop: mod_fcgid's process manager sends SIGTERM (again at 1 s, SIGKILL at 8 s).
    The oxfcgi processes must exit on the first SIGTERM, well before the SIGKILL."""
    from tests.support.servers import pid_alive as process_alive

    script = write_fcgi(apache_site, "fcgid-stop")
    server = apache(fcgid_config(apache_site, str(script), "/app"))
    # Concurrent slow requests make mod_fcgid spawn more than one process.
    results = []

    def slow():
        results.append(server.get("/app/sleep?ms=1500", timeout=60))

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == [200, 200, 200], results
    pids = server.app_processes(str(script))
    assert pids, server.descendants()
    served_by = {r.json()["pid"] for r in results}
    assert served_by <= set(pids)

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    deadline = started + 12
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    alive = [p for p in pids if process_alive(p)]
    assert not alive, f"still running {elapsed:.1f} s after httpd got SIGTERM: {alive}"
    assert elapsed < 5.0, f"the app processes took {elapsed:.1f} s to exit"
    server.proc.wait(timeout=20)
    log = server.error_log()
    assert "terminating forcefully" not in log and "graceful kill fail" not in log, log[-3000:]
    for pid in pids:
        assert re.search(rf"\({pid}\) exit\(shutting down\), terminated by calling exit\(\), return code: 0", log), (
            pid,
            log[-3000:],
        )


# ---------------------------------------------------------------------------------------
# mod_proxy_fcgi
# ---------------------------------------------------------------------------------------


def test_proxy_fcgi_enablereuse_no_starvation(apache, apache_site, start_server):
    """enablereuse=on pools FCGI_KEEP_CONN connections in every httpd child; with only two
    oxfcgi threads, idle pooled connections must not starve new requests (504)."""
    from tests.support.apache import unix_sockets
    from tests.support.http import send

    sock = apache_site.base / f"px-{uuid.uuid4().hex[:6]}.sock"
    options = ConfigOptions(
        target="apache-proxy",
        app="tests.apps.apache_app:application",
        socket=str(sock),
        prefix="/app",
        user="root",  # the test interpreter may live where www-data cannot read it
    )
    text = generate(options)
    # The server command the configuration prints (mode 660, group www-data, --script-name).
    args = apache_config.serve_args(options)
    assert " ".join(args) in text
    backend = start_server(*args, "--threads", "2")
    server = apache(text, timeout=15)
    check_flask_at_prefix(server, "/app")
    env = server.get("/app/_environ", headers={"Authorization": BASIC_AUTH}).json()
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/_environ"
    assert env.get("HTTP_AUTHORIZATION") == BASIC_AUTH

    clients, per_client = 16, 10
    failures: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = server.connection(timeout=40)
        try:
            for i in range(per_client):
                item = n * 100 + i
                path = f"/app/items/{item}" if i % 2 else f"/app/sleep?ms=20&n={item}"
                r = send(conn, "GET", path)
                with lock:
                    statuses.append(r.status)
                if r.status != 200:
                    failures.append(f"client {n} request {i}: {r.status} {r.body[:200]!r}")
                    continue
                data = r.json()
                if i % 2 and (data.get("item_id") != item or data.get("self_url") != f"/app/items/{item}"):
                    failures.append(f"client {n} request {i}: wrong body {data}")
                if not i % 2 and data.get("slept_ms") != 20:
                    failures.append(f"client {n} request {i}: wrong body {data}")
                if r.header("Connection") == "close":
                    conn.close()
                    conn = server.connection(timeout=40)
        except Exception as e:
            failures.append(f"client {n}: {type(e).__name__}: {e}")
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not failures, (failures[:10], server.error_log()[-3000:], backend.log()[-2000:])
    assert len(statuses) == clients * per_client and set(statuses) == {200}
    assert elapsed < 30, f"{clients * per_client} requests took {elapsed:.1f} s"
    assert "AH01075" not in server.error_log()  # "Error dispatching request" (timeouts)

    # The connections really were reused: pooled FastCGI connections stay open, idle.
    def open_conns() -> int:
        return sum(1 for row in unix_sockets() if row["path"] == str(sock) and row["state"] == 3)

    assert open_conns() >= 2, "no pooled connections: enablereuse did not take effect"
    # ... and idle pooled connections hold no thread: a fresh request is answered at once.
    t0 = time.monotonic()
    assert server.get("/app/items/5").status == 200
    assert time.monotonic() - t0 < 5


def test_proxy_fcgi_rules_split_path_without_script_name(apache, apache_site, start_server):
    """The generated ProxyFCGISetEnvIf rules alone give the app SCRIPT_NAME = prefix and
    PATH_INFO = the rest (a server started without --script-name, mode 666)."""
    sock = apache_site.base / f"px-{uuid.uuid4().hex[:6]}.sock"
    start_server("tests.apps.apache_app:application", "--bind", f"unix:{sock}", "--socket-mode", "666")
    server = apache(generate(ConfigOptions(target="apache-proxy", socket=str(sock), prefix="/app")))
    check_flask_at_prefix(server, "/app")
    env = server.get("/app/_environ?x=%2F").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/app", "/_environ", "x=%2F")
    # mod_proxy_fcgi's raw SCRIPT_NAME (the whole path) was rewritten by Apache, not by the engine.
    assert "SCRIPT_NAME is the whole request path" not in server.error_log()


def test_proxy_fcgi_tcp_root_mount(apache, apache_site, start_server):
    from tests.support.servers import free_port

    port = free_port()
    start_server("tests.apps.apache_app:application", "--bind", f"127.0.0.1:{port}")
    server = apache(generate(ConfigOptions(target="apache-proxy", socket=f"127.0.0.1:{port}", prefix="/")))
    r = server.get("/items/9")
    assert r.status == 200, (r, server.error_log()[-2000:])
    assert r.json()["self_url"] == "/items/9" and r.json()["script_name"] == ""
    r = server.get("/query?x=1")
    assert r.json()["args"] == {"x": ["1"]}


def test_proxy_fcgi_mount_point_itself(apache, apache_site, start_server):
    """GET /app (no slash), with the generated rules and server command: the app's index."""
    sock = apache_site.base / f"px-{uuid.uuid4().hex[:6]}.sock"
    options = ConfigOptions(
        target="apache-proxy",
        app="tests.apps.apache_app:application",
        socket=str(sock),
        prefix="/app",
        user="root",  # the test interpreter may live where www-data cannot read it
    )
    start_server(*apache_config.serve_args(options))
    server = apache(generate(options))
    check_mount_point_itself(server, "/app")
    # A path that only starts with the prefix is not the app's.
    r = server.get("/application")
    assert r.status == 404, r
    assert b"The requested URL was not found on this server" in r.body  # Apache's page, not Flask's


# ---------------------------------------------------------------------------------------
# CGI mode (mod_cgid)
# ---------------------------------------------------------------------------------------


def test_cgi_mode_under_mod_cgid(apache, apache_site):
    directory = apache_site.mkdir(f"cgi-{uuid.uuid4().hex[:6]}")
    rel = directory.relative_to(apache_site.base)
    for name, call in (("force.cgi", "run(application, force_cgi=True)"), ("env.cgi", "run(application)")):
        apache_site.write(
            f"{rel}/{name}",
            (
                f"#!{apache_site.python}\n"
                "import sys\n"
                f"sys.path.insert(0, {str(apache_site.site)!r})\n"
                "from apache_app import application\n"
                "from oxfcgi import run\n"
                f"{call}\n"
            ),
            0o755,
        )
    server = apache(
        f'Alias /cgi/ "{directory}/"\n'
        f'<Directory "{directory}">\n'
        "    Require all granted\n"
        "    Options +ExecCGI\n"
        "    AddHandler cgi-script .cgi\n"
        "    AcceptPathInfo On\n"
        '    <Files "env.cgi">\n'
        "        SetEnv FCGI_FORCE_CGI Y\n"
        "    </Files>\n"
        "</Directory>\n"
    )
    for script in ("force.cgi", "env.cgi"):
        prefix = f"/cgi/{script}"
        r = server.get(f"{prefix}/items/5")
        assert r.status == 200, (script, r, server.error_log()[-3000:])
        assert r.json() == {
            "page": "item",
            "item_id": 5,
            "self_url": f"{prefix}/items/5",
            "index_url": f"{prefix}/",
            "script_name": prefix,
            "path_info": "/items/5",
        }
        assert r.header("Content-Type") == "application/json"
        r = server.get(f"{prefix}/query?q=a%20b")
        assert r.json()["args"] == {"q": ["a b"]}
        body = b"name=Grace+Hopper&n=1&n=2"
        r = server.request(
            "POST", f"{prefix}/form", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status == 200, (r, server.error_log()[-3000:])
        assert r.json()["form"] == {"name": ["Grace Hopper"], "n": ["1", "2"]}
        assert r.json()["content_length"] == len(body)
        r = server.get(f"{prefix}/no/such/route")
        assert r.status == 404
        env = server.get(f"{prefix}/_environ").json()
        assert env["GATEWAY_INTERFACE"] == "CGI/1.1" and env["_uid"] == 33


# ---------------------------------------------------------------------------------------
# Real apps as users deploy them: uploads, Django through the launcher, touch-to-reload
# ---------------------------------------------------------------------------------------


def _upload_20_mb(server, path: str) -> None:
    import hashlib

    body = os.urandom(20 << 20)
    r = server.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"}, timeout=120)
    assert r.status == 200, (r, server.error_log()[-2000:])
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_20_mb_upload_through_the_generated_fcgid_config(apache, apache_site):
    """mod_fcgid's FcgidMaxRequestLen is 128 KiB by default (a 3 MB push got a 500); the
    generated configuration sets 100 MiB."""
    script = write_fcgi(apache_site, "fcgid-upload")
    server = apache(fcgid_config(apache_site, str(script), "/app"), timeout=120)
    _upload_20_mb(server, "/app/upload")
    small = apache(fcgid_config(apache_site, str(script), "/app", max_body_size=1 << 20), timeout=30)
    r = small.request("POST", "/app/upload", body=b"x" * (2 << 20))
    assert r.status == 500, r  # over the limit that was set: mod_fcgid refuses it, and says why
    assert "exceeds MaxRequestLen (1048576)" in small.wait_for_log("MaxRequestLen")


def test_a_20_mb_upload_through_the_generated_proxy_config(apache, apache_site, start_server):
    sock = apache_site.base / f"up-{uuid.uuid4().hex[:6]}.sock"
    options = ConfigOptions(
        target="apache-proxy", app="tests.apps.apache_app:application", socket=str(sock), prefix="/app", user="root"
    )
    start_server(*apache_config.serve_args(options))
    server = apache(generate(options), timeout=120)
    _upload_20_mb(server, "/app/upload")


def test_django_project_under_mod_fcgid_through_the_written_launcher(apache, apache_site):
    """The startproject site behind mod_fcgid through `oxfcgi config --launcher PATH`: the
    admin works under the prefix, its 404 lines appear once in Apache's error log, and a
    Django traceback reaches it (mod_fcgid routes the process's stderr there)."""
    from tests.support.apache import _chmod_world_readable, _copy_distributions
    from tests.support.django_site import Browser, make_project

    project = make_project(apache_site.base / f"dj-{uuid.uuid4().hex[:6]}", sys.executable)
    _copy_distributions(("django", "asgiref", "sqlparse"), project)
    shutil.copytree(apache_site.site / "oxfcgi", project / "oxfcgi")
    # The database must be writable by Apache's user (the doctor says so otherwise).
    os.chown(project / "db.sqlite3", 33, 33)
    os.chown(project, 33, 33)
    _chmod_world_readable(project)
    launcher = project / "mysite.fcgi"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "oxfcgi",
            "config",
            "apache-fcgid",
            "--app",
            "mysite.wsgi:application",
            "--prefix",
            "/dj",
            "--python",
            apache_site.python,
            "--workdir",
            str(project),
            "--launcher",
            str(launcher),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"wrote the launcher {launcher}" in cli.stderr and os.stat(launcher).st_mode & 0o755 == 0o755
    assert apache_config.LAUNCHER_BEGIN not in cli.stdout, "the launcher is a file, not commented text"
    server = apache(cli.stdout, timeout=30)
    browser = Browser(server.host, server.port)
    browser.login("/dj")
    assert server.get("/dj/no-such-page-xyz").status == 404
    log = server.wait_for_log("Not Found: /dj/no-such-page-xyz", timeout=10)
    time.sleep(0.5)
    assert server.error_log().count("Not Found: /dj/no-such-page-xyz") == 1, log[-3000:]


def test_touch_to_reload_under_mod_fcgid(apache, apache_site):
    """reload_on_change: touching the .fcgi (same inode: mod_fcgid itself never notices)
    or editing what it serves gives the next requests the new code, with no error reply."""
    marker = apache_site.base / f"version-{uuid.uuid4().hex[:6]}.txt"
    marker.write_text("one")
    os.chmod(marker, 0o644)
    app_py = apache_site.write(
        f"reload-{uuid.uuid4().hex[:6]}/versioned.py",
        "import os\n"
        f"VERSION = open({str(marker)!r}).read()\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [f'{VERSION} {os.getpid()}'.encode()]\n",
    )
    script = apache_site.write(
        f"{app_py.parent.name}/app.fcgi",
        f"#!{apache_site.python}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(apache_site.site)!r})\n"
        f"sys.path.insert(0, {str(app_py.parent)!r})\n"
        "import oxfcgi\n"
        "from versioned import application\n"
        "oxfcgi.run(application, reload_on_change=['script'])\n",
        0o755,
    )
    server = apache(fcgid_config(apache_site, str(script), "/r"), timeout=30)
    first = server.get("/r/")
    assert first.status == 200 and first.body.startswith(b"one "), first
    old_pid = first.body.split()[1]
    marker.write_text("two")
    os.utime(script)  # touch: the same inode
    deadline = time.monotonic() + 20
    bodies = []
    while time.monotonic() < deadline:
        r = server.get("/r/")
        assert r.status == 200, (r, server.error_log()[-3000:])  # never an error reply
        bodies.append(r.body)
        if r.body.startswith(b"two "):
            break
        time.sleep(0.2)
    assert bodies[-1].startswith(b"two ") and bodies[-1].split()[1] != old_pid, bodies[-5:]
    assert "changed (reload_on_change)" in server.error_log()


def test_flask_traceback_reaches_apaches_error_log_under_serve(apache, apache_site, start_server):
    """oxfcgi serve behind mod_proxy_fcgi: Flask's own handler (to wsgi.errors, FCGI_STDERR)
    is installed because the root logger is left alone."""
    sock = apache_site.base / f"tb-{uuid.uuid4().hex[:6]}.sock"
    options = ConfigOptions(
        target="apache-proxy", app="tests.apps.apache_app:application", socket=str(sock), prefix="/app", user="root"
    )
    start_server(*apache_config.serve_args(options))
    server = apache(generate(options))
    assert server.get("/app/boom").status == 500
    log = server.wait_for_log("AppBoom", timeout=10)
    assert "AppBoom" in log and "Traceback" in log


def test_fastapi_fcgi_script_under_mod_fcgid(apache, apache_site):
    """An ASGI app in a classic .fcgi (`run(app)`, nothing else changed) under the generated
    mod_fcgid config: routes, validation, url_for under the prefix and a streamed response."""
    script = apache_site.write(
        "fapi/site.fcgi",
        (
            f"#!{apache_site.python}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(apache_site.site)!r})\n"
            "from oxfcgi import run\n"
            "from fastapi_app import app\n"
            "run(app)\n"
        ),
        0o755,
    )
    server = apache(fcgid_config(apache_site, str(script), "/fapi"))
    r = server.get("/fapi/items/5?q=x", headers={"X-Client": "apache"})
    assert r.status == 200, (r, server.error_log()[-3000:])
    assert r.json() == {"item_id": 5, "q": "x", "who": "apache"}
    assert server.get("/fapi/items/zz").status == 422
    go = server.get("/fapi/go")
    assert go.status == 303 and go.header("Location").endswith("/fapi/items/3"), go.headers
    body = json.dumps({"name": "w", "price": 2.0}).encode()
    created = server.request("POST", "/fapi/items", body=body, headers={"Content-Type": "application/json"})
    assert created.status == 200 and created.json()["total"] == 4.0
    stream = server.get("/fapi/stream?n=3&delay=0.05")
    assert stream.status == 200 and stream.body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_fastapi_in_cgi_mode_under_mod_cgid(apache, apache_site):
    """The same FastAPI script as a plain CGI (``FCGI_FORCE_CGI=Y``): one request per
    process, the event loop run once with lifespan; routes, validation, a JSON body."""
    directory = apache_site.mkdir(f"acgi-{uuid.uuid4().hex[:6]}")
    rel = directory.relative_to(apache_site.base)
    apache_site.write(
        f"{rel}/api.cgi",
        (
            f"#!{apache_site.python}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(apache_site.site)!r})\n"
            "from oxfcgi import run\n"
            "from fastapi_app import app\n"
            "run(app)\n"
        ),
        0o755,
    )
    server = apache(
        f'Alias /acgi/ "{directory}/"\n'
        f'<Directory "{directory}">\n'
        "    Require all granted\n"
        "    Options +ExecCGI\n"
        "    AddHandler cgi-script .cgi\n"
        "    SetEnv FCGI_FORCE_CGI Y\n"
        "</Directory>\n"
    )
    r = server.get("/acgi/api.cgi/items/5?q=x", headers={"X-Client": "cgi"})
    assert r.status == 200, (r, server.error_log()[-3000:])
    assert r.json() == {"item_id": 5, "q": "x", "who": "cgi"}
    assert server.get("/acgi/api.cgi/items/zz").status == 422
    body = json.dumps({"name": "w", "price": 2.0}).encode()
    created = server.request("POST", "/acgi/api.cgi/items", body=body, headers={"Content-Type": "application/json"})
    assert created.status == 200 and created.json()["total"] == 4.0, (created, server.error_log()[-3000:])
