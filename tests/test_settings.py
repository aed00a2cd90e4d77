"""The settings table (python/oxfcgi/settings.py) and every surface made from it.

Each surface is held against the table here, so that a setting added, renamed or given a
new default in one place and not the others fails: the oxfcgi serve options and --help,
run()'s keywords (RunOptions) and docstring, the stub's _ServerSettings, the engine's own
list (the Server rejects a missing or unknown key) and defaults, the README table, the
environment variables, and --print-config.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import oxfcgi
from oxfcgi import cli, settings
from oxfcgi.client import Connection
from oxfcgi.settings import ALIASES, BY_NAME, SETTINGS, SettingError, resolve

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "oxfcgi"
APP = "tests.apps.protocol_apps:app"


def serve_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


# --- the CLI ---------------------------------------------------------------------------------


def test_serve_has_one_option_per_cli_setting_and_no_other():
    actions = {a.dest: a for a in serve_parser()._actions}
    cli_settings = {s.name for s in SETTINGS if s.cli}
    hidden = set(ALIASES)
    own = {"help", "target", "print_config"}
    assert set(actions) == cli_settings | hidden | own
    for s in SETTINGS:
        if not s.cli:
            continue
        action = actions[s.name]
        assert s.flag in action.option_strings, s.name
        assert f"default: {s.describe_default()}" in action.help, s.name
        assert f"env {s.env_var}" in action.help, s.name
    for old in hidden:
        assert actions[old].help == argparse.SUPPRESS


def test_serve_help_prints_true_defaults_and_variables():
    out = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "400"},
    ).stdout
    assert "default: max(16 x threads, 64)" in out, "the engine's rule, not an old copy of it"
    assert "default: 75 s" in out and "env OXFCGI_KEEPALIVE_TIMEOUT" in out
    for s in SETTINGS:
        if s.cli:
            assert s.flag in out and s.env_var in out, s.name


def test_cli_value_errors_are_usage_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", APP, "--threads", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--threads" in proc.stderr and "between 1 and 1024" in proc.stderr


# --- run(), the TypedDict and the docstring ---------------------------------------------------


def test_run_options_typeddict_is_generated_from_the_table():
    committed = (PACKAGE / "_options.py").read_text()
    assert committed == settings.options_module(), (
        "python/oxfcgi/_options.py differs from the table: python3 scripts/generate-settings.py"
    )


def test_run_docstring_names_every_run_setting_with_its_default():
    doc = oxfcgi.run.__doc__
    for s in SETTINGS:
        if s.run:
            assert f"``{s.name}`` [{s.describe_default()}]" in doc, s.name
        else:
            assert f"``{s.name}`` [" not in doc, f"{s.name} is not a run() keyword"


def test_run_rejects_names_outside_the_table():
    with pytest.raises(TypeError, match="unknown option"):
        oxfcgi.run(lambda e, s: [], bind="unix:/nonexistent/x.sock", bogus=1)
    with pytest.raises(TypeError, match="preload"):
        oxfcgi.run(lambda e, s: [], bind="unix:/nonexistent/x.sock", preload=True)


# --- the stub and the engine -----------------------------------------------------------------


def test_stub_server_settings_are_the_server_group():
    tree = ast.parse((PACKAGE / "_oxfcgi.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_ServerSettings")
    fields = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    assert fields == settings.names("server")


def test_engine_takes_exactly_the_server_group():
    group = resolve().group("server")
    oxfcgi.Server(lambda e, s: [], group)
    with pytest.raises(TypeError, match=r"unknown server setting.*bogus"):
        oxfcgi.Server(lambda e, s: [], {**group, "bogus": 1})
    for name in group:
        partial = {k: v for k, v in group.items() if k != name}
        with pytest.raises(TypeError, match=f'missing server setting "{name}"'):
            oxfcgi.Server(lambda e, s: [], partial)


def test_engine_defaults_agree_with_the_table():
    for name, value in oxfcgi.Server.engine_defaults().items():
        expected = BY_NAME[name].default
        if name == "roles":
            value = tuple(value)
        assert value == expected, f"Rust's Config::default() has {name}={value!r}, the table {expected!r}"


# --- the README ------------------------------------------------------------------------------


def test_readme_settings_table_is_generated_from_the_table():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings table: scripts/generate-settings.py -->\n", "<!-- end of settings table -->"
    assert begin in readme and end in readme
    shown = readme.split(begin, 1)[1].split(end, 1)[0]
    assert shown == settings.markdown_table(), "README's table differs: python3 scripts/generate-settings.py"


# --- resolving: defaults, code, environment, options -------------------------------------------


def test_precedence_default_code_env_cli():
    env = {"OXFCGI_THREADS": "3", "OXFCGI_MAX_CONNS": "11"}
    r = resolve({"threads": 2, "graceful_timeout": 5.0}, cli={"max_conns": 12}, environ=env)
    assert r.values["threads"] == 3 and r.sources["threads"] == "env OXFCGI_THREADS"
    assert r.values["graceful_timeout"] == 5.0 and r.sources["graceful_timeout"] == "run() argument"
    assert r.values["max_conns"] == 12 and r.sources["max_conns"] == "--max-conns"
    assert r.values["idle_timeout"] == 10.0 and r.sources["idle_timeout"] == "default"
    assert r.values["max_in_flight"] == 64 and "max(16 x threads, 64)" in r.sources["max_in_flight"]
    assert r.values["multithread"] is True


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("threads", "8", 8),
        ("multiplexed", "yes", True),
        ("max_params_size", "64k", 65536),
        ("idle_timeout", "0", 0.0),
        ("socket_mode", "0600", 0o600),
        ("roles", "responder,filter", (1, 3)),
        ("max_requests", "0", None),
        ("log_level", "debug", "DEBUG"),
    ],
)
def test_every_kind_reads_from_the_environment(name, text, value):
    assert resolve(environ={BY_NAME[name].env_var: text}).values[name] == value


def test_a_bad_variable_is_named():
    with pytest.raises(SettingError, match="OXFCGI_THREADS='many'"):
        resolve(environ={"OXFCGI_THREADS": "many"})


def test_old_names_still_work_and_warn(caplog):
    with caplog.at_level("WARNING", logger="oxfcgi"):
        r = resolve({"max_reqs": 5, "request_timeout": 2.0}, environ={})
    assert r.values["max_in_flight"] == 5 and r.values["request_slowlog_timeout"] == 2.0
    assert "max_reqs is now called max_in_flight" in caplog.text
    assert "request_timeout is now request_slowlog_timeout" in caplog.text


def _get_values(address: str) -> dict[str, str]:
    with Connection(address, timeout=5) as conn:
        return conn.get_values()


def test_variables_reach_the_engine_and_options_win(start_server):
    srv = start_server(APP, env={"OXFCGI_MAX_IN_FLIGHT": "7", "OXFCGI_MAX_CONNS": "9"})
    assert _get_values(srv.address) == {"FCGI_MAX_CONNS": "9", "FCGI_MAX_REQS": "7", "FCGI_MPXS_CONNS": "0"}
    srv = start_server(APP, "--max-in-flight", "5", env={"OXFCGI_MAX_IN_FLIGHT": "7"})
    assert _get_values(srv.address)["FCGI_MAX_REQS"] == "5"


def test_backlog_setting_is_the_listen_queue(start_server):
    srv = start_server(APP, "--backlog", "7", "--status-path", "/status")
    status = json.loads(srv.request("GET", "/status", query="json").body)
    assert status["listen queue len"] == 7


def test_print_config_shows_each_source(tmp_path):
    script = tmp_path / "legacy.fcgi"
    script.write_text(
        textwrap.dedent("""\
        from flup.server.fcgi import WSGIServer

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"x"]

        WSGIServer(app, bindAddress="/nonexistent/never.sock", maxThreads=3, debug=True).run()
    """)
    )
    env = {**os.environ, "OXFCGI_GRACEFUL_TIMEOUT": "5", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", str(script), "--max-conns", "9", "--print-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert set(rows) == {s.name for s in SETTINGS}
    assert rows["threads"].split()[1] == "3" and "flup.server.fcgi.WSGIServer(maxThreads=)" in rows["threads"]
    assert rows["debug"].split()[1] == "on" and "WSGIServer(debug=)" in rows["debug"]
    assert rows["graceful_timeout"].split()[1:] == ["5", "s", "env", "OXFCGI_GRACEFUL_TIMEOUT"]
    assert rows["max_conns"].split()[1:] == ["9", "--max-conns"]
    assert rows["keepalive_timeout"].split()[1:] == ["75", "s", "default"]
    # The script's bind is not taken: the socket is this command's business.
    assert rows["bind"].split()[1:] == ["inherited", "default"]
