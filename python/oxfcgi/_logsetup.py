"""The default destination of the ``oxfcgi`` logger: stderr."""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s oxfcgi[%(process)d] %(levelname)s: %(message)s"


def ensure_handler() -> None:
    """Give the ``oxfcgi`` logger a stderr handler at INFO, unless logging is
    configured already (a handler on ``oxfcgi`` or on the root logger).

    stderr is what every web server routes to its error log (mod_fcgid: the
    main error log; lighttpd: its stderr or breakagelog; systemd: the journal).
    """
    logger = logging.getLogger("oxfcgi")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
