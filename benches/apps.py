"""WSGI apps for the benchmarks, each a module-level callable selectable by name.

    oxfcgi serve benches.apps:hello ...          (from the repository root)
    oxfcgi serve apps:hello ...                  (with benches/ on sys.path)

Names (APPS maps each to a one-line description):
    hello        13-byte body "Hello, World!"
    body10k      10 KB body
    body1m       1 MB body (one bytes object)
    echo         POST echo: reads wsgi.input fully and returns it (the benchmark sends 10 KB)
    sleep10      sleeps 10 ms, then answers "Hello, World!"
    upload_sink  reads wsgi.input in 64 KB chunks and throws them away; answers the byte count
    app          a dispatcher by PATH_INFO (/hello, /10k, /1m, /echo, /sleep, /upload) for servers
                 that take a single app
"""

import time

HELLO = b"Hello, World!"
BODY_10K = b"x" * 10 * 1024
BODY_1M = b"y" * 1024 * 1024
CHUNK = 64 * 1024

_TEXT = [("Content-Type", "text/plain")]


def _headers(n):
    return [("Content-Type", "text/plain"), ("Content-Length", str(n))]


def hello(environ, start_response):
    start_response("200 OK", _headers(len(HELLO)))
    return [HELLO]


def body10k(environ, start_response):
    start_response("200 OK", _headers(len(BODY_10K)))
    return [BODY_10K]


def body1m(environ, start_response):
    start_response("200 OK", _headers(len(BODY_1M)))
    return [BODY_1M]


def _content_length(environ):
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def echo(environ, start_response):
    length = _content_length(environ)
    stream = environ["wsgi.input"]
    parts = []
    left = length
    while left > 0:
        chunk = stream.read(min(left, CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    data = b"".join(parts)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
    return [data]


def sleep10(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", _headers(len(HELLO)))
    return [HELLO]


def upload_sink(environ, start_response):
    length = _content_length(environ)
    stream = environ["wsgi.input"]
    total = 0
    while total < length:
        chunk = stream.read(min(CHUNK, length - total))
        if not chunk:
            break
        total += len(chunk)
    body = str(total).encode()
    start_response("200 OK", _headers(len(body)))
    return [body]


APPS = {
    "hello": "13-byte body 'Hello, World!'",
    "body10k": "10 KB body",
    "body1m": "1 MB body",
    "echo": "POST echo of the request body (10 KB in the benchmark)",
    "sleep10": "sleep 10 ms, then 'Hello, World!'",
    "upload_sink": "read wsgi.input in 64 KB chunks, answer the byte count",
}

_ROUTES = {
    "/hello": hello,
    "/10k": body10k,
    "/1m": body1m,
    "/echo": echo,
    "/sleep": sleep10,
    "/upload": upload_sink,
}


def app(environ, start_response):
    """Dispatch by PATH_INFO; anything else is hello."""
    return _ROUTES.get(environ.get("PATH_INFO") or "/", hello)(environ, start_response)


# Aliases some servers look for by default.
application = app
