"""Running the checks of ``oxfcgi check`` (:func:`run_checks`) and its command (:func:`command`).

Kept apart from :mod:`oxfcgi.check` itself, which the ``oxfcgi`` CLI imports to add the
``check`` subcommand: the checks import ``subprocess``, ``tempfile``, ``json`` and
``dataclasses``, and ``oxfcgi serve`` should not carry them (resident memory of every
worker; issue 11).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TextIO

from .access import Account
from .context import Context, env_diff_note
from .interpreter import check_interpreter_access
from .module import check_module
from .report import Report
from .script import check_script
from .sockets import check_socket

__all__ = ["command", "run_checks"]


def _is_script_target(target: str) -> bool:
    """A script the web server runs (a path, or a file that exists; ``app.fcgi`` that does not
    exist too, so that its absence is reported), not a ``module:attr`` such as ``mysite.wsgi``."""
    from .._loader import split_target

    base, _, is_file = split_target(target)
    return is_file or base.endswith((".py", ".fcgi", ".cgi"))


def run_checks(
    target: str,
    user: str | None = None,
    socket_path: str | None = None,
    python: str | None = None,
    environ: dict[str, str] | None = None,
) -> Report:
    """Run every check for ``target`` and return the :class:`Report`.

    :param target: a script path (``.fcgi``, ``.py``, any path with ``/``) or ``module:attr``.
    :param user: the account the web server runs the app as (name or uid); default the
        current user. ``KeyError`` if unknown.
    :param socket_path: a unix socket to check (exists, answers, USER can connect); default none.
    :param python: the interpreter that runs the app (FcgidWrapper, ``oxfcgi serve``); default:
        the script's ``#!`` line, or the running interpreter for ``module:attr``.
    :param environ: the shell environment to compare with mod_fcgid's; default ``os.environ``.
    """
    me = Account.lookup(os.geteuid())
    who = Account.lookup(user) if user is not None else me
    header = f"oxfcgi check {target}\n  as {who.describe()}"
    if who.uid != me.uid and os.geteuid() != 0:
        header += f"\n  (you are {me.name}, not root: some checks cannot be done as {who.name})"
    report = Report(header)
    ctx = Context(report, who, me, python, dict(os.environ if environ is None else environ))
    if python:
        check_interpreter_access(ctx, python, "--python")
    if _is_script_target(target):
        check_script(ctx, target)
    else:
        check_module(ctx, target)
    if socket_path:
        check_socket(ctx, socket_path)
    env_diff_note(ctx)
    return report


def command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``check`` subcommand: print the report of ``args`` (see :func:`oxfcgi.check.add_parser`)
    on ``out`` (default ``sys.stdout``); returns the exit status (0, 1, or 2 for a usage error)."""
    out = sys.stdout if out is None else out
    if args.user is not None:
        try:
            Account.lookup(args.user)
        except KeyError:
            print(f"oxfcgi check: no such user {args.user!r}", file=sys.stderr)
            return 2
    python = args.python
    if python is not None:
        if "/" not in python:
            python = shutil.which(python) or python
        if not os.path.isfile(python):
            print(f"oxfcgi check: --python {args.python}: no such file", file=sys.stderr)
            return 2
        python = os.path.abspath(python)
    report = run_checks(args.target, args.user, args.socket, python)
    out.write(report.render())
    out.flush()
    return report.exit_status
