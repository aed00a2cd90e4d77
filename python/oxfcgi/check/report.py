"""The doctor's report: findings in the order found, laid out for a terminal."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

FAIL, WARN, OK, NOTE, SKIP = "FAIL", "WARN", "ok", "note", "skip"


@dataclass
class Finding:
    """One line of the report. ``level`` is FAIL, WARN, ok, note or skip."""

    level: str
    title: str
    saw: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)


class Report:
    """Findings in the order found; :meth:`render` lays them out for a terminal."""

    def __init__(self, header: str = "") -> None:
        self.header = header
        self.findings: list[Finding] = []

    def add(self, level: str, title: str, saw: Iterable[str] | str = (), fix: Iterable[str] | str = ()) -> Finding:
        f = Finding(
            level, title, [saw] if isinstance(saw, str) else list(saw), [fix] if isinstance(fix, str) else list(fix)
        )
        self.findings.append(f)
        return f

    def fail(self, title: str, saw: Iterable[str] | str = (), fix: Iterable[str] | str = ()) -> Finding:
        return self.add(FAIL, title, saw, fix)

    def warn(self, title: str, saw: Iterable[str] | str = (), fix: Iterable[str] | str = ()) -> Finding:
        return self.add(WARN, title, saw, fix)

    def ok(self, title: str, saw: Iterable[str] | str = ()) -> Finding:
        return self.add(OK, title, saw)

    def note(self, title: str, saw: Iterable[str] | str = ()) -> Finding:
        return self.add(NOTE, title, saw)

    def skip(self, title: str, saw: Iterable[str] | str = ()) -> Finding:
        return self.add(SKIP, title, saw)

    def levels(self, level: str) -> list[Finding]:
        return [f for f in self.findings if f.level == level]

    @property
    def exit_status(self) -> int:
        """1 if any finding is FAIL, else 0."""
        return 1 if self.levels(FAIL) else 0

    def render(self) -> str:
        lines = []
        if self.header:
            lines += [self.header, ""]
        for f in self.findings:
            if f.level not in (FAIL, WARN):
                continue
            lines.append(f"{f.level:<5} {f.title}")
            for label, items in (("saw:", f.saw), ("fix:", f.fix)):
                for i, item in enumerate(items):
                    for j, text in enumerate(str(item).splitlines() or [""]):
                        prefix = label if i == 0 and j == 0 else ""
                        lines.append(f"      {prefix:<5} {text}".rstrip())
            lines.append("")
        for level, heading in ((OK, "Passed:"), (NOTE, "Notes:"), (SKIP, "Not checked:")):
            group = self.levels(level)
            if not group:
                continue
            lines.append(heading)
            for f in group:
                lines.append(f"  {f.title}")
                for item in f.saw:
                    for text in str(item).splitlines():
                        lines.append(f"      {text}")
            lines.append("")
        n_fail, n_warn = len(self.levels(FAIL)), len(self.levels(WARN))
        if n_fail:
            verdict = f"{n_fail} problem{'s' if n_fail != 1 else ''} that would make it fail"
        else:
            verdict = "nothing that would make it fail"
        if n_warn:
            verdict += f", {n_warn} warning{'s' if n_warn != 1 else ''}"
        lines.append(f"Result: {verdict} (exit status {self.exit_status}).")
        return "\n".join(lines) + "\n"
