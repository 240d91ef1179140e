"""HTTP/1.x requests, sans-IO (uwsgigw/protocol/http.py) and the response
framing (uwsgigw/cycle/framing.py): the smuggling classes refused, heads
split anywhere, pipelined requests, the environ, and random heads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uwsgigw.cycle.framing import CHUNKED, CLOSE, LENGTH, NONE, http_head
from uwsgigw.cycle.response import ResponseError
from uwsgigw.protocol.errors import ProtocolError
from uwsgigw.protocol.http import (END, HttpError, HttpHead, RequestParser, environ_vars,
                                   websocket_upgrade)


def events(data: bytes, max_head: int = 8192, splits=None) -> list:
    """Feed ``data`` (whole, or cut at ``splits``) and collect the events."""
    parser = RequestParser(max_head)
    pieces = [data] if splits is None else [data[a:b] for a, b in
                                            zip([0] + splits, splits + [len(data)])]
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not None:  # raises a refusal
            out.append(event)
    return out


# (name, request bytes, status of the refusal)
SMUGGLING = [
    ("Content-Length with Transfer-Encoding",
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("two different Content-Length",
     b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", 400),
    ("Content-Length repeated", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     b"Content-Length: 5\r\n\r\nabcde", 400),
    ("Content-Length not digits", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n",
     400),
    ("Content-Length with a sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
     400),
    ("chunked not the final coding", b"POST / HTTP/1.1\r\nHost: a\r\n"
     b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("a coding we do not decode before chunked", b"POST / HTTP/1.1\r\nHost: a\r\n"
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("Transfer-Encoding without chunked", b"POST / HTTP/1.1\r\nHost: a\r\n"
     b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("Transfer-Encoding chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\n"
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"ffffffffffffffffffff\r\n", 400),
    ("chunk size not hex", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nab\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400),
    ("whitespace before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("no Host on 1.1", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("HTTP/0.9", b"GET /\r\n\r\n", 505),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("not HTTP at all", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
]


@pytest.mark.parametrize("name,data,status", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_smuggling_classes_are_refused(name, data, status):
    with pytest.raises(ProtocolError) as info:
        events(data)
    assert info.value.status_hint == status, info.value


@pytest.mark.parametrize("name,data,status", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_refused_byte_by_byte_too(name, data, status):
    """Split anywhere, the same request is refused the same way."""
    with pytest.raises(ProtocolError) as info:
        events(data, splits=list(range(1, len(data))))
    assert info.value.status_hint == status


def test_pipelined_requests_come_out_in_order_with_their_bodies():
    data = (b"GET /one?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n")
    for splits in (None, list(range(1, len(data), 7)), list(range(1, len(data)))):
        got = events(data, splits=splits)
        heads = [e for e in got if isinstance(e, HttpHead)]
        assert [h.target for h in heads] == ["/one?x=1", "/two", "/three"]
        assert [h.content_length for h in heads] == [0, 5, None]
        assert heads[2].chunked and all(h.keep_alive for h in heads)
        bodies, current = [], b""
        for e in got:
            if e is END:
                bodies.append(current)
                current = b""
            elif isinstance(e, bytes):
                current += e
        assert bodies == [b"", b"hello", b"abcde"]


def test_head_size_is_bounded_by_buffer_size():
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n"
    assert isinstance(events(head, max_head=len(head))[0], HttpHead)
    with pytest.raises(HttpError) as info:
        events(head, max_head=200)
    assert info.value.status_hint == 431
    # a head that never ends is cut when it passes the bound, not held forever
    parser = RequestParser(1000)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    with pytest.raises(HttpError) as info:
        for _ in range(100):
            parser.feed(b"v" * 100)
            parser.next_event()
    assert info.value.status_hint == 431


def test_requests_before_a_refused_one_come_out_first():
    parser = RequestParser(8192)
    parser.feed(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert parser.next_event().target == "/ok" and parser.next_event() is END
    with pytest.raises(HttpError) as info:
        parser.next_event()
    assert info.value.status_hint == 505
    parser.feed(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")  # nothing after it is parsed
    with pytest.raises(HttpError):
        parser.next_event()


def test_a_body_in_the_same_read_is_not_counted_as_head():
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000
    got = events(data, max_head=100)
    assert isinstance(got[0], HttpHead) and got[-1] is END


def test_long_target_is_414():
    with pytest.raises(HttpError) as info:
        events(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", max_head=65535)
    assert info.value.status_hint == 414


def test_keep_alive_follows_version_and_connection():
    def ka(request: bytes) -> bool:
        return events(request)[0].keep_alive
    assert ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not ka(b"GET / HTTP/1.0\r\n\r\n")
    assert ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")


def test_environ_from_the_head():
    head = events(b"GET /caf%C3%A9/a%2Fb?q=%20x HTTP/1.1\r\nHost: example.org:8443\r\n"
                  b"X-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 6.6.6.6\r\n"
                  b"Cookie: a=1\r\nCookie: b=2\r\nAccept: x\r\nAccept: y\r\n"
                  b"Content-Type: text/plain\r\n\r\n")[0]
    env = environ_vars(head, ("10.0.0.1", "80"), ("127.0.0.1", "40000"))
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b"  # percent-decoded, latin-1 (PEP 3333)
    assert env["REQUEST_URI"] == "/caf%C3%A9/a%2Fb?q=%20x"
    assert env["QUERY_STRING"] == "q=%20x"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "8443")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", "40000")
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the "_" spelling was dropped
    assert env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_ACCEPT"] == "x, y"
    assert env["CONTENT_TYPE"] == "text/plain" and "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_environ_of_absolute_form_and_1_0_without_host():
    head = events(b"GET http://example.org/p?q=1 HTTP/1.0\r\n\r\n")[0]
    env = environ_vars(head, ("10.0.0.1", "8000"), ("", ""))
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/p", "q=1")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("10.0.0.1", "8000")


_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("cut", [None, 20, len(_UPGRADE) - 1, len(_UPGRADE)])
def test_the_bytes_after_an_upgrade_head_are_kept(cut):
    """A WebSocket client may send its first frame with the handshake: what
    follows the Upgrade head is not parsed as HTTP but kept (``trailing``)."""
    frame = b"\x81\x85\x01\x02\x03\x04dgoh"
    parser = RequestParser(8192)
    data = _UPGRADE + frame
    for piece in ([data] if cut is None else [data[:cut], data[cut:]]):
        parser.feed(piece)
    head = parser.next_event()
    assert parser.next_event() is END and parser.next_event() is None
    assert parser.upgraded and parser.trailing == frame
    assert websocket_upgrade(head) and not head.keep_alive


@pytest.mark.parametrize("request_, expected", [
    (_UPGRADE, True),
    (_UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c, WebSocket"), True),
    (_UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c"), False),
    (_UPGRADE.replace(b"GET", b"POST"), False),
    (_UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
])
def test_websocket_upgrade(request_, expected):
    assert websocket_upgrade(events(request_)[0]) is expected


# Header names other than the ones that frame the request (tested above).
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12).filter(
    lambda n: n not in ("host", "content-length", "transfer-encoding", "connection",
                        "upgrade", "expect"))


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
       path=st.text("abc/%.-_~?=&", max_size=30),
       headers=st.lists(st.tuples(TOKEN, st.text(st.characters(min_codepoint=32,
                                                                max_codepoint=126),
                                                 max_size=20)), max_size=8),
       cut=st.integers(0, 400), noise=st.binary(max_size=20))
def test_random_heads_parse_or_are_refused_never_crash(method, path, headers, cut, noise):
    """A property: well-formed heads parse with their headers intact; any
    prefix or mangled variant either waits for more data or is refused."""
    lines = ["%s /%s HTTP/1.1" % (method, path), "Host: h"]
    lines += ["%s: %s" % (n, v.strip()) for n, v in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    got = events(data)
    head = got[0]
    assert isinstance(head, HttpHead) and head.method == method
    assert [(n.decode(), v.decode()) for n, v in head.headers if n != b"host"] == \
        [(n, v.strip()) for n, v in headers]
    for variant in (data[:cut], data[:cut] + noise + data[cut:]):
        try:
            events(variant)
        except ProtocolError:
            pass


# -- framing ----------------------------------------------------------------------------

def test_framing_modes():
    def frame(headers, version="1.1", head_only=False, keep_alive=True, status="200 OK"):
        return http_head(status, headers, version, head_only, keep_alive)
    f = frame([("Content-Length", "5")])
    assert (f.mode, f.length, f.keep_alive) == (LENGTH, 5, True)
    assert b"Connection" not in f.head and b"\r\nDate: " in f.head
    f = frame([])
    assert f.mode == CHUNKED and b"Transfer-Encoding: chunked" in f.head
    assert f.encode(b"abc") == b"3\r\nabc\r\n" and f.end() == b"0\r\n\r\n"
    assert f.encode(b"") == b""  # an empty write must not end the body
    f = frame([], version="1.0")
    assert (f.mode, f.keep_alive) == (CLOSE, False) and b"Connection: close" in f.head
    f = frame([("Content-Length", "5")], version="1.0")
    assert f.keep_alive and b"Connection: keep-alive" in f.head
    assert frame([], head_only=True).mode == NONE
    f = frame([("Content-Length", "5"), ("Transfer-Encoding", "chunked")], status="204 No")
    assert f.mode == NONE and b"Content-Length" not in f.head and b"Transfer-Encoding" \
        not in f.head
    f = frame([("Connection", "close"), ("Content-Length", "1")])
    assert not f.keep_alive and f.head.count(b"Connection") == 1
    f = frame([("Date", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert f.head.count(b"Date:") == 1
    with pytest.raises(ResponseError):
        frame([("Content-Length", "x")])
    with pytest.raises(ResponseError):
        frame([("Content-Length", "1"), ("Content-Length", "2")])
    with pytest.raises(ResponseError):
        frame([("X", "a\r\nb")])
