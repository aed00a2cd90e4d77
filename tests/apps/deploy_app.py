"""An app that reports its process's view of fds, ids and environment (deployment tests)."""

import json
import os
import sys

IMPORTED_AS_UID = os.getuid()


def _target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        return f"error: {e.strerror}"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/print":
        print("printed-by-the-app", flush=True)
    body = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "imported_as_uid": IMPORTED_AS_UID,
        "fd0": _target(0),
        "fd1": _target(1),
        "fd2": _target(2),
        "stdin_read": sys.stdin.read() if sys.stdin else None,
        "listen_env": {k: os.environ[k] for k in ("LISTEN_PID", "LISTEN_FDS") if k in os.environ},
        "script_name": environ.get("SCRIPT_NAME"),
        "path_info": path,
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


_ballast = []


def pool_app(environ, start_response):
    """For prefork tests: /sleep?t=S, /spin?t=S (sleeps in 20 ms steps, so an exception raised
    in its thread lands within 20 ms), /bloat (grow RSS by 80 MiB), else the pid."""
    import time

    path = environ.get("PATH_INFO", "")
    query = dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)
    if path == "/sleep":
        time.sleep(float(query.get("t", "1")))
    if path == "/spin":
        deadline = time.monotonic() + float(query.get("t", "1"))
        try:
            while time.monotonic() < deadline:
                time.sleep(0.02)
        except BaseException as e:
            print(f"spin stopped by {type(e).__name__}", file=sys.stderr, flush=True)
            raise
    if path == "/bloat":
        _ballast.append(bytearray(80 << 20))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
