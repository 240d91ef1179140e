"""The C HTTP path (csrc/fastpath_http.c, fastpath_httphead.c) against llhttp
and the Python driver.

The C head parser takes a strict subset of HTTP/1.1 and declines the rest to
llhttp (uwsgigw/protocol/http.py). Whatever it takes must mean exactly what
llhttp makes of the same bytes -- method, target, version, fields, keep-alive,
Host, size -- and every smuggling vector must be declined, never taken. A
prefix it waits on must be one llhttp waits on too. Its environ must be
``environ_vars``'s, and the C response framing must send the bytes
cycle/framing.py's ``http_head`` and wsgi/http_exchange.py send.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_parser import SMUGGLING

from uwsgigw.cycle import framing
from uwsgigw.cycle.request import FailureTurns
from uwsgigw.cycle.response import FileWrapper, ResponseError
from uwsgigw.observe.record import SharedCounter
from uwsgigw.observe.scoreboard import CoreSlot
from uwsgigw.protocol.environ import base_environ
from uwsgigw.protocol.errors import ProtocolError
from uwsgigw.protocol.http import RequestParser, environ_vars
from uwsgigw.wsgi.http_exchange import HttpExchange

try:
    from uwsgigw.wsgi import fastpath
except ImportError as exc:
    if os.environ.get("UWSGIGW_TEST_REQUIRE_C"):
        raise
    pytest.skip("C fast path not built (%s); `pip install -e .` builds it" % exc,
                allow_module_level=True)

MAX_HEAD = 4096
BASE = base_environ(errors=None, file_wrapper=FileWrapper, multithread=False,
                    multiprocess=True)
CONN = ("10.1.2.3", "40000", "127.0.0.1", "8000", False)


def llhttp(data: bytes, max_head: int = MAX_HEAD):
    """llhttp's reading of ``data``: ("head", HttpHead), ("error", exc) or
    ("more", None)."""
    parser = RequestParser(max_head)
    parser.feed(data)
    try:
        event = parser.next_event()
    except ProtocolError as exc:
        return "error", exc
    return ("more", None) if event is None else ("head", event)


def check_agrees(data: bytes, max_head: int = MAX_HEAD) -> str:
    """Assert the C parser and llhttp agree on ``data``; what C said."""
    c = fastpath.http_parse(data, max_head)
    kind, head = llhttp(data, max_head)
    if c == -1:
        return "declined"
    if c == 0:
        assert kind == "more", (data, kind, head)
        return "more"
    method, target, version, fields, keep_alive, size, host, head_len = c
    assert kind == "head", (data, kind, head)
    assert (method, target, version, fields, keep_alive, size, host) == (
        head.method, head.target, head.version, head.headers, head.keep_alive, head.size,
        head.host), data
    assert head.content_length == 0 and not head.chunked and not head.expect_continue
    assert data[head_len - 4:head_len] == b"\r\n\r\n" and b"\r\n\r\n" not in data[:head_len - 4]
    return "taken"


# -- the parser --------------------------------------------------------------------

TAKEN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /x?y=1&z=%41 HTTP/1.1\r\nHost: a:80\r\nConnection: close\r\n\r\n",
    b"GET /p HTTP/1.0\r\n\r\n",
    b"GET /p HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nX-Empty:\r\nX-Tab:\t v \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nhOsT: a\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: */*\r\n\r\n",
    b"GET /a/b;c=d,e@f:g!$&'()*+= HTTP/1.1\r\nHost: a\r\n\r\n",
]


@pytest.mark.parametrize("data", TAKEN)
def test_common_heads_are_taken_and_mean_what_llhttp_reads(data):
    assert check_agrees(data) == "taken"


@pytest.mark.parametrize("data", TAKEN)
def test_every_prefix_of_a_head_waits_as_llhttp_does(data):
    for cut in range(len(data)):
        assert check_agrees(data[:cut]) in ("more", "declined")
    assert check_agrees(data) == "taken"


DECLINED = [
    ("a body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
    ("Content-Length 0", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    ("chunked", b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("Expect", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"),
    ("Upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    ("Connection list", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, te\r\n\r\n"),
    ("two Connection", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n"),
    ("underscore name", b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n"),
    ("obs-text value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9\r\n\r\n"),
    ("absolute-form", b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("quote in target", b'GET /a"b HTTP/1.1\r\nHost: a\r\n\r\n'),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
    ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("over buffer-size", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * MAX_HEAD + b"\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", DECLINED, ids=[d[0] for d in DECLINED])
def test_the_unusual_is_declined_to_llhttp(name, data):
    assert check_agrees(data) == "declined"


@pytest.mark.parametrize("name,data,status", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_no_smuggling_vector_is_taken(name, data, status):
    """Each vector, whole and cut anywhere: C declines it or waits (for
    a head llhttp does not refuse yet), never takes it."""
    assert check_agrees(data) == "declined"
    for cut in range(1, len(data)):
        assert check_agrees(data[:cut]) in ("more", "declined")


NAMES = st.sampled_from([b"Host", b"host", b"Connection", b"X-Forwarded-For", b"Accept",
                         b"Cookie", b"Content-Type", b"Content-Length", b"X_A", b"X-A",
                         b"Transfer-Encoding", b"Expect", b"Upgrade", b"A" * 130, b"X A",
                         b"", b"X-\x7f"])
VALUES = st.sampled_from([b"a", b"", b" a", b"a ", b"\ta\t", b"close", b"keep-alive",
                          b"Keep-Alive", b"upgrade", b"1", b"0", b"chunked", b"a:8080",
                          b"[::1]:80", b"[::1", b"a:", b"a:b", b"x\x00y", b"\xff", b"a\rb",
                          b"a\nb", b"100-continue"])
TARGETS = st.sampled_from([b"/", b"/a?b=c", b"/%41%zz%4", b"/a%2Fb", b"*", b"http://a/",
                           b"/a#f", b"/\x7f", b"/a b", b"", b"/" + b"x" * 5000, b"/~!$&'()"])
LINE_END = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n"])


@st.composite
def heads(draw) -> bytes:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"GETS", b"HEA", b"get"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.",
                                                         b"http/1.1"]))
    out = method + b" " + draw(TARGETS) + b" " + version + draw(LINE_END)
    for _ in range(draw(st.integers(0, 6))):
        sep = draw(st.sampled_from([b": ", b":", b" : ", b":\t"]))
        out += draw(NAMES) + sep + draw(VALUES) + draw(LINE_END)
    out += draw(LINE_END)
    if draw(st.booleans()):  # flip or insert a byte somewhere
        at = draw(st.integers(0, len(out)))
        out = out[:at] + bytes([draw(st.integers(0, 255))]) + out[at + 1:]
    return out + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"abc"]))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads(), st.integers(0, 400))
def test_random_heads_c_agrees_with_llhttp(data, cut):
    """The differential fuzz: C takes only what llhttp reads the same way,
    whole or cut short."""
    check_agrees(data)
    check_agrees(data[:cut])


# -- the environ -------------------------------------------------------------------

ENVIRON_HEADS = TAKEN + [
    b"GET /caf%C3%A9/%zz%4?q=%41 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1\r\nContent-Type: text/a\r\nContent-Type: text/b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:b:9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nWsgi-Url-Scheme: x\r\nX-" + b"L" * 100 + b": v\r\n\r\n",
]


def python_environ(data: bytes) -> tuple[dict, int]:
    kind, head = llhttp(data)
    assert kind == "head"
    env = BASE.copy()
    vars_ = environ_vars(head, CONN[2:4], CONN[0:2])
    env.update(vars_)
    return env, 2 * len(vars_)


@pytest.mark.parametrize("data", ENVIRON_HEADS)
def test_the_c_environ_is_environ_vars(data):
    got = fastpath.http_environ(data, MAX_HEAD, BASE, CONN)
    assert got is not None, data
    assert got == python_environ(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_random_heads_give_the_same_environ(data):
    got = fastpath.http_environ(data, MAX_HEAD, BASE, CONN)
    if got is not None:
        assert got == python_environ(data)


# -- the response ------------------------------------------------------------------

DATE = re.compile(rb"Date: [^\r]*\r\n")


def run_exchange(make, script):
    """Run ``script`` against an exchange made by make(sock) on one end of a
    socketpair; (bytes sent, outcome) with Date values blanked."""
    a, b = socket.socketpair()
    try:
        x = make(a)
        error = None
        try:
            script(x)
        except (ResponseError, AssertionError) as exc:
            error = "%s: %s" % (type(exc).__name__, exc)
        a.close()
        data = b""
        while chunk := b.recv(65536):
            data += chunk
        keep = x.reusable if isinstance(x, HttpExchange) else (
            x.sent and not x.aborted and x.keep_alive)
        return DATE.sub(b"Date: -\r\n", data), (error, x.status, x.tx, x.head_size,
                                                 x.headers_count, bool(x.aborted), bool(keep))
    finally:
        a.close()
        b.close()


def c_exchange(version: str, head_only: bool, keep_alive: bool):
    return lambda sock: fastpath.Exchange(sock.fileno(), head_only, 5.0,
                                          10 if version == "1.0" else 11, keep_alive)


def py_exchange(version: str, head_only: bool, keep_alive: bool):
    return lambda sock: HttpExchange(sock, version, head_only, keep_alive, 5.0)


@contextlib.contextmanager
def python_framing():
    """framing.http_head without its C twin (fastpath installs it)."""
    saved = framing._c_frame
    framing.use_c_frame(None)
    try:
        yield
    finally:
        framing.use_c_frame(saved)


def respond(status, headers, body, style="list"):
    def script(x):
        write = x.start_response(status, headers)
        if style == "list":
            x.send_result(body)
        elif style == "gen":
            x.send_result(iter(body))
        else:  # write() then an empty result
            for piece in body:
                write(piece)
            x.send_result([])
    return script


RESPONSES = [
    ("length", "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")], [b"hello"]),
    ("no length", "200 OK", [("Content-Type", "text/plain")], [b"hel", b"lo"]),
    ("empty pieces", "200 OK", [], [b"", b"a", b""]),
    ("own Date", "200 OK", [("Date", "Mon, 01 Jan 2001 00:00:00 GMT")], [b"x"]),
    ("hop-by-hop", "200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked"),
                              ("Keep-Alive", "5")], [b"x"]),
    ("Connection keep", "200 OK", [("connection", "keep-alive")], [b"x"]),
    ("204", "204 No Content", [("Content-Length", "3")], [b"abc"]),
    ("304", "304 Not Modified", [("ETag", '"x"')], []),
    ("short length", "200 OK", [("Content-Length", "9")], [b"abc"]),
    ("long length", "200 OK", [("Content-Length", "2")], [b"abc"]),
    ("two lengths", "200 OK", [("Content-Length", "3"), ("content-length", "3")], [b"abc"]),
    ("bad length", "200 OK", [("Content-Length", "x")], [b"abc"]),
    ("1xx", "103 Early Hints", [], [b""]),
    ("bad header", "200 OK", [("X-A", "a\r\nb")], [b""]),
    ("tuple headers", "200 OK", (("X-A", "1"),), [b"a"]),
    ("list header", "200 OK", [["X-A", "1"]], [b"a"]),
    ("status only code", "404", [], [b"nf"]),
]


@pytest.mark.parametrize("style", ["list", "gen", "write"])
@pytest.mark.parametrize("version,head_only,keep_alive", [
    ("1.1", False, True), ("1.1", False, False), ("1.0", False, True), ("1.0", False, False),
    ("1.1", True, True), ("1.0", True, False)])
@pytest.mark.parametrize("name,status,headers,body", RESPONSES, ids=[r[0] for r in RESPONSES])
def test_the_c_framing_sends_what_python_sends(name, status, headers, body, version,
                                               head_only, keep_alive, style):
    script = respond(status, headers, body, style)
    c = run_exchange(c_exchange(version, head_only, keep_alive), script)
    with python_framing():
        py = run_exchange(py_exchange(version, head_only, keep_alive), script)
    assert c == py


def _frame(status, headers, version, head_only, keep_alive):
    try:
        f = framing.http_head(status, headers, version, head_only, keep_alive)
    except ResponseError as exc:
        return "ResponseError: %s" % exc
    return DATE.sub(b"Date: -\r\n", f.head), f.headers_count, f.mode, f.length, f.keep_alive


@pytest.mark.parametrize("version,head_only,keep_alive", [
    ("1.1", False, True), ("1.1", False, False), ("1.0", False, True), ("1.1", True, True)])
@pytest.mark.parametrize("name,status,headers,body", RESPONSES, ids=[r[0] for r in RESPONSES])
def test_the_c_http_frame_is_framing_http_head(name, status, headers, body, version, head_only,
                                               keep_alive):
    """framing.http_head with its C twin installed gives what it gives alone."""
    with_c = _frame(status, headers, version, head_only, keep_alive)
    with python_framing():
        alone = _frame(status, headers, version, head_only, keep_alive)
    assert with_c == alone


def test_the_c_date_is_the_python_date():
    from uwsgigw.cycle.framing import http_date
    for _ in range(3):  # a second may turn between the two
        if fastpath.http_date() == http_date():
            return
    assert fastpath.http_date() == http_date()


# -- the C connection driver: pipelined requests cut anywhere -----------------------

class _Hooks(FailureTurns):
    env = None

    def _fail(self, exchange, failure):
        raise AssertionError("the test app does not fail: %s" % failure.message)

    def _count_exception(self):
        pass


def _core():
    """A Core for HTTP, its app answering each request with its path; and
    what must stay alive as long as it does (its slot and counter)."""
    def app(env, start_response):
        body = env["PATH_INFO"].encode("latin-1")
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    slot, counter = CoreSlot(), SharedCounter()
    core = fastpath.Core(_Hooks(), fastpath.CoreSettings(
        buffer=bytearray(), max_block=MAX_HEAD, base_environ=BASE, socket_timeout=5.0,
        pick_app=lambda env: app, new_input=io.BytesIO, slot_address=ctypes.addressof(slot),
        total_address=counter.address, track_requests=False, line_fd=-1, emit=None, pid=1,
        worker_id=1, core=0, http_keepalive=True, forwarded=None, stop_flag_address=0))
    return core, (slot, counter)


def _stream(n: int, declined_at: int | None) -> tuple[bytes, int]:
    """n GETs /r0.../r<n-1>, a declined POST before the declined_at-th; and
    the offset of the declined request, or -1."""
    out, where = b"", -1
    for i in range(n):
        if i == declined_at:
            where = len(out)
            out += b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        out += b"GET /r%d%s HTTP/1.1\r\nHost: t\r\n\r\n" % (i, b"x" * (i * 37 % 300))
    return out, where


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.one_of(st.none(), st.integers(0, 11)),
       st.lists(st.integers(1, 700), min_size=1, max_size=40), st.sampled_from(["wsgi", "asgi"]))
def test_pipelined_requests_cut_anywhere_are_served_in_order(n, declined_at, cuts, kind):
    """Core.serve_http (WSGI: it runs the app) and Core.read_http (ASGI: it
    gives the head) over a socketpair, the stream sent in random pieces:
    every request taken once, in order; at a declined one, what is pending
    is exactly the stream from that request on."""
    core, keep = _core()
    if declined_at is not None and declined_at >= n:
        declined_at = None
    data, where = _stream(n, declined_at)
    expected = n if declined_at is None else declined_at
    a, b = socket.socketpair()
    a.setblocking(False)
    pending, paths, sent, answer = bytearray(), [], 0, 0
    try:
        for cut in cuts + [len(data)]:
            piece = data[sent:sent + cut]
            if not piece or answer == 3:
                break
            b.sendall(piece)
            sent += len(piece)
            while True:
                if kind == "wsgi":
                    answer = core.serve_http(a.fileno(), pending, CONN, False)
                else:
                    answer = core.read_http(a.fileno(), pending, CONN, False)
                    if type(answer) is tuple:
                        paths.append(answer[0]["PATH_INFO"])
                        continue
                assert answer in (0, 1, 3), answer
                break
        if kind == "wsgi":
            a.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := b.recv(65536):
                out += chunk
            paths = [p.decode() for p in re.findall(rb"\r\n\r\n(/r\d+x*)", out)]
        assert paths == ["/r%d%s" % (i, "x" * (i * 37 % 300)) for i in range(expected)]
        if declined_at is None:
            assert answer in (0, 1) and not pending
        else:
            assert answer == 3 and bytes(pending) == data[where:sent]
    finally:
        a.close()
        b.close()
