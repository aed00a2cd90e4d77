"""MkDocs hook: fill the generated parts of the pages at build time, so they cannot drift.

- ``<!-- oxfcgi config ARGS -->``: the output of ``oxfcgi config ARGS`` (run from this
  checkout), as a code block;
- ``<!-- oxfcgi settings -->``: the settings table (``oxfcgi.settings.markdown_table``);
- ``<!-- oxfcgi flup -->``: flup's argument names and the settings they map to.

A command that fails stops the build (``mkdocs build --strict`` in the test command).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

MARKER = re.compile(r"<!-- oxfcgi (config [^>]*?|settings|flup) -->")


def _config(args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    cmd = [sys.executable, "-m", "oxfcgi", *shlex.split(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`oxfcgi {args}` failed: {done.stderr.strip()}")
    return "```\n" + done.stdout.rstrip() + "\n```"


def _flup() -> str:
    from oxfcgi import settings

    rows = ["| flup argument | oxfcgi setting | meaning |", "|---|---|---|"]
    for s in settings.SETTINGS:
        if s.flup:
            rows.append(f"| `{s.flup}` | `{s.name}` | {s.help} |")
    return "\n".join(rows) + "\n"


def _fill(match: re.Match[str]) -> str:
    what = match.group(1)
    if what == "settings":
        from oxfcgi import settings

        return settings.markdown_table()
    if what == "flup":
        return _flup()
    return _config(what)


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(_fill, markdown)
