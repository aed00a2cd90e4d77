"""CPU time of a server's processes: the figure the benchmarks compare.

Requests per second swing ±30 % between runs on a small shared machine; the CPU a server
spends per request moves far less. :class:`CpuProbe` sums utime + stime (all threads, from
``/proc/PID/stat``) over a server's process group — the master, its workers and their
threads — at the start and at the end of a measurement; processes that exit in between are
counted up to their last sample. Only Linux's /proc is read; nothing is started.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    """Every live process of process group ``pgid``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuProbe:
    """CPU seconds spent by a set of processes between :meth:`start` and :meth:`stop`.

    ``members()`` returns the pids to count (e.g. ``lambda: group_pids(pgid)``); it is
    called at both ends, so workers started in between are counted from zero."""

    def __init__(self, members):
        self.members = members
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {p: c for p in self.members() if (c := cpu_seconds(p)) is not None}

    def stop(self) -> float:
        total = 0.0
        now = {p: c for p in self.members() if (c := cpu_seconds(p)) is not None}
        for pid, used in now.items():
            total += used - self.before.get(pid, 0.0)
        return total
