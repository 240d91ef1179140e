"""Issue 14: WebSockets for ASGI apps on an HTTP socket (asgi/websocket.py),
straight from clients and through the real nginx (nginx/site-http.conf:
proxy_pass with the Upgrade and Connection headers).

The client is the ``websockets`` library's sync client; the app is
tests/apps/ws_apps.py, which writes what it saw at a session's end (the
disconnect code) into the record directory. Each test runs on both routes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid

import pytest
import websockets
from conftest import read_record, wait_until
from framed_client import Connection
from websockets.sync.client import connect

ROUTES = ["direct", "nginx"]
MAX_KB = 64  # --websockets-max-size of the servers here
SERVER_ARGS = ("--module", "ws_apps:app", "--master", "--processes", "1",
               "--websockets-max-size", str(MAX_KB), "--http-keepalive-timeout", "1",
               "--http-headers-timeout", "1", "--socket-timeout", "3", "--harakiri", "2")


class Site:
    def __init__(self, server, port: int, route: str, records) -> None:
        self.server, self.port, self.route, self.records = server, port, route, records

    def url(self, path: str) -> str:
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def connect(self, path: str, **kw):
        kw.setdefault("open_timeout", 10)
        return connect(self.url(path), proxy=None, ping_interval=None, close_timeout=5,
                       **kw)

    def record(self, tag: str) -> str:
        return read_record(self.records, tag)

    def wait_record(self, tag: str, text: str) -> str:
        return wait_until(lambda: text in self.record(tag) and self.record(tag), 10,
                          what="%r in record %s" % (text, tag))


def _port(server) -> int:
    return int(server.socket.rpartition(":")[2])


def start_site(factories, route: str, records, *args: str) -> Site:
    server = factories.uwsgigw(*SERVER_ARGS, *args, http=True,
                               env={"ASGI_APPS_RECORD_DIR": str(records)})
    if route == "direct":
        return Site(server, _port(server), route, records)
    nginx = factories.nginx(server.socket, site="site-http.conf")
    return Site(server, nginx.port, route, records)


@pytest.fixture(scope="module", params=ROUTES)
def site(request, module_factories, record_dir) -> Site:
    """One server (1 worker) per route, and nginx in front of it for "nginx"."""
    return start_site(module_factories, request.param, record_dir)


def tag() -> str:
    return uuid.uuid4().hex[:12]


def closed_by_server(ws, timeout: float = 10):
    """The close frame the server sent (ConnectionClosed.rcvd)."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    return info.value.rcvd


# -- messages --------------------------------------------------------------------------

def test_echo_text_binary_and_fragmented_messages(site):
    with site.connect("/ws/echo") as ws:
        ws.send("hello, wörld")
        assert ws.recv(timeout=10) == "hello, wörld"
        ws.send(b"\x00\x01\xff" * 1000)
        assert ws.recv(timeout=10) == b"\x00\x01\xff" * 1000
        ws.send(["frag", "mented ", "täxt"])  # one message in three frames
        assert ws.recv(timeout=10) == "fragmented täxt"
        ws.send([b"a" * 30000, b"b" * 30000])
        assert ws.recv(timeout=10) == b"a" * 30000 + b"b" * 30000
        for i in range(50):
            ws.send("message %d" % i)
        assert [ws.recv(timeout=10) for _ in range(50)] == ["message %d" % i
                                                            for i in range(50)]


def test_ping_is_answered(site):
    with site.connect("/ws/echo") as ws:
        assert ws.ping(b"are you there").wait(10)
        ws.send("still echoing")
        assert ws.recv(timeout=10) == "still echoing"


def test_subprotocol_headers_and_scope(site):
    import json
    with site.connect("/ws/scope?subprotocol=chat.v2&x=1",
                      subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["x-ws-app"] == "ws_apps"
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert "method" not in scope and scope["path"] == "/ws/scope"
    assert scope["query_string"] == "subprotocol=chat.v2&x=1"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["asgi"]["spec_version"] == "2.4"
    headers = dict(scope["headers"])
    assert headers["upgrade"].lower() == "websocket" and "sec-websocket-key" in headers
    assert scope["client"][0] == "127.0.0.1"  # through nginx: from X-Forwarded-For


def test_first_frame_sent_with_the_handshake_is_not_lost(site):
    """The bytes after the Upgrade head (here a whole frame, sent with the
    head in one write) belong to the WebSocket."""
    payload = b"early"
    mask = b"\x01\x02\x03\x04"
    frame = b"\x81" + bytes([0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    with Connection(site.port) as c:
        c.send(b"GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n" + frame)
        got = b""
        c.sock.settimeout(10)
        while b"\x81\x05early" not in got:
            data = c.sock.recv(4096)
            assert data, got
            got += data
    assert got.startswith(b"HTTP/1.1 101 ")
    # RFC 6455 1.3's example key and its accept token
    assert b"\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n" in got.lower()


# -- closing, both ways ---------------------------------------------------------------------

def test_server_close_code_and_reason_reach_the_client(site):
    t = tag()
    with site.connect("/ws/close?code=4001&reason=bye&tag=" + t) as ws:
        rcvd = closed_by_server(ws)
    assert (rcvd.code, rcvd.reason) == (4001, "bye")
    # the app's receive() after its close: the disconnect, with its code
    assert site.wait_record(t, "after close:") == "after close: websocket.disconnect 4001\n"


def test_client_close_code_reaches_the_app(site):
    t = tag()
    with site.connect("/ws/echo?tag=" + t) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        ws.close(4002, "client leaves")
    site.wait_record(t, "disconnect 4002")


def test_a_vanished_client_is_a_disconnect_1006(site):
    t = tag()
    with site.connect("/ws/echo?tag=" + t) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection ends
        site.wait_record(t, "disconnect 1006")


def test_app_returning_closes_with_1000(site):
    with site.connect("/ws/return") as ws:
        assert ws.recv(timeout=10) == "bye"
        assert closed_by_server(ws).code == 1000


def test_oversized_message_closes_with_1009(site):
    mark = site.server.log_mark()
    for pieces in ([b"x" * (MAX_KB * 1024 + 1)], ["y" * 40000, "y" * 40000]):
        t = tag()
        with site.connect("/ws/echo?tag=" + t, max_size=None) as ws:
            ws.send(b"small")
            assert ws.recv(timeout=10) == b"small"
            try:  # the close may come while the client still sends
                ws.send(pieces if len(pieces) > 1 else pieces[0])
            except websockets.ConnectionClosed as exc:
                rcvd = exc.rcvd
            else:
                rcvd = closed_by_server(ws)
            assert rcvd.code == 1009
        site.wait_record(t, "disconnect 1009")
    # (one line per second at most: log.rate_limited)
    site.server.wait_for_log("over %d KB (websockets-max-size); closed with 1009" % MAX_KB,
                             since=mark)
    with site.connect("/ws/echo", max_size=None) as ws:  # at the limit: fine
        ws.send(b"z" * (MAX_KB * 1024))
        assert ws.recv(timeout=10) == b"z" * (MAX_KB * 1024)


# -- refusals and failures ----------------------------------------------------------------

def test_close_before_accept_is_a_403(site):
    with pytest.raises(websockets.InvalidStatus) as info:
        site.connect("/ws/reject")
    assert info.value.response.status_code == 403


def test_the_http_response_extension_sends_the_apps_answer(site):
    with pytest.raises(websockets.InvalidStatus) as info:
        site.connect("/ws/http-reject")
    response = info.value.response
    assert response.status_code == 401 and response.body == b"no entry"
    assert response.headers["x-refused"] == "yes"


@pytest.mark.parametrize("path", ["/ws/error-before", "/ws/no-accept"])
def test_an_app_failing_before_accept_is_a_500(site, path):
    mark = site.server.log_mark()
    with pytest.raises(websockets.InvalidStatus) as info:
        site.connect(path)
    assert info.value.response.status_code == 500
    site.server.wait_for_log("exception in the app for GET /ws/error-before"
                             if path == "/ws/error-before" else
                             "the app returned without sending a response to GET /ws/no-accept",
                             since=mark)


def test_an_app_failing_after_accept_closes_with_1011(site):
    mark = site.server.log_mark()
    with site.connect("/ws/error-after") as ws:
        assert ws.recv(timeout=10) == "about to fail"
        assert closed_by_server(ws).code == 1011
    site.server.wait_for_log("exception in the app for GET /ws/error-after",
                             "RuntimeError: failing after accept (test)", since=mark)


# -- the connection's life ------------------------------------------------------------------

def test_an_idle_websocket_outlives_the_http_timeouts(site):
    """http-keepalive-timeout and http-headers-timeout are 1 s here, harakiri
    2 s: they bound HTTP waits and requests, not a WebSocket's life."""
    with site.connect("/ws/echo") as ws:
        time.sleep(2.5)  # idle on purpose: past the HTTP timeouts and harakiri
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


def test_each_session_has_a_request_log_line(site):
    t = tag()
    mark = site.server.log_mark()
    with site.connect("/ws/echo?tag=" + t) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    text = site.server.wait_for_log("GET /ws/echo?tag=%s => generated" % t, since=mark)
    line = [x for x in text.splitlines() if "tag=%s =>" % t][0]
    assert "(HTTP/1.1 101)" in line, line


def test_many_concurrent_websockets(site):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(site.connect("/ws/echo")) for _ in range(100)]
        for round_ in range(3):
            for i, ws in enumerate(sockets):
                ws.send("%d/%d" % (i, round_))
            for i, ws in enumerate(sockets):
                assert ws.recv(timeout=20) == "%d/%d" % (i, round_)


@pytest.mark.parametrize("sig", ["TERM", "HUP"])
@pytest.mark.parametrize("route", ROUTES)
def test_server_stop_and_reload_close_websockets_with_1001(factories, record_dir, route, sig):
    """TERM: the server stops; HUP: the old worker retires once the new one
    accepts. Either way its WebSockets get 1001 (going away) at once."""
    site = start_site(factories, route, record_dir)
    tags = [tag() for _ in range(3)]
    codes = []

    def wait_close(ws):
        codes.append(closed_by_server(ws, timeout=20).code)

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(site.connect("/ws/echo?tag=" + t)) for t in tags]
        for ws in sockets:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        started = time.monotonic()
        os.kill(site.server.pid, getattr(signal, "SIG" + sig))
        threads = [threading.Thread(target=wait_close, args=(ws,)) for ws in sockets]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    assert codes == [1001] * 3
    for t in tags:
        site.wait_record(t, "disconnect 1001")
    if sig == "TERM":
        assert site.server.proc.wait(30) == 0
    assert time.monotonic() - started < 20  # well within reload-mercy (60 s)
    if sig == "HUP":  # the new worker serves WebSockets
        with site.connect("/ws/echo") as ws:
            ws.send("after the reload")
            assert ws.recv(timeout=10) == "after the reload"


def test_starlette_websocket_routes(factories, record_dir):
    server = factories.uwsgigw("--module", "ws_apps:starlette_app", http=True,
                               env={"ASGI_APPS_RECORD_DIR": str(record_dir)})
    site = Site(server, _port(server), "direct", record_dir)
    t = tag()
    with site.connect("/echo?tag=" + t, subprotocols=["v1"]) as ws:
        assert ws.subprotocol == "v1"
        ws.send("hi")
        assert ws.recv(timeout=10) == "st:hi"
        ws.close(4003)
    site.wait_record(t, "disconnect 4003")
    with pytest.raises(websockets.InvalidStatus) as info:
        site.connect("/deny")
    assert info.value.response.status_code == 403


# -- requests that are not WebSockets -------------------------------------------------------

@pytest.fixture(scope="module")
def direct(module_factories, record_dir) -> Site:
    return start_site(module_factories, "direct", record_dir)


@pytest.mark.parametrize("version, status", [("", 400), ("8", 426)])
def test_a_bad_handshake_is_refused_before_the_app(direct, version, status):
    with Connection(direct.port) as c:
        c.send(("GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s"
                "\r\n" % ("Sec-WebSocket-Version: %s\r\n" % version if version else ""))
               .encode())
        r = c.response()
        assert r.status == status and c.closed_by_server()
    if status == 426:
        assert r.header("sec-websocket-version") == "13"


def test_a_plain_request_on_the_websocket_app_is_http(direct):
    with Connection(direct.port) as c:
        c.send(b"GET /ws/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response()
    assert r.status == 200 and r.body == b"plain http: /ws/echo\n"


def test_a_wsgi_app_gets_an_upgrade_request_as_a_plain_request(factories):
    server = factories.uwsgigw("--module", "field_apps:wsgi", http=True)
    with Connection(_port(server)) as c:
        c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.body == b"should not be sent"
        assert c.closed_by_server()
