"""What to do about a start-up failure, said so that it can be followed as written: the
real user name and the absolute path of the interpreter, and for a missing environment
variable the way each web server or spawner passes one."""

from __future__ import annotations

import linecache
import os
import pwd
import sys
import traceback
from types import TracebackType

__all__ = ["check_command", "environment_hint"]


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_command(script: str) -> str:
    """The doctor for ``script`` as this process's user, with this interpreter (the one
    that has oxfcgi), runnable from any shell."""
    return f"{sys.executable} -m oxfcgi check {script} --user {_user_name(os.getuid())}"


def _innermost(tb: TracebackType | None) -> traceback.FrameSummary | None:
    """The innermost frame outside the os module (os.environ's __getitem__ raises the
    KeyError; the line that asked for the variable is the caller's)."""
    for frame in reversed(traceback.extract_tb(tb)):
        if frame.filename not in ("<frozen os>", os.__file__):
            return frame
    return None


def environment_hint(exc: BaseException) -> str | None:
    """For a ``KeyError`` from ``os.environ[...]`` (or ``os.environ.get`` made strict by the
    app): which variable is missing and how each server passes it; None for anything else."""
    if not isinstance(exc, KeyError) or not exc.args or not isinstance(exc.args[0], str):
        return None
    frame = _innermost(exc.__traceback__)
    line = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)) if frame else ""
    if "environ" not in (line or "") and "getenv" not in (line or ""):
        return None
    name = exc.args[0]
    return (
        f"The application reads the environment variable {name}, which this process does not have. A web "
        "server or spawner passes only what it is told to, so set it where the app is started:\n"
        f"  Apache mod_fcgid:   FcgidInitialEnv {name} value\n"
        f"  nginx + systemd:    Environment={name}=value in the service unit (nginx passes the app no environment;\n"
        f"                      fastcgi_param {name} value; gives it to each request's environ instead)\n"
        f'  lighttpd:           "bin-environment" => ( "{name}" => "value" ) in fastcgi.server\n'
        f"  spawn-fcgi, shell:  env {name}=value spawn-fcgi ... / export {name}=value\n"
        f"  H2O fastcgi.spawn:  setenv: {{ {name}: value }}"
    )
