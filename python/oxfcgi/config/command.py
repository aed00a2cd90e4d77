"""The ``oxfcgi serve`` command a web server configuration prints at its top.

nginx, HAProxy, Caddy and H2O (``fastcgi.connect``) never start the app: oxfcgi listens
by itself, started as root so it can create the socket for the web server's group and
then switch to the app's account. Every such generator prints the command through
:func:`serve_command`, and takes the address it connects to from :func:`connect_address`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oxfcgi._bind import parse_bind

if TYPE_CHECKING:
    from oxfcgi.config import ConfigOptions

#: The account the app runs as when ``--user`` is not given (Debian's web server user).
DEFAULT_APP_USER = "www-data"

#: The path a health-checking balancer asks for; oxfcgi answers ``pong`` without Python
#: (the ``ping_path`` setting, php-fpm's ``ping.path``).
PING_PATH = "/oxfcgi-ping"


@dataclass(frozen=True)
class Address:
    """Where a web server connects: ``kind`` is ``"unix"`` (``path``) or ``"tcp"``
    (``host``, ``port``); ``bind`` is the matching ``oxfcgi serve --bind`` value."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def bind(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"{self.host_text}:{self.port}"

    @property
    def host_text(self) -> str:
        """The host as it appears before ``:port`` (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host


def connect_address(socket: str, client: str) -> Address:
    """The address ``client`` (``"nginx"``, ``"HAProxy"``…) connects to for ``--socket``/``--backend``
    ``socket``: an absolute unix socket path, or TCP with a wildcard host replaced by 127.0.0.1.
    ``ValueError`` for an abstract socket (web servers cannot connect to one), a descriptor or
    anything else that is not an address to connect to."""
    kind = parse_bind(socket)
    if kind[0] == "unix":
        path = kind[1]
        if path.startswith("@"):
            raise ValueError(
                f"{client} cannot connect to an abstract unix socket; give a path such as /run/oxfcgi/app.sock"
            )
        return Address("unix", path=os.path.abspath(path))
    if kind[0] == "tcp":
        host = kind[1]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return Address("tcp", host=host, port=int(kind[2]))
    raise ValueError(f"{client} needs a unix socket path or host:port to connect to, got {socket!r}")


def backend_addresses(options: ConfigOptions, client: str) -> list[Address]:
    """``options.backends`` (``HOST:PORT`` each: several hosts behind one balancer), else
    ``[options.socket]``. A backend must be TCP with a real host: each host binds its own address."""
    if not options.backends:
        return [connect_address(options.socket, client)]
    addresses = []
    for backend in options.backends:
        address = connect_address(backend, client)
        if address.kind != "tcp" or backend.strip().startswith(("0.0.0.0", ":", "[::]")):
            raise ValueError(f"--backend {backend!r}: give the host's address and port, e.g. 10.0.0.11:9000")
        addresses.append(address)
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"--backend: the same address is given twice in {options.backends}")
    return addresses


def serve_words(options: ConfigOptions, address: Address, web_server_group: str, *extra: str) -> list[str]:
    """``python -m oxfcgi serve APP --bind …`` as argv words. For a unix socket
    ``--socket-group web_server_group --socket-mode 660`` (the web server's workers can
    connect, other users cannot); then ``--user`` (default www-data: never root), ``--group``,
    ``--multiplexed`` and ``--max-in-flight`` when set, and ``extra``."""
    words = [options.python, "-m", "oxfcgi", "serve", options.app, "--bind", address.bind]
    if address.kind == "unix":
        words += ["--socket-group", web_server_group, "--socket-mode", "660"]
    words += ["--user", options.user or DEFAULT_APP_USER]
    if options.group:
        words += ["--group", options.group]
    if options.multiplexed:
        words.append("--multiplexed")
    if options.max_in_flight is not None:
        words += ["--max-in-flight", str(options.max_in_flight)]
    return words + list(extra)


def serve_command(options: ConfigOptions, address: Address, web_server_group: str, *extra: str) -> str:
    """:func:`serve_words` as one shell line; ``FCGI_WEB_SERVER_ADDRS=…`` in front for a TCP
    address when ``options.web_server_addrs`` is set (spec §3.2: only those peers may connect)."""
    line = " ".join(shlex.quote(w) for w in serve_words(options, address, web_server_group, *extra))
    if address.kind == "tcp" and options.web_server_addrs:
        line = f"FCGI_WEB_SERVER_ADDRS={shlex.quote(options.web_server_addrs)} {line}"
    return line


def command_comment(options: ConfigOptions, addresses: list[Address], web_server_group: str, *extra: str) -> list[str]:
    """The comment lines that tell how to start oxfcgi for these addresses (one command per host)."""
    workdir = shlex.quote(options.workdir or os.getcwd())
    lines = []
    for address in addresses:
        if len(addresses) > 1:
            lines.append(f"# on the host {address.host}:")
        if address.kind == "unix":
            lines.append(f"#   mkdir -p {shlex.quote(os.path.dirname(address.path))} && \\")
        lines.append(f"#   cd {workdir} && \\")
        lines.append(f"#   {serve_command(options, address, web_server_group, *extra)}")
    if any(a.kind == "unix" for a in addresses):
        lines += [
            f"# The socket is created group {web_server_group}, mode 660: the web server ({web_server_group})",
            "# can connect, other users cannot. The app then runs as --user, never as root.",
        ]
    if any(a.kind == "tcp" and a.host not in ("127.0.0.1", "::1", "localhost") for a in addresses):
        if options.web_server_addrs:
            lines.append(f"# FCGI_WEB_SERVER_ADDRS: oxfcgi accepts connections only from {options.web_server_addrs}.")
        else:
            lines.append(
                "# Give `oxfcgi config --web-server-addrs ADDR,...` (the web server's addresses) to start each"
            )
            lines.append("# host with FCGI_WEB_SERVER_ADDRS, so that nothing else can connect to it.")
    return lines
