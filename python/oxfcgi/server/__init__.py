"""flup-compatible server modules: replace ``flup.server`` with ``oxfcgi.server``.

``oxfcgi.server.fcgi``, ``oxfcgi.server.fcgi_fork`` and ``oxfcgi.server.fcgi_single``
each export ``WSGIServer`` with that flup module's signature.
"""
