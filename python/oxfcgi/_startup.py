"""What oxfcgi does the moment it is imported, before the application makes any fd.

- A closed fd 0, 1 or 2 gets /dev/null, so a socket opened later can never
  become "stdout" (``cgi-fcgi -start`` starts processes with fds closed).
- A listening socket on fd 0 (``FCGI_LISTENSOCK_FILENO``: Apache mod_fcgid,
  lighttpd ``bin-path``, spawn-fcgi, ``cgi-fcgi -start``) is moved to a new fd
  and /dev/null takes its place, so ``sys.stdin`` and modules that probe stdin
  are harmless. A listening socket on fd 1 or 2 (systemd ``StandardInput=socket``
  with ``StandardOutput=inherit``) is replaced the same way.
- systemd socket activation (``LISTEN_PID`` = our pid, ``LISTEN_FDS``): the
  fds are noted and the variables unset, so child processes do not see them
  (sd_listen_fds(3)).
- When a process manager started us, an exception that escapes before serving
  (typically an import error in the ``.fcgi`` script) prints its traceback with
  hints, also to ``$OXFCGI_LOG_FILE`` if set, and waits a moment before the
  process exits, so a respawning manager does not flood its log.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import types

#: The inherited listening socket, moved off fd 0 (None if there was none).
LISTEN_FD: int | None = None
#: systemd socket-activation fds (empty if none), first one at 3.
SYSTEMD_FDS: list[int] = []
#: Whether a process manager started this process with a listening socket.
SPAWNED_BY_MANAGER = False
#: Seconds to wait before exiting after a start-up failure under a manager.
STARTUP_FAILURE_BACKOFF = 1.0


def socket_state(fd: int) -> str | None:
    """``"listening"``, ``"connected"`` for a socket fd, else None (not a socket or closed)."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return "listening" if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) else "connected"
    except OSError:
        return None
    finally:
        probe.close()


def _devnull_on(fd: int, flags: int) -> None:
    null = os.open(os.devnull, flags)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _fix_fds() -> None:
    global LISTEN_FD, SPAWNED_BY_MANAGER
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _devnull_on(fd, os.O_RDWR if fd else os.O_RDONLY)
    if socket_state(0) == "listening":
        LISTEN_FD = os.dup(0)  # non-inheritable (PEP 446)
        _devnull_on(0, os.O_RDONLY)
        SPAWNED_BY_MANAGER = True
    for fd in (1, 2):
        if socket_state(fd) == "listening":
            _devnull_on(fd, os.O_WRONLY)


def _take_systemd_fds() -> None:
    global SYSTEMD_FDS, SPAWNED_BY_MANAGER
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if not (pid.strip().isdigit() and int(pid) == os.getpid() and count.strip().isdigit()):
        return
    SYSTEMD_FDS = list(range(3, 3 + int(count)))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    SPAWNED_BY_MANAGER = bool(SYSTEMD_FDS)


def _startup_failure_hook(exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
    import traceback

    from . import _hints

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "the application"
    hints = (
        f"oxfcgi: {script} failed before it could serve (it was started by a FastCGI process manager).\n"
        f"  interpreter: {sys.executable} (Python {sys.version.split()[0]})\n"
        f"  cwd: {os.getcwd()}   uid: {os.getuid()}   PATH: {os.environ.get('PATH', '')}\n"
        f"  sys.path: {sys.path}\n"
    )
    environment = _hints.environment_hint(exc)
    if environment:
        hints += "  " + environment.replace("\n", "\n  ") + "\n"
    hints += f"  To see why as this user: {_hints.check_command(script)}\n"
    message = text + hints
    try:
        sys.stderr.write(message)
        sys.stderr.flush()
    except Exception:
        pass
    log_file = os.environ.get("OXFCGI_LOG_FILE")
    if log_file:
        try:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message)
        except OSError:
            pass
    time.sleep(STARTUP_FAILURE_BACKOFF)


def prepare() -> None:
    """Run once, at ``import oxfcgi``."""
    _fix_fds()
    _take_systemd_fds()
    if SPAWNED_BY_MANAGER and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _startup_failure_hook
