"""One HTTP/1.x connection on the worker's event loop: its requests read,
run and answered, one after the other, as long as it may be kept alive.

Idle and slow clients cost a descriptor, not a thread: the loop reads the
request head (``http-headers-timeout`` bounds it; ``http-keepalive-timeout``
bounds the wait for the next request) and the whole body (de-chunked,
``limit-post`` counted while reading, ``socket-timeout`` per read; in memory
below ``post-buffering`` -- or 64 KiB when it is off -- else in an unlinked
temp file) before any app runs. A WSGI app then runs in the worker's thread
pool on the blocking socket (wsgi/http_exchange.py), an ASGI app on the loop
(asgi/http_asgi.py; a WebSocket upgrade: asgi/websocket.py, which then
owns the connection). Responses go out in the order of the requests: a
pipelined request waits, parsed, until the one before it is answered.

The request's rules are the cycle's (cycle/request.py: refusals, failures);
the head's parsing is protocol/http.py's (llhttp); the framing of the answer
cycle/framing.py's. A connection the request or the server will not keep
(Connection: close, HTTP/1.0 without keep-alive, ``http-keepalive = 0``, a
worker stopping, a response cut short) is closed after its answer.
"""

from __future__ import annotations

import asyncio
import io
import socket
import tempfile
import time

from .. import log
from ..cycle import request
from ..cycle.request import RequestHead
from ..cycle.static_app import is_static
from ..protocol.errors import BodyTooLarge, ProtocolError
from ..protocol.http import END, HttpHead, RequestParser, environ_vars, websocket_upgrade
from ..wsgi.http_exchange import HttpExchange, run_app
from . import proxy_intake

_READ = 65536
_MEMORY_BODY = 65536  # without post-buffering, larger bodies are spooled to disk
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A stopping worker (reload, recycling) keeps a kept-alive connection until it
# has been quiet this long (seconds), answering a request that comes meanwhile
# with Connection: close. Closing it at once races the proxy: nginx may have
# just sent a request on it, and does not retry a POST (it answers 502). nginx
# reuses its most recently freed connection first, so one quiet for a second
# is outside the set it is using.
DRAIN_QUIET = 1.0
# After a refusal, what the client still sends is read and dropped, up to
# this many bytes or seconds, before the close (a reset could destroy the
# answer).
LINGER_BYTES = 1 << 20
LINGER_TIME = 2.0


class HttpRequest:
    """A request in flight, as the async worker tracks it (harakiri's heartbeat,
    USR2's dump, the request log): the same attributes as protocol.Exchange."""

    __slots__ = ("started", "env", "request_head", "task", "cancelled_for", "closed",
                 "tx", "status", "head_size", "headers_count", "conn")

    def __init__(self, started: float, env: dict, request_head: RequestHead, conn) -> None:
        self.started = started
        self.env = env
        self.request_head = request_head
        self.task = None  # a WSGI request in the pool: the master's harakiri applies
        self.cancelled_for = ""
        self.closed = False
        self.tx = self.status = self.head_size = self.headers_count = 0
        self.conn = conn

    def describe(self) -> str:
        return request.describe(self.env)

    def abort(self) -> None:
        self.closed = True
        self.conn.close()


class HttpConnection:
    """``initial``: bytes already read from ``conn`` (by the C path,
    http_front.py); ``served``: whether it carried a request before;
    ``origin``: (peer, trusted) the connection was given before (it came
    from the C path: any PROXY header was read already)."""

    def __init__(self, worker, conn: socket.socket, listener, initial: bytes = b"",
                 served: bool = False, origin: tuple | None = None) -> None:
        self.worker = worker
        self.ctx = ctx = worker.ctx
        self.loop = worker.loop
        self.conn = conn
        self.listener = listener
        self.parser = RequestParser(ctx.max_block)
        if initial:
            self.parser.feed(initial)
        self.server = server_of(listener)
        self.fresh = origin is None  # a PROXY header (if enabled) comes first
        if origin is not None:
            self.peer, self.trusted = origin
        else:
            self.peer = peer_of(conn)
            self.trusted = trusted_peer(conn, self.peer, ctx.forwarded_allow)
        self.served = int(served)
        self.last_active = self.loop.time()  # accepted, or the last answer sent
        self.idle_timer: asyncio.Timeout | None = None  # set while waiting for a request
        self.closed = False
        self.task: asyncio.Task | None = None

    # -- reading -------------------------------------------------------------------

    async def _recv(self, timeout: float) -> bytes:
        conn = self.conn
        try:
            return conn.recv(_READ)
        except BlockingIOError:
            pass
        async with asyncio.timeout(timeout):
            return await self.loop.sock_recv(conn, _READ)

    async def _send(self, data: bytes) -> None:
        await send_all(self.loop, self.conn, data, self.ctx.socket_timeout)

    async def _next_event(self, timeout: float):
        """The parser's next event, reading as needed; None when the client
        closed (or the connection was refused here: logged and answered)."""
        parser = self.parser
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                await self._refuse(exc)
                return None
            if event is not None:
                return event
            if parser.upgraded:
                return None
            data = await self._recv(timeout)
            if not data:
                return None
            parser.feed(data)

    async def _next_head(self) -> HttpHead | None:
        ctx = self.ctx
        try:
            event = self.parser.next_event()
        except ProtocolError as exc:
            await self._refuse(exc)
            return None
        if event is None and not self.parser.upgraded:
            data = await self._idle_wait()
            if not data:
                return None
            self.parser.feed(data)
        try:
            event = await self._next_event(ctx.http_headers_timeout) if event is None else event
        except TimeoutError:
            log_head_timeout(self.peer[0], ctx.http_headers_timeout)
            return None
        return event if isinstance(event, HttpHead) else None

    def _idle_deadline(self) -> float:
        """When the wait for the next request ends (loop time): keep-alive's
        timeout (a new connection: the head's), or, in a stopping worker, once
        the connection has been quiet for DRAIN_QUIET."""
        ctx = self.ctx
        deadline = self.last_active + (ctx.http_keepalive_timeout if self.served
                                       else ctx.http_headers_timeout)
        if self.worker.stopping:
            deadline = min(deadline, self.last_active + DRAIN_QUIET)
        return deadline

    async def _idle_wait(self) -> bytes:
        """The first bytes of the next request; b"" when the connection is to
        close (the client closed it, or the wait ended: logged for a head that
        never came)."""
        ctx = self.ctx
        try:
            return self.conn.recv(_READ)
        except BlockingIOError:
            pass
        if self.worker.stopping and self.loop.time() >= self._idle_deadline():
            return b""
        self.worker.idle_http.add(self)
        try:
            async with asyncio.timeout_at(self._idle_deadline()) as self.idle_timer:
                return await self.loop.sock_recv(self.conn, _READ)
        except TimeoutError:
            if not self.served and not self.worker.stopping:
                log_no_request(self.peer[0], ctx.http_headers_timeout)
            return b""
        finally:
            self.idle_timer = None
            self.worker.idle_http.discard(self)

    def drain(self) -> None:
        """The worker stops: end the wait for a next request once the
        connection has been quiet for DRAIN_QUIET (now, if it already has)."""
        if self.idle_timer is not None:
            self.idle_timer.reschedule(self._idle_deadline())

    async def _read_body(self, head: HttpHead):
        """(wsgi.input, length) with the whole body read; None when the body
        never came whole (logged) or was refused (answered)."""
        ctx = self.ctx
        limit = ctx.limit_post
        threshold = ctx.post_buffering or _MEMORY_BODY
        expected = head.content_length
        spool = None
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                event = await self._next_event(ctx.socket_timeout)
                if event is END:
                    break
                if event is None or isinstance(event, HttpHead):
                    log.info("%s: body not received: the client closed the connection"
                             % head.describe())
                    return None
                size += len(event)
                if limit and size > limit:
                    await self._refuse(BodyTooLarge(
                        "request body over limit-post %d bytes" % limit))
                    return None
                if spool is None and size >= threshold:
                    spool = tempfile.TemporaryFile()  # O_TMPFILE: never has a name
                    spool.writelines(parts)
                    parts = []
                if spool is not None:
                    spool.write(event)
                else:
                    parts.append(event)
        except (OSError, TimeoutError) as exc:
            log.info("%s: body not received: %s" % (head.describe(),
                                                    str(exc) or type(exc).__name__))
            if spool is not None:
                spool.close()
            return None
        if expected is not None and size != expected:  # llhttp frames it; a bug else
            raise AssertionError("body of %d bytes for Content-Length %d" % (size, expected))
        if spool is not None:
            spool.seek(0)
            return spool, size
        return io.BytesIO(b"".join(parts)), size

    # -- answering -----------------------------------------------------------------

    async def _refuse(self, exc: ProtocolError) -> None:
        """A request we will not run (request.rejection): answered, then closed."""
        rejected = request.rejection(exc)
        request.log_rejection(rejected)
        try:
            await self._send(rejected.answer)
        except (OSError, TimeoutError):
            pass
        else:
            await self._linger()
        self.close()

    async def _linger(self) -> None:
        """After a refusal: end our side, then read and drop what the client
        still sends, for a while (nginx's lingering close). Closing with its
        bytes unread would reset the connection, and a reset can destroy the
        answer in flight (a 413 for an upload, a 431 or 414 for a long head)
        before the client reads it."""
        conn = self.conn
        try:
            conn.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(LINGER_TIME):
                dropped = 0
                while dropped < LINGER_BYTES:
                    data = await self.loop.sock_recv(conn, _READ)
                    if not data:
                        return
                    dropped += len(data)
        except (OSError, TimeoutError):
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()

    # -- one request ---------------------------------------------------------------------

    async def serve(self, head: HttpHead) -> bool:
        """Run one request; True if the connection may carry the next."""
        ctx, worker = self.ctx, self.worker
        started = time.time()
        if head.content_length and ctx.limit_post and head.content_length > ctx.limit_post:
            await self._refuse(BodyTooLarge("request body of %d bytes exceeds limit-post %d"
                                            % (head.content_length, ctx.limit_post)))
            return False
        if head.expect_continue and (head.chunked or head.content_length):
            await self._send(_CONTINUE)
        got = await self._read_body(head)
        if got is None:
            return False
        body, length = got
        env = ctx.base_environ.copy()
        vars_ = environ_vars(head, self.server, self.peer)
        env.update(vars_)
        if self.trusted:
            forwarded(env, ctx.forwarded_allow)
        if head.chunked:
            env.pop("HTTP_TRANSFER_ENCODING", None)  # de-chunked: CONTENT_LENGTH frames it
        if length or head.content_length is not None and any(
                n == b"content-length" for n, _ in head.headers):
            env["CONTENT_LENGTH"] = str(length)
        env["wsgi.input"] = body
        record_head = RequestHead(env, length, head.size + 4, 2 * len(vars_), 0, 0, 0)
        keep_alive = (head.keep_alive and ctx.http_keepalive and not worker.stopping
                      and not self.parser.upgraded)
        app = ctx.pick_app(env)
        try:
            # A static hit (cycle/static_app.py) runs as ASGI here: from the
            # loop, a slow downloader costs a descriptor, not a pool thread.
            if app is not None and (ctx.kinds.get(id(app)) == "asgi" or is_static(app)):
                if self.parser.upgraded and websocket_upgrade(head):
                    from .websocket import serve_websocket  # the connection is its own now
                    done = await serve_websocket(self, head, env, app, record_head, started)
                else:
                    from .http_asgi import serve_asgi  # the ASGI half of the driver
                    done = await serve_asgi(self, head.version, head.method == "HEAD", env,
                                            app, record_head, started,
                                            keep_alive)
            else:
                done = await self._serve_wsgi(head, env, app, record_head, started,
                                              keep_alive)
        finally:
            body.close()
        self.served += 1
        self.last_active = self.loop.time()
        return done

    async def _serve_wsgi(self, head: HttpHead, env: dict, app, record_head: RequestHead,
                          started: float, keep_alive: bool) -> bool:
        worker = self.worker
        tracked = HttpRequest(started, env, record_head, self.conn)
        exchange = HttpExchange(self.conn, head.version, head.method == "HEAD", keep_alive,
                                self.ctx.socket_timeout, lambda: worker.stopping)
        worker.request_started(tracked)
        try:
            await self.loop.run_in_executor(worker.pool, self._wsgi_in_thread, app, env,
                                            exchange)
        finally:
            tracked.tx, tracked.status = exchange.tx, exchange.status
            tracked.head_size, tracked.headers_count = exchange.head_size, \
                exchange.headers_count
            worker.request_done(tracked)
        return exchange.reusable

    def _wsgi_in_thread(self, app, env: dict, exchange: HttpExchange) -> None:
        conn = self.conn
        conn.settimeout(self.ctx.socket_timeout)  # blocking, bounded, for the app's thread
        try:
            run_app(app, env, exchange, self.worker.count_exception)
        except OSError as exc:  # the client went away while the answer was sent
            log.info("client went away during %s: %s" % (request.describe(env), exc))
            exchange.aborted = True
        finally:
            conn.setblocking(False)

    # -- the connection's life -----------------------------------------------------------

    async def run(self) -> None:
        self.task = asyncio.current_task()
        handed_back = False
        try:
            if self.ctx.proxy_protocol and self.fresh and not await proxy_intake.receive(self):
                return  # http-enable-proxy-protocol: no valid PROXY header (logged)
            while not self.closed:
                head = await self._next_head()
                if head is None or not await self.serve(head):
                    break
                front = self.worker.front
                if front is not None and self.parser.idle and not self.worker.stopping:
                    # Nothing of the next request is buffered: the C path
                    # can take the connection again (http_front.py).
                    front.adopt(self.conn, self.listener, served=True,
                                origin=(self.peer, self.trusted))
                    handed_back = True
                    return
        except (OSError, TimeoutError) as exc:
            log.info("HTTP connection from %s ended: %s" % (
                self.peer[0] or "unix", str(exc) or type(exc).__name__))
        finally:
            if not handed_back:
                self.close()


def forwarded(env: dict, trusted) -> None:
    """X-Forwarded-For / -Proto from a trusted proxy (Gunicorn's and Uvicorn's
    forwarded-allow-ips): REMOTE_ADDR becomes the nearest address in the chain
    that is not itself a trusted proxy -- read from the right, where each proxy
    appended its client, so a client cannot choose it by sending the header
    itself; when every hop is trusted, the first -- and wsgi.url_scheme the
    scheme the proxy saw (Uvicorn's rule for both)."""
    chain = env.get("HTTP_X_FORWARDED_FOR")
    if chain:
        hops = [h.strip() for h in chain.split(",") if h.strip()]
        client = hops[0] if hops else ""
        for hop in reversed(hops):
            client = hop
            if trusted is None or not trusted.admits((hop, 0)):
                break
        if client:
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = client, ""
    proto = env.get("HTTP_X_FORWARDED_PROTO", "").strip().lower()
    if proto in ("http", "https"):
        env["wsgi.url_scheme"] = proto
        if proto == "https":
            env["HTTPS"] = "on"


async def send_all(loop, conn: socket.socket, data: bytes, timeout: float) -> None:
    """Send all of ``data`` on a non-blocking socket: at once when the
    buffer takes it, else waiting, bounded by ``timeout`` (socket-timeout)."""
    try:
        n = conn.send(data)
    except BlockingIOError:
        n = 0
    if n < len(data):
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(conn, memoryview(data)[n:])


def log_head_timeout(peer: str, timeout: float) -> None:
    log.rate_limited("http-head-timeout", "%s: request head not complete within %gs "
                     "(http-headers-timeout)" % (peer or "unix", timeout))


def log_no_request(peer: str, timeout: float) -> None:
    log.rate_limited("http-head-timeout", "%s: no request within %gs (http-headers-timeout)"
                     % (peer or "unix", timeout))


def peer_of(conn: socket.socket) -> tuple[str, str]:
    """(REMOTE_ADDR, REMOTE_PORT) of a connection; empty for a unix socket."""
    try:
        address = conn.getpeername()
    except OSError:
        return "", ""
    if isinstance(address, tuple):
        return address[0], str(address[1])
    return "", ""  # a unix socket: no address to give


def trusted_peer(conn: socket.socket, peer: tuple[str, str], allow) -> bool:
    """forwarded-allow-ips: X-Forwarded-* count from these peers only; a unix
    socket's peer is always a local proxy. A TCP peer without an address (it
    reset before getpeername: its request may still be read and run) is not
    one."""
    if conn.family == socket.AF_UNIX:
        return True
    return bool(peer[0]) and allow is not None and allow.admits((peer[0], 0))


def server_of(listener) -> tuple[str, str]:
    """(SERVER_NAME, SERVER_PORT) of a request without Host."""
    try:
        address = listener.sock.getsockname()
    except OSError:
        return "localhost", "80"
    if isinstance(address, tuple):
        return address[0], str(address[1])
    return "localhost", "80"


async def serve_http_connection(worker, conn: socket.socket, listener, initial: bytes = b"",
                                served: bool = False, origin: tuple | None = None) -> None:
    """The life of one HTTP connection (one task), or until it goes back to
    the C path (http_front.py), which may have read ``initial`` already."""
    connection = HttpConnection(worker, conn, listener, initial, served, origin)
    try:
        await connection.run()
    except Exception:  # a bug here must cost one connection, not the worker
        log.exception("internal error while serving an HTTP connection")
        connection.close()
