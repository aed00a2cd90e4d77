"""``flup.server.fcgi_fork`` on the oxfcgi engine: prefork workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import FCGI_AUTHORIZER, FCGI_FILTER, FCGI_RESPONDER
from .. import WSGIServer as _Threaded

__all__ = ["WSGIServer", "FCGI_RESPONDER", "FCGI_AUTHORIZER", "FCGI_FILTER"]

_PREFORK_KW = {"minSpare": 1, "maxSpare": 5, "maxChildren": 50, "maxRequests": 0, "sockTimeout": 0}


class WSGIServer(_Threaded):
    """flup's prefork ``WSGIServer(application, environ=None, bindAddress=None,
    umask=None, multiplexed=False, debug=False, roles=(FCGI_RESPONDER,),
    forceCGI=False, timeout=None, **kw)``, as oxfcgi prefork workers.

    ``kw``: ``minSpare`` (>= 1), ``maxSpare`` (>= minSpare), ``maxChildren``,
    ``maxRequests``, ``sockTimeout`` (a number >= 0): ``ValueError``
    otherwise, as in flup; ``multithreaded``, ``multiprocess``, ``jobClass``
    and ``jobArgs`` are dropped; other names raise ``TypeError``.

    Mapping: ``maxSpare`` single-threaded workers (flup 1.0.3 on Python 3
    never grows past ``maxSpare``; ``maxChildren`` caps it), each replaced
    after ``maxRequests`` requests (0: never), and ``timeout`` seconds as
    ``request_terminate_timeout`` (flup raised ``TimeoutException`` in the
    app; oxfcgi answers 504, raises ``RequestTerminated`` in the request's
    thread and replaces the worker). ``wsgi.multiprocess`` is True, as in flup.
    """

    _flavour_kw = frozenset(_PREFORK_KW)
    _dropped_kw = frozenset({"multithreaded", "multiprocess", "jobClass", "jobArgs"})

    _flup_name = "flup.server.fcgi_fork.WSGIServer"

    def __init__(
        self,
        application: Callable[..., Any],
        environ: Mapping[str, Any] | None = None,
        bindAddress: Any = None,
        umask: int | None = None,
        multiplexed: bool = False,
        debug: bool = False,
        roles: Iterable[int] = (FCGI_RESPONDER,),
        forceCGI: bool = False,
        timeout: float | None = None,
        **kw: Any,
    ):
        prefork = {k: kw.get(k, v) for k, v in _PREFORK_KW.items()}
        if prefork["minSpare"] < 1:
            raise ValueError("minSpare must be at least 1")
        if prefork["maxSpare"] < prefork["minSpare"]:
            raise ValueError("maxSpare must be greater than, or equal to, minSpare")
        sock_timeout = prefork["sockTimeout"]
        if isinstance(sock_timeout, bool) or not isinstance(sock_timeout, (int, float)) or sock_timeout < 0:
            raise ValueError("sockTimeout must be a number >= 0")
        self.prefork = prefork
        self.timeout = timeout
        passed = {k: v for k, v in kw.items() if k not in ("multithreaded", "multiprocess")}
        mapped = {"workers": (max(1, min(prefork["maxSpare"], max(prefork["maxChildren"], 1))), "maxSpare")}
        if prefork["maxRequests"]:
            mapped["max_requests"] = (int(prefork["maxRequests"]), "maxRequests")
        if timeout:
            mapped["request_terminate_timeout"] = (float(timeout), "timeout")
        for name, (value, _) in mapped.items():
            passed.setdefault(name, value)
        super().__init__(
            application,
            environ=environ,
            multithreaded=False,
            multiprocess=True,
            bindAddress=bindAddress,
            umask=umask,
            multiplexed=multiplexed,
            debug=debug,
            roles=roles,
            forceCGI=forceCGI,
            **passed,
        )
        for name, (value, flup_name) in mapped.items():
            if name not in kw:
                self._set(self.options, name, value, flup_name)
