"""The interpreter that runs the app: found as execvp would find it, and executable by USER."""

from __future__ import annotations

import os
import shlex
import sys

from .access import Account, Unknown, blocked_fix, ls, path_blocked
from .context import Context


def which(name: str, path: str, who: Account) -> tuple[str | None, list[str]]:
    """execvp's search: the first ``path`` entry holding ``name`` that ``who`` may execute.
    Returns (found, [candidates skipped because not executable])."""
    if "/" in name:
        return (name if os.path.exists(name) else None), []
    skipped: list[str] = []
    for d in path.split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if not os.path.isfile(cand):
            continue
        try:
            if path_blocked(cand, who, "x") is None:
                return cand, skipped
        except (Unknown, OSError):
            pass
        skipped.append(cand)
    return None, skipped


def suggest_interp(ctx: Context) -> str:
    """The interpreter to put in a shebang: --python, or the one running this check."""
    return ctx.python or sys.executable


def replace_shebang_cmd(script: str, interp: str) -> str:
    return f"sed -i '1s|.*|#!{interp}|' {shlex.quote(script)}"


def is_python(path: str) -> bool:
    base = os.path.basename(os.path.realpath(path))
    return base.startswith(("python", "pypy")) or os.path.basename(path).startswith(("python", "pypy"))


def check_interpreter_access(ctx: Context, interp: str, origin: str) -> bool:
    """Interpreter exists and USER may execute it (file and directories)."""
    r = ctx.report
    suggestion = suggest_interp(ctx)
    if not os.path.exists(interp):
        r.fail(
            f"The interpreter {interp} does not exist",
            [
                f"{origin} names {interp}: no such file",
                '(fcgiwrap: "Cannot execute script"; lighttpd: "spawning gw failed"; mod_fcgid: "can\'t run")',
            ],
            [
                replace_shebang_cmd(ctx.script or "", suggestion)
                if origin == "the #! line"
                else f"give the interpreter that has oxfcgi, e.g. --python {suggestion}"
            ],
        )
        return False
    try:
        b = path_blocked(interp, ctx.user, "x")
    except Unknown as e:
        r.skip(f"whether {ctx.user.name} can execute {interp}", f"{ctx.me.name} cannot stat {e.args[0]}")
        return True
    if b is not None:
        if b.is_dir and b.path != os.path.realpath(interp):
            why = f"directory {b.path} is not traversable by {ctx.user.name}"
        else:
            why = f"{ctx.user.name} has no execute permission on it"
        fixes = []
        if b.is_dir and b.path != os.path.realpath(interp):
            venv_py = "/srv/venv/bin/python3"
            then = (
                replace_shebang_cmd(ctx.script or "", venv_py)
                if origin == "the #! line"
                else f"start the app with {venv_py} (--python {venv_py})"
            )
            fixes.append(
                f"use an interpreter {ctx.user.name} can reach, with oxfcgi installed, e.g. a venv "
                f"outside {b.path}: python3 -m venv /srv/venv && /srv/venv/bin/pip install oxfcgi"
            )
            fixes.append(f"  then: {then}")
            fixes.append(f"or open the directory: {blocked_fix(b, ctx.user)}")
        else:
            fixes.append(blocked_fix(b, ctx.user))
        r.fail(
            f"{ctx.user.name} cannot execute the interpreter {interp}",
            [f"{origin}: {interp}", why, ls(b.path, b.st)],
            fixes,
        )
        return False
    real = os.path.realpath(interp)
    r.ok(f"interpreter {interp}" + (f" (-> {real})" if real != interp else "") + f" is executable by {ctx.user.name}")
    return True
