"""``reload_on_change``: new code without a shell, as uWSGI's ``touch-reload`` and
Passenger's ``tmp/restart.txt`` give it.

The named files (``script``: the ``.fcgi``/``.py`` that was started, or the TARGET's file)
are looked at once a second; when one is touched, replaced or edited:

- a single process (under mod_fcgid, lighttpd ``bin-path``, spawn-fcgi, systemd) waits
  until no request is running, then stops gracefully; the spawner answers the next request
  with a fresh process that imports the new code (mod_fcgid keys its processes by the
  script's inode and never looks at its mtime, so without this ``touch`` does nothing);
  several processes of one spawner (lighttpd ``max-procs``) stop one after another, a
  second apart, so that one of them always answers;
- under a prefork master the workers are replaced one by one, as on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from ._oxfcgi import Server

log = logging.getLogger("oxfcgi")

#: How often the files are looked at, in seconds.
INTERVAL = 1.0

__all__ = ["Watcher", "watch_server"]


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Watcher:
    """The files of ``reload_on_change``, and whether one changed since the last look."""

    def __init__(self, paths: tuple[str, ...], script: str | None) -> None:
        files = []
        for entry in paths:
            if entry == "script":
                if script is None:
                    log.warning("reload_on_change names 'script', but this process was not started from a file")
                    continue
                entry = script
            files.append(os.path.abspath(entry))
        self.files = list(dict.fromkeys(files))
        self.seen = {path: _identity(path) for path in self.files}

    def changed(self) -> str | None:
        """The first file that changed since the last call (None if none did)."""
        for path in self.files:
            now = _identity(path)
            if now != self.seen[path]:
                self.seen[path] = now
                return path
        return None

    def __bool__(self) -> bool:
        return bool(self.files)


def main_script() -> str | None:
    """The script this process was started as (a ``.fcgi`` under mod_fcgid), if any."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    return os.path.abspath(path) if path and os.path.isfile(path) else None


def _watch(server: Server, watcher: Watcher, graceful_timeout: float) -> None:
    while True:
        time.sleep(INTERVAL)
        path = watcher.changed()
        if path is None:
            continue
        # Between requests: let the running ones end (within graceful_timeout) first, so
        # that the spawner's next request reaches a fresh process.
        deadline = time.monotonic() + graceful_timeout
        while server.active() and time.monotonic() < deadline:
            time.sleep(0.02)
        _take_turn(path, graceful_timeout + 5)
        log.info("%s changed (reload_on_change): this process stops to be replaced with the new code", path)
        server.stop(reload=True)
        return


#: After the process before it stopped, how long the next one waits before it stops too, in
#: seconds: time for the spawner to start the first one's replacement.
TURN_GAP = 1.0


def _take_turn(path: str, patience: float) -> None:
    """Processes of one spawner that see the same change stop one at a time (lighttpd's
    ``max-procs`` answers 503 while none of them is up): the first takes an ``flock`` on a
    file named after the changed path and holds it until it exits; each other one waits for
    the lock (at most ``patience`` seconds), then :data:`TURN_GAP` more. Best effort: no lock
    file, no wait."""
    import fcntl
    import hashlib
    import tempfile

    name = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    lock_path = os.path.join(tempfile.gettempdir(), f"oxfcgi-reload-{os.getuid()}-{name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return
    deadline, waited = time.monotonic() + patience, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if time.monotonic() > deadline:
                return
            waited = True
            time.sleep(0.1)
            continue
        # Held (the fd stays open) until this process exits: the next one's turn.
        if waited:
            time.sleep(TURN_GAP)
        return


def watch_server(server: Server, watcher: Watcher, graceful_timeout: float) -> None:
    """Watch in a daemon thread; stop ``server`` (gracefully, when it is idle) on a change."""
    if watcher:
        threading.Thread(
            target=_watch, args=(server, watcher, graceful_timeout), name="oxfcgi-reload", daemon=True
        ).start()
