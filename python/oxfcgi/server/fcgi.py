"""``flup.server.fcgi`` on the oxfcgi engine: the threaded ``WSGIServer``."""

from .. import FCGI_AUTHORIZER, FCGI_FILTER, FCGI_RESPONDER, WSGIServer

__all__ = ["WSGIServer", "FCGI_RESPONDER", "FCGI_AUTHORIZER", "FCGI_FILTER"]
