"""The WSGI app of the Apache tests (tests/test_apache.py).

It is tests/apps/flask_app.py (routes ``/``, ``/items/<n>``, ``/query``,
``/form``, ``/cookies``, ``/boom``, ``/pid`` ...) plus one raw WSGI route:

``/_environ``
    JSON of every ``str`` value of the WSGI environ (so HTTP_AUTHORIZATION,
    SCRIPT_FILENAME, GATEWAY_INTERFACE ... are visible), plus ``_pid``,
    ``_uid``, ``_executable`` and ``_fd0`` (what fd 0 is now).

Under Apache it runs as www-data from a copy next to flask_app.py (see
tests/support/apache.py), so it imports ``flask_app`` directly there; from the
repository it imports ``tests.apps.flask_app``.
"""

from __future__ import annotations

import json
import os
import stat
import sys

try:
    from tests.apps.flask_app import app as flask_app
except ImportError:  # the www-data copy: flask_app.py sits next to this file
    from flask_app import app as flask_app


def _describe_fd(fd: int) -> str:
    try:
        st = os.fstat(fd)
    except OSError:
        return "closed"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    if stat.S_ISCHR(st.st_mode):
        return "char:" + os.path.realpath(f"/proc/self/fd/{fd}")
    if stat.S_ISFIFO(st.st_mode):
        return "pipe"
    return "file:" + os.path.realpath(f"/proc/self/fd/{fd}")


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/_environ":
        data = {k: v for k, v in environ.items() if isinstance(v, str)}
        data.update(_pid=os.getpid(), _uid=os.getuid(), _executable=sys.executable, _fd0=_describe_fd(0))
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return flask_app(environ, start_response)


app = application
