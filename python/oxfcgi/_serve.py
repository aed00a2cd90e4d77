"""Serving from start to end: the one path ``run()``, flup's ``WSGIServer.run()`` and
``oxfcgi serve`` take.

The order is what keeps it safe: settings checked (by the engine too) → logging → bind
(as root if need be) → pid file → switch user → load the app (in each worker, with
prefork and no preload) → serve. Application code never runs before the user switch.
Without a user switch the app is loaded first, before binding: a socket that accepts then
means an app that is loaded, and a broken app leaves no socket behind.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

from . import _interface, _reload, _startup, _watchdog, supervisor
from ._cgi import force_cgi_requested, serve_cgi
from ._listen import drop_privileges, listen, remove_pidfile, write_pidfile
from ._loader import Loaded
from ._logsetup import configure, make_print_safe, use_log_file
from ._oxfcgi import Server
from .settings import Resolved

log = logging.getLogger("oxfcgi")

#: From the settings of a loaded app (its own ``run()`` arguments included) to the
#: effective settings.
Finalize = Callable[[Loaded], Resolved]


def _noop_app(environ: object, start_response: object) -> list[bytes]:
    return []


def socket_settings(resolved: Resolved) -> dict[str, Any]:
    """The keyword arguments of :func:`oxfcgi.listen` (everything of the socket group but ``bind``)."""
    return {k: v for k, v in resolved.group("socket").items() if k != "bind"}


def worker_settings(resolved: Resolved) -> dict[str, Any]:
    """A prefork worker's server settings: ``wsgi.multiprocess`` on, and ``max_requests``
    plus this worker's share of ``max_requests_jitter`` (so workers do not restart together)."""
    out = resolved.group("server")
    out["multiprocess"] = True
    if out["max_requests"]:
        import random

        out["max_requests"] += random.randint(0, max(0, resolved.values["max_requests_jitter"]))
    return out


def warn_max_requests_under_mod_fcgid(max_requests: int | None) -> None:
    """deployment.md §8 #10: a self-imposed max_requests makes mod_fcgid serve 500s."""
    if not max_requests or _startup.LISTEN_FD is None:
        return
    try:
        name = socket.socket(fileno=os.dup(_startup.LISTEN_FD)).getsockname()
    except OSError:
        return
    if isinstance(name, str) and re.search(r"/\d+\.\d+$", name):
        log.warning(
            "max_requests=%s under Apache mod_fcgid: when this process exits by itself, mod_fcgid may already "
            "have sent it the next request, which then fails with a 500. Let mod_fcgid recycle processes "
            "instead: FcgidMaxRequestsPerProcess %s",
            max_requests,
            max_requests,
        )


def warn_bind_beside_inherited_socket(bind: Any) -> None:
    """A process manager handed us a listening socket (mod_fcgid, lighttpd bin-path, H2O's
    fastcgi.spawn, spawn-fcgi: fd 0; systemd: LISTEN_FDS) but a bind address was given
    too: we serve there, and the manager's requests would hang unanswered. Say so."""
    inherited = _startup.LISTEN_FD if _startup.LISTEN_FD is not None else next(iter(_startup.SYSTEMD_FDS), None)
    if bind is None or inherited is None or isinstance(bind, int) or str(bind).startswith("fd:"):
        return
    try:
        with socket.socket(fileno=os.dup(inherited)) as s:
            name = s.getsockname()
    except OSError:
        name = "?"
    where = f"unix:{name}" if isinstance(name, str) else f"{name[0]}:{name[1]}"
    log.warning(
        "the process that started this one handed over a listening socket (%s), but bind=%r was given: "
        "oxfcgi serves on the bind address, so the inherited socket is ignored and the requests sent to it "
        "hang. When a web server or spawner starts the app (mod_fcgid, lighttpd bin-path, H2O fastcgi.spawn, "
        "spawn-fcgi, systemd), remove the bind (--bind, OXFCGI_BIND, run(bind=...), flup's bindAddress)",
        where,
        bind,
    )


def warn_if_root() -> None:
    """Serving as root is allowed but never silent (uWSGI's "you are running as root")."""
    if os.geteuid() == 0:
        log.warning(
            "serving as root (uid 0): the application can do anything on this machine. Start oxfcgi as root "
            "with user=/--user (e.g. --user www-data) so it binds as root and then serves as that user"
        )


def serve(load: Callable[[], Loaded], base: Resolved, finalize: Finalize, script_file: str | None = None) -> bool:
    """Serve what ``load()`` returns until stopped; returns what :func:`oxfcgi.run` returns.

    ``base``: the settings known before loading (the socket and process groups come from
    here). ``finalize(loaded)``: the effective settings once the app is loaded (its script
    may have passed server settings to ``run()``). ``script_file``: what
    ``reload_on_change``'s ``script`` means when the loaded app does not say (the ``.fcgi``
    that called ``run()``). Raises ``BindError``/``OSError``,
    ``ValueError``/``TypeError`` for bad settings, and whatever ``load()`` raises.
    """
    values = base.values
    if force_cgi_requested(values["force_cgi"]):
        once = load()
        final = _interface.settle(finalize(once), once.app)
        if _interface.interface_of(once.app, final.values["interface"]) == "asgi":
            from ._asgi_cgi import serve_cgi_asgi

            environ = {**os.environ, **(final.values["environ"] or {})}
            serve_cgi_asgi(once.app, environ, lifespan=final.values["lifespan"], loop=final.values["loop"])
        else:
            serve_cgi(once.app, final.values["environ"])
        return False
    Server(_noop_app, base.group("server"))  # the engine checks every setting before we bind
    workers = supervisor.workers_setting(values["workers"])
    configure(values["log_level"], explicit=base.sources["log_level"] != "default", log_config=values["log_config"])
    if values["log_file"]:
        use_log_file(values["log_file"])
    warn_bind_beside_inherited_socket(values["bind"])
    switching = values["user"] is not None or values["group"] is not None
    loaded: Loaded | None = None
    if not switching and (workers is None or values["preload"]):
        loaded = load()
    listener = listen(values["bind"], **socket_settings(base))
    pidfile = values["pidfile"]
    stdout = sys.stdout
    try:
        if pidfile:
            write_pidfile(pidfile)
        drop_privileges(values["user"], values["group"])
        warn_if_root()
        stdout = make_print_safe()
        if workers is not None:
            if values["preload"]:
                preloaded = loaded or load()
                load = lambda: preloaded  # noqa: E731
            recycle = supervisor.Recycle(max_lifetime=values["max_lifetime"], max_rss=values["max_rss"] or 0)
            master = supervisor.Master(
                load, finalize, listener, workers, recycle, values["graceful_timeout"], values["boot_attempts"]
            )
            if values["reload_on_change"]:
                script = (loaded.file if loaded is not None else None) or script_file
                master.watcher = _reload.Watcher(values["reload_on_change"], script)
            return master.run()
        loaded = loaded or load()
        final = _interface.settle(finalize(loaded), loaded.app)
        warn_max_requests_under_mod_fcgid(final.values["max_requests"])
        server = Server(loaded.app, final.group("server"))
        _watchdog.start(
            server, final.values["request_slowlog_timeout"], final.values["request_terminate_timeout"], replace=False
        )
        if values["reload_on_change"]:
            watcher = _reload.Watcher(values["reload_on_change"], loaded.file or script_file)
            _reload.watch_server(server, watcher, values["graceful_timeout"])
        return _interface.serve(server, listener, loaded.app, final.values)
    finally:
        sys.stdout = stdout
        if pidfile:
            remove_pidfile(pidfile)
        listener.close()
