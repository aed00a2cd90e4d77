"""oxfcgi: a FastCGI server for WSGI applications, with a Rust engine.

Two ways in::

    from oxfcgi import run
    run(app)                                  # started by mod_fcgid, lighttpd, spawn-fcgi, systemd
    run(app, bind="unix:/run/app.sock")      # or behind nginx / Apache mod_proxy_fcgi

    from oxfcgi import WSGIServer             # flup's API: change only the import
    WSGIServer(app, bindAddress="/run/app.sock").run()

Every setting is declared once, in :mod:`oxfcgi.settings`. The native engine
(``oxfcgi._oxfcgi``) is imported when first needed, so ``oxfcgi.client``,
``oxfcgi.settings`` and ``oxfcgi.config`` work without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import _startup

_startup.prepare()

from . import _loader, settings  # noqa: E402
from ._loader import Loaded  # noqa: E402

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._listen import drop_privileges as drop_privileges
    from ._listen import listen as listen
    from ._listen import remove_pidfile as remove_pidfile
    from ._listen import write_pidfile as write_pidfile
    from ._options import RunOptions
    from ._oxfcgi import BindError as BindError
    from ._oxfcgi import ClientDisconnected as ClientDisconnected
    from ._oxfcgi import FileWrapper as FileWrapper
    from ._oxfcgi import InputStream as InputStream
    from ._oxfcgi import Listener as Listener
    from ._oxfcgi import RequestTerminated as RequestTerminated
    from ._oxfcgi import Scoreboard as Scoreboard
    from ._oxfcgi import Server as Server
    from ._oxfcgi import __version__ as __version__

__all__ = [
    "run",
    "serve",
    "listen",
    "make_server",
    "WSGIServer",
    "BindError",
    "ClientDisconnected",
    "FileWrapper",
    "InputStream",
    "Listener",
    "RequestTerminated",
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

_ENGINE_NAMES = frozenset(
    {
        "BindError",
        "ClientDisconnected",
        "FileWrapper",
        "InputStream",
        "Listener",
        "RequestTerminated",
        "Scoreboard",
        "Server",
        "__version__",
    }
)
_LISTEN_NAMES = frozenset({"listen", "drop_privileges", "write_pidfile", "remove_pidfile"})


def __getattr__(name: str) -> Any:
    """The engine's names, imported on first use (PEP 562)."""
    if name in _ENGINE_NAMES:
        from . import _oxfcgi

        return getattr(_oxfcgi, name)
    if name in _LISTEN_NAMES:
        from . import _listen

        return getattr(_listen, name)
    raise AttributeError(f"module 'oxfcgi' has no attribute {name!r}")


def _check_run_options(options: Mapping[str, Any], where: str) -> None:
    known = set(settings.names(surface="run")) | set(settings.ALIASES)
    unknown = set(options) - known
    if unknown:
        listed = ", ".join(settings.names(surface="run"))
        raise TypeError(f"{where} got unknown option(s) {', '.join(sorted(unknown))}; known: {listed}")


def make_server(app: Callable[..., Any], **options: Any) -> Server:
    """A :class:`Server` for ``app`` with these server settings (the ``server`` group of
    :mod:`oxfcgi.settings`; the rest at their defaults or ``OXFCGI_*`` values), checked now;
    nothing is bound. Serve it with ``server.serve(listen(bind))``.

    Raises ``TypeError`` for an unknown option or a non-callable app and ``ValueError``
    for a bad value.
    """
    from ._oxfcgi import Server

    if not callable(app):
        raise TypeError(f"the WSGI application must be callable, got {type(app).__name__}")
    unknown = set(options) - set(settings.names("server")) - set(settings.ALIASES)
    if unknown:
        raise TypeError(
            f"unknown server option(s) {', '.join(sorted(unknown))}; known: {', '.join(settings.names('server'))}"
        )
    return Server(app, settings.resolve(options).group("server"))


def _serve_app(app: Callable[..., Any], given: Mapping[str, Any], sources: Mapping[str, str]) -> bool:
    """``run()`` and ``WSGIServer.run()``: serve ``app`` with ``given`` settings (``bind``
    included), or hand them to ``oxfcgi serve`` when it is loading this script."""
    _loader.intercept(app, given, sources)
    if not callable(app):
        raise TypeError(f"the WSGI application must be callable, got {type(app).__name__}")
    from . import _reload, _serve

    base = settings.resolve(given, sources=sources)
    loaded = Loaded(app, "the application passed to run()")
    return _serve.serve(lambda: loaded, base, lambda _: base, script_file=_reload.main_script())


def serve(load_app: Callable[[], Callable[..., Any]], bind: Any = None, **options: Any) -> bool:
    """Like :func:`run`, but takes a function that returns the application.

    With ``workers`` > 1 it is called in each worker after the fork (so a SIGHUP reload
    imports the code anew); otherwise once, after binding and switching user.
    """
    _check_run_options(options, "serve()")
    from . import _serve

    given = {**options, **({"bind": bind} if bind is not None else {})}
    base = settings.resolve(given)
    return _serve.serve(lambda: Loaded(load_app(), "the application load_app() returned"), base, lambda _: base)


def run(app: Callable[..., Any], bind: Any = None, **options: Unpack[RunOptions]) -> bool:
    _check_run_options(options, "run()")
    return _serve_app(app, {**options, **({"bind": bind} if bind is not None else {})}, {})


run.__doc__ = f"""Serve ``app`` over FastCGI until stopped: a PEP 3333 WSGI callable, or an
ASGI 3 application (``async def app(scope, receive, send)``, or an object whose ``__call__``
is one: FastAPI, Starlette, Quart, Django's ``ASGIHandler``), detected by the ``interface``
setting (``auto``) and run on one asyncio event loop per process (``loop``, ``lifespan``).

``bind``: where to listen. ``None`` (default) means the process was started by a FastCGI
process manager: systemd socket activation (``LISTEN_FDS``), else fd 0 when it is a
listening socket (spec §2.2, ``FCGI_LISTENSOCK_FILENO``: Apache mod_fcgid, lighttpd
``bin-path``, spawn-fcgi); otherwise it prints how to start the application and exits
with status 2. Or a unix socket (``"unix:/run/app.sock"``, ``"/run/app.sock"``, a
``pathlib.Path``, ``"@abstract"``), TCP (``"127.0.0.1:9000"``, ``"[::1]:9000"``,
``("127.0.0.1", 9000)``), an fd (``3``, ``"fd:3"``) or a :class:`Listener` from
:func:`listen`. ``OXFCGI_BIND`` in the environment overrides it.

Options (from :mod:`oxfcgi.settings`; each can also come from its ``OXFCGI_*``
environment variable, which wins over the argument; defaults in brackets; seconds are
floats, 0 turns a timeout off):

{settings.docstring()}

Returns True when stopped by SIGHUP (so the caller can reload, flup's contract; with
workers, SIGHUP reloads them and run() goes on) and False for SIGTERM, SIGINT or SIGQUIT.
Signal handlers are installed for the duration of the call and restored after, so
``run()`` also works from a non-main thread. Logs go to the ``oxfcgi`` logger (stderr by
default). Raises ``BindError`` (an ``OSError``) when it cannot listen, ``TypeError`` for
an unknown option and ``ValueError`` (:class:`oxfcgi.settings.SettingError`) for a bad
value.
"""


class WSGIServer:
    """flup's ``flup.server.fcgi.WSGIServer`` (threaded), on the oxfcgi engine.

    ``WSGIServer(application, environ=None, multithreaded=True,
    multiprocess=False, bindAddress=None, umask=None, multiplexed=False,
    debug=False, roles=(FCGI_RESPONDER,), forceCGI=False, **kw)``

    Arguments mean what they mean in flup 1.0.3 and map onto the settings of the same
    meaning (the ``flup`` column of :mod:`oxfcgi.settings`). ``kw`` takes flup's thread
    pool arguments ``minSpare``, ``maxSpare`` (accepted, no effect: the pool starts one
    thread, grows when requests wait and ends threads idle for 10 s) and ``maxThreads`` (the
    most threads, capped at 64; flup's default is unlimited, ours 32), plus any :func:`run`
    option by its name (``threads``, ``graceful_timeout``, ``socket_mode``, …). ``jobClass``
    and ``jobArgs`` are dropped, as flup does. Anything else raises ``TypeError``, as flup
    does; a bad value raises ``ValueError`` now, as flup's constructor checks its
    arguments. ``multithreaded=False`` means one thread.
    """

    _flavour_kw: frozenset[str] = frozenset({"minSpare", "maxSpare", "maxThreads"})
    _dropped_kw: frozenset[str] = frozenset({"jobClass", "jobArgs"})
    #: The flup class this one stands for, in sources (``--print-config``).
    _flup_name = "flup.server.fcgi.WSGIServer"

    def __init__(
        self,
        application: Callable[..., Any],
        environ: Mapping[str, Any] | None = None,
        multithreaded: bool = True,
        multiprocess: bool = False,
        bindAddress: Any = None,
        umask: int | None = None,
        multiplexed: bool = False,
        debug: bool = False,
        roles: Iterable[int] = (FCGI_RESPONDER,),
        forceCGI: bool = False,
        **kw: Any,
    ) -> None:
        self.application = application
        self.environ = dict(environ or {})
        self.bindAddress = bindAddress
        self.forceCGI = forceCGI
        #: Where each option came from, for ``oxfcgi serve --print-config``.
        self.sources: dict[str, str] = {}
        options = self._options(kw)
        flup_args: dict[str, tuple[str, Any]] = {
            "multithread": ("multithreaded", bool(multithreaded)),
            "multiprocess": ("multiprocess", bool(multiprocess)),
            "umask": ("umask", umask),
            "multiplexed": ("multiplexed", multiplexed),
            "debug": ("debug", debug),
            "roles": ("roles", tuple(roles)),
            "force_cgi": ("forceCGI", forceCGI),
        }
        if self.environ:
            flup_args["environ"] = ("environ", self.environ)
        if bindAddress is not None:
            flup_args["bind"] = ("bindAddress", bindAddress)
        if not multithreaded:
            flup_args["threads"] = ("multithreaded", 1)
        for name, (flup_name, value) in flup_args.items():
            if name not in options:
                self._set(options, name, value, flup_name)
        self.options = options
        # Check every value now, like flup's constructor does.
        settings.resolve(options, sources=self.sources)

    def _set(self, options: dict[str, Any], name: str, value: Any, flup_name: str) -> None:
        options[name] = value
        self.sources[name] = f"{self._flup_name}({flup_name}=)"

    def _options(self, kw: dict[str, Any]) -> dict[str, Any]:
        known = set(settings.names(surface="run")) | set(settings.ALIASES)
        unknown = set(kw) - self._flavour_kw - self._dropped_kw - known
        if unknown:
            raise TypeError(
                f"{type(self).__module__}.WSGIServer() got unexpected keyword argument(s): {', '.join(sorted(unknown))}"
            )
        options = {k: v for k, v in kw.items() if k in known}
        max_threads = kw.get("maxThreads")
        if max_threads is not None and "threads" not in options:
            self._set(options, "threads", max(1, min(int(max_threads), 64)), "maxThreads")
        return options

    def run(self) -> bool:
        """Serve until a signal; True on SIGHUP, False on SIGINT/SIGTERM (flup's contract)."""
        return _serve_app(self.application, self.options, self.sources)
