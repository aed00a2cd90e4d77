"""oxfcgi: a FastCGI server for WSGI applications, with a Rust engine.

Two ways in::

    from oxfcgi import run
    run(app)                                  # started by mod_fcgid, lighttpd, spawn-fcgi, systemd
    run(app, bind="unix:/run/app.sock")      # or behind nginx / Apache mod_proxy_fcgi

    from oxfcgi import WSGIServer             # flup's API: change only the import
    WSGIServer(app, bindAddress="/run/app.sock").run()
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping

from . import _startup

_startup.prepare()

from . import _loader, supervisor  # noqa: E402
from ._cgi import force_cgi_requested, serve_cgi  # noqa: E402
from ._listen import drop_privileges, listen, remove_pidfile, write_pidfile  # noqa: E402
from ._logsetup import ensure_handler, make_print_safe, use_log_file  # noqa: E402
from ._oxfcgi import BindError, FileWrapper, InputStream, Listener, Scoreboard, Server, __version__  # noqa: E402

__all__ = [
    "run",
    "serve",
    "listen",
    "make_server",
    "WSGIServer",
    "BindError",
    "FileWrapper",
    "InputStream",
    "Listener",
    "Server",
    "FCGI_RESPONDER",
    "FCGI_AUTHORIZER",
    "FCGI_FILTER",
    "__version__",
]

# Roles, as in flup.server.fcgi_base and the FastCGI spec §6.
FCGI_RESPONDER = 1
FCGI_AUTHORIZER = 2
FCGI_FILTER = 3

_ROLE_NAMES = {"responder": FCGI_RESPONDER, "authorizer": FCGI_AUTHORIZER, "filter": FCGI_FILTER}

#: Settings of the server itself (:class:`Server`), with their defaults.
SERVER_DEFAULTS: dict[str, Any] = {
    "threads": 4,
    "multiplexed": False,
    "max_conns": 1024,
    "max_reqs": None,
    "roles": (FCGI_RESPONDER,),
    "max_params_size": 1 << 20,
    "graceful_timeout": 30.0,
    "idle_timeout": 10.0,
    "keepalive_timeout": 75.0,
    "read_timeout": 60.0,
    "script_name": None,
    "environ": None,
    "multithread": None,
    "multiprocess": False,
    "debug": False,
    "status_path": None,
    "ping_path": None,
    "max_requests": None,
    "request_timeout": 0.0,
}
#: Settings of the listening socket (:func:`listen`).
LISTEN_DEFAULTS: dict[str, Any] = {
    "socket_mode": 0o660,
    "umask": None,
    "socket_owner": None,
    "socket_group": None,
}
#: Settings of the process.
PROCESS_DEFAULTS: dict[str, Any] = {
    "user": None,
    "group": None,
    "pidfile": None,
    "log_file": None,
    "force_cgi": False,
    "workers": None,
    "max_requests_jitter": 0,
    "max_lifetime": 0.0,
    "max_rss": 0,
}
#: Every option ``run()`` takes, with its default.
DEFAULTS: dict[str, Any] = {**SERVER_DEFAULTS, **LISTEN_DEFAULTS, **PROCESS_DEFAULTS}


def _roles(roles: Iterable[int | str] | int | str) -> list[int]:
    if isinstance(roles, (int, str)):
        roles = [roles]
    out = []
    for role in roles:
        if isinstance(role, str):
            key = role.strip().lower().removeprefix("fcgi_")
            if key not in _ROLE_NAMES:
                raise ValueError(f"unknown FastCGI role {role!r}; use responder, authorizer or filter")
            out.append(_ROLE_NAMES[key])
        elif role in _ROLE_NAMES.values():
            out.append(int(role))
        else:
            raise ValueError(f"unknown FastCGI role {role!r}; use FCGI_RESPONDER (1), FCGI_AUTHORIZER (2) or FCGI_FILTER (3)")
    return out


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"run() got unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")


def _server_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(SERVER_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown server option(s) {', '.join(sorted(unknown))}; known: {', '.join(SERVER_DEFAULTS)}")
    settings = {**SERVER_DEFAULTS, **options}
    environ = settings.pop("environ")
    if environ is not None and not isinstance(environ, dict):
        environ = dict(environ)
    return {**settings, "roles": _roles(settings["roles"]), "environ": environ}


def make_server(app: Callable, **options: Any) -> Server:
    """Build a :class:`Server` from :data:`SERVER_DEFAULTS` options (validated
    now, nothing is bound); serve it with ``server.serve(listen(bind))``.

    Raises ``TypeError`` for an unknown option or a non-callable app and
    ``ValueError`` for a bad value.
    """
    if not callable(app):
        raise TypeError(f"the WSGI application must be callable, got {type(app).__name__}")
    return Server(app, **_server_kwargs(options))


def _warn_max_requests_under_mod_fcgid(max_requests) -> None:
    """deployment.md §8 #10: a self-imposed max-requests makes mod_fcgid serve 500s."""
    if not max_requests or _startup.LISTEN_FD is None:
        return
    import re
    import socket as _socket

    try:
        name = _socket.socket(fileno=os.dup(_startup.LISTEN_FD)).getsockname()
    except OSError:
        return
    if isinstance(name, str) and re.search(r"/\d+\.\d+$", name):
        import logging

        logging.getLogger("oxfcgi").warning(
            "max_requests=%s under Apache mod_fcgid: when this process exits by itself, mod_fcgid may already "
            "have sent it the next request, which then fails with a 500. Let mod_fcgid recycle processes "
            "instead: FcgidMaxRequestsPerProcess %s", max_requests, max_requests)


def serve(load_app: Callable[[], Callable], bind: Any = None, **options: Any) -> bool:
    """Like :func:`run`, but takes a function that returns the application.

    With ``workers`` > 1 it is called in each worker after the fork (so a
    SIGHUP reload imports the code anew); otherwise once, after binding and
    switching user. ``oxfcgi serve`` uses this to import the app only after
    dropping privileges.
    """
    _check_options(options)
    settings = {**DEFAULTS, **options}
    if force_cgi_requested(settings["force_cgi"]):
        serve_cgi(load_app(), settings["environ"])
        return False
    server_kwargs = _server_kwargs({k: settings[k] for k in SERVER_DEFAULTS})
    Server(lambda e, s: [], **server_kwargs)  # validate every setting before binding
    workers = supervisor.workers_setting(settings["workers"])
    ensure_handler()
    if settings["log_file"]:
        use_log_file(settings["log_file"])
    listener = listen(bind, **{k: settings[k] for k in LISTEN_DEFAULTS})
    pidfile = settings["pidfile"]
    stdout = sys.stdout
    try:
        if pidfile:
            write_pidfile(pidfile)
        drop_privileges(settings["user"], settings["group"])
        stdout = make_print_safe()
        if workers is not None:
            recycle = supervisor.Recycle(max_requests=settings["max_requests"],
                                         max_requests_jitter=settings["max_requests_jitter"],
                                         max_lifetime=settings["max_lifetime"], max_rss=settings["max_rss"])
            per_worker = {k: v for k, v in server_kwargs.items() if k != "max_requests"}
            per_worker["multiprocess"] = True
            master = supervisor.Master(load_app, listener, workers, per_worker, recycle,
                                       settings["graceful_timeout"])
            return master.run()
        _warn_max_requests_under_mod_fcgid(settings["max_requests"])
        server = Server(load_app(), **server_kwargs)
        supervisor.start_watchdog(server, settings["request_timeout"], replace=False)
        return server.serve(listener)
    finally:
        sys.stdout = stdout
        if pidfile:
            remove_pidfile(pidfile)
        listener.close()


def run(app: Callable, bind: Any = None, **options: Any) -> bool:
    """Serve ``app`` (a PEP 3333 WSGI callable) over FastCGI until stopped.

    ``bind``: where to listen. ``None`` (default) means the process was
    started by a FastCGI process manager: systemd socket activation
    (``LISTEN_FDS``), else fd 0 when it is a listening socket (spec §2.2,
    ``FCGI_LISTENSOCK_FILENO``: Apache mod_fcgid, lighttpd ``bin-path``,
    spawn-fcgi); otherwise it prints how to start the application and exits
    with status 2. Or a unix socket (``"unix:/run/app.sock"``,
    ``"/run/app.sock"``, a ``pathlib.Path``, ``"@abstract"``), TCP
    (``"127.0.0.1:9000"``, ``"[::1]:9000"``, ``("127.0.0.1", 9000)``), an fd
    (``3``, ``"fd:3"``) or a :class:`Listener` from :func:`listen`.

    Server options (defaults in brackets):

    - ``threads`` [4]: Python threads running requests. An idle kept-open
      connection holds none.
    - ``multiplexed`` [False]: accept concurrent requests on one connection
      (``FCGI_MPXS_CONNS``).
    - ``max_conns`` [1024]: connections at once (``FCGI_MAX_CONNS``).
    - ``max_reqs`` [``max(16 * threads, 64)``]: requests in flight, queued
      for a thread or running (``FCGI_MAX_REQS``); over it a request is
      refused at once: ``FCGI_OVERLOADED`` on a multiplexed connection, else
      ``503`` with ``Retry-After: 1`` (never an unbounded queue).
    - ``roles`` [``(FCGI_RESPONDER,)``]: roles accepted (ints or names);
      others get ``FCGI_UNKNOWN_ROLE``.
    - ``max_params_size`` [1 MiB]: bytes of FCGI_PARAMS per request; more
      closes the connection with a log line.
    - ``graceful_timeout`` [30.0 s]: after SIGTERM/SIGINT/SIGQUIT/SIGHUP, how
      long requests in flight may take.
    - ``idle_timeout`` [10.0 s]: a new connection must start a request
      within it; ``keepalive_timeout`` [75.0 s]: a kept-open connection may
      idle this long between requests (longer than nginx's 60 s, so nginx
      closes first); ``read_timeout`` [60.0 s]: while a request's params or
      body are incomplete, the web server must send something within it.
      0 turns one off.
    - ``script_name`` [None]: the URL prefix the app is mounted at; sets
      ``SCRIPT_NAME`` and takes ``PATH_INFO`` from the request path.
    - ``environ`` [None]: a dict merged into every request's environ,
      overriding params (flup).
    - ``multithread`` [``threads > 1``], ``multiprocess`` [False]: the
      ``wsgi.multithread``/``wsgi.multiprocess`` values.
    - ``debug`` [False]: tracebacks in 500 pages.

    Socket options: ``socket_mode`` [0o660], ``umask`` [None] (flup's, around
    binding), ``socket_owner``/``socket_group`` [None] (names or ids) for a
    unix socket file.

    - ``status_path``, ``ping_path`` [None]: paths the engine answers itself,
      without entering Python: php-fpm's pool status fields (text, ``?json``,
      ``?full`` for one entry per worker) and ``pong``.
    - ``request_timeout`` [0: off]: a request running longer gets the stacks
      of all its worker's threads logged (php-fpm's slowlog) and, with
      workers, the worker is replaced.
    - ``max_requests`` [None]: a worker is replaced after this many requests.

    Process options: ``workers`` [None: one process, or ``PHP_FCGI_CHILDREN``
    workers when it is above 1]: a prefork master forks that many worker processes
    sharing the socket, respawns crashed ones (with crash-loop backoff),
    recycles them (``max_requests`` + up to ``max_requests_jitter``,
    ``max_lifetime`` seconds, ``max_rss`` MiB), reloads them one by one on
    SIGHUP and stops them gracefully on SIGTERM. ``user``/``group`` [None]: switch to this account after
    binding (start as root; ``oxfcgi serve --user`` also imports the app only
    after switching); ``pidfile`` [None]; ``log_file`` [None]: log (and
    print()) there too, reopened on SIGUSR1; ``force_cgi`` [False]: serve one
    CGI request from the environment and stdin/stdout instead (also
    ``FCGI_FORCE_CGI=Y``, as in flup).

    Returns True when stopped by SIGHUP (so the caller can reload, flup's
    contract; with workers, SIGHUP reloads them and run() goes on) and
    False for SIGTERM, SIGINT or SIGQUIT. Signal handlers are
    installed for the duration of the call and restored after, so ``run()``
    also works from a non-main thread. Logs go to the ``oxfcgi`` logger
    (stderr by default). Raises ``BindError`` (an ``OSError``) when it cannot
    listen, ``TypeError``/``ValueError`` for bad options.
    """
    _loader.intercept(app)
    if not callable(app):
        raise TypeError(f"the WSGI application must be callable, got {type(app).__name__}")
    return serve(lambda: app, bind, **options)


class WSGIServer:
    """flup's ``flup.server.fcgi.WSGIServer`` (threaded), on the oxfcgi engine.

    ``WSGIServer(application, environ=None, multithreaded=True,
    multiprocess=False, bindAddress=None, umask=None, multiplexed=False,
    debug=False, roles=(FCGI_RESPONDER,), forceCGI=False, **kw)``

    Arguments mean what they mean in flup 1.0.3. ``kw`` takes flup's thread
    pool arguments ``minSpare``, ``maxSpare`` (accepted, no effect: the pool
    is fixed) and ``maxThreads`` (the number of threads, capped at 64; flup's
    default is unlimited, ours is 4), plus any :func:`run` option by its
    name (``threads``, ``graceful_timeout``, ``socket_mode``, …). ``jobClass``
    and ``jobArgs`` are dropped, as flup does. Anything else raises
    ``TypeError``, as flup does. ``multithreaded=False`` means one thread.
    """

    _flavour_kw: frozenset[str] = frozenset({"minSpare", "maxSpare", "maxThreads"})
    _dropped_kw: frozenset[str] = frozenset({"jobClass", "jobArgs"})

    def __init__(self, application: Callable, environ: Mapping | None = None, multithreaded: bool = True,
                 multiprocess: bool = False, bindAddress: Any = None, umask: int | None = None,
                 multiplexed: bool = False, debug: bool = False, roles: Iterable[int] = (FCGI_RESPONDER,),
                 forceCGI: bool = False, **kw: Any):
        self.application = application
        self.environ = dict(environ or {})
        self.bindAddress = bindAddress
        self.forceCGI = forceCGI
        options = self._options(kw)
        options.setdefault("multithread", bool(multithreaded))
        options.setdefault("multiprocess", bool(multiprocess))
        if not multithreaded:
            options["threads"] = 1
        options.update(umask=umask, multiplexed=multiplexed, debug=debug, roles=tuple(roles))
        self.options = options
        # Validate now, like flup's constructor does.
        _check_options(options)
        make_server(application, environ=self.environ or None, **{k: v for k, v in options.items() if k in SERVER_DEFAULTS})

    def _options(self, kw: dict) -> dict:
        unknown = set(kw) - self._flavour_kw - self._dropped_kw - set(DEFAULTS)
        if unknown:
            raise TypeError(f"{type(self).__module__}.WSGIServer() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        options = {k: v for k, v in kw.items() if k in DEFAULTS}
        max_threads = kw.get("maxThreads")
        if max_threads is not None and "threads" not in options:
            options["threads"] = max(1, min(int(max_threads), 64))
        return options

    def run(self) -> bool:
        """Serve until a signal; True on SIGHUP, False on SIGINT/SIGTERM (flup's contract)."""
        return run(self.application, self.bindAddress, environ=self.environ or None,
                   force_cgi=self.forceCGI, **self.options)
