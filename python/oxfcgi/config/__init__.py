"""``oxfcgi config TARGET``: web server and process manager configurations that work as written.

Each target is a module here with ``generate(options: ConfigOptions) -> str``.
The integration tests run the real servers with these generated snippets, so
they cannot rot.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .._help import HelpFormatter

if TYPE_CHECKING:
    from .options import ConfigOptions

__all__ = ["TARGETS", "ONLY_FOR", "ConfigOptions", "app_file", "app_stem", "human_size", "generate", "add_parser"]

TARGETS = {
    "nginx": "nginx",
    "apache-fcgid": "apache",
    "apache-proxy": "apache",
    "lighttpd": "lighttpd",
    "haproxy": "haproxy",
    "caddy": "caddy",
    "h2o": "h2o",
    "systemd": "systemd",
}

#: What the targets that only one or two of them understand belong to (others refuse them).
ONLY_FOR = {
    "backends": ("haproxy", "nginx"),
    "multiplexed": ("haproxy",),
    "spawn": ("h2o",),
    "launcher": ("apache-fcgid",),
}


def __getattr__(name: str) -> Any:
    """``ConfigOptions``, imported on first use (PEP 562; see :mod:`oxfcgi.config.options`)."""
    if name != "ConfigOptions":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .options import ConfigOptions

    return ConfigOptions


def app_file(app: str) -> str | None:
    """The file of a file target (``app.fcgi``, ``/srv/app.py``, ``app.py:name``), else None."""
    path = app
    head, colon, tail = app.rpartition(":")
    if colon and head.endswith((".py", ".fcgi")) and "/" not in tail:
        path = head
    if path.endswith((".py", ".fcgi")) or "/" in path:
        return path
    return None


def app_stem(app: str) -> str:
    """A short name for the app: the file's stem, or the module's last part (``pkg.site:app`` -> ``site``)."""
    import os

    file = app_file(app)
    return os.path.splitext(os.path.basename(file))[0] if file else app.split(":")[0].rsplit(".", 1)[-1]


def human_size(size: int) -> str:
    """``100 MiB``, ``512 KiB``, ``1234 bytes``; ``no limit`` for 0 (comments of generated configs)."""
    if size == 0:
        return "no limit"
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def generate(options: ConfigOptions) -> str:
    """The configuration text for ``options.target``; ``ValueError`` for an unknown target."""
    import importlib

    if options.target not in TARGETS:
        raise ValueError(f"unknown target {options.target!r}; choose from {', '.join(TARGETS)}")
    for name, targets in ONLY_FOR.items():
        if getattr(options, name) and options.target not in targets:
            flag = "--" + name.rstrip("s").replace("_", "-")
            raise ValueError(f"{flag} is for {' and '.join(targets)}, not {options.target}")
    if options.max_in_flight is not None and options.max_in_flight < 1:
        raise ValueError(f"--max-in-flight must be at least 1, got {options.max_in_flight}")
    if options.web_server_addrs is not None:
        import ipaddress

        for part in options.web_server_addrs.split(","):
            try:
                ipaddress.ip_address(part.strip())
            except ValueError:
                raise ValueError(f"--web-server-addrs: {part.strip()!r} is not an IP address") from None
    module = importlib.import_module(f"{__name__}.{TARGETS[options.target]}")
    text: str = module.generate(options)
    return text


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``config`` subcommand to the ``oxfcgi`` CLI."""
    parser = subparsers.add_parser(
        "config",
        formatter_class=HelpFormatter,
        help="print a working web server / process manager configuration",
        description="Print a configuration for TARGET that works as written (PATH_INFO right, Authorization passed).",
    )
    parser.add_argument("target", choices=sorted(TARGETS), help="what to configure")
    parser.add_argument(
        "--app", default="app:application", help="module:attr or path to a .fcgi/.py file (default: %(default)s)"
    )
    parser.add_argument(
        "--socket",
        default="/run/oxfcgi/app.sock",
        help="unix socket path or host:port oxfcgi listens on (default: %(default)s)",
    )
    parser.add_argument("--prefix", default="/", help="URL path the app is mounted at (default: %(default)s)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with oxfcgi installed (default: %(default)s)"
    )
    parser.add_argument("--user", help="account the app runs as")
    parser.add_argument("--group", help="group the app runs as")
    parser.add_argument("--workdir", help="the app's working directory")
    parser.add_argument(
        "--max-body-size",
        type=_size,
        default=100 << 20,
        metavar="BYTES",
        help="largest request body the web server lets through (100M, 20m, 0 = unlimited; default: 100M)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how long the web server waits for the app's answer (default: %(default)s)",
    )
    parser.add_argument(
        "--launcher",
        metavar="PATH",
        help="apache-fcgid: write the launcher script there (executable) instead of printing it",
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="haproxy, nginx: a host running oxfcgi behind the balancer (repeat for each host)",
    )
    parser.add_argument(
        "--web-server-addrs",
        metavar="ADDR,...",
        help="the web server's addresses: hosts start with FCGI_WEB_SERVER_ADDRS set to them",
    )
    parser.add_argument(
        "--multiplexed",
        action="store_true",
        help="haproxy: several requests per FastCGI connection (option mpxs-conns)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="oxfcgi's max_in_flight; haproxy's maxconn per server follows it (default: the setting's default)",
    )
    parser.add_argument(
        "--spawn", action="store_true", help="h2o: H2O starts the app (fastcgi.spawn) instead of connecting"
    )
    parser.set_defaults(func=_main)


def _size(text: str) -> int:
    from oxfcgi.settings import BYTES

    try:
        return 0 if text.strip() == "0" else int(BYTES.parse(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _main(args: argparse.Namespace) -> int:
    from .options import ConfigOptions

    prefix = "/" + args.prefix.strip("/") if args.prefix.strip("/") else "/"
    options = ConfigOptions(
        max_body_size=args.max_body_size,
        timeout=args.timeout,
        launcher=args.launcher,
        target=args.target,
        app=args.app,
        socket=args.socket,
        prefix=prefix,
        python=args.python,
        user=args.user,
        group=args.group,
        workdir=args.workdir,
        backends=args.backend,
        web_server_addrs=args.web_server_addrs,
        multiplexed=args.multiplexed,
        max_in_flight=args.max_in_flight,
        spawn=args.spawn,
    )
    try:
        text = generate(options)
        if options.launcher:
            from oxfcgi.config import apache

            _write_launcher(options.launcher, apache.launcher_text(options))
        sys.stdout.write(text)
    except ValueError as e:
        print(f"oxfcgi config: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"oxfcgi config: cannot write the launcher {options.launcher}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def _write_launcher(path: str, text: str) -> None:
    """Write the launcher, readable and executable by everyone (the web server runs it)."""
    import os

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.chmod(path, 0o755)
    print(f"oxfcgi config: wrote the launcher {path}", file=sys.stderr)
