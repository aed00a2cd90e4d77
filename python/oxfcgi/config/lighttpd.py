"""``oxfcgi config lighttpd``: mod_fastcgi with ``bin-path`` (lighttpd starts oxfcgi).

lighttpd creates the listening socket, binds it and starts ``bin-path`` with that socket
as fd 0 (``FCGI_LISTENSOCK_FILENO``), so ``oxfcgi serve`` needs no ``--bind``. It starts
``max-procs`` processes (a unix socket gets a ``-N`` suffix per process, a TCP port gets
``+N``), restarts one that dies, and sends each ``kill-signal`` (SIGTERM) when it stops.
The working directory of a ``bin-path`` process is the directory of the program, which for
``python -m oxfcgi serve`` is the interpreter's, so a module target gets ``PYTHONPATH``.

What lighttpd sends, with these settings (observed with lighttpd 1.4.69):

- at a prefix ``/app``: ``SCRIPT_NAME=/app``, ``PATH_INFO=/rest``. The ``$HTTP["url"]``
  condition keeps ``/apple`` away from the app (a bare ``"/app"`` key matches it too);
- at the root with ``fix-root-scriptname``: ``SCRIPT_NAME=""``, ``PATH_INFO=/whole/path``;
- ``HTTP_AUTHORIZATION``: passed as is.

``check-local`` is disabled, otherwise lighttpd answers 404 for every URL that is not a file
under ``server.document-root``.

A commented variant at the end connects to an oxfcgi started separately (systemd units
from ``oxfcgi config systemd``, or ``oxfcgi serve --bind``) instead.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from oxfcgi._bind import parse_bind
from oxfcgi.config import app_file, app_stem, human_size

if TYPE_CHECKING:
    from oxfcgi.config import ConfigOptions

#: Processes lighttpd starts with bin-path; each runs oxfcgi's pool of threads.
MAX_PROCS = 2

#: Where the bin-path socket goes when the default socket (/run/oxfcgi/app.sock) is asked
#: for: a directory that exists on Debian and is writable by lighttpd's user.
LIGHTTPD_RUN_DIR = "/run/lighttpd"

DEFAULT_SOCKET = "/run/oxfcgi/app.sock"


def _normalize_prefix(prefix: str) -> str:
    stripped = (prefix or "/").strip("/")
    return "/" + stripped if stripped else "/"


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"lighttpd strings cannot contain quotes or newlines: {value!r}")
    return f'"{value}"'


def _regex_literal(text: str) -> str:
    """``text`` as a PCRE literal without backslashes (lighttpd strings keep them, but
    bracketed characters are unambiguous): ``/my.app`` -> ``/my[.]app``."""
    out = []
    for ch in text:
        if ch.isalnum() or ch in "/_-~":
            out.append(ch)
        elif ch in ']\\^"':
            raise ValueError(f"unsupported character {ch!r} in the prefix {text!r}")
        else:
            out.append(f"[{ch}]")
    return "".join(out)


def _name(options: ConfigOptions) -> str:
    base = app_stem(options.app)
    return re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-") or "app"


def _backend_address(options: ConfigOptions, for_bin_path: bool) -> list[tuple[str, object]]:
    kind = parse_bind(options.socket)
    if kind[0] == "unix":
        path = kind[1]
        if path.startswith("@"):
            raise ValueError("lighttpd needs a unix socket path, not an abstract socket name")
        if for_bin_path and options.socket == DEFAULT_SOCKET:
            path = f"{LIGHTTPD_RUN_DIR}/oxfcgi-{_name(options)}.sock"
        return [("socket", os.path.abspath(path))]
    if kind[0] == "tcp":
        host = kind[1] if kind[1] not in ("", "0.0.0.0") else "127.0.0.1"
        return [("host", host), ("port", kind[2])]
    raise ValueError(f"lighttpd needs a unix socket path or host:port, got {options.socket!r}")


def _bin_path(options: ConfigOptions) -> tuple[str, list[tuple[str, str]]]:
    """(bin-path, bin-environment entries)."""
    # No --script-name: lighttpd's SCRIPT_NAME/PATH_INFO split is right, and its PATH_INFO
    # is the normalized path (dot segments removed), which REQUEST_URI is not.
    file = app_file(options.app)
    if file:
        base = options.app[len(file) :]  # ":attr" or ""
        absolute = os.path.abspath(os.path.join(options.workdir or os.getcwd(), file))
        if absolute.endswith(".fcgi") and not base:
            return absolute, []  # the .fcgi runs itself (shebang + run(app))
        command = f"{options.python} -m oxfcgi serve {absolute}{base}"
        env: list[tuple[str, str]] = []
    else:
        command = f"{options.python} -m oxfcgi serve {options.app}"
        env = [("PYTHONPATH", os.path.abspath(options.workdir or os.getcwd()))]
    if " " in options.python:
        raise ValueError(f"lighttpd splits bin-path at spaces; the interpreter path {options.python!r} has one")
    return command, env


def _block(entries: list[tuple[str, object]], indent: str) -> list[str]:
    width = max(len(k) for k, _ in entries) + 2
    out = []
    for key, value in entries:
        if isinstance(value, int):
            shown = str(value)
        elif isinstance(value, list):
            shown = "( " + ", ".join(f"{_quote(k)} => {_quote(v)}" for k, v in value) + " )"
        else:
            shown = _quote(str(value))
        out.append(f"{indent}{_quote(key).ljust(width)} => {shown},")
    return out


def generate(options: ConfigOptions) -> str:
    prefix = _normalize_prefix(options.prefix)
    name = _name(options)
    bin_path, bin_env = _bin_path(options)
    entries: list[tuple[str, object]] = []
    entries += _backend_address(options, for_bin_path=True)
    entries.append(("bin-path", bin_path))
    if bin_env:
        entries.append(("bin-environment", bin_env))
    entries.append(("check-local", "disable"))
    entries.append(("max-procs", MAX_PROCS))
    # lighttpd 1.4.60+: how long it waits for the app's answer and between its bytes.
    timeouts: list[tuple[str, object]] = [("read-timeout", options.timeout), ("write-timeout", options.timeout)]
    entries += timeouts
    if prefix == "/":
        entries.append(("fix-root-scriptname", "enable"))

    standalone: list[tuple[str, object]] = _backend_address(options, for_bin_path=False)
    standalone.append(("check-local", "disable"))
    standalone += timeouts
    if prefix == "/":
        standalone.append(("fix-root-scriptname", "enable"))

    lines = [
        f"# lighttpd configuration for oxfcgi: {options.app} mounted at {prefix}",
        "# (generated by `oxfcgi config lighttpd`). On Debian: save it as",
        f"# /etc/lighttpd/conf-available/20-oxfcgi-{name}.conf, then",
        f"#   lighty-enable-mod oxfcgi-{name} && systemctl restart lighttpd",
        "# lighttpd starts the app itself (bin-path) with the listening socket as fd 0;",
        f"# \"max-procs\" => {MAX_PROCS} processes, each with oxfcgi's pool of threads. The app's",
        "# stderr (tracebacks) goes to lighttpd's stderr: server.breakagelog, or the journal.",
    ]
    if entries[0][0] == "socket":
        lines.append("# The socket's directory must exist and be writable by lighttpd's server.username;")
        lines.append("# lighttpd adds -0, -1, ... to the path, one socket per process.")
    else:
        lines.append(f"# lighttpd listens on port {entries[1][1]} and up, one port per process.")
    body = options.max_body_size
    lines += [
        "",
        'server.modules += ( "mod_fastcgi" )',
        "",
        f"# Request bodies up to {human_size(body)} (`oxfcgi config --max-body-size`; 0 = no limit; in KiB,",
        "# set for the mount's URLs rather than left to lighttpd's default); read-/write-timeout: the",
        f"# app may take {options.timeout} s to answer and between its bytes (`oxfcgi config --timeout`).",
    ]
    max_request = f"server.max-request-size = {(body + 1023) // 1024}"

    def mount(body: list[tuple[str, object]], comment: str = "") -> list[str]:
        key = _quote(prefix)
        if prefix == "/":
            out = ['$HTTP["url"] =~ "^/" {', f"    {max_request}", "}"]
            out += [f"fastcgi.server += ( {key} => (("]
            out += _block(body, "    ")
            out += ["))", ")"]
        else:
            regex = _regex_literal(prefix)
            out = [f'$HTTP["url"] =~ "^{regex}(/|$)" {{', f"    {max_request}", f"    fastcgi.server = ( {key} => (("]
            out += _block(body, "        ")
            out += ["    ))", "    )", "}"]
        return [comment + line for line in out]

    lines += mount(entries)
    lines += [
        "",
        "# Variant: connect to an oxfcgi that runs on its own (units from `oxfcgi config systemd`,",
        "# or `oxfcgi serve --bind ...`): no bin-path, lighttpd only connects. Replace the block",
        "# above with this one (a unix socket must be writable by lighttpd's user, www-data;",
        "# `oxfcgi config nginx` shows such a command).",
    ]
    lines += mount(standalone, "# ")
    lines.append("")
    return "\n".join(lines)
