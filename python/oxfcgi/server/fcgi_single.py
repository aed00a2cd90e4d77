"""``flup.server.fcgi_single`` on the oxfcgi engine: one request at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import FCGI_AUTHORIZER, FCGI_FILTER, FCGI_RESPONDER
from .. import WSGIServer as _Threaded

__all__ = ["WSGIServer", "FCGI_RESPONDER", "FCGI_AUTHORIZER", "FCGI_FILTER"]


class WSGIServer(_Threaded):
    """flup's single-threaded ``WSGIServer``: one Python thread,
    ``wsgi.multithread`` and ``wsgi.multiprocess`` False. Like flup, it
    accepts and ignores any extra keyword argument.
    """

    _flup_name = "flup.server.fcgi_single.WSGIServer"

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
        **kw: Any,
    ):
        super().__init__(
            application,
            environ=environ,
            multithreaded=False,
            multiprocess=False,
            bindAddress=bindAddress,
            umask=umask,
            multiplexed=multiplexed,
            debug=debug,
            roles=roles,
            forceCGI=forceCGI,
        )
