"""CGI mode: serve one request from ``os.environ``, stdin and stdout.

Used when asked (flup's ``forceCGI=True`` or ``FCGI_FORCE_CGI=Y``). Built on
the standard library's :class:`wsgiref.handlers.CGIHandler`, which gives the
application a bytes ``wsgi.input`` (flup gave it text ``sys.stdin``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any


def force_cgi_requested(force_cgi: bool) -> bool:
    """flup's rule: ``forceCGI`` or an ``FCGI_FORCE_CGI`` starting with Y/y."""
    return bool(force_cgi) or os.environ.get("FCGI_FORCE_CGI", "").upper().startswith("Y")


def serve_cgi(app: Callable[..., Any], environ: Mapping[str, Any] | None = None) -> None:
    """Serve exactly one CGI request with ``app``."""
    from wsgiref.handlers import CGIHandler

    handler = CGIHandler()
    if environ:
        handler.base_env = {**handler.base_env, **environ}
    handler.run(app)
