"""Slow clients (issue 6): partial header or body, then silence, or a trickle.

Straight on the uwsgi socket every connection holds a worker thread while
it is read, so ``processes x threads`` slow connections fill the pool; each
must be cut at ``socket-timeout`` so that it cannot hold it longer. Through
nginx a slow HTTP client holds no worker at all: nginx reads the whole
request (headers and body) before it connects upstream, then sends it at
once. The tests print the figures the README quotes (``-s``).
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from conftest import http_request, nginx_vars, parse_response, recv_all, uwsgi_connect, \
    uwsgi_request, wait_until
from packet_builder import build_packet
from soak.procinfo import APP_FILE, children, wait_children

TIMEOUT = 1.0  # socket-timeout for these tests (uWSGI's default is 4)


def packet_for(uri: str, method: str = "GET", body: bytes = b"", **extra) -> bytes:
    vars_ = nginx_vars(method=method, uri=uri, body=body, **extra)
    return build_packet([(k.encode(), v.encode()) for k, v in vars_.items()], body=body)


def time_to_close(s: socket.socket, limit: float = 15.0) -> tuple[float, bytes]:
    """Seconds until the server closes ``s`` (reading whatever it sends)."""
    started = time.monotonic()
    s.settimeout(limit)
    data = recv_all(s)
    return time.monotonic() - started, data


def timed_get(addr: str, uri: str = "/ok") -> tuple[float, int]:
    started = time.monotonic()
    resp = parse_response(uwsgi_request(addr, nginx_vars(uri=uri), timeout=30))
    return time.monotonic() - started, resp.status


@pytest.fixture
def server(uwsgigw_factory):
    """One worker, one thread: the smallest pool, so one slow client fills it."""
    return uwsgigw_factory("--wsgi-file", APP_FILE, "--socket-timeout", str(TIMEOUT))


# -- partial, then silence -----------------------------------------------------------

@pytest.mark.parametrize("cut", ["header", "vars"])
def test_partial_packet_then_silence_is_cut_at_socket_timeout(server, cut):
    data = packet_for("/ok")
    part = data[:2] if cut == "header" else data[:len(data) // 2]
    mark = server.log_mark()
    with uwsgi_connect(server.socket) as s:
        s.sendall(part)
        held, answer = time_to_close(s)
    assert answer == b""
    assert TIMEOUT * 0.8 <= held <= TIMEOUT + 1.0, held
    server.wait_for_log("timeout reading the request vars", since=mark)
    assert timed_get(server.socket)[1] == 200


@pytest.mark.parametrize("mode", ["stream", "post-buffering-memory", "post-buffering-file"])
def test_partial_body_then_silence_is_cut_at_socket_timeout(uwsgigw_factory, mode):
    args = ["--wsgi-file", APP_FILE, "--socket-timeout", str(TIMEOUT)]
    if mode == "post-buffering-memory":
        args += ["--post-buffering", str(1 << 20)]
    elif mode == "post-buffering-file":
        args += ["--post-buffering", "1024"]
    srv = uwsgigw_factory(*args)
    body = b"b" * 100_000
    data = packet_for("/sink", "POST", body)
    mark = srv.log_mark()
    with uwsgi_connect(srv.socket) as s:
        s.sendall(data[:len(data) - 50_000])  # half the body, then nothing
        held, answer = time_to_close(s)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert TIMEOUT * 0.8 <= held <= TIMEOUT + 1.0, held
    text = srv.wait_for_log("POST /sink", since=mark)
    assert "Traceback" not in srv.log_text()
    assert len([l for l in text.splitlines() if "POST /sink" in l and "INFO" in l]) == 1, text
    assert timed_get(srv.socket)[1] == 200


def test_trickled_vars_block_is_cut_at_socket_timeout(server):
    """A client that sends one byte just before each read would time out
    must not hold the worker longer than socket-timeout in total: nginx sends
    the whole vars block at once, so only an attacker trickles it."""
    data = packet_for("/ok", HTTP_X_PAD="p" * 200)
    mark = server.log_mark()
    started = time.monotonic()
    closed_after = None
    with uwsgi_connect(server.socket) as s:
        s.settimeout(0.01)
        for i in range(len(data) - 1):  # never the last byte
            if time.monotonic() - started > TIMEOUT * 4 + 2:
                break
            try:
                s.sendall(data[i:i + 1])
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(TIMEOUT * 0.5)
    assert closed_after is not None and closed_after <= TIMEOUT * 2 + 0.5, (
        "a trickling client held the worker for %.1f s (socket-timeout %g s) and was "
        "never cut; log:\n%s" % (time.monotonic() - started, TIMEOUT,
                                 server.log_since(mark)))


# -- filling the pool --------------------------------------------------------------------

@pytest.mark.parametrize("processes,threads", [(2, 1), (1, 3)])
def test_pool_is_full_with_processes_times_threads_slow_clients(uwsgigw_factory, processes,
                                                                threads):
    """P x T silent connections fill the pool for at most socket-timeout; one
    fewer leaves room. Then the pool frees itself without any help."""
    timeout = 1.0
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", str(processes),
                          "--threads", str(threads), "--socket-timeout", str(timeout))
    workers = wait_children(srv.pid, processes)
    capacity = processes * threads
    figures = {}
    for slow in (capacity - 1, capacity, 3 * capacity):
        conns = []
        for _ in range(slow):
            s = uwsgi_connect(srv.socket)
            s.sendall(b"\0")  # one byte of the header, then silence
            conns.append(s)
        time.sleep(0.2)  # let the workers pick them up
        latency, status = timed_get(srv.socket)
        figures[slow] = latency
        assert status == 200
        if slow < capacity:
            assert latency < 0.5, (slow, latency)
        else:
            # Queued behind the slow ones: each costs a thread at most
            # socket-timeout, and the pool works through them in parallel.
            rounds = -(-slow // capacity)
            assert latency >= timeout * 0.5, (slow, latency)
            assert latency <= rounds * timeout + 1.5, (slow, latency, rounds)
        for s in conns:
            s.close()
        time.sleep(timeout + 0.3)  # the slow ones drain
    print("\n%d process(es) x %d thread(s), socket-timeout %gs: latency of a good request "
          "behind N silent connections: %s" % (processes, threads, timeout, ", ".join(
              "N=%d: %.2fs" % kv for kv in figures.items())))
    assert children(srv.pid) == workers


# -- nginx in front -----------------------------------------------------------------------

def _slow_http(port: int, kind: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "headers":
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    else:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
                  + b"x" * 1000)
    return s


def test_nginx_buffering_keeps_slow_clients_off_the_workers(server, nginx_factory):
    """50 slow HTTP clients (half-sent headers or bodies) held open against a
    single worker: through nginx every good request still answers at once and
    uwsgigw never even sees a slow connection."""
    nginx = nginx_factory(server.socket)
    assert http_request(nginx.port, "GET", "/ok").status == 200
    server.wait_for_log("=> generated")  # written after the answer: not counted below
    mark = server.log_mark()
    slow = [_slow_http(nginx.port, "headers" if i % 2 else "body") for i in range(50)]
    latencies = []
    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while time.monotonic() < deadline:
            started = time.monotonic()
            r = http_request(nginx.port, "GET", "/ok", timeout=10)
            latencies.append(time.monotonic() - started)
            assert r.status == 200 and r.body == b"ok"
            big = http_request(nginx.port, "POST", "/sink", body=b"y" * 200_000, timeout=10)
            assert big.status == 200 and big.body.startswith(b"200000 ")
            time.sleep(0.05)
    finally:
        for s in slow:
            s.close()
    text = server.log_since(mark)
    assert "timeout" not in text, text
    # Only the good requests reached uwsgigw (one request log line each).
    assert text.count("=> generated") == 2 * len(latencies), text[-2000:]
    print("\nthrough nginx, 50 slow clients + 1 worker: %d good requests, max latency "
          "%.3fs" % (len(latencies), max(latencies)))
    assert max(latencies) < 0.5, latencies


def test_slow_reader_of_a_response_is_cut_at_socket_timeout(uwsgigw_factory):
    """A client that never reads a big answer: the send blocks, then times out."""
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--socket-timeout", str(TIMEOUT))
    mark = srv.log_mark()
    s = uwsgi_connect(srv.socket)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(packet_for("/stream?size=%d" % (64 << 20)))
    started = time.monotonic()
    text = srv.wait_for_log("GET /stream", since=mark, timeout=TIMEOUT + 5)
    held = time.monotonic() - started
    s.close()
    assert held <= TIMEOUT + 1.5, held
    assert "went away" in text or "timed out" in text, text
    assert "Traceback" not in srv.log_text()
    assert timed_get(srv.socket)[1] == 200


def _signal_pending(pid: int) -> bool:
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return any(int(fields[k], 16) for k in ("SigPnd", "ShdPnd"))


def _waiting_in_poll(pid: int) -> bool:
    with open("/proc/%d/wchan" % pid) as f:
        return "poll" in f.read()


@pytest.mark.parametrize("decoder", ["c", "python"])
def test_a_signal_while_waiting_for_the_packet_does_not_drop_the_request(uwsgigw_factory,
                                                                         decoder):
    """SIGTERM reaches a worker blocked on half a packet: it must still read the
    rest, answer, then stop. (The C reader once took errno after the Python
    signal handler had run, and dropped the request: nginx's 502 during a
    reload under load.)"""
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "1",
                          "--decoder", decoder, "--socket-timeout", "10")
    (worker,) = wait_children(srv.pid, 1)
    data = packet_for("/ok")
    mark = srv.log_mark()
    with uwsgi_connect(srv.socket) as s:
        s.sendall(data[:10])
        wait_until(lambda: _waiting_in_poll(worker), 10, what="the worker to wait in poll")
        os.kill(worker, signal.SIGTERM)
        wait_until(lambda: not _signal_pending(worker), 10, what="the signal's delivery")
        s.sendall(data[10:])
        resp = parse_response(recv_all(s))
    assert resp.status == 200 and resp.body == b"ok"
    assert "error reading the request" not in srv.log_since(mark)
