"""Plain WSGI applications used by the WSGI conformance tests (tests/test_wsgi*.py).

Every callable here is an ordinary PEP 3333 application: none of them knows it runs
under oxfcgi, so they can also be exercised with ``wsgiref.simple_server`` or flup.

Tests steer the apps through request headers (``X-...`` → ``HTTP_X_...``) and the
query string, and most apps answer with a JSON document so the test can look at
exactly what the app saw.  Files the apps write (close() markers) live at paths the
test passes in, inside the test's tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

# ---------------------------------------------------------------------------
# helpers


def _json(start_response, obj, status="200 OK", extra_headers=()):
    body = json.dumps(obj, sort_keys=True).encode("ascii")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + list(extra_headers),
    )
    return [body]


def _query(environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def _mark(path: str | None, text: str) -> None:
    """Append ``text`` + newline to the marker file at ``path`` (if a path was given)."""
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")


def _b2s(data):
    """Represent a read result in JSON: bytes as latin-1 text, anything else by type."""
    if isinstance(data, bytes):
        return data.decode("latin-1")
    return {"type": type(data).__name__, "repr": repr(data)[:200]}


# ---------------------------------------------------------------------------
# environ


def environ_app(environ, start_response):
    """Report the environ: every str value, every value's type, and the wsgi.* keys."""
    inp = environ.get("wsgi.input")
    err = environ.get("wsgi.errors")
    fw = environ.get("wsgi.file_wrapper")
    report = {
        "environ": {k: v for k, v in environ.items() if isinstance(v, str)},
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "dict_type": type(environ).__name__,
        "wsgi": {
            "version": list(environ["wsgi.version"]) if "wsgi.version" in environ else None,
            "version_type": type(environ.get("wsgi.version")).__name__,
            "url_scheme": environ.get("wsgi.url_scheme"),
            "multithread": environ.get("wsgi.multithread"),
            "multiprocess": environ.get("wsgi.multiprocess"),
            "run_once": environ.get("wsgi.run_once"),
            "input_terminated": environ.get("wsgi.input_terminated"),
            "has_input": inp is not None,
            "has_errors": err is not None,
            "has_file_wrapper": "wsgi.file_wrapper" in environ,
            "file_wrapper_callable": callable(fw),
        },
        "input_methods": sorted(m for m in ("read", "readline", "readlines", "__iter__") if hasattr(inp, m)),
        "errors_methods": sorted(m for m in ("write", "writelines", "flush") if hasattr(err, m)),
    }
    return _json(start_response, report)


# ---------------------------------------------------------------------------
# wsgi.input


def input_ops_app(environ, start_response):
    """Apply a list of operations (JSON in the X-Ops header) to wsgi.input.

    Operations: ``["readinto", n]`` (into a bytearray(n)), ``["read"]`` (no argument), ``["read", n]``,
    ``["readline"]``,
    ``["readline", n]``, ``["readlines"]``, ``["readlines", hint]``, ``["next"]``
    (one ``next(iter(wsgi.input))``), ``["iter"]`` (``list(wsgi.input)``).
    Answers ``{"results": [...]}`` where bytes are latin-1 text and lists are lists;
    ``{"stop": true}`` marks StopIteration.  The test applies the same operations to
    ``io.BytesIO(body)`` and compares.
    """
    ops = json.loads(environ.get("HTTP_X_OPS", "[]"))
    inp = environ["wsgi.input"]
    results = []
    for op in ops:
        name, args = op[0], op[1:]
        try:
            if name == "next":
                try:
                    results.append(_b2s(next(iter(inp))))
                except StopIteration:
                    results.append({"stop": True})
            elif name == "iter":
                results.append([_b2s(x) for x in inp])
            elif name == "readlines":
                value = inp.readlines(*args)
                results.append([_b2s(x) for x in value] if isinstance(value, list) else _b2s(value))
            elif name == "readinto":
                buf = bytearray(args[0])
                n = inp.readinto(buf)
                results.append(_b2s(bytes(buf[:n])) if isinstance(n, int) else _b2s(n))
            elif name in ("read", "readline"):
                results.append(_b2s(getattr(inp, name)(*args)))
            else:
                raise ValueError(f"unknown op {name!r}")
        except Exception as e:
            results.append({"error": f"{type(e).__name__}: {e}"})
    return _json(start_response, {"results": results})


def input_digest_app(environ, start_response):
    """Read wsgi.input in X-Chunk-sized read(n) calls (default 65536) until b''.

    Reports the total length, sha256, and the sizes of reads that returned fewer
    bytes than asked before the end (read(n) must return n bytes unless at EOF).
    """
    size = int(environ.get("HTTP_X_CHUNK", "65536"))
    inp = environ["wsgi.input"]
    h = hashlib.sha256()
    total = 0
    reads = 0
    sizes = []
    while True:
        data = inp.read(size)
        if not isinstance(data, bytes):
            return _json(start_response, {"error": f"read returned {type(data).__name__}"})
        reads += 1
        sizes.append(len(data))
        if not data:
            break
        h.update(data)
        total += len(data)
    # every read but the last two (the partial tail and the final b'') must be full
    short = [n for n in sizes[:-2] if n != size]
    if len(sizes) >= 2 and sizes[-2] not in range(1, size + 1):
        short.append(sizes[-2])
    extra = inp.read(size)  # still EOF
    return _json(
        start_response,
        {
            "length": total,
            "sha256": h.hexdigest(),
            "reads": reads,
            "short_reads": short,
            "after_eof": _b2s(extra),
            "content_length": environ.get("CONTENT_LENGTH"),
        },
    )


# ---------------------------------------------------------------------------
# wsgi.errors


def errors_app(environ, start_response):
    """Write the X-Marker text to wsgi.errors through write(), writelines() and flush()."""
    marker = environ.get("HTTP_X_MARKER", "marker")
    err = environ["wsgi.errors"]
    err.write(f"write:{marker}\n")
    err.writelines([f"lines1:{marker}\n", f"lines2:{marker}\n"])
    err.flush()
    err.write(f"nonascii:{marker}:caf\u00e9\n")
    err.flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


# ---------------------------------------------------------------------------
# response framing


def write_and_iter_app(environ, start_response):
    """write() output followed by iterable chunks: the body must be their concatenation in order."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"w1,")
    write(b"")  # empty writes are no-ops
    write(b"w2,")

    def gen():
        yield b"i1,"
        write(b"w3,")  # write() from inside the iteration (allowed, discouraged)
        yield b""
        yield b"i2"

    return gen()


def late_start_app(environ, start_response):
    """start_response called inside the generator, after the app returned.

    The status comes from ?status=..., default '201 Created'.
    """
    status = _query(environ).get("status", "201 Created")

    def gen():
        yield b""  # an empty chunk before start_response: must not send headers
        start_response(status, [("Content-Type", "text/plain"), ("X-Late", "yes")])
        yield b"late body"

    return gen()


def body_shape_app(environ, start_response):
    """Return the body in the shape named by ?shape=...; for Content-Length tests."""
    shape = _query(environ).get("shape", "one")
    headers = [("Content-Type", "text/plain")]
    if shape == "own_length":
        headers.append(("Content-Length", "5"))
        start_response("200 OK", headers)
        return [b"ab", b"cde"]
    start_response("200 OK", headers)
    if shape == "one":
        return [b"hello"]
    if shape == "empty_chunk":
        return [b""]
    if shape == "empty_list":
        return []
    if shape == "two":
        return [b"hel", b"lo"]
    if shape == "generator":
        return (c for c in [b"hel", b"lo"])
    if shape == "one_str":
        return ["caf\u00e9"]
    if shape == "tuple_one":
        return (b"hello",)
    raise ValueError(f"unknown shape {shape!r}")


def headers_app(environ, start_response):
    """Exact header block: custom reason phrase, several headers in a fixed order."""
    status = _query(environ).get("status", "299 Custom Reason Phrase")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Zeta", "last-alphabetically-first-in-order"),
            ("Set-Cookie", "a=1; Path=/"),
            ("X-Alpha", "v"),
            ("Set-Cookie", "b=2; Path=/"),
            ("X-Latin1", "caf\u00e9"),
        ],
    )
    return [b"body-", b"two"]  # two chunks: no Content-Length is added


def status_app(environ, start_response):
    """Respond with the status in ?status=... (e.g. 204 No Content with no body)."""
    status = _query(environ).get("status", "200 OK")
    start_response(status, [("X-Status-App", "1")])
    return []


BAD_HEADER_CASES = {
    "crlf_value": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
    "lf_value": ("200 OK", [("X-Bad", "a\nInjected: yes")]),
    "cr_value": ("200 OK", [("X-Bad", "a\rInjected: yes")]),
    "crlf_name": ("200 OK", [("X-Bad\r\nInjected", "yes")]),
    "nonlatin1_value": ("200 OK", [("X-Bad", "snow \u2603")]),
    "nonlatin1_name": ("200 OK", [("X-B\u2603d", "v")]),
    "status_words": ("OK", []),
    "status_two_digits": ("20 OK", []),
    "status_no_space": ("200OK", []),
    "status_only_code": ("200", []),
    "status_letters": ("abc OK", []),
    "status_four_digits": ("2000 OK", []),
    "status_crlf": ("200 OK\r\nInjected: yes", []),
    "status_header": ("200 OK", [("Status", "404 Not Found")]),
}


def bad_header_app(environ, start_response):
    """Call start_response with the invalid status/headers named by ?case=...

    If start_response accepts them, return a normal body: the test then sees a 200
    with 'accepted' and fails.
    """
    case = _query(environ)["case"]
    status, headers = BAD_HEADER_CASES[case]
    start_response(status, [("Content-Type", "text/plain")] + headers)
    return [b"accepted"]


def bytes_status_app(environ, start_response):
    """flup accepted a bytes status; so do we (PEP 3333 asks for str)."""
    start_response(b"203 From Bytes", [("Content-Type", "text/plain")])
    return [b"ok"]


def double_start_app(environ, start_response):
    """start_response twice without exc_info: the second call must raise."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [b"second start_response was accepted"]


def exc_info_before_app(environ, start_response):
    """exc_info before anything was sent: the new status replaces the old one."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise RuntimeError("backend down")
    except RuntimeError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Second", "1")], sys.exc_info())
    return [b"sorry"]


def exc_info_after_app(environ, start_response):
    """exc_info after the headers went out: start_response re-raises the exception.

    Writes 'reraised' (or 'not-reraised') and 'closed' to the X-Marker file.
    """
    marker = environ.get("HTTP_X_MARKER")

    class Body:
        def __init__(self):
            self.step = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.step += 1
            if self.step == 1:
                return b"first-part|"
            if self.step == 2:
                try:
                    raise KeyError("exc-info-after-headers")
                except KeyError:
                    try:
                        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
                    except KeyError:
                        _mark(marker, "reraised")
                        raise
                    _mark(marker, "not-reraised")
                    return b"NOT-RERAISED"
            raise StopIteration

        def close(self):
            _mark(marker, "closed")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body()


# ---------------------------------------------------------------------------
# close() and exceptions


class _ClosingBody:
    """An iterable that records its close() in a marker file."""

    def __init__(self, marker, chunks, fail_after=None, delay=0.0, limit=None):
        self.marker = marker
        self.chunks = chunks
        self.fail_after = fail_after
        self.delay = delay
        self.limit = limit
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise RuntimeError("boom-mid-iteration")
        if self.limit is not None:
            if self.sent >= self.limit:
                raise StopIteration
            if self.delay:
                time.sleep(self.delay)
            self.sent += 1
            return self.chunks[0]
        if self.sent >= len(self.chunks):
            raise StopIteration
        chunk = self.chunks[self.sent]
        self.sent += 1
        return chunk

    def close(self):
        _mark(self.marker, f"closed after {self.sent}")


def close_ok_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _ClosingBody(environ.get("HTTP_X_MARKER"), [b"a", b"b", b"c"])


def close_error_app(environ, start_response):
    """Yields two chunks, then raises: close() must still be called."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _ClosingBody(environ.get("HTTP_X_MARKER"), [b"one|", b"two|", b"three"], fail_after=2)


def close_slow_app(environ, start_response):
    """Streams an 8 KB chunk every 50 ms, X-Limit chunks (default 600: 30 s; the client aborts)."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    limit = int(environ.get("HTTP_X_LIMIT", "600"))
    return _ClosingBody(environ.get("HTTP_X_MARKER"), [b"x" * 8192], delay=0.05, limit=limit)


def raise_before_app(environ, start_response):
    """Raises before start_response; the message contains HTML to check escaping."""
    raise ValueError(environ.get("HTTP_X_MESSAGE", "<b>x</b>"))


def raise_after_start_app(environ, start_response):
    """start_response called, nothing sent, then raises: still a clean 500."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Should-Not-Appear", "1")])
    raise ValueError("raised-after-start-response")


def raise_after_headers_app(environ, start_response):
    """Sends a first chunk (so the headers are out), then raises."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"partial-body|"
        raise RuntimeError("raised-after-headers")

    return gen()


def raise_in_write_app(environ, start_response):
    """Raises after using write(): the write() data was sent with the headers."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written|")
    raise RuntimeError("raised-after-write")


# ---------------------------------------------------------------------------
# file_wrapper


class _MarkingFile(io.FileIO):
    """A real file (has fileno()) that records close() in a marker file."""

    def __init__(self, path, marker):
        super().__init__(path, "rb")
        self._marker = marker
        self._marked = False

    def close(self):
        if not self._marked and not self.closed:
            self._marked = True
            _mark(self._marker, "file closed")
        super().close()


class _NoFilenoFile:
    """File-like object with read() and close() only (no fileno())."""

    def __init__(self, path, marker):
        with open(path, "rb") as f:
            self._buf = io.BytesIO(f.read())
        self._marker = marker

    def read(self, n=-1):
        return self._buf.read(n)

    def close(self):
        _mark(self._marker, "file closed")


def file_wrapper_app(environ, start_response):
    """Serve the file at X-File through wsgi.file_wrapper.

    ?kind=real (default: a FileIO subclass, with fileno()), ?kind=open (plain
    open(path, 'rb'), no close marker) or ?kind=nofileno;
    ?blksize=N (default 65536).
    """
    q = _query(environ)
    path = environ["HTTP_X_FILE"]
    marker = environ.get("HTTP_X_MARKER")
    blksize = int(q.get("blksize", "65536"))
    kind = q.get("kind", "real")
    if kind == "nofileno":
        f = _NoFilenoFile(path, marker)
    elif kind == "open":  # a plain buffered file object, as most apps pass
        f = open(path, "rb")
    else:
        f = _MarkingFile(path, marker)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, blksize)


# ---------------------------------------------------------------------------
# bytes-like and str chunks


def byteslike_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [bytearray(b"ab"), memoryview(b"cd"), b"ef", memoryview(bytearray(b"gh"))]


def str_chunks_app(environ, start_response):
    """str chunks (flup leniency): latin-1 encoded."""
    start_response("200 OK", [("Content-Type", "text/plain; charset=latin-1")])
    return ["caf\u00e9 ", "na\u00efve"]


# ---------------------------------------------------------------------------
# more edge cases


def none_app(environ, start_response):
    """Returns None instead of an iterable."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return None


def no_start_response_app(environ, start_response):
    """Returns a body without ever calling start_response."""
    return [b"body without start_response"]


def bad_chunk_app(environ, start_response):
    """Yields an int: ?when=first (before anything was sent) or ?when=later."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    if _query(environ).get("when", "first") == "first":
        return [42]
    # a generator: b"good|" goes out (headers sent) before the int is seen
    return (x for x in [b"good|", 42, b"never"])


def exit_app(environ, start_response):
    """Raises SystemExit(3) or KeyboardInterrupt (?kind=...) from the app."""
    if _query(environ).get("kind", "exit") == "exit":
        sys.exit(3)
    raise KeyboardInterrupt


def close_raises_app(environ, start_response):
    """The body is complete, then close() raises."""

    class Body:
        def __iter__(self):
            return iter([b"complete ", b"body"])

        def close(self):
            raise RuntimeError("close-failed")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body()


def iter_raises_app(environ, start_response):
    """__iter__ of the returned object raises (before any chunk)."""

    class Body:
        def __iter__(self):
            raise RuntimeError("iter-failed")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body()


def write_then_list_app(environ, start_response):
    """write() data, then a one-element list: an automatic Content-Length must cover both or be absent."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-")
    return [b"returned"]


def big_body_app(environ, start_response):
    """?chunks=N of ?size=S bytes each (deterministic content: chunk i is bytes([i % 251]) * S)."""
    q = _query(environ)
    n, size = int(q.get("chunks", "160")), int(q.get("size", "65536"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (bytes([i % 251]) * size for i in range(n))


def sleep_app(environ, start_response):
    """Sleeps ?t= seconds (default 0.5) and answers the thread name."""
    time.sleep(float(_query(environ).get("t", "0.5")))
    import threading

    body = threading.current_thread().name.encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def stream_echo_app(environ, start_response):
    """Streams back each line of the body as soon as it is read (input read while output flows)."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    inp = environ["wsgi.input"]

    def gen():
        for line in inp:
            yield b"echo:" + line

    return gen()


def input_wait_app(environ, start_response):
    """read() the whole body; records in X-Marker whether read raised or returned (and how much)."""
    marker = environ.get("HTTP_X_MARKER")
    expected = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        data = environ["wsgi.input"].read()
    except BaseException as e:  # record whatever the engine raises
        _mark(marker, f"raised {type(e).__name__}")
        raise
    _mark(marker, f"returned {len(data)} of {expected}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % len(data)]


def errors_extra_app(environ, start_response):
    """wsgi.errors: a last line without newline, and ?size= bytes of output (default 0)."""
    err = environ["wsgi.errors"]
    size = int(_query(environ).get("size", "0"))
    if size:
        line = "e" * 99 + "\n"
        err.write(line * (size // 100))
    err.write("no-newline-at-end")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def file_wrapper_seek_app(environ, start_response):
    """file_wrapper over a file whose position was moved by seek(?offset=), or by
    read(offset) with ?mode=read (the buffered reader's fd is then ahead of tell())."""
    q = _query(environ)
    f = open(environ["HTTP_X_FILE"], "rb")
    offset = int(q.get("offset", "1000"))
    if q.get("mode") == "read":
        f.read(offset)
    else:
        f.seek(offset)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 65536)


# ---------------------------------------------------------------------------
# validated apps (wsgiref.validate raises AssertionError on any PEP 3333 violation)


def _simple(environ, start_response):
    body = b"simple:" + environ.get("PATH_INFO", "").encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _streaming(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(5):
            yield b"chunk%d\n" % i

    return gen()


def _echo(environ, start_response):
    """POST echo reading wsgi.input in read(n) chunks (validator requires the argument)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    inp = environ["wsgi.input"]
    parts = []
    remaining = length
    while remaining > 0:
        data = inp.read(min(remaining, 4096))
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    body = b"".join(parts)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def _readline(environ, start_response):
    """Reads the body line by line with readline(), readline(size), readlines and iteration."""
    inp = environ["wsgi.input"]
    out = [inp.readline(), inp.readline(3), inp.readline()]
    out += inp.readlines(1)
    out += list(inp)
    body = b"|".join(out)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def _writer(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"from-write|")
    write(b"again|")
    return [b"from-iterable"]


def _file_wrapped(environ, start_response):
    path = environ["HTTP_X_FILE"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 32768)


def _errors(environ, start_response):
    err = environ["wsgi.errors"]
    err.write("validated-errors-line\n")
    err.writelines(["validated-a\n", "validated-b\n"])
    err.flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


validated_simple_app = validator(_simple)
validated_streaming_app = validator(_streaming)
validated_echo_app = validator(_echo)
validated_readline_app = validator(_readline)
validated_write_app = validator(_writer)
validated_file_wrapper_app = validator(_file_wrapped)
validated_errors_app = validator(_errors)

VALIDATED = {
    "simple": validated_simple_app,
    "streaming": validated_streaming_app,
    "echo": validated_echo_app,
    "readline": validated_readline_app,
    "write": validated_write_app,
    "file_wrapper": validated_file_wrapper_app,
    "errors": validated_errors_app,
}


def validated_app(environ, start_response):
    """Dispatch to one of the validated apps by the X-App header (one server for all)."""
    return VALIDATED[environ.get("HTTP_X_APP", "simple")](environ, start_response)
