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
import sys

__all__ = ["main", "build_parser"]

ROLE_NAMES = ("responder", "authorizer", "filter")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"oxfcgi {_version()} (Python {sys.version.split()[0]})")
        parser.exit()


# --- argument types ---------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal number such as 660 or 0o660, got {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"{text} is out of range 0..7777")
    return value


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
            f"unknown role(s) {', '.join(bad) or '(none)'}; choose from {','.join(ROLE_NAMES)}")
    return tuple(dict.fromkeys(names))


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(LOG_LEVELS)} (case-insensitive)")
    return level


# --- parser -----------------------------------------------------------------------------

def _run_defaults() -> dict:
    """oxfcgi.run()'s defaults, for --help (empty if the engine cannot be imported)."""
    try:
        from oxfcgi import DEFAULTS
        return dict(DEFAULTS)
    except Exception:
        return {}


def _default_text(defaults: dict, name: str) -> str:
    if name not in defaults:
        return "oxfcgi.run()'s default"
    value = defaults[name]
    if name == "max_reqs" and value is None:
        return "max(4 x threads, 16)"
    if name in ("socket_mode", "umask"):
        return "the process umask" if value is None else format(value, "o")
    if name == "graceful_timeout":
        return f"{value:g} s"
    if name == "max_params_size":
        return f"{value} bytes" + (f" = {value >> 20} MiB" if value % (1 << 20) == 0 else "")
    return str(value)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    defaults = _run_defaults()
    d = lambda name: _default_text(defaults, name)  # noqa: E731
    parser = argparse.ArgumentParser(
        prog="oxfcgi",
        description="A FastCGI server for Python WSGI applications, with a Rust engine.",
        epilog="Run 'oxfcgi COMMAND --help' for the options of a command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # -- serve --
    serve = sub.add_parser(
        "serve", formatter_class=_Formatter,
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
            "Options that are not given keep the defaults of oxfcgi.run().\n"
            "Exit status: 0 after a normal stop, 2 if TARGET cannot be loaded."
        ),
    )
    serve.add_argument("target", metavar="TARGET", help="the WSGI application (forms below)")
    serve.add_argument("--bind", "-b", metavar="ADDR",
                       help="where to listen: unix:/path, /abs/path (Unix socket), host:port, "
                            "[::1]:port (TCP) or fd:N (an inherited listening socket). "
                            "Default: the socket inherited from the process manager: systemd "
                            "LISTEN_FDS, else fd 0 (FCGI_LISTENSOCK_FILENO) as mod_fcgid, "
                            "lighttpd and spawn-fcgi provide")
    serve.add_argument("--threads", "-t", type=_positive_int, metavar="N",
                       help="Python worker threads, i.e. requests running the app at once "
                            f"(default: {d('threads')})")
    serve.add_argument("--multiplexed", action="store_true", default=None,
                       help="accept several concurrent requests on one connection "
                            "(FCGI_MPXS_CONNS=1; default: off, extra requests get FCGI_CANT_MPX_CONN)")
    serve.add_argument("--max-conns", type=_positive_int, metavar="N",
                       help=f"most connections open at once; reported as FCGI_MAX_CONNS (default: {d('max_conns')})")
    serve.add_argument("--max-reqs", type=_positive_int, metavar="N",
                       help="most requests in flight at once; reported as FCGI_MAX_REQS; over it a "
                            f"multiplexed request gets FCGI_OVERLOADED (default: {d('max_reqs')})")
    serve.add_argument("--roles", type=_roles, metavar="LIST",
                       help="comma-separated FastCGI roles to accept: responder, authorizer, "
                            "filter (default: responder); others get FCGI_UNKNOWN_ROLE")
    serve.add_argument("--debug", action="store_true", default=None,
                       help="show tracebacks in the 500 page (never in production; default: off)")
    serve.add_argument("--socket-mode", type=_octal, metavar="OCTAL",
                       help=f"permissions of a Unix socket file, e.g. 660 (default: {d('socket_mode')})")
    serve.add_argument("--umask", type=_octal, metavar="OCTAL",
                       help="umask applied while creating a Unix socket, e.g. 007 "
                            f"(default: {d('umask')})")
    serve.add_argument("--graceful-timeout", type=_seconds, metavar="SECONDS",
                       help="on SIGTERM/SIGINT/SIGHUP, wait at most this many seconds for "
                            f"requests in flight before exiting (default: {d('graceful_timeout')})")
    serve.add_argument("--idle-timeout", type=_seconds, metavar="SECONDS",
                       help="close a new connection that sends no request within this time; 0: never "
                            f"(default: {d('idle_timeout')})")
    serve.add_argument("--keepalive-timeout", type=_seconds, metavar="SECONDS",
                       help="close a kept-open (FCGI_KEEP_CONN) connection idle this long between requests; "
                            f"keep it above nginx's upstream keepalive_timeout (60 s); 0: never (default: {d('keepalive_timeout')})")
    serve.add_argument("--read-timeout", type=_seconds, metavar="SECONDS",
                       help="close a connection whose request params or body stall this long; 0: never "
                            f"(default: {d('read_timeout')})")
    serve.add_argument("--max-params-size", type=_positive_int, metavar="BYTES",
                       help="largest FCGI_PARAMS stream of one request, in bytes; a larger "
                            f"one closes the connection (default: {d('max_params_size')})")
    serve.add_argument("--script-name", metavar="PREFIX",
                       help="URL prefix the app is mounted at, e.g. /app: sets SCRIPT_NAME and takes "
                            "PATH_INFO from the request path, whatever the web server sent (default: none)")
    serve.add_argument("--socket-owner", metavar="USER",
                       help="owner of a Unix socket file (name or uid; needs root; default: unchanged)")
    serve.add_argument("--socket-group", metavar="GROUP",
                       help="group of a Unix socket file, e.g. www-data so nginx can connect with "
                            "mode 660 (name or gid; default: unchanged)")
    serve.add_argument("--user", metavar="USER",
                       help="when started as root: bind, then switch to USER before importing the app "
                            "(requests are never served as root; default: no switch)")
    serve.add_argument("--group", metavar="GROUP",
                       help="group to switch to with --user (default: USER's primary group)")
    serve.add_argument("--pidfile", metavar="PATH", help="write the process id here (removed on exit)")
    serve.add_argument("--log-file", metavar="PATH",
                       help="also log to this file, and send print() output there; reopened on "
                            "SIGUSR1 (logrotate). Default: stderr only")
    serve.add_argument("--cgi", dest="force_cgi", action="store_true", default=None,
                       help="serve one CGI request from the environment and stdin/stdout, then exit "
                            "(as FCGI_FORCE_CGI=Y; for Apache mod_cgi or fcgiwrap)")
    serve.add_argument("--workers", "-w", type=_positive_int, metavar="N",
                       help="worker processes sharing the socket, run by a prefork master that respawns, "
                            "recycles and reloads them (SIGHUP) (default: one process without a master, "
                            "or PHP_FCGI_CHILDREN workers when it is above 1)")
    serve.add_argument("--preload", action="store_true",
                       help="with --workers: import the app once in the master before forking (less memory, "
                            "faster start; but SIGHUP then does not pick up new code)")
    serve.add_argument("--max-requests", type=_positive_int, metavar="N",
                       help="replace a worker after N requests (default: never)")
    serve.add_argument("--max-requests-jitter", type=int, metavar="N",
                       help="add 0..N to each worker's --max-requests so they do not restart together (default: 0)")
    serve.add_argument("--max-lifetime", type=_seconds, metavar="SECONDS",
                       help="replace a worker after this long (up to 10%% later, spread out; default: never)")
    serve.add_argument("--max-rss", type=_positive_int, metavar="MIB",
                       help="replace a worker whose resident memory passes this many MiB (default: never)")
    serve.add_argument("--request-timeout", type=_seconds, metavar="SECONDS",
                       help="a request running longer gets the stacks of its worker's threads logged, and "
                            "with --workers the worker is replaced (default: off)")
    serve.add_argument("--status-path", metavar="PATH",
                       help="answer this path with the pool's status, without entering Python "
                            "(php-fpm's fields; ?json, ?full; default: off)")
    serve.add_argument("--ping-path", metavar="PATH",
                       help="answer this path with 'pong', without entering Python (default: off)")
    serve.add_argument("--log-level", type=_log_level, default="INFO", metavar="LEVEL",
                       help=f"level of the 'oxfcgi' logger on stderr: {', '.join(LOG_LEVELS)} "
                            "(default: INFO)")
    serve.set_defaults(func=cmd_serve)

    # -- request --
    req = sub.add_parser(
        "request", formatter_class=_Formatter,
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
    req.add_argument("address", metavar="ADDR",
                     help="unix:/path, /abs/path, host:port or [::1]:port")
    req.add_argument("path", metavar="PATH", nargs="?", default="/",
                     help="request path, may include ?query (default: /)")
    req.add_argument("-X", "--method", metavar="METHOD",
                     help="request method (default: GET, or POST with --data)")
    req.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'",
                     help="add a request header (sent as HTTP_NAME); repeatable")
    req.add_argument("-d", "--data", metavar="DATA",
                     help="request body: text, @FILE to read a file, @- to read stdin; "
                          "sets Content-Type: application/x-www-form-urlencoded unless -H gives one")
    req.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="set or override a FastCGI param (e.g. SCRIPT_NAME=/app); "
                          "NAME without '=' removes it; repeatable")
    req.add_argument("--script-name", default="", metavar="PREFIX",
                     help="mount point: sent as SCRIPT_NAME and cut from PATH_INFO (default: empty)")
    req.add_argument("--role", type=lambda t: _roles(t)[0], default="responder", metavar="ROLE",
                     help="responder, authorizer or filter (default: responder)")
    req.add_argument("--keep-conn", action="store_true",
                     help="set FCGI_KEEP_CONN in BEGIN_REQUEST (the connection is closed afterwards anyway)")
    req.add_argument("-i", "--include", action="store_true",
                     help="print the status line and response headers before the body")
    req.add_argument("--stderr", action=argparse.BooleanOptionalAction, default=True,
                     help="copy the app's FCGI_STDERR stream to stderr (default: on)")
    req.add_argument("-v", "--verbose", action="store_true",
                     help="describe every record received, and the END_REQUEST statuses, on stderr")
    req.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS",
                     help="connect and read timeout in seconds (default: 30)")
    req.set_defaults(func=cmd_request)

    from oxfcgi import config as config_command
    config_command.add_parser(sub)
    try:
        from oxfcgi import check as check_command
    except ImportError:  # the doctor is optional in a stripped install
        check_command = None
    if check_command is not None and hasattr(check_command, "add_parser"):
        check_command.add_parser(sub)
    return parser


# --- serve ------------------------------------------------------------------------------

_RUN_OPTIONS = ("threads", "multiplexed", "max_conns", "max_reqs", "roles", "debug",
                "idle_timeout", "keepalive_timeout", "read_timeout", "workers", "max_requests",
                "max_requests_jitter", "max_lifetime", "max_rss", "request_timeout", "status_path", "ping_path",
                "socket_mode", "umask", "graceful_timeout", "max_params_size", "script_name",
                "socket_owner", "socket_group", "user", "group", "pidfile", "log_file", "force_cgi")
_LISTEN_OPTIONS = ("socket_mode", "umask", "socket_owner", "socket_group")


def _setup_logging(level: str) -> None:
    """stderr handler on the root logger (so the app's own warnings show too); the
    ``oxfcgi`` logger at ``level``."""
    logging.basicConfig(stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s")
    logging.getLogger("oxfcgi").setLevel(level)


def _fail(message: str, status: int) -> int:
    print(f"oxfcgi: {message}", file=sys.stderr)
    return status


def cmd_serve(args: argparse.Namespace) -> int:
    """Load TARGET and serve it.

    Order matters for safety: with ``--user`` the socket is bound (as root)
    and privileges are dropped *before* the app is imported, so application
    code never runs as root.
    """
    _setup_logging(args.log_level)
    try:
        import oxfcgi
        from oxfcgi._loader import LoadError, load_app
    except ImportError as e:
        return _fail(f"the engine cannot be imported ({e}); reinstall oxfcgi", 2)
    options = {name: getattr(args, name) for name in _RUN_OPTIONS if getattr(args, name) is not None}
    if options.get("log_file"):
        try:
            oxfcgi._logsetup.use_log_file(options["log_file"])
        except OSError as e:
            return _fail(f"cannot open the log file: {e}", 2)
    bind = args.bind
    try:
        if not options.get("force_cgi") and (options.get("user") or options.get("group")):
            bind = oxfcgi.listen(bind, **{k: options.pop(k) for k in _LISTEN_OPTIONS if k in options})
            oxfcgi.drop_privileges(options.pop("user", None), options.pop("group", None))
    except OSError as e:
        return _fail(f"cannot serve on {args.bind or 'the inherited socket'}: {e}", 1)
    except ValueError as e:
        return _fail(str(e), 2)
    try:
        workers = oxfcgi.supervisor.workers_setting(options.get("workers"))
    except ValueError as e:
        return _fail(str(e), 2)
    if workers is not None and not args.preload and not options.get("force_cgi"):
        # Each worker imports the app after the fork, so SIGHUP loads new code.
        return _run_server(args, lambda: load_app(args.target), bind, options)
    try:
        app = load_app(args.target)
    except LoadError as e:
        print(e, file=sys.stderr)
        from oxfcgi import _startup
        if _startup.SPAWNED_BY_MANAGER:
            import time
            time.sleep(_startup.STARTUP_FAILURE_BACKOFF)  # don't let a respawning manager flood its log
        return 2
    return _run_server(args, lambda: app, bind, options)


def _run_server(args: argparse.Namespace, load, bind, options: dict) -> int:
    import oxfcgi

    try:
        oxfcgi.serve(load, bind, **options)
    except KeyboardInterrupt:
        pass
    except OSError as e:           # BindError included
        message = str(e) if e.strerror is None else e.strerror
        if args.bind and args.bind not in message:
            message = f"cannot serve on {args.bind}: {message}"
        return _fail(message, 1)
    except (ValueError, TypeError) as e:   # a bad --bind form, or a value run() rejects
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
    role = {"responder": client.FCGI_RESPONDER, "authorizer": client.FCGI_AUTHORIZER,
            "filter": client.FCGI_FILTER}[args.role]

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
            resp = conn.request(method, args.path, headers=headers, body=body, params=params,
                                keep_conn=args.keep_conn, role=role, script_name=args.script_name)
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
        print(f"oxfcgi request: appStatus={resp.app_status} "
              f"protocolStatus={client.PROTOCOL_STATUS_NAMES.get(resp.protocol_status)}", file=err)
    return 0 if resp.status < 400 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``oxfcgi`` command: returns the exit status.

    Usage errors (bad options) raise SystemExit(2) from argparse, as usual.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:        # `oxfcgi request ... | head`
        try:
            sys.stdout = None
        finally:
            return 1


if __name__ == "__main__":
    sys.exit(main())
