"""Where the ``oxfcgi`` logger writes: stderr by default, or a log file (reopened on SIGUSR1)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "%(asctime)s oxfcgi[%(process)d] %(levelname)s: %(message)s"

_file_handler: ReopenableFileHandler | None = None


class ReopenableFileHandler(logging.FileHandler):
    """A log file that can be reopened after logrotate moved it (SIGUSR1)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


class _PrintToLog:
    """``sys.stdout`` replacement: print() output goes to the log file, line buffered."""

    encoding = "utf-8"

    def __init__(self, handler: ReopenableFileHandler):
        self._handler = handler

    def write(self, text: str) -> int:
        self._handler.acquire()
        try:
            stream = self._handler.stream or self._handler._open()
            self._handler.stream = stream
            stream.write(text)
            if "\n" in text:
                stream.flush()
        finally:
            self._handler.release()
        return len(text)

    def flush(self) -> None:
        if self._handler.stream:
            self._handler.stream.flush()

    def isatty(self) -> bool:
        return False


def ensure_handler(level: str = "INFO", *, explicit: bool = False) -> None:
    """Give the ``oxfcgi`` logger a stderr handler, unless logging is configured already
    (a handler on ``oxfcgi`` or on the root logger), and set its level to ``level`` (a
    name such as ``"INFO"``) when it has none yet or when ``explicit`` (the ``log_level``
    setting was given).

    stderr is what every web server routes to its error log (mod_fcgid: the
    main error log; lighttpd: its stderr or breakagelog; systemd: the journal).
    """
    logger = logging.getLogger("oxfcgi")
    if explicit or logger.level == logging.NOTSET:
        logger.setLevel(level)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    # Ours only: the root logger stays the application's (Flask installs its own handler,
    # to wsgi.errors, only when it finds none above it), and a root handler the app adds
    # later must not print our lines a second time.
    logger.propagate = False
    logger.addHandler(handler)


def apply_log_config(path: str) -> None:
    """``--log-config FILE``, as gunicorn and uvicorn take it: a ``logging.config``
    dictConfig in JSON (``.json``) or a fileConfig (``.ini``, ``.conf``, anything else).
    Existing loggers are kept. Raises ``ValueError`` naming the file when it cannot be used."""
    import logging.config

    try:
        if path.endswith(".json"):
            import json

            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"log_config {path}: {e}") from e


def configure(level: str, *, explicit: bool = False, log_config: str | None = None) -> None:
    """Logging for a server: the user's ``log_config`` when given (then nothing else is
    touched), else a stderr handler on the ``oxfcgi`` logger only (:func:`ensure_handler`)."""
    if log_config:
        apply_log_config(log_config)
        if explicit:
            logging.getLogger("oxfcgi").setLevel(level)
        return
    ensure_handler(level, explicit=explicit)


def use_log_file(path: str) -> None:
    """Also log to ``path`` (appending); while serving, print() output goes there.

    Raises ``OSError`` if the file cannot be opened.
    """
    global _file_handler
    if _file_handler is not None and _file_handler.baseFilename == __import__("os").path.abspath(path):
        return
    handler = ReopenableFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("oxfcgi")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    _file_handler = handler


def make_print_safe() -> TextIO:
    """While serving, print() goes to the log file or stderr, never to fd 1
    (which a manager may have pointed at a socket or at nowhere). Returns the
    previous ``sys.stdout``, to restore when serving ends.
    """
    previous = sys.stdout
    if _file_handler is not None:
        sys.stdout = _PrintToLog(_file_handler)
    elif sys.stderr is not None:
        sys.stdout = sys.stderr
    return previous


def reopen() -> None:
    """Reopen the log file (called by the engine on SIGUSR1)."""
    if _file_handler is not None:
        _file_handler.reopen()
        logging.getLogger("oxfcgi").info("log file reopened")
