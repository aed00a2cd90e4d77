"""Checks of a ``module:attr`` target (as ``oxfcgi serve`` and FcgidWrapper load it)."""

from __future__ import annotations

import os
import sys

from .access import Unknown, blocked_fix, ls, path_blocked
from .context import Context
from .imports import probe, report_import
from .interpreter import check_interpreter_access


def check_module(ctx: Context, target: str) -> None:
    r = ctx.report
    interp = ctx.python or sys.executable
    if not check_interpreter_access(ctx, interp, "--python" if ctx.python else "the interpreter"):
        r.skip("the app import", [f"{ctx.user.name} cannot run {interp}"])
        return
    cwd = os.getcwd()
    try:
        b = path_blocked(cwd, ctx.user, "x")
        if b is not None:
            r.fail(
                f"{ctx.user.name} cannot enter the working directory {cwd}",
                [ls(b.path, b.st), "module targets are imported from the working directory"],
                [blocked_fix(b, ctx.user), "or start it from the app's directory (systemd WorkingDirectory=)"],
            )
            return
    except (Unknown, OSError):
        pass
    if not ctx.can_act_as_user:
        r.skip(f"the import as {ctx.user.name}", [f"needs root to switch user; it ran as {ctx.me.name}"])
    res = probe(interp, "module", target, cwd, ctx.minimal_env(), ctx)
    report_import(ctx, res, interp, target, None, cwd)
    d = res.data
    if res.ran and d.get("prefix") != d.get("base_prefix"):
        r.note(
            "virtualenv",
            [
                f"{interp} is the python of the venv {d.get('prefix')}: start the server with it "
                f"({d.get('prefix')}/bin/oxfcgi serve {target}); activation is not needed"
            ],
        )
