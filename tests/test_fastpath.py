"""The C request path (uwsgigw._fastpath) against its Python twin.

The C path must give exactly what the Python path gives: the same environ
(environ.build_environ after the decoder), the same "hand it to Python"
answer where Python raises, and the same response bytes, attributes and
exceptions from Exchange as from handler._Exchange. Random packets and
scripted responses run through both.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packet_builder import PACKETS, build_packet

from uwsgigw.protocol import decoder_py
from uwsgigw.protocol.environ import base_environ
from uwsgigw.wsgi.handler import _Exchange
from uwsgigw.observe.record import RequestRecord
from uwsgigw.cycle.response import FileWrapper, HeadersAlreadySent, ResponseError

try:
    from uwsgigw.wsgi import fastpath
except ImportError as exc:
    if os.environ.get("UWSGIGW_TEST_REQUIRE_C"):
        raise
    pytest.skip("C fast path not built (%s); `pip install -e .` builds it" % exc,
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
try:
    import fuzz_decoder  # its python_environ is the reference here too
finally:
    del sys.path[0]  # tests/fuzz holds build.py and mutate.py: keep them off the path

BASE = base_environ(errors=None, file_wrapper=FileWrapper, multithread=False,
                    multiprocess=True)


def python_environ(data: bytes, max_block: int = 65535):
    """What the Python path makes of ``data``: a RequestHead, or None."""
    return fuzz_decoder.python_environ(decoder_py.decode, data, max_block, BASE)


# -- environ ---------------------------------------------------------------------

KEYS = st.sampled_from([
    b"REQUEST_METHOD", b"PATH_INFO", b"SCRIPT_NAME", b"QUERY_STRING", b"SERVER_NAME",
    b"HTTP_COOKIE", b"HTTP_ACCEPT", b"HTTP_X_A", b"CONTENT_LENGTH", b"CONTENT_TYPE",
    b"HTTP_CONTENT_LENGTH", b"HTTP_CONTENT_TYPE", b"UWSGI_FILE", b"UWSGI_", b"UWSGI",
    b"HTTPS", b"REQUEST_SCHEME", b"wsgi.url_scheme", b"K\x00EY", b"\xe9t\xe9",
    b"HTTP_" + b"X" * 70,  # longer than the key cache takes
])
VALUES = st.one_of(
    st.sampled_from([b"", b"GET", b"HEAD", b"/", b"/app", b"/app/x", b"on", b"ON", b"1",
                     b"off", b"https", b"HTTPS", b"12", b"0", b"007", b"1" * 18, b"1" * 19,
                     b"-1", b" 5", b"\xb2", b"a=1"]),
    st.binary(max_size=40),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(st.one_of(KEYS, st.binary(min_size=1, max_size=12)), VALUES),
                      max_size=24),
       modifier1=st.sampled_from([0, 30]))
def test_environ_matches_python_on_random_packets(pairs, modifier1):
    data = build_packet(pairs, modifier1=modifier1)
    assert fastpath.environ_from(data, 65535, BASE) == python_environ(data)


@pytest.mark.parametrize("path", sorted((PACKETS / "valid").glob("*.bin")) +
                         sorted((PACKETS / "invalid").glob("*.bin")), ids=lambda p: p.stem)
def test_environ_matches_python_on_fixture_packets(path):
    data = path.read_bytes()
    for max_block in (65535, 4096):
        expected = python_environ(data, max_block)
        assert fastpath.environ_from(data, max_block, BASE) == expected
    if "invalid" in path.parts:
        assert expected is None  # C hands every protocol error to Python
    # every prefix (an incomplete packet is "need data" for both)
    step = max(1, len(data) // 300)
    for end in range(0, len(data), step):
        assert fastpath.environ_from(data[:end], 65535, BASE) == python_environ(data[:end])


def test_repeated_headers_join_and_base_defaults_are_replaced():
    data = build_packet([(b"REQUEST_METHOD", b"POST"), (b"HTTP_COOKIE", b"a=1"),
                         (b"HTTP_X", b"1"), (b"HTTP_COOKIE", b"b=2"), (b"HTTP_X", b"2"),
                         (b"REQUEST_METHOD", b"PUT"), (b"CONTENT_LENGTH", b"3")])
    env, length = fastpath.environ_from(data, 65535, BASE)[:2]
    assert env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_X"] == "1, 2"
    assert env["REQUEST_METHOD"] == "POST, PUT"  # repeated in the request itself
    assert length == 3 and env["SCRIPT_NAME"] == "" and BASE["REQUEST_METHOD"] == "GET"


def test_key_cache_overflow_keeps_every_name_right():
    """More distinct names than the cache holds (512): each still decodes."""
    for start in range(0, 2000, 100):
        pairs = [(b"HTTP_N%d" % i, b"%d" % i) for i in range(start, start + 100)]
        env = fastpath.environ_from(build_packet(pairs), 65535, BASE).env
        assert all(env["HTTP_N%d" % i] == str(i) for i in range(start, start + 100))


def test_bad_content_length_is_left_to_python():
    for value in (b"abc", b"1" * 19, b"\xb2", b"-5"):
        data = build_packet([(b"CONTENT_LENGTH", value)])
        assert fastpath.environ_from(data, 65535, BASE) is None
        assert python_environ(data) is None


# -- read_request / accept ---------------------------------------------------------

def read_request(sock, buf, timeout=2.0):
    return fastpath.read_request(sock.fileno(), buf, 65535, BASE, timeout)


def test_read_request_reports_what_python_must_take_over():
    buf = bytearray(4 + 65535 + 65536)
    data = build_packet([(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"4")],
                        body=b"body")
    a, b = socket.socketpair()
    with a, b:
        b.sendall(data)
        head = read_request(a, buf)
        env, length, n, held = head.env, head.length, head.nread, head.held
        assert (env["REQUEST_METHOD"], length, n, held) == ("POST", 4, len(data), len(data))
        assert buf[n - 4:n] == b"body"  # the body's start stays in the buffer for Python
        packet = decoder_py.decode(data, 65535)
        assert (head.consumed, head.nvars, head.modifier1) == (
            packet.consumed, len(packet.items), packet.modifier1)
        # Read with MSG_PEEK: all of it is still queued (the held tail, ending.py).
        assert a.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK) == data
        a.recv(65536)
        b.close()
        assert read_request(a, buf) == 0  # EOF before any byte
    with pytest.raises(OSError):
        read_request(a, buf)  # closed descriptor
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_request(a, buf) == 18  # a protocol error: Python explains
    a, b = socket.socketpair()
    with a, b:
        b.sendall(data[:7])
        b.close()
        assert read_request(a, buf) == 7  # EOF inside the packet: Python logs it


def test_read_request_waits_for_the_rest_within_socket_timeout():
    buf = bytearray(4 + 65535 + 65536)
    data = build_packet([(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/slow")])
    a, b = socket.socketpair()
    with a, b:
        b.sendall(data[:5])
        threading.Timer(0.2, lambda: b.sendall(data[5:])).start()
        head = read_request(a, buf)
        env, length, n, held = head.env, head.length, head.nread, head.held
        assert (env["PATH_INFO"], length, n) == ("/slow", 0, len(data))
        # The first 5 bytes were consumed before waiting (queued bytes would
        # keep poll() from waiting); the rest is still queued.
        assert held == len(data) - 5
        assert a.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK) == data[5:]
    a, b = socket.socketpair()
    with a, b:
        b.sendall(data[:5])  # then silence
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            read_request(a, buf, timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0


def test_accept_returns_a_descriptor_or_minus_one():
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.setblocking(False)
        assert fastpath.accept(lsock.fileno()) == -1  # nobody waiting
        client = socket.create_connection(lsock.getsockname())
        with client:
            fd = -1
            for _ in range(200):
                fd = fastpath.accept(lsock.fileno())
                if fd >= 0:
                    break
                threading.Event().wait(0.01)
            assert fd >= 0
            os.write(fd, b"hi")
            assert client.recv(2) == b"hi"
            assert os.get_inheritable(fd) is False  # SOCK_CLOEXEC
            os.close(fd)


# -- Exchange ------------------------------------------------------------------------

def run_exchange(make, script, head_only=False):
    """Run ``script(x)`` on an exchange over a socketpair: (bytes, attrs, error)."""
    a, b = socket.socketpair()
    with a, b:
        x = make(a, head_only)
        error = None
        try:
            script(x)
        except Exception as exc:  # compared between the two twins
            error = (type(exc), str(exc))
        a.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := b.recv(65536):
            data += chunk
    return data, (bool(x.sent), x.tx, x.status, x.headers_count, x.head_size), error


def c_exchange(sock, head_only):
    return fastpath.Exchange(sock.fileno(), head_only, 5.0)


def py_exchange(sock, head_only):
    return _Exchange(sock, head_only, 5.0)


def gen(*chunks):
    yield from chunks


HDRS = [("Content-Type", "text/plain"), ("X-A", "1")]
SCRIPTS = {
    "list": lambda x: (x.start_response("200 OK", HDRS), x.send_result([b"ab", b"", b"c"])),
    "tuple": lambda x: (x.start_response("201 Created", HDRS), x.send_result((b"x",))),
    "bytes": lambda x: (x.start_response("200 OK", []), x.send_result(b"raw")),
    "empty_list": lambda x: (x.start_response("204 No Content", []), x.send_result([])),
    "bytearray_items": lambda x: (x.start_response("200 OK", HDRS),
                                  x.send_result([bytearray(b"ab"), memoryview(b"cd")])),
    "many_items": lambda x: (x.start_response("200 OK", HDRS),
                             x.send_result([b"%d," % i for i in range(100)])),
    "generator": lambda x: (x.start_response("200 OK", HDRS),
                            x.send_result(gen(b"", b"a", b"", b"bc"))),
    "empty_generator": lambda x: (x.start_response("200 OK", HDRS), x.send_result(gen())),
    "write_then_result": lambda x: (x.start_response("200 OK", HDRS)(b"w1"),
                                    x.send_result([b"r"])),
    "status_only_code": lambda x: (x.start_response("404", HDRS), x.send_result([b"n"])),
    "list_headers": lambda x: (x.start_response("200 OK", [["X-L", "v"]]),
                               x.send_result([b"l"])),
    "latin1_value": lambda x: (x.start_response("200 OK", [("X-L", "caf\xe9")]),
                               x.send_result([b"l"])),
    "twice": lambda x: (x.start_response("200 OK", HDRS), x.start_response("200 OK", HDRS)),
    "write_first": lambda x: x.write(b"early"),
    "bad_status": lambda x: (x.start_response("2000 OK", HDRS), x.send_result([b"x"])),
    "status_crlf": lambda x: (x.start_response("200 OK\r\nX: y", HDRS), x.send_result([])),
    "header_crlf": lambda x: (x.start_response("200 OK", [("X-A", "a\r\nb")]),
                              x.send_result([])),
    "header_name": lambda x: (x.start_response("200 OK", [("X A", "a")]), x.send_result([])),
    "header_not_tuple": lambda x: (x.start_response("200 OK", ["X-A: a"]), x.send_result([])),
    "header_bytes": lambda x: (x.start_response("200 OK", [(b"X-A", b"a")]),
                               x.send_result([])),
    "header_non_latin1": lambda x: (x.start_response("200 OK", [("X-A", "\u20ac")]),
                                    x.send_result([])),
    "status_non_latin1": lambda x: (x.start_response("200 \u20ac", []), x.send_result([])),
    "headers_tuple_empty": lambda x: (x.start_response("200 OK", ()), x.send_result([])),
    "str_body": lambda x: (x.start_response("200 OK", HDRS), x.send_result("text")),
    "str_in_list": lambda x: (x.start_response("200 OK", HDRS), x.send_result(["text"])),
    "exc_info_before_send": lambda x: (x.start_response("200 OK", HDRS),
                                       x.start_response("500 Oops", [], (None, None, None)),
                                       x.send_result([b"e"])),
    "exc_info_after_send": lambda x: (x.start_response("200 OK", HDRS)(b"sent"),
                                      x.start_response("500 Oops", [],
                                                       (KeyError, KeyError("k"), None))),
    "exc_info_keyword": lambda x: (x.start_response("200 OK", HDRS, exc_info=None),
                                   x.send_result([b"k"])),
    "big": lambda x: (x.start_response("200 OK", HDRS), x.send_result([b"z" * 3_000_000])),
}


@pytest.mark.parametrize("head_only", [False, True], ids=["GET", "HEAD"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_exchange_matches_python_twin(name, head_only):
    script = SCRIPTS[name]
    c = run_exchange_threaded(c_exchange, script, head_only)
    py = run_exchange_threaded(py_exchange, script, head_only)
    assert c == py


def run_exchange_threaded(make, script, head_only):
    """run_exchange, with the reading side in a thread for bodies larger
    than the socket buffer."""
    a, b = socket.socketpair()
    received = []

    def reader():
        data = b""
        while chunk := b.recv(1 << 20):
            data += chunk
        received.append(data)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        x = make(a, head_only)
        error = None
        try:
            script(x)
        except TypeError:  # the builtins word it differently
            error = (TypeError, "")
        except Exception as exc:
            error = (type(exc), str(exc))
        a.shutdown(socket.SHUT_WR)
    finally:
        thread.join(10)
        a.close()
        b.close()
    return received[0], (bool(x.sent), x.tx, x.status, x.headers_count, x.head_size), error


def test_exchange_errors_are_the_python_classes():
    _, _, error = run_exchange(c_exchange, SCRIPTS["twice"])
    assert error[0] is HeadersAlreadySent
    _, _, error = run_exchange(c_exchange, SCRIPTS["header_crlf"])
    assert error[0] is ResponseError and "CR, LF or NUL" in error[1]
    _, _, error = run_exchange(c_exchange, SCRIPTS["exc_info_after_send"])
    assert error[0] is KeyError


def test_exchange_send_times_out_when_nobody_reads():
    a, b = socket.socketpair()
    with a, b:
        x = fastpath.Exchange(a.fileno(), False, 0.3)
        x.start_response("200 OK", [])
        with pytest.raises(TimeoutError):
            x.send_result([b"z" * 20_000_000])
        assert x.sent and 0 < x.tx < 20_000_000


def test_exchange_reports_a_closed_peer():
    a, b = socket.socketpair()
    with a:
        b.close()
        x = fastpath.Exchange(a.fileno(), False, 1.0)
        x.start_response("200 OK", [])
        with pytest.raises(BrokenPipeError):
            x.send_result([b"z"])


def test_file_wrapper_is_left_to_the_handler():
    a, b = socket.socketpair()
    with a, b:
        x = fastpath.Exchange(a.fileno(), False, 1.0)
        x.start_response("200 OK", [])
        assert x.send_result(FileWrapper(open(os.devnull, "rb"))) is False
        assert not x.sent


# -- the request log line ----------------------------------------------------------------

def python_line(record) -> bytes:
    """reqlog's Python steps for the default line (default_line + escaping)."""
    from uwsgigw.observe import reqlog
    line = reqlog.default_line(record)
    if not line.isprintable():
        line = reqlog._CTRL.sub(reqlog._ctrl_escape, line)
    return (line + "\n").encode("latin-1", "backslashreplace")


TEXT = st.text(st.characters(max_codepoint=0xFF), max_size=30)


@settings(max_examples=300, deadline=None)
@given(addr=TEXT, user=st.one_of(st.none(), TEXT), method=st.one_of(st.none(), TEXT),
       uri=st.one_of(st.none(), TEXT), path=st.one_of(st.none(), TEXT),
       proto=st.one_of(st.none(), TEXT), numbers=st.tuples(*[st.integers(0, 10**9)] * 9),
       started=st.floats(0, 4e9), elapsed=st.floats(0, 1e4))
def test_uwsgi_line_matches_python(addr, user, method, uri, path, proto, numbers, started,
                                   elapsed):
    env = {"REMOTE_ADDR": addr}
    for key, value in (("REMOTE_USER", user), ("REQUEST_URI", uri), ("PATH_INFO", path),
                       ("SERVER_PROTOCOL", proto), ("REQUEST_METHOD", method)):
        if value is not None:
            env[key] = value
    status, head_size, headers, nvars, pktsize, pid, core, requests, total = numbers
    record = RequestRecord(env, status, head_size + 5, head_size, headers, nvars, pktsize, 0,
                           started, elapsed, pid, 2, core, requests, total)
    assert fastpath.uwsgi_line(record) == python_line(record)


def test_uwsgi_line_leaves_the_unusual_to_python():
    def record(env):
        return RequestRecord(env, 200, 10, 5, 1, 2, 30, 0, time.time(), 0.001, 1, 1, 0, 1, 1)
    assert fastpath.uwsgi_line(record({"REQUEST_URI": "/\u20ac"})) is None  # not latin-1
    assert fastpath.uwsgi_line(record({"REMOTE_USER": None})) is None  # not a str
    with pytest.raises(TypeError):
        fastpath.uwsgi_line(("not", "a", "record"))


