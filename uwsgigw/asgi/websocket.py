"""WebSockets for ASGI apps on an HTTP socket (the ``websocket`` scope, ASGI
spec 2.4, over RFC 6455).

http_connection.py hands over a connection whose request asks for the
WebSocket protocol (protocol/http.py ``websocket_upgrade``) once its head is
read; the connection is the session's until it closes. The frames are
wsproto's (sans-IO, as Uvicorn uses it): it checks the handshake, builds the
101 answer, parses and builds frames, reassembles nothing (this module does,
counting ``websockets-max-size``). Its life:

* handshake: the app gets ``websocket.connect``; ``websocket.accept`` sends
  101; ``websocket.close`` before it sends 403; the ``websocket.http.response``
  extension sends the app's own HTTP answer; an app that raises or returns
  before accepting gets a 500. A handshake wsproto refuses gets a 400 (426
  for another protocol version) and the app is not called.
* open: a reader task reads frames as they come (no timeout: an idle
  WebSocket is not an idle HTTP connection), answers pings, reassembles
  fragmented messages and queues them for ``receive()``; at ``_QUEUE``
  messages the app has not taken it stops reading (back-pressure). Writes
  are bounded by ``socket-timeout``.
* closing: the client's close frame is answered and the app gets
  ``websocket.disconnect`` with its code; the app's ``websocket.close``, an
  oversized message (1009), an app exception (1011), the app returning
  (1000) and the worker stopping (1001: reload, TERM, recycling) send one,
  and the connection is closed when the client answers or after
  ``socket-timeout``. A client that vanishes is a disconnect with 1006.

The request log has one line per session (status 101, bytes sent, its
whole duration), through the same record and counters as every request.
Harakiri does not apply: a WebSocket lives as long as its client wants.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping,
                            Request, TextMessage)
from wsproto.utilities import ProtocolError as WsProtocolError

from .. import log
from ..cycle import request
from ..cycle.framing import NONE, http_head
from ..cycle.response import build_head
from ..protocol.errors import ClientDisconnected
from .messages import status_line, str_headers
from .scope import websocket_scope

_READ = 65536
_QUEUE = 16  # messages received and not yet taken by the app: then reading pauses
_OPEN, _CLOSED_SOCKET = ConnectionState.OPEN, ConnectionState.CLOSED


def _disconnect(code: int, reason: str = "") -> dict:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


class WebSocketSession:
    """One WebSocket, from the handshake to the closed connection: the
    interface the worker tracks (``started``, ``env``, ``request_head``,
    ``task``, ``status``, ``tx``, ..., ``describe``, ``abort``)."""

    websocket = True  # the worker's harakiri leaves it alone

    def __init__(self, connection, env: dict, request_head, started: float) -> None:
        self.connection = connection
        self.worker = connection.worker
        self.ctx = connection.ctx
        self.loop = connection.loop
        self.conn = connection.conn
        self.env = env
        self.request_head = request_head
        self.started = started
        self.task: asyncio.Task | None = None
        self.cancelled_for = ""
        self.closed = False
        self.status = self.tx = self.head_size = self.headers_count = 0
        self.ws = WSConnection(ConnectionType.SERVER)
        self.subprotocols: list = []
        self.max_size = self.ctx.websockets_max_size
        self.connect_sent = False
        self.accepted = False
        self.answered = False  # refused with an HTTP answer (complete)
        self.framing = None  # websocket.http.response under way
        self.response_sent = False  # its head went out
        self.close_sent = False
        self.gone: dict | None = None  # the app's websocket.disconnect, once known
        self.inbox: deque = deque()
        self.waiter: asyncio.Future | None = None  # a receive() waiting
        self.room: asyncio.Future | None = None  # the reader waiting for the app
        self.reader: asyncio.Task | None = None
        self.closer: asyncio.TimerHandle | None = None
        self.shut = False
        self.app_done = False
        self.write_lock = asyncio.Lock()

    def describe(self) -> str:
        return request.describe(self.env)

    # -- the handshake ---------------------------------------------------------------

    def check_handshake(self, head) -> tuple[int, str, list] | None:
        """None if wsproto takes the request as a WebSocket handshake, else
        (status, why, extra headers) for the refusal."""
        try:
            self.ws.initiate_upgrade_connection(head.headers, head.target.encode("latin-1"))
            event = next(self.ws.events(), None)
        except WsProtocolError as exc:
            hint = getattr(exc, "event_hint", None)
            status = getattr(hint, "status_code", 400)
            return status, str(exc), [(n.decode("latin-1"), v.decode("latin-1"))
                                      for n, v in getattr(hint, "headers", ())]
        except Exception as exc:  # h11 or idna refusing a value wsproto passes on
            return 400, "%s: %s" % (type(exc).__name__, exc), []
        if not isinstance(event, Request):
            return 400, "not a WebSocket handshake", []
        self.subprotocols = list(event.subprotocols)
        return None

    async def refuse_handshake(self, status: int, why: str, headers: list) -> None:
        log.rate_limited("bad-websocket-handshake", "bad request (websocket-handshake) "
                         "for %s: %s" % (self.describe(), why), level="WARNING")
        body = (why + "\n").encode("utf-8", "replace")
        await self._http_answer(status, [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body))), *headers], body)

    async def _http_answer(self, status: int, headers: list, body: bytes) -> None:
        """A whole HTTP answer instead of the 101; the connection then closes."""
        framing = http_head(request.status_line(status), headers, "1.1", False, False)
        self.answered = True
        self.status, self.head_size = status, len(framing.head)
        self.headers_count = framing.headers_count
        self._gone(1006)
        try:
            await self._write(framing.head + (body if framing.mode != NONE else b""))
        except ClientDisconnected:
            pass
        self._shutdown()

    # -- ASGI receive ------------------------------------------------------------------

    async def receive(self) -> dict:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        inbox = self.inbox
        while not inbox:
            if self.gone is not None:
                return self.gone  # again, for an app that asks again
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = inbox.popleft()
        if self.room is not None and len(inbox) < _QUEUE and not self.room.done():
            self.room.set_result(None)
        return message

    def _deliver(self, message: dict) -> None:
        self.inbox.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _gone(self, code: int, reason: str = "") -> None:
        """The session is over for the app: its last receive() says how."""
        if self.gone is None:
            self.gone = _disconnect(code, reason or "")
            self._deliver(self.gone)

    # -- ASGI send ----------------------------------------------------------------------

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.close_sent or self.gone is not None:
                raise ClientDisconnected("the WebSocket is closed")
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                if type(text) is not str:
                    raise RuntimeError("websocket.send text must be str, got %r"
                                       % type(text).__name__)
                event = TextMessage(data=text)
            elif data is not None:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise RuntimeError("websocket.send bytes must be bytes, got %r"
                                       % type(data).__name__)
                event = BytesMessage(data=bytes(data))
            else:
                raise RuntimeError("websocket.send needs bytes or text")
            await self._write(self.ws.send(event))
        elif kind == "websocket.accept":
            self._before_accept(kind)
            await self._accept(message.get("subprotocol"), message.get("headers") or [])
        elif kind == "websocket.close":
            if self.accepted:
                if not self.close_sent and self.gone is None:
                    await self._close(_close_code(message.get("code", 1000)),
                                      message.get("reason") or "")
            elif self.answered or self.framing is not None:
                raise RuntimeError("websocket.close after an HTTP response")
            else:  # ASGI: a close before accept is an HTTP 403
                await self._http_answer(403, [("Content-Length", "0")], b"")
        elif kind == "websocket.http.response.start":
            self._before_accept(kind)
            if self.framing is not None:
                raise RuntimeError("websocket.http.response.start sent twice")
            self.framing = http_head(status_line(message["status"]),
                                     str_headers(message.get("headers", ())), "1.1",
                                     False, False)
            self.status = message["status"]
            self.head_size, self.headers_count = len(self.framing.head), \
                self.framing.headers_count
        elif kind == "websocket.http.response.body":
            await self._response_body(message.get("body", b""),
                                      message.get("more_body", False))
        else:
            raise RuntimeError("unexpected ASGI message %r for a websocket scope" % kind)

    def _before_accept(self, kind: str) -> None:
        if self.accepted or self.answered:
            raise RuntimeError("%s after the handshake was answered" % kind)

    async def _accept(self, subprotocol, headers) -> None:
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise RuntimeError("subprotocol %r was not offered by the client (%r)"
                               % (subprotocol, self.subprotocols))
        build_head("200 OK", str_headers(headers))  # the headers checked: ResponseError
        data = self.ws.send(AcceptConnection(subprotocol=subprotocol,
                                             extra_headers=[(bytes(n), bytes(v))
                                                            for n, v in headers]))
        self.accepted = True
        self.status, self.head_size = 101, len(data)
        self.headers_count = data.count(b"\r\n") - 2
        await self._write(data)
        self.reader = self.loop.create_task(self._read())
        if self.worker.stopping:
            await self._close(1001, "server shutting down")

    async def _response_body(self, body: bytes, more: bool) -> None:
        framing = self.framing
        if framing is None:
            raise RuntimeError("websocket.http.response.body before its start")
        if self.answered:
            raise RuntimeError("websocket.http.response.body after the response completed")
        data = framing.encode(body) if framing.mode != NONE else b""
        if not self.response_sent:
            data, self.response_sent = framing.head + data, True
        if not more:
            data += framing.end()
            self.answered = True
            self._gone(1006)
        await self._write(data)
        if not more:
            self._shutdown()

    # -- the wire -----------------------------------------------------------------------

    async def _write(self, data) -> None:
        if self.shut:
            raise ClientDisconnected("the WebSocket connection is closed")
        async with self.write_lock:
            try:
                await self.connection._send(data)  # socket-timeout bounds it
            except (OSError, TimeoutError) as exc:
                self._gone(1006)
                self._shutdown()
                raise ClientDisconnected("the client went away: %s" % (
                    str(exc) or type(exc).__name__)) from None
        self.tx += len(data)

    async def _close(self, code: int, reason: str) -> None:
        """Send our close frame; the client's answer (or socket-timeout)
        ends the connection."""
        if self.close_sent or self.shut or self.ws.state is not _OPEN:
            return  # closing already (a client's close is answered by the reader)
        self.close_sent = True
        self._gone(code, reason)
        self.closer = self.loop.call_later(self.ctx.socket_timeout, self._shutdown)
        await self._write(self.ws.send(CloseConnection(code=code, reason=reason)))

    def _shutdown(self) -> None:
        """No more bytes either way: the reader and any write wake up; the
        socket itself is closed when the session ends (http_connection)."""
        if not self.shut:
            self.shut = True
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if self.room is not None and not self.room.done():
                self.room.set_result(None)

    def going_away(self) -> None:
        """The worker stops (reload, TERM, recycling): 1001 to the client
        (one not accepted yet gets it once accepted: _accept)."""
        if self.accepted and not self.close_sent and self.gone is None:
            self.worker.spawn(self._close_quietly(1001, "server shutting down"))
        elif not self.accepted and not self.answered:
            self._gone(1001)  # an app waiting in receive() before accepting

    async def _close_quietly(self, code: int, reason: str) -> None:
        try:
            await self._close(code, reason)
        except ClientDisconnected:
            pass

    def abort(self) -> None:
        self.closed = True
        self._shutdown()

    # -- reading frames -----------------------------------------------------------------

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except (OSError, TimeoutError):
            self._gone(1006)
        except Exception:  # a bug here must cost one WebSocket, not the worker
            log.exception("internal error while reading a WebSocket of %s" % self.describe())
            self._gone(1011)
        finally:
            self._shutdown()

    async def _read_frames(self) -> None:
        ws, conn, loop = self.ws, self.conn, self.loop
        parts: list = []
        size = 0
        data = self.connection.parser.trailing
        while True:
            if data:
                ws.receive_data(data)
            for event in ws.events():
                kind = type(event)
                if kind is TextMessage or kind is BytesMessage:
                    if self.close_sent or self.app_done:
                        continue  # closing: what still comes is dropped
                    piece = event.data
                    size += len(piece) if kind is BytesMessage or piece.isascii() else \
                        len(piece.encode("utf-8"))
                    if self.max_size and size > self.max_size:
                        log.rate_limited("websocket-max-size", "%s: WebSocket message over "
                                         "%d KB (websockets-max-size); closed with 1009" % (
                                             self.describe(), self.max_size // 1024))
                        await self._close(1009, "message too big")
                        parts, size = [], 0
                        continue
                    if not event.message_finished:
                        parts.append(piece)
                        continue
                    if parts:
                        parts.append(piece)
                        piece = "".join(parts) if kind is TextMessage else b"".join(parts)
                        parts = []
                    size = 0
                    self._deliver({"type": "websocket.receive", "text": piece}
                                  if kind is TextMessage else
                                  {"type": "websocket.receive", "bytes": bytes(piece)})
                    while len(self.inbox) >= _QUEUE and not self.shut and not self.app_done:
                        self.room = loop.create_future()
                        await self.room
                        self.room = None
                elif kind is Ping:
                    if ws.state is _OPEN:
                        await self._write(ws.send(event.response()))
                elif kind is CloseConnection:
                    if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closes
                        self._gone(event.code, event.reason)
                        await self._write(ws.send(event.response()))
                    elif ws.state is _OPEN:  # wsproto found a protocol error
                        log.info("%s: WebSocket closed with %d: %s" % (
                            self.describe(), event.code, event.reason))
                        await self._close(event.code, event.reason or "")
                    else:
                        self._gone(event.code, event.reason)
                    return  # closed (or closing: nothing more to read)
            if self.shut or ws.state is _CLOSED_SOCKET:
                return
            try:
                data = conn.recv(_READ)
            except BlockingIOError:
                data = await loop.sock_recv(conn, _READ)
            if not data:
                self._gone(1006)
                return

    # -- the session's end ---------------------------------------------------------------

    async def run_app(self, app, scope: dict) -> None:
        """Run the app; one that fails or does not answer the handshake ends
        as request.py says (a 500 before the 101, 1011 after it)."""
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise  # not ours: harakiri leaves WebSockets alone; the loop is going away
        except Exception as exc:
            failure = request.app_failure(exc, self.describe())
            failure.log()  # here: "exception" logs the traceback being handled
            if failure.counts_exception:
                self.worker.core.exceptions += 1
            await self._fail(failure)
            return
        if not (self.accepted or self.answered):
            failure = request.unfinished(self.describe(), self.response_sent)
            failure.log()
            await self._fail(failure)

    async def _fail(self, failure: request.Failure) -> None:
        self.status = failure.logged_status(self.status)
        if self.accepted:
            if failure.answer is not None and not self.close_sent and self.gone is None:
                await self._close_quietly(1011, "internal error")
        elif self.response_sent or failure.answer is None:
            self._gone(1006)
            self._shutdown()  # the HTTP answer is cut short: its framing shows it
        elif not self.answered:
            headers, body = failure.answer_parts()
            await self._http_answer(failure.status, headers, body)

    async def finish(self) -> None:
        """The app returned: close the WebSocket it left open (1000), wait
        for the closing handshake (bounded), stop reading."""
        self.app_done = True
        if self.room is not None and not self.room.done():
            self.room.set_result(None)
        if self.accepted and not self.close_sent and self.gone is None:
            await self._close_quietly(1000, "")
        if self.reader is not None:  # ends at the client's close, EOF or the closer
            try:
                await self.reader
            except asyncio.CancelledError:
                if not self.reader.cancelled():
                    raise
        self.stop()

    def stop(self) -> None:
        if self.closer is not None:
            self.closer.cancel()
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()
        self._shutdown()


def _close_code(code) -> int:
    """The app's close code: RFC 6455 7.4 lets an endpoint send 1000-1003,
    1007-1014 and 3000-4999."""
    if type(code) is not int or not (1000 <= code <= 1003 or 1007 <= code <= 1014 or
                                     3000 <= code <= 4999):
        raise RuntimeError("invalid WebSocket close code %r" % (code,))
    return code


async def serve_websocket(connection, head, env: dict, app, request_head,
                          started: float) -> bool:
    """The WebSocket session of an Upgrade request to an ASGI app, to its
    end; False: the connection carries nothing more."""
    worker = connection.worker
    session = WebSocketSession(connection, env, request_head, started)
    refusal = session.check_handshake(head)
    if refusal is not None:
        await session.refuse_handshake(*refusal)
        return False
    scope = websocket_scope(env, worker.ctx.states.get(id(app)), session.subprotocols)
    session.task = asyncio.current_task()
    worker.request_started(session)
    worker.websockets.add(session)
    try:
        await session.run_app(app, scope)
        await session.finish()
    finally:
        worker.websockets.discard(session)
        session.stop()
        worker.request_done(session)
    return False
