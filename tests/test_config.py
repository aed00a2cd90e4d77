"""``oxfcgi config nginx|lighttpd|systemd``: what the generated configurations contain, and
that the real tools accept them (``nginx -t``, ``lighttpd -tt``, ``systemd-analyze verify``).

That the configurations also *work* is shown by the integration tests that run them:
tests/test_nginx.py (tests/support/nginx.py pastes the generated locations), tests/test_lighttpd.py
and the systemd tests of tests/test_spawners.py.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oxfcgi import settings
from oxfcgi.config import ConfigOptions, generate
from oxfcgi.config import nginx as nginx_config
from oxfcgi.config import systemd as systemd_config
from tests.support.fixtures import need_binary
from tests.support.generated import code_lines, commented_command
from tests.support.servers import ROOT

FLASK_APP = "tests.apps.flask_app:app"
PROBE_APP = "tests.apps.spawn_app:app"
PY = "/usr/bin/python3"


def gen(target: str, **kw) -> str:
    kw.setdefault("python", PY)
    return generate(ConfigOptions(target=target, **kw))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "oxfcgi", "config", *args], capture_output=True, text=True, env=env, timeout=60
    )


# ---------------------------------------------------------------------------------
# nginx


def test_nginx_prefix_unix_socket():
    text = gen("nginx", app=FLASK_APP, socket="/run/oxfcgi/flask.sock", prefix="/app")
    lines = code_lines(text)
    assert lines[:4] == [
        "upstream oxfcgi_app {",
        "server unix:/run/oxfcgi/flask.sock;",
        "keepalive 8;    # idle FastCGI connections kept open per nginx worker",
        "}",
    ]
    location = lines[lines.index("location /app/ {") :]
    assert location == [
        "location /app/ {",
        "include fastcgi_params;",
        "fastcgi_split_path_info ^(/app)(/.*)$;",
        "fastcgi_param SCRIPT_NAME $fastcgi_script_name;",
        "fastcgi_param PATH_INFO $fastcgi_path_info;",
        "client_max_body_size 100m;",
        "fastcgi_read_timeout 300s;",
        "fastcgi_send_timeout 300s;",
        "fastcgi_keep_conn on;",
        "fastcgi_pass oxfcgi_app;",
        "}",
    ]
    # The limits are stated, from --max-body-size and --timeout.
    assert "Request bodies up to 100 MiB" in text
    small = gen("nginx", app=FLASK_APP, socket="/run/oxfcgi/flask.sock", prefix="/app", max_body_size=0, timeout=20)
    assert "client_max_body_size 0;" in code_lines(small) and "fastcgi_read_timeout 20s;" in code_lines(small)
    # Where each block goes.
    assert "# --- in the http { } block" in text and "# --- in a server { } block" in text
    http_part, server_part = nginx_config.split(text)
    assert "upstream oxfcgi_app" in http_part and "location" not in code_lines(http_part)[0]
    assert code_lines(server_part)[0] == "location /app/ {"
    # How to start oxfcgi on that socket for nginx's www-data workers.
    argv = commented_command(text, "oxfcgi serve")
    assert argv[:5] == [PY, "-m", "oxfcgi", "serve", FLASK_APP]
    assert argv[argv.index("--bind") + 1] == "unix:/run/oxfcgi/flask.sock"
    assert argv[argv.index("--socket-group") + 1] == "www-data"
    assert argv[argv.index("--socket-mode") + 1] == "660"


def test_nginx_root_tcp():
    text = gen("nginx", app=FLASK_APP, socket="127.0.0.1:9000", prefix="/")
    lines = code_lines(text)
    assert "server 127.0.0.1:9000;" in lines
    location = lines[lines.index("location / {") :]
    assert location[:4] == [
        "location / {",
        "include fastcgi_params;",
        'fastcgi_param SCRIPT_NAME "";',
        "fastcgi_param PATH_INFO $fastcgi_script_name;",
    ]
    assert "fastcgi_split_path_info" not in text
    assert "fastcgi_pass oxfcgi_root;" in lines and "fastcgi_keep_conn on;" in lines
    argv = commented_command(text, "oxfcgi serve")
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:9000"
    assert "--socket-mode" not in argv and "--socket-group" not in argv


def test_nginx_ipv6_and_prefix_with_regex_characters():
    text = gen("nginx", socket="[::1]:9001", prefix="/my.app/")
    lines = code_lines(text)
    assert "server [::1]:9001;" in lines
    assert "location /my.app/ {" in lines
    assert r"fastcgi_split_path_info ^(/my\.app)(/.*)$;" in lines
    assert "upstream oxfcgi_my_app {" in lines


def test_nginx_commented_command_parses_with_the_cli():
    from oxfcgi.cli import build_parser

    text = gen("nginx", app=FLASK_APP, socket="/run/oxfcgi/a.sock", prefix="/app", user="app", group="web")
    argv = commented_command(text, "oxfcgi serve")
    args = build_parser().parse_args(argv[3:])
    assert args.target == FLASK_APP and args.bind == "unix:/run/oxfcgi/a.sock"
    assert args.user == "app" and args.group == "web" and args.socket_group == "www-data"
    assert args.socket_mode == 0o660


# ---------------------------------------------------------------------------------
# lighttpd


def test_lighttpd_prefix_bin_path():
    text = gen("lighttpd", app=FLASK_APP, socket="/tmp/x/app.sock", prefix="/app", workdir="/srv/site")
    lines = code_lines(text)
    assert lines[0] == 'server.modules += ( "mod_fastcgi" )'
    assert lines[1] == '$HTTP["url"] =~ "^/app(/|$)" {'
    assert lines[2] == "server.max-request-size = 102400", "100 MiB, in KiB, for the mount's URLs"
    assert lines[3] == 'fastcgi.server = ( "/app" => (('
    entries = dict((k.strip().strip('"'), v.strip().rstrip(",")) for k, v in (ln.split("=>", 1) for ln in lines[4:11]))
    assert entries == {
        "socket": '"/tmp/x/app.sock"',
        "bin-path": f'"{PY} -m oxfcgi serve {FLASK_APP}"',
        "bin-environment": '( "PYTHONPATH" => "/srv/site" )',
        "check-local": '"disable"',
        "max-procs": "2",
        "read-timeout": "300",
        "write-timeout": "300",
    }
    assert "fix-root-scriptname" not in "\n".join(lines)
    assert "--bind" not in "\n".join(lines)  # bin-path: the socket is fd 0


def test_lighttpd_root_and_variant_without_bin_path():
    text = gen("lighttpd", app=FLASK_APP, socket="/tmp/x/app.sock", prefix="/", workdir="/srv/site")
    lines = code_lines(text)
    assert lines[1:4] == ['$HTTP["url"] =~ "^/" {', "server.max-request-size = 102400", "}"]
    assert lines[4] == 'fastcgi.server += ( "/" => (('
    assert '"fix-root-scriptname" => "enable",' in lines
    assert sum(ln.startswith("$HTTP") for ln in lines) == 1, "only the body limit is scoped"
    # The standalone variant is entirely commented out and has no bin-path.
    variant = text[text.index("# Variant") :]
    assert all(ln.startswith("#") for ln in variant.strip().splitlines())
    assert '#     "socket"              => "/tmp/x/app.sock",' in variant
    assert '"bin-path"' not in variant
    assert '"fix-root-scriptname" => "enable",' in variant


def test_lighttpd_tcp_and_fcgi_file():
    text = gen("lighttpd", app="/srv/site/app.fcgi", socket="127.0.0.1:9000", prefix="/")
    lines = code_lines(text)
    assert '"host"                => "127.0.0.1",' in lines
    assert '"port"                => 9000,' in lines
    # A .fcgi runs itself (shebang + run(app)); no PYTHONPATH needed: cwd is its directory.
    assert '"bin-path"            => "/srv/site/app.fcgi",' in lines
    assert "bin-environment" not in text and '"socket"' not in "\n".join(lines)


def test_lighttpd_default_socket_goes_where_lighttpd_can_create_it():
    text = gen("lighttpd", app=FLASK_APP, prefix="/app")
    assert '"socket"          => "/run/lighttpd/oxfcgi-flask_app.sock",' in code_lines(text)
    # The variant (oxfcgi started separately) keeps the socket oxfcgi listens on.
    assert '"socket"        => "/run/oxfcgi/app.sock",' in text


# ---------------------------------------------------------------------------------
# systemd


def test_systemd_unix_socket_units():
    text = gen("systemd", app=FLASK_APP, socket="/run/oxfcgi/app.sock", prefix="/app", workdir="/srv/site", user="app")
    units = systemd_config.split(text)
    assert sorted(units) == [
        "/etc/systemd/system/oxfcgi-flask_app.service",
        "/etc/systemd/system/oxfcgi-flask_app.socket",
    ]
    sock = units["/etc/systemd/system/oxfcgi-flask_app.socket"]
    service = units["/etc/systemd/system/oxfcgi-flask_app.service"]
    v = systemd_config.unit_values
    assert v(sock, "ListenStream") == ["/run/oxfcgi/app.sock"]
    assert v(sock, "SocketUser") == ["app"] and v(sock, "SocketGroup") == ["www-data"]
    assert v(sock, "SocketMode") == ["0660"]
    assert v(sock, "Accept") == []  # the default, Accept=no
    assert v(sock, "WantedBy") == ["sockets.target"]
    assert v(service, "Type") == ["notify"]
    assert v(service, "User") == ["app"]
    assert v(service, "WorkingDirectory") == ["/srv/site"]
    assert v(service, "KillSignal") == ["SIGTERM"]
    assert int(v(service, "TimeoutStopSec")[0]) > 30  # longer than oxfcgi's graceful timeout
    assert v(service, "Requires") == ["oxfcgi-flask_app.socket"]
    # --prefix is used, not ignored: the app is mounted there whatever the web server sends.
    assert systemd_config.exec_start_argv(service) == [PY, "-m", "oxfcgi", "serve", FLASK_APP, "--script-name", "/app"]


def test_systemd_tcp_socket_and_file_target():
    text = gen("systemd", app="/srv/site/app.fcgi", socket="127.0.0.1:9000", group="web")
    units = systemd_config.split(text)
    sock = units["/etc/systemd/system/oxfcgi-app.socket"]
    service = units["/etc/systemd/system/oxfcgi-app.service"]
    v = systemd_config.unit_values
    assert v(sock, "ListenStream") == ["127.0.0.1:9000"]
    assert v(sock, "SocketMode") == [] and v(sock, "SocketUser") == []
    assert v(service, "WorkingDirectory") == ["/srv/site"]
    assert v(service, "Group") == ["web"]
    assert systemd_config.exec_start_argv(service) == [PY, "-m", "oxfcgi", "serve", "/srv/site/app.fcgi"]


# ---------------------------------------------------------------------------------
# CLI


# ---------------------------------------------------------------------------------
# HAProxy, Caddy, H2O (run for real in tests/test_fastcgi_clients.py and tests/test_multihost.py)


def test_haproxy_prefix_sections_and_frontend_line():
    from oxfcgi.config import haproxy

    text = gen("haproxy", app=FLASK_APP, prefix="/app", max_in_flight=32)
    sections, frontend = haproxy.split(text)
    lines = code_lines(sections)
    assert lines[0] == "fcgi-app oxfcgi_app"
    for expected in (
        "path-info ^(/app)(/.*)?$",
        "pass-header Authorization",
        "option keep-conn",
        "log-stderr global",
        "use-fcgi-app oxfcgi_app",
        "option httpchk GET /oxfcgi-ping",
        "http-check expect string pong",
        "http-reuse aggressive",
        "timeout server 300s",
        "server s1 /var/lib/haproxy/oxfcgi/app.sock proto fcgi maxconn 32 check inter 2s",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert not any("mpxs-conns" in line for line in lines)
    assert code_lines(frontend) == ["use_backend oxfcgi_app if { path /app } || { path_beg /app/ }"]
    argv = commented_command(text, "oxfcgi serve")
    assert argv[argv.index("--ping-path") + 1] == "/oxfcgi-ping"
    assert argv[argv.index("--max-in-flight") + 1] == "32"
    assert argv[argv.index("--socket-group") + 1] == "haproxy"


def test_haproxy_multiplexed_backends_and_web_server_addrs():
    from oxfcgi.config import haproxy
    from tests.support.generated import commented_commands

    text = gen(
        "haproxy",
        backends=["10.0.0.11:9000", "10.0.0.12:9000"],
        web_server_addrs="10.0.0.1",
        multiplexed=True,
    )
    sections, frontend = haproxy.split(text)
    lines = code_lines(sections)
    assert "option mpxs-conns" in " ".join(lines) and any(ln.startswith("http-reuse always") for ln in lines)
    servers = [ln for ln in lines if ln.startswith("server ")]
    maxconn = settings.default_max_in_flight()  # the backends' max_in_flight
    assert servers == [
        f"server s1 10.0.0.11:9000 proto fcgi maxconn {maxconn} check inter 2s",
        f"server s2 10.0.0.12:9000 proto fcgi maxconn {maxconn} check inter 2s",
    ]
    assert code_lines(frontend) == ["default_backend oxfcgi_root"]
    commands = commented_commands(text, "oxfcgi serve")
    assert [c[0] for c in commands] == ["FCGI_WEB_SERVER_ADDRS=10.0.0.1"] * 2
    assert [c[c.index("--bind") + 1] for c in commands] == ["10.0.0.11:9000", "10.0.0.12:9000"]
    assert all("--multiplexed" in c for c in commands)


def test_nginx_upstream_with_several_backends():
    text = gen("nginx", backends=["10.0.0.11:9000", "[fd00::12]:9000"])
    assert code_lines(text)[:4] == [
        "upstream oxfcgi_root {",
        "server 10.0.0.11:9000;",
        "server [fd00::12]:9000;",
        "keepalive 8;    # idle FastCGI connections kept open per nginx worker",
    ]


def test_caddy_prefix_and_root():
    from oxfcgi.config import caddy

    site = code_lines(caddy.site_lines(gen("caddy", socket="/run/oxfcgi/a.sock", prefix="/app", timeout=30)))
    assert site[:3] == ["@oxfcgi_app path /app /app/*", "request_body @oxfcgi_app {", "max_size 104857600"]
    assert "reverse_proxy @oxfcgi_app unix//run/oxfcgi/a.sock {" in site
    assert "split /app" in site and "flush_interval -1" in site and "read_timeout 30s" in site
    root = code_lines(caddy.site_lines(gen("caddy", socket="127.0.0.1:9000", max_body_size=0)))
    assert root[0] == "reverse_proxy 127.0.0.1:9000 {"
    assert not any(ln.startswith(("split", "request_body", "@")) for ln in root)


def test_h2o_connect_and_spawn():
    from oxfcgi.config import h2o

    text = gen("h2o", socket="/run/oxfcgi/a.sock", prefix="/app", timeout=20)
    top, paths = h2o.split(text)
    assert code_lines(top) == ["limit-request-body: 104857600"]
    assert code_lines(paths)[:4] == ['"/app":', "fastcgi.connect:", 'port: "/run/oxfcgi/a.sock"', "type: unix"]
    assert "fastcgi.timeout.io: 20000   # ms H2O waits for the app (`--timeout`)" in code_lines(paths)
    argv = commented_command(text, "oxfcgi serve")
    assert argv[argv.index("--script-name") + 1] == "/app"  # H2O sends SCRIPT_NAME empty

    spawn = code_lines(h2o.split(gen("h2o", app="/srv/site.fcgi", spawn=True, user="web", workdir="/srv"))[1])
    assert spawn[:2] == ['"/":', "fastcgi.spawn:"]
    assert spawn[2] == f'command: "cd /srv && exec {PY} -m oxfcgi serve /srv/site.fcgi"'
    assert spawn[3] == 'user: "web"'


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("caddy", {"multiplexed": True}, "--multiplexed is for haproxy"),
        ("lighttpd", {"backends": ["10.0.0.1:9000"]}, "--backend is for haproxy and nginx"),
        ("nginx", {"spawn": True}, "--spawn is for h2o"),
        ("haproxy", {"backends": ["/run/a.sock"]}, "give the host's address and port"),
        ("haproxy", {"backends": ["0.0.0.0:9000"]}, "give the host's address and port"),
        ("haproxy", {"backends": ["10.0.0.1:9000", "10.0.0.1:9000"]}, "the same address is given twice"),
        ("haproxy", {"web_server_addrs": "10.0.0.1, lb.example"}, "'lb.example' is not an IP address"),
        ("haproxy", {"max_in_flight": 0}, "--max-in-flight must be at least 1"),
        ("h2o", {"socket": "unix:@abstract"}, "abstract"),
    ],
)
def test_options_a_target_cannot_use_are_refused(target, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        gen(target, **options)


def test_cli_prints_the_same_as_generate():
    out = cli(
        "nginx", "--app", FLASK_APP, "--socket", "/tmp/a.sock", "--prefix", "app/", "--python", PY, "--workdir", "/srv"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == gen("nginx", app=FLASK_APP, socket="/tmp/a.sock", prefix="/app", workdir="/srv")
    for target in ("lighttpd", "systemd", "haproxy", "caddy", "h2o"):
        out = cli(target, "--app", FLASK_APP, "--python", PY, "--workdir", "/srv")
        assert out.returncode == 0, out.stderr
        assert out.stdout == gen(target, app=FLASK_APP, workdir="/srv")


def test_cli_rejects_unknown_target_and_bad_socket():
    assert cli("iis").returncode == 2
    out = cli("nginx", "--socket", "unix:@abstract")
    assert out.returncode == 2 and "abstract" in out.stderr


# ---------------------------------------------------------------------------------
# The real tools accept the generated configurations


def nginx_test_config(tmp_path: Path, port: int, snippets: list[str]) -> Path:
    base = tmp_path / "nginx"
    (base / "tmp").mkdir(parents=True)
    shutil.copyfile("/etc/nginx/fastcgi_params", base / "fastcgi_params")
    http_parts, server_parts = zip(*(nginx_config.split(s) for s in snippets), strict=True)
    conf = base / "nginx.conf"
    conf.write_text(
        f"pid {base}/nginx.pid;\nerror_log {base}/error.log;\nevents {{}}\nhttp {{\n"
        f"    client_body_temp_path {base}/tmp/body; fastcgi_temp_path {base}/tmp/fcgi;\n"
        f"    proxy_temp_path {base}/tmp/proxy; uwsgi_temp_path {base}/tmp/uwsgi; scgi_temp_path {base}/tmp/scgi;\n"
        f"    access_log off;\n"
        + "".join(http_parts)
        + f"    server {{\n        listen 127.0.0.1:{port};\n"
        + "".join(server_parts)
        + "    }\n}\n"
    )
    return conf


def nginx_t(conf: Path) -> subprocess.CompletedProcess:
    binary = need_binary("nginx")
    return subprocess.run(
        [binary, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nginx_t_accepts_generated_snippets(tmp_path):
    snippets = [
        gen("nginx", app=FLASK_APP, socket=str(tmp_path / "a.sock"), prefix="/app"),
        gen("nginx", app=FLASK_APP, socket="127.0.0.1:9000", prefix="/"),
        gen("nginx", app=FLASK_APP, socket="[::1]:9001", prefix="/v6.app"),
    ]
    conf = nginx_test_config(tmp_path, 8089, snippets)
    out = nginx_t(conf)
    assert out.returncode == 0, out.stderr + conf.read_text()
    assert "test is successful" in out.stderr
    assert "[warn]" not in out.stderr and "[emerg]" not in out.stderr, out.stderr


def test_nginx_t_catches_a_broken_snippet(tmp_path):
    """Control: the check above can fail."""
    broken = gen("nginx", socket=str(tmp_path / "a.sock"), prefix="/app").replace(
        "fastcgi_keep_conn on;", "fastcgi_keep_conn on"
    )
    out = nginx_t(nginx_test_config(tmp_path, 8089, [broken]))
    assert out.returncode != 0 and "[emerg]" in out.stderr


def lighttpd_tt(tmp_path: Path, snippets: list[str]) -> subprocess.CompletedProcess:
    from tests.support.lighttpd import write_config

    binary = need_binary("lighttpd")
    conf = write_config(tmp_path / "lighttpd", snippets)
    return subprocess.run([binary, "-tt", "-f", str(conf)], capture_output=True, text=True, timeout=60)


def test_lighttpd_tt_accepts_generated_configs(tmp_path):
    snippets = [
        gen("lighttpd", app=FLASK_APP, socket=str(tmp_path / "r.sock"), prefix="/", python=sys.executable),
        gen("lighttpd", app=FLASK_APP, socket=str(tmp_path / "a.sock"), prefix="/app", python=sys.executable),
        gen("lighttpd", app=FLASK_APP, socket="127.0.0.1:9000", prefix="/tcp", python=sys.executable),
    ]
    out = lighttpd_tt(tmp_path, snippets)
    # lighttpd -tt exits 0 even for some errors (e.g. a bin-path that cannot run): it must print nothing.
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


def test_lighttpd_tt_catches_a_bad_bin_path(tmp_path):
    """Control: a bin-path interpreter that does not exist is reported."""
    bad = gen("lighttpd", app=FLASK_APP, socket=str(tmp_path / "a.sock"), prefix="/app", python="/nonexistent/python3")
    out = lighttpd_tt(tmp_path, [bad])
    assert 'invalid "bin-path"' in out.stdout + out.stderr


def systemd_verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    binary = need_binary("systemd-analyze")
    paths = []
    for path, unit in systemd_config.split(text).items():
        target = tmp_path / os.path.basename(path)
        target.write_text(unit)
        paths.append(str(target))
    return subprocess.run([binary, "verify", *paths], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))


def test_systemd_analyze_verify_accepts_generated_units(tmp_path):
    for i, (socket_spec, app) in enumerate(
        ((str(tmp_path / "app.sock"), FLASK_APP), ("127.0.0.1:9000", str(ROOT / "tests/apps/spawn_app.py")))
    ):
        d = tmp_path / str(i)
        d.mkdir()
        text = gen("systemd", app=app, socket=socket_spec, python=sys.executable, workdir=str(ROOT))
        out = systemd_verify(d, text)
        problems = [ln for ln in (out.stdout + out.stderr).splitlines() if "oxfcgi-" in ln]
        assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_systemd_analyze_verify_catches_a_bad_unit(tmp_path):
    """Control: a wrong value is reported (systemd-analyze still exits 0 for it)."""
    text = gen("systemd", app=FLASK_APP, socket=str(tmp_path / "a.sock"), python=sys.executable)
    out = systemd_verify(tmp_path, text.replace("Type=notify", "Type=notifyy"))
    assert "oxfcgi-flask_app.service" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------
# The commented `oxfcgi serve` command of the nginx config, run as written


def test_nginx_commented_serve_command_runs_as_written(tmp_path, start_nginx):
    """Run the command from the config's comment (as root, switching to --user) and reach
    the app through nginx with the generated locations, Authorization included."""
    if os.geteuid() != 0:
        pytest.skip("the commented command is run as root (it sets the socket group and switches user)")
    try:
        www_gid = grp.getgrnam("www-data").gr_gid
    except KeyError:
        pytest.skip("no www-data group on this machine")
    sock = tmp_path / "run" / "app.sock"
    # --user root: the test interpreter may live where www-data cannot read it.
    text = gen(
        "nginx", app=PROBE_APP, socket=str(sock), prefix="/app", python=sys.executable, workdir=str(ROOT), user="root"
    )
    argv = commented_command(text, "oxfcgi serve")
    mkdir = commented_command(text, "mkdir -p")
    assert mkdir[:2] == ["mkdir", "-p"] and mkdir[2] == str(sock.parent)
    subprocess.run(mkdir[:3], check=True)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        st = os.stat(sock)
        assert st.st_gid == www_gid and (st.st_mode & 0o777) == 0o660, (oct(st.st_mode), st.st_gid)
        nginx = start_nginx(str(sock))
        result = nginx.get("/app/x/y?z=1", headers={"Authorization": "Bearer t0ken"})
        assert result.status == 200, (result.status, result.body[:300], nginx.error_log(), log.read_text())
        info = json.loads(result.body)
        assert info["environ"]["SCRIPT_NAME"] == "/app" and info["environ"]["PATH_INFO"] == "/x/y"
        assert info["environ"]["HTTP_AUTHORIZATION"] == "Bearer t0ken"
        root = json.loads(nginx.get("/other").body)
        assert root["environ"]["SCRIPT_NAME"] == "" and root["environ"]["PATH_INFO"] == "/other"
        assert root["environ"]["HTTP_AUTHORIZATION"] is None
    finally:
        proc.terminate()
        proc.wait(10)
