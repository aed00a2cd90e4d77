"""ASGI applications: one event loop per process, on its own thread, fed by the engine.

The engine (Rust) parses FastCGI and owns the sockets exactly as for WSGI; instead of the
worker threads, requests go to an ``AsgiBridge``, which wakes this loop through an eventfd
(one wake-up for a burst of requests, nothing taken under the GIL on the engine's side).
:class:`Runner` runs the loop thread, the lifespan protocol and one task per request:

    await app(handle.scope(state), handle.receive, handle.send)
    await handle.finish(traceback)

``receive``/``send`` are the engine's (``RequestHandle``): they complete at once when they
can and otherwise return an asyncio future the bridge resolves (a body chunk arrived, the
connection's output queue has room), so a slow client never blocks the loop. The spec
followed: ASGI 3.0, HTTP 2.4, lifespan 2.0.

- ``interface`` (``auto``/``wsgi``/``asgi``): :func:`oxfcgi._interface.is_asgi` decides ``auto``.
- ``loop`` (``auto``/``asyncio``/``uvloop``): ``auto`` takes uvloop when it is installed.
- ``lifespan`` (``auto``/``on``/``off``, uvicorn's meanings): startup runs in each process
  before it accepts a connection (a failure stops the process with the app's message, and a
  prefork master stops booting workers that fail, as for an import error); shutdown runs
  after the last request, within ``graceful_timeout``.

WebSocket cannot be carried by FastCGI (no upgrade), so a ``websocket`` scope never comes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from typing import Any

from ._interface import LifespanFailed

log = logging.getLogger("oxfcgi")


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """An event loop of ``kind`` (``auto``: uvloop when importable). ``ImportError`` for
    ``uvloop`` when it is not installed."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            if kind == "uvloop":
                raise ImportError("loop=uvloop, but uvloop is not installed (pip install uvloop)") from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class Runner:
    """The event loop thread of one process and what runs on it.

    ``Runner(app, loop="auto", lifespan="auto", debug=False, shutdown_timeout=30.0)``;
    :meth:`start` (loop thread, then lifespan startup: ``LifespanFailed`` if it fails),
    :meth:`serve` (``server.serve(listener, bridge=...)``), :meth:`close` (lifespan shutdown,
    requests still running cancelled, loop closed)."""

    def __init__(
        self,
        app: Any,
        *,
        loop: str = "auto",
        lifespan: str = "auto",
        debug: bool = False,
        shutdown_timeout: float = 30.0,
        slowlog: float = 0.0,
        terminate: float = 0.0,
    ) -> None:
        from ._oxfcgi import AsgiBridge, ClientDisconnected

        self.app = app
        self.debug = debug
        self.lifespan_mode = lifespan
        self.shutdown_timeout = shutdown_timeout
        self.loop = new_event_loop(loop)
        self.bridge = AsgiBridge(self.loop)
        self.state: dict[str, Any] = {}
        self._disconnected = ClientDisconnected
        self._lifespan: _Lifespan | None = None
        self._thread = threading.Thread(target=self._run_loop, name="oxfcgi-asgi-loop", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self.watch = _Watch(slowlog, terminate)

    # ---- the loop thread ----------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.bridge.fileno(), self._drain)
        if self.watch.interval:
            self.loop.call_later(self.watch.interval, self._check)
        self.loop.run_forever()

    def _check(self) -> None:
        try:
            self.watch.check()
        except Exception:  # the watchdog must outlive one bad check
            log.exception("the ASGI request watchdog failed")
        finally:
            self.loop.call_later(self.watch.interval, self._check)

    def _drain(self) -> None:
        for handle in self.bridge.drain():
            task = self.loop.create_task(self._request(handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _request(self, handle: Any) -> None:
        failure = None
        task = asyncio.current_task()
        try:
            scope = handle.scope(self.state if self._lifespan and self._lifespan.supported else None)
            if self.watch.interval and task is not None:
                self.watch.running[task] = (time.monotonic(), f"{scope['method']} {scope['path']}", handle)
            await self.app(scope, handle.receive, handle.send)
        except self._disconnected:
            pass  # the web server went away; nothing to answer
        except asyncio.CancelledError as e:
            if task is not None and task in self.watch.terminated:
                return  # request_terminate_timeout: the watchdog had the engine answer 504
            await handle.finish("".join(traceback.format_exception(e)), self.debug)
            raise
        except BaseException as e:  # the app's failure is the request's, not the loop's
            # SystemExit or KeyboardInterrupt in a request too: re-raised, it would stop the
            # event loop and leave every later request unanswered.
            failure = "".join(traceback.format_exception(e))
        finally:
            if task is not None:
                self.watch.forget(task)
        await handle.finish(failure, self.debug)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread and run the lifespan startup (``lifespan`` setting)."""
        self._thread.start()
        if self.lifespan_mode == "off":
            return
        self._lifespan = _Lifespan(self.app, self.state, required=self.lifespan_mode == "on")
        try:
            self._call(self._lifespan.startup())
        except BaseException:
            self.close()
            raise

    def serve(self, server: Any, listener: Any) -> bool:
        """Serve ``listener`` through the engine ``server`` (a ``Server``) until it stops."""
        return bool(server.serve(listener, bridge=self.bridge))

    def close(self) -> None:
        """Lifespan shutdown, then the loop: requests still running are cancelled."""
        if not self._thread.is_alive():
            return
        try:
            # Requests still running are past the graceful deadline: cancelled before the
            # app's shutdown releases what they use.
            self._call(self._cancel_all(), 10)
            if self._lifespan is not None and self._lifespan.supported:
                self._call(self._lifespan.shutdown(), self.shutdown_timeout + 5)
        except Exception as e:  # a broken shutdown must not keep the process alive
            log.error("ASGI lifespan shutdown failed: %s", e or type(e).__name__)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


class _Watch:
    """``request_slowlog_timeout`` and ``request_terminate_timeout`` for the requests on the
    event loop (seconds, 0 for off), as :mod:`oxfcgi._watchdog` does for WSGI threads: a slow
    request's task stack is logged once; a request past the terminate limit is answered 504
    by the engine and its task cancelled (``asyncio.CancelledError`` in the app)."""

    def __init__(self, slowlog: float, terminate: float) -> None:
        self.slowlog, self.terminate = slowlog, terminate
        limits = [t for t in (slowlog, terminate) if t > 0]
        self.interval = max(0.05, min(1.0, min(limits) / 4)) if limits else 0.0
        self.running: dict[asyncio.Task[None], tuple[float, str, Any]] = {}
        self.logged: set[asyncio.Task[None]] = set()
        self.terminated: set[asyncio.Task[None]] = set()

    def forget(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        self.logged.discard(task)

    def check(self) -> None:
        now = time.monotonic()
        for task, (began, what, handle) in list(self.running.items()):
            age = now - began
            if self.slowlog and age > self.slowlog and task not in self.logged:
                self.logged.add(task)
                log.error(
                    "request_slowlog_timeout (%gs): %s has run for %.1fs. Its task's stack:\n%s",
                    self.slowlog,
                    what,
                    age,
                    _task_stack(task),
                )
            if self.terminate and age > self.terminate and task not in self.terminated:
                self.terminated.add(task)
                # Answered now, whether or not the app lets the cancellation through (the
                # engine carries the 504 out; nothing here needs to wait for it).
                handle.terminate()
                log.error(
                    "request_terminate_timeout (%gs): %s has run for %.1fs: answered with 504 and its task "
                    "cancelled. Its task's stack:\n%s",
                    self.terminate,
                    what,
                    age,
                    _task_stack(task),
                )
                task.add_done_callback(self.terminated.discard)
                task.cancel()


def _task_stack(task: asyncio.Task[None]) -> str:
    """Where ``task`` waits: its coroutine and every coroutine it awaits, outermost first
    (``Task.print_stack`` shows only the outermost)."""
    lines = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.extend(traceback.format_stack(frame, limit=1))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "".join(lines) or f"{task!r}\n"


class _Lifespan:
    """The lifespan protocol (ASGI lifespan 2.0) for one process: the app's lifespan task,
    fed ``lifespan.startup`` and later ``lifespan.shutdown``."""

    def __init__(self, app: Any, state: dict[str, Any], *, required: bool) -> None:
        self.app = app
        self.state = state
        self.required = required
        self.supported = False
        self._incoming: asyncio.Queue[dict[str, Any]] | None = None
        self._replies: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _main(self) -> None:
        assert self._incoming is not None and self._replies is not None
        incoming, replies = self._incoming, self._replies

        async def receive() -> dict[str, Any]:
            return await incoming.get()

        async def send(message: dict[str, Any]) -> None:
            await replies.put(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, receive, send)
        except BaseException as e:
            self._error = e
        finally:
            await replies.put({"type": "_exited"})

    async def startup(self) -> None:
        self._incoming, self._replies = asyncio.Queue(), asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._incoming.put({"type": "lifespan.startup"})
        reply = await self._replies.get()
        kind = reply.get("type")
        if kind == "lifespan.startup.complete":
            self.supported = True
            log.info("ASGI lifespan startup complete")
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(f"the application's lifespan startup failed: {reply.get('message', '')}")
        # The app ended (or raised) without answering: it does not do lifespan.
        if self.required:
            detail = "".join(traceback.format_exception(self._error)) if self._error else "it returned"
            raise LifespanFailed(f"lifespan=on, but the application did not complete its startup:\n{detail}")
        if self._error is not None:
            log.info("the ASGI application does not support lifespan (%s); serving without it", self._error)

    async def shutdown(self) -> None:
        assert self._incoming is not None and self._replies is not None
        await self._incoming.put({"type": "lifespan.shutdown"})
        reply = await self._replies.get()
        if reply.get("type") == "lifespan.shutdown.failed":
            log.error("ASGI lifespan shutdown failed: %s", reply.get("message", ""))
        elif reply.get("type") == "lifespan.shutdown.complete":
            log.info("ASGI lifespan shutdown complete")
        elif self._error is not None:
            log.error("the ASGI application's lifespan raised:\n%s", "".join(traceback.format_exception(self._error)))


def run(server: Any, listener: Any, app: Any, values: dict[str, Any]) -> bool:
    """Serve the ASGI application ``app`` on ``listener`` with the engine ``server`` on this
    process's event loop (see :func:`oxfcgi._interface.serve`). Returns ``server.serve()``'s
    result. Raises ``LifespanFailed`` when the startup fails (before any connection is
    accepted)."""
    runner = Runner(
        app,
        loop=values["loop"],
        lifespan=values["lifespan"],
        debug=values["debug"],
        shutdown_timeout=values["graceful_timeout"],
        slowlog=values["request_slowlog_timeout"],
        terminate=values["request_terminate_timeout"],
    )
    runner.start()
    try:
        return runner.serve(server, listener)
    finally:
        runner.close()
