#!/usr/bin/env python3
"""Rewrite what is generated from the settings table (python/oxfcgi/settings.py):

- README.md, between the "settings table" markers;
- python/oxfcgi/_options.py, the RunOptions TypedDict of run()'s keywords.

    python3 scripts/generate-settings.py          # rewrite both
    python3 scripts/generate-settings.py --check  # exit 1 if either differs (what the tests check)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from oxfcgi import settings  # noqa: E402

BEGIN = "<!-- settings table: scripts/generate-settings.py -->\n"
END = "<!-- end of settings table -->"


def readme(text: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    if not sep or END not in rest:
        raise SystemExit(f"README.md has no {BEGIN.strip()} ... {END} block")
    return head + BEGIN + settings.markdown_table() + END + rest.split(END, 1)[1]


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    targets = {
        ROOT / "README.md": readme,
        ROOT / "python" / "oxfcgi" / "_options.py": lambda _: settings.options_module(),
    }
    stale = []
    for path, make in targets.items():
        old = path.read_text()
        new = make(old)
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run python3 scripts/generate-settings.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
