"""Shared pytest setup: the repository root on sys.path (tests import their helpers as
``tests.*``, as the server subprocesses do with PYTHONPATH=ROOT), and the fixtures of
tests/support/fixtures.py.

The root is appended, not prepended: it holds no ``oxfcgi`` package (that lives under
python/), so nothing installed is shadowed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from tests.support.fixtures import (  # noqa: E402 - needs ROOT on sys.path
    IN_CI,
    ServerProcess,
    need_binary,
    start_nginx,
    start_server,
)

__all__ = ["IN_CI", "ROOT", "ServerProcess", "need_binary", "start_nginx", "start_server"]
