"""An ASGI app's request on an HTTP connection (the ``http`` scope, ASGI 3).

The body was read whole before the app runs (http_connection.py), so
``receive()`` gives it as ``http.request`` messages, then waits for the client
to leave (``http.disconnect``; a hang-up is watched without reading, so a
pipelined request stays in the queue). ``send()`` frames the answer as
cycle/framing.py says. Failures go through the same rules and the same
``run_app`` as on a uwsgi socket (asgi/protocol.py); here a cut response is
visible to the client by its framing, and the connection is closed.
"""

from __future__ import annotations

import asyncio

from ..cycle import request
from ..cycle.framing import LENGTH, NONE, Framing, http_head
from ..cycle.response import ResponseError
from ..protocol.errors import ClientDisconnected
from .messages import AsgiExchange, status_line
from .protocol import run_app
from .scope import build_scope

_CHUNK = 65536
_DISCONNECT = {"type": "http.disconnect"}


class AsgiHttpExchange(AsgiExchange):
    """The state of one ASGI request on an HTTP connection (the interface
    asgi/protocol.py's ``run_app`` and the worker's heartbeat use)."""

    def __init__(self, connection, version: str, head_only: bool, env: dict, request_head,
                 started: float, keep_alive: bool) -> None:
        self.connection = connection
        self.worker = connection.worker
        self.ctx = connection.ctx
        self.loop = connection.loop
        self.fd = connection.conn.fileno()
        self.version = version
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.env = env
        self.request_head = request_head
        self.started = started
        self.body = env["wsgi.input"]
        self.body_left = request_head.length
        self.more_body = True
        self.framing: Framing | None = None
        self.head: bytes | None = None  # validated, not sent yet
        self.sent = self.complete = self.closed = self.aborted = False
        self.disconnected = False
        self.watching = False
        self.waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.cancelled_for = ""
        self.status = self.tx = self.head_size = self.headers_count = 0
        self.body_sent = 0

    def describe(self) -> str:
        return request.describe(self.env)

    # -- receive -------------------------------------------------------------------

    async def receive(self) -> dict:
        if self.more_body and not self.complete and not self.disconnected:
            data = self.body.read(min(_CHUNK, self.body_left)) if self.body_left else b""
            self.body_left -= len(data)
            self.more_body = self.body_left > 0
            return {"type": "http.request", "body": data, "more_body": self.more_body}
        if not (self.complete or self.disconnected):
            await self.wait_for_disconnect()
        return _DISCONNECT

    # -- send (messages.AsgiExchange checks the messages) ------------------------------

    async def _body(self, body: bytes, more: bool) -> None:
        framing = self.framing
        if framing.mode == NONE:
            body = b""
        elif framing.mode == LENGTH and self.body_sent + len(body) > framing.length:
            raise ResponseError("the app sent more than its Content-Length of %d "
                                "bytes" % framing.length)
        data = framing.encode(body)
        self.body_sent += len(body)
        if self.head is not None:
            data, self.head, self.sent = self.head + data, None, True
        if not more:
            data += framing.end()
            if framing.mode == LENGTH and self.body_sent < framing.length:
                self.aborted = True  # fewer bytes than promised: the client sees it
        await self._write(data)
        if not more:
            self.complete = True
            self.unwatch()
            self.wake_receiver()

    def _start(self, status, headers: list) -> None:
        self.keep_alive = self.keep_alive and not self.worker.stopping
        framing = http_head(status_line(status), headers, self.version, self.head_only,
                            self.keep_alive)
        self.framing, self.head = framing, framing.head
        self.status, self.head_size = status, len(framing.head)
        self.headers_count = framing.headers_count

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self.connection._send(data)
        except (OSError, TimeoutError) as exc:
            self.disconnected = True
            raise ClientDisconnected("the client went away: %s" % (
                str(exc) or type(exc).__name__)) from None
        self.tx += len(data)

    # -- failures (run_app applies request.py's rules through these) -------------------

    def abort(self) -> None:
        """The response cannot be completed: close the connection; its framing
        (no last chunk, a short length) shows the client the cut."""
        self.aborted = True
        self.unwatch()
        if not self.closed:
            self.closed = True
            self.connection.close()

    async def fail(self, failure: request.Failure) -> None:
        self.status = failure.logged_status(self.status)
        self.head = None
        if failure.resets(self.sent) or self.closed or self.disconnected:
            self.abort()
            return
        headers, body = failure.answer_parts()
        self.keep_alive = self.keep_alive and not self.worker.stopping
        framing = http_head(request.status_line(failure.status), headers, self.version,
                            self.head_only, self.keep_alive)
        data = framing.head + (body if framing.mode != NONE else b"")
        try:
            await self._write(data)
        except ClientDisconnected:
            self.abort()
            return
        self.framing, self.sent, self.complete = framing, True, True
        self.head_size, self.headers_count = len(framing.head), framing.headers_count
        self.unwatch()

    @property
    def reusable(self) -> bool:
        return (self.complete and not self.aborted and not self.closed and
                self.framing is not None and self.framing.keep_alive and self.keep_alive)


async def serve_asgi(connection, version: str, head_only: bool, env: dict, app, request_head,
                     started: float, keep_alive: bool) -> bool:
    """Run an ASGI app for one request of ``connection`` (an HttpConnection,
    or one on the C path: http_front.py); True if the connection may carry
    the next request. The hang-up is watched once the app waits for it (a
    ``receive()`` after the body): a write to a client gone fails anyway."""
    worker = connection.worker
    ex = AsgiHttpExchange(connection, version, head_only, env, request_head, started,
                          keep_alive)
    scope = build_scope(env, worker.ctx.states.get(id(app)))
    ex.task = asyncio.current_task()
    worker.request_started(ex)
    try:
        await run_app(ex, app, scope)
    finally:
        ex.unwatch()
        worker.request_done(ex)
    return ex.reusable
