"""Real apps as their users deploy them (the issue "Real apps as their users deploy them"):
a project made by ``django-admin startproject``, served the way the docs and the generated
configurations say, behind real nginx; Flask's and Django's logging; the doctor's checks
for what such an app needs; and the hints printed when something is wrong.

Apache mod_fcgid and lighttpd variants live in test_apache.py and test_lighttpd.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from oxfcgi.client import request
from oxfcgi.config import ConfigOptions, generate
from tests.support.django_site import Browser, make_project
from tests.support.servers import ROOT, child_env, stop_process, wait_accepting, wait_for_text

pytest.importorskip("django")


@pytest.fixture(scope="module")
def project():
    """``startproject mysite`` in a directory every user can read."""
    base = Path(tempfile.mkdtemp(prefix="oxfcgi-django-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield make_project(base / "mysite", sys.executable)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def oxfcgi_command() -> str:
    """The ``oxfcgi`` console script of this interpreter (its sys.path[0] is its bin/)."""
    path = shutil.which("oxfcgi", path=os.path.dirname(sys.executable)) or shutil.which("oxfcgi")
    assert path, "the oxfcgi console script is installed with the package"
    return path


def spawn(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env or child_env()
        )


def wait_socket(path: Path, proc: subprocess.Popen, log: Path) -> None:
    assert wait_accepting(str(path), proc, 30), log.read_text()


# --- 1. the targets Django's docs and the generated configs use -------------------------------


def test_django_module_target_with_the_console_script(project, tmp_path):
    """`cd mysite && oxfcgi serve mysite.wsgi:application` used to look for a file
    mysite/mysite.wsgi; and the console script did not see the current directory."""
    sock, log = tmp_path / "s.sock", tmp_path / "serve.log"
    proc = spawn([oxfcgi_command(), "serve", "mysite.wsgi:application", "--bind", f"unix:{sock}"], project, log)
    try:
        wait_socket(sock, proc, log)
        resp = request(f"unix:{sock}", "GET", "/admin/login/")
        assert resp.status == 200 and b"csrfmiddlewaretoken" in resp.body, (resp, log.read_text())
    finally:
        stop_process(proc)


def test_a_file_inside_a_package_is_imported_as_its_module(project, tmp_path):
    """`oxfcgi serve mysite/wsgi.py` from the project root: imported as mysite.wsgi, so
    DJANGO_SETTINGS_MODULE=mysite.settings resolves."""
    sock, log = tmp_path / "s.sock", tmp_path / "serve.log"
    proc = spawn([oxfcgi_command(), "serve", "mysite/wsgi.py", "--bind", f"unix:{sock}"], project, log)
    try:
        wait_socket(sock, proc, log)
        assert request(f"unix:{sock}", "GET", "/admin/login/").status == 200, log.read_text()
    finally:
        stop_process(proc)


def test_chdir_and_pythonpath(tmp_path):
    app_dir = tmp_path / "elsewhere"
    app_dir.mkdir()
    (app_dir / "hello_mod.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from ' + __file__.encode()]\n"
    )
    for option in ("--chdir", "--pythonpath"):
        sock, log = tmp_path / f"{option[2:]}.sock", tmp_path / f"{option[2:]}.log"
        proc = spawn(
            [sys.executable, "-m", "oxfcgi", "serve", "hello_mod:app", "--bind", f"unix:{sock}", option, str(app_dir)],
            tmp_path,
            log,
        )
        try:
            wait_socket(sock, proc, log)
            assert request(f"unix:{sock}", "GET", "/").body.startswith(b"from " + str(app_dir).encode())
        finally:
            stop_process(proc)
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", "x:app", "--chdir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert proc.returncode == 2 and "cannot change into" in proc.stderr


def test_check_accepts_the_django_target(project):
    """`oxfcgi check mysite.wsgi:application` failed while its own hint worked."""
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "check", "mysite.wsgi:application"],
        cwd=project,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the app imports as" in proc.stdout


# --- the admin, behind real nginx at a prefix, through the generated configuration ----------------


def test_django_admin_behind_nginx_at_a_prefix(project, tmp_path, start_nginx):
    if os.geteuid() != 0:
        pytest.skip("the generated command runs as root (it sets the socket group and switches user)")
    sock = Path(tempfile.mkdtemp(prefix="oxfcgi-run-", dir="/tmp")) / "django.sock"
    os.chmod(sock.parent, 0o755)
    text = generate(
        ConfigOptions(
            target="nginx",
            app="mysite.wsgi:application",
            socket=str(sock),
            prefix="/site",
            python=sys.executable,
            workdir=str(project),
            user="root",  # the test interpreter may live where www-data cannot read it
        )
    )
    # Run the command the configuration prints, as printed (it starts with `cd WORKDIR &&`).
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#   ")]
    shell = " ".join(line.rstrip("\\").strip() for line in lines)
    assert "mysite.wsgi:application" in shell and f"cd {shlex.quote(str(project))}" in shell
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", shell], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_socket(sock, proc, log)
        nginx = start_nginx(str(sock), snippets=[text])
        browser = Browser(nginx.host, nginx.port)
        browser.login("/site")
        status, _, page = browser.get("/site/admin/auth/group/add/")
        assert status == 200, page[:500]
        action, hidden = browser.form(page, "group_form")
        action = action or "/site/admin/auth/group/add/"
        assert action.startswith("/site/"), action
        status, headers, page = browser.request("POST", action, {**hidden, "name": "testers", "_save": "Save"})
        assert status == 302 and headers["location"] == "/site/admin/auth/group/", (status, page[:2000])
        status, _, page = browser.get("/site/admin/auth/group/")
        assert status == 200 and "testers" in page
        assert 'href="/site/admin/' in page, "links stay under the prefix"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(sock.parent, ignore_errors=True)


def test_a_20_mb_upload_through_the_generated_nginx_config(start_server, start_nginx, tmp_path):
    """nginx's own limit is 1 MiB (a 3 MB hg push got 413): the generated config says 100 MiB."""
    server = start_server("tests.apps.flask_app:app")
    text = generate(ConfigOptions(target="nginx", app="tests.apps.flask_app:app", socket=server.socket_path))
    nginx = start_nginx(server, snippets=[text])
    body = os.urandom(20 << 20)
    resp = nginx.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 200, (resp, nginx.error_log()[-2000:])
    assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()
    over = generate(ConfigOptions(target="nginx", socket=server.socket_path, max_body_size=1 << 20))
    small = start_nginx(server, snippets=[over])
    assert small.request("POST", "/upload", body=body[: 2 << 20]).status == 413, "the limit is the one set"


# --- 3. logging: the root logger is the application's -----------------------------------------------


def test_flask_tracebacks_reach_fastcgi_stderr_under_serve(start_server, start_nginx):
    """Under `oxfcgi serve` a Flask /boom used to produce 0 bytes of FCGI_STDERR: the CLI's
    root handler kept Flask from installing its own (to wsgi.errors)."""
    server = start_server("tests.apps.flask_app:app")
    resp = server.request("GET", "/boom")
    assert resp.status == 500
    assert b"AppBoom" in resp.stderr and b"Traceback" in resp.stderr, resp.stderr
    nginx = start_nginx(server)
    assert nginx.get("/app/boom").status == 500
    assert "AppBoom" in nginx.wait_for_log("AppBoom")


def test_django_log_lines_appear_once(project, tmp_path):
    sock, log = tmp_path / "s.sock", tmp_path / "serve.log"
    proc = spawn([oxfcgi_command(), "serve", "mysite.wsgi:application", "--bind", f"unix:{sock}"], project, log)
    try:
        wait_socket(sock, proc, log)
        assert request(f"unix:{sock}", "GET", "/no-such-page-xyz").status == 404
        wait_for_text(log.read_text, "Not Found: /no-such-page-xyz")
        time.sleep(0.3)
        assert log.read_text().count("Not Found: /no-such-page-xyz") == 1, log.read_text()
    finally:
        stop_process(proc)


def test_log_config_file_is_used(tmp_path, start_server):
    config = tmp_path / "logging.json"
    logfile = tmp_path / "configured.log"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"f": {"format": "CONFIGURED %(name)s %(message)s"}},
                "handlers": {"h": {"class": "logging.FileHandler", "filename": str(logfile), "formatter": "f"}},
                "loggers": {"oxfcgi": {"handlers": ["h"], "level": "INFO"}},
            }
        )
    )
    srv = start_server("tests.apps.protocol_apps:app", "--log-config", str(config))
    assert srv.request("GET", "/hello").status == 200
    assert "CONFIGURED oxfcgi oxfcgi 0.1.0 serving on" in wait_for_text(logfile.read_text, "serving on")


# --- 4. and 6. the doctor: what a loaded app needs ----------------------------------------------------


@pytest.fixture(scope="module")
def debian_site():
    """A world-readable directory with oxfcgi and Django for Debian's /usr/bin/python3 (the
    interpreter a web server's user can run), as tests/support/apache.py makes it."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root and Debian's python3")
    from tests.support.apache import _chmod_world_readable, _copy_distributions

    base = Path(tempfile.mkdtemp(prefix="oxfcgi-debian-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.copytree(ROOT / "python" / "oxfcgi", base / "oxfcgi", ignore=shutil.ignore_patterns("__pycache__"))
    _copy_distributions(("django", "asgiref", "sqlparse"), base)
    _chmod_world_readable(base)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_doctor_finds_the_sqlite_database_the_web_server_cannot_write(debian_site):
    """Run as www-data, Django's SQLite database created by root is read-only."""
    project = make_project(debian_site / "proj", sys.executable)
    for name in ("oxfcgi", "django", "asgiref", "sqlparse"):
        os.symlink(debian_site / name, project / name)
    from tests.support.apache import _chmod_world_readable

    _chmod_world_readable(project)
    argv = [sys.executable, "-m", "oxfcgi", "check", "mysite.wsgi:application", "--user", "www-data"]
    argv += ["--python", "/usr/bin/python3"]
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  www-data cannot write DATABASES['default'] (SQLite)" in proc.stdout, proc.stdout
    assert f"chown www-data:www-data {project / 'db.sqlite3'}" in proc.stdout
    os.chown(project / "db.sqlite3", 33, 33)
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, env=child_env(), timeout=120)
    assert "www-data cannot write DATABASES" in proc.stdout, "the directory too: SQLite writes a journal there"
    os.chown(project, 33, 33)
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert "www-data can write DATABASES['default'] (SQLite)" in proc.stdout


@pytest.mark.skipif(not os.path.exists("/usr/lib/python3/dist-packages/mercurial"), reason="Debian's mercurial")
def test_doctor_warns_about_mercurial_demandimport_with_threads(debian_site, tmp_path):
    repo = debian_site / "repo"
    subprocess.run(["hg", "init", str(repo)], check=True)
    script = debian_site / "hg.fcgi"
    body = textwrap.dedent(f"""\
        #!/usr/bin/python3
        import sys
        sys.path.insert(0, {str(debian_site)!r})
        from mercurial import demandimport
        demandimport.enable()
        from mercurial.hgweb import hgweb
        from oxfcgi import run
        application = hgweb({str(repo).encode()!r})
        run(application{{threads}})
    """)
    for threads, warned in (("", True), (", threads=1", False)):
        script.write_text(body.replace("{threads}", threads))
        os.chmod(script, 0o755)
        proc = subprocess.run(
            [sys.executable, "-m", "oxfcgi", "check", str(script)], capture_output=True, text=True, timeout=120
        )
        assert ("Mercurial's demandimport is enabled, with 32 threads" in proc.stdout) is warned, proc.stdout
        assert "threads=1" in proc.stdout or not warned


# --- 5. hints that can be followed -----------------------------------------------------------------


def test_startup_failure_names_the_user_the_interpreter_and_the_variable(tmp_path):
    script = tmp_path / "needs_env.fcgi"
    # oxfcgi imported first, as the generated launcher does: its start-up failure hook is
    # then in place for the app's own import.
    script.write_text("import os\nimport oxfcgi\nSECRET = os.environ['MY_APP_SECRET']\n")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "fd0.sock"))
    listener.listen(5)
    proc = subprocess.run(
        [sys.executable, str(script)],
        stdin=listener.fileno(),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    listener.close()
    err = proc.stderr
    assert proc.returncode != 0 and "KeyError: 'MY_APP_SECRET'" in err
    assert f"{sys.executable} -m oxfcgi check {script} --user root" in err, "a command that runs as written"
    assert "$(id -un" not in err
    assert "FcgidInitialEnv MY_APP_SECRET value" in err and '"bin-environment" => ( "MY_APP_SECRET"' in err


def test_request_prints_the_status_line_of_an_error(start_server):
    srv = start_server("tests.apps.protocol_apps:app")
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "request", srv.address, "/missing"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert "oxfcgi request: 404 Not Found" in proc.stderr


# --- 7. a bind beside an inherited socket ----------------------------------------------------------


def test_bind_beside_an_inherited_socket_is_warned(tmp_path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "inherited.sock"))
    listener.listen(5)
    own = tmp_path / "own.sock"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oxfcgi", "serve", "tests.apps.protocol_apps:app", "--bind", f"unix:{own}"],
            stdin=listener.fileno(),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
    listener.close()
    try:
        wait_socket(own, proc, log)
        text = wait_for_text(log.read_text, "handed over a listening socket")
        assert f"unix:{tmp_path / 'inherited.sock'}" in text and f"unix:{own}" in text
    finally:
        stop_process(proc)


# --- 9. headers a web server rejects ----------------------------------------------------------------


def test_response_headers_too_big_for_nginx_are_warned_once_per_route(start_server):
    srv = start_server("tests.apps.protocol_apps:app")
    for _ in range(3):
        assert srv.request("GET", "/cookies", query="n=30&size=200").status == 200
    assert srv.request("GET", "/cookies", query="n=1&size=10").status == 200
    log = wait_for_text(srv.log, "fastcgi_buffer_size")
    time.sleep(0.3)
    assert srv.log().count("the response headers of /cookies are larger than nginx") == 1, srv.log()
    assert "upstream sent too big header" in log
    assert srv.request("GET", "/big-header", query="n=1&size=9000").status == 200
    log = wait_for_text(srv.log, "the response headers of /big-header")
    assert "nginx (the block is" in log and "Apache (a line of 90" in log
