"""Prefork workers: a master that forks, respawns, recycles, reloads and stops them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

APP = "tests.apps.deploy_app:pool_app"


def pid_of(srv, path="/", **kw) -> int:
    resp = srv.request("GET", path, **kw)
    assert resp.status == 200, resp
    return int(resp.body)


def wait_for(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def worker_pids(srv, n=20) -> set[int]:
    return {pid_of(srv) for _ in range(n)}


def status(srv) -> dict:
    return json.loads(srv.request("GET", "/status", query="json").body)


def test_two_workers_serve_and_report_status(start_server):
    srv = start_server(APP, "--workers", "2", "--threads", "2", "--status-path", "/status", "--ping-path", "/ping")
    assert srv.request("GET", "/ping").body == b"pong\n"
    pids = set()
    assert wait_for(lambda: len(pids.update(worker_pids(srv, 10)) or pids) == 2, timeout=15)
    assert srv.proc.pid not in pids, "the master serves nothing itself"
    st = status(srv)
    assert st["total processes"] == 2 and st["threads per process"] == 2
    assert st["requests"] >= 10, st
    full = json.loads(srv.request("GET", "/status", query="json&full").body)
    assert {p["pid"] for p in full["processes"]} == pids


def test_crashed_worker_is_respawned(start_server):
    srv = start_server(APP, "--workers", "1")
    first = pid_of(srv)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: "killed by signal 9" in srv.log())
    assert wait_for(lambda: _answers_with_new_pid(srv, first))


def _answers_with_new_pid(srv, old) -> bool:
    try:
        return pid_of(srv) != old
    except (OSError, AssertionError):
        return False


def test_crash_loop_backs_off(start_server):
    # boot_attempts high: the master keeps respawning (by default it gives up after 3
    # load failures, see test_bounds.py), with a growing delay.
    srv = start_server("tests.apps.broken_app:application", "--workers", "2", "--boot-attempts", "100", wait=False)
    assert wait_for(lambda: "crash loop" in srv.log(), timeout=20), srv.log()
    assert "this application cannot start" in srv.log()
    started = srv.log().count("started worker")
    time.sleep(1.5)
    assert srv.log().count("started worker") - started <= 2, "backoff: no respawn storm"
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=15) == 0


def test_max_requests_recycles_without_failing_a_request(start_server):
    srv = start_server(APP, "--workers", "1", "--max-requests", "3")
    pids = [pid_of(srv) for _ in range(10)]  # every request must succeed
    assert len(set(pids)) >= 3, pids
    assert "max_requests (3) reached" in srv.log()


def test_sighup_reloads_every_worker_without_refusing(start_server):
    srv = start_server(APP, "--workers", "2", "--threads", "2")
    before = worker_pids(srv)
    failures, done = [], threading.Event()

    def hammer():
        while not done.is_set():
            try:
                resp = srv.request("GET", "/")
                if resp.status != 200:
                    failures.append(resp.status)
            except OSError as e:
                failures.append(repr(e))

    t = threading.Thread(target=hammer)
    t.start()
    time.sleep(0.3)
    srv.signal(signal.SIGHUP)
    assert wait_for(lambda: srv.log().count("replaced and exited") >= 2, timeout=20), srv.log()
    done.set()
    t.join()
    assert not failures, failures[:5]
    after = worker_pids(srv)
    assert not (before & after), (before, after)
    assert len(after) <= 2
    assert srv.proc.poll() is None, "SIGHUP does not stop the master"


def test_sigterm_lets_requests_finish(start_server):
    srv = start_server(APP, "--workers", "2")
    results = []
    t = threading.Thread(target=lambda: results.append(srv.request("GET", "/sleep", query="t=1").status))
    t.start()
    time.sleep(0.4)
    srv.signal(signal.SIGTERM)
    t.join()
    assert results == [200]
    assert srv.wait(timeout=15) == 0


def test_request_slowlog_timeout_logs_stacks_and_keeps_the_worker(start_server):
    srv = start_server(APP, "--workers", "1", "--request-slowlog-timeout", "0.5", "--status-path", "/status")
    first = pid_of(srv)
    resp = srv.request("GET", "/sleep", query="t=1.2")
    assert resp.status == 200, "the slow request itself completes"
    log = srv.log()
    assert "request_slowlog_timeout (0.5s)" in log and "Stacks of this process's threads" in log
    assert "deploy_app.py" in log and "time.sleep" in log, "the slow request's stack is logged"
    assert pid_of(srv) == first, "php-fpm's slowlog only logs: the worker stays"
    assert status(srv)["slow requests"] == 1


def test_request_terminate_timeout_answers_504_and_replaces_the_worker(start_server):
    srv = start_server(APP, "--workers", "1", "--request-terminate-timeout", "0.5")
    first = pid_of(srv)
    started = time.monotonic()
    resp = srv.request("GET", "/spin", query="t=10")
    assert resp.status == 504, resp
    assert time.monotonic() - started < 5, "answered at the deadline, not when the app is done"
    # The app's line and the watchdog's (written after terminate() returns) come in either order.
    assert wait_for(
        lambda: "spin stopped by RequestTerminated" in srv.log() and "request_terminate_timeout (0.5s)" in srv.log()
    ), srv.log()
    assert "this worker stops accepting and is replaced" in srv.log()
    assert wait_for(lambda: _answers_with_new_pid(srv, first))


def test_request_terminate_timeout_without_workers_frees_the_thread(start_server):
    srv = start_server(APP, "--threads", "1", "--request-terminate-timeout", "0.5")
    first = pid_of(srv)
    assert srv.request("GET", "/spin", query="t=10").status == 504
    # One thread: the next request is served only once RequestTerminated unwound the app.
    started = time.monotonic()
    assert pid_of(srv) == first
    assert time.monotonic() - started < 3
    assert "spin stopped by RequestTerminated" in srv.log()
    assert "no prefork master to replace this process" in srv.log()


def test_request_timeout_is_a_deprecated_name_of_the_slowlog(start_server):
    srv = start_server(APP, "--request-timeout", "0.3")
    assert srv.request("GET", "/sleep", query="t=0.8").status == 200
    log = srv.log()
    assert "request_timeout is now request_slowlog_timeout" in log
    assert "request_slowlog_timeout (0.3s)" in log


def test_max_rss_and_max_lifetime(start_server):
    srv = start_server(APP, "--workers", "1", "--max-rss", "60")
    first = pid_of(srv, "/bloat")
    assert wait_for(lambda: _answers_with_new_pid(srv, first), timeout=15)
    assert "over max_rss (60 MiB)" in srv.log()
    srv2 = start_server(APP, "--workers", "1", "--max-lifetime", "1")
    first = pid_of(srv2)
    assert wait_for(lambda: _answers_with_new_pid(srv2, first), timeout=15)
    assert "max_lifetime" in srv2.log()


def test_php_fcgi_children_sets_the_worker_count(start_server):
    srv = start_server(APP, env={"PHP_FCGI_CHILDREN": "2"})
    assert "2 worker(s)" in srv.log()
    srv1 = start_server(APP, env={"PHP_FCGI_CHILDREN": "1"})
    assert "master" not in srv1.log()


def test_sigusr1_reopens_logs_in_master_and_workers(start_server, tmp_path):
    log = tmp_path / "pool.log"
    srv = start_server(APP, "--workers", "2", "--log-file", str(log))
    assert wait_for(lambda: log.read_text().count("serving on") == 2)
    log.rename(tmp_path / "pool.log.1")
    srv.signal(signal.SIGUSR1)
    assert wait_for(lambda: log.exists() and log.read_text().count("log file reopened") >= 3), (
        log.read_text() if log.exists() else "no log"
    )


def test_kept_open_connections_spread_over_the_workers(start_server):
    """All workers are woken for each connection on the shared socket; the one
    holding fewer connections must get them, or one core does all the work."""
    srv = start_server(APP, "--workers", "2")
    assert wait_for(lambda: len(worker_pids(srv, 10)) == 2, timeout=15)
    conns = [srv.connect() for _ in range(16)]
    try:
        pids = [int(c.request("GET", "/", keep_conn=True).body) for c in conns]
        counts = sorted(pids.count(p) for p in set(pids))
        assert len(counts) == 2 and counts[0] >= 5, counts
    finally:
        for c in conns:
            c.close()


def test_reload_on_change_reloads_the_workers_one_by_one(start_server, tmp_path):
    trigger = tmp_path / "restart.txt"
    trigger.write_text("")
    srv = start_server(APP, "--workers", "1", "--reload-on-change", str(trigger))
    first = pid_of(srv)
    os.utime(trigger, (time.time() + 5, time.time() + 5))
    assert wait_for(lambda: _answers_with_new_pid(srv, first), timeout=15), srv.log()
    assert "restart.txt changed (reload_on_change): reloading the workers one by one" in srv.log()
    assert srv.proc.poll() is None, "the master goes on"
