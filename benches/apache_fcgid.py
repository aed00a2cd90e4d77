"""The shared-host path: Apache + mod_fcgid spawning ``.fcgi`` scripts, oxfcgi against flup.

A private httpd (tests/support/apache.py's: its own ServerRoot, port and runtime files,
``User www-data``, mpm_event) runs what ``oxfcgi config apache-fcgid`` prints for each script,
plus ``FcgidMaxProcessesPerClass`` (4 by default, as on the issue's machine). The two scripts
serve benches/apps.py's ``hello`` and differ only in their import, as a user's would:

    from oxfcgi import run; run(hello)
    from flup.server.fcgi import WSGIServer; WSGIServer(hello).run()

mod_fcgid runs scripts as www-data, which cannot enter /root where the benchmark venv lives, so
they run on Debian's ``/usr/bin/python3`` from a world-readable directory holding a copy of this
checkout's ``python/oxfcgi`` (the abi3 engine) and flup 1.0.3 (``pip install --target``).

:func:`measure` sends ``wrk -c16`` to each mount and reports req/s, p99, the CPU per request
of Apache's own processes and of the script processes mod_fcgid spawned (split by parentage:
everything under httpd that runs the script), and the RSS of each script process.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cpu import CpuProbe, descendants

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SYSTEM_PYTHON = "/usr/bin/python3"
PROCESSES = 4

SCRIPTS = {
    "oxfcgi": "from oxfcgi import run\nfrom apps import hello\n\nrun(hello)\n",
    "flup": "from flup.server.fcgi import WSGIServer\nfrom apps import hello\n\nWSGIServer(hello).run()\n",
}


@dataclass
class Row:
    """One script's figures through Apache."""

    name: str
    rps: float = 0.0
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    apache_cpu_us: float | None = None
    backend_cpu_us: float | None = None
    backend_processes: int = 0
    backend_rss_kb: list[int] = field(default_factory=list)
    note: str = ""


def _script_pids(httpd_pid: int, script: str) -> list[int]:
    pids = []
    for pid in descendants(httpd_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if script in cmd:
            pids.append(pid)
    return pids


def _is_script(pid: int) -> bool:
    try:
        return b".fcgi" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def make_site(venv_python: Path) -> Path:
    """A world-readable directory with oxfcgi, flup, benches/apps.py and the two scripts."""
    base = Path(tempfile.mkdtemp(prefix="oxfcgi-bench-apache-", dir="/tmp"))
    site = base / "site"
    site.mkdir()
    shutil.copytree(ROOT / "python" / "oxfcgi", site / "oxfcgi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(BENCH / "apps.py", site / "apps.py")
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), "flup==1.0.3"],
        check=True,
        timeout=300,
    )
    # pip compiled flup's modules; compile ours and the apps too (as a wheel install does), with
    # the interpreter the scripts run: Apache's user cannot write .pyc files here, so every
    # process would compile them at start (CPU, and 1-2 MB of the RSS compared).
    subprocess.run([SYSTEM_PYTHON, "-m", "compileall", "-q", str(site / "oxfcgi"), str(site / "apps.py")], check=True)
    for name, body in SCRIPTS.items():
        script = site / f"hello-{name}.fcgi"
        script.write_text(f"#!{SYSTEM_PYTHON}\nimport sys\nsys.path.insert(0, {str(site)!r})\n{body}")
        script.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    return base


def _config(site: Path) -> str:
    sys.path.insert(0, str(ROOT / "python"))
    from oxfcgi.config import ConfigOptions, generate

    parts = [
        f"FcgidMaxProcessesPerClass {PROCESSES}",
        f"FcgidMaxProcesses {PROCESSES * len(SCRIPTS)}",
        "FcgidMinProcessesPerClass 0",
    ]
    for name in SCRIPTS:
        text = generate(ConfigOptions(target="apache-fcgid", app=str(site / f"hello-{name}.fcgi"), prefix=f"/{name}"))
        parts.append(text)
    return "\n".join(parts)


def _measured(cmd: list, url: str, duration: float, httpd: int, script: str) -> Row:
    """One measured ``wrk`` run: req/s, p99, errors and the CPU per request of the script's
    processes and of Apache's own."""
    row = Row(script)
    scripts = CpuProbe(lambda: _script_pids(httpd, script))
    # Apache itself: httpd and its children, without any script process.
    web = CpuProbe(lambda: [p for p in descendants(httpd) if not _is_script(p)])
    scripts.start()
    web.start()
    out = subprocess.run([*cmd, f"-d{duration:g}s", url], capture_output=True, text=True, timeout=duration + 60).stdout
    backend_s, apache_s = scripts.stop(), web.stop()
    m = re.search(r"(\d+) requests in", out)
    row.requests = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    row.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if m:
        row.p99_ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    row.errors = int(m.group(1)) if m else 0
    if row.requests:
        row.backend_cpu_us = backend_s * 1e6 / row.requests
        row.apache_cpu_us = apache_s * 1e6 / row.requests
    time.sleep(0.5)
    return row


def measure(wrk: str, duration: float, warmup: float, venv_python: Path, log, repeat: int = 1) -> dict[str, Row]:
    """Both scripts through one private Apache; ``{name: Row}``. Each script gets a warm-up,
    then ``repeat`` measured ``wrk`` runs; req/s, p99 and both CPU figures are their medians."""
    sys.path.insert(0, str(ROOT))
    from tests.support.apache import start_apache

    base = make_site(venv_python)
    rows = {name: Row(name) for name in SCRIPTS}
    apache = None
    try:
        apache = start_apache(base / "httpd", _config(base / "site"), log_level="warn", timeout=30)
        httpd = apache.proc.pid
        for name, row in rows.items():
            script = f"hello-{name}.fcgi"
            url = f"http://127.0.0.1:{apache.port}/{name}/"
            first = apache.get(f"/{name}/")
            if first.status != 200:
                row.note = f"HTTP {first.status}: {first.body[:200]!r}"
                continue
            cmd = [wrk, "-t2", "-c16", "--latency", "--timeout", "10s"]
            subprocess.run([*cmd, f"-d{max(1, round(warmup))}s", url], capture_output=True, timeout=warmup + 60)
            time.sleep(0.5)
            runs = [_measured(cmd, url, duration, httpd, script) for _ in range(repeat)]
            row.requests = sum(r.requests for r in runs)
            row.errors = sum(r.errors for r in runs)
            row.rps = statistics.median(r.rps for r in runs)
            for attr in ("p99_ms", "backend_cpu_us", "apache_cpu_us"):
                values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
                setattr(row, attr, statistics.median(values) if values else None)
            pids = _script_pids(httpd, script)
            row.backend_processes = len(pids)
            row.backend_rss_kb = [_rss_kb(p) for p in pids]
            log(
                f"Apache mod_fcgid {name}: {row.rps:.0f} req/s, backend CPU "
                f"{row.backend_cpu_us or 0:.0f} us/req, Apache {row.apache_cpu_us or 0:.0f} us/req, "
                f"{row.backend_processes} processes, RSS {row.backend_rss_kb} kB"
            )
    except Exception as e:  # a bench cell reports, it does not abort the run
        for row in rows.values():
            row.note = row.note or f"failed: {str(e).splitlines()[0][:120]}"
        log(f"Apache mod_fcgid: {e}")
    finally:
        if apache:
            apache.stop()
        shutil.rmtree(base, ignore_errors=True)
    return rows
