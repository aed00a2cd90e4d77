"""Instructions per request, counted by valgrind's callgrind: the figure that does not move
with the machine's noise.

``oxfcgi serve benches.apps:hello`` runs under ``valgrind --tool=callgrind`` (the real
interpreter, not a shim that execs it, or valgrind would measure the shim); after a warm-up
the counters are zeroed (``callgrind_control -z``), ``requests`` requests are sent by
oxfcgi-loadgen, and the counters dumped (``callgrind_control -d``). The dump is split by the
object each instruction ran in: the engine (``_oxfcgi.abi3.so``), Python (libpython and the
interpreter binary), libc and the dynamic loader, and the rest. Kernel time (system calls,
wake-ups) is not counted: ``CPU µs per request`` in the main table covers it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

GROUPS = (
    ("engine (Rust)", ("_oxfcgi",)),
    ("Python", ("libpython", "python3")),
    ("libc + loader", ("libc.so", "ld-linux", "libm.so", "libgcc")),
)


def _group(obj: str) -> str:
    for name, needles in GROUPS:
        if any(n in obj for n in needles):
            return name
    return "other"


def split_by_object(dump: Path) -> tuple[int, Counter]:
    """(total instructions, self instructions per group) read from a callgrind dump.

    The dump's own format is parsed: ``ob=`` names the object of the function that follows,
    cost lines give its self cost, and the cost line after a ``calls=`` line is the inclusive
    cost of that call, which is skipped (it is counted where it was spent)."""
    names: dict[str, str] = {}
    total, groups = 0, Counter()
    obj = ""
    skip_next = False
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("ob=", "cob=")):
            ref = line.split("=", 1)[1].strip()
            m = re.match(r"\((\d+)\)\s*(.*)", ref)
            name = ref
            if m:
                if m.group(2):  # the first use of a compressed name defines it
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "")
            if line.startswith("ob="):
                obj = name
            continue
        if line.startswith("calls="):
            skip_next = True
            continue
        if line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                groups[_group(obj)] += int(parts[-1])
    if not total:
        total = sum(groups.values())
    return total, groups


def measure(python: str, loadgen: Path, run_dir: Path, env: dict, modes: dict[str, list[str]], requests: int, log):
    """``{mode: (instructions per request, {group: per request})}`` for each loadgen mode."""
    results = {}
    for mode, args in modes.items():
        slug = re.sub(r"[^a-z0-9]+", "-", mode.lower()).strip("-")
        sock = run_dir / f"callgrind-{slug}.sock"
        out = run_dir / f"callgrind-{slug}.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}.%p",
            python,
            "-m",
            "oxfcgi",
            "serve",
            "benches.apps:hello",
            "--bind",
            f"unix:{sock}",
        ]
        logf = open(run_dir / f"callgrind-{slug}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            if not sock.exists():
                raise RuntimeError(f"oxfcgi under valgrind did not start ({run_dir / f'callgrind-{slug}.log'})")
            base = [str(loadgen), f"unix:{sock}", *args, "-w", "0", "-d", "120"]
            subprocess.run([*base, "-n", str(requests // 3)], capture_output=True, timeout=300, check=True)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60, check=True)
            subprocess.run([*base, "-n", str(requests)], capture_output=True, timeout=600, check=True)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60, check=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
        dumps = sorted(run_dir.glob(f"callgrind-{slug}.out.*.1"))
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {mode}")
        total, groups = split_by_object(dumps[0])
        results[mode] = (total / requests, {g: n / requests for g, n in groups.items()})
        log(f"callgrind {mode}: {total / requests:,.0f} instructions per request")
    return results


def table(results: dict) -> str:
    names = [g for g, _ in GROUPS] + ["other"]
    lines = ["| mode | instructions per request | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for mode, (total, groups) in results.items():
        lines.append(f"| {mode} | {total:,.0f} | " + " | ".join(f"{groups.get(g, 0):,.0f}" for g in names) + " |")
    return "\n".join(lines)
