"""The keyword arguments of :func:`oxfcgi.run`, for type checkers.

Generated from the settings table by ``scripts/generate-settings.py``
(tests/test_settings.py fails when this file and the table differ)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class RunOptions(TypedDict, total=False):
    """``run()``'s keywords: the settings of :mod:`oxfcgi.settings` (all optional)."""

    threads: int
    multiplexed: bool
    max_conns: int
    max_in_flight: int | None
    roles: Iterable[int | str] | int | str
    max_params_size: int
    max_params: int
    graceful_timeout: float
    idle_timeout: float | None
    keepalive_timeout: float | None
    read_timeout: float | None
    params_timeout: float | None
    send_timeout: float | None
    script_name: str | None
    environ: Mapping[str, Any] | None
    multithread: bool | None
    multiprocess: bool
    debug: bool
    status_path: str | None
    ping_path: str | None
    max_requests: int | None
    request_slowlog_timeout: float | None
    request_terminate_timeout: float | None
    backlog: int
    socket_mode: int
    umask: int | None
    socket_owner: str | int | None
    socket_group: str | int | None
    user: str | int | None
    group: str | int | None
    pidfile: str | None
    log_file: str | None
    log_level: str
    log_config: str | None
    force_cgi: bool
    interface: str
    loop: str
    lifespan: str
    workers: int | None
    boot_attempts: int
    reload_on_change: Iterable[str] | str
    max_requests_jitter: int
    max_lifetime: float | None
    max_rss: int | None
