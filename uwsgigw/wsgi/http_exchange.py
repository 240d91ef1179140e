"""A WSGI app's response on an HTTP connection, in a worker thread.

The HTTP twin of handler._Exchange (PEP 3333's start_response/write) with
HTTP's framing (uwsgigw/cycle/framing.py): Content-Length as the app gave
it, else chunked (HTTP/1.1) or close-delimited (HTTP/1.0), a Date header, and
Connection as the request and the server allow. The socket is blocking here,
each send bounded by socket-timeout. A response that cannot be completed
(the app raising after the head, fewer bytes than its Content-Length) is
``aborted``: the driver closes the connection, and the missing final chunk
or the short length tells the client it was cut.
"""

from __future__ import annotations

import socket

from ..cycle import request
from ..cycle.framing import CHUNKED, CLOSE, LENGTH, NONE, Framing, http_head
from ..cycle.response import FileWrapper, ResponseError, StartResponse


class HttpExchange(StartResponse):
    """The response state of one WSGI request on an HTTP connection."""

    def __init__(self, conn: socket.socket, version: str, head_only: bool,
                 keep_alive: bool, timeout: float, stopping=lambda: False) -> None:
        self.conn = conn
        self.version = version
        self.head_only = head_only
        self.keep_alive = keep_alive  # what the request and the server allow
        self.timeout = timeout
        # Asked when the head goes out: a worker told to stop meanwhile answers
        # with Connection: close.
        self.stopping = stopping
        self.pending = None
        self.framing: Framing | None = None
        self.sent = False
        self.aborted = False
        self.tx = 0
        self.body_sent = 0
        self.status = 0
        self.head_size = 0
        self.headers_count = 0

    # -- PEP 3333 (start_response: cycle.response.StartResponse) --------------------

    def write(self, data: bytes) -> None:
        if not self.sent:
            if self.pending is None:
                raise AssertionError("write() before start_response()")
            self.keep_alive = self.keep_alive and not self.stopping()
            framing = http_head(self.pending[0], self.pending[1], self.version,
                                self.head_only, self.keep_alive)
            if framing.mode == LENGTH and len(data) > framing.length:
                raise ResponseError(  # before the head: the client gets a 500
                    "the app sent more than its Content-Length of %d bytes" % framing.length)
            payload = framing.head + framing.encode(data) if framing.mode != NONE else \
                framing.head
            self.framing = framing
            self.status = int(self.pending[0][:3])
            self.head_size = len(framing.head)
            self.headers_count = framing.headers_count
            self.sent = True
            self._send(payload)
            if framing.mode != NONE:
                self.body_sent += len(data)
        elif data and self.framing.mode != NONE:
            if self.framing.mode == LENGTH and self.body_sent + len(data) > self.framing.length:
                raise ResponseError(
                    "the app sent more than its Content-Length of %d bytes"
                    % self.framing.length)
            self._send(self.framing.encode(data))
            self.body_sent += len(data)

    def send_result(self, result) -> None:
        """Send the app's return value (any iterable; a FileWrapper is iterated)."""
        kind = type(result)
        if kind is bytes:  # not PEP 3333, but uWSGI accepts it
            self.write(result)
        elif kind is list or kind is tuple:
            self.write(b"".join(result))
        else:
            for chunk in (iter(result) if kind is FileWrapper else result):
                if chunk:
                    self.write(chunk)
                    if self.framing.mode == NONE:
                        break
            if not self.sent:
                self.write(b"")
        self._finish()

    def _finish(self) -> None:
        framing = self.framing
        if framing.mode == CHUNKED:
            self._send(framing.end())
        elif framing.mode == LENGTH and self.body_sent < framing.length:
            # Fewer bytes than promised: the client must see the cut.
            self.aborted = True
        elif framing.mode == CLOSE:
            self.keep_alive = False

    @property
    def reusable(self) -> bool:
        """The connection may carry the next request."""
        return (self.sent and not self.aborted and self.framing is not None
                and self.framing.keep_alive and self.keep_alive)

    def _send(self, data: bytes) -> None:
        """Send all of ``data``, each send() bounded by socket-timeout, counting
        what went out (a send that times out midway still counts its part, as
        the C exchange does: the request log's sizes stay true)."""
        view = memoryview(data)
        while view:
            sent = self.conn.send(view)
            self.tx += sent
            view = view[sent:]

    # -- failures (request.Failure decides; this applies it) ---------------------------

    def fail(self, failure: request.Failure) -> None:
        """Answer the failure's status if nothing was sent yet (the connection
        stays usable), else mark the response aborted (the driver closes)."""
        self.status = failure.logged_status(self.status)
        if failure.resets(self.sent):
            self.aborted = True
            return
        headers, body = failure.answer_parts()
        self.keep_alive = self.keep_alive and not self.stopping()
        framing = http_head(request.status_line(failure.status), headers, self.version,
                            self.head_only, self.keep_alive)
        try:
            self._send(framing.head + (body if framing.mode != NONE else b""))
        except OSError:
            self.aborted = True
            return
        self.framing, self.sent = framing, True
        self.head_size, self.headers_count = len(framing.head), framing.headers_count


def run_app(app, env: dict, exchange: HttpExchange, count_exception) -> None:
    """Call the WSGI app and send its answer; every failure as request.py
    says (handler.ConnectionHandler._run_app is the uwsgi socket's twin).
    ``count_exception()`` bumps the worker's exceptions counter."""
    if app is None:
        failure = request.no_app(env)
        failure.log()
        exchange.fail(failure)
        return
    result = None
    try:
        result = app(env, exchange.start_response)
        exchange.send_result(result)
    except Exception as exc:
        exchange.fail(request.app_failed(exc, request.describe(env), count_exception))
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                request.Failure("exception", "exception in the app's close()").log()
