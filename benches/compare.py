#!/usr/bin/env python3
"""Benchmark oxfcgi against flup, uWSGI, fcgisgi, gunicorn and granian, in one command.

    python3 benches/compare.py [--quick] [--duration S] [--only NAME,...] [--callgrind]

What it does, one step after another, all on this machine's loopback and unix sockets:

1. Tools: installs ``wrk``, ``nginx``, ``valgrind``, ``apache2`` and ``libapache2-mod-fcgid``
   with apt-get if they are missing; builds the FastCGI load generator (``benches/loadgen``,
   release) if its binary is missing or older than its sources.
2. Peers: creates ``benches/.venv`` (from the interpreter running this script) and installs
   ``flup==1.0.3``, ``uwsgi`` (built from source; falls back to Debian's ``uwsgi`` +
   ``uwsgi-plugin-python3`` when the build fails), ``fcgisgi``, ``gunicorn``, ``granian`` and
   ``matplotlib`` (the chart) from PyPI. A peer that does not install is reported and its rows
   say why.
3. oxfcgi: when this checkout's engine is built (``python/oxfcgi``, which ``scripts/test.sh``
   builds in release mode) and newer than ``src/``, it is put on the venv's ``PYTHONPATH``;
   otherwise (a fresh checkout) ``pip install .`` builds a release wheel into the venv (a few
   minutes). ``--oxfcgi-from checkout|wheel`` forces one.
4. For every server and every app in ``benches/apps.py`` (hello, 10 KB, 1 MB, POST echo 10 KB,
   sleep 10 ms), it starts the server, then measures
   (a) through a test-private nginx (``worker_processes 2``; ``fastcgi_pass`` to the unix socket
       with ``fastcgi_keep_conn on`` and upstream ``keepalive 32`` for servers that keep FastCGI
       connections; ``proxy_pass`` over HTTP with keepalive for gunicorn and granian) with
       ``wrk -t2 -c16 -d{duration}s --latency``,
   (b) directly with ``oxfcgi-loadgen`` (16 connections; FastCGI servers only), and for hello
   (c) directly with a new connection per request (``--per-request``), 1 and 16 at a time: the
       path of mod_fcgid, lighttpd and nginx without ``fastcgi_keep_conn``,
   then stops it. Every cell also gives the server's **CPU µs per request**: utime + stime of
   its whole process group over the measured run (benches/cpu.py), the figure that moves least
   with the machine's noise. The cells the issue's targets compare (``TARGET_CELLS``) are
   measured ``--repeat`` times (3 by default) after one warm-up, and each figure is the median.
   nginx answering by itself (``return 200 "Hello, World!"``) is the ceiling.
5. Apache mod_fcgid (benches/apache_fcgid.py): a private Apache spawning the hello ``.fcgi``
   for oxfcgi and for flup (only the import differs), ``wrk -c16``; req/s, CPU per request of
   the backends and of Apache itself, RSS per backend process.
6. Memory: the idle RSS of an oxfcgi process next to a bare python that imported the same app,
   RSS after 10 k and after 1 M requests, and the peak RSS increase of oxfcgi while a 100 MB
   upload is read in 64 KB chunks.
7. callgrind (benches/callgrind.py): instructions per request of oxfcgi (hello, one kept
   connection and a connection per request), split into the engine, Python and libc.
   ``--callgrind`` runs only this and prints it.
8. Prints one markdown table (rows: server x mode; columns: the apps with req/s, p99, CPU per
   request and the ratio to oxfcgi in the same mode), the issue's targets as PASS/FAIL rows, the
   Apache, memory and callgrind figures, writes the same to ``benches/results.md`` with the
   machine's details, and draws ``benches/results.png`` (benches/chart.py).

Every process it starts runs in its own process group and is stopped (SIGTERM, then SIGKILL)
when its cell ends, on errors and on Ctrl-C. Each measurement has a timeout.

``--only`` takes server keys (oxfcgi-1, oxfcgi-2, oxfcgi-t1, uwsgi, uwsgi-1, flup-thread,
flup-fork, fcgisgi, gunicorn, granian, nginx), app keys (hello, body10k, body1m, echo, sleep10),
``memory``, ``nomemory``, ``apache`` and ``callgrind``; each group left unnamed means all of it
(e.g. ``--only oxfcgi-1,uwsgi,hello``). Only a full run draws the chart.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cpu import CpuProbe, group_pids

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
LOADGEN_DIR = BENCH / "loadgen"
LOADGEN_TARGET = LOADGEN_DIR / "target"
LOADGEN = LOADGEN_TARGET / "release" / "oxfcgi-loadgen"
RESULTS = BENCH / "results.md"

PEER_SPECS = {
    "matplotlib": "matplotlib",
    "flup": "flup==1.0.3",
    "uwsgi": "uwsgi",
    "fcgisgi": "fcgisgi",
    "gunicorn": "gunicorn",
    "granian": "granian",
    "uvicorn": "uvicorn[standard]",
    "a2wsgi": "a2wsgi",
    "fastapi": "fastapi",
}
# Distribution names as importlib.metadata knows them.
PEER_DISTS = {
    "matplotlib": "matplotlib",
    "flup": "flup",
    "uwsgi": "uWSGI",
    "fcgisgi": "fcgisgi",
    "gunicorn": "gunicorn",
    "granian": "granian",
    "uvicorn": "uvicorn",
    "a2wsgi": "a2wsgi",
    "fastapi": "fastapi",
}

CONNECTIONS = 16
WRK_THREADS = 2
ECHO_BYTES = 10 * 1024
UPLOAD_BYTES = 100_000_000


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Processes: every child in its own process group, all stopped in `finally`.


class Proc:
    def __init__(
        self, name: str, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None, stdout=None
    ):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.log_file.write(f"$ {' '.join(map(str, cmd))}\n".encode())
        self.log_file.flush()
        self.popen = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=str(cwd or ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout or self.log_file,
            stderr=self.log_file,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        RUNNING.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 8.0) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        # start_new_session: the child leads its own process group, whose id is its pid (still
        # valid for the group's other members after the leader has exited).
        pgid = self.pid
        if self.alive():
            with _suppress():
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (forked workers included) is killed.
        with _suppress():
            os.killpg(pgid, signal.SIGKILL)
        with _suppress():
            self.popen.wait(timeout=5)
        self.log_file.close()

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


RUNNING: list[Proc] = []


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, subprocess.SubprocessError))


def stop_all() -> None:
    for p in list(reversed(RUNNING)):
        p.stop(grace=3.0)


def run(cmd, timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command to completion in its own process group, killing the group on timeout."""
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=kw.pop("stderr", subprocess.PIPE),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
        **kw,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        with _suppress():
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    cp = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if check and p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, p.args, out, err)
    return cp


def wait_unix(path: Path, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(1.0)
                s.connect(str(path))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {path} within {timeout:.0f} s:\n{proc.tail()}")


def wait_tcp(port: int, proc: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on 127.0.0.1:{port}:\n{proc.tail()}")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------
# Setup: apt tools, venv + peers, loadgen, oxfcgi.


def as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", "-n"] + cmd
    return cmd


_apt_updated = False


def apt_install(packages: list[str]) -> bool:
    """apt-get install; on failure, apt-get update once and try again."""
    global _apt_updated
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = as_root(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages])
    cp = run(cmd, timeout=900, check=False, env=env)
    if cp.returncode != 0 and not _apt_updated:
        log("apt-get update")
        run(as_root(["apt-get", "update", "-q"]), timeout=600, check=False, env=env)
        _apt_updated = True
        cp = run(cmd, timeout=900, check=False, env=env)
    if cp.returncode != 0:
        log(f"apt-get install {' '.join(packages)} failed:\n{(cp.stderr or '')[-800:]}")
        return False
    return True


def find_nginx() -> str | None:
    for c in ("/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"):
        if os.access(c, os.X_OK):
            return c
    return shutil.which("nginx")


def ensure_tools(notes: list[str]) -> tuple[str | None, str | None]:
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not find_nginx():
        missing.append("nginx")
    if not shutil.which("valgrind"):
        missing.append("valgrind")
    if not Path("/usr/lib/apache2/modules/mod_fcgid.so").exists():
        missing += ["apache2", "libapache2-mod-fcgid"]
    if missing:
        log(f"installing {', '.join(missing)} with apt-get")
        if not apt_install(missing):
            notes.append(f"apt-get could not install {', '.join(missing)}")
    wrk = shutil.which("wrk")
    nginx = find_nginx()
    if not wrk:
        notes.append("wrk is missing: no measurements through nginx")
    if not nginx:
        notes.append("nginx is missing: no measurements through nginx")
    return wrk, nginx


def newest_mtime(paths) -> float:
    newest = 0.0
    for p in paths:
        p = Path(p)
        files = p.rglob("*") if p.is_dir() else [p]
        for f in files:
            if f.is_file() and "target" not in f.parts:
                newest = max(newest, f.stat().st_mtime)
    return newest


def ensure_loadgen() -> None:
    sources = [LOADGEN_DIR / "src", LOADGEN_DIR / "Cargo.toml", ROOT / "src" / "protocol"]
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= newest_mtime(sources):
        return
    log("building benches/loadgen (cargo build --release)")
    env = dict(os.environ, CARGO_TARGET_DIR=str(LOADGEN_TARGET))
    cp = run(
        ["cargo", "build", "--release", "--manifest-path", LOADGEN_DIR / "Cargo.toml"],
        timeout=1800,
        check=False,
        env=env,
    )
    if cp.returncode != 0 or not LOADGEN.exists():
        raise SystemExit(f"building the load generator failed:\n{cp.stderr[-3000:]}")


def venv_has(dist: str) -> str | None:
    """The version of `dist` installed in the venv, or None."""
    cp = run(
        [
            VENV_PY,
            "-c",
            "import importlib.metadata as m, sys\n"
            "try: print(m.version(sys.argv[1]))\n"
            "except m.PackageNotFoundError: pass",
            dist,
        ],
        timeout=60,
        check=False,
    )
    v = (cp.stdout or "").strip()
    return v or None


def ensure_venv(peers_wanted: set[str], notes: list[str]) -> dict[str, str]:
    """Create the venv and install the peers; returns {peer: version} for those installed."""
    if not VENV_PY.exists():
        log(f"creating {VENV.relative_to(ROOT)} with {sys.executable}")
        run([sys.executable, "-m", "venv", VENV], timeout=300)
        run([VENV_PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], timeout=600, check=False)
    versions: dict[str, str] = {}
    for peer in sorted(peers_wanted):
        dist = PEER_DISTS[peer]
        have = venv_has(dist)
        if have is None:
            spec = PEER_SPECS[peer]
            log(f"pip install {spec}" + (" (builds from source; about a minute)" if peer == "uwsgi" else ""))
            cp = run([VENV_PY, "-m", "pip", "install", "-q", spec], timeout=1800, check=False)
            if cp.returncode != 0:
                reason = (cp.stderr or cp.stdout or "").strip().splitlines()[-3:]
                notes.append(f"pip install {spec} failed: {' / '.join(reason)}")
                log(f"pip install {spec} failed")
            have = venv_has(dist)
        if have:
            versions[peer] = have
    return versions


@dataclass
class Uwsgi:
    """How to run uWSGI: the venv's build, or Debian's binary with its python3 plugin."""

    binary: str
    plugin_args: list[str]
    chdir: Path
    module_prefix: str
    version: str


def ensure_uwsgi(versions: dict[str, str], run_dir: Path, notes: list[str]) -> Uwsgi | None:
    venv_uwsgi = VENV / "bin" / "uwsgi"
    if "uwsgi" in versions and venv_uwsgi.exists():
        return Uwsgi(str(venv_uwsgi), [], ROOT, "benches.apps", versions["uwsgi"])
    # Fallback: Debian's uwsgi + python3 plugin (Debian's /usr/bin/python3). The apps are copied
    # to a world-readable directory so uWSGI can import them whatever user it runs as.
    if not (os.access("/usr/bin/uwsgi", os.X_OK) and Path("/usr/lib/uwsgi/plugins/python3_plugin.so").exists()):
        log("uwsgi did not install from PyPI; trying Debian's uwsgi + uwsgi-plugin-python3")
        apt_install(["uwsgi", "uwsgi-plugin-python3"])
    if os.access("/usr/bin/uwsgi", os.X_OK):
        apps_dir = run_dir / "uwsgi-apps"
        apps_dir.mkdir(exist_ok=True)
        shutil.copy(BENCH / "apps.py", apps_dir / "apps.py")
        os.chmod(apps_dir, 0o755)
        os.chmod(apps_dir / "apps.py", 0o644)
        cp = run(["/usr/bin/uwsgi", "--version"], timeout=30, check=False)
        version = (cp.stdout or "").strip() + " (Debian package)"
        notes.append("uWSGI: Debian's package with uwsgi-plugin-python3 (PyPI build failed)")
        return Uwsgi("/usr/bin/uwsgi", ["--plugin", "python3"], apps_dir, "apps", version)
    notes.append("uWSGI: neither the PyPI build nor Debian's package is available")
    return None


@dataclass
class Oxfcgi:
    env: dict
    version: str
    has_workers: bool
    source: str


def ensure_oxfcgi(mode: str, notes: list[str]) -> Oxfcgi:
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    if mode == "auto":
        # A fresh checkout has no built engine: build a wheel; else measure the built one
        # unless src/ changed since.
        engine = sorted((ROOT / "python" / "oxfcgi").glob("_oxfcgi*.so"))
        fresh = engine and max(e.stat().st_mtime for e in engine) >= newest_mtime([ROOT / "src", ROOT / "Cargo.toml"])
        mode = "checkout" if fresh else "wheel"
        log(f"--oxfcgi-from auto: using {mode}")
    if mode == "wheel":
        log("pip install . into benches/.venv (builds a release wheel of this checkout)")
        # Its own cargo target dir: does not touch (or wait on) the checkout's target/.
        build_env = dict(os.environ, CARGO_TARGET_DIR=str(VENV / "cargo-target"))
        cp = run(
            [VENV_PY, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", ROOT],
            timeout=2400,
            check=False,
            env=build_env,
        )
        if cp.returncode != 0:
            raise SystemExit(f"pip install {ROOT} failed:\n{(cp.stderr or '')[-3000:]}")
        env["PYTHONPATH"] = str(ROOT)
        source = "wheel built from this checkout (pip install .)"
    else:
        engine = sorted((ROOT / "python" / "oxfcgi").glob("_oxfcgi*.so"))
        if not engine:
            raise SystemExit(
                "python/oxfcgi has no built engine (_oxfcgi*.so): run "
                "`bash scripts/test.sh` or `pip install -e .` first, or use "
                "--oxfcgi-from wheel"
            )
        built = max(e.stat().st_mtime for e in engine)
        src = newest_mtime([ROOT / "src", ROOT / "Cargo.toml"])
        if src > built:
            msg = (
                "the engine in python/oxfcgi is older than src/ (rebuild it with "
                "`pip install -e .`, or use --oxfcgi-from wheel)"
            )
            notes.append("warning: " + msg)
            log("WARNING: " + msg)
        linked = run(["ldd", engine[-1]], timeout=60, check=False).stdout or ""
        if "libpython" in linked:
            msg = (
                f"{engine[-1].name} links libpython (built by plain `cargo build`, not maturin): under "
                "another interpreter (Debian's python3 in the mod_fcgid rows) it loads a second "
                "libpython, 2.4 MB more per process; rebuild it with `pip install -e .`"
            )
            notes.append("warning: " + msg)
            log("WARNING: " + msg)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), str(ROOT)])
        source = "this checkout's built engine (python/oxfcgi on PYTHONPATH)"
        # As pip does on install: without current .pyc files (PYTHONDONTWRITEBYTECODE, or
        # sources edited since) every process compiles its modules, which costs CPU at
        # start and about 1.7 MB of the RSS the memory rows measure.
        run([VENV_PY, "-m", "compileall", "-q", ROOT / "python" / "oxfcgi"], timeout=300, check=False)
        run([VENV_PY, "-m", "compileall", "-q", "-l", BENCH], timeout=300, check=False)  # the apps, not .venv
    cp = run(
        [VENV_PY, "-c", "import oxfcgi, sys; print(oxfcgi.__version__); print(oxfcgi.__file__)"],
        timeout=60,
        check=False,
        env=env,
    )
    if cp.returncode != 0:
        raise SystemExit(f"oxfcgi does not import in the venv:\n{cp.stderr}")
    version, where = cp.stdout.split()[:2]
    if mode == "checkout" and not Path(where).resolve().is_relative_to(ROOT / "python"):
        raise SystemExit(f"expected oxfcgi from {ROOT / 'python'}, the venv imports {where}")
    helptext = run([VENV_PY, "-m", "oxfcgi", "serve", "--help"], timeout=60, check=False, env=env).stdout
    has_workers = "--workers" in (helptext or "")
    if not has_workers:
        notes.append("oxfcgi has no `serve --workers` option yet: 2-worker rows are n/a")
    log(f"oxfcgi {version} from {where}; --workers {'available' if has_workers else 'not available'}")
    return Oxfcgi(env, version, has_workers, source)


# ------------------------------------------------------------------------------------------
# Servers and apps.


@dataclass
class Scenario:
    key: str
    title: str
    app: str
    post: bool = False


SCENARIOS = [
    Scenario("hello", "hello", "hello"),
    Scenario("body10k", "10 KB", "body10k"),
    Scenario("body1m", "1 MB", "body1m"),
    Scenario("echo", "POST echo 10 KB", "echo", post=True),
    Scenario("sleep10", "sleep 10 ms", "sleep10"),
]

#: The apps of the ASGI table (benches/asgi_apps.py), served by the ASGI servers only.
ASGI_SCENARIOS = [
    Scenario("asgi_hello", "ASGI hello", "asgi_hello"),
    Scenario("fastapi_json", "FastAPI JSON", "fastapi_json"),
]


#: A new FastCGI connection for every request (FCGI_KEEP_CONN unset): mod_fcgid, lighttpd
#: and nginx's default. Mode name -> concurrent connections; measured for these apps only.
NEW_CONNECTION_MODES = {"newconn1": 1, "newconn16": 16}
NEW_CONNECTION_SCENARIOS = ("hello", "asgi_hello")
MODE_TITLES = {
    "nginx": "nginx + wrk",
    "direct": "direct (loadgen)",
    "newconn1": "direct, a connection per request, 1 at a time",
    "newconn16": "direct, a connection per request, 16 at a time",
}

#: (server key, mode, app) of every cell the issue's targets compare (:func:`targets`): each is
#: measured ``--repeat`` times and reported as the median of each figure.
TARGET_CELLS = frozenset(
    [(k, m, "hello") for k in ("oxfcgi-1", "uwsgi-1") for m in NEW_CONNECTION_MODES]
    + [(k, "direct", a) for k in ("oxfcgi-1", "oxfcgi-2", "uwsgi-1", "uwsgi") for a in ("hello", "body10k", "echo")]
    + [(k, "nginx", "hello") for k in ("oxfcgi-1", "oxfcgi-2", "uwsgi-1", "uwsgi")]
    + [(k, "nginx", "sleep10") for k in ("oxfcgi-2", "granian")]
)


@dataclass
class Server:
    key: str
    label: str
    proto: str  # "fcgi", "http" or "static"
    keep_conn: bool  # keeps connections between requests (FastCGI FCGI_KEEP_CONN / HTTP keep-alive)
    needs: str | None  # peer package
    note: str = ""
    #: "asgi": serves the ASGI apps (the ASGI table); oxfcgi-a2wsgi too, through a2wsgi.
    interface: str = "wsgi"


SERVERS = [
    Server("oxfcgi-1", "oxfcgi, 1 worker", "fcgi", True, None, "default threads"),
    Server("oxfcgi-2", "oxfcgi, 2 workers", "fcgi", True, None, "--workers 2, default threads"),
    Server("oxfcgi-t1", "oxfcgi, 1 worker, 1 thread", "fcgi", True, None, "--threads 1"),
    Server(
        "uwsgi",
        "uWSGI, 2 processes",
        "fcgi",
        False,
        "uwsgi",
        "--fastcgi-socket --processes 2 --master; closes the connection after each request",
    ),
    Server(
        "uwsgi-1",
        "uWSGI, 1 process",
        "fcgi",
        False,
        "uwsgi",
        "--fastcgi-socket --processes 1 --master; closes the connection after each request",
    ),
    Server("flup-thread", "flup 1.0.3 threaded", "fcgi", True, "flup", "flup.server.fcgi.WSGIServer"),
    Server("flup-fork", "flup 1.0.3 fork", "fcgi", True, "flup", "flup.server.fcgi_fork.WSGIServer"),
    Server("fcgisgi", "fcgisgi", "fcgi", True, "fcgisgi", "run_wsgi_server, default thread pool"),
    Server("gunicorn", "gunicorn, 2 workers", "http", True, "gunicorn", "-w 2 -k gthread --threads 4"),
    Server("granian", "granian, 2 workers", "http", True, "granian", "--interface wsgi --workers 2"),
    Server("nginx", "nginx alone (ceiling)", "static", True, None, 'return 200 "Hello, World!"'),
    Server("oxfcgi-asgi", "oxfcgi ASGI, 1 worker", "fcgi", True, "fastapi", "one event loop", "asgi"),
    Server("oxfcgi-asgi-2", "oxfcgi ASGI, 2 workers", "fcgi", True, "fastapi", "--workers 2", "asgi"),
    Server(
        "oxfcgi-a2wsgi",
        "oxfcgi WSGI + a2wsgi, 1 worker",
        "fcgi",
        True,
        "a2wsgi",
        "a2wsgi.ASGIMiddleware on oxfcgi's WSGI side, default threads",
        "asgi",
    ),
    Server("fcgisgi-asgi", "fcgisgi ASGI", "fcgi", True, "fcgisgi", "run_asgi_server", "asgi"),
    Server(
        "uvicorn",
        "uvicorn, 2 workers",
        "http",
        True,
        "uvicorn",
        "uvicorn[standard] (uvloop, httptools) --workers 2",
        "asgi",
    ),
    Server("granian-asgi", "granian ASGI, 2 workers", "http", True, "granian", "--interface asgi --workers 2", "asgi"),
]


class Env:
    """Everything the cells need."""

    def __init__(self, args, run_dir: Path, wrk, nginx, ox: Oxfcgi, uwsgi: Uwsgi | None, peers: dict[str, str]):
        self.args = args
        self.run_dir = run_dir
        self.wrk = wrk
        self.nginx = nginx
        self.ox = ox
        self.uwsgi = uwsgi
        self.peers = peers
        self.counter = 0

    def path(self, name: str) -> Path:
        self.counter += 1
        return self.run_dir / f"{self.counter:03d}-{name}"


def server_unavailable(env: Env, srv: Server) -> str | None:
    if srv.key == "oxfcgi-2" and not env.ox.has_workers:
        return "n/a (no --workers yet)"
    if srv.key.startswith("uwsgi") and env.uwsgi is None:
        return "n/a (uWSGI not installed)"
    if srv.needs and srv.needs != "uwsgi" and srv.needs not in env.peers:
        return f"n/a ({srv.needs} not installed)"
    if srv.interface == "asgi" and "fastapi" not in env.peers:
        return "n/a (fastapi not installed)"
    if srv.proto != "fcgi" and (not env.wrk or not env.nginx):
        return "n/a (no wrk/nginx)"
    return None


def app_target(srv: Server, app: str) -> str:
    """The ``module:attr`` a server serves for scenario app ``app``."""
    if srv.key == "oxfcgi-a2wsgi":
        return f"benches.asgi_apps:wsgi_{app}"
    return f"benches.{'asgi_apps' if srv.interface == 'asgi' else 'apps'}:{app}"


def start_backend(env: Env, srv: Server, app: str, sock: Path) -> Proc:
    target = app_target(srv, app)
    logp = env.path(f"{srv.key}-{app}.log")
    venv_bin = VENV / "bin"
    if srv.key.startswith("oxfcgi"):
        cmd = [VENV_PY, "-m", "oxfcgi", "serve", target, "--bind", f"unix:{sock}", "--socket-mode", "666"]
        if srv.key == "oxfcgi-t1":
            cmd += ["--threads", "1"]
        elif env.args.oxfcgi_threads:
            cmd += ["--threads", str(env.args.oxfcgi_threads)]
        if srv.key in ("oxfcgi-2", "oxfcgi-asgi-2"):
            cmd += ["--workers", "2"]
        proc = Proc(srv.key, cmd, logp, env=env.ox.env)
    elif srv.key.startswith("uwsgi"):
        u = env.uwsgi
        cmd = [
            u.binary,
            *u.plugin_args,
            "--fastcgi-socket",
            sock,
            "--chmod-socket=666",
            "--processes",
            "1" if srv.key == "uwsgi-1" else "2",
            "--master",
            "--chdir",
            u.chdir,
            "--module",
            f"{u.module_prefix}:{app}",
            "--need-app",
            "--disable-logging",
            "--die-on-term",
            "--listen",
            "128",
        ]
        proc = Proc(srv.key, cmd, logp, cwd=u.chdir)
    elif srv.key in ("flup-thread", "flup-fork", "fcgisgi", "fcgisgi-asgi"):
        cmd = [VENV_PY, BENCH / "peer_servers.py", srv.key, target, sock]
        proc = Proc(srv.key, cmd, logp)
    elif srv.key == "gunicorn":
        cmd = [
            venv_bin / "gunicorn",
            "-w",
            "2",
            "-k",
            "gthread",
            "--threads",
            "4",
            "--bind",
            f"unix:{sock}",
            "--chdir",
            ROOT,
            "--log-level",
            "warning",
            "--keep-alive",
            "75",
            target,
        ]
        proc = Proc(srv.key, cmd, logp)
    elif srv.key == "uvicorn":
        cmd = [
            venv_bin / "uvicorn",
            "--workers",
            "2",
            "--uds",
            sock,
            "--no-access-log",
            "--log-level",
            "warning",
            "--app-dir",
            ROOT,
            target,
        ]
        proc = Proc(srv.key, cmd, logp, cwd=ROOT)
    elif srv.key in ("granian", "granian-asgi"):
        cmd = [
            venv_bin / "granian",
            "--interface",
            "asgi" if srv.key == "granian-asgi" else "wsgi",
            "--workers",
            "2",
            "--uds",
            sock,
            "--uds-permissions",
            "438",
            "--no-log",
            target,
        ]
        proc = Proc(srv.key, cmd, logp)
    else:
        raise ValueError(srv.key)
    wait_unix(sock, proc)
    return proc


NGINX_CONF = """\
# Written by benches/compare.py for one measurement; everything lives under {prefix}.
daemon off;
master_process on;
worker_processes 2;
{user_line}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp_client;
    fastcgi_temp_path {prefix}/tmp_fastcgi;
    proxy_temp_path {prefix}/tmp_proxy;
    uwsgi_temp_path {prefix}/tmp_uwsgi;
    scgi_temp_path {prefix}/tmp_scgi;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_buffer_size 128k;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
{upstream}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        server_name localhost;
        location / {{
{location}
        }}
    }}
}}
"""

FASTCGI_PARAMS = """\
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param DOCUMENT_ROOT $document_root;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param HTTP_HOST $host;"""


def start_nginx(env: Env, srv: Server, sock: Path | None) -> tuple[Proc, int]:
    prefix = env.path(f"nginx-{srv.key}")
    prefix.mkdir()
    port = free_port()
    if srv.proto == "static":
        upstream = ""
        location = '            default_type text/plain;\n            return 200 "Hello, World!";'
    elif srv.proto == "fcgi":
        keep = "        keepalive 32;\n        keepalive_requests 1000000;\n" if srv.keep_conn else ""
        upstream = f"    upstream backend {{\n        server unix:{sock};\n{keep}    }}"
        location = (
            FASTCGI_PARAMS
            + "\n"
            + (
                "            fastcgi_pass backend;\n"
                + ("            fastcgi_keep_conn on;\n" if srv.keep_conn else "")
                + "            fastcgi_buffer_size 32k;\n"
                "            fastcgi_buffers 32 32k;\n"
                "            fastcgi_read_timeout 30s;\n"
                "            fastcgi_send_timeout 30s;"
            )
        )
    else:
        upstream = (
            f"    upstream backend {{\n        server unix:{sock};\n"
            "        keepalive 32;\n        keepalive_requests 1000000;\n    }"
        )
        location = (
            "            proxy_pass http://backend;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $host;\n"
            "            proxy_buffer_size 32k;\n"
            "            proxy_buffers 32 32k;\n"
            "            proxy_read_timeout 30s;\n"
            "            proxy_send_timeout 30s;"
        )
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            port=port,
            upstream=upstream,
            location=location,
            user_line="user root;" if os.geteuid() == 0 else "",
        )
    )
    proc = Proc("nginx", [env.nginx, "-p", prefix, "-c", conf, "-e", prefix / "error.log"], prefix / "stdout.log")
    proc.prefix = prefix
    wait_tcp(port, proc)
    return proc, port


# ------------------------------------------------------------------------------------------
# Measurements.


@dataclass
class Result:
    rps: float = 0.0
    p50: float | None = None
    p99: float | None = None
    errors: int = 0
    requests: int = 0
    note: str = ""  # why there is no number
    extra: dict = field(default_factory=dict)
    #: CPU microseconds per request of the server's processes, and of the web server's.
    cpu_us: float | None = None
    web_cpu_us: float | None = None

    @property
    def ok(self) -> bool:
        return not self.note and self.requests > 0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> Result:
    r = Result()
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        r.note = "wrk printed no result"
        return r
    r.rps = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    r.requests = int(m.group(1)) if m else 0
    for pct, attr in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)\s*$", out, re.M)
        if m:
            setattr(r, attr, _ms(m.group(1)))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r.errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r.errors += int(m.group(1))
    return r


def per_request_us(seconds: float, r: Result) -> float | None:
    return seconds * 1e6 / r.requests if r.requests else None


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_of(runs: list[Result]) -> Result:
    """One Result from repeated measurements of a cell: each figure (req/s, p50, p99, CPU per
    request) is its own median over the runs that succeeded; errors add up. A run that failed
    makes the cell fail with its note. ``extra["runs_rps"]`` keeps every run's req/s."""
    failed = [r for r in runs if not r.ok]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    by_rps = sorted(runs, key=lambda r: r.rps)
    r = Result(
        rps=statistics.median(x.rps for x in runs),
        p50=_median([x.p50 for x in runs]),
        p99=_median([x.p99 for x in runs]),
        errors=sum(x.errors for x in runs),
        requests=sum(x.requests for x in runs),
        extra=dict(by_rps[len(by_rps) // 2].extra),
        cpu_us=_median([x.cpu_us for x in runs]),
        web_cpu_us=_median([x.web_cpu_us for x in runs]),
    )
    r.extra["runs_rps"] = [round(x.rps, 1) for x in runs]
    for x in runs:
        if x.extra.get("first_error"):
            r.extra.setdefault("first_error", x.extra["first_error"])
    return r


def repeated(measured, repeat: int, pause: float = 0.0) -> Result:
    """``measured()`` ``repeat`` times (``pause`` seconds between runs), stopping at the first
    run that fails; the runs' medians (:func:`median_of`)."""
    runs = [measured()]
    while len(runs) < repeat and runs[-1].ok:
        time.sleep(pause)
        runs.append(measured())
    return median_of(runs)


def run_wrk(
    env: Env,
    port: int,
    sc: Scenario,
    probes: tuple[CpuProbe | None, CpuProbe | None] = (None, None),
    repeat: int = 1,
) -> Result:
    """wrk through nginx on ``port``: a warm-up run, then ``repeat`` measured runs (their
    medians, :func:`median_of`); ``probes`` count the backend's and nginx's CPU over each."""
    url = f"http://127.0.0.1:{port}/"
    base = [env.wrk, f"-t{WRK_THREADS}", f"-c{env.args.connections}", "--latency", "--timeout", "10s"]
    if sc.post:
        lua = env.run_dir / "post.lua"
        if not lua.exists():
            lua.write_text(
                'wrk.method = "POST"\n'
                f'wrk.body = string.rep("a", {ECHO_BYTES})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            )
        base += ["-s", lua]
    if env.args.warmup > 0:
        run(base + [f"-d{max(1, round(env.args.warmup))}s", url], timeout=env.args.warmup + 40, check=False)
        # wrk closing its connections aborts requests nginx had in flight; let the server finish
        # them so they do not count against the measured run's concurrency.
        time.sleep(0.5)
    backend_probe, web_probe = probes

    def measured() -> Result:
        for probe in probes:
            if probe:
                probe.start()
        cp = run(base + [f"-d{env.args.duration:g}s", url], timeout=env.args.duration + 60, check=False)
        r = parse_wrk(cp.stdout or "")
        if backend_probe:
            r.cpu_us = per_request_us(backend_probe.stop(), r)
        if web_probe:
            r.web_cpu_us = per_request_us(web_probe.stop(), r)
        if r.note:
            r.note = f"wrk failed: {(cp.stderr or cp.stdout or '').strip()[-200:]}"
        return r

    # Between runs too, as after the warm-up: requests wrk aborted finish first.
    return repeated(measured, repeat, pause=0.5)


def run_loadgen(
    env: Env,
    sock: Path,
    sc: Scenario,
    keep_conn: bool,
    probe: CpuProbe | None = None,
    connections: int | None = None,
    repeat: int = 1,
) -> Result:
    """oxfcgi-loadgen against ``sock``: a warm-up run, then ``repeat`` measured runs (their
    medians, :func:`median_of`; ``probe`` counts the server's CPU over each measured run only)."""

    def command(duration: float) -> list:
        cmd = [
            LOADGEN,
            f"unix:{sock}",
            "-c",
            connections or env.args.connections,
            "-d",
            duration,
            "-w",
            0,
            "--json",
            "--timeout",
            "10",
        ]
        cmd.append("--keep-conn" if keep_conn else "--per-request")
        if sc.post:
            cmd += ["--method", "POST", "--body-size", ECHO_BYTES]
        return cmd

    def measured() -> Result:
        if probe:
            probe.start()
        cp = run(command(env.args.duration), timeout=env.args.duration + 60, check=False)
        spent = probe.stop() if probe else None
        try:
            data = json.loads((cp.stdout or "").strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Result(note=f"loadgen failed: {(cp.stderr or cp.stdout or '').strip()[-200:]}")
        r = Result(
            rps=data["rps"],
            p50=data["p50_ms"],
            p99=data["p99_ms"],
            errors=data["errors"],
            requests=data["requests"],
            extra=data,
        )
        if spent is not None:
            r.cpu_us = per_request_us(spent, r)
        if data["errors"] and data.get("first_error"):
            r.extra["first_error"] = data["first_error"]
        return r

    if env.args.warmup > 0:
        run(command(env.args.warmup), timeout=env.args.warmup + 60, check=False)
    return repeated(measured, repeat)


def problem_line(path: Path) -> str | None:
    """The last warning/error line of a log file, shortened, or None."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    pat = re.compile(r"\[(error|crit|alert|emerg|warn)\]|WARNING|ERROR|Traceback|error", re.I)
    for line in reversed(lines):
        if pat.search(line):
            return line.strip()[:300]
    return None


def repeats(env: Env, srv: Server, mode: str, sc: Scenario) -> int:
    """How many measured runs a cell gets: ``--repeat`` for the targets' cells, else one."""
    return env.args.repeat if (srv.key, mode, sc.key) in TARGET_CELLS else 1


def measure_server(env: Env, srv: Server, scenarios: list[Scenario], results: dict) -> None:
    why = server_unavailable(env, srv)
    for sc in scenarios:
        modes = ["nginx"] + (["direct"] if srv.proto == "fcgi" else [])
        if srv.proto == "fcgi" and sc.key in NEW_CONNECTION_SCENARIOS:
            modes += list(NEW_CONNECTION_MODES)
        if why:
            for mode in modes:
                results[(srv.key, mode, sc.key)] = Result(note=why)
            continue
        if srv.proto == "static" and sc.key != "hello":
            results[(srv.key, "nginx", sc.key)] = Result(note="—")
            continue
        log(f"{srv.label}: {sc.title}")
        sock = env.run_dir / f"{srv.key}.sock"
        backend = nginx = None
        try:
            if srv.proto != "static":
                with _suppress():
                    sock.unlink()
                backend = start_backend(env, srv, sc.app, sock)
            backend_probe = CpuProbe(lambda b=backend: group_pids(b.pid)) if backend else None
            if env.wrk and env.nginx:
                nginx, port = start_nginx(env, srv, sock if backend else None)
                web_probe = CpuProbe(lambda n=nginx: group_pids(n.pid))
                r = results[(srv.key, "nginx", sc.key)] = run_wrk(
                    env, port, sc, (backend_probe, web_probe), repeat=repeats(env, srv, "nginx", sc)
                )
                nginx.stop()
                if r.errors:
                    r.extra["first_error"] = (
                        problem_line(nginx.prefix / "error.log")
                        or (backend and problem_line(backend.log_path))
                        or "wrk: non-2xx responses or socket errors"
                    )
                nginx = None
            else:
                results[(srv.key, "nginx", sc.key)] = Result(note="n/a (no wrk/nginx)")
            if srv.proto == "fcgi":
                runs = [("direct", srv.keep_conn, None)]
                runs += [(m, False, c) for m, c in NEW_CONNECTION_MODES.items() if m in modes]
                for mode, keep, connections in runs:
                    r = results[(srv.key, mode, sc.key)] = run_loadgen(
                        env, sock, sc, keep, backend_probe, connections=connections, repeat=repeats(env, srv, mode, sc)
                    )
                    if r.errors and backend:
                        hint = problem_line(backend.log_path)
                        if hint:
                            r.extra["first_error"] = f"{r.extra.get('first_error')}; server log: {hint}"
            if backend and not backend.alive():
                for mode in modes:
                    r = results.get((srv.key, mode, sc.key))
                    if r is not None:
                        r.extra["crashed"] = True
                log(f"  {srv.key} exited during the run:\n{backend.tail()}")
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            log(f"  failed: {e}")
            for mode in modes:
                results.setdefault((srv.key, mode, sc.key), Result(note=f"failed: {str(e).splitlines()[0][:80]}"))
        finally:
            if nginx:
                nginx.stop()
            if backend:
                backend.stop()
        for mode in modes:
            r = results.get((srv.key, mode, sc.key))
            if r and r.ok:
                cpu = f"  CPU {r.cpu_us:.1f} us/req" if r.cpu_us is not None else ""
                if r.extra.get("runs_rps"):
                    cpu += f"  (median of req/s {r.extra['runs_rps']})"
                log(f"  {mode:9s} {r.rps:10.1f} req/s  p99 {fmt_ms(r.p99)}  errors {r.errors}{cpu}")


# ------------------------------------------------------------------------------------------
# Memory.


def rss_kb(pid: int, field_name: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_memory(env: Env) -> dict:
    mem: dict = {}
    sock = env.run_dir / "mem.sock"
    # 1. Idle RSS: oxfcgi (one process) vs a bare python that imported the same app.
    ox = bare = None
    try:
        with _suppress():
            sock.unlink()
        ox = Proc(
            "oxfcgi-mem",
            [VENV_PY, "-m", "oxfcgi", "serve", "benches.apps:hello", "--bind", f"unix:{sock}"],
            env.path("mem-oxfcgi.log"),
            env=env.ox.env,
        )
        wait_unix(sock, ox)
        time.sleep(1.0)
        mem["oxfcgi_fresh_kb"] = rss_kb(ox.pid)
        run([LOADGEN, f"unix:{sock}", "-c", "4", "-d", "2", "-w", "0", "--json"], timeout=60, check=False)
        time.sleep(1.0)
        mem["oxfcgi_idle_kb"] = rss_kb(ox.pid)
        ox.stop()
        ox = None
        if env.ox.has_workers:
            # The same, as a prefork worker (--workers 2): the largest worker's RSS.
            with _suppress():
                sock.unlink()
            ox = Proc(
                "oxfcgi-mem-prefork",
                [VENV_PY, "-m", "oxfcgi", "serve", "benches.apps:hello", "--bind", f"unix:{sock}", "--workers", "2"],
                env.path("mem-oxfcgi-prefork.log"),
                env=env.ox.env,
            )
            wait_unix(sock, ox)
            time.sleep(1.0)
            run([LOADGEN, f"unix:{sock}", "-c", "4", "-d", "2", "-w", "0", "--json"], timeout=60, check=False)
            time.sleep(1.0)
            workers = [p for p in group_pids(ox.pid) if p != ox.pid]
            sizes = [v for v in (rss_kb(p) for p in workers) if v]
            if sizes:
                mem["oxfcgi_worker_kb"] = max(sizes)
                mem["oxfcgi_master_kb"] = rss_kb(ox.pid)
            ox.stop()
            ox = None
        for kind, key in (("bare", "bare_kb"), ("bare-oxfcgi", "bare_oxfcgi_kb")):
            bare_out = env.path(f"mem-{kind}.out")
            with open(bare_out, "wb") as out:
                bare = Proc(
                    kind,
                    [VENV_PY, BENCH / "peer_servers.py", kind, "benches.apps:hello", "-"],
                    env.path(f"mem-{kind}.log"),
                    env=env.ox.env,
                    stdout=out,
                )
            deadline = time.monotonic() + 20
            while b"ready" not in bare_out.read_bytes() and time.monotonic() < deadline:
                if not bare.alive():
                    raise RuntimeError(f"{kind} python exited:\n{bare.tail()}")
                time.sleep(0.05)
            time.sleep(0.5)
            mem[key] = rss_kb(bare.pid)
            bare.stop()
            bare = None
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        mem["idle_error"] = str(e).splitlines()[0]
    finally:
        for p in (bare, ox):
            if p:
                p.stop()

    # 2. RSS after 10 k requests and after 1 M (a leak shows as growth between them).
    ox = None
    try:
        with _suppress():
            sock.unlink()
        ox = Proc(
            "oxfcgi-long",
            [VENV_PY, "-m", "oxfcgi", "serve", "benches.apps:hello", "--bind", f"unix:{sock}"],
            env.path("mem-long.log"),
            env=env.ox.env,
        )
        wait_unix(sock, ox)
        for count, key in ((10_000, "rss_10k_kb"), (990_000, "rss_1m_kb")):
            cp = run(
                [LOADGEN, f"unix:{sock}", "-c", "16", "-n", str(count), "-d", "600", "-w", "0", "--json"],
                timeout=660,
                check=False,
            )
            data = json.loads((cp.stdout or "{}").strip().splitlines()[-1] or "{}")
            if data.get("requests", 0) < count:
                raise RuntimeError(f"loadgen sent {data.get('requests')} of {count} requests")
            time.sleep(0.5)
            mem[key] = rss_kb(ox.pid)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        mem["long_error"] = str(e).splitlines()[0]
    finally:
        if ox:
            ox.stop()

    # 3. Peak RSS increase while a 100 MB upload is read in 64 KB chunks.
    ox = None
    try:
        with _suppress():
            sock.unlink()
        ox = Proc(
            "oxfcgi-upload",
            [VENV_PY, "-m", "oxfcgi", "serve", "benches.apps:upload_sink", "--bind", f"unix:{sock}"],
            env.path("mem-upload.log"),
            env=env.ox.env,
        )
        wait_unix(sock, ox)
        # Warm up: a few small uploads, so one-time allocations are not counted.
        run(
            [
                LOADGEN,
                f"unix:{sock}",
                "-c",
                "1",
                "-n",
                "20",
                "-d",
                "20",
                "-w",
                "0",
                "--json",
                "--method",
                "POST",
                "--body-size",
                str(1 << 20),
            ],
            timeout=60,
            check=False,
        )
        time.sleep(0.5)
        pids = group_pids(ox.pid)
        base = {p: rss_kb(p) or 0 for p in pids}
        hwm_reset = True
        for p in pids:
            try:
                Path(f"/proc/{p}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                hwm_reset = False
        peak = dict(base)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for p in pids:
                    v = rss_kb(p)
                    if v is not None and v > peak.get(p, 0):
                        peak[p] = v
                stop.wait(0.005)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        t0 = time.monotonic()
        cp = run(
            [
                LOADGEN,
                f"unix:{sock}",
                "-c",
                "1",
                "-n",
                "1",
                "-d",
                "120",
                "-w",
                "0",
                "--json",
                "--timeout",
                "120",
                "--method",
                "POST",
                "--body-size",
                str(UPLOAD_BYTES),
            ],
            timeout=180,
            check=False,
        )
        elapsed = time.monotonic() - t0
        stop.set()
        t.join()
        if hwm_reset:
            for p in pids:
                hwm = rss_kb(p, "VmHWM")
                if hwm:
                    peak[p] = max(peak.get(p, 0), hwm)
        try:
            data = json.loads(cp.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            data = {"requests": 0, "first_error": (cp.stderr or "")[-200:]}
        if data.get("requests") != 1 or data.get("errors"):
            mem["upload_error"] = f"upload failed: {data.get('first_error')}"
        increase = max(peak[p] - base[p] for p in pids)
        mem["upload_base_kb"] = sum(base.values())
        mem["upload_increase_kb"] = increase
        mem["upload_seconds"] = elapsed
        mem["upload_hwm"] = hwm_reset
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        mem["upload_error"] = str(e).splitlines()[0]
    finally:
        if ox:
            ox.stop()
    return mem


# ------------------------------------------------------------------------------------------
# Report.


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "?"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def fmt_rps(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def reference_key(results: dict, mode: str, sc: str) -> str | None:
    for key in ("oxfcgi-2", "oxfcgi-1", "oxfcgi-asgi-2", "oxfcgi-asgi"):
        r = results.get((key, mode, sc))
        if r and r.ok:
            return key
    return None


def cell(results: dict, srv: Server, mode: str, sc: Scenario) -> str:
    r = results.get((srv.key, mode, sc.key))
    if r is None:
        return "—"
    if not r.ok:
        return r.note or "no result"
    text = f"{fmt_rps(r.rps)}/s · p99 {fmt_ms(r.p99)}"
    if r.cpu_us is not None:
        text += f" · CPU {r.cpu_us:.0f} µs"
    ref = reference_key(results, mode, sc.key)
    if ref:
        text += f" · {r.rps / results[(ref, mode, sc.key)].rps:.2f}×"
    if r.errors:
        text += f" · **{r.errors} err**"
    if r.extra.get("crashed"):
        text += " · crashed"
    return text


def build_table(results: dict, servers: list[Server], scenarios: list[Scenario]) -> str:
    head = ["server", "mode"] + [sc.title for sc in scenarios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in MODE_TITLES:
        for srv in servers:
            if mode != "nginx" and srv.proto != "fcgi":
                continue
            if not any((srv.key, mode, sc.key) in results for sc in scenarios):
                continue
            mode_text = MODE_TITLES[mode]
            if mode == "nginx" and srv.proto == "http":
                mode_text = "nginx proxy_pass + wrk"
            if mode == "nginx" and srv.proto == "static":
                mode_text = "wrk"
            row = [srv.label, mode_text] + [cell(results, srv, mode, sc) for sc in scenarios]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def apache_table(rows: dict) -> str:
    lines = [
        "| script | req/s · p99 | backend CPU µs/request | Apache CPU µs/request | processes | RSS per process |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        if row.note:
            lines.append(f"| {row.name} | {row.note} | | | | |")
            continue
        rss = ", ".join(f"{k / 1024:.1f} MB" for k in row.backend_rss_kb) or "?"
        err = f" · **{row.errors} err**" if row.errors else ""
        lines.append(
            f"| {row.name} | {fmt_rps(row.rps)}/s · p99 {fmt_ms(row.p99_ms)}{err} | {row.backend_cpu_us or 0:.0f} "
            f"| {row.apache_cpu_us or 0:.0f} | {row.backend_processes} | {rss} |"
        )
    return "\n".join(lines)


def draw_chart(results: dict, servers: list[Server], env: Env) -> Path | None:
    """benches/results.png from this run (matplotlib in the venv), or None."""
    rows = []
    for srv in servers:
        r = results.get((srv.key, "nginx", "hello"))
        fresh = results.get((srv.key, "newconn16", "hello"))
        if r and r.ok:
            rows.append((srv.label, r.rps, r.cpu_us, fresh.cpu_us if fresh and fresh.ok else None))
    if not rows:
        return None
    data = env.run_dir / "chart.json"
    data.write_text(json.dumps(rows))
    out = BENCH / "results.png"
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import chart; "
        "chart.draw(json.load(open(sys.argv[2])), __import__('pathlib').Path(sys.argv[3]), sys.argv[4])"
    )
    title = f"hello world on {os.cpu_count()} CPUs ({platform.machine()}), one run of benches/compare.py"
    cp = run([VENV_PY, "-c", code, BENCH, data, out, title], timeout=120, check=False)
    if cp.returncode != 0:
        log(f"chart failed: {(cp.stderr or '').strip()[-300:]}")
        return None
    log(f"wrote {out}")
    return out


def targets(results: dict, mem: dict, apache_rows: dict) -> str:
    """The issue's targets, each a PASS/FAIL row with what was measured."""
    rows = ["| target | measured | goal | verdict |", "|---|---|---|---|"]

    def get(key, mode="nginx", sc="hello"):
        r = results.get((key, mode, sc))
        return r if r and r.ok else None

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def cpu_row(title, a, b, goal=0.7):
        if a and b and a.cpu_us and b.cpu_us:
            v = a.cpu_us / b.cpu_us
            rows.append(
                f"| {title} | {v:.2f}× ({a.cpu_us:.0f} vs {b.cpu_us:.0f} µs) | ≤ {goal}× | {verdict(v <= goal)} |"
            )
        else:
            rows.append(f"| {title} | n/a | ≤ {goal}× | n/a |")

    def rps_row(title, a, b, goal):
        if a and b:
            v = a.rps / b.rps
            rows.append(
                f"| {title} | {v:.2f}× ({fmt_rps(a.rps)} vs {fmt_rps(b.rps)} req/s) "
                f"| ≥ {goal}× | {verdict(v >= goal)} |"
            )
        else:
            rows.append(f"| {title} | n/a | ≥ {goal}× | n/a |")

    for mode, n in NEW_CONNECTION_MODES.items():
        cpu_row(
            f"a connection per request, {n} at a time: CPU per request, oxfcgi ÷ uWSGI 1 process",
            get("oxfcgi-1", mode),
            get("uwsgi-1", mode),
        )
    rps_row(
        "a connection per request, 1 at a time: req/s, oxfcgi ÷ uWSGI 1 process",
        get("oxfcgi-1", "newconn1"),
        get("uwsgi-1", "newconn1"),
        1.0,
    )
    ox, fl = apache_rows.get("oxfcgi"), apache_rows.get("flup")
    if ox and fl and not ox.note and not fl.note and ox.backend_cpu_us and fl.backend_cpu_us:
        v = ox.backend_cpu_us / fl.backend_cpu_us
        rows.append(
            f"| Apache mod_fcgid: backend CPU per request, oxfcgi ÷ flup | {v:.2f}× ({ox.backend_cpu_us:.0f} vs "
            f"{fl.backend_cpu_us:.0f} µs; Apache itself {ox.apache_cpu_us:.0f} µs) | ≤ 0.25× | {verdict(v <= 0.25)} |"
        )
        v = ox.rps / fl.rps if fl.rps else 0
        rows.append(
            f"| Apache mod_fcgid: req/s, oxfcgi ÷ flup | {v:.2f}× ({fmt_rps(ox.rps)} vs {fmt_rps(fl.rps)}) "
            f"| ≥ 2× | {verdict(v >= 2)} |"
        )
        a = max(ox.backend_rss_kb or [0])
        b = max(fl.backend_rss_kb or [0])
        rows.append(
            f"| Apache mod_fcgid: RSS per process, oxfcgi vs flup | {a / 1024:.1f} vs {b / 1024:.1f} MB "
            f"| ≤ flup's | {verdict(0 < a <= b)} |"
        )
    else:
        rows.append("| Apache mod_fcgid rows | n/a (not measured) | | n/a |")
    for sc in ("hello", "body10k", "echo"):
        cpu_row(
            f"defaults, {sc}: CPU per request, oxfcgi 1 process ÷ uWSGI --processes 1 (direct)",
            get("oxfcgi-1", "direct", sc),
            get("uwsgi-1", "direct", sc),
        )
        cpu_row(
            f"defaults, {sc}: CPU per request, oxfcgi 2 workers ÷ uWSGI --processes 2 (direct)",
            get("oxfcgi-2", "direct", sc),
            get("uwsgi", "direct", sc),
        )
    rps_row("nginx + wrk -c16: req/s, oxfcgi 2 workers ÷ uWSGI 2 processes", get("oxfcgi-2"), get("uwsgi"), 1.3)
    ox2, uw = get("oxfcgi-2"), get("uwsgi")
    if ox2 and uw and ox2.p99 is not None and uw.p99 is not None:
        rows.append(
            f"| nginx + wrk -c16: p99, oxfcgi 2 workers vs uWSGI 2 processes | {fmt_ms(ox2.p99)} vs {fmt_ms(uw.p99)} "
            f"| ≤ uWSGI's | {verdict(ox2.p99 <= uw.p99)} |"
        )
    rps_row("nginx + wrk -c16: req/s, oxfcgi 1 worker ÷ uWSGI 1 process", get("oxfcgi-1"), get("uwsgi-1"), 1.0)
    rps_row(
        "sleep 10 ms through nginx: req/s, oxfcgi 2 workers ÷ granian 2 workers (default threads each)",
        get("oxfcgi-2", sc="sleep10"),
        get("granian", sc="sleep10"),
        1.0,
    )
    if mem.get("oxfcgi_idle_kb") and mem.get("bare_kb"):
        v = mem["oxfcgi_idle_kb"] / mem["bare_kb"]
        rows.append(
            f"| idle RSS: oxfcgi process ÷ bare python with the app imported | {v:.2f}× "
            f"({mem['oxfcgi_idle_kb'] / 1024:.1f} MB vs {mem['bare_kb'] / 1024:.1f} MB; a bare python that also "
            f"imported oxfcgi: {(mem.get('bare_oxfcgi_kb') or 0) / 1024:.1f} MB) | ≤ 1.2× | {verdict(v <= 1.2)} |"
        )
        if mem.get("oxfcgi_worker_kb"):
            v = mem["oxfcgi_worker_kb"] / mem["bare_kb"]
            rows.append(
                f"| idle RSS: oxfcgi prefork worker ÷ bare python | {v:.2f}× "
                f"({mem['oxfcgi_worker_kb'] / 1024:.1f} MB) | ≤ 1.2× | {verdict(v <= 1.2)} |"
            )
    else:
        rows.append(f"| idle RSS ratio | n/a ({mem.get('idle_error', 'not measured')}) | ≤ 1.2× | n/a |")
    if mem.get("rss_10k_kb") and mem.get("rss_1m_kb"):
        d = (mem["rss_1m_kb"] - mem["rss_10k_kb"]) / 1024
        rows.append(
            f"| RSS after 1 M requests − RSS after 10 k | {d:+.1f} MB ({mem['rss_10k_kb'] / 1024:.1f} → "
            f"{mem['rss_1m_kb'] / 1024:.1f} MB) | ≤ 2 MB | {verdict(d <= 2)} |"
        )
    else:
        rows.append(f"| RSS after 1 M requests | n/a ({mem.get('long_error', 'not measured')}) | ≤ 2 MB | n/a |")
    if "upload_increase_kb" in mem and not mem.get("upload_error"):
        v = mem["upload_increase_kb"] / 1024
        rows.append(
            f"| peak RSS increase during a 100 MB upload read in 64 KB chunks | {v:.1f} MB "
            f"(in {mem['upload_seconds']:.1f} s) | < 16 MB | {verdict(v < 16)} |"
        )
    return "\n".join(rows)


def asgi_targets(results: dict) -> str:
    """The ASGI issue's targets, PASS/FAIL rows (through nginx unless said)."""
    rows = ["| target | measured | goal | verdict |", "|---|---|---|---|"]
    for sc in ("asgi_hello", "fastapi_json"):
        for title, a, b, goal, mode in (
            ("oxfcgi ASGI 2 workers ÷ uvicorn 2 workers", "oxfcgi-asgi-2", "uvicorn", 1.2, "nginx"),
            ("oxfcgi ASGI 2 workers ÷ granian ASGI 2 workers", "oxfcgi-asgi-2", "granian-asgi", 1.0, "nginx"),
            ("oxfcgi ASGI 1 worker ÷ fcgisgi ASGI", "oxfcgi-asgi", "fcgisgi-asgi", 5.0, "nginx"),
            ("oxfcgi ASGI 1 worker ÷ fcgisgi ASGI (direct)", "oxfcgi-asgi", "fcgisgi-asgi", 5.0, "direct"),
            ("oxfcgi ASGI 1 worker ÷ oxfcgi WSGI + a2wsgi", "oxfcgi-asgi", "oxfcgi-a2wsgi", 1.0, "nginx"),
        ):
            ra, rb = results.get((a, mode, sc)), results.get((b, mode, sc))
            if ra and rb and ra.ok and rb.ok:
                v = ra.rps / rb.rps
                cpu = (
                    f"; CPU {ra.cpu_us:.0f} vs {rb.cpu_us:.0f} µs/req"
                    if ra.cpu_us is not None and rb.cpu_us is not None
                    else ""
                )
                rows.append(
                    f"| {sc}: {title} | {v:.2f}× ({fmt_rps(ra.rps)} vs {fmt_rps(rb.rps)} req/s{cpu}) "
                    f"| ≥ {goal}× | {'PASS' if v >= goal else 'FAIL'} |"
                )
            else:
                rows.append(f"| {sc}: {title} | n/a | ≥ {goal}× | n/a |")
    return "\n".join(rows)


def machine_info(env: Env) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def out(cmd):
        try:
            cp = run(cmd, timeout=30, check=False)
            return ((cp.stdout or "") + (cp.stderr or "")).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    git = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # This script's own outputs (written before this line by a full run) do not make the
    # measured code uncommitted.
    own_outputs = [f":!benches/{name}" for name in ("results.md", "results.png", "results-asgi.md")]
    dirty = run(
        ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", ".", *own_outputs],
        timeout=30,
        check=False,
    ).stdout.strip()
    info = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs (nproc {out(['nproc'])}), {cpu}, "
        f"{platform.system()} {platform.release()}, load average at start {env.args.loadavg}",
        f"- python: {out([VENV_PY, '--version'])} ({VENV.relative_to(ROOT)})",
        f"- oxfcgi {env.ox.version} at {git}{' + uncommitted changes' if dirty else ''}: {env.ox.source}",
        f"- nginx: {out([env.nginx, '-v']) if env.nginx else 'missing'}; wrk: "
        f"{out([env.wrk, '-v']) if env.wrk else 'missing'}",
        "- peers: "
        + (
            ", ".join(
                [f"{k} {v}" for k, v in sorted(env.peers.items()) if k != "uwsgi"]
                + ([f"uWSGI {env.uwsgi.version}"] if env.uwsgi else [])
            )
            or "none measured"
        ),
        f"- load: {env.args.connections} connections, {env.args.duration:g} s per cell after "
        f"{env.args.warmup:g} s warm-up; wrk -t{WRK_THREADS}; loadgen 1 thread",
    ]
    return info


# ------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="~3 s per cell (a smoke test)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 10; 3 with --quick)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each measurement (default 2; 1 with --quick)")
    p.add_argument("--connections", type=int, default=CONNECTIONS, help="concurrent connections (default 16)")
    p.add_argument(
        "--repeat",
        type=int,
        help="measured runs of each cell the targets compare, reported as medians (default 3; 1 with --quick)",
    )
    p.add_argument("--only", default="", help="comma-separated server/app keys, memory, nomemory")
    p.add_argument(
        "--oxfcgi-from",
        choices=("auto", "checkout", "wheel"),
        default="auto",
        help="checkout: this checkout's built engine; wheel: pip install . into the venv; "
        "auto (default): checkout when its engine is built and newer than src/, else wheel",
    )
    p.add_argument("--oxfcgi-threads", type=int, help="oxfcgi --threads (default: its own default)")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="only count oxfcgi's instructions per request under valgrind (hello; kept and new connections)",
    )
    p.add_argument("--callgrind-requests", type=int, default=2000, help="requests counted by --callgrind")
    p.add_argument("--keep-run-dir", action="store_true", help="keep logs and configs in the run directory")
    p.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    server_keys = {s.key for s in SERVERS}
    app_keys = {s.key for s in SCENARIOS + ASGI_SCENARIOS}
    extras = {"memory", "nomemory", "apache", "callgrind"}
    unknown = [x for x in only if x not in server_keys | app_keys | extras]
    if unknown:
        p.error(f"unknown --only names {unknown}; known: {sorted(server_keys | app_keys)}, {', '.join(sorted(extras))}")
    want_servers = [x for x in only if x in server_keys]
    want_apps = [x for x in only if x in app_keys]
    args.servers = [s for s in SERVERS if not want_servers or s.key in want_servers]
    args.scenarios = [s for s in SCENARIOS if not want_apps or s.key in want_apps]
    args.asgi_scenarios = [s for s in ASGI_SCENARIOS if not want_apps or s.key in want_apps]
    whole = not want_servers and not want_apps and not (set(only) & (extras - {"nomemory"}))
    if "nomemory" in only:
        args.memory = False
    else:
        args.memory = "memory" in only or whole
    args.apache = "apache" in only or whole
    args.callgrind_section = "callgrind" in only or whole or args.callgrind
    args.chart = whole and not want_servers
    if only and set(only) <= extras:
        args.servers = []
    if args.callgrind:
        args.servers, args.memory, args.apache, args.chart = [], False, False, False
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    notes: list[str] = []
    run_dir = Path(tempfile.mkdtemp(prefix="oxfcgi-bench-", dir="/tmp"))
    os.chmod(run_dir, 0o755)
    failed = True
    try:
        wrk, nginx = ensure_tools(notes)
        ensure_loadgen()
        wanted = {s.needs for s in args.servers if s.needs} | ({"flup"} if args.apache else set())
        wanted |= {"fastapi"} if any(s.interface == "asgi" for s in args.servers) else set()
        wanted |= {"matplotlib"} if args.chart else set()
        peers = ensure_venv(wanted, notes)
        uwsgi = ensure_uwsgi(peers, run_dir, notes) if "uwsgi" in wanted else None
        ox = ensure_oxfcgi(args.oxfcgi_from, notes)
        env = Env(args, run_dir, wrk, nginx, ox, uwsgi, peers)
        log(f"run directory {run_dir}; {args.duration:g} s per cell")

        results: dict = {}
        for srv in args.servers:
            measure_server(env, srv, args.asgi_scenarios if srv.interface == "asgi" else args.scenarios, results)
        mem = measure_memory(env) if args.memory else {}
        apache_rows = {}
        if args.apache:
            if wrk and Path("/usr/lib/apache2/modules/mod_fcgid.so").exists():
                import apache_fcgid

                apache_rows = apache_fcgid.measure(wrk, args.duration, args.warmup, VENV_PY, log, args.repeat)
            else:
                notes.append("Apache mod_fcgid mode: apache2/mod_fcgid or wrk missing")
        callgrind_results = {}
        if args.callgrind_section:
            if shutil.which("valgrind"):
                import callgrind

                try:
                    callgrind_results = callgrind.measure(
                        str(
                            Path(
                                run([VENV_PY, "-c", "import sys; print(sys.executable)"], timeout=30).stdout.strip()
                            ).resolve()
                        ),
                        LOADGEN,
                        run_dir,
                        ox.env,
                        {
                            "kept connection": ["--keep-conn", "-c", "1"],
                            "a connection per request": ["--per-request", "-c", "1"],
                        },
                        args.callgrind_requests,
                        log,
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    notes.append(f"callgrind: {e}")
            else:
                notes.append("callgrind: valgrind is missing")
        if args.callgrind:
            import callgrind

            print(callgrind.table(callgrind_results))
            return 0

        table = build_table(results, [s for s in args.servers if s.interface == "wsgi"], args.scenarios)
        asgi_servers = [s for s in args.servers if s.interface == "asgi"]
        asgi_table = build_table(results, asgi_servers, args.asgi_scenarios) if asgi_servers else ""
        tgt = targets(results, mem, apache_rows)
        sections = []
        if apache_rows:
            sections += ["## Apache mod_fcgid (the shared-host path)", "", apache_table(apache_rows), ""]
        if callgrind_results:
            import callgrind

            sections += [
                "## Instructions per request (callgrind, oxfcgi hello, one connection at a time)",
                "",
                callgrind.table(callgrind_results),
                "",
                "User space only: the kernel's share (system calls, wake-ups) is in the CPU column above.",
                "",
            ]
        if args.chart and not args.no_write:
            chart_path = draw_chart(results, args.servers, env)
            if chart_path:
                sections += ["## Chart", "", f"![req/s and CPU per request]({chart_path.name})", ""]
        errors = {
            f"{k[0]} {k[1]} {k[2]}": r.extra.get("first_error")
            for k, r in results.items()
            if r.ok and r.errors and r.extra.get("first_error")
        }
        report = "\n".join(
            [
                "# oxfcgi benchmarks",
                "",
                f"`python3 benches/compare.py{' --quick' if args.quick else ''}"
                f"{' --duration ' + format(args.duration, 'g') if not args.quick and args.duration != 10 else ''}"
                f"{' --only ' + args.only if args.only else ''}"
                f"{' --repeat ' + str(args.repeat) if args.repeat != (1 if args.quick else 3) else ''}`",
                "",
                *machine_info(env),
                "",
                "Each cell: requests/s · p99 latency · CPU µs per request of the server's processes "
                "(utime + stime of its whole process group over the measured run; the stable figure) · "
                "ratio of req/s to oxfcgi (2 workers when available, else 1) in the same mode. "
                "*nginx*: wrk → nginx (2 workers) → server "
                "(FastCGI over a unix socket, keep-conn where the server supports it; HTTP over a "
                "unix socket for gunicorn/granian). *direct*: oxfcgi-loadgen → server's FastCGI socket. "
                + (
                    f"The cells the targets compare are the median of {args.repeat} measured runs (each "
                    "figure its own median); the others are one run."
                    if args.repeat > 1
                    else "Every cell is one measured run."
                ),
                "",
                table,
                "",
                *(
                    [
                        "## ASGI",
                        "",
                        "The same modes; ratios to oxfcgi ASGI (2 workers when available). uvicorn and "
                        "granian behind nginx `proxy_pass` over a unix socket, as their docs deploy them.",
                        "",
                        asgi_table,
                        "",
                        asgi_targets(results),
                        "",
                    ]
                    if asgi_table
                    else []
                ),
                *sections,
                "## Targets (issue: less CPU per request than uWSGI at the default settings)",
                "",
                tgt,
                "",
                "## Notes",
                "",
                *[f"- {s.label}: {s.note}" for s in args.servers if s.note],
                *[f"- {n}" for n in notes],
                *[f"- errors in {k}: {v}" for k, v in errors.items()],
                "",
            ]
        )
        print(report)
        if not args.no_write:
            RESULTS.write_text(report)
            log(f"wrote {RESULTS}")
        failed = False
        return 0
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        stop_all()
        if args.keep_run_dir or failed:
            log(f"logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
