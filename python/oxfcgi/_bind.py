"""Turn the bind forms users write into the engine's normalized tuple."""

from __future__ import annotations

import os
import re
from typing import Any

_PORT = re.compile(r"^\d{1,5}$")


def parse_bind(bind: Any) -> tuple[Any, ...]:
    """Normalize a bind address.

    Accepted forms (flup's ``bindAddress`` forms included):

    - ``None``: started by a process manager (systemd ``LISTEN_FDS``, else fd 0
      when it is a listening socket, ``FCGI_LISTENSOCK_FILENO``).
    - ``int`` or ``"fd:N"``: an inherited listening socket descriptor.
    - ``"unix:/path"``, ``"/path"``, ``"./rel.sock"``, a :class:`os.PathLike`
      or ``bytes``: a unix socket path; ``"unix:@name"`` or ``"@name"`` is a
      Linux abstract socket.
    - ``"host:port"``, ``"[::1]:port"``, ``("host", port)`` or flup's IPv6
      4-tuple ``("::1", port, flowinfo, scope_id)``: TCP.

    Returns ``("auto",)``, ``("fd", n)``, ``("unix", path)`` or
    ``("tcp", host, port)``. Raises ``ValueError`` (or ``TypeError`` for an
    unsupported type) naming the accepted forms.
    """
    if bind is None:
        return ("auto",)
    if isinstance(bind, bool):
        raise TypeError("bind must be an address, not a bool")
    if isinstance(bind, int):
        if bind < 0:
            raise ValueError(f"bind fd must be >= 0, got {bind}")
        return ("fd", bind)
    if isinstance(bind, tuple):
        if len(bind) in (2, 4) and isinstance(bind[0], str) and isinstance(bind[1], int):
            return ("tcp", bind[0].strip("[]") or "0.0.0.0", _port(bind[1], bind))
        raise ValueError(f"a TCP bind tuple is (host, port) or (host, port, flowinfo, scope_id), got {bind!r}")
    if isinstance(bind, bytes):
        bind = os.fsdecode(bind)
    elif isinstance(bind, os.PathLike):
        return ("unix", os.fspath(bind))
    if not isinstance(bind, str):
        raise TypeError(
            f"bind must be None, an int fd, a path, 'host:port' or a (host, port) tuple, not {type(bind).__name__}"
        )
    text = bind.strip()
    if not text:
        raise ValueError("bind is empty; use e.g. 'unix:/run/app.sock' or '127.0.0.1:9000'")
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("'unix:' needs a path, e.g. unix:/run/app.sock")
        return ("unix", path)
    if text.startswith("fd:"):
        number = text[3:]
        if not number.isdigit():
            raise ValueError(f"'fd:' needs a descriptor number, got {text!r}")
        return ("fd", int(number))
    if text.startswith("tcp:"):
        text = text[4:]
    elif text.startswith(("/", "./", "../", "@", "~")) or ":" not in text:
        if _PORT.match(text):
            raise ValueError(f"bind {text!r} is only a port; give a host too, e.g. 127.0.0.1:{text}")
        return ("unix", os.path.expanduser(text))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"an IPv6 bind address looks like [::1]:9000, got {bind!r}")
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"put IPv6 addresses in brackets, e.g. [{host}]:{port}")
    if not _PORT.match(port):
        raise ValueError(f"bind {bind!r}: {port!r} is not a port number")
    return ("tcp", host or "0.0.0.0", _port(int(port), bind))


def _port(port: int, bind: Any) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"bind {bind!r}: port {port} is out of range")
    return port
