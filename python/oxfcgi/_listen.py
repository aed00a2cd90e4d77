"""Open the listening socket: explicit addresses, or what a process manager handed over."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys
from typing import Any

from . import _startup
from ._bind import parse_bind
from ._oxfcgi import Listener


def _not_started_message(stdin_kind: str) -> str:
    script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c") else "your .fcgi script"
    from . import __version__

    return (
        f"{script} is a FastCGI application (oxfcgi {__version__}). A web server or process manager starts it\n"
        f"and hands it a listening socket as stdin (fd 0); here stdin is {stdin_kind}, so there is nothing to serve.\n"
        "\n"
        "Start it under:\n"
        "  Apache mod_fcgid   AddHandler fcgid-script .fcgi       (oxfcgi config apache-fcgid)\n"
        '  lighttpd           fastcgi.server with "bin-path"      (oxfcgi config lighttpd)\n'
        "  systemd            a .socket + .service pair           (oxfcgi config systemd)\n"
        "  spawn-fcgi         spawn-fcgi -s /run/app.sock -n -- ./app.fcgi\n"
        "or let it listen itself (behind nginx or Apache mod_proxy_fcgi):\n"
        f"  oxfcgi serve {script} --bind 127.0.0.1:9000\n"
        "and try it from a shell:\n"
        "  oxfcgi request 127.0.0.1:9000 /\n"
    )


def _stdin_kind() -> str:
    try:
        if os.isatty(0):
            return "a terminal"
    except OSError:
        pass
    state = _startup.socket_state(0)
    if state == "connected":
        return "a connected socket, not a listening one"
    return "not a socket"


def _auto_target() -> tuple[Any, ...]:
    if _startup.SYSTEMD_FDS:
        fd = _startup.SYSTEMD_FDS[0]
        state = _startup.socket_state(fd)
        if state == "connected":
            sys.stderr.write(
                f"oxfcgi: systemd passed a connected socket on fd {fd}: the .socket unit has Accept=yes, which starts\n"
                "one process per connection. oxfcgi serves many connections from one listening socket: set\n"
                "Accept=no (the default) in the .socket unit (oxfcgi config systemd prints a working pair).\n"
            )
            raise SystemExit(2)
        if len(_startup.SYSTEMD_FDS) > 1:
            logging.getLogger("oxfcgi").warning(
                "systemd passed %d sockets; serving on the first (fd %d)", len(_startup.SYSTEMD_FDS), fd
            )
        return ("fd", fd)
    if _startup.LISTEN_FD is not None:
        return ("fd", _startup.LISTEN_FD)
    sys.stderr.write(_not_started_message(_stdin_kind()))
    raise SystemExit(2)


def _uid(owner: Any) -> int | None:
    if owner is None or isinstance(owner, int):
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError(f"no such user: {owner!r}") from None


def _gid(group: Any) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


def listen(
    bind: Any = None,
    *,
    backlog: int = 1024,
    socket_mode: int = 0o660,
    umask: int | None = None,
    socket_owner: str | int | None = None,
    socket_group: str | int | None = None,
) -> Listener:
    """Open the listening socket ``bind`` names (see :func:`oxfcgi.run`; a :class:`Listener`
    is returned as it is).

    With ``bind=None`` it takes the socket a process manager handed over
    (systemd ``LISTEN_FDS``, else fd 0); when there is none it prints how to
    start the application and raises ``SystemExit(2)``. ``backlog`` is the
    listen queue of a socket bound here (php-fpm's ``listen.backlog``).
    ``socket_mode`` (default 0o660), ``umask`` (flup's, around ``bind()``),
    ``socket_owner`` and ``socket_group`` (names or ids; php-fpm's
    ``listen.mode``/``listen.owner``/``listen.group``) apply to a unix socket
    file. Raises ``BindError`` (an ``OSError``) when it cannot listen,
    ``ValueError`` for a bad address, user or group.
    """
    if isinstance(bind, Listener):
        return bind
    target = parse_bind(bind)
    if target == ("auto",):
        target = _auto_target()
    return Listener(
        target,
        backlog=backlog,
        socket_mode=socket_mode,
        umask=umask,
        socket_owner=_uid(socket_owner),
        socket_group=_gid(socket_group),
    )


def drop_privileges(user: str | int | None, group: str | int | None) -> None:
    """Switch to ``user`` (and ``group``, default the user's primary group)
    for good, with the user's supplementary groups. Needs root; raises
    ``PermissionError`` otherwise and ``ValueError`` for an unknown name.
    """
    if user is None and group is None:
        return
    if user is None:
        raise ValueError(
            f"group={group!r} without user: the app would still run as uid {os.geteuid()}"
            f"{' (root)' if os.geteuid() == 0 else ''}; give the user too (--user, run(user=...)), "
            "e.g. --user www-data --group www-data"
        )
    if os.geteuid() != 0:
        raise PermissionError("user=/group= need the server to start as root (it then switches after binding)")
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else (pwd.getpwnam(user) if user is not None else None)
    except KeyError:
        raise ValueError(f"no such user: {user!r}") from None
    chosen = _gid(group) if group is not None else None
    gid = chosen if chosen is not None else (entry.pw_gid if entry else os.getgid())
    if entry is not None:
        os.setgroups(os.getgrouplist(entry.pw_name, gid))
    else:
        os.setgroups([gid])
    os.setgid(gid)
    if entry is not None:
        os.setuid(entry.pw_uid)
        os.environ["HOME"] = entry.pw_dir
        os.environ["USER"] = os.environ["LOGNAME"] = entry.pw_name
    logging.getLogger("oxfcgi").info("running as uid %d, gid %d", os.getuid(), os.getgid())


def write_pidfile(path: str) -> None:
    """Write our pid to ``path`` (replacing it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str) -> None:
    """Remove ``path`` if it still holds our pid."""
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass
