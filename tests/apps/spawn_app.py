"""A plain WSGI probe for the spawner tests (tests/test_spawners.py, tests/test_lighttpd.py).

Every answer is JSON describing the process that served it, so a test can see which
process a spawner started and what it inherited:

``/`` (any path)
    ``pid``, ``ppid``, ``cwd``, the request's ``SCRIPT_NAME``/``PATH_INFO``/``QUERY_STRING``/
    ``REQUEST_METHOD``/``HTTP_AUTHORIZATION``, the process environment variables a spawner
    sets (``LISTEN_*``, ``NOTIFY_SOCKET``, ``PHP_FCGI_CHILDREN``) and what fds 0-2 are.
``/stderr?token=T``
    also writes ``probe-stderr T`` to ``wsgi.errors`` and ``probe-print T`` to ``sys.stderr``.
``/boom?token=T``
    raises ``RuntimeError("probe failure T")``.
``/body``
    echoes the request body's length and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from urllib.parse import parse_qs

PROCESS_ENV = (
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "PHP_FCGI_CHILDREN",
    "PYTHONPATH",
    "OXFCGI_PROBE_TAG",
)


def _fd_kind(fd: int) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"
    return target


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    token = query.get("token", ["no-token"])[0]
    path = environ.get("PATH_INFO", "")
    if path == "/boom":
        raise RuntimeError(f"probe failure {token}")
    info = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "environ": {
            k: environ.get(k)
            for k in (
                "SCRIPT_NAME",
                "PATH_INFO",
                "QUERY_STRING",
                "REQUEST_METHOD",
                "HTTP_AUTHORIZATION",
                "REQUEST_URI",
                "CONTENT_LENGTH",
            )
        },
        "process_env": {k: os.environ.get(k) for k in PROCESS_ENV},
        "fds": {str(fd): _fd_kind(fd) for fd in (0, 1, 2)},
    }
    if path == "/stderr":
        environ["wsgi.errors"].write(f"probe-stderr {token}\n")
        environ["wsgi.errors"].flush()
        print(f"probe-print {token}", file=sys.stderr, flush=True)
    if path == "/body":
        body = environ["wsgi.input"].read()
        info["body_length"] = len(body)
        info["body_sha256"] = hashlib.sha256(body).hexdigest()
    data = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


app = application
