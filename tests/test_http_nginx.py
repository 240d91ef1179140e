"""Issue 14: the HTTP listener behind the real nginx (nginx/site-http.conf:
proxy_pass with upstream keep-alive), and the trust in X-Forwarded-* headers.

Django's own views run over proxy_pass in test_nginx_django.py (its "-http"
sites); here: request bodies nginx streams (``proxy_request_buffering off``,
chunked), a reload under load with kept-alive upstream connections, a POST
after an idle period, upstream keep-alive off, and forwarded-allow-ips.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from conftest import wait_until
from framed_client import Connection, fetch

# The HTTP paths (test_http_listener.py says which is which).
KINDS = {"wsgi-c": ("--module", "field_apps:wsgi", "--threads", "1"),
         "wsgi-pool": ("--module", "field_apps:wsgi", "--threads", "2"),
         "wsgi-py": ("--module", "field_apps:wsgi", "--threads", "2", "--decoder", "python"),
         "asgi": ("--module", "field_apps:asgi")}


def chunked_post(port: int, path: str, pieces: list[bytes]):
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return fetch(port, path, method="POST", body=body,
                 headers={"Transfer-Encoding": "chunked"})


@pytest.mark.parametrize("kind", list(KINDS))
def test_chunked_upload_streamed_by_nginx_is_dechunked(factories, kind):
    """proxy_request_buffering off: nginx passes the client's chunked body on
    as it comes; the app gets it whole, with CONTENT_LENGTH."""
    server = factories.uwsgigw(*KINDS[kind], http=True)
    nginx = factories.nginx(server.socket, site="site-http.conf",
                            upstream_extra="proxy_request_buffering off;")
    pieces = [os.urandom(1000) for _ in range(300)]
    r = chunked_post(nginx.port, "/echo", pieces)
    meta, _, body = r.body.partition(b"\n")
    assert r.status == 200 and body == b"".join(pieces)
    assert meta == b"POST %d -" % len(body)


@pytest.mark.parametrize("keepalive", [True, False], ids=["upstream-keepalive", "no-keepalive"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_requests_through_nginx(factories, kind, keepalive):
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "2", http=True)
    nginx = factories.nginx(server.socket, site="site-http.conf", http_keepalive=keepalive)
    for i in range(20):
        r = fetch(nginx.port, "/stream-ok?n=%d" % i)
        assert r.status == 200 and r.complete, r.raw[:300]
        r = fetch(nginx.port, "/echo", method="POST", body=b"x" * 5000)
        assert r.body.endswith(b"\n" + b"x" * 5000)


def test_a_post_after_an_idle_period_succeeds(factories):
    """nginx closes its idle upstream connection (keepalive_timeout 1s) before
    uwsgigw does (http-keepalive-timeout 3 s): the POST never meets a
    connection the server is closing."""
    server = factories.uwsgigw(*KINDS["wsgi-c"], "--http-keepalive-timeout", "3", http=True)
    nginx = factories.nginx(server.socket, site="site-http.conf")
    # the upstream's keepalive_timeout: 1s for the test (nginx's default is 60s)
    text = open(nginx.workdir + "/site.conf").read().replace(
        "keepalive 16;", "keepalive 16;\n    keepalive_timeout 1s;")
    open(nginx.workdir + "/site.conf", "w").write(text)
    os.kill(nginx.pid, signal.SIGHUP)
    wait_until(lambda: "reconfiguring" in nginx.error_log(), 10, what="nginx reload")
    for _ in range(3):
        assert fetch(nginx.port, "/echo", method="POST", body=b"a").status == 200
        time.sleep(1.5)  # idle: past nginx's upstream timeout, within uwsgigw's
    assert "prematurely" not in nginx.error_log()


@pytest.mark.parametrize("kind", list(KINDS))
def test_reload_under_load_loses_no_request(factories, kind):
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "2", http=True)
    nginx = factories.nginx(server.socket, site="site-http.conf")
    statuses: list[int] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            r = fetch(nginx.port, "/echo", method="POST", body=b"payload")
            statuses.append(r.status if r.complete else -1)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: len(statuses) > 20, 10, what="traffic")
        for n in range(1, 4):
            mark = server.log_mark()
            os.kill(server.pid, signal.SIGHUP)
            server.wait_for_log("reloaded in", "exited (reload", since=mark, timeout=20)
            count = len(statuses)
            wait_until(lambda: len(statuses) > count + 10, 10, what="traffic after reload")
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    errors = [line for line in nginx.error_log().splitlines() if "[error]" in line]
    assert set(statuses) == {200}, ({s: statuses.count(s) for s in set(statuses)}, errors[:5])
    assert "prematurely" not in nginx.error_log() and "502" not in nginx.access_log()


# -- forwarded-allow-ips ---------------------------------------------------------------------

def env_of(port: int, headers: dict) -> dict:
    with Connection(port) as c:
        c.send(b"GET /env HTTP/1.1\r\nHost: t\r\n" + b"".join(
            b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items()) + b"\r\n")
        return json.loads(c.response().body)


@pytest.mark.parametrize("kind", list(KINDS))
def test_forwarded_headers_count_from_trusted_proxies_only(factories, kind):
    trusted = factories.uwsgigw(*KINDS[kind], http=True)  # default: loopback is trusted
    port = int(trusted.socket.rpartition(":")[2])
    env = env_of(port, {"X-Forwarded-For": "6.6.6.6, 10.1.2.3", "X-Forwarded-Proto": "https"})
    # the nearest hop the trusted proxy saw, not what the client wrote first
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["scheme"] == "https"
    env = env_of(port, {"X-Forwarded-For": "10.1.2.3, 127.0.0.1"})
    assert env["REMOTE_ADDR"] == "10.1.2.3"  # a trusted hop is skipped
    untrusted = factories.uwsgigw(*KINDS[kind], "--forwarded-allow-ips", "10.9.9.9",
                                  http=True)
    env = env_of(int(untrusted.socket.rpartition(":")[2]),
                 {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"  # still there, as a plain header


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_client_address_through_nginx(factories, kind):
    server = factories.uwsgigw(*KINDS[kind], http=True)
    nginx = factories.nginx(server.socket, site="site-http.conf")
    # The client is at 127.0.0.2: not in forwarded-allow-ips (127.0.0.1/32, ::1),
    # as a real client is not; nginx connects to uwsgigw from 127.0.0.1.
    env = json.loads(fetch(nginx.port, "/env", headers={"X-Forwarded-For": "6.6.6.6"},
                           source="127.0.0.2").body)
    # nginx appended the client it saw; the spoofed hop before it counts for nothing
    assert env["REMOTE_ADDR"] == "127.0.0.2" and env["HTTP_X_FORWARDED_FOR"] == \
        "6.6.6.6, 127.0.0.2"
