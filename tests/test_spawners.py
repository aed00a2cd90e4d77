"""oxfcgi started by the classic FastCGI spawners from Debian's packages.

- spawn-fcgi (package spawn-fcgi): creates the socket, puts it on fd 0 and execs (``-n``)
  or forks (fds 1/2 to /dev/null, prints the pid, exits; ``-F N`` forks N processes
  sharing the socket);
- ``cgi-fcgi -start -connect`` (package libfcgi-bin): the same with fds 1/2 *closed*; and
  ``cgi-fcgi -bind -connect`` as a CGI-to-FastCGI client;
- ``systemd-socket-activate`` (package systemd): systemd's socket activation protocol
  (``LISTEN_FDS``/``LISTEN_PID``, fd 3), with ``--accept`` (Accept=yes) and ``NOTIFY_SOCKET``.
  The command, socket and working directory come from the units ``oxfcgi config systemd``
  prints.

Requests go through oxfcgi's own client (``oxfcgi.client``) and, where cheap, through nginx.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from oxfcgi import client
from tests.support.fixtures import need_binary
from tests.support.servers import ROOT, child_env, cmdline, kill_survivors, stop_process, wait_gone

FLASK_APP = "tests.apps.flask_app:app"
PROBE_APP = "tests.apps.spawn_app:app"


# ---------------------------------------------------------------------------------
# helpers


def wait_request(address: str, path: str = "/", timeout: float = 20.0, **kw) -> client.Response:
    """A request, retried while the socket is not there yet or the app still loads."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.request(address, "GET", path, timeout=10, **kw)
        except (client.ConnectError, client.ProtocolError, ConnectionError) as e:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no answer from {address} within {timeout} s: {e!r}") from e
            time.sleep(0.05)


def expect_json(resp: client.Response, status: int = 200, log: str = ""):
    assert resp.status == status, (
        f"status {resp.status}, expected {status}; body {resp.body[:1000]!r}; stderr {resp.stderr[:2000]!r}\n{log}"
    )
    return json.loads(resp.body)


@pytest.fixture
def reaper():
    """Collects pids this test started; SIGKILLs any still running at the end."""
    pids: list[int] = []
    yield pids
    kill_survivors(pids)


def short_tmp(tmp_path: Path) -> Path:
    """A directory for unix sockets (sun_path is at most 107 bytes)."""
    if len(str(tmp_path)) < 70:
        return tmp_path
    import tempfile

    return Path(tempfile.mkdtemp(prefix="oxfcgi-"))


# ---------------------------------------------------------------------------------
# spawn-fcgi


def test_spawn_fcgi_no_fork_exec_in_place(tmp_path, reaper, start_nginx):
    """``spawn-fcgi -n`` execs oxfcgi in its own process, with the socket on fd 0."""
    binary = need_binary("spawn-fcgi")
    sock = short_tmp(tmp_path) / "sf.sock"
    log = tmp_path / "spawn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "-s", str(sock), "-M", "0660", "-n", "--", sys.executable, "-m", "oxfcgi", "serve", FLASK_APP],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=str(tmp_path),
        )
    reaper.append(proc.pid)
    try:
        index = expect_json(wait_request(f"unix:{sock}", "/app/", script_name="/app"), log=log.read_text())
        assert index["script_name"] == "/app" and index["item_url"] == "/app/items/3"
        item = expect_json(client.request(f"unix:{sock}", "GET", "/items/8"))
        assert item["self_url"] == "/items/8" and item["path_info"] == "/items/8"
        form = expect_json(
            client.request(
                f"unix:{sock}",
                "POST",
                "/form",
                body=b"a=1&b=2",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        )
        assert form["form"] == {"a": ["1"], "b": ["2"]}
        # Exec in place: the process spawn-fcgi became is the one serving.
        assert expect_json(client.request(f"unix:{sock}", "GET", "/pid"))["pid"] == proc.pid
        assert cmdline(proc.pid)[1:4] == ["-m", "oxfcgi", "serve"]
        assert (os.stat(sock).st_mode & 0o777) == 0o660

        # The same socket behind Debian's nginx (tests/support/nginx.py, generated app locations).
        nginx = start_nginx(str(sock))
        result = nginx.get("/app/items/5")
        assert result.status == 200, (result.status, result.body[:500], nginx.error_log())
        assert result.json()["self_url"] == "/app/items/5"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _spawned_pids(output: str) -> list[int]:
    return [int(m) for m in re.findall(r"child spawned successfully: PID: (\d+)", output)]


def test_spawn_fcgi_forking_mode(tmp_path, reaper):
    """Without ``-n`` spawn-fcgi forks oxfcgi (fds 1/2 -> /dev/null), prints its pid, exits."""
    binary = need_binary("spawn-fcgi")
    sock = short_tmp(tmp_path) / "sf.sock"
    pidfile = tmp_path / "app.pid"
    out = subprocess.run(
        [
            binary,
            "-s",
            str(sock),
            "-P",
            str(pidfile),
            "-d",
            str(ROOT),
            "--",
            sys.executable,
            "-m",
            "oxfcgi",
            "serve",
            PROBE_APP,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(OXFCGI_PROBE_TAG="forked"),
        timeout=30,
    )
    pids = _spawned_pids(out.stdout + out.stderr)
    reaper.extend(pids)
    assert out.returncode == 0 and len(pids) == 1, (out.returncode, out.stdout, out.stderr)
    (pid,) = pids
    assert int(pidfile.read_text()) == pid

    info = expect_json(wait_request(f"unix:{sock}", "/x", script_name=""))
    assert info["pid"] == pid
    assert info["cwd"] == str(ROOT)  # -d
    assert info["process_env"]["OXFCGI_PROBE_TAG"] == "forked"  # the caller's environment
    # fd 0 was the socket: oxfcgi moved it and put /dev/null there; 1 and 2 are spawn-fcgi's /dev/null.
    assert info["fds"] == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null"}, info["fds"]
    # print() to a /dev/null stderr must not disturb anything.
    expect_json(client.request(f"unix:{sock}", "GET", "/stderr?token=x"))

    os.kill(pid, signal.SIGTERM)
    assert not wait_gone([pid], 5.0), f"oxfcgi {pid} still runs 5 s after SIGTERM"


def test_spawn_fcgi_two_children_share_the_socket(tmp_path, reaper):
    """``-F 2``: two oxfcgi processes accept on one socket; both serve; SIGTERM stops both."""
    binary = need_binary("spawn-fcgi")
    sock = short_tmp(tmp_path) / "sf.sock"
    out = subprocess.run(
        [
            binary,
            "-s",
            str(sock),
            "-F",
            "2",
            "--",
            sys.executable,
            "-m",
            "oxfcgi",
            "serve",
            FLASK_APP,
            "--threads",
            "2",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(tmp_path),
        timeout=30,
    )
    pids = _spawned_pids(out.stdout + out.stderr)
    reaper.extend(pids)
    assert out.returncode == 0 and len(pids) == 2 and len(set(pids)) == 2, (out.stdout, out.stderr)
    wait_request(f"unix:{sock}", "/pid")

    seen: set[int] = set()
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(4):
                data = expect_json(client.request(f"unix:{sock}", "GET", f"/sleep?ms=150&n={n}&i={i}", timeout=30))
                with lock:
                    seen.add(data["pid"])
        except Exception as e:
            with lock:
                errors.append(repr(e))

    for _round in range(5):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if seen == set(pids):
            break
    assert not errors, errors
    assert seen == set(pids), f"served by {seen}; spawn-fcgi started {pids}"

    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert not wait_gone(pids, 5.0), "oxfcgi still runs 5 s after SIGTERM"


# ---------------------------------------------------------------------------------
# libfcgi's cgi-fcgi


def write_fcgi_script(path: Path, app_import: str) -> Path:
    """A classic ``.fcgi`` script (shebang = the test interpreter) ending in ``run(app)``."""
    module, _, attr = app_import.partition(":")
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"from {module} import {attr} as application\n"
        "from oxfcgi import run\n"
        "run(application)\n"
    )
    path.chmod(0o755)
    return path


def cgi_env(**params: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "QUERY_STRING": "",
    }
    env.update(params)
    return env


def parse_cgi(output: bytes) -> tuple[str, dict, bytes]:
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    assert sep, f"no CGI header block in {output[:500]!r}"
    headers = {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers.get("status", "200 OK"), headers, body


def test_cgi_fcgi_start_and_bind(tmp_path, reaper):
    """``cgi-fcgi -start -connect SOCK app.fcgi`` starts the app with fd 0 = socket (fds 1/2
    closed); ``cgi-fcgi -bind -connect SOCK`` turns a CGI request into FastCGI."""
    binary = need_binary("cgi-fcgi")
    sock = short_tmp(tmp_path) / "cf.sock"
    script = write_fcgi_script(tmp_path / "flask.fcgi", FLASK_APP)
    started = subprocess.run(
        [binary, "-start", "-connect", str(sock), str(script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=child_env(),
        cwd=str(tmp_path),
        timeout=30,
    )
    assert started.returncode == 0, started
    pid = expect_json(wait_request(f"unix:{sock}", "/pid"))["pid"]
    reaper.append(pid)

    def bind(method: str, script_name: str, path_info: str, query: str = "", body: bytes = b"", **extra):
        env = cgi_env(
            REQUEST_METHOD=method,
            SCRIPT_NAME=script_name,
            PATH_INFO=path_info,
            QUERY_STRING=query,
            REQUEST_URI=script_name + path_info + (f"?{query}" if query else ""),
            **extra,
        )
        if body:
            env["CONTENT_LENGTH"] = str(len(body))
        done = subprocess.run(
            [binary, "-bind", "-connect", str(sock)], input=body, capture_output=True, env=env, timeout=30
        )
        assert done.returncode == 0, done
        return parse_cgi(done.stdout)

    status, headers, body = bind("GET", "/app", "/items/9")
    assert status.startswith("200"), (status, body)
    assert headers["content-type"] == "application/json"
    item = json.loads(body)
    assert item["self_url"] == "/app/items/9" and item["script_name"] == "/app" and item["path_info"] == "/items/9"

    form_body = b"name=Grace&x=1&x=2"
    status, _, body = bind("POST", "", "/form", body=form_body, CONTENT_TYPE="application/x-www-form-urlencoded")
    assert status.startswith("200"), (status, body)
    assert json.loads(body)["form"] == {"name": ["Grace"], "x": ["1", "2"]}

    status, _, body = bind("GET", "", "/query", query="q=a+b&n=1")
    assert json.loads(body)["args"] == {"q": ["a b"], "n": ["1"]}

    os.kill(pid, signal.SIGTERM)
    assert not wait_gone([pid], 5.0), f"oxfcgi {pid} still runs 5 s after SIGTERM"


def test_cgi_fcgi_start_with_closed_stdout_and_stderr(tmp_path, reaper):
    """cgi-fcgi -start closes fds 1 and 2: oxfcgi must keep 0-2 valid (/dev/null) so that no
    socket lands there, and printing to stderr must not break the app."""
    binary = need_binary("cgi-fcgi")
    sock = short_tmp(tmp_path) / "cf.sock"
    script = write_fcgi_script(tmp_path / "probe.fcgi", PROBE_APP)
    started = subprocess.run(
        [binary, "-start", "-connect", str(sock), str(script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=child_env(),
        cwd=str(tmp_path),
        timeout=30,
    )
    assert started.returncode == 0, started
    info = expect_json(wait_request(f"unix:{sock}", "/stderr?token=closed-fds"))
    reaper.append(info["pid"])
    assert info["fds"] == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null"}, info["fds"]
    # Many requests: connection sockets never land on fd 1/2 (they would receive print output).
    for i in range(20):
        again = expect_json(client.request(f"unix:{sock}", "GET", f"/stderr?token={i}"))
        assert again["pid"] == info["pid"]
    os.kill(info["pid"], signal.SIGTERM)
    assert not wait_gone([info["pid"]], 5.0)


# ---------------------------------------------------------------------------------
# systemd socket activation (systemd-socket-activate, with the generated units)


def systemd_units(tmp_path: Path, app: str, sock: Path) -> tuple[list[str], str, str]:
    """(ExecStart argv, ListenStream, WorkingDirectory) of ``oxfcgi config systemd``."""
    from oxfcgi.config import systemd as sd

    args = [
        sys.executable,
        "-m",
        "oxfcgi",
        "config",
        "systemd",
        "--app",
        app,
        "--socket",
        str(sock),
        "--python",
        sys.executable,
        "--workdir",
        str(ROOT),
    ]
    out = subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    units = sd.split(out.stdout)
    socket_unit = next(text for path, text in units.items() if path.endswith(".socket"))
    service = next(text for path, text in units.items() if path.endswith(".service"))
    (listen,) = sd.unit_values(socket_unit, "ListenStream")
    (workdir,) = sd.unit_values(service, "WorkingDirectory")
    assert sd.unit_values(service, "Type") == ["notify"]
    assert sd.unit_values(socket_unit, "Accept") in ([], ["no"])
    return sd.exec_start_argv(service), listen, workdir


class Activator:
    """``systemd-socket-activate -l LISTEN [-a] [-E ...] -- ExecStart...`` and its output."""

    def __init__(
        self,
        tmp_path: Path,
        argv: list[str],
        listen: str,
        workdir: str,
        *,
        accept: bool = False,
        env: dict | None = None,
    ):
        binary = need_binary("systemd-socket-activate")
        self.listen = listen
        self.log_path = tmp_path / "activate.log"
        cmd = [binary, "-l", listen]
        if accept:
            cmd.append("--accept")
        for name, value in (env or {}).items():
            cmd += ["-E", f"{name}={value}"]
        cmd += ["--", *argv]
        with open(self.log_path, "wb") as out:
            # Like systemd: a clean environment (systemd-socket-activate passes only PATH and
            # the -E variables anyway) and WorkingDirectory= from the unit.
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        deadline = time.monotonic() + 10
        while not os.path.exists(listen):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


@pytest.fixture
def activators():
    started: list[Activator] = []
    yield started
    for a in started:
        a.stop()


def test_systemd_socket_activation_generated_units(tmp_path, activators):
    """The first connection starts ExecStart (exec'd in place with LISTEN_FDS=1, fd 3); it
    serves, hides LISTEN_FDS/LISTEN_PID from the app, and stops on SIGTERM."""
    sock = short_tmp(tmp_path) / "sd.sock"
    argv, listen, workdir = systemd_units(tmp_path, PROBE_APP, sock)
    assert argv[:4] == [sys.executable, "-m", "oxfcgi", "serve"] and "--bind" not in argv
    act = Activator(tmp_path, argv, listen, workdir)
    activators.append(act)
    # Not started before the first connection.
    time.sleep(0.3)
    assert cmdline(act.proc.pid)[0].endswith("systemd-socket-activate"), cmdline(act.proc.pid)

    info = expect_json(wait_request(f"unix:{listen}", "/first", headers={"Authorization": "Basic eDp5"}), log=act.log())
    assert info["pid"] == act.proc.pid  # exec'd in place
    assert cmdline(act.proc.pid)[1:4] == ["-m", "oxfcgi", "serve"]
    assert info["cwd"] == workdir
    assert info["environ"]["PATH_INFO"] == "/first"
    assert info["environ"]["HTTP_AUTHORIZATION"] == "Basic eDp5"
    # sd_listen_fds(unset_environment=1): the app (and its children) must not see them.
    assert info["process_env"]["LISTEN_FDS"] is None, info["process_env"]
    assert info["process_env"]["LISTEN_PID"] is None, info["process_env"]
    for i in range(5):
        assert expect_json(client.request(f"unix:{listen}", "GET", f"/n{i}"))["pid"] == act.proc.pid

    act.proc.send_signal(signal.SIGTERM)
    assert act.proc.wait(timeout=5) == 0, act.log()


def test_systemd_socket_activation_serves_flask(tmp_path, activators, start_nginx):
    sock = short_tmp(tmp_path) / "sd.sock"
    argv, listen, workdir = systemd_units(tmp_path, FLASK_APP, sock)
    act = Activator(tmp_path, argv, listen, workdir)
    activators.append(act)
    item = expect_json(wait_request(f"unix:{listen}", "/app/items/4", script_name="/app"), log=act.log())
    assert item["self_url"] == "/app/items/4" and item["index_url"] == "/app/"
    nginx = start_nginx(listen)
    result = nginx.get("/items/6")
    assert result.status == 200, (result.status, result.body[:500], nginx.error_log(), act.log())
    assert result.json()["self_url"] == "/items/6" and result.json()["script_name"] == ""


def test_systemd_accept_yes_is_refused_with_a_clear_message(tmp_path, activators):
    """Accept=yes passes a *connected* socket per connection: oxfcgi must refuse it, naming
    Accept=yes, instead of serving nothing or hanging."""
    sock = short_tmp(tmp_path) / "sd.sock"
    argv, listen, workdir = systemd_units(tmp_path, PROBE_APP, sock)
    act = Activator(tmp_path, argv, listen, workdir, accept=True)
    activators.append(act)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(listen)
        conn.settimeout(20)
        # The spawned oxfcgi exits; the connection is closed without a FastCGI answer.
        try:
            data = conn.recv(1024)
        except (TimeoutError, ConnectionResetError) as e:
            data = repr(e).encode()
    assert data == b"", data
    deadline = time.monotonic() + 10
    while "Accept=" not in act.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = act.log()
    assert "Accept=yes" in log, log
    assert "Accept=no" in log, log  # and says what to use instead
    assert "Traceback" not in log, log


def test_systemd_notify_ready(tmp_path, activators):
    """Type=notify: with NOTIFY_SOCKET set, oxfcgi sends READY=1 once it serves."""
    base = short_tmp(tmp_path)
    sock = base / "sd.sock"
    notify_path = base / "notify.sock"
    argv, listen, workdir = systemd_units(tmp_path, PROBE_APP, sock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(15)
        act = Activator(tmp_path, argv, listen, workdir, env={"NOTIFY_SOCKET": str(notify_path)})
        activators.append(act)
        # Activation: the first connection starts oxfcgi; that request is answered.
        with socket.socket(socket.AF_UNIX) as first:
            first.connect(listen)
            messages = []
            try:
                while not any(b"READY=1" in m for m in messages):
                    messages.append(notify.recv(4096))
            except TimeoutError:
                pass
        assert any(b"READY=1" in m.split(b"\n") for m in messages), (messages, act.log())
        ready = next(m for m in messages if b"READY=1" in m)
        # MAINPID, if sent, is the serving process.
        fields = dict(line.split(b"=", 1) for line in ready.split(b"\n") if b"=" in line)
        if b"MAINPID" in fields:
            assert int(fields[b"MAINPID"]) == act.proc.pid
        info = expect_json(wait_request(f"unix:{listen}", "/after-ready"), log=act.log())
        assert info["pid"] == act.proc.pid
        act.proc.send_signal(signal.SIGTERM)
        assert act.proc.wait(timeout=5) == 0, act.log()
        # STOPPING=1 is optional; nothing else must arrive that claims readiness again.
