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
import importlib
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .._help import HelpFormatter

if TYPE_CHECKING:
    from .access import Account, allowed
    from .context import MOD_FCGID_PATH
    from .report import Finding, Report
    from .run import run_checks

__all__ = ["MOD_FCGID_PATH", "Account", "Finding", "Report", "allowed", "run_checks", "add_parser", "main"]

#: The names above that live in the submodules, imported on first use (PEP 562): the
#: ``oxfcgi`` CLI imports this package for :func:`add_parser` on every command, ``serve``
#: included, and the checks themselves are not needed there.
_LAZY = {
    "MOD_FCGID_PATH": "context",
    "Account": "access",
    "Finding": "report",
    "Report": "report",
    "allowed": "access",
    "run_checks": "run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` subcommand to the ``oxfcgi`` CLI (``func(args)`` returns the exit status)."""
    parser = subparsers.add_parser(
        "check",
        formatter_class=HelpFormatter,
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
    from .run import command

    return command(args, out)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """``python -m oxfcgi.check TARGET [--user USER] [--socket PATH] [--python PATH]``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :param out: where the report goes (default ``sys.stdout``).
    :returns: 0 nothing would fail, 1 something would, 2 usage error.
    """
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="oxfcgi check",
        description="Check a FastCGI deployment the way the web server runs it.",
    )
    _add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    return _cmd(args, out)


if __name__ == "__main__":
    sys.exit(main())
