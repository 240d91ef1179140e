"""Issue 14: the HTTP listener (``http-socket``), straight from clients.

Real servers on ``--http-socket`` with the same app as WSGI and as ASGI
(tests/apps/field_apps.py): keep-alive and pipelining, HTTP/1.0, HEAD and
the bodiless statuses, chunked and 100-continue request bodies, the
smuggling classes refused with the connection closed, timeouts for idle and
slow clients, a worker's retirement, and responses cut short.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from conftest import wait_until
from framed_client import Connection, fetch

# Each HTTP path: connections start on the C path (asgi/http_front.py),
# which hands what it declines to llhttp's driver (http_connection.py); a
# WSGI app with one thread runs on the loop's thread, with two in the pool
# (answered by C there); with the Python decoder every request takes
# llhttp's driver; an ASGI app runs in a task.
KINDS = {
    "wsgi-c": ("--module", "field_apps:wsgi", "--threads", "1"),
    "wsgi-pool": ("--module", "field_apps:wsgi", "--threads", "2"),
    "wsgi-py": ("--module", "field_apps:wsgi", "--threads", "2", "--decoder", "python"),
    "asgi": ("--module", "field_apps:asgi"),
}
FIRST = b"first chunk\n"


@pytest.fixture(scope="module", params=list(KINDS))
def server(request, module_factories):
    """One server per path, 1 worker, short timeouts."""
    return module_factories.uwsgigw(
        *KINDS[request.param], "--master", "--processes", "1",
        "--http-keepalive-timeout", "3", "--http-headers-timeout", "2",
        "--socket-timeout", "3", "--limit-post", "1000000", http=True)


def port_of(server) -> int:
    return int(server.socket.rpartition(":")[2])


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return ("GET %s HTTP/%s\r\nHost: t\r\n%s\r\n" % (path, version, extra)).encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
             % (path, len(body), extra)).encode() + body)


def chunked(path: str, pieces: list[bytes], extra: str = "") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return ("POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n%s\r\n"
            % (path, extra)).encode() + body


# -- keep-alive, pipelining, versions ------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection(server):
    with Connection(port_of(server)) as c:
        for i in range(3):
            c.send(get("/status?code=200&n=%d" % i))
            r = c.response()
            assert r.status == 200 and r.complete and r.body == b"should not be sent"
            assert r.header("connection") is None and r.header("date")
        c.send(get("/stream-ok"))  # no length: chunked, and still kept
        r = c.response()
        assert r.header("transfer-encoding") == "chunked" and r.complete
        assert r.body == FIRST + b"second chunk\nlast chunk\n"
        c.send(get("/status?code=200", "Connection: close\r\n"))
        r = c.response()
        assert r.status == 200 and r.header("connection") == "close"
        assert c.closed_by_server()


def test_pipelined_requests_are_answered_in_order(server):
    with Connection(port_of(server)) as c:
        c.send(get("/slow?s=0.2") + post("/echo", b"second") + get("/status?code=404"))
        first, second, third = c.response(), c.response(), c.response()
        assert (first.status, first.body) == (200, b"slept")
        assert second.body.endswith(b"\nsecond") and third.status == 404


def test_requests_sent_while_one_runs_wait_their_turn(server):
    """Sent while the first runs (the C path keeps them, up to a bound, and
    reads the rest later): answered in order, then the client's close ends
    the connection."""
    with Connection(port_of(server)) as c:
        c.send(get("/slow?s=0.5"))
        time.sleep(0.2)  # the first is running
        big = b"x" * 100000  # more than the C path keeps while a request runs
        c.send(get("/status?code=404") + post("/echo", big) + get("/status?code=201"))
        c.sock.shutdown(socket.SHUT_WR)  # the client is done sending
        answers = [c.response() for _ in range(4)]
        assert [r.status for r in answers] == [200, 404, 200, 201], server.log_text()[-2000:]
        assert answers[2].body.endswith(b"\n" + big)
        assert c.closed_by_server()


def test_http_1_0_closes_unless_kept_alive(server):
    with Connection(port_of(server)) as c:
        c.send(get("/stream-ok", version="1.0"))
        r = c.response()  # no length on HTTP/1.0: the close ends it
        assert r.body == FIRST + b"second chunk\nlast chunk\n"
        assert r.header("transfer-encoding") is None and c.closed_by_server()
    with Connection(port_of(server)) as c:
        c.send(get("/status?code=200", "Connection: keep-alive\r\n", version="1.0"))
        r = c.response()
        assert r.header("connection") == "keep-alive"
        c.send(get("/status?code=404", version="1.0"))
        assert c.response().status == 404 and c.closed_by_server()


def test_head_204_304_have_no_body(server):
    with Connection(port_of(server)) as c:
        c.send(b"HEAD /status?code=200 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response("HEAD")
        assert r.status == 200 and r.header("content-length") == "18"
        for code in (204, 304):
            c.send(get("/status?code=%d&te=1" % code))
            r = c.response()
            assert r.status == code and r.header("content-length") is None
            assert r.header("transfer-encoding") is None and r.header("x-kept") == "yes"
        c.send(get("/status?code=200"))  # the connection is still in step
        assert c.response().body == b"should not be sent"


def test_environ_from_http(server):
    """The environ (WSGI) or scope (ASGI) of a request that came over HTTP."""
    with Connection(port_of(server)) as c:
        c.send(b"GET /env?q=1 HTTP/1.1\r\nHost: example.org:8080\r\nX_Forwarded_For: 6.6.6.6\r\n"
               b"X-Forwarded-For: 1.2.3.4\r\n\r\n")
        env = json.loads(c.response().body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "8080")
    # the peer (loopback) is in the default forwarded-allow-ips: its X-Forwarded-For
    # counts, and the underscore spelling is dropped, not merged into it
    assert env["REMOTE_ADDR"] == "1.2.3.4" and env["QUERY_STRING"] == "q=1"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4" and env["REQUEST_URI"] == "/env?q=1"


# -- request bodies ----------------------------------------------------------------------

def test_chunked_body_is_dechunked_with_a_content_length(server):
    with Connection(port_of(server)) as c:
        c.send(chunked("/echo", [b"abc", b"defgh", b"i" * 70000]))
        r = c.response()
        meta, _, body = r.body.partition(b"\n")
        assert body == b"abcdefgh" + b"i" * 70000
        assert meta == b"POST %d -" % len(body)  # CONTENT_LENGTH set, no Transfer-Encoding


def test_expect_100_continue(server):
    with Connection(port_of(server)) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.response()
        assert interim.status == 100
        c.send(b"hello")
        assert c.response().body.endswith(b"\nhello")


def test_limit_post_refuses_before_and_while_reading(server):
    with Connection(port_of(server)) as c:  # declared: 413 before any 100 Continue
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.response()
        assert r.status == 413 and r.header("connection") == "close"
        assert c.closed_by_server()
    with Connection(port_of(server)) as c:  # chunked: counted while it arrives
        c.send(chunked("/echo", [b"x" * 600000, b"y" * 600000]))
        assert c.response().status == 413 and c.closed_by_server()


# -- refusals ----------------------------------------------------------------------------

REFUSED = [
    ("CL and TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two lengths", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
    ("gzip then chunked", b"POST / HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ("head too large", b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"v" * 5000 + b"\r\n\r\n", 431),
    # read in pieces or at once, on the C path or llhttp's, a long target is
    # a 414, and the answer arrives whole before the close (no reset)
    ("target too long", b"GET /" + b"t" * 40000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ("uwsgi packet", b"\x00\x10\x00\x00" + b"\x00" * 16, 400),
]


_last_refusal: dict = {}


def test_a_refused_upload_still_gets_its_413(server):
    """Over limit-post, the client still sending its body: the 413 is read
    whole, the rest of the body dropped (a close with unread bytes would
    reset the connection and could destroy the answer)."""
    with Connection(port_of(server)) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n" +
               b"u" * 300000)
        r = c.response()
        assert r.status == 413 and r.complete and r.header("connection") == "close", r.raw
        assert c.closed_by_server()


@pytest.mark.parametrize("name,data,status", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_requests_are_refused_and_the_connection_closed(server, name, data, status):
    # The log says one refusal of a kind per second (log.rate_limited): wait
    # out the window the previous case opened, so this one's line is written.
    time.sleep(max(0.0, 1.05 - (time.monotonic() - _last_refusal.get(server.pid, -9))))
    _last_refusal[server.pid] = time.monotonic()
    mark = server.log_mark()
    with Connection(port_of(server)) as c:
        c.send(get("/status?code=200") + data + get("/status?code=404"))
        assert c.response().status == 200  # the good request before it is answered
        r = c.response()
        assert r.status == status and r.header("connection") == "close", r.raw
        assert c.closed_by_server()  # and nothing after it is
    server.wait_for_log("bad request", since=mark)


# -- timeouts, slow and idle clients --------------------------------------------------

def test_idle_keep_alive_connection_is_closed_at_its_timeout(server):
    with Connection(port_of(server)) as c:
        c.send(get("/status?code=200"))
        assert c.response().status == 200
        started = time.monotonic()
        assert c.closed_by_server(timeout=10)
        assert 2 < time.monotonic() - started < 8  # http-keepalive-timeout 3


def test_slow_head_is_cut_at_the_headers_timeout(server):
    with Connection(port_of(server)) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the end
        started = time.monotonic()
        assert c.closed_by_server(timeout=10)
        assert 1 < time.monotonic() - started < 8  # http-headers-timeout 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_clients_that_reset_after_half_a_head_hold_nothing(factories, kind):
    """Part of a head and a reset in one go: the connection closes then, not
    at http-headers-timeout (uvloop's watcher died on the pending reset, so
    40 such packets kept a worker of async-concurrency 20 from accepting)."""
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                               "--async-concurrency", "20", http=True)
    port = port_of(server)
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /stat")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()  # SO_LINGER 0: a reset
    r = fetch(port, "/status?code=200", timeout=5)
    assert r.status == 200 and r.complete


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_reset_does_not_make_a_tcp_peer_a_trusted_proxy(factories, kind):
    """A request with a reset right behind it is still read and run, but
    getpeername() fails by then: the peer has no address, which must not pass
    for a unix socket's (always trusted) and let X-Forwarded-For choose
    REMOTE_ADDR."""
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                               "--forwarded-allow-ips", "10.9.9.9", http=True)
    port = port_of(server)
    mark = server.log_mark()
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(get("/status?code=299", "X-Forwarded-For: 6.6.6.6\r\n"))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()  # SO_LINGER 0: a reset
    assert fetch(port, "/status?code=200").status == 200
    log = server.wait_for_log("GET /status?code=299", "GET /status?code=200", since=mark)
    assert "6.6.6.6" not in log


def test_idle_and_slow_crowds_do_not_starve_other_clients(server):
    """1 worker (1 thread on the C path); 200 idle kept-alive connections and 50 clients
    sending half a head: others are served all the while (a functional bound,
    not a timing)."""
    port = port_of(server)
    crowd = []
    try:
        for i in range(200):
            c = Connection(port)
            c.send(get("/status?code=200"))
            assert c.response().status == 200
            crowd.append(c)
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
            crowd.append(s)
        for i in range(20):
            r = fetch(port, "/status?code=200", timeout=10)
            assert r.status == 200 and r.complete
    finally:
        for c in crowd:
            c.close()


# -- lifecycle -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_a_retiring_worker_closes_idle_connections_and_answers_with_close(factories, kind):
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1", http=True)
    port = port_of(server)
    with Connection(port) as idle, Connection(port) as busy:
        idle.send(get("/status?code=200"))
        assert idle.response().status == 200
        busy.send(get("/slow?s=4"))
        time.sleep(0.3)  # the slow request is running (no signal to wait on)
        mark = server.log_mark()
        os.kill(server.pid, signal.SIGHUP)
        # The old worker is told to stop while its request runs: the reload
        # (a re-exec of the master) takes well under the 4 s the app sleeps.
        server.wait_for_log("retiring 1 old worker", since=mark, timeout=8)
        r = busy.response()
        assert r.status == 200 and r.body == b"slept" and r.header("connection") == "close"
        assert idle.closed_by_server(timeout=10) and busy.closed_by_server()
    assert fetch(port, "/status?code=200").status == 200  # the new worker serves


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_stopping_worker_answers_a_request_on_a_freshly_kept_connection(factories, kind):
    """The race a proxy loses if idle connections close at once: nginx sends a
    POST on a kept-alive connection just as the worker stops (recycling here,
    max-requests 3). The worker keeps such a connection until it has been
    quiet for a second: the POST is answered, with Connection: close."""
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                               "--max-requests", "3", http=True)
    port = port_of(server)
    with Connection(port) as fresh, Connection(port) as quiet, Connection(port) as last:
        for c in (fresh, quiet, last):  # the third answer makes the worker stop
            c.send(get("/status?code=200"))
            assert c.response().status == 200
        server.wait_for_log("recycling: max-requests 3 reached")  # it is stopping now
        # The connection whose answer reached the limit was kept alive by
        # that answer: it too must answer (with close), not just close.
        last.send(get("/status?code=200"))
        r = last.response()
        assert r.status == 200 and r.header("connection") == "close"
        assert last.closed_by_server()
        fresh.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody")
        r = fresh.response()
        assert r.status == 200 and r.body.endswith(b"\nbody") and r.header("connection") == "close"
        assert fresh.closed_by_server()
        assert quiet.closed_by_server(timeout=10)  # quiet for a second: closed
    assert fetch(port, "/status?code=200").status == 200  # its successor serves


@pytest.mark.parametrize("kind", list(KINDS))
def test_max_requests_holds_for_a_pipelined_batch(factories, kind):
    """max-requests 5 and 20 requests pipelined in one send: the worker
    answers up to its limit and one more with Connection: close (the answer
    that reached the limit was sent kept-alive), then closes; its successor
    serves."""
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                               "--max-requests", "5", http=True)
    port = port_of(server)
    with Connection(port) as c:
        c.send(b"".join(get("/status?code=200") for _ in range(20)))
        answers = []
        for _ in range(20):
            r = c.response()
            if r.status == 0:  # the server closed
                break
            answers.append(r)
    assert 5 <= len(answers) <= 6, [r.raw[:80] for r in answers]
    assert all(r.status == 200 for r in answers)
    assert answers[-1].header("connection") == "close"
    server.wait_for_log("recycling: max-requests 5 reached")
    wait_until(lambda: fetch(port, "/status?code=200").status == 200, 10,
               what="the next worker")


def test_http_keepalive_off_closes_every_connection(factories):
    # uWSGI's spelling, http-keepalive = 0 (here from the environment)
    server = factories.uwsgigw(*KINDS["wsgi-c"], env={"UWSGIGW_HTTP_KEEPALIVE": "0"},
                               http=True)
    with Connection(port_of(server)) as c:
        c.send(get("/status?code=200"))
        assert c.response().header("connection") == "close" and c.closed_by_server()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_response_cut_short_is_visibly_incomplete(factories, kind):
    server = factories.uwsgigw(*KINDS[kind], http=True)
    mark = server.log_mark()
    r = fetch(port_of(server), "/stream-fail")
    assert r.status == 200 and r.header("transfer-encoding") == "chunked"
    assert not r.complete and r.body == FIRST
    server.wait_for_log("exception in the app for GET /stream-fail", since=mark)
    wait_until(lambda: fetch(port_of(server), "/status?code=200").status == 200, 5)
