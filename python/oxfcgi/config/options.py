"""The options of a generated configuration (:class:`ConfigOptions`).

Apart from :mod:`oxfcgi.config`, which the ``oxfcgi`` CLI imports on every command to add
the ``config`` subcommand: ``dataclasses`` (with ``inspect``, ``ast`` and ``dis``) should
not be imported by ``oxfcgi serve`` (resident memory of every worker; issue 11).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

__all__ = ["ConfigOptions"]


@dataclass
class ConfigOptions:
    """What a generated configuration refers to.

    - ``target``: one of :data:`TARGETS`.
    - ``app``: the application: ``module:attr`` or a path to a ``.fcgi``/``.py`` file
      (default ``app:application``).
    - ``socket``: where oxfcgi listens: a unix socket path (default
      ``/run/oxfcgi/app.sock``) or ``host:port``.
    - ``prefix``: the URL path the app is mounted at (``/`` or ``/app``; no trailing slash).
    - ``python``: the interpreter that has oxfcgi installed (default: the running one).
    - ``user``/``group``: the account the app runs as (systemd, spawners).
    - ``workdir``: the app's directory (default: the directory of ``app`` if a file, else cwd).
    - ``max_body_size``: the largest request body the web server lets through, in bytes
      (default 100 MiB; 0: no limit). Every generated configuration sets it explicitly,
      since the web servers' own defaults are small (nginx 1 MiB, mod_fcgid 128 KiB).
    - ``timeout``: seconds the web server waits for the app's answer and between its
      bytes (default 300), so long requests and uploads are not cut at the server's
      default (nginx 60 s, mod_fcgid 40 s).
    - ``launcher``: where ``apache-fcgid`` writes its launcher script (default: print it).
    - ``backends``: ``HOST:PORT`` of each host running oxfcgi behind one balancer
      (``haproxy``, ``nginx``; default: just ``socket``).
    - ``web_server_addrs``: the web server's addresses, comma-separated; the printed
      ``oxfcgi serve`` commands for TCP hosts start with ``FCGI_WEB_SERVER_ADDRS=`` them.
    - ``multiplexed``: ``haproxy``: several requests per FastCGI connection
      (``option mpxs-conns``, and ``oxfcgi serve --multiplexed``).
    - ``max_in_flight``: the ``max_in_flight`` oxfcgi runs with (default: the setting's
      default); HAProxy's ``maxconn`` per server is set to it.
    - ``spawn``: ``h2o``: H2O starts the app (``fastcgi.spawn``) instead of connecting to
      a socket oxfcgi listens on.
    """

    target: str
    app: str = "app:application"
    socket: str = "/run/oxfcgi/app.sock"
    prefix: str = "/"
    python: str = sys.executable
    user: str | None = None
    group: str | None = None
    workdir: str | None = None
    max_body_size: int = 100 << 20
    timeout: int = 300
    launcher: str | None = None
    backends: list[str] = field(default_factory=list)
    web_server_addrs: str | None = None
    multiplexed: bool = False
    max_in_flight: int | None = None
    spawn: bool = False
