"""Process-level deployment behaviour: what a process manager hands us and how we treat it."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from oxfcgi.client import request

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.deploy_app:application"


def wait_answering(address: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            request(address, "GET", "/")
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{address} never answered")


def spawn_on_fd0(tmp_path: Path, *args: str, close_stdio: bool = False, env=None):
    """Start `python -m oxfcgi serve APP` the way mod_fcgid does: fd 0 is the listening socket."""
    path = str(tmp_path / "fd0.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)

    def close_fds():
        if close_stdio:
            os.close(1)
            os.close(2)

    proc = subprocess.Popen(
        [sys.executable, "-m", "oxfcgi", "serve", *args],
        stdin=listener.fileno(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=close_fds,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=str(tmp_path),
    )
    listener.close()
    return proc, f"unix:{path}"


def report(address: str, path: str = "/") -> dict:
    resp = request(address, "GET", path)
    assert resp.status == 200, resp
    return json.loads(resp.body)


def test_fd0_socket_is_moved_and_stdin_is_harmless(tmp_path):
    proc, address = spawn_on_fd0(tmp_path, APP)
    wait_answering(address, proc)
    info = report(address, "/print")
    assert info["fd0"] == "/dev/null", info
    assert info["stdin_read"] == ""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert b"printed-by-the-app" not in out, "print() must never reach fd 1"
    assert b"printed-by-the-app" in err


def test_closed_stdout_and_stderr_get_dev_null(tmp_path):
    proc, address = spawn_on_fd0(tmp_path, APP, close_stdio=True)
    wait_answering(address, proc)
    info = report(address, "/print")
    assert info["fd1"] == "/dev/null" and info["fd2"] == "/dev/null", info
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_log_file_reopened_on_sigusr1(start_server, tmp_path):
    log = tmp_path / "app.log"
    srv = start_server(APP, "--log-file", str(log))
    report(srv.address, "/print")
    assert "serving on" in log.read_text()
    assert "printed-by-the-app" in log.read_text(), "print() output goes to the log file"
    rotated = tmp_path / "app.log.1"
    log.rename(rotated)
    srv.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not (log.exists() and "log file reopened" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.exists() and "log file reopened" in log.read_text()
    report(srv.address, "/print")
    assert "printed-by-the-app" in log.read_text()
    assert srv.proc.poll() is None, "SIGUSR1 must not stop the server"


def test_pidfile_written_and_removed(start_server, tmp_path):
    pidfile = tmp_path / "oxfcgi.pid"
    srv = start_server(APP, "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(srv.proc.pid)
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
    assert not pidfile.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a socket's group needs root")
def test_socket_group_and_mode(start_server):
    srv = start_server(APP, "--socket-group", "www-data", "--socket-mode", "660")
    st = os.stat(srv.socket_path)
    assert st.st_gid == grp.getgrnam("www-data").gr_gid
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_script_name_setting(start_server):
    srv = start_server(APP, "--script-name", "/app")
    resp = request(
        srv.address,
        "GET",
        "/",
        params={"SCRIPT_NAME": "/app/items/3", "PATH_INFO": None, "REQUEST_URI": "/app/items/3"},
    )
    info = json.loads(resp.body)
    assert (info["script_name"], info["path_info"]) == ("/app", "/items/3")


def test_start_up_failure_under_a_manager_explains_and_backs_off(tmp_path):
    script = tmp_path / "broken.fcgi"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(ROOT / 'python')!r})\n"
        "from oxfcgi import run\nimport module_that_does_not_exist\nrun(None)\n"
    )
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen(1)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)],
        stdin=listener.fileno(),
        capture_output=True,
        timeout=20,
        env={**os.environ, "OXFCGI_LOG_FILE": str(tmp_path / "startup.log")},
    )
    elapsed = time.monotonic() - t0
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "ModuleNotFoundError: No module named 'module_that_does_not_exist'" in err
    assert "failed before it could serve" in err and "oxfcgi check" in err
    assert "module_that_does_not_exist" in (tmp_path / "startup.log").read_text()
    assert elapsed >= 0.9, "backs off so a respawning manager does not flood its log"


def test_cli_load_error_under_a_manager_backs_off(tmp_path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen(1)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "oxfcgi", "serve", "no_such_module:app"],
        stdin=listener.fileno(),
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert b"no_such_module" in proc.stderr
    assert time.monotonic() - t0 >= 0.9


@pytest.fixture(scope="module")
def world_readable_site():
    """oxfcgi for Debian's /usr/bin/python3 in a directory any user can read
    (the test interpreter lives under /root, which other users cannot enter)."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root and Debian's python3")
    base = Path(tempfile.mkdtemp(prefix="oxfcgi-site-", dir="/tmp"))
    shutil.copytree(ROOT / "python" / "oxfcgi", base / "site" / "oxfcgi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "tests" / "apps" / "deploy_app.py", base / "site" / "deploy_app.py")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_user_switch_happens_before_the_app_is_imported(world_readable_site):
    base = world_readable_site
    sock = base / "app.sock"
    proc = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-m",
            "oxfcgi",
            "serve",
            "deploy_app:application",
            "--bind",
            f"unix:{sock}",
            "--user",
            "www-data",
            "--socket-mode",
            "666",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(base / "site")},
        cwd=str(base),
    )
    try:
        wait_answering(f"unix:{sock}", proc)
        info = report(f"unix:{sock}")
        www = 33
        assert info["uid"] == www and info["imported_as_uid"] == www, info
        assert os.stat(sock).st_uid == 0, "bound as root, before switching"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_signals_inherited_as_ignored_still_stop_the_server(tmp_path):
    """Dispositions survive exec: lighttpd leaves SIGQUIT ignored, a background job SIGINT."""
    path = str(tmp_path / "ign.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)

    def ignore():
        for s in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)

    for signum in (signal.SIGTERM, signal.SIGQUIT):
        proc = subprocess.Popen(
            [sys.executable, "-m", "oxfcgi", "serve", APP],
            stdin=listener.fileno(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=ignore,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wait_answering(f"unix:{path}", proc)
        t0 = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 2.0
    listener.close()


def test_max_requests_under_mod_fcgid_warns(tmp_path):
    """mod_fcgid's sockets are <FcgidIPCDir>/<pid>.<n>: a self-imposed max_requests there means 500s."""
    path = str(tmp_path / "4242.0")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxfcgi", "serve", APP, "--max-requests", "100"],
        stdin=listener.fileno(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    listener.close()
    wait_answering(f"unix:{path}", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert b"FcgidMaxRequestsPerProcess 100" in err


def test_processes_seeing_one_change_stop_one_after_another(tmp_path):
    """reload_on_change under a spawner with several processes (lighttpd max-procs): the
    second stops only TURN_GAP after the first has exited, so one of them always answers."""
    import subprocess
    import sys

    changed = tmp_path / "site.fcgi"
    changed.write_text("")
    code = (
        "import sys, time; from oxfcgi import _reload; "
        f"_reload._take_turn({str(changed)!r}, 10); print(time.time(), flush=True); time.sleep(float(sys.argv[1]))"
    )
    first = subprocess.Popen([sys.executable, "-c", code, "0.5"], stdout=subprocess.PIPE, text=True)
    first_turn = float(first.stdout.readline())
    second = subprocess.Popen([sys.executable, "-c", code, "0"], stdout=subprocess.PIPE, text=True)
    second_turn = float(second.stdout.readline())
    first.wait(10)
    second.wait(10)
    assert second_turn - first_turn >= 0.5 + 1.0 - 0.05, (first_turn, second_turn)
