"""`oxfcgi serve` / `oxfcgi request` / `python -m oxfcgi` as a user runs them (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.protocol_apps:app"


def oxfcgi(*args: str, cwd=None, input: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run(
        [sys.executable, "-m", "oxfcgi", *args], cwd=cwd, input=input, env=env, capture_output=True, timeout=timeout
    )


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


# --- help and version ---------------------------------------------------------------------------


def test_help_and_version():
    top = oxfcgi("--help")
    assert top.returncode == 0 and b"serve" in top.stdout and b"request" in top.stdout
    serve = oxfcgi("serve", "--help")
    assert serve.returncode == 0
    for option in (
        b"--bind",
        b"--threads",
        b"--multiplexed",
        b"--max-conns",
        b"--max-in-flight",
        b"--roles",
        b"--debug",
        b"--socket-mode",
        b"--umask",
        b"--graceful-timeout",
        b"--max-params-size",
        b"--log-level",
        b"SECONDS",
        b"BYTES",
    ):
        assert option in serve.stdout, option
    assert oxfcgi("request", "--help").returncode == 0
    version = oxfcgi("--version")
    import oxfcgi as package

    assert version.returncode == 0 and package.__version__.encode() in version.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["serve", APP, "--roles", "responder,bogus"],
        ["serve", APP, "--threads", "0"],
        ["serve", APP, "--umask", "9"],
        ["serve"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args):
    result = oxfcgi(*args)
    assert result.returncode == 2 and b"usage:" in result.stderr


# --- loading the target -------------------------------------------------------------------------


def test_serve_flup_style_fcgi_script(start_server, tmp_path):
    """A deployed .fcgi script calling WSGIServer(app).run() at import: its app is served on
    the CLI's --bind, not on the bindAddress in the script."""
    write(tmp_path / "helper.py", "GREETING = b'from helper'\n")
    script = write(
        tmp_path / "site.fcgi",
        """\
        #!/usr/bin/env python3
        import helper
        from oxfcgi import WSGIServer

        def myapp(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [helper.GREETING, b" ", __file__.encode(), b" ", __name__.encode()]

        WSGIServer(myapp, bindAddress="/nonexistent/dir/never.sock").run()
        raise SystemExit("run() returned during a load")
        """,
    )
    srv = start_server(str(script))
    body = srv.request("GET", "/").body
    assert body == b"from helper " + str(script).encode() + b" __oxfcgi_app__"


@pytest.mark.parametrize("module", ["fcgi", "fcgi_fork", "fcgi_single"])
def test_serve_unchanged_flup_script(start_server, tmp_path, module):
    """A legacy script importing flup itself: under `oxfcgi serve` its app is captured and
    served by oxfcgi (flup is never started, installed or not)."""
    script = write(
        tmp_path / "legacy.fcgi",
        f"""\
        from flup.server.{module} import WSGIServer
        import oxfcgi

        def app(environ, start_response):
            start_response("200 OK", [])
            return [WSGIServer.__module__.encode()]

        WSGIServer(app, bindAddress="/nonexistent/dir/never.sock").run()
        """,
    )
    srv = start_server(str(script))
    assert srv.request("GET", "/").body.startswith(b"oxfcgi")  # not flup


def test_serve_imports_only_what_serving_needs(start_server, tmp_path):
    """`oxfcgi serve` builds the whole CLI, `check` and `config` included, but what it keeps
    imported while serving a WSGI function is what run() keeps (tests/test_api.py's list):
    every module stays resident in every process (issue 11)."""
    from tests.support.imports import MODULES_APP, imported_needlessly

    script = write(tmp_path / "modules.py", "import sys\n" + MODULES_APP)
    assert imported_needlessly(start_server(f"{script}:modules").request("GET", "/").body) == set()


def test_building_the_cli_imports_no_shutil():
    """argparse's own help formatter imports shutil (with zlib, bz2 and lzma) on the first
    add_argument; the CLI's finds the terminal width itself. Checked without site (-S): a
    .pth file of the machine's site-packages may import shutil before any of our code runs."""
    code = (
        "import sys; from oxfcgi import cli; cli.build_parser(); print(sorted({'shutil', 'lzma'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


def test_help_follows_columns():
    """Usage and option help are wrapped to COLUMNS, as argparse's own formatter does
    (descriptions and epilogs are printed as written)."""

    def usage(columns: int) -> list[str]:
        env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "oxfcgi", "serve", "--help"], env=env, capture_output=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.decode().split("\n\n")[0].splitlines()

    narrow, wide = usage(60), usage(200)
    assert len(narrow) > len(wide), (narrow, wide)
    assert max(len(line) for line in wide) <= 200 and max(len(line) for line in wide) > 100, wide


def test_serve_script_calling_run_without_main_guard(start_server, tmp_path):
    script = write(
        tmp_path / "app.py",
        """\
        import oxfcgi
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"ran"]
        oxfcgi.run(application, bind="127.0.0.1:1")
        """,
    )
    assert start_server(str(script)).request("GET", "/").body == b"ran"


def test_serve_script_with_main_block_not_run(start_server, tmp_path):
    script = write(
        tmp_path / "guarded.py",
        """\
        import sys
        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"guarded"]
        if __name__ == "__main__":
            sys.exit(3)
        """,
    )
    assert start_server(str(script)).request("GET", "/").body == b"guarded"
    assert start_server(f"{script}:app").request("GET", "/").body == b"guarded"


def test_serve_module_default_attr_and_factory(start_server, tmp_path):
    write(
        tmp_path / "factory_mod.py",
        """\
        def create():
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"factory"]
            return app
        """,
    )
    assert start_server("tests.apps.protocol_apps").request("GET", "/hello").body == b"hello"
    assert start_server("factory_mod:create()").request("GET", "/").body == b"factory"


@pytest.mark.parametrize(
    "target,source,message",
    [
        ("missing.fcgi", None, b"no such file"),
        ("no_such_module_xyz:app", None, b"no_such_module_xyz"),
        ("mod_noattr:app", "x = 1\n", b"no attribute 'app'"),
        ("mod_noattr", "x = 1\n", b"no 'application' or 'app'"),
        ("mod_notcallable:app", "app = 42\n", b"not callable"),
        ("broken.py", "1 / 0\n", b"ZeroDivisionError"),
        ("mod_baddep", "import no_such_dependency_xyz\n", b"No module named 'no_such_dependency_xyz'"),
        ("syntax.fcgi", "def (:\n", b"SyntaxError"),
    ],
)
def test_serve_load_errors_exit_2(tmp_path, target, source, message):
    if source is not None:
        name = target.split(":")[0]
        write(tmp_path / (name if name.endswith((".py", ".fcgi")) else name + ".py"), source)
    result = oxfcgi("serve", target, "--bind", f"unix:{tmp_path}/s.sock", cwd=tmp_path, timeout=20)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    if (source and "import" in source) or target == "broken.py":
        assert b"Traceback" in result.stderr


def test_serve_bad_bind_is_reported(tmp_path):
    result = oxfcgi("serve", APP, "--bind", f"unix:{tmp_path}/no/such/dir/s.sock", cwd=tmp_path, timeout=20)
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr and b"s.sock" in result.stderr


# --- options reach run() -------------------------------------------------------------------------


def test_serve_options_reach_the_engine(start_server, tmp_path):
    srv = start_server(
        APP,
        "--threads",
        "2",
        "--max-conns",
        "3",
        "--max-in-flight",
        "2",
        "--multiplexed",
        "--socket-mode",
        "600",
        "--log-level",
        "debug",
        "--max-params-size",
        "2048",
        "--graceful-timeout",
        "2",
        "--roles",
        "responder,authorizer",
    )
    with srv.connect() as conn:
        assert conn.get_values() == {"FCGI_MAX_CONNS": "3", "FCGI_MAX_REQS": "2", "FCGI_MPXS_CONNS": "1"}
    assert os.stat(srv.socket_path).st_mode & 0o777 == 0o600


# --- oxfcgi request against a real server ----------------------------------------------------------


def test_request_command(start_server):
    srv = start_server(APP)
    ok = oxfcgi("request", srv.address, "/hello")
    assert (ok.returncode, ok.stdout) == (0, b"hello")
    inc = oxfcgi("request", srv.address, "/hello", "-i")
    assert inc.stdout.startswith(b"Status: 200 OK\n") and inc.stdout.endswith(b"\n\nhello")
    missing = oxfcgi("request", srv.address, "/nowhere")
    assert missing.returncode == 1 and missing.stdout == b"no route /nowhere"
    echo = oxfcgi("request", srv.address, "/echo", "--data", "@-", input=b"piped\x00body")
    assert (echo.returncode, echo.stdout) == (0, b"piped\x00body")
    err = oxfcgi("request", srv.address, "/stderr")
    assert err.stdout == b"ok" and b"to stderr" in err.stderr
    quiet = oxfcgi("request", srv.address, "/stderr", "--no-stderr")
    assert b"to stderr" not in quiet.stderr
    env = oxfcgi("request", srv.address, "/environ?q=1", "-H", "X-Custom: v", "--param", "EXTRA=1")
    import json

    data = json.loads(env.stdout)
    assert data["QUERY_STRING"] == "q=1" and data["HTTP_X_CUSTOM"] == "v" and data["EXTRA"] == "1"


def test_request_command_no_server(tmp_path):
    result = oxfcgi("request", f"unix:{tmp_path}/x.sock", "/")
    assert result.returncode == 2
    assert f"cannot connect to unix:{tmp_path}/x.sock: No such file or directory".encode() in result.stderr


def test_version_prints_the_engine_build():
    """What a bug report needs: the engine's git revision, compiler, pyo3 and features."""
    import re
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "oxfcgi", "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    first, engine = done.stdout.splitlines()[:2]
    assert first.startswith("oxfcgi 0.") and "Python 3." in first
    assert re.match(r"engine: git \S+.*, rustc 1\.\d+.*, pyo3 0\.\d+\.\d+ \(abi3.*features python", engine), engine
