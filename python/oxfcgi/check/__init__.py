"""``oxfcgi check``: find what would make a FastCGI deployment fail, before the web server does.

    oxfcgi check TARGET [--user USER] [--socket PATH] [--python PATH]

TARGET is a script the web server runs (``/srv/app/app.fcgi``, ``app.py``) or a WSGI
application ``module:attr`` (as given to ``oxfcgi serve``). Every problem is reported as
one block: a title, what was seen (paths, modes, values) and the fix (a command or a
config line). Checks that passed are listed briefly after the problems.

What is checked, as the web server would do it:

- the script: a ``#!`` line, CRLF line endings, a UTF-8 BOM, the interpreter exists and
  USER may execute it, ``#!/usr/bin/env python3`` resolved on mod_fcgid's PATH
  (``/usr/local/bin:/usr/bin:/bin``), the exec and read bits for USER, every parent
  directory traversable by USER, a ``noexec`` mount, group/other-writable files (suEXEC
  refuses them), and that the script calls ``run()`` / ``WSGIServer(...).run()``;
- the interpreter can import oxfcgi, and the application imports, in a child process
  running **as USER** with mod_fcgid's minimal environment (only ``PATH``), from the
  script's directory (mod_fcgid's working directory). A traceback is shown when it fails;
  if it only imports thanks to ``PYTHONPATH`` or an activated virtualenv of the current
  shell, that is said, with the fix;
- ``module:attr`` targets: importable and callable;
- ``--socket PATH``: exists, is a socket, something answers (and speaks FastCGI), and
  USER can connect (socket mode/owner/group and directory traversal).

Permissions for a USER other than the current one are computed from ``st_mode``, owner,
group and USER's groups (no ``os.access``). When not running as root and USER is not the
current user, the import and the socket connection cannot be tried as USER; the report
lists what could not be checked.

Exit status: 0 when nothing would fail (warnings allowed), 1 when something would fail,
2 for a usage error (unknown user, ``--python`` not found).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TextIO

from .access import Account, allowed
from .context import MOD_FCGID_PATH, Context, env_diff_note
from .interpreter import check_interpreter_access
from .module import check_module
from .report import Finding, Report
from .script import check_script
from .sockets import check_socket

__all__ = ["MOD_FCGID_PATH", "Account", "Finding", "Report", "allowed", "run_checks", "add_parser", "main"]


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


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` subcommand to the ``oxfcgi`` CLI (``func(args)`` returns the exit status)."""
    parser = subparsers.add_parser(
        "check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="find what would make a deployment fail (shebang, CRLF, permissions, imports, socket)",
        description="Check a .fcgi script or module:app the way the web server will run it: "
        "as USER, with mod_fcgid's minimal environment (PATH only).",
        epilog=(
            "Examples:\n"
            "  oxfcgi check /srv/app/app.fcgi --user www-data\n"
            "  oxfcgi check myproject.wsgi:application --socket /run/oxfcgi/app.sock --user www-data\n"
            "  oxfcgi check --python /srv/venv/bin/python /srv/app/app.py   (FcgidWrapper, oxfcgi serve)\n"
            "\n"
            "Exit status: 0 when nothing would fail, 1 when something would, 2 for a usage error."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=_cmd)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="a .fcgi/.py script the web server runs, or module:app")
    parser.add_argument(
        "--user",
        "-u",
        metavar="USER",
        help="the user the app (or, for --socket, the web server) runs as, e.g. www-data "
        "(default: the current user). Checking another user needs root for the "
        "import and the socket connection",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="a unix socket the web server connects to: check it exists, answers, "
        "and USER may connect (default: no socket check)",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter that runs the app instead of the #! line (FcgidWrapper, "
        "oxfcgi serve); default: the #! line, or this interpreter for module:app",
    )


def _cmd(args: argparse.Namespace, out: TextIO | None = None) -> int:
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


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """``python -m oxfcgi.check TARGET [--user USER] [--socket PATH] [--python PATH]``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :param out: where the report goes (default ``sys.stdout``).
    :returns: 0 nothing would fail, 1 something would, 2 usage error.
    """
    parser = argparse.ArgumentParser(
        prog="oxfcgi check", description="Check a FastCGI deployment the way the web server runs it."
    )
    _add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    return _cmd(args, out)


if __name__ == "__main__":
    sys.exit(main())
