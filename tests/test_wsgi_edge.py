"""Edge cases of PEP 3333 apps: wrong return values, SystemExit in the app, close()
failures, large and streamed bodies, concurrency, aborts while the app waits for input.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from oxfcgi.client import FCGI_END_REQUEST, FCGI_STDERR, FCGI_STDOUT, cgi_params
from tests.support.servers import wait_for

APPS = "tests.apps.wsgi_apps"


def serve(start_server, name, *args):
    if "--threads" not in args:
        args = ("--threads", "2") + args
    return start_server(f"{APPS}:{name}", *args)


def ends_cleanly(resp):
    assert resp.records and resp.records[-1].type == FCGI_END_REQUEST, resp.records[-3:]
    assert resp.protocol_status == 0


def is_500_with_traceback(resp, text):
    ends_cleanly(resp)
    assert resp.status == 500, (resp.status, resp.stdout[:300])
    stderr = resp.stderr.decode("utf-8", "replace")
    assert "Traceback" in stderr and text in stderr, stderr


@pytest.mark.parametrize(
    "app, text",
    [
        ("none_app", "None"),
        ("no_start_response_app", "start_response"),
        ("iter_raises_app", "iter-failed"),
    ],
)
def test_app_misbehaviour_gives_500(start_server, app, text):
    s = serve(start_server, app)
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 500, (r.status, r.stdout[:300])
    assert b"body without start_response" not in r.body
    stderr = r.stderr.decode("utf-8", "replace")
    assert text in stderr, stderr


def test_non_bytes_chunk_before_headers(start_server):
    s = serve(start_server, "bad_chunk_app")
    r = s.request("GET", "/", query="when=first")
    ends_cleanly(r)
    assert r.status == 500, (r.status, r.stdout[:300])
    stderr = r.stderr.decode("utf-8", "replace")
    assert "TypeError" in stderr and "int" in stderr, stderr


def test_non_bytes_chunk_after_headers(start_server):
    s = serve(start_server, "bad_chunk_app")
    r = s.request("GET", "/", query="when=later")
    ends_cleanly(r)
    assert r.status == 200
    assert r.body == b"good|"
    assert r.app_status not in (None, 0)
    stderr = r.stderr.decode("utf-8", "replace")
    assert "TypeError" in stderr and "int" in stderr, stderr


@pytest.mark.parametrize("kind, name", [("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt")])
def test_systemexit_and_keyboardinterrupt_in_app(start_server, kind, name):
    """Like flup's bare except: a 500, and the server keeps running."""
    s = serve(start_server, "exit_app")
    r = s.request("GET", "/", query=f"kind={kind}")
    is_500_with_traceback(r, name)
    time.sleep(0.3)
    assert s.proc.poll() is None, s.log()
    r2 = s.request("GET", "/", query=f"kind={kind}")
    assert r2.status == 500


def test_close_raising_after_complete_body(start_server):
    s = serve(start_server, "close_raises_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 200
    assert r.body == b"complete body"
    assert wait_for(lambda: "close-failed" in s.log() or b"close-failed" in r.stderr), s.log()
    assert s.request("GET", "/").body == b"complete body"


def test_write_then_one_element_list_content_length(start_server):
    s = serve(start_server, "write_then_list_app")
    r = s.request("GET", "/")
    ends_cleanly(r)
    assert r.status == 200
    assert r.body == b"written-returned"
    assert r.header("Content-Length") in (None, str(len(r.body))), r.headers


@pytest.mark.parametrize("chunks, size", [(160, 65536), (3, 200000), (20000, 1), (1, 0)])
def test_big_and_many_chunk_bodies(start_server, chunks, size):
    s = serve(start_server, "big_body_app")
    r = s.request("GET", "/", query=f"chunks={chunks}&size={size}", timeout=60)
    ends_cleanly(r)
    assert r.status == 200
    expected = b"".join(bytes([i % 251]) * size for i in range(chunks))
    assert len(r.body) == len(expected)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(expected).digest()
    assert all(len(rec.content) <= 65535 for rec in r.records)
    stdout = [rec for rec in r.records if rec.type == FCGI_STDOUT]
    assert stdout[-1].content == b""
    # the empty record ends the stream: it is the only empty STDOUT record
    assert sum(1 for rec in stdout if rec.content == b"") == 1


def test_slow_reader_gets_whole_body(start_server):
    """A web server that reads slowly: back-pressure must not lose or reorder data."""
    s = serve(start_server, "big_body_app")
    with s.connect(timeout=60) as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("GET", "/", query="chunks=100&size=65536"))
        conn.send_stdin(1)
        time.sleep(1.5)  # the app is blocked on a full channel by now
        r = conn.read_response(1)
    ends_cleanly(r)
    expected = b"".join(bytes([i % 251]) * 65536 for i in range(100))
    assert r.body == expected


def at_once(n, call):
    """``call()`` in ``n`` threads started together: the results, and the seconds until all returned."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - t0


def test_two_threads_run_concurrently(start_server):
    s = serve(start_server, "sleep_app", "--threads", "2")
    s.request("GET", "/", query="t=0")  # warm up
    results, elapsed = at_once(2, lambda: s.request("GET", "/", query="t=1.0"))
    assert [r.status for r in results] == [200, 200]
    assert elapsed < 1.8, elapsed
    assert results[0].body != results[1].body  # two different worker threads


def worker_threads(pid: int) -> int:
    """How many ``oxfcgi-worker-N`` threads process ``pid`` has now."""
    count = 0
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            count += comm.read_text().startswith("oxfcgi-worker")
        except OSError:  # the thread exited meanwhile
            pass
    return count


def test_the_pool_starts_threads_when_requests_wait_up_to_threads_and_ends_idle_ones(start_server):
    """flup's ``ThreadPool`` grows up to ``maxThreads``; php-fpm's ``ondemand`` ends idle
    workers after ``pm.process_idle_timeout`` (10 s): one thread at first and for requests
    that come one at a time, a thread for each waiting sleeper up to ``threads``, and back
    to one thread 10 s after the burst."""
    s = serve(start_server, "sleep_app", "--threads", "6")
    pid = s.proc.pid
    for _ in range(50):
        assert s.request("GET", "/", query="t=0").status == 200
    assert worker_threads(pid) == 1
    most = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            most[0] = max(most[0], worker_threads(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results, elapsed = at_once(8, lambda: s.request("GET", "/", query="t=1.0", timeout=30))
    done.set()
    watcher.join()
    assert [r.status for r in results] == [200] * 8
    # Six at once, then the last two: two rounds of one second, not eight.
    assert 1.9 <= elapsed < 4.0, elapsed
    assert len({r.body for r in results}) == 6 and most[0] == 6, ({r.body for r in results}, most)
    assert wait_for(lambda: worker_threads(pid) == 1, timeout=25), worker_threads(pid)
    assert s.request("GET", "/", query="t=0").status == 200


def test_one_thread_serialises(start_server):
    s = serve(start_server, "sleep_app", "--threads", "1")
    s.request("GET", "/", query="t=0")
    results, elapsed = at_once(2, lambda: s.request("GET", "/", query="t=0.6", timeout=30))
    assert [r.status for r in results] == [200, 200]
    assert elapsed >= 1.15


def test_streaming_echo_interleaves_input_and_output(start_server):
    """The app yields a line as soon as it has read it: output flows before the body has ended."""
    s = serve(start_server, "stream_echo_app")
    with s.connect() as conn:
        conn.begin_request(1)
        conn.send_params(1, cgi_params("POST", "/", body_length=12))
        conn.send_stdin(1, b"line1\n", end=False)
        seen = b""
        while b"echo:line1\n" not in seen:
            rec = conn.read_record()
            assert rec is not None and rec.type != FCGI_END_REQUEST, rec
            if rec.type == FCGI_STDOUT:
                seen += rec.content
        conn.send_stdin(1, b"line2\n", end=True)
        r = conn.read_response(1)
    ends_cleanly(r)
    assert seen.split(b"\r\n\r\n", 1)[1] + r.stdout == b"echo:line1\necho:line2\n"


@pytest.mark.parametrize("how", ["abort", "disconnect"])
def test_client_gives_up_while_app_waits_for_body(start_server, tmp_path, how):
    marker = tmp_path / "marker"
    s = serve(start_server, "input_wait_app")
    conn = s.connect()
    try:
        conn.begin_request(1, keep_conn=True)
        conn.send_params(1, cgi_params("POST", "/", headers={"X-Marker": str(marker)}, body_length=100000))
        conn.send_stdin(1, b"x" * 1000, end=False)
        time.sleep(0.3)  # the app is blocked in read()
        t0 = time.monotonic()
        if how == "abort":
            conn.abort(1)
            r = conn.read_response(1)
            assert r.records and r.records[-1].type == FCGI_END_REQUEST, r.records
            assert time.monotonic() - t0 < 5
        else:
            conn.close()
    finally:
        conn.close()
    text = wait_for(lambda: marker.exists() and marker.read_text())
    assert text, "the app stayed blocked in wsgi.input.read()"
    # the app learns that the body is incomplete (the engine raises OSError) instead of
    # getting the first 1000 bytes as if they were the whole body
    assert text.startswith("raised "), text
    # the server still serves
    r2 = s.request("POST", "/", body=b"abc", headers={"X-Marker": str(tmp_path / "m2")})
    assert r2.status == 200 and r2.body == b"3"


def test_wsgi_errors_unterminated_and_large(start_server):
    s = serve(start_server, "errors_extra_app")
    r = s.request("GET", "/", query="size=300000")
    ends_cleanly(r)
    assert r.status == 200
    stderr = r.stderr.decode()
    assert stderr.endswith("no-newline-at-end"), stderr[-200:]
    assert stderr.count("e" * 99 + "\n") == 3000
    assert all(len(rec.content) <= 65535 for rec in r.records if rec.type == FCGI_STDERR)
    assert wait_for(lambda: "no-newline-at-end" in s.log()), s.log()[-2000:]


@pytest.mark.parametrize("mode", ["seek", "read"])
@pytest.mark.parametrize("offset", [0, 1000, 3 * 1024 * 1024])
def test_file_wrapper_respects_file_position(start_server, tmp_path, offset, mode):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * (3 * 1024 * 1024 // 256) + b"tail"
    path.write_bytes(data)
    s = serve(start_server, "file_wrapper_seek_app")
    r = s.request("GET", "/", query=f"offset={offset}&mode={mode}", headers={"X-File": str(path)}, timeout=60)
    ends_cleanly(r)
    assert r.status == 200
    assert len(r.body) == len(data) - offset
    assert r.body == data[offset:]
