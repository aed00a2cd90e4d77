"""Scaling out: three oxfcgi hosts behind one balancer (HAProxy or nginx), on network namespaces.

The test makes the hosts (tests/support/netns.py): ``lb`` (198.18.0.1, the balancer and the
clients), ``h1``..``h3`` (198.18.0.11-13, one oxfcgi each on port 9000) and ``out``
(198.18.0.99, a machine that is not the web server), on one bridge, with no route out. The
balancer runs the configuration ``oxfcgi config haproxy|nginx --backend … --web-server-addrs
198.18.0.1`` prints, and each host the ``oxfcgi serve`` command printed for it, as a user
would paste it: so each host accepts FastCGI connections from the balancer only
(FCGI_WEB_SERVER_ADDRS), and HAProxy health-checks them through ``--ping-path``.

Under load (12 clients, each sending one request after the other):
- ``kill -9`` of one host: the balancer sends new requests to the others; only requests
  that were in flight on that host may fail;
- SIGTERM of one host (a drain for a deploy): no request fails, the host exits when its
  requests are done.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oxfcgi.config import ConfigOptions, generate
from tests.support.fixtures import IN_CI, need_binary
from tests.support.generated import commented_shell_lines
from tests.support.netns import Lab, NetnsError
from tests.support.servers import ROOT, read_log, wait_accepting

APP = "tests.apps.flask_app:app"
HOSTS = {"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.13"}
BALANCER = "198.18.0.1"
OUTSIDER = "198.18.0.99"
PORT = 9000
CLIENTS = 12


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0 and not IN_CI:
        pytest.skip("network namespaces need root")
    lab = Lab(f"ox{os.getpid() % 10000}", {"lb": BALANCER, **HOSTS, "out": OUTSIDER})
    try:
        lab.create()
    except NetnsError as e:
        if IN_CI:
            pytest.fail(f"cannot create network namespaces: {e}")
        pytest.skip(f"cannot create network namespaces here: {e}")
    yield lab
    lab.close()


@dataclass
class Host:
    name: str
    address: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return read_log(self.log_path)

    @property
    def pid(self) -> int:
        """The oxfcgi process (the shell line execs through ``cd … &&``, so find it in the log)."""
        match = re.search(r"oxfcgi\[(\d+)\]", self.log())
        assert match, self.log()
        return int(match.group(1))


@dataclass
class Cluster:
    balancer: object
    hosts: dict[str, Host]
    pids: dict[int, str] = field(default_factory=dict)

    def host_of(self, pid: int) -> str:
        return self.pids.get(pid, f"pid {pid}")


def _generate(target: str) -> str:
    return generate(
        ConfigOptions(
            target=target,
            app=APP,
            prefix="/",
            python=sys.executable,
            workdir=str(ROOT),
            user=getpass.getuser(),
            timeout=10,
            backends=[f"{address}:{PORT}" for address in HOSTS.values()],
            web_server_addrs=BALANCER,
        )
    )


def _start_hosts(lab: Lab, text: str, tmp_path: Path) -> dict[str, Host]:
    """Each host runs the serve command the config printed for it, pasted into a shell."""
    lines = commented_shell_lines(text, "oxfcgi serve")
    hosts = {}
    for name, address in HOSTS.items():
        (line,) = [ln for ln in lines if f"--bind {address}:{PORT}" in ln]
        assert re.sub(r"\s+", " ", line).startswith(f"cd {ROOT} && FCGI_WEB_SERVER_ADDRS={BALANCER} "), line
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = lab[name].popen(["sh", "-c", f"{line} --threads 4"], stdout=log, stderr=subprocess.STDOUT)
        hosts[name] = Host(name, address, proc, log_path)
    for host in hosts.values():
        if not lab["lb"].call(wait_accepting, (host.address, PORT), host.proc, 20):
            raise RuntimeError(f"{host.name} did not start:\n{host.log()}")
    return hosts


@pytest.fixture
def cluster(lab, tmp_path):
    """Factory: ``cluster("haproxy"|"nginx")``: the hosts and the balancer, started as generated."""
    started: list[Cluster] = []

    def start(target: str) -> Cluster:
        text = _generate(target)
        hosts = _start_hosts(lab, text, tmp_path)
        binary = need_binary(target)
        if target == "haproxy":
            from tests.support.haproxy import start_haproxy

            balancer = start_haproxy(tmp_path / "haproxy", [text], binary=binary, netns=lab["lb"])
        else:
            from tests.support.nginx import start_nginx

            balancer = start_nginx(tmp_path, "", nginx_binary=binary, snippets=[text], netns=lab["lb"])
        c = Cluster(balancer, hosts, {h.pid: h.name for h in hosts.values()})
        started.append(c)
        return c

    yield start
    for c in started:
        c.balancer.stop()
        for host in c.hosts.values():
            if host.proc.poll() is None:
                os.kill(host.pid, signal.SIGKILL)
                host.proc.wait(10)


@dataclass
class Outcome:
    started: float
    ended: float
    host: str | None  # who answered, None for a failure
    problem: str | None = None


class Load:
    """``CLIENTS`` threads inside ``lb``, each sending ``GET /sleep?ms=40`` one after the other
    to the balancer until :meth:`stop`."""

    def __init__(self, lab: Lab, c: Cluster):
        self.lab, self.cluster = lab, c
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        self.lab["lb"].enter()
        while not self._stop.is_set():
            started = time.monotonic()
            host, problem = None, None
            try:
                result = self.cluster.balancer.direct_request("GET", "/sleep?ms=40", None, None, 20)
                if result.status == 200:
                    host = self.cluster.host_of(json.loads(result.body)["pid"])
                else:
                    problem = f"HTTP {result.status} {result.body[:200]!r}"
            except OSError as e:
                problem = repr(e)
            with self._lock:
                self.outcomes.append(Outcome(started, time.monotonic(), host, problem))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def served_by(self, since: float = 0.0) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.host and o.started >= since:
                counts[o.host] = counts.get(o.host, 0) + 1
        return counts

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]


def _logs(c: Cluster) -> str:
    parts = [f"--- {h.name}\n{h.log()[-1500:]}" for h in c.hosts.values()]
    log = c.balancer.log() if hasattr(c.balancer, "log") else c.balancer.error_log()
    return "\n".join(parts) + f"\n--- balancer\n{log[-3000:]}"


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_kill_9_one_host_under_load(lab, cluster, balancer):
    c = cluster(balancer)
    with Load(lab, c) as load:
        time.sleep(1.5)
        killed_at = time.monotonic()
        os.kill(c.hosts["h1"].pid, signal.SIGKILL)
        time.sleep(3.0)
    assert load.served_by().get("h1", 0) > 5, f"h1 served nothing before the kill: {load.served_by()}"
    late = [o for o in load.failures() if o.started >= killed_at]
    assert late == [], f"requests sent after the kill failed: {late[:5]}\n{_logs(c)}"
    in_flight_failures = load.failures()
    assert len(in_flight_failures) <= CLIENTS, in_flight_failures
    after = load.served_by(since=killed_at + 0.5)
    assert "h1" not in after and after.get("h2", 0) > 10 and after.get("h3", 0) > 10, after


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_sigterm_one_host_under_load_fails_nothing(lab, cluster, balancer):
    c = cluster(balancer)
    h1 = c.hosts["h1"]
    with Load(lab, c) as load:
        time.sleep(1.5)
        terminated_at = time.monotonic()
        os.kill(h1.pid, signal.SIGTERM)
        h1.proc.wait(15)
        time.sleep(1.5)
    assert load.served_by().get("h1", 0) > 5, load.served_by()
    assert load.failures() == [], f"{len(load.failures())} failed: {load.failures()[:5]}\n{_logs(c)}"
    assert h1.proc.returncode == 0, h1.log()
    after = load.served_by(since=terminated_at + 0.5)
    assert "h1" not in after and after.get("h2", 0) > 10, after


def test_a_peer_not_in_fcgi_web_server_addrs_is_refused_and_logged(lab, cluster):
    from oxfcgi.client import request

    c = cluster("haproxy")
    h2 = c.hosts["h2"]
    ok = lab["lb"].call(request, f"{h2.address}:{PORT}", "GET", "/items/3")
    assert ok.status == 200 and json.loads(ok.body)["item_id"] == 3
    with pytest.raises((ConnectionError, OSError)):
        lab["out"].call(request, f"{h2.address}:{PORT}", "GET", "/items/3", timeout=5)
    deadline = time.monotonic() + 5
    while OUTSIDER not in h2.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"refused a connection from {OUTSIDER}" in h2.log(), h2.log()
    assert "FCGI_WEB_SERVER_ADDRS" in h2.log()
