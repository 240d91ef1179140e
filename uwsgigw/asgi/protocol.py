"""One nginx connection on the event loop: the uwsgi packet in, an ASGI app
run, the answer out.

The request side keeps the WSGI path's rules (handler.py / body.py): the same
decoder and environ builder, ``limit-post`` answered with 413 before the app
runs, ``post-buffering`` reading the whole body first (to memory below N
bytes, to an unlinked temp file at N and above), otherwise ``http.request``
messages streamed from the socket, never past CONTENT_LENGTH. The response
side runs the same :func:`uwsgigw.cycle.response.build_head`, so a status or header
with CR, LF or NUL is never sent: the app gets a :class:`ResponseError` from
``send`` and the client a 500, with the header named in the log.

nginx never half-closes an upstream connection, so once the body has been
read, a hang-up on the socket means nginx (and its client) went away
(:mod:`.hangup`): a pending ``receive()`` gets ``http.disconnect``, a task not
listening is cancelled, and ``send()`` raises :class:`ClientDisconnected`
(ASGI spec 2.4: an ``OSError``).

As on the WSGI path, the request's last byte stays in the kernel's queue until
the response is complete (the held tail, uwsgigw/cycle/ending.py): a response cut
short (the app raising, harakiri, the worker dying) resets the connection, so
nginx never passes a truncated body on as complete.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time

from .. import log
from ..cycle import request
from ..cycle.body import spool_read_size
from ..cycle.request import RequestHead
from ..cycle.response import build_head, simple_response
from ..protocol.errors import ClientDisconnected, ProtocolError
from .messages import AsgiExchange, status_line
from .scope import build_scope

_CHUNK = 65536
_PEEK = socket.MSG_PEEK
_DONTWAIT = socket.MSG_DONTWAIT
_DISCONNECT = {"type": "http.disconnect"}


class Exchange(AsgiExchange):
    """The state of one ASGI request/response on one nginx connection."""

    def __init__(self, worker, conn: socket.socket, started: float):
        self.worker = worker
        self.ctx = worker.ctx
        self.loop = worker.loop
        self.conn = conn
        self.fd = conn.fileno()
        self.started = started
        self.env: dict = {}
        self.task: asyncio.Task | None = None
        self.body = b""  # received but not yet given to the app
        self.left = 0  # body bytes not received yet
        self.held = 0  # bytes received but still in the kernel's queue (peeked)
        self.spool = None  # post-buffering temp file
        self.spool_left = 0
        self.more_body = True
        self.watching = False
        self.waiter: asyncio.Future | None = None
        self.disconnected = False
        self.cancelled_for = ""  # "disconnect" or "harakiri"
        self.head: bytes | None = None  # validated, not sent yet
        self.head_only = False
        self.sent = False  # the head went out
        self.complete = False
        self.closed = False
        self.status = 0
        self.tx = 0
        self.head_size = 0
        self.headers_count = 0
        self.request_head: RequestHead | None = None  # the request as read

    # -- socket helpers ------------------------------------------------------

    async def _recv(self, size: int) -> bytes:
        try:
            return self.conn.recv(size)
        except BlockingIOError:
            pass
        async with asyncio.timeout(self.ctx.socket_timeout):
            return await self.loop.sock_recv(self.conn, size)

    async def _peek(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` queued bytes, left in the queue; waits up to ``timeout``."""
        while True:
            try:
                return self.conn.recv(size, _PEEK)
            except BlockingIOError:
                pass
            ready = self.loop.create_future()
            self.loop.add_reader(self.fd, _wake, ready)
            try:
                async with asyncio.timeout(timeout):
                    await ready
            finally:
                self.loop.remove_reader(self.fd)

    async def _take_body(self, size: int) -> bytes:
        """Up to ``size`` more body bytes; the last one is peeked, so it stays
        queued (the held tail). b"" when the client closed."""
        if self.left > 1:
            data = await self._recv(min(size, self.left - 1))
            self.left -= len(data)
            return data
        data = await self._peek(1, self.ctx.socket_timeout)
        if data:
            self.left, self.held = 0, 1
        return data

    async def _write(self, data) -> None:
        try:
            n = self.conn.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            async with asyncio.timeout(self.ctx.socket_timeout):
                await self.loop.sock_sendall(self.conn, memoryview(data)[n:])
        self.tx += len(data)

    # -- reading the request -------------------------------------------------

    async def read_packet(self):
        """Return (packet, bytes read, held) or (None, bytes, 0) on EOF.

        The reads are MSG_PEEK, as in handler.py: the last ``held`` of the
        bytes read stay in the kernel's queue; an incomplete packet's bytes
        are consumed before waiting for more. socket-timeout bounds the
        whole vars block.
        """
        ctx, conn = self.ctx, self.conn
        data = b""
        deadline = self.loop.time() + ctx.socket_timeout
        while True:
            chunk = await self._peek(_CHUNK if len(data) < 65539 else 2 * _CHUNK,
                                     deadline - self.loop.time())
            if not chunk:
                return None, data, 0
            whole = data + chunk if data else chunk
            packet = ctx.decode(whole, ctx.max_block)
            if packet is not None:
                return packet, whole, len(chunk)
            conn.recv(len(chunk), _DONTWAIT)  # queued: consume, then wait for more
            data = whole

    async def read_body_before_app(self, length: int) -> None:
        """post-buffering: the whole body before the app runs (uWSGI semantics)."""
        ctx = self.ctx
        if length >= ctx.post_buffering:
            spool = tempfile.TemporaryFile()  # O_TMPFILE: never has a name
            try:
                spool.write(self.body)
                bufsize = spool_read_size(ctx.post_buffering_bufsize)
                while self.left > 0:
                    data = await self._take_body(bufsize)
                    if not data:
                        raise ClientDisconnected("client closed the connection while "
                                                 "sending the body")
                    spool.write(data)
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
            self.spool, self.spool_left, self.body = spool, length, b""
            return
        parts = [self.body]
        while self.left > 0:
            data = await self._take_body(1 << 20)
            if not data:
                raise ClientDisconnected("client closed the connection while sending the body")
            parts.append(data)
        self.body = b"".join(parts)

    # -- ASGI receive ----------------------------------------------------------

    async def receive(self) -> dict:
        if self.more_body and not self.complete and not self.disconnected:
            return await self._next_body()
        if not (self.complete or self.disconnected):
            # Body done, response pending: wait until nginx goes away.
            self.watch()
            await self.wait_for_disconnect()
        return _DISCONNECT

    async def _next_body(self) -> dict:
        if self.spool is not None:
            data = self.spool.read(min(_CHUNK, self.spool_left))
            self.spool_left -= len(data)
            if self.spool_left <= 0 or not data:
                self.spool.close()
                self.spool = None
                self._body_done()
            return {"type": "http.request", "body": data, "more_body": self.more_body}
        if self.body or self.left <= 0:
            data, self.body = self.body, b""
        else:
            try:
                data = await self._take_body(_CHUNK)
            except (OSError, TimeoutError) as exc:
                data, why = b"", str(exc) or type(exc).__name__
            else:
                why = "client closed the connection while sending the body"
            if not data:
                log.info("%s: body not received: %s" % (self.describe(), why))
                self.disconnect()
                return _DISCONNECT
        if self.left <= 0 and not self.body:
            self._body_done()
        return {"type": "http.request", "body": data, "more_body": self.more_body}

    def _body_done(self) -> None:
        self.more_body = False
        self.watch()

    # -- ASGI send (messages.AsgiExchange checks the messages) -------------------

    async def _body(self, body: bytes, more: bool) -> None:
        if self.head_only:
            body = b""
        if self.head is not None:
            data = self.head + body if body else self.head
            self.head = None
            self.sent = True
        else:
            data = body
        if data:
            try:
                await self._write(data)
            except (OSError, TimeoutError) as exc:
                self.disconnect()
                raise ClientDisconnected("the client went away: %s" % (
                    str(exc) or type(exc).__name__)) from None
        if not more:
            self._finish()

    def _start(self, status, headers: list) -> None:
        self.head, self.headers_count = build_head(status_line(status), headers)
        self.head_size = len(self.head)
        self.status = status
        if not request.body_allowed(self.head_only, status):
            self.head_only = True  # no body, whatever the app sends

    def _finish(self) -> None:
        """The response is complete: let nginx see EOF now, even if the app
        keeps running (Starlette's background tasks run inside the call)."""
        self.complete = True
        self.unwatch()
        self.wake_receiver()
        self.close_connection()

    def close_connection(self) -> None:
        """The response is complete: ending.finish on the event loop."""
        if self.closed:
            return
        self.closed = True
        self.unwatch()
        conn = self.conn
        unread = self.left + self.held
        try:
            conn.shutdown(socket.SHUT_WR)
            if self.held:  # queued already: no wait
                unread -= len(conn.recv(self.held, _DONTWAIT))
        except OSError:
            unread = 0  # the peer is gone
        if unread > 0 and not self.disconnected:
            # Unread body: read it (bounded) so our close is not a reset,
            # which nginx would turn into a 502.
            self.worker.spawn(drain_and_close(self.loop, conn, unread, min(
                self.ctx.socket_timeout, 2.0)))
        else:
            conn.close()

    def abort(self) -> None:
        """The head went out but the body cannot be completed: close with the
        held tail unread, which resets the connection (ending.py), so nginx
        does not take a truncated body for a complete one."""
        if not self.closed:
            self.unwatch()
            self.closed = True
            self.conn.close()

    async def fail(self, failure: request.Failure) -> None:
        """Answer the failure's status if nothing was sent yet; else (or when
        the client is gone) abort (request.Failure)."""
        self.status = failure.logged_status(self.status)
        self.head = None
        if failure.resets(self.sent) or self.closed or self.disconnected:
            self.abort()
            return
        try:
            await self._write(simple_response(request.status_line(failure.status),
                                              failure.answer + "\n"))
        except (OSError, TimeoutError):
            self.abort()
            return
        self.sent = self.complete = True
        self.close_connection()

    def describe(self) -> str:
        return request.describe(self.env)


def _wake(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


async def drain_and_close(loop, conn: socket.socket, left: int, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while left != 0:
                data = await loop.sock_recv(conn, _CHUNK if left < 0 else min(left, _CHUNK))
                if not data:
                    break
                if left > 0:
                    left -= len(data)
    except (OSError, TimeoutError):
        pass
    finally:
        conn.close()


async def reject(ex: Exchange, exc: ProtocolError, body_left: int) -> None:
    """Refuse a request we will not run: log, answer, drain, close."""
    rejected = request.rejection(exc)
    request.log_rejection(rejected)
    ex.closed = True
    try:
        await ex._write(rejected.answer)
        ex.conn.shutdown(socket.SHUT_WR)
    except (OSError, TimeoutError):
        ex.conn.close()
        return
    await drain_and_close(ex.loop, ex.conn, body_left, min(ex.ctx.socket_timeout, 2.0))


async def serve_connection(worker, conn: socket.socket) -> None:
    """The whole life of one connection (one task)."""
    ex = Exchange(worker, conn, time.time())
    try:
        await _serve(worker, ex)
    except Exception:  # a bug here must cost one connection, not the worker
        log.exception("internal error while serving a connection")
    finally:
        if not ex.closed:
            ex.unwatch()
            ex.closed = True
            conn.close()
        if ex.spool is not None:
            ex.spool.close()


async def _serve(worker, ex: Exchange) -> None:
    ctx = worker.ctx
    try:
        packet, data, held = await ex.read_packet()
    except ProtocolError as exc:
        await reject(ex, exc, -1)
        return
    except OSError as exc:
        request.log_read_failure(exc, ctx.socket_timeout)
        return
    if packet is None:
        request.log_incomplete_packet(len(data))
        return
    length = -1
    have = len(data) - packet.consumed  # body bytes read with the vars block
    try:
        head = RequestHead.from_packet(packet, ctx.base_environ, len(data), held)
        length = head.length
        request.limit_body(length, ctx.limit_post)
    except ProtocolError as exc:
        await reject(ex, exc, held + max(length - have, 0) if length >= 0 else -1)
        return
    ex.request_head = head
    ex.env = env = head.env
    if have < length and held:
        ex.conn.recv(held, _DONTWAIT)  # the body goes on: consume what was peeked
        held = 0
    # Else all that was peeked is read at the end, even bytes a client sent
    # after this request (nginx sends none): one request per uwsgi connection.
    ex.held = held
    app = ctx.pick_app(env)
    if app is not None and ctx.kinds.get(id(app)) == "wsgi":
        ex.closed = True  # the pool thread owns the socket from here
        await worker.run_wsgi(app, ex.conn, env, data[packet.consumed:], length, held, ex)
        return
    ex.body = bytes(data[packet.consumed:packet.consumed + length]) if length > 0 else b""
    ex.left = max(length - have, 0)
    # ASGI: the first receive() always gets an http.request, with body b""
    # and more_body False when there is no body (GET, HEAD, Content-Length 0).
    ex.more_body = True
    if ctx.post_buffering and ex.left > 0:
        try:
            await ex.read_body_before_app(length)
        except (OSError, TimeoutError) as exc:
            log.info("%s: body not received: %s" % (ex.describe(), str(exc) or
                                                    type(exc).__name__))
            return
    ex.head_only = env["REQUEST_METHOD"] == "HEAD"
    if app is None:
        failure = request.no_app(env)
        failure.log()
        await ex.fail(failure)
        worker.request_done(ex)
        return
    scope = build_scope(env, ctx.states.get(id(app)))
    ex.task = asyncio.current_task()
    if ex.left <= 0:
        ex.watch()  # the socket holds nothing more of this request
    worker.request_started(ex)
    try:
        await run_app(ex, app, scope)
    finally:
        worker.request_done(ex)


async def run_app(ex: Exchange, app, scope: dict) -> None:
    """Run the app; a request it did not complete ends as request.py says."""
    try:
        await app(scope, ex.receive, ex.send)
    except asyncio.CancelledError:
        if not ex.cancelled_for:
            raise  # not ours (the loop is going away)
        ex.task.uncancel()
        failure = (request.cancelled_by_harakiri(ex.ctx.harakiri)
                   if ex.cancelled_for == "harakiri" else
                   request.cancelled_for_disconnect(ex.describe()))
    except Exception as exc:
        # here: "exception" logs the traceback being handled
        await ex.fail(request.app_failed(exc, ex.describe(), ex.worker.count_exception))
        return
    else:
        if ex.complete:
            return
        failure = (request.client_left() if ex.disconnected else
                   request.unfinished(ex.describe(), ex.sent))
    failure.log()
    await ex.fail(failure)
