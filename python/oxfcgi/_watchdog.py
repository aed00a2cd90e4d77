"""Slow and stuck requests, as php-fpm handles them, with Python's own tools.

- ``request_slowlog_timeout``: a request running longer gets the stacks of every thread
  of its process logged once (php-fpm ptrace()s the worker for its slowlog; Python has
  ``sys._current_frames()``).
- ``request_terminate_timeout``: a request running longer is ended: the engine answers the
  web server with a 504, the application's writes fail, and :class:`oxfcgi.RequestTerminated`
  is raised in its thread; under a prefork master the worker then stops accepting and is
  replaced (php-fpm terminates the worker). flup's ``fcgi_fork`` ``timeout`` meant the same.

The watchdog is one daemon thread per server that looks at the engine's table of running
requests a few times per timeout.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

from ._oxfcgi import Server

log = logging.getLogger("oxfcgi")

__all__ = ["start", "stacks"]


def stacks(mark: int | None = None) -> str:
    """The stacks of every Python thread of this process; the thread ``mark`` is flagged."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        flag = "  <-- the slow request" if ident == mark else ""
        parts.append(f"Thread {ident} ({names.get(ident, 'native')}){flag}:\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


def _watch(server: Server, slowlog: float, terminate: float, replace: bool) -> None:
    limits = [t for t in (slowlog, terminate) if t > 0]
    interval = max(0.05, min(1.0, min(limits) / 4))
    logged: set[tuple[int, float]] = set()
    ended: set[tuple[int, float]] = set()
    while True:
        time.sleep(interval)
        now = time.monotonic()
        current = set()
        for seconds, what, thread_id in server.running_requests():
            # One request: its thread and (about) when it started.
            key = (thread_id, round(now - seconds, 1))
            current.add(key)
            if slowlog and seconds > slowlog and key not in logged and key not in ended:
                logged.add(key)
                log.error(
                    "request_slowlog_timeout (%gs): %s has run for %.1fs. Stacks of this process's threads:\n%s",
                    slowlog,
                    what,
                    seconds,
                    stacks(thread_id),
                )
            if terminate and seconds > terminate and key not in ended:
                ended.add(key)
                trace = stacks(thread_id)
                if not server.terminate(thread_id, terminate):
                    continue
                action = (
                    "this worker stops accepting and is replaced"
                    if replace
                    else "no prefork master to replace this process (set workers to have it replaced)"
                )
                log.error(
                    "request_terminate_timeout (%gs): %s has run for %.1fs: answered with 504 and "
                    "RequestTerminated raised in its thread; %s. Stacks of this process's threads:\n%s",
                    terminate,
                    what,
                    seconds,
                    action,
                    trace,
                )
                if replace:
                    server.stop()
        logged &= current
        ended &= current


def start(server: Server, slowlog: float, terminate: float, replace: bool) -> None:
    """Watch ``server``'s running requests in a daemon thread, if either timeout (seconds,
    0 for off) is set. ``replace``: a prefork worker, which stops to be replaced after it
    terminated a request."""
    if slowlog > 0 or terminate > 0:
        threading.Thread(
            target=_watch, args=(server, slowlog, terminate, replace), name="oxfcgi-watchdog", daemon=True
        ).start()
