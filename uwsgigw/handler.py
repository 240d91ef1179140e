"""One connection from nginx: read the packet, run the app, answer, close.

nginx opens one connection per request (it never keeps uwsgi upstreams
alive), so this is the whole life of a connection. Everything a worker
thread needs per request is preallocated in :class:`ConnectionHandler`.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from . import log, reqlog
from .body import ClientDisconnected, SocketInput, drain_socket, open_input
from .environ import build_environ
from .errors import BodyTooLarge, ProtocolError
from .scoreboard import REQ_SIZE, CoreSlot
from .response import (
    FileWrapper,
    HeadersAlreadySent,
    ResponseError,
    build_head,
    sendfile_fd,
    simple_response,
)

# The vars block is at most 65535 bytes (16-bit size field); the rest of the
# read buffer holds the start of the body, which nginx sends right behind.
_READ_BUFFER = 4 + 65535 + 65536
_LINGER_RESET = struct.pack("ii", 1, 0)
_DONTWAIT = socket.MSG_DONTWAIT
_STATUS_TEXT = {400: "400 Bad Request", 413: "413 Content Too Large",
                431: "431 Request Header Fields Too Large",
                500: "500 Internal Server Error"}


@dataclass
class WorkerContext:
    """What every connection in a worker needs; built once per worker."""

    decode: Callable
    max_block: int
    socket_timeout: float
    post_buffering: int
    post_buffering_bufsize: int
    limit_post: int
    pick_app: Callable  # environ -> WSGI app or None
    base_environ: dict
    log_requests: bool
    worker_id: int
    count_request: Callable[[], int]  # bump the server-wide total, return it
    pid: int = 0  # set by the worker after fork
    # Scoreboard slots, one per core (scoreboard.py); the master reads them.
    cores: list = field(default_factory=list)
    track_requests: bool = False  # copy "METHOD URI" to the slot (harakiri logs it)
    peers: object = None  # peers.AllowList (uwsgi-allow-from), or None: accept anyone


class _Exchange:
    """The response state of one request: PEP 3333's start_response/write."""

    __slots__ = ("conn", "head_only", "pending", "sent", "tx", "headers_count",
                 "head_size", "status", "timeout")

    def __init__(self, conn: socket.socket, head_only: bool, timeout: float):
        self.conn = conn
        self.timeout = timeout
        self.head_only = head_only
        self.pending = None
        self.sent = False
        self.tx = 0
        self.headers_count = 0
        self.head_size = 0
        self.status = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.pending is not None:
            raise HeadersAlreadySent("start_response() called twice without exc_info")
        self.pending = (status, headers)
        return self.write

    def write(self, data: bytes) -> None:
        if not self.sent:
            if self.pending is None:
                raise AssertionError("write() before start_response()")
            head, self.headers_count = build_head(*self.pending)
            self.head_size = len(head)
            self.status = int(self.pending[0][:3])
            self.sent = True
            if self.head_only:
                data = b""
            send_all(self.conn, head + data if data else head, self.timeout)
            self.tx += len(head) + len(data)
        elif data and not self.head_only:
            send_all(self.conn, data, self.timeout)
            self.tx += len(data)

    def sendfile(self, wrapper: FileWrapper, fd: int) -> None:
        self.write(b"")
        if self.head_only:
            return
        self.tx += sendfile_all(self.conn, fd, os.lseek(fd, 0, os.SEEK_CUR), self.timeout)


def sendfile_all(conn, fd: int, offset: int, timeout: float) -> int:
    """``os.sendfile`` from ``offset`` to EOF; each wait bounded by ``timeout``.

    The connection is a bare ``_socket.socket`` (no Python ``sendfile``):
    blocking mode plus SO_SNDTIMEO gives the bound without a poll per chunk.
    """
    conn.settimeout(None)
    seconds = int(timeout)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", seconds, int((timeout - seconds) * 1e6)))
    out = conn.fileno()
    total = 0
    while True:
        try:
            sent = os.sendfile(out, fd, offset, 1 << 20)
        except BlockingIOError:
            raise socket.timeout("sendfile: no progress in %gs (socket-timeout)" % timeout)
        if sent == 0:
            return total
        offset += sent
        total += sent


def send_all(conn: socket.socket, data: bytes, timeout: float) -> None:
    """sendall(), trying one non-blocking send first.

    The socket starts in blocking mode with no timeout: a Python timeout
    costs an ioctl plus a poll() before every send and recv, and nearly every
    response fits in the socket buffer in one go. Only a send that would
    block switches to the socket-timeout-bounded sendall().
    """
    try:
        sent = conn.send(data, _DONTWAIT)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        conn.settimeout(timeout)
        conn.sendall(memoryview(data)[sent:])


class ConnectionHandler:
    """Serves connections one at a time for one worker thread ("core")."""

    def __init__(self, ctx: WorkerContext, core: int = 0):
        self.ctx = ctx
        self.core = core
        self.buf = bytearray(_READ_BUFFER)
        self.view = memoryview(self.buf)
        self.requests = 0
        self.tx = 0
        # Plain memory writes into the shared scoreboard: no syscall, no lock.
        self.slot = ctx.cores[core] if core < len(ctx.cores) else CoreSlot()
        self.env = None  # the current request, for the USR2 dump

    # -- reading -----------------------------------------------------------

    def _read_packet(self, conn: socket.socket):
        """Return (packet, bytes read) or (None, n) on early EOF.

        nginx writes the packet right after connecting, so the first read
        is tried without blocking (no timeout set-up, no poll); the socket
        gets its socket-timeout only when a read would wait.
        """
        ctx, view = self.ctx, self.view
        n = 0
        try:
            got = conn.recv_into(view, 0, _DONTWAIT)
        except BlockingIOError:
            got = -1
        if got > 0:
            n = got
            packet = ctx.decode(view[:n], ctx.max_block)
            if packet is not None:
                return packet, n
        elif got == 0:
            return None, 0
        # socket-timeout bounds the whole vars block, not each read: nginx
        # sends it at once, and a client trickling a byte per read must not
        # hold the worker indefinitely.
        deadline = time.monotonic() + ctx.socket_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("vars block not complete within socket-timeout")
            conn.settimeout(left)
            got = conn.recv_into(view[n:])
            if got == 0:
                return None, n
            n += got
            packet = ctx.decode(view[:n], ctx.max_block)
            if packet is not None:
                return packet, n

    # -- the request -------------------------------------------------------

    def handle(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception:  # a bug here must cost one connection, not the worker
            log.exception("internal error while serving a connection")
        finally:
            self.slot.busy_since = 0.0
            conn.close()

    def _handle(self, conn: socket.socket) -> None:
        ctx = self.ctx
        started = time.time()
        try:
            packet, n = self._read_packet(conn)
        except ProtocolError as exc:
            self._reject(conn, exc, -1)
            return
        except OSError as exc:
            log_read_failure(exc, ctx.socket_timeout)
            return
        if packet is None:
            log_incomplete_packet(n)
            return
        length = -1
        try:
            env, length = build_environ(ctx.base_environ, packet.items, packet.modifier1)
            if ctx.limit_post and length > ctx.limit_post:
                raise BodyTooLarge("request body of %d bytes exceeds limit-post %d"
                                   % (length, ctx.limit_post))
        except ProtocolError as exc:
            # Drain the announced body, or read to EOF when its size is bogus.
            left = length - (n - packet.consumed) if length >= 0 else -1
            self._reject(conn, exc, max(left, 0) if length >= 0 else -1)
            return
        if length == 0:  # most requests: nothing to read, nothing to copy
            wsgi_input = io.BytesIO()
        else:
            prefix = bytes(self.view[packet.consumed:n])
            if length > len(prefix):  # the rest of the body is still to be read
                conn.settimeout(ctx.socket_timeout)
            try:
                wsgi_input = open_input(conn, prefix, length, ctx.post_buffering,
                                        ctx.post_buffering_bufsize)
            except (ClientDisconnected, OSError) as exc:
                log.info("%s %s: body not received: %s" % (
                    env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"]), exc))
                return
        env["wsgi.input"] = wsgi_input
        slot = self.slot
        if ctx.track_requests:
            slot.req = ("%s %s" % (env["REQUEST_METHOD"], env.get("REQUEST_URI", ""))).encode(
                "latin-1", "replace")[:REQ_SIZE]
        self.env = env
        # Harakiri counts from here: a body still being read was not the app's time.
        slot.busy_since = started if length <= n - packet.consumed else time.time()
        exchange = self._run_app(conn, env)
        if isinstance(wsgi_input, SocketInput) and wsgi_input.unread_on_socket > 0:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            wsgi_input.drain(time.monotonic() + ctx.socket_timeout)
        if length:
            wsgi_input.close()  # a spooled body must not hold its disk space until the next request
        self.env = None
        self._log_request(env, packet, exchange, started)
        self.tx += exchange.tx
        slot.tx = self.tx
        slot.requests = self.requests

    def _run_app(self, conn: socket.socket, env: dict) -> _Exchange:
        exchange = _Exchange(conn, env["REQUEST_METHOD"] == "HEAD", self.ctx.socket_timeout)
        app = self.ctx.pick_app(env)
        if app is None:
            log.error("no application mounted for SCRIPT_NAME=%r PATH_INFO=%r" % (
                env["SCRIPT_NAME"], env["PATH_INFO"]))
            self._fail(exchange, "no application for this URL")
            return exchange
        result = None
        try:
            result = app(env, exchange.start_response)
            self._send_result(exchange, result)
        except ResponseError as exc:
            log.error("invalid response from the app for %s %s: %s" % (
                env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"]), exc))
            self._fail(exchange, "invalid response headers")
        except (BrokenPipeError, ConnectionResetError, ClientDisconnected,
                socket.timeout) as exc:
            log.info("client went away during %s %s: %s" % (
                env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"]), exc))
        except Exception:
            self.slot.exceptions += 1
            log.exception("exception in the app for %s %s" % (
                env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"])))
            self._fail(exchange, "internal server error")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("exception in the app's close()")
        return exchange

    def _send_result(self, exchange: _Exchange, result) -> None:
        kind = type(result)
        if kind is bytes:  # not PEP 3333, but uWSGI accepts it and apps rely on it
            exchange.write(result)
        elif kind is list or kind is tuple:
            exchange.write(b"".join(result))
        elif kind is FileWrapper and (fd := sendfile_fd(result)) is not None:
            exchange.sendfile(result, fd)
        else:
            for chunk in result:
                if chunk:
                    exchange.write(chunk)
                    if exchange.head_only:
                        break
            if not exchange.sent:
                exchange.write(b"")

    def _fail(self, exchange: _Exchange, why: str) -> None:
        """Answer 500 if nothing was sent yet; else abort so nginx knows."""
        exchange.status = 500
        if not exchange.sent:
            data = simple_response("500 Internal Server Error", why + "\n")
            try:
                exchange.conn.settimeout(self.ctx.socket_timeout)
                exchange.conn.sendall(data)
                exchange.sent = True
                exchange.tx = len(data)
            except OSError:
                pass
        else:
            # The head went out already: a clean FIN would make nginx take
            # a truncated body for a complete one. RST makes it fail loudly.
            try:
                exchange.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass

    def _reject(self, conn: socket.socket, exc: ProtocolError, body_left: int) -> None:
        """Refuse a request we will not run: log, answer, drain, close."""
        log.rate_limited(type(exc).__name__, "bad request (%s): %s" % (
            exc.reason, exc), level="WARNING")
        status = _STATUS_TEXT.get(exc.status_hint, "%d Error" % exc.status_hint)
        try:
            conn.settimeout(self.ctx.socket_timeout)
            conn.sendall(simple_response(status, str(exc) + "\n", "Connection: close\r\n"))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            return
        # Read what nginx still sends so our close does not reset the
        # connection and turn this answer into a 502.
        drain_socket(conn, body_left, time.monotonic() + min(self.ctx.socket_timeout, 2.0))

    # -- logging -----------------------------------------------------------

    def _log_request(self, env: dict, packet, exchange: _Exchange, started: float) -> None:
        """Count the request, time it for the stats (avg_rt, running_time),
        then hand it to the request log (reqlog.py) if it logs anything."""
        self.requests += 1
        total = self.ctx.count_request()
        elapsed = time.time() - started
        slot = self.slot
        slot.rt_total += elapsed
        slot.rt_count = self.requests
        # disable-logging (log_requests false): only log-4xx/5xx/slow, if set.
        emit = reqlog.emit if self.ctx.log_requests else reqlog.emit_filtered
        if emit is not None:
            emit(self, env, packet, exchange, started, elapsed, total)


def log_read_failure(exc: OSError, timeout: float) -> None:
    """The vars block could not be read (timeout or socket error); shared with asgi."""
    if isinstance(exc, TimeoutError):
        log.rate_limited("read-timeout", "timeout reading the request vars "
                         "after %gs (socket-timeout)" % timeout)
    else:
        log.rate_limited("read-error", "error reading the request: %s" % exc)


def log_incomplete_packet(nbytes: int) -> None:
    """The client closed before a whole packet; silent when it sent nothing."""
    if nbytes:
        log.rate_limited("eof", "client closed the connection after %d bytes "
                         "of an incomplete uwsgi packet" % nbytes)
