"""What a loaded application needs beyond its import, checked as USER: the files a Django
project writes at run time (a SQLite database and its directory, MEDIA_ROOT, log files),
and Mercurial's lazy importer, which breaks under threads."""

from __future__ import annotations

import os
import shlex
from typing import Any

from .. import settings
from .access import Unknown, blocked_fix, group_name, ls, path_blocked
from .context import Context

#: oxfcgi's default number of threads (the settings table's), when nothing else is known.
DEFAULT_THREADS = int(settings.BY_NAME["threads"].default)


def _writable(ctx: Context, path: str) -> tuple[bool, str, str]:
    """Whether USER can create or change ``path``: (ok, what was seen, the fix)."""
    who = ctx.user
    owner = f"{who.name}:{group_name(who.gid)}"
    target = path if os.path.exists(path) else os.path.dirname(path)
    try:
        blocked = path_blocked(target, who, "w" if os.path.isfile(target) else "wx")
    except (Unknown, OSError):
        return True, "", ""
    if blocked is None:
        return True, "", ""
    return (
        False,
        ls(blocked.path, blocked.st),
        f"chown {owner} {shlex.quote(blocked.path)}   (or: {blocked_fix(blocked, who)})",
    )


def report_app_facts(ctx: Context, data: dict[str, Any]) -> None:
    """Findings from the probe's ``writable_paths``, ``demandimport`` and ``threads``."""
    r = ctx.report
    user = ctx.user.name
    for entry in data.get("writable_paths") or []:
        what, path, kind = entry["what"], entry["path"], entry["kind"]
        if kind == "read":
            try:
                blocked = path_blocked(path, ctx.user, "rx") if os.path.isdir(path) else None
            except (Unknown, OSError):
                blocked = None
            if blocked is not None:
                r.warn(
                    f"{user} cannot read {what} {path}",
                    [ls(blocked.path, blocked.st), "static files collected there cannot be served"],
                    [blocked_fix(blocked, ctx.user)],
                )
            continue
        paths = [path]
        if kind == "sqlite":
            # SQLite writes a journal beside the database: the directory must be writable too.
            paths.append(os.path.dirname(path))
        for p in paths:
            ok, saw, fix = _writable(ctx, p)
            if ok:
                continue
            consequence = {
                "sqlite": "every write fails: 'attempt to write a readonly database' "
                "(or 'unable to open database file')",
                "dir": "uploads fail with PermissionError",
                "file": "Django fails at start-up: the log file cannot be opened",
            }[kind]
            r.fail(f"{user} cannot write {what}", [f"{what} is {path}", saw, consequence], [fix])
            break
        else:
            r.ok(f"{user} can write {what} ({path})")
    if data.get("writable_paths_error"):
        r.note("Django settings", [f"could not read the paths the settings name: {data['writable_paths_error']}"])
    if data.get("demandimport"):
        threads = data.get("threads") or int(os.environ.get("OXFCGI_THREADS", "0") or 0) or DEFAULT_THREADS
        if threads > 1:
            r.warn(
                f"Mercurial's demandimport is enabled, with {threads} threads",
                [
                    "hgweb's lazy importer is not thread-safe: concurrent requests fail with errors such as "
                    "\"module 'mercurial.dirstate' has no attribute 'dirstate'\" (flup fails the same way)",
                ],
                [
                    "serve it with one thread: run(app, threads=1), oxfcgi serve --threads 1, or "
                    "OXFCGI_THREADS=1 (one thread is also faster for hgweb); add processes for concurrency",
                ],
            )
        else:
            r.ok("Mercurial's demandimport is enabled and the app runs with one thread")


__all__ = ["report_app_facts"]
