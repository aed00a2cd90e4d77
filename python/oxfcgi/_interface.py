"""Which interface an application speaks (WSGI or ASGI), and the settings that follow from it.

Kept apart from :mod:`oxfcgi._asgi` so that serving a WSGI app never imports asyncio (about
8 MB of resident memory per process, with the ``ssl`` module it pulls in): ``_asgi`` is
imported only when the app is an ASGI one.
"""

from __future__ import annotations

import types
from typing import Any

#: ``CO_COROUTINE``, the code flag of an ``async def`` function (CPython's ``Include/cpython/code.h``,
#: ``inspect.CO_COROUTINE``).
CO_COROUTINE = 0x80


class LifespanFailed(RuntimeError):
    """The application's lifespan startup failed (``lifespan.startup.failed``, or it raised
    with ``lifespan=on``); the process does not serve."""


def is_asgi(app: Any) -> bool:
    """Whether ``app`` is an ASGI 3 application: an ``async def`` function, or an object
    (FastAPI, Starlette, Quart, Django's ``ASGIHandler``) whose ``__call__`` is one.

    A plain function is answered from its code's flags, as ``inspect.iscoroutinefunction``
    does, without importing :mod:`inspect` (with ``ast`` and ``dis``, about 0.8 MB resident in
    every process; issue 11); a function marked with ``inspect.markcoroutinefunction``
    (Python 3.12) and any other object go to :mod:`inspect`."""
    if type(app) is types.FunctionType and not hasattr(app, "_is_coroutine_marker"):
        return bool(app.__code__.co_flags & CO_COROUTINE)
    import inspect

    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    return call is not None and not inspect.isfunction(app) and inspect.iscoroutinefunction(call)


def interface_of(app: Any, setting: str) -> str:
    """``"wsgi"`` or ``"asgi"`` for ``app`` under the ``interface`` setting. ``TypeError``
    when the setting names one interface and the app is visibly the other."""
    if setting == "auto":
        return "asgi" if is_asgi(app) else "wsgi"
    if setting == "wsgi" and is_asgi(app):
        raise TypeError(
            f"interface=wsgi, but {app!r} is an ASGI application (async def app(scope, receive, send)); "
            "remove the setting or set interface=asgi"
        )
    return setting


def settle(resolved: Any, app: Any) -> Any:
    """The settings for serving ``app``: ``resolved`` (a :class:`oxfcgi.settings.Resolved`)
    with the rules that depend on its interface applied. ``TypeError`` as :func:`interface_of`."""
    from oxfcgi import settings

    return settings.for_interface(resolved, interface_of(app, resolved.values["interface"]))


def serve(server: Any, listener: Any, app: Any, values: dict[str, Any]) -> bool:
    """Serve ``app`` on ``listener`` with the engine ``server``: as WSGI, or, per the
    ``interface`` setting, as ASGI on this process's event loop (:func:`oxfcgi._asgi.run`).
    Returns ``server.serve()``'s result. Raises ``LifespanFailed`` when the ASGI startup
    fails (before any connection is accepted)."""
    if interface_of(app, values["interface"]) == "wsgi":
        return bool(server.serve(listener))
    from . import _asgi

    return _asgi.run(server, listener, app, values)
