"""Issue 12, section 2: what an ASGI app receives and may send, for every body shape.

ASGI 3 (HTTP connection scope): ``receive()`` first gives ``http.request``
messages until one has ``more_body`` False -- also when there is no body at
all (``body=b""``) -- and then ``http.disconnect`` once the client is gone.
Before the fix, a request without a body never got its ``http.request``: every
GET of Django's ASGI handler hung until nginx gave up (504).

The app (tests/apps/field_apps.py ``/receive``) answers with the messages it
got; the body shapes come through the real nginx, except a client leaving
mid-body, which nginx hides (it buffers the body first) and which is sent
straight to the socket.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from conftest import read_record, nginx_vars, uwsgi_connect, wait_until
from framed_client import fetch
from packet_builder import build_packet

KB = 1024


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return str(tmp_path_factory.mktemp("receive-records"))


@pytest.fixture(scope="module")
def servers(module_factories, records):
    """Two ASGI servers behind nginx: plain (the body streamed from the
    socket) and with post-buffering 64 KiB (the body spooled before the app)."""
    made = {}
    for name, extra in (("plain", ()), ("post-buffering", ("--post-buffering", "65536"))):
        server = module_factories.uwsgigw("--module", "field_apps:asgi", *extra,
                                          env={"FIELD_APPS_RECORD_DIR": records})
        made[name] = (server, module_factories.nginx(server.socket))
    return made


def _chunked(body: bytes, size: int = 10000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


# (name, server, method, body sent, extra headers, body length the app must get)
SHAPES = [
    ("none: GET", "plain", "GET", None, {}, 0),
    ("none: HEAD", "plain", "HEAD", None, {}, 0),
    ("none: DELETE", "plain", "DELETE", None, {}, 0),
    ("empty: POST without a length", "plain", "POST", None, {}, 0),
    ("zero: POST Content-Length 0", "plain", "POST", b"", {}, 0),
    ("small", "plain", "POST", b"x" * 10, {}, 10),
    ("streamed from the socket", "plain", "POST", os.urandom(1024 * KB), {}, 1024 * KB),
    ("in memory (post-buffering, smaller)", "post-buffering", "POST", b"y" * 1000, {}, 1000),
    ("spooled (post-buffering)", "post-buffering", "POST", os.urandom(300 * KB), {},
     300 * KB),
    ("chunked by the client, de-chunked by nginx", "plain", "POST",
     _chunked(b"z" * (70 * KB)), {"Transfer-Encoding": "chunked"}, 70 * KB),
]


@pytest.mark.parametrize("name,server,method,body,headers,length", SHAPES,
                         ids=[s[0] for s in SHAPES])
def test_receive_gives_the_body_then_more_body_false(servers, name, server, method, body,
                                                     headers, length):
    srv, nginx = servers[server]
    resp = fetch(nginx.port, "/receive?tag=" + name.split(":")[0].replace(" ", "-"),
                 method=method, body=body, headers=headers)
    assert resp.status == 200, resp.raw[:500]
    if method == "HEAD":
        return  # no body to read the report from; the 200 says receive() returned
    report = json.loads(resp.body)
    messages = report["messages"]
    assert all(m[0] == "http.request" for m in messages), messages
    assert report["total"] == length
    assert messages[-1][2] is False and all(m[2] for m in messages[:-1]), messages
    if length == 0:
        assert messages == [["http.request", 0, False]]  # ASGI: always one message


def test_client_gone_mid_body_gives_http_disconnect(servers, records):
    """Half a body, then the client leaves: the app gets http.disconnect."""
    srv, _ = servers["plain"]
    body = b"q" * 200_000
    packet = build_packet([(k.encode(), v.encode()) for k, v in nginx_vars(
        method="POST", uri="/receive?tag=gone", body=body).items()], body=body[:100_000])
    mark = srv.log_mark()
    with uwsgi_connect(srv.socket) as s:
        s.sendall(packet)
    report = wait_until(lambda: read_record(records, "receive-gone"), 10, what="the app's report")
    messages = json.loads(report)
    assert messages[-1] == ["http.disconnect", 0, False], messages
    assert sum(m[1] for m in messages) <= 100_000
    srv.wait_for_log("POST /receive?tag=gone: body not received", since=mark)


def test_after_the_body_receive_waits_for_the_client_to_leave(servers, records):
    srv, nginx = servers["plain"]
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as s:
        s.sendall(b"GET /receive?tag=after&after=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: read_record(records, "receive-after"), 10, what="the body messages")
        assert not read_record(records, "after-after")  # still waiting: the client is there
    assert wait_until(lambda: read_record(records, "after-after"), 10,
                      what="http.disconnect") == "http.disconnect\n"



# -- send() sequences --------------------------------------------------------------------
# (letters of field_apps._send_sequence, status, body, complete, log line or None)
SENDS = [
    ("sE", 200, b"abc", True, None),
    ("se", 200, b"", True, None),
    ("sbbE", 200, b"abcabcabc", True, None),
    ("SbE", 200, b"abcabc", True, None),
    ("Sbe", 200, b"abc", False, None),  # fewer bytes than its Content-Length
    ("sbr", 200, b"abc", False, "the app returned before completing the response"),
    ("sr", 500, b"the application sent no response\n", True,
     "the app returned without sending a response"),
    ("r", 500, b"the application sent no response\n", True,
     "the app returned without sending a response"),
    ("ss", 500, b"internal server error\n", True, "http.response.start sent twice"),
    ("bE", 500, b"internal server error\n", True,
     "http.response.body before http.response.start"),
    ("sEb", 200, b"abc", True, "http.response.body after the response completed"),
]


@pytest.mark.parametrize("seq,status,body,complete,logged", SENDS, ids=[s[0] for s in SENDS])
def test_send_sequences(servers, seq, status, body, complete, logged):
    srv, nginx = servers["plain"]
    mark = srv.log_mark()
    resp = fetch(nginx.port, "/send?seq=" + seq)
    assert resp.status == status, resp.raw[:300]
    assert resp.complete is complete, resp.raw[:300]
    assert resp.body == body if complete else body.startswith(resp.body), resp.raw[:300]
    if logged:
        srv.wait_for_log(logged, since=mark)
