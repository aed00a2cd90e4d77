"""A real Flask application served by oxfcgi behind a real nginx (tests/test_nginx.py).

Every view answers with JSON (or a plain streamed body) that the tests check,
so a wrong SCRIPT_NAME/PATH_INFO split, a lost cookie or a truncated body is
visible in the response.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time

from flask import Flask, Response, jsonify, request, url_for
from flask.logging import default_handler

app = Flask(__name__)
# Flask only installs its default handler (which writes to the request's
# wsgi.errors) when no handler is configured further up; pin it, so the test of
# wsgi.errors does not depend on how the server set up the root logger.
if default_handler not in app.logger.handlers:
    app.logger.addHandler(default_handler)

UPLOAD_CHUNK = 64 * 1024


def _proc_status() -> dict[str, int]:
    """VmRSS/VmHWM (in kB) of this process, from /proc/self/status."""
    values: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


@app.route("/")
def index():
    return jsonify(
        page="index",
        item_url=url_for("item", item_id=3),
        item_external=url_for("item", item_id=3, _external=True),
        script_name=request.environ.get("SCRIPT_NAME"),
        path_info=request.environ.get("PATH_INFO"),
    )


@app.route("/items/<int:item_id>")
def item(item_id: int):
    return jsonify(
        page="item",
        item_id=item_id,
        self_url=url_for("item", item_id=item_id),
        index_url=url_for("index"),
        script_name=request.environ.get("SCRIPT_NAME"),
        path_info=request.environ.get("PATH_INFO"),
    )


@app.route("/env")
def env():
    keys = (
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "HTTP_HOST",
        "HTTP_COOKIE",
        "HTTP_AUTHORIZATION",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "wsgi.url_scheme",
    )
    return jsonify({k: request.environ.get(k) for k in keys})


@app.route("/query")
def query():
    return jsonify(
        args=request.args.to_dict(flat=False),
        query_string=request.query_string.decode("latin-1"),
    )


@app.route("/form", methods=["POST"])
def form():
    return jsonify(
        form=request.form.to_dict(flat=False),
        content_type=request.content_type,
        content_length=request.content_length,
    )


@app.route("/cookies/set")
def set_cookies():
    resp = jsonify(ok=True)
    resp.set_cookie("flavour", "oatmeal raisin", path="/")
    resp.set_cookie("session_id", "abc123", path="/", httponly=True)
    return resp


@app.route("/cookies")
def cookies():
    return jsonify(
        cookies=request.cookies.to_dict(flat=True),
        http_cookie=request.environ.get("HTTP_COOKIE"),
    )


@app.route("/upload", methods=["POST"])
def upload():
    """Stream the body to a temp file in 64 KB reads; never hold it in memory."""
    throttle = request.args.get("throttle", 0.0, type=float)  # seconds per read: a slow app
    digest = hashlib.sha256()
    size = 0
    reads = 0
    largest_read = 0
    stream = request.stream
    with tempfile.TemporaryFile() as spool:
        while True:
            chunk = stream.read(UPLOAD_CHUNK)
            if not chunk:
                break
            reads += 1
            largest_read = max(largest_read, len(chunk))
            size += len(chunk)
            digest.update(chunk)
            spool.write(chunk)
            if throttle:
                time.sleep(throttle)
        spool.flush()
        on_disk = os.fstat(spool.fileno()).st_size
    return jsonify(
        size=size,
        on_disk=on_disk,
        sha256=digest.hexdigest(),
        reads=reads,
        largest_read=largest_read,
        content_length=request.environ.get("CONTENT_LENGTH"),
        input_terminated=request.environ.get("wsgi.input_terminated"),
        pid=os.getpid(),
    )


def stream_chunk(i: int, size: int) -> bytes:
    """Chunk number ``i`` of /stream: deterministic, distinct per index."""
    head = f"chunk {i:05d}:".encode()
    return (head + hashlib.sha256(head).hexdigest().encode() * (size // 64 + 1))[:size]


@app.route("/stream")
def stream():
    count = request.args.get("n", 50, type=int)
    size = request.args.get("size", 8192, type=int)
    delay = request.args.get("delay", 0.0, type=float)

    def generate():
        for i in range(count):
            if delay:
                time.sleep(delay)
            yield stream_chunk(i, size)

    resp = Response(generate(), mimetype="application/octet-stream")
    if not request.args.get("nginx_buffering", 0, type=int):
        # Ask nginx not to buffer this response, so the test sees the server's own pacing.
        resp.headers["X-Accel-Buffering"] = "no"
    return resp


class AppBoom(RuntimeError):
    pass


@app.route("/boom")
def boom():
    token = request.args.get("token", "no-token")
    raise AppBoom(f"deliberate failure {token}")


def _recurse(depth: int, token: str):
    if depth <= 0:
        raise AppBoom(f"deep failure {token}")
    return _recurse(depth - 1, token) + 1


@app.route("/boom-deep")
def boom_deep():
    """An exception under a deep stack: a traceback of several KB, as in real apps."""
    token = request.args.get("token", "no-token")
    depth = request.args.get("depth", 20, type=int)
    return str(_recurse(depth, token))


@app.route("/logged-error")
def logged_error():
    """Log a traceback through Flask's default handler (it writes to wsgi.errors)."""
    token = request.args.get("token", "no-token")
    try:
        raise AppBoom(f"handled failure {token}")
    except AppBoom:
        app.logger.exception("logged via wsgi.errors %s", token)
    return jsonify(logged=token), 500


@app.route("/log")
def log_line():
    """Write one ``size``-byte line (``token``, then ``x``s, then a newline) to wsgi.errors,
    flush it, and answer after ``ms`` milliseconds (50), so the line travels on its own."""
    token = request.args.get("token", "no-token")
    size = request.args.get("size", 64, type=int)
    stream = request.environ["wsgi.errors"]
    stream.write(token.ljust(size - 1, "x")[: size - 1] + "\n")
    stream.flush()
    time.sleep(request.args.get("ms", 50, type=int) / 1000.0)
    return jsonify(logged=token, size=size)


@app.route("/pid")
def pid():
    return jsonify(pid=os.getpid(), **_proc_status())


@app.route("/rss")
def rss():
    return jsonify(pid=os.getpid(), **_proc_status())


@app.route("/sleep")
def sleep():
    ms = request.args.get("ms", 10, type=int)
    time.sleep(ms / 1000.0)
    return jsonify(slept_ms=ms, thread=threading.current_thread().name, pid=os.getpid())


# Flask re-raises in debug/testing mode only; make sure an exception reaches the
# server (which must turn it into a 500 and log the traceback).
app.config["PROPAGATE_EXCEPTIONS"] = True
