"""A small, strict FastCGI 1.0 client: the one the CLI (``oxfcgi request``) and the tests use.

It speaks the wire format of the FastCGI 1.0 specification (Open Market, 1996) record by
record, so tests can send exactly the bytes they mean (odd padding, split PARAMS, a wrong
version byte, ABORT in the middle of a request) and see exactly the records that come back.

Quick use::

    from oxfcgi.client import request
    r = request("unix:/run/app.sock", "GET", "/hello?x=1", headers={"Accept": "text/plain"})
    r.status, r.header("content-type"), r.body

Record level::

    with Connection("127.0.0.1:9000") as c:
        c.begin_request(1, keep_conn=True)
        c.send_params(1, cgi_params("GET", "/"), split=1)   # one byte per PARAMS record
        c.send_stdin(1)
        r = c.read_response(1)

Only the standard library is used (and oxfcgi's own address parser, which needs no engine):
``import oxfcgi.client`` works without the native module.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Union
from urllib.parse import quote, unquote_to_bytes

from ._bind import parse_bind

__all__ = [
    "FCGI_VERSION_1",
    "FCGI_HEADER_LEN",
    "FCGI_MAX_CONTENT_LEN",
    "FCGI_NULL_REQUEST_ID",
    "FCGI_BEGIN_REQUEST",
    "FCGI_ABORT_REQUEST",
    "FCGI_END_REQUEST",
    "FCGI_PARAMS",
    "FCGI_STDIN",
    "FCGI_STDOUT",
    "FCGI_STDERR",
    "FCGI_DATA",
    "FCGI_GET_VALUES",
    "FCGI_GET_VALUES_RESULT",
    "FCGI_UNKNOWN_TYPE",
    "FCGI_MAXTYPE",
    "FCGI_RESPONDER",
    "FCGI_AUTHORIZER",
    "FCGI_FILTER",
    "FCGI_KEEP_CONN",
    "FCGI_REQUEST_COMPLETE",
    "FCGI_CANT_MPX_CONN",
    "FCGI_OVERLOADED",
    "FCGI_UNKNOWN_ROLE",
    "FCGI_MAX_CONNS",
    "FCGI_MAX_REQS",
    "FCGI_MPXS_CONNS",
    "TYPE_NAMES",
    "PROTOCOL_STATUS_NAMES",
    "ProtocolError",
    "TruncatedRecordError",
    "ConnectError",
    "encode_record",
    "encode_params",
    "decode_params",
    "parse_address",
    "Record",
    "Response",
    "Connection",
    "cgi_params",
    "request",
]

# --- Constants, named as in the spec (§8 "Types and constants") -------------------------

FCGI_LISTENSOCK_FILENO = 0
FCGI_HEADER_LEN = 8
FCGI_VERSION_1 = 1
FCGI_NULL_REQUEST_ID = 0
#: Largest contentLength a record can carry (a 16-bit field, §3.3).
FCGI_MAX_CONTENT_LEN = 0xFFFF

# Record types (§8)
FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_DATA = 8
FCGI_GET_VALUES = 9
FCGI_GET_VALUES_RESULT = 10
FCGI_UNKNOWN_TYPE = 11
FCGI_MAXTYPE = FCGI_UNKNOWN_TYPE

# FCGI_BeginRequestBody.flags (§5.1)
FCGI_KEEP_CONN = 1

# Roles (§5.1, §6)
FCGI_RESPONDER = 1
FCGI_AUTHORIZER = 2
FCGI_FILTER = 3

# FCGI_EndRequestBody.protocolStatus (§5.5)
FCGI_REQUEST_COMPLETE = 0
FCGI_CANT_MPX_CONN = 1
FCGI_OVERLOADED = 2
FCGI_UNKNOWN_ROLE = 3

# FCGI_GET_VALUES variable names (§4.1)
FCGI_MAX_CONNS = "FCGI_MAX_CONNS"
FCGI_MAX_REQS = "FCGI_MAX_REQS"
FCGI_MPXS_CONNS = "FCGI_MPXS_CONNS"

TYPE_NAMES = {
    FCGI_BEGIN_REQUEST: "FCGI_BEGIN_REQUEST",
    FCGI_ABORT_REQUEST: "FCGI_ABORT_REQUEST",
    FCGI_END_REQUEST: "FCGI_END_REQUEST",
    FCGI_PARAMS: "FCGI_PARAMS",
    FCGI_STDIN: "FCGI_STDIN",
    FCGI_STDOUT: "FCGI_STDOUT",
    FCGI_STDERR: "FCGI_STDERR",
    FCGI_DATA: "FCGI_DATA",
    FCGI_GET_VALUES: "FCGI_GET_VALUES",
    FCGI_GET_VALUES_RESULT: "FCGI_GET_VALUES_RESULT",
    FCGI_UNKNOWN_TYPE: "FCGI_UNKNOWN_TYPE",
}

PROTOCOL_STATUS_NAMES = {
    FCGI_REQUEST_COMPLETE: "FCGI_REQUEST_COMPLETE",
    FCGI_CANT_MPX_CONN: "FCGI_CANT_MPX_CONN",
    FCGI_OVERLOADED: "FCGI_OVERLOADED",
    FCGI_UNKNOWN_ROLE: "FCGI_UNKNOWN_ROLE",
}

_HEADER = struct.Struct(">BBHHBx")  # version, type, requestId, contentLength, paddingLength, reserved
_BEGIN_BODY = struct.Struct(">HB5x")  # role, flags, reserved[5]
_END_BODY = struct.Struct(">IB3x")  # appStatus, protocolStatus, reserved[3]

Address = Union[str, "os.PathLike[str]", tuple[Any, ...], socket.socket]
Pairs = Union[Mapping[Any, Any], Iterable[Any]]  # noqa: UP007


# --- Errors ---------------------------------------------------------------------------


class ProtocolError(Exception):
    """The peer sent bytes that are not valid FastCGI 1.0 (or not what this client expects)."""


class TruncatedRecordError(ProtocolError, ConnectionError):
    """The connection ended in the middle of a record (header or content+padding).

    It is both a :class:`ProtocolError` and a :class:`ConnectionError`, so either
    ``except`` clause catches it.
    """


class ConnectError(ConnectionError):
    """The client could not connect to the address. ``errno`` is the underlying OS error number."""


# --- Encoding / decoding ----------------------------------------------------------------


def encode_record(
    rtype: int, request_id: int, content: bytes = b"", padding: int | None = None, version: int = FCGI_VERSION_1
) -> bytes:
    """Encode one record (spec §3.3): the 8-byte header, ``content``, then ``padding`` zero bytes.

    :param rtype: record type, 0..255 (e.g. :data:`FCGI_STDIN`); any value is allowed so tests
        can send unknown types.
    :param request_id: 0..65535; 0 is the management ("null") request id.
    :param content: at most 65535 bytes (the contentLength field is 16 bits).
    :param padding: number of padding bytes, 0..255. ``None`` (default) pads the record to a
        multiple of 8 bytes, as the spec recommends.
    :param version: the version byte; default :data:`FCGI_VERSION_1`. Tests set other values.
    :raises ValueError: content longer than 65535 bytes, or a field out of range.
    """
    content = bytes(content)
    if len(content) > FCGI_MAX_CONTENT_LEN:
        raise ValueError(f"record content is {len(content)} bytes; a FastCGI record holds at most 65535")
    if padding is None:
        padding = -len(content) % 8
    for name, value, limit in (
        ("rtype", rtype, 0xFF),
        ("request_id", request_id, 0xFFFF),
        ("padding", padding, 0xFF),
        ("version", version, 0xFF),
    ):
        if not 0 <= value <= limit:
            raise ValueError(f"{name}={value} is out of range 0..{limit}")
    return _HEADER.pack(version, rtype, request_id, len(content), padding) + content + bytes(padding)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1")
    raise TypeError(f"name-value pair items must be str or bytes, not {type(value).__name__}")


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise ValueError(f"name or value of {n} bytes is longer than a FastCGI length can express (2**31-1)")
    return struct.pack(">I", n | 0x80000000)


def encode_params(pairs: Pairs) -> bytes:
    """Encode name-value pairs (spec §3.4) as one byte string, ready to split into PARAMS records.

    :param pairs: a mapping, or an iterable of ``(name, value)``; items are ``str`` (encoded
        latin-1, as PEP 3333 maps environ strings to bytes) or ``bytes``. Order is kept and
        duplicates are sent as given.
    :returns: each pair as nameLength, valueLength, name, value; a length below 128 takes
        1 byte, otherwise 4 bytes with the high bit set.
    :raises UnicodeEncodeError: a ``str`` outside latin-1.
    :raises ValueError: a name or value of 2**31 bytes or more.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for name, value in items:
        n, v = _as_bytes(name), _as_bytes(value)
        out += _encode_length(len(n))
        out += _encode_length(len(v))
        out += n
        out += v
    return bytes(out)


def decode_params(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a complete name-value pair stream (spec §3.4) into ``[(name, value), ...]`` (bytes).

    :raises ProtocolError: the data ends inside a length or inside a name/value.
    """
    data = bytes(data)
    pos, end = 0, len(data)
    pairs = []

    def length() -> int:
        nonlocal pos
        if pos >= end:
            raise ProtocolError(f"name-value pairs truncated at byte {pos}: length expected")
        if data[pos] < 0x80:
            pos += 1
            return data[pos - 1]
        if pos + 4 > end:
            raise ProtocolError(f"name-value pairs truncated at byte {pos}: 4-byte length cut short")
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return int(n) & 0x7FFFFFFF

    while pos < end:
        nlen = length()
        vlen = length()
        if pos + nlen + vlen > end:
            raise ProtocolError(
                f"name-value pairs truncated: pair needs {nlen}+{vlen} bytes at byte {pos}, {end - pos} left"
            )
        pairs.append((data[pos : pos + nlen], data[pos + nlen : pos + nlen + vlen]))
        pos += nlen + vlen
    return pairs


# --- Records and responses --------------------------------------------------------------


@dataclass
class Record:
    """One record as received (spec §3.3). ``padding`` is the paddingLength byte."""

    version: int
    type: int
    request_id: int
    content: bytes
    padding: int = 0

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type {self.type}")

    def end_request(self) -> tuple[int, int]:
        """For an FCGI_END_REQUEST record: ``(appStatus, protocolStatus)`` (spec §5.5).

        :raises ProtocolError: not an END_REQUEST record, or its body is not 8 bytes.
        """
        if self.type != FCGI_END_REQUEST:
            raise ProtocolError(f"{self.type_name} is not FCGI_END_REQUEST")
        if len(self.content) != _END_BODY.size:
            raise ProtocolError(f"FCGI_END_REQUEST body is {len(self.content)} bytes, expected 8")
        return _END_BODY.unpack(self.content)

    def __repr__(self) -> str:
        body = self.content if len(self.content) <= 40 else self.content[:40] + b"..."
        return (
            f"Record({self.type_name}, id={self.request_id}, len={len(self.content)}, "
            f"pad={self.padding}, v={self.version}, {body!r})"
        )


@dataclass
class Response:
    """What came back for one request id.

    ``status``/``reason``/``headers`` come from the CGI header block at the start of the
    FCGI_STDOUT stream (spec §6.2; CGI/1.1 RFC 3875 §6). ``Status: 404 Not Found`` gives
    404; with no ``Status`` line the status is 200 OK (302 Found if there is a ``Location``
    header, as nginx does). The ``Status`` line itself is not in ``headers``. The header
    block ends at the first ``\\r\\n\\r\\n`` or ``\\n\\n``; if STDOUT has no complete
    header block, ``status`` is 0, ``headers`` is empty and ``body`` is the raw STDOUT.

    ``app_status``/``protocol_status`` come from FCGI_END_REQUEST (spec §5.5); both are
    ``None`` if the connection ended before it. ``records`` holds every record received
    for this request id, in order (END_REQUEST included).
    """

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    stderr: bytes
    app_status: int | None
    protocol_status: int | None
    records: list[Record] = field(default_factory=list, repr=False)

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (case-insensitive), or ``None``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def stdout(self) -> bytes:
        """The whole FCGI_STDOUT stream, header block included."""
        return b"".join(r.content for r in self.records if r.type == FCGI_STDOUT)

    @property
    def complete(self) -> bool:
        """True if FCGI_END_REQUEST arrived with protocolStatus FCGI_REQUEST_COMPLETE."""
        return self.protocol_status == FCGI_REQUEST_COMPLETE

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (errors replaced)."""
        return self.body.decode("utf-8", "replace")

    @classmethod
    def from_records(cls, records: list[Record]) -> Response:
        """Build a Response from the records of one request id (the END_REQUEST one last, if any)."""
        stdout = b"".join(r.content for r in records if r.type == FCGI_STDOUT)
        stderr = b"".join(r.content for r in records if r.type == FCGI_STDERR)
        app_status = protocol_status = None
        for r in records:
            if r.type == FCGI_END_REQUEST:
                app_status, protocol_status = r.end_request()
        status, reason, headers, body = _parse_cgi_response(stdout)
        return cls(status, reason, headers, body, stderr, app_status, protocol_status, list(records))


def _parse_cgi_response(stdout: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
    crlf, lf = stdout.find(b"\r\n\r\n"), stdout.find(b"\n\n")
    candidates = [(i, n) for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    if not candidates:
        return 0, "", [], stdout
    end, sep_len = min(candidates)
    block, body = stdout[:end], stdout[end + sep_len :]
    status, reason, headers = None, "", []
    for raw in block.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            continue
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            return 0, "", [], stdout  # not a header block after all
        name, value = name.strip(), value.strip()
        if name.lower() == "status" and status is None:
            code, _, reason = value.partition(" ")
            try:
                status = int(code)
            except ValueError:
                return 0, "", [], stdout
            reason = reason.strip()
        else:
            headers.append((name, value))
    if status is None:
        status = 302 if any(k.lower() == "location" for k, _ in headers) else 200
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    return status, reason, headers, body


# --- Addresses and connections ---------------------------------------------------------


def parse_address(address: Address) -> tuple[int, str | tuple[str, int]]:
    """Turn an address into ``(family, sockaddr)`` for :func:`socket.socket.connect`.

    The forms ``oxfcgi serve --bind`` accepts (one parser, :func:`oxfcgi._bind.parse_bind`):
    ``"unix:/path"``, ``"/path"``, ``"./rel.sock"``, an ``os.PathLike`` (Unix socket),
    ``"@name"``/``"unix:@name"`` (a Linux abstract socket), ``"host:port"``,
    ``"tcp:host:port"``, ``"[v6addr]:port"``, ``("host", port)``.

    :raises ValueError: an address in none of these forms, or one a client cannot connect
        to (``fd:N``, or none).
    """
    try:
        target = parse_bind(address)
    except TypeError as e:
        raise ValueError(str(e)) from None
    if target[0] == "unix":
        path: str = target[1]
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    if target[0] == "tcp":
        host, port = target[1], target[2]
        return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)
    raise ValueError(f"cannot connect to {address!r}; give 'unix:/path', '/path', '@name', 'host:port' or '[::1]:port'")


def _describe(address: Address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, os.PathLike):
        return f"unix:{os.fspath(address)}"
    if isinstance(address, str) and address.startswith("/"):
        return f"unix:{address}"
    return str(address)


class Connection:
    """One FastCGI transport connection, seen from the web server's side.

    :param address: ``"unix:/path"``, ``"/abs/path"``, ``"host:port"``, ``"[::1]:port"``,
        ``("host", port)``, an ``os.PathLike`` (Unix socket) or an already connected socket.
    :param timeout: seconds for connect and for each blocking send/receive (``None`` = wait
        forever). A read that times out raises :class:`TimeoutError`.
    :raises ConnectError: the connection could not be made (message names the address).

    Records received for other request ids while waiting for one (in :meth:`read_response`
    or :meth:`get_values`) are kept and returned first by later calls.
    """

    def __init__(self, address: Address, timeout: float | None = 10.0):
        self.address = address
        self._buf = bytearray()
        self._pending: deque[Record] = deque()
        self._eof = False
        if isinstance(address, socket.socket):
            self.sock = address
            self.sock.settimeout(timeout)
            return
        family, sockaddr = parse_address(address)
        if isinstance(sockaddr, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(sockaddr)
            except OSError as e:
                sock.close()
                raise self._connect_error(e) from e
            self.sock = sock
        else:
            try:
                self.sock = socket.create_connection(sockaddr, timeout=timeout)
            except OSError as e:
                raise self._connect_error(e) from e

    def _connect_error(self, e: OSError) -> ConnectError:
        reason = e.strerror or str(e) or type(e).__name__
        err = ConnectError(f"cannot connect to {_describe(self.address)}: {reason}")
        err.errno = e.errno
        return err

    # -- context manager --
    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def shutdown_write(self) -> None:
        """Half-close: tell the server no more bytes will come (``shutdown(SHUT_WR)``)."""
        self.sock.shutdown(socket.SHUT_WR)

    def settimeout(self, timeout: float | None) -> None:
        """Change the per-operation timeout in seconds (``None`` = block forever)."""
        self.sock.settimeout(timeout)

    # -- sending --
    def send(self, data: bytes) -> None:
        """Send raw bytes as they are (use it for malformed input)."""
        self.sock.sendall(data)

    def send_record(
        self,
        rtype: int,
        request_id: int,
        content: bytes = b"",
        padding: int | None = None,
        version: int = FCGI_VERSION_1,
    ) -> None:
        """Encode (see :func:`encode_record`) and send one record."""
        self.sock.sendall(encode_record(rtype, request_id, content, padding, version))

    def begin_request(self, request_id: int = 1, role: int = FCGI_RESPONDER, keep_conn: bool = False) -> None:
        """Send FCGI_BEGIN_REQUEST (spec §5.1) with ``role`` and the FCGI_KEEP_CONN flag."""
        body = _BEGIN_BODY.pack(role, FCGI_KEEP_CONN if keep_conn else 0)
        self.send_record(FCGI_BEGIN_REQUEST, request_id, body)

    def _send_stream(self, rtype: int, request_id: int, data: bytes, chunk: int, end: bool) -> None:
        if not 1 <= chunk <= FCGI_MAX_CONTENT_LEN:
            raise ValueError(f"chunk/split must be 1..65535 bytes, got {chunk}")
        view = memoryview(bytes(data))
        out = bytearray()
        for start in range(0, len(view), chunk):
            out += encode_record(rtype, request_id, bytes(view[start : start + chunk]))
            if len(out) >= 1 << 20:
                self.sock.sendall(out)
                out.clear()
        if end:
            out += encode_record(rtype, request_id, b"")
        if out:
            self.sock.sendall(out)

    def send_params(self, request_id: int, params: Pairs, split: int | None = None) -> None:
        """Send the FCGI_PARAMS stream (spec §5.2): all pairs encoded, cut into records of at
        most ``split`` bytes (default 65535; ``split=1`` sends one byte per record, so pairs
        straddle records), then the empty PARAMS record that ends the stream."""
        self._send_stream(FCGI_PARAMS, request_id, encode_params(params), split or FCGI_MAX_CONTENT_LEN, True)

    def send_stdin(
        self, request_id: int, body: bytes = b"", chunk: int = FCGI_MAX_CONTENT_LEN, end: bool = True
    ) -> None:
        """Send ``body`` as FCGI_STDIN records of at most ``chunk`` bytes (spec §5.3), then the
        empty STDIN record if ``end``."""
        self._send_stream(FCGI_STDIN, request_id, body, chunk, end)

    def send_data(
        self, request_id: int, data: bytes = b"", chunk: int = FCGI_MAX_CONTENT_LEN, end: bool = True
    ) -> None:
        """Send ``data`` as FCGI_DATA records (Filter role, spec §6.4), then the empty one if ``end``."""
        self._send_stream(FCGI_DATA, request_id, data, chunk, end)

    def abort(self, request_id: int = 1) -> None:
        """Send FCGI_ABORT_REQUEST (spec §5.4) for ``request_id``."""
        self.send_record(FCGI_ABORT_REQUEST, request_id)

    # -- receiving --
    def _fill(self, n: int) -> bool:
        """Make the buffer hold ``n`` bytes; False if EOF came first."""
        while len(self._buf) < n:
            if self._eof:
                return False
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                self._eof = True
                return False
            self._buf += chunk
        return True

    def _read_wire_record(self) -> Record | None:
        if not self._fill(FCGI_HEADER_LEN):
            if self._buf:
                raise TruncatedRecordError(f"connection closed inside a record header ({len(self._buf)} of 8 bytes)")
            return None
        version, rtype, request_id, clen, plen = _HEADER.unpack_from(self._buf)
        total = FCGI_HEADER_LEN + clen + plen
        if not self._fill(total):
            raise TruncatedRecordError(
                f"connection closed inside a {TYPE_NAMES.get(rtype, f'type {rtype}')} record "
                f"(id {request_id}): got {len(self._buf) - FCGI_HEADER_LEN} of {clen}+{plen} "
                "content+padding bytes"
            )
        content = bytes(self._buf[FCGI_HEADER_LEN : FCGI_HEADER_LEN + clen])
        del self._buf[:total]
        return Record(version, rtype, request_id, content, plen)

    def read_record(self) -> Record | None:
        """Return the next record (records kept back by :meth:`read_response` first).

        :returns: the record, or ``None`` on a clean EOF (between records).
        :raises TruncatedRecordError: EOF in the middle of a record.
        :raises TimeoutError: nothing arrived within the timeout.
        """
        if self._pending:
            return self._pending.popleft()
        return self._read_wire_record()

    def _next_record_for(self, wanted: Callable[[Record], bool]) -> Record | None:
        for i, rec in enumerate(self._pending):
            if wanted(rec):
                del self._pending[i]
                return rec
        while True:
            got = self._read_wire_record()
            if got is None or wanted(got):
                return got
            self._pending.append(got)

    def read_response(self, request_id: int = 1) -> Response:
        """Read the records of ``request_id`` up to and including its FCGI_END_REQUEST.

        Records of other ids (and management records) are kept for later calls. If the
        connection ends first, the response has ``app_status``/``protocol_status`` ``None``.

        :raises TruncatedRecordError: EOF inside a record.
        :raises TimeoutError: a receive timed out.
        """
        records = []
        while True:
            rec = self._next_record_for(lambda r: r.request_id == request_id)
            if rec is None:
                break
            records.append(rec)
            if rec.type == FCGI_END_REQUEST:
                break
        return Response.from_records(records)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: str = "",
        headers: Pairs | None = None,
        body: bytes = b"",
        params: Pairs | None = None,
        request_id: int = 1,
        keep_conn: bool = False,
        role: int = FCGI_RESPONDER,
        script_name: str = "",
    ) -> Response:
        """Send a whole request and return its :class:`Response`.

        Sends BEGIN_REQUEST, the params of :func:`cgi_params` (``path`` may carry ``?query``)
        updated with ``params`` (a value of ``None`` removes that name), ``body`` as STDIN
        and the empty STDIN record, then :meth:`read_response`.
        """
        if isinstance(body, str):
            body = body.encode("utf-8")
        all_params = cgi_params(method, path, query, headers, len(body), script_name)
        if params:
            for name, value in params.items() if isinstance(params, Mapping) else params:
                if value is None:
                    all_params.pop(name, None)
                else:
                    all_params[name] = value
        self.begin_request(request_id, role, keep_conn)
        self.send_params(request_id, all_params)
        self.send_stdin(request_id, body)
        return self.read_response(request_id)

    def get_values(self, names: Iterable[str] = (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)) -> dict[str, str]:
        """Ask FCGI_GET_VALUES (spec §4.1) on request id 0 and return the answered variables.

        :returns: ``{name: value}`` from the FCGI_GET_VALUES_RESULT (names the server does
            not know are absent, as the spec requires).
        :raises ProtocolError: the connection closed before the answer, or the answer is malformed.
        """
        self.send_record(FCGI_GET_VALUES, FCGI_NULL_REQUEST_ID, encode_params((n, b"") for n in names))
        rec = self._next_record_for(lambda r: r.request_id == FCGI_NULL_REQUEST_ID and r.type == FCGI_GET_VALUES_RESULT)
        if rec is None:
            raise ProtocolError("connection closed before FCGI_GET_VALUES_RESULT")
        return {n.decode("latin-1"): v.decode("latin-1") for n, v in decode_params(rec.content)}


# --- CGI params like a web server sends -------------------------------------------------


def _encode_path(path: str) -> str:
    """Percent-encode what a browser would (non-ASCII as UTF-8, spaces, controls); keep '%'."""
    return quote(path, safe="/%:@!$&'()*+,;=-._~")


def cgi_params(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Pairs | None = None,
    body_length: int = 0,
    script_name: str = "",
) -> dict[str, str]:
    """The params nginx sends for this request with a correct WSGI config (SCRIPT_NAME = mount
    point, PATH_INFO = the decoded rest of the path).

    :param path: the request path as a client would send it; it may carry ``?query`` (used
        when ``query`` is empty). Non-ASCII characters are percent-encoded (UTF-8) in
        REQUEST_URI; PATH_INFO is the percent-decoded path with bytes mapped to latin-1
        characters (PEP 3333).
    :param headers: mapping or iterable of ``(name, value)``; each becomes ``HTTP_NAME``
        (upper-case, ``-`` → ``_``; repeated names joined with ``", "``), except
        ``Content-Type``/``Content-Length`` which become CONTENT_TYPE/CONTENT_LENGTH. An
        ``HTTP_HOST`` of ``localhost`` is added unless a ``Host`` header is given.
    :param body_length: request body size in bytes; CONTENT_LENGTH is sent when it is
        positive, or for POST/PUT/PATCH.
    :param script_name: the mount point (``""`` for the root); it is cut off the front of
        the path to form PATH_INFO.
    :returns: REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, REQUEST_URI,
        SERVER_NAME=localhost, SERVER_PORT=80, SERVER_PROTOCOL=HTTP/1.1,
        REMOTE_ADDR=127.0.0.1, GATEWAY_INTERFACE=CGI/1.1, CONTENT_LENGTH/CONTENT_TYPE, HTTP_*.
    """
    if "?" in path:
        path, _, path_query = path.partition("?")
        query = query or path_query
    raw_path = _encode_path(path or "/")
    decoded = unquote_to_bytes(raw_path).decode("latin-1")
    script_name = unquote_to_bytes(_encode_path(script_name.rstrip("/"))).decode("latin-1")
    path_info = decoded[len(script_name) :] if script_name and decoded.startswith(script_name) else decoded
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method.upper(),
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "REQUEST_URI": raw_path + (f"?{query}" if query else ""),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if body_length > 0 or method.upper() in ("POST", "PUT", "PATCH"):
        params["CONTENT_LENGTH"] = str(body_length)
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    host_given = False
    for name, value in items:
        key = name.upper().replace("-", "_")
        value = value if isinstance(value, str) else _as_bytes(value).decode("latin-1")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            params[key] = value
            continue
        key = "HTTP_" + key
        host_given = host_given or key == "HTTP_HOST"
        params[key] = f"{params[key]}, {value}" if key in params else value
    if not host_given:
        params["HTTP_HOST"] = "localhost"
    return params


def request(
    address: Address, method: str = "GET", path: str = "/", *, timeout: float | None = 10.0, **kwargs: Any
) -> Response:
    """Open a connection, send one request (see :meth:`Connection.request` for ``kwargs``),
    return the :class:`Response` and close the connection.

    :param timeout: seconds, as in :class:`Connection`.
    :raises ConnectError: the server could not be reached.
    """
    with Connection(address, timeout=timeout) as conn:
        return conn.request(method, path, **kwargs)
