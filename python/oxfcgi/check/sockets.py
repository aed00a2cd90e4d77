"""Checks of the unix socket the web server connects to: it exists, is a socket, answers
FastCGI, and USER (the web server's account) can connect."""

from __future__ import annotations

import os
import shlex
import socket
import stat
import struct

from .access import Account, Unknown, blocked_fix, group_name, ls, path_blocked
from .context import Context

#: Seconds to wait for a socket to accept and answer FCGI_GET_VALUES.
SOCKET_TIMEOUT = 3.0


def _fastcgi_get_values() -> bytes:
    body = b""
    for name in (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"):
        body += bytes([len(name), 0]) + name
    return struct.pack(">BBHHBx", 1, 9, 0, len(body), 0) + body


def _connect_as(path: str, who: Account) -> int:
    """Connect to the unix socket in a forked child running as ``who``; the errno (0 = ok)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups(sorted(who.gids))
            os.setgid(who.gid)
            os.setuid(who.uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(SOCKET_TIMEOUT)
            s.connect(path)
            s.close()
        except OSError as e:
            code = e.errno or 255
        except BaseException:
            code = 255
        os._exit(code & 0xFF)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _socket_perm_fix(ctx: Context, path: str, st: os.stat_result) -> list[str]:
    user, group = ctx.user.name, group_name(ctx.user.gid)
    fixes = [
        f"start the app with --socket-mode 0660 --socket-group {group} (the group of the nginx/Apache user {user})"
    ]
    fixes.append(
        f"for now: chgrp {group} {shlex.quote(path)} && chmod 660 {shlex.quote(path)} "
        "(lost when the app re-creates the socket)"
    )
    return fixes


def check_socket(ctx: Context, path: str) -> None:
    r = ctx.report
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        r.fail(
            "No socket at the --socket path",
            [f"{path}: no such file (nginx: connect() to unix:{path} failed (2: No such file or directory))"],
            [
                f"start the app listening there: oxfcgi serve APP --bind unix:{path}",
                f"and make the web server use the same path (nginx: fastcgi_pass unix:{path};)",
            ],
        )
        return
    except PermissionError:
        r.skip(f"the socket {path}", [f"{ctx.me.name} cannot stat it"])
        return
    if not stat.S_ISSOCK(st.st_mode):
        r.fail(
            "The --socket path is not a socket",
            [ls(path, st)],
            [
                f"remove it and let the app create the socket: rm {shlex.quote(path)} && "
                f"oxfcgi serve APP --bind unix:{path}"
            ],
        )
        return
    # something answers?
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(SOCKET_TIMEOUT)
    try:
        s.connect(path)
    except ConnectionRefusedError:
        r.fail(
            "Nothing listens on the socket (a stale socket file)",
            [
                ls(path, st),
                "connect(): Connection refused "
                f"(nginx: connect() to unix:{path} failed (111: Connection refused), 502)",
            ],
            [f"start the app: oxfcgi serve APP --bind unix:{path}  (it replaces a stale file)"],
        )
        s.close()
        return
    except OSError as e:
        r.fail(
            "Cannot connect to the socket",
            [ls(path, st), f"connect(): {e.strerror or e}"],
            [f"check that the app is running and listening on {path}"],
        )
        s.close()
        return
    answer = b""
    try:
        s.settimeout(1.0)
        s.sendall(_fastcgi_get_values())
        answer = s.recv(4096)
    except OSError:
        pass
    finally:
        s.close()
    if answer.startswith(b"HTTP/"):
        r.fail(
            "The socket answers HTTP, not FastCGI",
            [f"reply: {answer[:40]!r}"],
            ["point fastcgi_pass at the FastCGI server, or use proxy_pass for an HTTP server"],
        )
    elif len(answer) >= 8 and answer[0] == 1 and answer[1] == 10:
        r.ok(f"{path} accepts connections and answers FCGI_GET_VALUES")
    else:
        r.ok(f"{path} accepts connections")
    # can USER connect?
    try:
        b = path_blocked(path, ctx.user, "w")
    except Unknown as e:
        b = None
        r.skip(f"whether {ctx.user.name} can reach the socket", [f"{ctx.me.name} cannot stat {e.args[0]}"])
    real = None
    tried = ""
    if ctx.other_user and ctx.is_root:
        code = _connect_as(path, ctx.user)
        real = code == 0
        tried = f"connect() as {ctx.user.name} (tried): " + (
            "ok" if real else os.strerror(code) if 0 < code < 255 else "failed"
        )
    elif ctx.other_user:
        r.skip(f"connecting as {ctx.user.name}", ["needs root; judged from the modes only"])
    if b is not None and b.is_dir:
        r.fail(
            f"{ctx.user.name} cannot reach the socket: a directory is not traversable",
            [ls(b.path, b.st), f"(nginx: connect() to unix:{path} failed (13: Permission denied), 502)"]
            + ([tried] if tried else []),
            [blocked_fix(b, ctx.user)],
        )
    elif b is not None or real is False:
        st = os.stat(path)
        r.fail(
            f"{ctx.user.name} cannot connect to the socket (no write permission)",
            [
                ls(path, st),
                f"{ctx.user.describe()} needs w on the socket file "
                f"(nginx: connect() to unix:{path} failed (13: Permission denied), 502)",
            ]
            + ([tried] if tried else []),
            _socket_perm_fix(ctx, path, st),
        )
    else:
        r.ok(f"{ctx.user.name} can connect to {path}" + (" (tried: connect() as it succeeded)" if real else ""))
