"""A running server under thousands of mutated packets (issue 6).

While the barrage runs (several client threads, one packet per connection),
valid requests keep going through nginx and straight to the socket. Then:

- no worker died or was replaced (the master's children, by pid, from /proc);
- every answer was a 200 (a mutation that is still a valid request), a
  400/413/431 rejection, or a close without an answer -- never a 500, which
  would mean the server (the app here never raises) broke;
- every valid request got its 200;
- the log holds only one-line, timestamped, rate-limited lines: no
  traceback, no ERROR, and few lines for thousands of bad packets;
- the workers' descriptors and memory did not grow.

``UWSGIGW_HOSTILE_PACKETS`` (default 10000 per decoder) sets the count;
``UWSGIGW_HOSTILE_SEED`` replays one run. The figures are printed (``-s``).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from conftest import DECODERS, http_request, nginx_vars, parse_response, uwsgi_connect, \
    uwsgi_request
from fuzz.mutate import MUTATORS, hostile_packets
from soak.procinfo import APP_FILE, LOG_LINE, children, fds, kb, wait_children

COUNT = int(os.environ.get("UWSGIGW_HOSTILE_PACKETS", "10000"))
SEED = int(os.environ.get("UWSGIGW_HOSTILE_SEED", "6"))
CLIENTS = 4
ALLOWED = {200, 400, 413, 431}
# Rate-limit keys a bad packet can hit (log.rate_limited: one line per key per
# second per worker): the ProtocolError classes, EOF, read timeout and errors.
RATE_KEYS = 12


def send_hostile(addr: str, data: bytes) -> int:
    """One packet, half-close, read the answer: its status, or 0 for none."""
    try:
        with uwsgi_connect(addr, timeout=10) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            chunks = []
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
    except socket.timeout:
        return -1  # the server neither answered nor closed in 10 s: a hang
    raw = b"".join(chunks)
    if not raw:
        return 0
    try:
        return parse_response(raw).status
    except AssertionError:
        return -2  # not an HTTP answer at all


@pytest.mark.parametrize("decoder", DECODERS)
def test_mutated_packets_do_not_hurt_the_server(uwsgigw_factory, nginx_factory, decoder):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--decoder", decoder, "--master",
                          "--processes", "2", "--socket-timeout", "2", "--disable-logging",
                          "--buffer-size", "8192")
    nginx = nginx_factory(srv.socket)
    workers = wait_children(srv.pid, 2)
    assert http_request(nginx.port, "GET", "/ok").status == 200
    fd_before = {pid: len(fds(pid)) for pid in workers}
    rss_before = {pid: kb(pid, "VmRSS") for pid in workers}
    mark = srv.log_mark()

    rng = random.Random(SEED)
    packets = list(hostile_packets(rng, COUNT))
    results: dict[str, dict[int, int]] = {k: {} for k in MUTATORS}
    lock = threading.Lock()
    stop = threading.Event()
    valid = {"nginx": 0, "direct": 0}
    bad_valid: list = []

    def barrage(part: list) -> None:
        for n, (kind, data) in enumerate(part):
            status = send_hostile(srv.socket, data)
            with lock:
                results[kind][status] = results[kind].get(status, 0) + 1
            if n % 100 == 99:  # a valid request straight to the socket
                r = parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/ok")))
                with lock:
                    valid["direct"] += 1
                    if r.status != 200:
                        bad_valid.append(("direct", r.status))

    def through_nginx() -> None:
        while not stop.is_set():
            r = http_request(nginx.port, "GET", "/ok", timeout=30)
            valid["nginx"] += 1
            if r.status != 200 or r.body != b"ok":
                bad_valid.append(("nginx", r.status, r.body[:100]))
            time.sleep(0.002)

    started = time.monotonic()
    checker = threading.Thread(target=through_nginx, daemon=True)
    checker.start()
    threads = [threading.Thread(target=barrage, args=(packets[i::CLIENTS],), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    stop.set()
    checker.join(30)
    elapsed = time.monotonic() - started

    statuses: dict[int, int] = {}
    for per_kind in results.values():
        for status, n in per_kind.items():
            statuses[status] = statuses.get(status, 0) + n
    text = srv.log_since(mark)
    lines = [l for l in text.splitlines() if l.strip()]
    print("\n%s decoder: %d hostile packets in %.1f s (%d clients); answers %s; "
          "valid requests: %d through nginx, %d direct, all 200: %s; %d log lines "
          "(%d warnings)" % (decoder, COUNT, elapsed, CLIENTS, dict(sorted(statuses.items())),
                             valid["nginx"], valid["direct"], not bad_valid, len(lines),
                             sum(" WARNING " in l for l in lines)))
    for kind, per_kind in results.items():
        print("  %-20s %s" % (kind, dict(sorted(per_kind.items()))))

    assert sum(statuses.values()) == COUNT
    assert set(statuses) <= ALLOWED | {0}, results
    assert not bad_valid, bad_valid[:10]
    assert valid["nginx"] > 10 and valid["direct"] >= COUNT // 100 - CLIENTS
    # No worker died or was replaced; the master is the one we started.
    assert srv.alive()
    assert children(srv.pid) == workers
    for word in ("Traceback", " ERROR ", "died", "spawned", "internal error"):
        assert word not in text, "%r in the log:\n%s" % (word, text[-3000:])
    # One line per event, each a timestamped log line; rate limited per kind
    # (at most one line per second per kind and worker).
    assert all(LOG_LINE.match(l) for l in lines), [l for l in lines if not LOG_LINE.match(l)]
    warnings = [l for l in lines if " WARNING " in l]
    assert len(warnings) <= RATE_KEYS * 2 * (elapsed + 2), len(warnings)
    # A client that leaves mid-body is an event of its own: one INFO line each.
    info = [l for l in lines if " INFO " in l]
    assert all(("went away" in l or "not received" in l) for l in info), info[:5]
    assert len(info) <= statuses.get(0, 0)
    # Nothing leaked: descriptors back to where they were, memory about flat.
    time.sleep(0.2)
    for pid in workers:
        assert len(fds(pid)) <= fd_before[pid] + 1, (fds(pid), fd_before[pid])
        assert kb(pid, "VmRSS") - rss_before[pid] < 16 * 1024, "RSS grew by %d kB" % (
            kb(pid, "VmRSS") - rss_before[pid])


def test_smuggled_request_after_short_body_is_never_served(uwsgigw_factory):
    """CONTENT_LENGTH shorter than what follows: the rest is not a request."""
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--socket-timeout", "2")
    from fuzz.mutate import base_vars, packet
    rng = random.Random(1)
    smuggled = packet(base_vars(rng, "/pid"))
    body = b"12345"
    pairs = base_vars(rng, "/sink", body, method="POST")
    data = packet(pairs, body) + smuggled
    raw = b""
    with uwsgi_connect(srv.socket) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    assert raw.count(b"HTTP/1.1 ") == 1
    resp = parse_response(raw)
    assert resp.status == 200 and resp.body.startswith(b"5 ")


def test_half_open_hostile_connections_are_cut_at_socket_timeout(uwsgigw_factory):
    """The barrage above half-closes; these do not, and must still be released."""
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--decoder", "c", "--master",
                          "--processes", "2", "--socket-timeout", "1")
    workers = wait_children(srv.pid, 2)
    rng = random.Random(SEED)
    conns = []
    started = time.monotonic()
    for kind, data in hostile_packets(rng, 40):
        s = uwsgi_connect(srv.socket, timeout=10)
        try:
            s.sendall(data)
        except OSError:
            pass
        conns.append(s)
    # Each connection costs a worker at most socket-timeout; 40 over 2 workers.
    for s in conns:
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    elapsed = time.monotonic() - started
    assert elapsed < 40 / 2 * 1.0 + 5, elapsed
    assert parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/ok"))).status == 200
    assert children(srv.pid) == workers
    assert "Traceback" not in srv.log_text()
