"""The ``oxfcgi`` command (also ``python -m oxfcgi``).

    oxfcgi serve TARGET [--bind ADDR] [--threads N] ...   serve a WSGI app over FastCGI
    oxfcgi request ADDR [PATH] [-X METHOD] [-H 'N: v'] ...  send one FastCGI request

Exit status: ``serve`` 0 after a normal stop (SIGTERM/SIGINT/SIGHUP), 2 if the app cannot
be loaded; ``request`` 0 for a 1xx-3xx response, 1 for 4xx/5xx, 2 on a connection or
protocol error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from oxfcgi import settings
from oxfcgi._help import HelpFormatter
from oxfcgi.settings import ALIASES, BY_NAME, SETTINGS, Resolved, Setting

__all__ = ["main", "build_parser", "add_setting_options"]

ROLE_NAMES = tuple(settings.ROLE_NUMBERS)


def _version() -> str:
    try:
        from oxfcgi import __version__

        return str(__version__)
    except Exception:
        pass
    try:
        from importlib.metadata import version

        return version("oxfcgi")
    except Exception:
        return "unknown"


class _VersionAction(argparse.Action):
    """--version without importing the engine until asked."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str = argparse.SUPPRESS,
        default: Any = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"oxfcgi {_version()} (Python {sys.version.split()[0]})")
        try:
            from oxfcgi._oxfcgi import build_info
        except ImportError as e:
            print(f"engine: not loadable ({e})")
        else:
            print(
                f"engine: git {build_info['git']}, {build_info['rustc']}, pyo3 {build_info['pyo3']}, "
                f"features {build_info['features'] or 'none'}, {build_info['profile']} build"
            )
        parser.exit()


# --- argument types ---------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _roles(text: str) -> tuple[str, ...]:
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    bad = [n for n in names if n not in ROLE_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown role(s) {', '.join(bad) or '(none)'}; choose from {','.join(ROLE_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def _setting_type(setting: Setting) -> Callable[[str], Any]:
    """argparse's ``type`` for a setting: the table's parser, its errors as usage errors."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = setting.name
    return parse


def _setting_help(setting: Setting) -> str:
    parts = [setting.help]
    if setting.equivalent:
        parts[0] += f" ({setting.equivalent})"
    if setting.choices:
        parts.append(f"one of {', '.join(setting.choices)}")
    parts.append(f"default: {setting.describe_default()}")
    if setting.env_var:
        parts.append(f"env {setting.env_var}")
    return "; ".join(parts).replace("%", "%%")


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """One option per setting of the table that appears on the CLI (``oxfcgi serve``),
    grouped as the table groups them, plus hidden options for the deprecated names."""
    titles = {"server": "server settings", "socket": "socket settings", "process": "process settings"}
    groups = {name: parser.add_argument_group(title) for name, title in titles.items()}
    for setting in SETTINGS:
        if not setting.cli:
            continue
        flags = [setting.flag, *setting.extra_flags]
        group = groups[setting.group]
        if setting.kind.name == "bool":
            group.add_argument(
                *flags,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_setting_help(setting),
            )
        else:
            group.add_argument(
                *flags,
                dest=setting.name,
                type=_setting_type(setting),
                default=None,
                metavar=setting.kind.metavar,
                help=_setting_help(setting),
            )
    for old, (new, _) in ALIASES.items():
        parser.add_argument(
            "--" + old.replace("_", "-"),
            dest=old,
            type=_setting_type(BY_NAME[new]),
            default=None,
            help=argparse.SUPPRESS,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oxfcgi",
        description="A FastCGI server for Python WSGI applications, with a Rust engine.",
        epilog="Run 'oxfcgi COMMAND --help' for the options of a command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # -- serve --
    serve = sub.add_parser(
        "serve",
        formatter_class=HelpFormatter,
        help="serve a WSGI application over FastCGI",
        description="Serve a WSGI application over FastCGI until SIGTERM, SIGINT or SIGHUP.",
        epilog=(
            "TARGET forms:\n"
            "  package.module            the module's 'application', else its 'app'\n"
            "  package.module:name       a named attribute (dotted names allowed)\n"
            "  package.module:factory()  call a factory with no arguments\n"
            "  path/to/app.fcgi, app.py  a script file; if it calls run(app) or\n"
            "                            WSGIServer(app).run() while loading, that app is\n"
            "                            taken and served with the options given here\n"
            "\n"
            "Every setting can also come from its environment variable (OXFCGI_THREADS=8);\n"
            "an option wins over the variable, which wins over the script's own run() or\n"
            "WSGIServer() arguments (those apply to the server settings only: the socket\n"
            "and the process are this command's). --print-config shows the result.\n"
            "Exit status: 0 after a normal stop, 2 if TARGET cannot be loaded."
        ),
    )
    serve.add_argument("target", metavar="TARGET", help="the WSGI application (forms below)")
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings and where each came from (default, env, "
        "an option, the script's run()/flup arguments), then exit",
    )
    add_setting_options(serve)
    serve.set_defaults(func=cmd_serve)

    # -- request --
    req = sub.add_parser(
        "request",
        formatter_class=HelpFormatter,
        help="send one FastCGI request and print the response (like cgi-fcgi)",
        description="Send one request to a FastCGI server and print the response body.",
        epilog=(
            "Examples:\n"
            "  oxfcgi request unix:/run/app.sock /health\n"
            "  oxfcgi request 127.0.0.1:9000 '/search?q=x' -i -H 'Accept: text/html'\n"
            "  oxfcgi request /run/app.sock /upload --data @photo.jpg -H 'Content-Type: image/jpeg'\n"
            "\n"
            "The body goes to stdout, FCGI_STDERR to stderr. With -i, the status line and\n"
            "headers come first.\n"
            "Exit status: 0 for status 1xx-3xx, 1 for 4xx/5xx, 2 on a connection or protocol error."
        ),
    )
    req.add_argument("address", metavar="ADDR", help="unix:/path, /abs/path, host:port or [::1]:port")
    req.add_argument(
        "path", metavar="PATH", nargs="?", default="/", help="request path, may include ?query (default: /)"
    )
    req.add_argument("-X", "--method", metavar="METHOD", help="request method (default: GET, or POST with --data)")
    req.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="add a request header (sent as HTTP_NAME); repeatable",
    )
    req.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body: text, @FILE to read a file, @- to read stdin; "
        "sets Content-Type: application/x-www-form-urlencoded unless -H gives one",
    )
    req.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set or override a FastCGI param (e.g. SCRIPT_NAME=/app); NAME without '=' removes it; repeatable",
    )
    req.add_argument(
        "--script-name",
        default="",
        metavar="PREFIX",
        help="mount point: sent as SCRIPT_NAME and cut from PATH_INFO (default: empty)",
    )
    req.add_argument(
        "--role",
        type=lambda t: _roles(t)[0],
        default="responder",
        metavar="ROLE",
        help="responder, authorizer or filter (default: responder)",
    )
    req.add_argument(
        "--keep-conn",
        action="store_true",
        help="set FCGI_KEEP_CONN in BEGIN_REQUEST (the connection is closed afterwards anyway)",
    )
    req.add_argument(
        "-i", "--include", action="store_true", help="print the status line and response headers before the body"
    )
    req.add_argument(
        "--stderr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy the app's FCGI_STDERR stream to stderr (default: on)",
    )
    req.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="describe every record received, and the END_REQUEST statuses, on stderr",
    )
    req.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="connect and read timeout in seconds (default: 30)",
    )
    req.set_defaults(func=cmd_request)

    from oxfcgi import config as config_command

    config_command.add_parser(sub)
    from oxfcgi import check as check_command

    check_command.add_parser(sub)
    return parser


# --- serve ------------------------------------------------------------------------------


def _setup_logging(base: Resolved) -> None:
    """The ``oxfcgi`` logger on stderr at ``log_level``, or the user's ``log_config``; the
    root logger is left to the application (issue: Flask then logs its tracebacks to
    wsgi.errors, and Django's lines appear once)."""
    from oxfcgi import _logsetup

    _logsetup.configure(
        base.values["log_level"],
        explicit=base.sources["log_level"] != "default",
        log_config=base.values["log_config"],
    )


def _fail(message: str, status: int) -> int:
    print(f"oxfcgi: {message}", file=sys.stderr)
    return status


def _cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as options (the deprecated names included)."""
    wanted = [s.name for s in SETTINGS if s.cli] + list(ALIASES)
    return {name: getattr(args, name) for name in wanted if getattr(args, name, None) is not None}


def _finalize(cli: dict[str, Any]) -> Callable[[Any], Resolved]:
    """The effective settings once TARGET is loaded: its script's own run()/WSGIServer()
    arguments count for the server settings (below the environment and the options)."""

    def finalize(loaded: Any) -> Resolved:
        server = set(settings.names("server")) | set(ALIASES)
        own = {k: v for k, v in loaded.options.items() if k in server}
        ignored = sorted(set(loaded.options) - server)
        if ignored:
            logging.getLogger("oxfcgi").info(
                "%s passes %s to run(); under oxfcgi serve the socket and process settings come from its "
                "options and OXFCGI_* variables instead",
                loaded.description,
                ", ".join(ignored),
            )
        return settings.resolve(own, sources=loaded.sources, cli=cli)

    return finalize


def _print_config(args: argparse.Namespace, cli: dict[str, Any], base: Resolved) -> int:
    """--print-config: load TARGET (as --user when started as root, never as root
    otherwise asked not to) to see its own run() arguments, then print the table."""
    from oxfcgi import _listen
    from oxfcgi._loader import LoadError, load_target

    status = 0
    resolved = base
    try:
        _listen.drop_privileges(base.values["user"], base.values["group"])
        resolved = _finalize(cli)(load_target(args.target))
    except (LoadError, OSError, ValueError, TypeError) as e:
        print(f"oxfcgi: {args.target} was not loaded, so its own run() arguments are not shown:\n{e}", file=sys.stderr)
        status = 2
    sys.stdout.write(resolved.report())
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    """Load TARGET and serve it.

    Order matters for safety: the socket is bound (as root if need be) and privileges are
    dropped *before* the app is imported, so application code never runs as root.
    """
    cli = _cli_settings(args)
    try:
        base = settings.resolve(cli=cli)
    except (ValueError, TypeError) as e:
        return _fail(str(e), 2)
    try:
        _setup_logging(base)
    except ValueError as e:
        return _fail(str(e), 2)
    try:
        import oxfcgi
        from oxfcgi import _interface, _serve, supervisor
        from oxfcgi._loader import LoadError, load_target, prepare_paths, split_target
    except ImportError as e:
        return _fail(f"the engine cannot be imported ({e}); reinstall oxfcgi", 2)
    try:
        prepare_paths(base.values["chdir"], base.values["pythonpath"])
    except LoadError as e:
        return _fail(str(e).removeprefix("oxfcgi: "), 2)
    if args.print_config:
        return _print_config(args, cli, base)
    if base.values["log_file"]:
        try:
            oxfcgi._logsetup.use_log_file(base.values["log_file"])
        except OSError as e:
            return _fail(f"cannot open the log file: {e}", 2)
    bind = base.values["bind"]
    try:
        target_base, _, is_file = split_target(args.target)
        script_file = os.path.abspath(target_base) if is_file else None
        _serve.serve(lambda: load_target(args.target), base, _finalize(cli), script_file=script_file)
    except KeyboardInterrupt:
        pass
    except supervisor.BootFailed as e:
        return _fail(str(e), supervisor.EXIT_LOAD_FAILED)
    except _interface.LifespanFailed as e:
        return _fail(str(e), supervisor.EXIT_LOAD_FAILED)
    except LoadError as e:
        print(e, file=sys.stderr)
        from oxfcgi import _startup

        if _startup.SPAWNED_BY_MANAGER:
            import time

            time.sleep(_startup.STARTUP_FAILURE_BACKOFF)  # don't let a respawning manager flood its log
        return 2
    except OSError as e:  # BindError included
        message = str(e) if e.strerror is None else e.strerror
        if bind and str(bind) not in message:
            message = f"cannot serve on {bind}: {message}"
        return _fail(message, 1)
    except (ValueError, TypeError) as e:  # a bad --bind form, or a value the engine rejects
        return _fail(str(e), 2)
    return 0


# --- request ----------------------------------------------------------------------------


def _read_data(spec: str) -> bytes:
    if spec == "@-":
        return sys.stdin.buffer.read()
    if spec.startswith("@"):
        with open(spec[1:], "rb") as f:
            return f.read()
    return spec.encode("utf-8")


def cmd_request(args: argparse.Namespace) -> int:
    from oxfcgi import client

    err = sys.stderr
    headers = []
    for h in args.header:
        name, colon, value = h.partition(":")
        if not colon or not name.strip():
            print(f"oxfcgi request: bad header {h!r}; expected 'Name: value'", file=err)
            return 2
        headers.append((name.strip(), value.strip()))
    body = b""
    if args.data is not None:
        try:
            body = _read_data(args.data)
        except OSError as e:
            print(f"oxfcgi request: cannot read {args.data[1:]}: {e.strerror}", file=err)
            return 2
        if not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    method = args.method or ("POST" if args.data is not None else "GET")
    params: list[tuple[str, str | None]] = []
    for p in args.param:
        name, eq, value = p.partition("=")
        params.append((name, value if eq else None))
    role = {"responder": client.FCGI_RESPONDER, "authorizer": client.FCGI_AUTHORIZER, "filter": client.FCGI_FILTER}[
        args.role
    ]

    try:
        conn = client.Connection(args.address, timeout=args.timeout)
    except client.ConnectError as e:
        print(f"oxfcgi request: {e} \u2014 is oxfcgi serve running there?", file=err)
        return 2
    except ValueError as e:
        print(f"oxfcgi request: {e}", file=err)
        return 2
    try:
        with conn:
            resp = conn.request(
                method,
                args.path,
                headers=headers,
                body=body,
                params=params,
                keep_conn=args.keep_conn,
                role=role,
                script_name=args.script_name,
            )
    except TimeoutError:
        print(f"oxfcgi request: no answer from {args.address} within {args.timeout:g} s", file=err)
        return 2
    except (client.ProtocolError, OSError) as e:
        print(f"oxfcgi request: {args.address}: {e}", file=err)
        return 2

    if args.verbose:
        for rec in resp.records:
            print(f"< {rec!r}", file=err)
    if args.stderr and resp.stderr:
        err.buffer.write(resp.stderr) if hasattr(err, "buffer") else err.write(resp.stderr.decode("utf-8", "replace"))
        err.flush()
    if resp.protocol_status is None:
        print("oxfcgi request: the connection closed before FCGI_END_REQUEST", file=err)
        return 2
    if resp.protocol_status != client.FCGI_REQUEST_COMPLETE:
        name = client.PROTOCOL_STATUS_NAMES.get(resp.protocol_status, str(resp.protocol_status))
        print(f"oxfcgi request: the server refused the request: {name}", file=err)
        return 2
    if resp.status == 0:
        print("oxfcgi request: the response has no CGI header block (no blank line after headers)", file=err)
        sys.stdout.buffer.write(resp.body)
        return 2
    out = sys.stdout.buffer
    if args.include:
        head = f"Status: {resp.status} {resp.reason}".rstrip() + "\n"
        head += "".join(f"{n}: {v}\n" for n, v in resp.headers) + "\n"
        out.write(head.encode("latin-1"))
    out.write(resp.body)
    out.flush()
    if args.verbose:
        print(
            f"oxfcgi request: appStatus={resp.app_status} "
            f"protocolStatus={client.PROTOCOL_STATUS_NAMES.get(resp.protocol_status)}",
            file=err,
        )
    if resp.status >= 400:
        # The body alone may be empty or an HTML page: say what the status was.
        print(f"oxfcgi request: {resp.status} {resp.reason}".rstrip(), file=err)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``oxfcgi`` command: returns the exit status.

    Usage errors (bad options) raise SystemExit(2) from argparse, as usual.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except BrokenPipeError:  # `oxfcgi request ... | head`
        # Python flushes stdout again at exit: point fd 1 at /dev/null so that cannot fail
        # too (the recipe of Python's signal module documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
