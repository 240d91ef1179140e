"""Issue 13: the request cycle holds request state, the driver connection state.

nginx opens one uwsgi connection per request, but the HTTP listener will keep
connections alive and pipeline requests. This test is such a driver, minimal:
it reads two requests that arrived back to back on one connection, runs each
through the handler's cycle (``read_head`` + ``serve_wsgi``) and, as the
outcome says, reads the rest of one request before the next -- no request
state leaks from one to the other, and the cycle never closes, drains or
shuts down the connection itself.
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import nginx_vars, parse_response
from packet_builder import build_packet

from uwsgigw.protocol import decoder_py
from uwsgigw.cycle.body import drain_socket
from uwsgigw.protocol.environ import base_environ
from uwsgigw.wsgi.handler import ConnectionHandler, WorkerContext
from uwsgigw.observe.record import SharedCounter
from uwsgigw.cycle.request import Outcome
from uwsgigw.cycle.response import FileWrapper

try:
    from uwsgigw.wsgi import fastpath
except ImportError:  # the Python exchange only; conftest fails make test without C
    fastpath = None


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fail_after(b"first")
    text = ("%s %s %r" % (environ["REQUEST_METHOD"], environ["PATH_INFO"], body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(text)))])
    return [text]


def _fail_after(chunk):
    yield chunk
    raise RuntimeError("failed mid-stream (expected)")


def packet(method: str, uri: str, body: bytes = b"") -> bytes:
    env = nginx_vars(method=method, uri=uri, body=body)
    return build_packet([(k.encode(), v.encode()) for k, v in env.items()], body=body)


@pytest.fixture(params=["python-exchange", "c-exchange"])
def handler(request):
    if request.param == "c-exchange" and fastpath is None:
        pytest.fail("the C fast path is not built")
    ctx = WorkerContext(
        decode=decoder_py.decode, max_block=65535, socket_timeout=2.0, post_buffering=0,
        post_buffering_bufsize=8192, limit_post=0, pick_app=lambda env: app,
        base_environ=base_environ(errors=None, file_wrapper=FileWrapper, multithread=False,
                                  multiprocess=False),
        log_requests=False, worker_id=1, count_request=SharedCounter().incr,
        fastpath=fastpath if request.param == "c-exchange" else None)
    return ConnectionHandler(ctx)


def serve(handler, conn):
    """One request through the cycle; -> (head, exchange, outcome)."""
    handler.conn, handler.fd = conn, conn.fileno()  # the driver owns the connection
    head = handler.read_head(conn.fileno())
    assert head is not None
    exchange, out = handler.serve_wsgi(conn.fileno(), head.env,
                                       handler.view[head.consumed:head.nread], head.length,
                                       head.own_held, app, time.time(), keep_alive=True)
    return head, exchange, out


def read_responses(s: socket.socket, count: int) -> list:
    data, out = b"", []
    s.settimeout(5)
    while len(out) < count:
        chunk = s.recv(65536)
        assert chunk, "the connection ended after %d responses" % len(out)
        data += chunk
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                break
            length = int(parse_response(data).header("Content-Length"))
            if len(rest) < length:
                break
            out.append(parse_response(head + sep + rest[:length]))
            data = rest[length:]
    return out


def test_two_pipelined_requests_on_one_connection(handler):
    first, second = packet("GET", "/one"), packet("POST", "/two", b"hello")
    a, b = socket.socketpair()
    with a, b:
        b.sendall(first + second)  # both in the queue before the first is read
        for expected in (first, second):
            head, exchange, out = serve(handler, a)
            # This request's bytes only: the next one stays in the queue.
            assert out == Outcome(reset=False, unread=len(expected), keep_alive=True)
            assert drain_socket(a, out.unread, time.monotonic() + 2)
        responses = read_responses(b, 2)
        assert [r.body for r in responses] == [b"GET /one b''", b"POST /two b'hello'"]
        a.settimeout(0.2)
        with pytest.raises(socket.timeout):
            a.recv(1)  # nothing of either request is left


def test_a_cut_response_resets_and_ends_the_connection(handler):
    a, b = socket.socketpair()
    with a, b:
        b.sendall(packet("GET", "/fail") + packet("GET", "/one"))
        _, exchange, out = serve(handler, a)
        assert out.reset and not out.keep_alive and exchange.aborted


def test_the_uwsgi_driver_never_keeps_the_connection(handler):
    a, b = socket.socketpair()
    with a, b:
        b.sendall(packet("GET", "/one"))
        handler.conn, handler.fd = a, a.fileno()
        head = handler.read_head(a.fileno())
        _, out = handler.serve_wsgi(a.fileno(), head.env, handler.view[head.consumed:head.nread],
                                    head.length, head.own_held, app, time.time())
        assert out == Outcome(reset=False, unread=head.nread, keep_alive=False)
