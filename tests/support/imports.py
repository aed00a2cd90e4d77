"""What a serving process has imported: an app that reports it, and the check of its answer
(tests/test_api.py for run(), tests/test_cli.py for `oxfcgi serve`)."""

from __future__ import annotations

import subprocess
import sys

#: Modules a process serving a WSGI function has no use for: each one imported stays resident
#: in every process (issue 11; ``inspect`` with ``ast`` and ``dis`` is about 0.8 MB, ``shutil``
#: with ``bz2`` and ``lzma`` 0.6 MB).
UNNEEDED = (
    "asyncio",
    "dataclasses",
    "inspect",
    "json",
    "random",
    "shutil",
    "subprocess",
    "tempfile",
    "oxfcgi.check.run",
    "oxfcgi.config.options",
)

MODULES_APP = f"""
UNNEEDED = {UNNEEDED!r}

def modules(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [" ".join(name for name in UNNEEDED if name in sys.modules).encode()]
"""


def imported_needlessly(body: bytes) -> set[str]:
    """The names in ``body`` (the ``modules`` app's answer) that this interpreter does not
    import at startup anyway: a ``.pth`` file of the machine's site-packages may import some
    (certifi's imports ``tempfile``, ``shutil`` and ``random``)."""
    probe = [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"]
    at_startup = set(subprocess.run(probe, capture_output=True, text=True, check=True).stdout.split())
    assert set(UNNEEDED) - at_startup, f"the interpreter imports all of {UNNEEDED} at startup: nothing to test"
    return set(body.decode().split()) - at_startup
