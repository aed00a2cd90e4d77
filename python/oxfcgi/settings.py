"""Every setting of oxfcgi, declared once.

:data:`SETTINGS` is the one table. Everything else comes from it or is checked against it
by ``tests/test_settings.py``: the keyword arguments :func:`oxfcgi.run` takes (and their
docstring), flup's ``WSGIServer`` arguments mapped onto them, the ``oxfcgi serve`` options
and their ``--help`` text, the ``OXFCGI_*`` environment variables, the README's settings
table (``scripts/generate-settings.py`` writes it), the native ``Server``'s
``ServerSettings`` in the stub, and the engine's own list of the server settings.

A setting belongs to one group:

- ``server``: what the engine's :class:`oxfcgi.Server` takes (limits, timeouts, URL
  mapping, status pages);
- ``socket``: the listening socket (:func:`oxfcgi.listen`);
- ``process``: the process around it (user switch, log, pid file, prefork workers).

Where a value comes from, lowest precedence first: the default; an argument in code
(``run(app, threads=8)`` or flup's ``WSGIServer(maxThreads=8)``); the environment variable
(``OXFCGI_THREADS=8``); the ``oxfcgi serve`` option (``--threads 8``). ``oxfcgi serve
--print-config`` shows the effective value of each setting and where it came from.

This module imports nothing of the engine, so the CLI's ``--help`` and the docs work
without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "GROUPS",
    "SETTINGS",
    "BY_NAME",
    "ALIASES",
    "Setting",
    "Resolved",
    "SettingError",
    "resolve",
    "parse_text",
    "markdown_table",
    "docstring",
    "names",
    "options_module",
]

GROUPS = ("server", "socket", "process")

#: FastCGI roles by name (spec §6), as in flup.server.fcgi_base.
ROLE_NUMBERS = {"responder": 1, "authorizer": 2, "filter": 3}
ROLE_NAMES = {number: name for name, number in ROLE_NUMBERS.items()}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingError(ValueError):
    """A setting has a value it cannot take; the message names the setting and where the
    value came from."""


# --- value kinds ----------------------------------------------------------------------------
# A kind knows how to read a value from text (CLI, environment) and how to check a value
# given in code. Each ``check`` returns the normalized value or raises ValueError.


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value

    return check


def _check_seconds(value: Any) -> float:
    if not _is_number(value) or not (0 <= value <= 1e9):
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool) and value not in (0, 1):
        raise ValueError(f"expected True or False, got {value!r}")
    return bool(value)


def _check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _check_path_prefix(value: Any) -> str:
    text = _check_str(value)
    if text and not text.startswith("/"):
        raise ValueError(f"must be empty or start with '/', got {text!r}")
    return text


def _check_url_path(value: Any) -> str:
    text = _check_str(value)
    if not text.startswith("/"):
        raise ValueError(f"must start with '/', got {text!r}")
    return text


def _check_mode(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ValueError(f"expected permission bits such as 0o660, got {value!r}")
    return value


def _check_user(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"expected a name or a numeric id, got {value!r}")
    return value


def _check_roles(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, (int, str)) else list(value)
    out: list[int] = []
    for role in items:
        if isinstance(role, str):
            key = role.strip().lower().removeprefix("fcgi_")
            if key not in ROLE_NUMBERS:
                raise ValueError(f"unknown FastCGI role {role!r}; use responder, authorizer or filter")
            number = ROLE_NUMBERS[key]
        elif isinstance(role, int) and not isinstance(role, bool) and role in ROLE_NAMES:
            number = role
        else:
            raise ValueError(
                f"unknown FastCGI role {role!r}; use FCGI_RESPONDER (1), FCGI_AUTHORIZER (2) or FCGI_FILTER (3)"
            )
        if number not in out:
            out.append(number)
    if not out:
        raise ValueError("name at least one role")
    return tuple(out)


def _check_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a dict, got {type(value).__name__}")
    return dict(value)


def _check_level(value: Any) -> str:
    text = str(value).upper()
    if text not in LOG_LEVELS:
        raise ValueError(f"choose from {', '.join(LOG_LEVELS)} (case-insensitive), got {value!r}")
    return text


def _check_paths(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return tuple(os.fspath(item) for item in items)


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _parse_size(text: str) -> int:
    """Bytes: ``1048576``, ``1M``/``1MiB``, ``64k``/``64KiB``, ``1G``."""
    stripped = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(stripped[-1:], 1)
    digits = stripped[:-1] if factor > 1 else stripped
    try:
        return int(digits) * factor
    except ValueError:
        raise ValueError(f"expected a size in bytes such as 1048576, 64k or 1M, got {text!r}") from None


def _parse_seconds(text: str) -> float:
    try:
        return float(text.strip().removesuffix("s"))
    except ValueError:
        raise ValueError(f"expected seconds (a number), got {text!r}") from None


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on", "y"):
        return True
    if word in ("0", "false", "no", "off", "n", ""):
        return False
    raise ValueError(f"expected yes/no, true/false, on/off or 1/0, got {text!r}")


def _parse_octal(text: str) -> int:
    try:
        return int(text.strip(), 8)
    except ValueError:
        raise ValueError(f"expected an octal number such as 660 or 0o660, got {text!r}") from None


def _parse_user(text: str) -> str | int:
    text = text.strip()
    return int(text) if text.isdigit() else text


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_paths(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace(",", os.pathsep).split(os.pathsep) if part.strip())


def _identity(text: str) -> str:
    return text


class Kind:
    """How a kind of value is read from text and checked."""

    __slots__ = ("name", "parse", "check", "annotation", "metavar")

    def __init__(
        self,
        name: str,
        parse: Callable[[str], Any],
        check: Callable[[Any], Any],
        annotation: str,
        metavar: str,
    ) -> None:
        self.name = name
        self.parse = parse
        self.check = check
        self.annotation = annotation
        self.metavar = metavar


COUNT = Kind("count", _parse_int, _check_int(1), "int", "N")
THREADS = Kind("threads", _parse_int, _check_int(1, 1024), "int", "N")
NATURAL = Kind("natural", _parse_int, _check_int(0), "int", "N")
BYTES = Kind("bytes", _parse_size, _check_int(1), "int", "BYTES")
MIB = Kind("mib", _parse_int, _check_int(1), "int", "MIB")
SECONDS = Kind("seconds", _parse_seconds, _check_seconds, "float", "SECONDS")
FLAG = Kind("bool", _parse_bool, _check_bool, "bool", "BOOL")
TEXT = Kind("str", _identity, _check_str, "str", "TEXT")
PREFIX = Kind("prefix", _identity, _check_path_prefix, "str", "PREFIX")
URL_PATH = Kind("url_path", _identity, _check_url_path, "str", "PATH")
FILE = Kind("path", _identity, _check_str, "str", "PATH")
MODE = Kind("octal", _parse_octal, _check_mode, "int", "OCTAL")
ACCOUNT = Kind("account", _parse_user, _check_user, "str | int", "NAME")
ROLES = Kind("roles", _parse_list, _check_roles, "Iterable[int | str] | int | str", "LIST")
MAPPING = Kind("mapping", _identity, _check_mapping, "Mapping[str, Any]", "")
LEVEL = Kind("level", _identity, _check_level, "str", "LEVEL")
BIND = Kind("bind", _identity, lambda value: value, "Any", "ADDR")
PATHS = Kind("paths", _parse_paths, _check_paths, "Iterable[str] | str", "PATHS")


def _one_of(choices: tuple[str, ...]) -> Kind:
    """A kind whose values are one of ``choices`` (case-insensitive, kept lower-case)."""

    def check(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(f"choose from {', '.join(choices)}, got {value!r}")
        return text

    return Kind("choice", _identity, check, "str", "|".join(choices).upper())


INTERFACES = ("auto", "wsgi", "asgi")
LOOPS = ("auto", "asyncio", "uvloop")
LIFESPANS = ("auto", "on", "off")


class Setting:
    """One setting: its name, kind, default and how it is documented.

    - ``name``: the ``run()`` keyword; the CLI option is ``--name-with-dashes`` and the
      environment variable ``OXFCGI_NAME`` unless ``env``/``cli`` say otherwise.
    - ``kind``: a :class:`Kind` (type, parser, checker).
    - ``default``: the value when none is given; ``None`` means "not set" (off, or the
      rule in ``default_text``).
    - ``default_text``: how the default reads in docs when it is a rule
      (``max(16 x threads, 64)``) or needs words (``inherited``).
    - ``unit``: ``"s"``, ``"bytes"``, ``"MiB"`` or ``""``.
    - ``group``: ``server``, ``socket`` or ``process``.
    - ``help``: one line for ``--help``, docstrings and the README.
    - ``equivalent``: the FastCGI / flup / php-fpm / nginx / gunicorn name it corresponds to.
    - ``flup``: flup's ``WSGIServer`` argument of the same meaning, if one maps onto it.
    - ``optional``: ``None`` is a valid value (off / unset), besides the kind's values.
    - ``off_zero``: ``0`` turns it off (timeouts and counts that are optional).
    - ``cli``/``run``/``env``: on which surfaces it appears.
    - ``extra_flags``: more CLI flags for it (``-t``, an older spelling such as ``--cgi``).
    - ``choices``: the allowed values, listed in ``--help``.
    """

    __slots__ = (
        "name",
        "kind",
        "default",
        "default_text",
        "unit",
        "group",
        "help",
        "equivalent",
        "flup",
        "optional",
        "off_zero",
        "cli",
        "run",
        "env",
        "extra_flags",
        "choices",
    )

    def __init__(
        self,
        name: str,
        kind: Kind,
        default: Any,
        group: str,
        help: str,
        *,
        default_text: str | None = None,
        unit: str = "",
        equivalent: str = "",
        flup: str = "",
        optional: bool = False,
        off_zero: bool = False,
        cli: bool = True,
        run: bool = True,
        env: bool = True,
        extra_flags: tuple[str, ...] = (),
        choices: tuple[str, ...] = (),
    ) -> None:
        if group not in GROUPS:
            raise ValueError(f"{name}: unknown group {group!r}")
        self.name = name
        self.kind = kind
        self.default = default
        self.default_text = default_text
        self.unit = unit
        self.group = group
        self.help = help
        self.equivalent = equivalent
        self.flup = flup
        self.optional = optional or default is None
        self.off_zero = off_zero
        self.cli = cli
        self.run = run
        self.env = env
        self.extra_flags = extra_flags
        self.choices = choices

    @property
    def flag(self) -> str:
        """The ``oxfcgi serve`` option: ``--max-conns``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str | None:
        """The environment variable: ``OXFCGI_MAX_CONNS`` (None if there is none)."""
        return "OXFCGI_" + self.name.upper() if self.env else None

    @property
    def annotation(self) -> str:
        """The type of the ``run()`` keyword, as written in the stub and ``RunOptions``."""
        return self.kind.annotation + (" | None" if self.optional or self.off_zero else "")

    def check(self, value: Any) -> Any:
        """The normalized value, or ``ValueError`` with what is wrong. Where 0 turns a
        setting off, ``None`` and ``0`` both do (normalized to the default's form)."""
        if self.off_zero and (value is None or (value == 0 and not isinstance(value, bool))):
            return 0.0 if self.kind is SECONDS else None
        if value is None:
            if self.optional:
                return None
            raise ValueError("cannot be None")
        return self.kind.check(value)

    def parse(self, text: str) -> Any:
        """A value from text (a CLI argument or an environment variable)."""
        if self.optional and text.strip().lower() in ("", "none", "off") and self.kind is not FLAG:
            return None
        if self.off_zero and text.strip().lower() in ("", "none", "off"):
            return self.check(None)
        return self.check(self.kind.parse(text))

    def describe_default(self) -> str:
        """The default as the docs show it: ``75 s``, ``1 MiB``, ``off``, ``0660``."""
        if self.default_text is not None:
            return self.default_text
        return self.show(self.default)

    def show(self, value: Any) -> str:
        """A value as the docs and ``--print-config`` show it."""
        if value is None:
            if self.kind is BIND:
                return "inherited"
            return "off" if self.off_zero or self.kind in (SECONDS, URL_PATH) else "none"
        if self.kind is MODE:
            return format(value, "04o")
        if self.kind is FLAG:
            return "on" if value else "off"
        if self.kind is ROLES:
            return ",".join(ROLE_NAMES.get(r, str(r)) for r in value)
        if self.kind is SECONDS:
            if value == 0 and self.off_zero:
                return "off"
            return f"{value:g} s"
        if self.kind is BYTES:
            if value >= 1 << 20 and value % (1 << 20) == 0:
                return f"{value >> 20} MiB"
            if value >= 1 << 10 and value % (1 << 10) == 0:
                return f"{value >> 10} KiB"
            return f"{value} bytes"
        if self.kind is MIB:
            return f"{value} MiB"
        if self.kind is PATHS:
            return os.pathsep.join(value) or "none"
        if isinstance(value, int) and value == 0 and self.off_zero:
            return "off"
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
        return str(value)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # --- server ------------------------------------------------------------------------------
    S(
        "threads",
        THREADS,
        32,
        "server",
        "the most Python threads running requests: one is started at first, another when a "
        "request has waited 1 ms while none finished, and one idle for 10 s exits (one always "
        "stays); an idle kept-open connection holds none",
        equivalent="flup maxThreads",
        flup="maxThreads",
        extra_flags=("-t",),
    ),
    S(
        "multiplexed",
        FLAG,
        False,
        "server",
        "accept concurrent requests on one connection",
        equivalent="FCGI_MPXS_CONNS",
        flup="multiplexed",
    ),
    S(
        "max_conns",
        COUNT,
        1024,
        "server",
        "connections open at once; more wait in the listen backlog",
        equivalent="FCGI_MAX_CONNS",
    ),
    S(
        "max_in_flight",
        COUNT,
        None,
        "server",
        "requests in flight, queued for a thread or running; over it: FCGI_OVERLOADED (multiplexed) "
        "or 503 + Retry-After: 1, never an unbounded queue",
        default_text="max(16 x threads, 64); 1024 for an ASGI app",
        equivalent="FCGI_MAX_REQS",
    ),
    S(
        "roles",
        ROLES,
        (1,),
        "server",
        "FastCGI roles accepted; others get FCGI_UNKNOWN_ROLE",
        equivalent="spec §6; flup roles",
        flup="roles",
        choices=tuple(ROLE_NUMBERS),
    ),
    S(
        "max_params_size",
        BYTES,
        1 << 20,
        "server",
        "FCGI_PARAMS bytes of one request; more closes the connection",
        unit="bytes",
    ),
    S(
        "max_params",
        COUNT,
        10_000,
        "server",
        "name-value pairs in one request's FCGI_PARAMS; more closes the connection (nginx sends under a thousand)",
    ),
    S(
        "graceful_timeout",
        SECONDS,
        30.0,
        "server",
        "after SIGTERM/SIGINT/SIGQUIT (or a reload), time for requests in flight",
        unit="s",
        equivalent="gunicorn graceful_timeout",
    ),
    S(
        "idle_timeout",
        SECONDS,
        10.0,
        "server",
        "a new connection must start a request within this time",
        unit="s",
        off_zero=True,
    ),
    S(
        "keepalive_timeout",
        SECONDS,
        75.0,
        "server",
        "a kept-open (FCGI_KEEP_CONN) connection may idle this long between requests; keep it above "
        "nginx's upstream keepalive_timeout (60 s)",
        unit="s",
        off_zero=True,
        equivalent="nginx keepalive_timeout",
    ),
    S(
        "read_timeout",
        SECONDS,
        60.0,
        "server",
        "while a request's params or body are incomplete, the web server must send something within this time",
        unit="s",
        off_zero=True,
        equivalent="nginx client_body_timeout",
    ),
    S(
        "params_timeout",
        SECONDS,
        10.0,
        "server",
        "a request's head, from FCGI_BEGIN_REQUEST (or its first byte) to the end of FCGI_PARAMS, must arrive "
        "within this time, however slowly it trickles",
        unit="s",
        off_zero=True,
        equivalent="nginx client_header_timeout",
    ),
    S(
        "send_timeout",
        SECONDS,
        60.0,
        "server",
        "when the web server accepts no output for this long, the request is aborted (as by FCGI_ABORT_REQUEST) "
        "and the connection closed",
        unit="s",
        off_zero=True,
        equivalent="nginx send_timeout",
    ),
    S(
        "script_name",
        PREFIX,
        None,
        "server",
        "the URL prefix the app is mounted at: sets SCRIPT_NAME and takes PATH_INFO from the request path, "
        "whatever the web server sent",
    ),
    S(
        "environ",
        MAPPING,
        None,
        "server",
        "extra environ keys, merged over every request's params",
        equivalent="flup environ",
        flup="environ",
        cli=False,
        env=False,
    ),
    S(
        "multithread",
        FLAG,
        None,
        "server",
        "the wsgi.multithread value",
        default_text="threads > 1",
        equivalent="flup multithreaded",
        flup="multithreaded",
        cli=False,
    ),
    S(
        "multiprocess",
        FLAG,
        False,
        "server",
        "the wsgi.multiprocess value (on with workers)",
        equivalent="flup multiprocess",
        flup="multiprocess",
        cli=False,
    ),
    S(
        "debug",
        FLAG,
        False,
        "server",
        "tracebacks in 500 pages (never in production)",
        equivalent="flup debug",
        flup="debug",
    ),
    S(
        "status_path",
        URL_PATH,
        None,
        "server",
        "a path answered by the engine without Python: php-fpm's pool status fields (text, ?json, ?full)",
        equivalent="php-fpm pm.status_path",
    ),
    S(
        "ping_path",
        URL_PATH,
        None,
        "server",
        "a path answered by the engine with 'pong'",
        equivalent="php-fpm ping.path",
    ),
    S(
        "max_requests",
        COUNT,
        None,
        "server",
        "replace a worker after this many requests (the replacement starts first)",
        equivalent="php-fpm pm.max_requests, gunicorn max_requests",
        off_zero=True,
    ),
    S(
        "request_slowlog_timeout",
        SECONDS,
        0.0,
        "server",
        "a request running longer gets the stacks of its worker's threads logged; 0: off",
        unit="s",
        off_zero=True,
        equivalent="php-fpm request_slowlog_timeout",
    ),
    S(
        "request_terminate_timeout",
        SECONDS,
        0.0,
        "server",
        "a request running longer is answered with a 504 and ended (an exception is raised in its thread); "
        "with workers, its worker is replaced; 0: off",
        unit="s",
        off_zero=True,
        equivalent="php-fpm request_terminate_timeout; flup fcgi_fork timeout",
    ),
    # --- socket ------------------------------------------------------------------------------
    S(
        "bind",
        BIND,
        None,
        "socket",
        "where to listen: unix:/path, /path, @abstract, host:port, [::1]:port, fd:N",
        default_text="inherited: systemd LISTEN_FDS, else fd 0 (FCGI_LISTENSOCK_FILENO)",
        equivalent="flup bindAddress; php-fpm listen",
        flup="bindAddress",
        extra_flags=("-b",),
        run=False,
    ),
    S(
        "backlog",
        COUNT,
        1024,
        "socket",
        "the listen queue of a socket oxfcgi binds (capped by net.core.somaxconn)",
        equivalent="php-fpm listen.backlog",
    ),
    S(
        "socket_mode",
        MODE,
        0o660,
        "socket",
        "permissions of a unix socket file oxfcgi creates",
        equivalent="php-fpm listen.mode",
    ),
    S(
        "umask",
        MODE,
        None,
        "socket",
        "umask applied while creating a unix socket",
        default_text="the process umask",
        equivalent="flup umask",
        flup="umask",
    ),
    S(
        "socket_owner",
        ACCOUNT,
        None,
        "socket",
        "owner of a unix socket file (needs root)",
        default_text="unchanged",
        equivalent="php-fpm listen.owner",
    ),
    S(
        "socket_group",
        ACCOUNT,
        None,
        "socket",
        "group of a unix socket file, e.g. www-data so the web server can connect with mode 660",
        default_text="unchanged",
        equivalent="php-fpm listen.group",
    ),
    # --- process -----------------------------------------------------------------------------
    S(
        "chdir",
        FILE,
        None,
        "process",
        "change into this directory before binding and loading the app (relative paths then start there)",
        default_text="the current directory",
        equivalent="gunicorn --chdir, php-fpm chdir",
        run=False,
    ),
    S(
        "pythonpath",
        PATHS,
        (),
        "process",
        "directories put first on sys.path before the app is loaded (comma- or colon-separated)",
        default_text="none",
        equivalent="gunicorn --pythonpath",
        run=False,
    ),
    S(
        "user",
        ACCOUNT,
        None,
        "process",
        "started as root: bind, then switch to this user (oxfcgi serve imports the app only after switching)",
        default_text="no switch",
        equivalent="php-fpm user",
    ),
    S(
        "group",
        ACCOUNT,
        None,
        "process",
        "the group to switch to with user",
        default_text="the user's primary group",
        equivalent="php-fpm group",
    ),
    S("pidfile", FILE, None, "process", "write the process id here (removed on exit)", equivalent="gunicorn pidfile"),
    S(
        "log_file",
        FILE,
        None,
        "process",
        "also log to this file, and send print() there; reopened on SIGUSR1",
        default_text="stderr only",
        equivalent="php-fpm error_log",
    ),
    S(
        "log_level",
        LEVEL,
        "INFO",
        "process",
        "level of the 'oxfcgi' logger",
        choices=LOG_LEVELS,
        equivalent="php-fpm log_level",
    ),
    S(
        "log_config",
        FILE,
        None,
        "process",
        "a logging.config file (dictConfig .json, or fileConfig .ini): when given, logging is configured "
        "from it alone; otherwise only the 'oxfcgi' logger gets a handler, never the root logger",
        equivalent="gunicorn/uvicorn --log-config",
    ),
    S(
        "force_cgi",
        FLAG,
        False,
        "process",
        "serve one CGI request from the environment and stdin/stdout, then exit (Apache mod_cgi, fcgiwrap)",
        equivalent="flup forceCGI, FCGI_FORCE_CGI=Y",
        flup="forceCGI",
        extra_flags=("--cgi",),
    ),
    S(
        "interface",
        _one_of(INTERFACES),
        "auto",
        "process",
        "the application interface; auto: ASGI for an `async def app(scope, receive, send)` or an object "
        "whose __call__ is one (FastAPI, Starlette, Django's ASGIHandler, Quart), else WSGI",
        choices=INTERFACES,
        equivalent="uvicorn --interface, granian --interface",
    ),
    S(
        "loop",
        _one_of(LOOPS),
        "auto",
        "process",
        "ASGI: the event loop, one per process on its own thread; auto: uvloop when it is installed, else asyncio",
        choices=LOOPS,
        equivalent="uvicorn --loop",
    ),
    S(
        "lifespan",
        _one_of(LIFESPANS),
        "auto",
        "process",
        "ASGI: the lifespan protocol (startup in each process before it serves, shutdown after its last "
        "request); auto: used when the app supports it, on: its failure stops the server, off: not sent",
        choices=LIFESPANS,
        equivalent="uvicorn --lifespan",
    ),
    S(
        "workers",
        COUNT,
        None,
        "process",
        "worker processes sharing the socket, run by a prefork master that respawns, recycles and reloads them",
        default_text="one process, or PHP_FCGI_CHILDREN workers when it is above 1",
        equivalent="php-fpm pm.max_children, PHP_FCGI_CHILDREN",
        extra_flags=("-w",),
    ),
    S(
        "boot_attempts",
        COUNT,
        3,
        "process",
        "with workers: when no worker has become ready yet and the app fails to load this many times in a row, "
        "the master gives up and exits with status 3 instead of respawning for ever",
        equivalent="gunicorn's Worker failed to boot",
    ),
    S(
        "preload",
        FLAG,
        False,
        "process",
        "with workers: import the app once in the master before forking (less memory; SIGHUP then keeps the code)",
        equivalent="gunicorn preload_app",
        run=False,
    ),
    S(
        "reload_on_change",
        PATHS,
        (),
        "process",
        "files looked at once a second ('script': the .fcgi/.py or TARGET file); when one is touched or "
        "edited, the process stops once idle for its spawner to start a fresh one (with workers: a rolling "
        "reload)",
        default_text="off",
        equivalent="uWSGI touch-reload, Passenger tmp/restart.txt",
    ),
    S(
        "max_requests_jitter",
        NATURAL,
        0,
        "process",
        "add 0..N to each worker's max_requests so they do not restart together",
        equivalent="gunicorn max_requests_jitter",
    ),
    S(
        "max_lifetime",
        SECONDS,
        0.0,
        "process",
        "replace a worker after this long (up to 10 % later, spread out)",
        unit="s",
        off_zero=True,
    ),
    S(
        "max_rss",
        MIB,
        None,
        "process",
        "replace a worker whose resident memory passes this many MiB",
        unit="MiB",
        off_zero=True,
    ),
)
del S

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

#: Old names still accepted, with the warning they log.
ALIASES: dict[str, tuple[str, str]] = {
    "max_reqs": (
        "max_in_flight",
        "max_reqs is now called max_in_flight (FCGI_MAX_REQS is only its name in FCGI_GET_VALUES); "
        "the old name still works",
    ),
    "request_timeout": (
        "request_slowlog_timeout",
        "request_timeout is now request_slowlog_timeout (it logs the stacks of a slow request, php-fpm's "
        "name); to also end the request with a 504 and replace the worker, set request_terminate_timeout",
    ),
}


def names(group: str | None = None, *, surface: str | None = None) -> list[str]:
    """Setting names, in table order, of ``group`` (all if None) that appear on
    ``surface`` (``"run"``, ``"cli"``, ``"env"``; all if None)."""
    return [
        s.name for s in SETTINGS if (group is None or s.group == group) and (surface is None or getattr(s, surface))
    ]


# --- resolving -------------------------------------------------------------------------------


class Resolved:
    """Effective settings: ``values[name]`` and ``sources[name]`` (``default``,
    ``env OXFCGI_X``, ``--x``, ``run() argument``, ``flup maxThreads=``, …)."""

    __slots__ = ("values", "sources")

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self.values = values
        self.sources = sources

    def group(self, group: str) -> dict[str, Any]:
        """The values of one group, e.g. ``resolved.group("server")`` for :class:`oxfcgi.Server`."""
        return {name: value for name, value in self.values.items() if BY_NAME[name].group == group}

    def report(self) -> str:
        """A table of every setting, its effective value and where it came from."""
        rows = [("setting", "value", "source")]
        for s in SETTINGS:
            if s.name in self.values:
                rows.append((s.name, s.show(self.values[s.name]), self.sources.get(s.name, "default")))
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows) + "\n"


def _canonical(name: str, source: str, log: logging.Logger | None) -> str:
    if name in ALIASES:
        new, message = ALIASES[name]
        (log or logging.getLogger("oxfcgi")).warning("%s (%s)", message, source)
        return new
    return name


def default_max_in_flight(threads: int | None = None) -> int:
    """``max_in_flight`` when it is not given: ``max(16 x threads, 64)`` (threads: the
    ``threads`` setting, default its default)."""
    return max(16 * int(BY_NAME["threads"].default if threads is None else threads), 64)


#: ``max_in_flight`` when it is not given and the app is ASGI: one event loop holds many
#: waiting requests (uvicorn has no limit by default; this keeps one, at ``max_conns``' default).
ASGI_MAX_IN_FLIGHT = 1024

_RULE_TEXT = "(max(16 x threads, 64))"


def for_interface(resolved: Resolved, interface: str) -> Resolved:
    """``resolved`` with the rules that depend on the app's interface (``"wsgi"`` or
    ``"asgi"``, known once the app is loaded) applied: an ASGI app's default
    ``max_in_flight`` is :data:`ASGI_MAX_IN_FLIGHT`. Returns a new :class:`Resolved`."""
    values, sources = dict(resolved.values), dict(resolved.sources)
    if interface == "asgi" and sources["max_in_flight"].endswith(_RULE_TEXT):
        values["max_in_flight"] = ASGI_MAX_IN_FLIGHT
        sources["max_in_flight"] = sources["max_in_flight"].replace(_RULE_TEXT, "(ASGI app)")
    return Resolved(values, sources)


def resolve(
    given: Mapping[str, Any] | None = None,
    *,
    given_source: str = "run() argument",
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    log: logging.Logger | None = None,
) -> Resolved:
    """The effective settings from the defaults, ``given`` (arguments in code),
    ``environ`` (``OXFCGI_*``; default ``os.environ``) and ``cli`` (``oxfcgi serve``
    options), later ones winning.

    ``sources`` names where particular ``given`` values came from (flup's argument names).
    Rules are applied last: ``max_in_flight`` from ``threads``, ``multithread`` from
    ``threads``. Raises ``TypeError`` for an unknown name and :class:`SettingError` (a
    ``ValueError``) for a bad value, naming the setting and where the value came from.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    origin: dict[str, str] = {s.name: "default" for s in SETTINGS}

    def put(name: str, value: Any, source: str) -> None:
        setting = BY_NAME[name]
        try:
            values[name] = setting.check(value)
        except ValueError as e:
            raise SettingError(f"{name} ({source}): {e}") from None
        origin[name] = source

    for raw, value in (given or {}).items():
        source = (sources or {}).get(raw, given_source)
        name = _canonical(raw, source, log)
        if name not in BY_NAME:
            raise TypeError(f"unknown option {raw!r}; known: {', '.join(names(surface='run'))}")
        put(name, value, source)
    for s in SETTINGS:
        var = s.env_var
        if var and var in environ:
            try:
                parsed = s.parse(environ[var])
            except ValueError as e:
                raise SettingError(f"{s.name} (environment variable {var}={environ[var]!r}): {e}") from None
            put(s.name, parsed, f"env {var}")
    for raw, value in (cli or {}).items():
        name = _canonical(raw, f"--{raw.replace('_', '-')}", log)
        put(name, value, BY_NAME[name].flag)
    if values["max_in_flight"] is None:
        values["max_in_flight"] = default_max_in_flight(values["threads"])
        origin["max_in_flight"] = f"{origin['max_in_flight']} {_RULE_TEXT}"
    if values["multithread"] is None:
        values["multithread"] = values["threads"] > 1
        origin["multithread"] = f"{origin['multithread']} (threads > 1)"
    return Resolved(values, origin)


def parse_text(name: str, text: str) -> Any:
    """Read setting ``name`` from text, as the CLI and the environment give it."""
    return BY_NAME[name].parse(text)


# --- generated documentation -----------------------------------------------------------------


def _default_cell(s: Setting) -> str:
    return s.describe_default()


def markdown_table() -> str:
    """The README's settings table."""
    lines = [
        "| setting | default | `oxfcgi serve` / environment | meaning |",
        "|---|---|---|---|",
    ]
    for group in GROUPS:
        for s in SETTINGS:
            if s.group != group:
                continue
            surfaces = []
            if s.cli:
                surfaces.append(f"`{s.flag}`")
            if s.env_var:
                surfaces.append(f"`{s.env_var}`")
            if not s.run:
                surfaces.append("(not a `run()` keyword)")
            meaning = s.help + (f" ({s.equivalent})" if s.equivalent else "")
            lines.append(f"| `{s.name}` | {_default_cell(s)} | {' '.join(surfaces) or '`run()` only'} | {meaning} |")
    return "\n".join(lines).replace("|\n", "|\n") + "\n"


def docstring(group: str | None = None, *, indent: str = "    ") -> str:
    """Lines for a docstring: ``- ``name`` [default]: help (equivalent).``"""
    out = []
    for s in SETTINGS:
        if (group is None or s.group == group) and s.run:
            extra = f" ({s.equivalent})" if s.equivalent else ""
            out.append(f"{indent}- ``{s.name}`` [{s.describe_default()}]: {s.help}{extra}.")
    return "\n".join(out)


def options_module() -> str:
    """The source of ``oxfcgi/_options.py``: the ``RunOptions`` TypedDict of ``run()``'s
    keywords (``scripts/generate-settings.py`` writes it; a test keeps the file equal)."""
    lines = [
        '"""The keyword arguments of :func:`oxfcgi.run`, for type checkers.',
        "",
        "Generated from the settings table by ``scripts/generate-settings.py``",
        '(tests/test_settings.py fails when this file and the table differ)."""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Iterable, Mapping",
        "from typing import Any, TypedDict",
        "",
        "",
        "class RunOptions(TypedDict, total=False):",
        '    """``run()``\'s keywords: the settings of :mod:`oxfcgi.settings` (all optional)."""',
        "",
    ]
    for s in SETTINGS:
        if s.run:
            lines.append(f"    {s.name}: {s.annotation}")
    return "\n".join(lines) + "\n"
