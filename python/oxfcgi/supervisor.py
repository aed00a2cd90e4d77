"""The prefork master: N worker processes sharing one listening socket.

The master binds (or inherits) the socket, then forks the workers before any
runtime thread exists, and supervises them:

- a worker that crashes is respawned; several crashes in a short time are a
  crash loop, met with a growing delay and a clear log line;
- a worker is recycled after ``max_requests`` requests (plus a random jitter so
  they do not all restart at once), after ``max_lifetime`` seconds, or when its
  RSS passes ``max_rss`` MiB: the replacement starts first, then the old one
  stops gracefully, so no request is refused;
- SIGHUP reloads: each worker in turn is replaced (the app is imported anew in
  each new worker unless it was preloaded in the master);
- SIGTERM/SIGINT/SIGQUIT stop the pool: workers finish their requests within
  ``graceful_timeout``, then are killed;
- SIGUSR1 reopens the log file, in the master and in every worker.

Workers tell the master when they are ready and when they stop accepting
(``READY=1``/``STOPPING=1``, systemd's notify protocol, on a datagram socket
whose peer credentials say which worker spoke).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

from ._loader import Loaded
from ._oxfcgi import Listener, Scoreboard, Server
from ._reload import Watcher
from .settings import Resolved

log = logging.getLogger("oxfcgi")

#: Crashes within this many seconds count towards a crash loop.
CRASH_WINDOW = 10.0
#: This many crashes within the window make a crash loop.
CRASH_LOOP = 3
#: Longest delay before respawning during a crash loop, in seconds.
MAX_BACKOFF = 30.0
#: Worker exit status when the app cannot be loaded in the worker (and the master's, when
#: it gives up: gunicorn's "Worker failed to boot" status).
EXIT_LOAD_FAILED = 3
#: The most of a load failure's traceback a worker sends to the master.
TRACEBACK_LIMIT = 60_000


class BootFailed(RuntimeError):
    """The application failed to load in ``boot_attempts`` workers in a row and no worker
    ever became ready: the master gave up. ``str(err)`` is the message for the user, with
    the last traceback."""


class Recycle:
    """When the master replaces a worker: after ``max_lifetime`` seconds, or when its RSS
    exceeds ``max_rss`` MiB (0: never). (``max_requests`` is counted by each worker
    itself, which stops accepting when it is reached.)

    (Plain classes, not dataclasses: importing ``dataclasses`` costs every
    worker about a megabyte of ``inspect``/``ast``.)"""

    __slots__ = ("max_lifetime", "max_rss")

    def __init__(self, max_lifetime: float = 0.0, max_rss: int = 0) -> None:
        self.max_lifetime = max_lifetime
        self.max_rss = max_rss


class Worker:
    """One worker process, as the master tracks it."""

    __slots__ = ("pid", "row", "started", "ready", "retiring", "lifetime_limit")

    def __init__(self, pid: int, row: int, lifetime_limit: float = 0.0) -> None:
        self.pid = pid
        self.row = row
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False
        self.lifetime_limit = lifetime_limit


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


class Master:
    """Runs the pool; :meth:`run` returns when it stops (always False: a
    SIGHUP reloads the workers instead of returning)."""

    def __init__(
        self,
        load: Callable[[], Loaded],
        finalize: Callable[[Loaded], Resolved],
        listener: Listener,
        workers: int,
        recycle: Recycle,
        graceful_timeout: float,
        boot_attempts: int = 3,
    ) -> None:
        self.load = load
        self.finalize = finalize
        self.listener = listener
        self.size = workers
        self.recycle = recycle
        self.graceful_timeout = graceful_timeout
        # Room for replacements running beside the workers they replace.
        self.board = Scoreboard(4 * workers + 4)
        self.workers: dict[int, Worker] = {}
        self.crashes: list[float] = []
        self.boot_attempts = boot_attempts
        #: Load failures in a row before any worker became ready, and the last traceback.
        self.boot_failures = 0
        self.load_traceback = ""
        self.ever_ready = False
        self.gave_up: BootFailed | None = None
        #: reload_on_change (set by the caller), looked at once a second.
        self.watcher: Watcher | None = None
        self.next_watch = 0.0
        self.respawn_at = 0.0
        self.stopping = False
        self.signals: list[int] = []
        self.systemd_notify = os.environ.pop("NOTIFY_SOCKET", None)
        self.told_systemd_ready = False

    # -- plumbing ---------------------------------------------------------------------------
    def _free_row(self) -> int:
        used = {w.row for w in self.workers.values()}
        free = [i for i in range(len(self.board)) if i not in used]
        if free:
            return free[0]
        # Every row is taken (many replacements at once): share the row of
        # the oldest retiring worker; only its status counters are affected.
        retiring = sorted((w for w in self.workers.values() if w.retiring), key=lambda w: w.started)
        return retiring[0].row if retiring else len(self.workers) % len(self.board)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _notify_systemd(self, state: str) -> None:
        if not self.systemd_notify:
            return
        address = "\0" + self.systemd_notify[1:] if self.systemd_notify.startswith("@") else self.systemd_notify
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(state.encode(), address)
        except OSError as e:
            log.warning("cannot notify systemd: %s", e)

    def spawn(self) -> Worker:
        row = self._free_row()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = self._worker_main(row)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        lifetime = 0.0
        if self.recycle.max_lifetime:
            import random

            lifetime = self.recycle.max_lifetime * random.uniform(1.0, 1.1)
        worker = Worker(pid=pid, row=row, lifetime_limit=lifetime)
        self.workers[pid] = worker
        log.info("started worker %d (scoreboard row %d)", pid, row)
        return worker

    def _worker_main(self, row: int) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.notify_sock.close()
        os.environ["NOTIFY_SOCKET"] = self.notify_name
        self.listener.disown()
        try:
            loaded = self.load()
        except BaseException:
            import traceback

            text = traceback.format_exc()
            log.error("worker %d cannot load the application:\n%s", os.getpid(), text)
            self._tell_master("LOADFAIL=1\n" + text[-TRACEBACK_LIMIT:])
            return EXIT_LOAD_FAILED
        from . import _interface, _serve, _watchdog

        final = _interface.settle(self.finalize(loaded), loaded.app)
        server = Server(loaded.app, _serve.worker_settings(final), scoreboard=self.board, worker_row=row)
        _watchdog.start(
            server, final.values["request_slowlog_timeout"], final.values["request_terminate_timeout"], replace=True
        )
        try:
            _interface.serve(server, self.listener, loaded.app, final.values)
        except _interface.LifespanFailed as e:
            # As an import error: the master stops booting workers that fail this way.
            log.error("worker %d: %s", os.getpid(), e)
            self._tell_master("LOADFAIL=1\n" + str(e)[-TRACEBACK_LIMIT:])
            return EXIT_LOAD_FAILED
        return 0

    def _tell_master(self, message: str) -> None:
        """From a worker: one datagram to the master's notify socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(errors="replace"), "\0" + self.notify_name[1:])
        except OSError:
            pass

    def _read_notifications(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.notify_sock.recvmsg(1 << 16, socket.CMSG_SPACE(struct.calcsize("3i")))
            except BlockingIOError:
                return
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            worker = self.workers.get(pid) if pid is not None else None
            if worker is None:
                continue
            text = data.decode(errors="replace")
            if text.startswith("LOADFAIL=1\n"):
                self.load_traceback = text.split("\n", 1)[1]
                continue
            lines = text.splitlines()
            if "READY=1" in lines and not worker.ready:
                worker.ready = True
                self.ever_ready = True
                if not self.told_systemd_ready:
                    self.told_systemd_ready = True
                    self._notify_systemd(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving with {self.size} worker(s)")
            if "STOPPING=1" in lines and not worker.retiring and not self.stopping:
                # The worker stopped accepting by itself (max_requests,
                # request_terminate_timeout): start its replacement now.
                worker.retiring = True
                self.spawn()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.board.release(worker.row)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d exited (%s)", pid, code)
                continue
            if worker.retiring:
                log.info("worker %d replaced and exited (%s)", pid, code)
                continue
            if code == 0:
                log.info("worker %d exited; starting a new one", pid)
                self.spawn()
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            reason = " (the application failed to load)" if code == EXIT_LOAD_FAILED else ""
            if code == EXIT_LOAD_FAILED and not self.ever_ready:
                self.boot_failures += 1
                if self.boot_failures >= self.boot_attempts:
                    self._give_up()
                    return
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW] + [now]
            if len(self.crashes) >= CRASH_LOOP:
                delay = min(MAX_BACKOFF, 2.0 ** (len(self.crashes) - CRASH_LOOP))
                log.error(
                    "worker %d %s%s: crash loop (%d crashes within %.0fs); next respawn in %.0fs",
                    pid,
                    how,
                    reason,
                    len(self.crashes),
                    CRASH_WINDOW,
                    delay,
                )
                self.respawn_at = max(self.respawn_at, now + delay)
            else:
                log.error("worker %d %s%s; starting a new one", pid, how, reason)

    def _give_up(self) -> None:
        """gunicorn's "Worker failed to boot": no worker ever became ready and the app failed
        to load ``boot_attempts`` times in a row, so respawning would only loop; stop the
        pool, and make run() raise BootFailed (``oxfcgi serve`` exits with status 3)."""
        message = (
            f"the application failed to load in {self.boot_failures} worker(s) in a row and no worker ever "
            f"became ready (boot_attempts={self.boot_attempts}): giving up instead of respawning for ever.\n"
            f"The last worker's error:\n{self.load_traceback.rstrip() or '(no traceback received)'}\n"
            "Fix it and start again; to see it as the web server would run the app: oxfcgi check TARGET "
            "(add --user for the account it runs as)."
        )
        log.error("%s", message)
        self.gave_up = BootFailed(message)
        self.stopping = True
        self._notify_systemd("STOPPING=1")
        for worker in list(self.workers.values()):
            self._kill(worker, signal.SIGTERM)

    def _replace(self, worker: Worker, why: str) -> None:
        log.info("replacing worker %d: %s", worker.pid, why)
        worker.retiring = True
        new = self.spawn()
        deadline = time.monotonic() + 30
        while not new.ready and new.pid in self.workers and time.monotonic() < deadline:
            self._wait(0.1)
            self._read_notifications()
            self._reap()
        self._kill(worker, signal.SIGTERM)

    def _kill(self, worker: Worker, signum: int) -> None:
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass

    def _wait(self, timeout: float) -> None:
        try:
            select.select([self.wakeup_r, self.notify_sock.fileno()], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _reload_all(self, why: str) -> None:
        """Replace every worker in turn, each after its replacement is ready."""
        for worker in [w for w in self.workers.values() if not w.retiring]:
            if worker.pid in self.workers and not worker.retiring:
                self._replace(worker, why)

    def _checks(self) -> None:
        now = time.monotonic()
        if self.watcher is not None and now >= self.next_watch:
            self.next_watch = now + 1.0
            changed = self.watcher.changed()
            if changed:
                log.info("%s changed (reload_on_change): reloading the workers one by one", changed)
                self._reload_all(f"reload ({os.path.basename(changed)} changed)")
        live = [w for w in self.workers.values() if not w.retiring]
        if len(live) < self.size and now >= self.respawn_at:
            for _ in range(self.size - len(live)):
                self.spawn()
        for extra in sorted(live, key=lambda w: w.started)[self.size :]:
            extra.retiring = True
            self._kill(extra, signal.SIGTERM)
        for worker in list(self.workers.values()):
            if worker.retiring or not worker.ready:
                continue
            if worker.lifetime_limit and now - worker.started > worker.lifetime_limit:
                self._replace(worker, f"max_lifetime ({self.recycle.max_lifetime:.0f}s) reached")
            elif self.recycle.max_rss and _rss_mib(worker.pid) > self.recycle.max_rss:
                self._replace(worker, f"RSS {_rss_mib(worker.pid):.0f} MiB over max_rss ({self.recycle.max_rss} MiB)")

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                if self.stopping:
                    log.warning("%s received again: killing the workers now", signal.Signals(signum).name)
                    for worker in list(self.workers.values()):
                        self._kill(worker, signal.SIGKILL)
                else:
                    log.info(
                        "%s received: stopping %d worker(s) (graceful_timeout %.0fs)",
                        signal.Signals(signum).name,
                        len(self.workers),
                        self.graceful_timeout,
                    )
                    self.stopping = True
                    self._notify_systemd("STOPPING=1")
                    for worker in list(self.workers.values()):
                        self._kill(worker, signal.SIGTERM)
            elif signum == signal.SIGHUP and not self.stopping:
                log.info("SIGHUP received: reloading the workers one by one")
                self._reload_all("reload (SIGHUP)")
            elif signum == signal.SIGUSR1:
                from . import _logsetup

                _logsetup.reopen()
                for worker in list(self.workers.values()):
                    self._kill(worker, signal.SIGUSR1)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("workers > 1 needs run() on the main thread (the master handles signals)")
        self.notify_name = f"@oxfcgi-master-{os.getpid()}-{os.urandom(4).hex()}"
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.notify_sock.bind("\0" + self.notify_name[1:])
        self.notify_sock.setblocking(False)
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(wakeup_w)
        log.info("oxfcgi master %d: %d worker(s) on %s", os.getpid(), self.size, self.listener.address)
        try:
            for _ in range(self.size):
                self.spawn()
            deadline = None
            while self.workers or not self.stopping:
                self._wait(1.0)
                try:
                    self._read_notifications()
                    self._handle_signals()
                    self._reap()
                except Exception:
                    log.exception("internal error in the prefork master (continuing)")
                if self.stopping:
                    deadline = deadline or time.monotonic() + self.graceful_timeout + 5
                    if time.monotonic() > deadline and self.workers:
                        log.warning(
                            "%d worker(s) still running after graceful_timeout: killing them", len(self.workers)
                        )
                        for worker in list(self.workers.values()):
                            self._kill(worker, signal.SIGKILL)
                        deadline = time.monotonic() + 5
                else:
                    self._checks()
        finally:
            for worker in list(self.workers.values()):
                self._kill(worker, signal.SIGKILL)
            for _ in list(self.workers):
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self.wakeup_r)
            os.close(wakeup_w)
            self.notify_sock.close()
        log.info("oxfcgi master %d stopped", os.getpid())
        if self.gave_up is not None:
            raise self.gave_up
        return False


def workers_setting(workers: int | None) -> int | None:
    """How many prefork workers to run, or None for a single process (no master).

    An explicit ``workers`` (>= 1) wins. Otherwise ``PHP_FCGI_CHILDREN``
    (what lighttpd sets to 1 and ``spawn-fcgi -C`` sets): 0 or 1 mean one
    process, more means that many workers. Raises ``ValueError`` below 1.
    """
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    value = os.environ.get("PHP_FCGI_CHILDREN", "").strip()
    return int(value) if value.isdigit() and int(value) > 1 else None
