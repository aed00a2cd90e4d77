"""The address forms oxfcgi understands, once: ``oxfcgi serve --bind``/``run(bind=)``
(``oxfcgi._bind.parse_bind``) and the client (``oxfcgi request``, ``oxfcgi.client``), which
uses the same parser. tests/test_api.py and tests/test_client.py both run this table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (what a user writes, what parse_bind makes of it)
FORMS: list[tuple[Any, tuple[Any, ...]]] = [
    ("unix:/run/a.sock", ("unix", "/run/a.sock")),
    ("/run/a.sock", ("unix", "/run/a.sock")),
    ("./a.sock", ("unix", "./a.sock")),
    ("a.sock", ("unix", "a.sock")),
    ("@abstract", ("unix", "@abstract")),
    ("unix:@abstract", ("unix", "@abstract")),
    (Path("/run/b.sock"), ("unix", "/run/b.sock")),
    (b"/run/c.sock", ("unix", "/run/c.sock")),
    ("127.0.0.1:9000", ("tcp", "127.0.0.1", 9000)),
    ("tcp:127.0.0.1:9000", ("tcp", "127.0.0.1", 9000)),
    ("localhost:9000", ("tcp", "localhost", 9000)),
    ("[::1]:9000", ("tcp", "::1", 9000)),
    (("127.0.0.1", 9000), ("tcp", "127.0.0.1", 9000)),
    (("::1", 9000, 0, 0), ("tcp", "::1", 9000)),
]

#: Forms only a server takes (an inherited socket): a client refuses them.
SERVER_ONLY: list[tuple[Any, tuple[Any, ...]]] = [
    (None, ("auto",)),
    (0, ("fd", 0)),
    ("fd:3", ("fd", 3)),
]

#: Not an address at all (ValueError for both).
BAD: list[Any] = ["9000", "::1:9000", "host:port", "unix:", "fd:x", ("h",), "h:70000", -1, "[::1]9000"]
