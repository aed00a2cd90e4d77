"""``oxfcgi check``: every check is provoked in a temp dir and must name the cause and the fix.

Temp dirs are made under /tmp with mode 0755 (not pytest's 0700 tmp_path), so checks run
``--user www-data`` see only the permissions the test sets up.
"""

from __future__ import annotations

import argparse
import grp
import io
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import oxfcgi
from oxfcgi import check
from oxfcgi.check import MOD_FCGID_PATH, main

IS_ROOT = os.geteuid() == 0
OWNER = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"  # of files we create
OXFCGI_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(oxfcgi.__file__)))

try:
    pwd.getpwnam("www-data")
    HAVE_WWW_DATA = True
except KeyError:
    HAVE_WWW_DATA = False

needs_root_www = pytest.mark.skipif(
    not (IS_ROOT and HAVE_WWW_DATA), reason="needs root and a www-data user to check as another user"
)

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]
"""


@pytest.fixture
def tmp():
    """A fresh 0755 directory under /tmp."""
    d = tempfile.mkdtemp(prefix="oxfcgi-check-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The checks compare with the shell environment: start every test from a known one."""
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + MOD_FCGID_PATH)


def script(
    directory: Path,
    name: str = "app.fcgi",
    body: str = APP + "\nfrom oxfcgi import run\nrun(app)\n",
    shebang: str | None = sys.executable,
    mode: int = 0o755,
    newline: str = "\n",
    prefix: bytes = b"",
) -> Path:
    path = directory / name
    text = (f"#!{shebang}\n" if shebang is not None else "") + body.lstrip("\n")
    path.write_bytes(prefix + text.replace("\n", newline).encode())
    os.chmod(path, mode)
    return path


def run_check(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main([str(a) for a in argv], out=out)
    return status, out.getvalue()


def blocks(text: str) -> dict[str, str]:
    """Problem blocks by title line ('FAIL  title' / 'WARN  title') -> the whole block."""
    result, current = {}, None
    for line in text.splitlines():
        if line.startswith(("FAIL  ", "WARN  ")):
            current = line
            result[current] = line + "\n"
        elif current and line.startswith("      "):
            result[current] += line + "\n"
        else:
            current = None
    return result


def only_block(text: str, words: str) -> str:
    found = [b for title, b in blocks(text).items() if words.lower() in title.lower()]
    assert len(found) == 1, f"expected one block titled with {words!r}:\n{text}"
    return found[0]


# --- all good ---------------------------------------------------------------------------


@pytest.mark.parametrize("guarded", [False, True])
def test_all_good_script_exits_0(tmp, guarded):
    tail = (
        "\nif __name__ == '__main__':\n    from oxfcgi import run\n    run(app)\n"
        if guarded
        else "\nfrom oxfcgi import run\nrun(app)\n"
    )
    path = script(tmp, body=APP + tail)
    status, out = run_check(path)
    assert status == 0, out
    assert "FAIL" not in out and "WARN" not in out, out
    assert "the app imports as" in out
    assert "the script calls run()" in out
    assert "Result: nothing that would make it fail (exit status 0)" in out


def test_flup_style_wsgiserver_script_is_good(tmp):
    path = script(tmp, body=APP + "\nfrom flup.server.fcgi import WSGIServer\nWSGIServer(app).run()\n")
    status, out = run_check(path)
    assert status == 0, out
    assert "the script calls run()" in out


# --- the script file --------------------------------------------------------------------


def test_missing_shebang(tmp):
    path = script(tmp, shebang=None)
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "no #! line")
    assert "Exec format error" in block
    assert f"sed -i '1i #!{sys.executable}' {path}" in block


def test_crlf_line_endings(tmp):
    path = script(tmp, newline="\r\n")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "CRLF")
    assert f"#!{sys.executable}\\r" in block  # what the kernel sees
    assert f"sed -i 's/\\r$//' {path}" in block


def test_utf8_bom_before_shebang(tmp):
    path = script(tmp, prefix=b"\xef\xbb\xbf")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "byte order mark")
    assert "EF BB BF" in block
    assert f"sed -i '1s/^\\xEF\\xBB\\xBF//' {path}" in block


def test_shebang_interpreter_missing(tmp):
    path = script(tmp, shebang="/usr/bin/python9")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "does not exist")
    assert "/usr/bin/python9: no such file" in block
    assert f"sed -i '1s|.*|#!{sys.executable}|' {path}" in block


def test_shebang_interpreter_not_executable(tmp):
    fake = tmp / "python3"
    fake.write_text("not really python\n")
    os.chmod(fake, 0o644)
    path = script(tmp, shebang=str(fake))
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "cannot execute the interpreter")
    assert f"-rw-r--r-- {OWNER} {fake}" in block
    assert f"chmod u+x {fake}" in block or f"chmod o+x {fake}" in block


def test_env_python3_resolves_to_python_without_oxfcgi(tmp, monkeypatch):
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import oxfcgi"], env={"PATH": MOD_FCGID_PATH}, capture_output=True
    )
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has oxfcgi here")
    path = script(tmp, shebang="/usr/bin/env python3")
    status, out = run_check(path)
    assert status == 1
    assert "on mod_fcgid's PATH" in out and "-> /usr/bin/python3" in out
    # The shell's python3 (this interpreter, first on PATH) has oxfcgi: that is the cause.
    block = only_block(out, "picks another python")
    assert "/usr/bin/python3, which does not" in block
    assert f"sed -i '1s|.*|#!{shutil.which('python3')}|' {path}" in block


def test_interpreter_without_oxfcgi(tmp):
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import oxfcgi"], env={"PATH": MOD_FCGID_PATH}, capture_output=True
    )
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has oxfcgi here")
    path = script(tmp, shebang="/usr/bin/python3")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "/usr/bin/python3 has no oxfcgi")
    assert 'import oxfcgi": ModuleNotFoundError' in block
    if os.path.exists("/usr/lib/python3/dist-packages") and any(
        os.path.exists(f"/usr/lib/python3.{minor}/EXTERNALLY-MANAGED") for minor in range(8, 20)
    ):
        # Debian refuses `pip install` into its python (PEP 668): a venv, named in the #! line.
        assert "-m pip install" not in block.replace("/srv/venv/bin/pip install", "")
        assert "externally-managed-environment" in block
        assert "/usr/bin/python3 -m venv /srv/venv && /srv/venv/bin/pip install oxfcgi" in block
        assert f"sed -i '1s|.*|#!/srv/venv/bin/python3|' {path}" in block
    else:
        assert "/usr/bin/python3 -m pip install oxfcgi" in block
        assert f"sed -i '1s|.*|#!{sys.executable}|' {path}" in block


def test_activated_venv_not_seen_by_web_server(tmp, monkeypatch):
    """#!/usr/bin/env python3 works in a shell with an activated venv, not under mod_fcgid."""
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import oxfcgi"], env={"PATH": MOD_FCGID_PATH}, capture_output=True
    )
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has oxfcgi here")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    monkeypatch.setenv("PATH", f"{venv}/bin:{MOD_FCGID_PATH}")
    path = script(tmp, shebang="/usr/bin/env python3")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "picks another python")
    assert f"in your shell `python3` is {venv}/bin/python3 (VIRTUAL_ENV={venv}, activated)" in block
    assert f"sed -i '1s|.*|#!{venv}/bin/python3|' {path}" in block
    assert f"VIRTUAL_ENV={venv}" in out.split("Notes:")[1]  # listed as not passed


def test_venv_python_in_shebang_is_fine(tmp):
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    path = script(tmp, shebang=f"{venv}/bin/python3")
    status, out = run_check(path)
    assert status == 0, out
    assert f"belongs to the virtualenv {venv}" in out


def test_no_exec_bit(tmp):
    path = script(tmp, mode=0o644)
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "no exec bit")
    assert f"-rw-r--r-- {OWNER} {path}" in block
    assert "is the script executable?" in block
    assert f"chmod 755 {path}" in block


def test_no_exec_bit_is_only_a_warning_with_python(tmp):
    """Run through an interpreter (FcgidWrapper, oxfcgi serve), the exec bit does not matter."""
    path = script(tmp, mode=0o644)
    status, out = run_check(path, "--python", sys.executable)
    assert status == 0, out
    assert "WARN  The script has no exec bit" in out


def test_group_writable_script_warns_about_suexec(tmp):
    path = script(tmp, mode=0o775)
    status, out = run_check(path)
    assert status == 0, out
    block = only_block(out, "writable by its group or others")
    assert "suEXEC refuses" in block and f"chmod go-w {path}" in block


@needs_root_www
def test_script_not_readable_by_user(tmp):
    path = script(tmp, mode=0o700)
    status, out = run_check(path, "--user", "www-data")
    assert status == 1
    block = only_block(out, "not readable by www-data")
    assert f"-rwx------ root:root {path}" in block
    assert f"chmod 755 {path}" in block
    # the same file is fine for its owner
    assert run_check(path)[0] == 0


@needs_root_www
def test_parent_directory_not_traversable(tmp):
    private = tmp / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    path = script(private)
    status, out = run_check(path, "--user", "www-data")
    assert status == 1
    block = only_block(out, "not traversable by www-data")
    assert f"drwx------ root:root {private}" in block
    assert f"chmod o+x {private}" in block
    assert "the app import" in out.split("Not checked:")[1]


@needs_root_www
def test_interpreter_unreachable_by_user(tmp):
    hidden = tmp / "hidden"
    hidden.mkdir()
    os.chmod(hidden, 0o700)
    interp = hidden / "python3"
    os.symlink(sys.executable, interp)
    path = script(tmp, shebang=str(interp))
    status, out = run_check(path, "--user", "www-data")
    assert status == 1
    block = only_block(out, "www-data cannot execute the interpreter")
    assert f"directory {hidden} is not traversable by www-data" in block
    assert f"chmod o+x {hidden}" in block


# --- importing the app as USER with mod_fcgid's environment ------------------------------


def test_import_error_shows_traceback(tmp):
    path = script(tmp, body="import check_no_such_module_xyz\n" + APP + "\nfrom oxfcgi import run\nrun(app)\n")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "fails to import")
    assert f'File "{path}", line 2' in block
    assert "ModuleNotFoundError: No module named 'check_no_such_module_xyz'" in block
    assert f"env -i PATH={MOD_FCGID_PATH} {path}" in block  # how to reproduce


def test_syntax_error(tmp):
    path = script(tmp, body="def broken(:\n    pass\n")
    status, out = run_check(path)
    assert status == 1
    assert "SyntaxError" in only_block(out, "fails to import")


def test_script_calls_sys_exit(tmp):
    path = script(tmp, body="import sys\nsys.exit(3)\n")
    status, out = run_check(path)
    assert status == 1
    assert "SystemExit(3)" in only_block(out, "sys.exit()")


def test_run_called_with_non_callable(tmp):
    path = script(tmp, body="from oxfcgi import run\nrun(42)\n")
    status, out = run_check(path)
    assert status == 1
    assert "got a int object" in only_block(out, "not callable")


@needs_root_www
def test_import_runs_as_the_user(tmp):
    """A module only root can read: fine as root, a PermissionError traceback as www-data.

    /usr/bin/python3 is used because www-data can run it; the script finds oxfcgi through its
    own sys.path.insert (the documented suEXEC-proof way), which the check follows."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    # A world-readable copy of the package: the checkout itself may sit where
    # www-data cannot go (a 0700 clone directory, /root).
    site = tmp / "site"
    shutil.copytree(OXFCGI_PARENT + "/oxfcgi", site / "oxfcgi", ignore=shutil.ignore_patterns("__pycache__"))
    for p in [site, *site.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    assert (
        subprocess.run(
            [
                shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin") or "runuser",
                "-u",
                "www-data",
                "--",
                "/usr/bin/python3",
                "-c",
                f"import sys; sys.path.insert(0, {str(site)!r}); import oxfcgi",
            ],
            capture_output=True,
            env={"PATH": MOD_FCGID_PATH},
        ).returncode
        == 0
    ), "www-data cannot import the world-readable copy of oxfcgi"
    helper = tmp / "check_secret_helper.py"
    helper.write_text(APP)
    os.chmod(helper, 0o600)
    body = (
        f"import sys\nsys.path.insert(0, {str(site)!r})\n"
        "from check_secret_helper import app\nfrom oxfcgi import run\nrun(app)\n"
    )
    path = script(tmp, shebang="/usr/bin/python3", body=body)
    status, out = run_check(path)
    assert status == 0, out
    assert "oxfcgi is found through the script's own sys.path" in out
    status, out = run_check(path, "--user", "www-data")
    assert status == 1
    block = only_block(out, "fails to import")
    assert "as www-data" in block
    assert "PermissionError: [Errno 13] Permission denied" in block
    assert "check_secret_helper.py" in block


def test_imports_only_thanks_to_pythonpath(tmp, monkeypatch):
    lib = tmp / "lib"
    lib.mkdir()
    (lib / "check_pp_helper.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", str(lib))
    path = script(tmp, body="from check_pp_helper import app\nfrom oxfcgi import run\nrun(app)\n")
    status, out = run_check(path)
    assert status == 1
    block = only_block(out, "only thanks to PYTHONPATH")
    assert "No module named 'check_pp_helper'" in block
    assert f"with your PYTHONPATH={lib} it imports" in block
    assert f"import sys; sys.path.insert(0, '{lib}')" in block
    assert f"FcgidInitialEnv PYTHONPATH {lib}" in block and "suEXEC" in block
    assert f"PYTHONPATH={lib}" in out.split("Notes:")[1]
    # with the path inserted in the script, as the fix says, it passes
    script(
        tmp,
        body=f"import sys; sys.path.insert(0, {str(lib)!r})\n"
        "from check_pp_helper import app\nfrom oxfcgi import run\nrun(app)\n",
    )
    assert run_check(path)[0] == 0


def test_script_never_calls_run(tmp):
    path = script(tmp, body=APP)
    status, out = run_check(path)
    assert status == 0  # a warning: it would start and exit
    block = only_block(out, "never calls run()")
    assert "would load and exit at once" in block
    assert "from oxfcgi import run; run(app)" in block


def test_flask_dev_server_run_is_not_a_fastcgi_run(tmp):
    path = script(tmp, body=APP + "\nclass App:\n    def run(self): pass\n\nApp().run()\n")
    status, out = run_check(path)
    assert status == 0
    assert "WARN  The script never calls run()" in out


def test_import_that_hangs_times_out(tmp, monkeypatch):
    monkeypatch.setattr(check.imports, "IMPORT_TIMEOUT", 1.0)
    path = script(tmp, body="import time\ntime.sleep(30)\n")
    status, out = run_check(path)
    assert status == 1
    assert "database/network at import time" in only_block(out, "did not finish within 1 s")


def test_shell_wrapper_is_noted(tmp):
    path = script(tmp, shebang="/bin/sh", body=f"exec {sys.executable} /srv/app/app.py\n")
    status, out = run_check(path)
    assert status == 0, out
    assert "not Python (a wrapper?)" in out
    assert "oxfcgi check --python" in out


def test_missing_script(tmp):
    status, out = run_check(tmp / "nope.fcgi")
    assert status == 1
    assert f"{tmp}/nope.fcgi: no such file" in only_block(out, "does not exist")


# --- module:app targets -----------------------------------------------------------------


@pytest.fixture
def modapp(tmp, monkeypatch):
    (tmp / "check_modapp.py").write_text(APP + "\nNOT_CALLABLE = 42\n")
    monkeypatch.chdir(tmp)
    return tmp


def test_module_target_good(modapp):
    status, out = run_check("check_modapp:app")
    assert status == 0, out
    assert "the app imports as" in out and "'app': a callable function" in out


def test_module_target_not_importable(modapp):
    status, out = run_check("check_no_such_modapp:app")
    assert status == 1
    block = only_block(out, "module check_no_such_modapp cannot be imported")
    assert "no module named 'check_no_such_modapp'" in block
    assert "WorkingDirectory=" in block


def test_module_target_not_callable(modapp):
    status, out = run_check("check_modapp:NOT_CALLABLE")
    assert status == 1
    block = only_block(out, "application is not callable")
    assert "is not callable (got int)" in block
    assert "check_modapp:application" in block.split("fix:")[1]


def test_module_target_missing_attribute(modapp):
    status, out = run_check("check_modapp:nothing_here")
    assert status == 1
    block = only_block(out, "no such application attribute")
    assert "has no attribute 'nothing_here'" in block


def test_module_target_only_with_pythonpath(tmp, monkeypatch):
    lib = tmp / "lib"
    lib.mkdir()
    (lib / "check_pp_modapp.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", str(lib))
    monkeypatch.chdir(tmp)
    status, out = run_check("check_pp_modapp:app")
    assert status == 1
    block = only_block(out, "only thanks to PYTHONPATH")
    assert f"Environment=PYTHONPATH={lib}" in block


# --- --socket ---------------------------------------------------------------------------


class FastCGIStub:
    """Listens on a unix socket and answers any record with an empty FCGI_GET_VALUES_RESULT."""

    def __init__(self, path: Path, mode: int = 0o660):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, mode)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(struct.pack(">BBHHBx", 1, 10, 0, 0, 0))
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture
def good_script(tmp):
    return script(tmp)


def test_socket_missing(tmp, good_script):
    status, out = run_check(good_script, "--socket", tmp / "app.sock")
    assert status == 1
    block = only_block(out, "No socket")
    assert "(2: No such file or directory)" in block
    assert f"oxfcgi serve APP --bind unix:{tmp}/app.sock" in block


def test_socket_path_is_not_a_socket(tmp, good_script):
    (tmp / "app.sock").write_text("")
    status, out = run_check(good_script, "--socket", tmp / "app.sock")
    assert status == 1
    block = only_block(out, "not a socket")
    assert f"-rw-r--r-- {OWNER} {tmp}/app.sock" in block
    assert f"rm {tmp}/app.sock" in block


def test_socket_stale(tmp, good_script):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp / "app.sock"))
    s.close()  # the file stays, nobody listens
    status, out = run_check(good_script, "--socket", tmp / "app.sock")
    assert status == 1
    block = only_block(out, "Nothing listens")
    assert "(111: Connection refused)" in block
    assert f"--bind unix:{tmp}/app.sock" in block


def test_socket_answers(tmp, good_script):
    stub = FastCGIStub(tmp / "app.sock")
    try:
        status, out = run_check(good_script, "--socket", tmp / "app.sock")
    finally:
        stub.close()
    assert status == 0, out
    assert "accepts connections and answers FCGI_GET_VALUES" in out


@needs_root_www
def test_socket_permission_denied_for_web_server_user(tmp, good_script):
    stub = FastCGIStub(tmp / "app.sock", mode=0o600)
    try:
        status, out = run_check(good_script, "--socket", tmp / "app.sock", "--user", "www-data")
        os.chmod(tmp / "app.sock", 0o666)
        _, out2 = run_check(good_script, "--socket", tmp / "app.sock", "--user", "www-data")
    finally:
        stub.close()
    assert status == 1
    block = only_block(out, "www-data cannot connect to the socket")
    assert f"srw------- root:root {tmp}/app.sock" in block
    assert "(13: Permission denied)" in block
    assert "connect() as www-data (tried): Permission denied" in block
    assert "--socket-mode" in block and "www-data" in block.split("fix:")[1]
    # once others may write, www-data really connects (tried in a child running as www-data)
    assert "www-data can connect to" in out2 and "(tried: connect() as it succeeded)" in out2


@needs_root_www
def test_socket_directory_not_traversable(tmp, good_script):
    run_dir = tmp / "run"
    run_dir.mkdir()
    os.chmod(run_dir, 0o700)
    stub = FastCGIStub(run_dir / "app.sock", mode=0o666)
    try:
        status, out = run_check(good_script, "--socket", run_dir / "app.sock", "--user", "www-data")
    finally:
        stub.close()
    assert status == 1
    block = only_block(out, "cannot reach the socket")
    assert f"drwx------ root:root {run_dir}" in block
    assert f"chmod o+x {run_dir}" in block
    assert "connect() as www-data (tried): Permission denied" in block


# --- users, usage, wiring ----------------------------------------------------------------


def test_other_user_without_root_lists_what_was_not_checked(tmp, monkeypatch):
    if not IS_ROOT:
        pytest.skip("simulates a non-root caller from root")
    me = pwd.getpwnam("www-data").pw_uid if HAVE_WWW_DATA else 65534
    monkeypatch.setattr(os, "geteuid", lambda: me)
    path = script(tmp)
    _, out = run_check(path, "--user", "root")
    assert "some checks cannot be done as root" in out
    not_checked = out.split("Not checked:")[1]
    assert "the import as root" in not_checked and "needs root" in not_checked


def test_unknown_user_is_a_usage_error(tmp, good_script, capsys):
    status, out = run_check(good_script, "--user", "no-such-user-xyz")
    assert status == 2
    assert "no such user 'no-such-user-xyz'" in capsys.readouterr().err


def test_missing_python_is_a_usage_error(tmp, good_script, capsys):
    status, _ = run_check(good_script, "--python", "/nonexistent/python")
    assert status == 2
    assert "--python /nonexistent/python: no such file" in capsys.readouterr().err


def test_no_target_is_a_usage_error(capsys):
    assert main([], out=io.StringIO()) == 2


def test_add_parser_wires_a_check_subcommand(tmp, good_script, capsys):
    parser = argparse.ArgumentParser(prog="oxfcgi")
    sub = parser.add_subparsers(dest="command")
    check.add_parser(sub)
    args = parser.parse_args(["check", str(good_script), "--user", pwd.getpwuid(os.geteuid()).pw_name])
    assert args.func(args) == 0
    assert "Result: nothing that would make it fail" in capsys.readouterr().out


def test_python_m_entry_point(tmp):
    path = script(tmp, mode=0o644)
    proc = subprocess.run([sys.executable, "-m", "oxfcgi.check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"chmod 755 {path}" in proc.stdout


# --- permission arithmetic ---------------------------------------------------------------


def _st(mode: int, uid: int, gid: int):
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_allowed_uses_exactly_one_class():
    who = check.Account("u", 1000, 1000, frozenset({1000, 33}), "/home/u")
    # owner bits apply to the owner even when "other" would allow
    assert not check.allowed(_st(stat.S_IFREG | 0o077, 1000, 0), who, "r")
    # group via a supplementary group
    assert check.allowed(_st(stat.S_IFREG | 0o040, 0, 33), who, "r")
    assert not check.allowed(_st(stat.S_IFREG | 0o004 | 0o000, 0, 33), who, "r")
    assert check.allowed(_st(stat.S_IFREG | 0o004, 0, 0), who, "r")
    root = check.Account("root", 0, 0, frozenset({0}), "/root")
    assert check.allowed(_st(stat.S_IFREG | 0o000, 5, 5), root, "rw")
    assert not check.allowed(_st(stat.S_IFREG | 0o644, 5, 5), root, "x")
    assert check.allowed(_st(stat.S_IFDIR | 0o000, 5, 5), root, "x")
