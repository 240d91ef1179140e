"""One connection from nginx: read the packet, run the app, answer, close.

nginx opens one connection per request (it never keeps uwsgi upstreams
alive), so this is the whole life of a connection. Everything a worker
thread needs per request is preallocated in :class:`ConnectionHandler`.

With the C backend, ``fastpath.Core`` (csrc/fastpath.c) serves a request
without a body start to end and hands everything else to :meth:`_handle`
with what it read; the Python backend runs :meth:`_handle` for every
request. The two answer alike (tests/test_fastpath.py, and
test_wsgi_semantics runs a ``--decoder python`` server beside the C ones).
"""

from __future__ import annotations

import _socket
import ctypes
import io
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from . import log, reqlog
from .body import ClientDisconnected, drain_socket, open_input, unread_after
from .ending import finish
from .environ import build_environ
from .errors import BodyTooLarge, ProtocolError
from .scoreboard import REQ_SIZE, CoreSlot
from .response import (
    BODILESS,
    FileWrapper,
    HeadersAlreadySent,
    ResponseError,
    build_head,
    sendfile_fd,
    simple_response,
)

if TYPE_CHECKING:  # WorkerContext.from_config's parameters
    from .app import AppTable
    from .config import Config

# The vars block is at most 65535 bytes (16-bit size field); the rest of the
# read buffer holds the start of the body, which nginx sends right behind.
_READ_BUFFER = 4 + 65535 + 65536
_DONTWAIT = socket.MSG_DONTWAIT
_PEEK = socket.MSG_PEEK
_STATUS_TEXT = {400: "400 Bad Request", 413: "413 Content Too Large",
                431: "431 Request Header Fields Too Large",
                500: "500 Internal Server Error"}


@dataclass
class WorkerContext:
    """What every connection in a worker needs; built once (:meth:`from_config`)."""

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
    fastpath: object = None  # uwsgigw.fastpath (C request path), or None: Python only
    # The worker kind that runs the apps (workerbase.WORKERS), and what the
    # async worker (asgi/) reads besides the above.
    kind: str = "sync"
    harakiri: int = 0  # seconds; the async worker cancels a request past it
    concurrency: int = 1000  # async-concurrency: requests in flight
    threads: int = 1  # the async worker's thread pool for WSGI apps
    kinds: dict = field(default_factory=dict)  # id(app) -> "asgi" | "wsgi"
    apps: list = field(default_factory=list)  # [(name, app)]: the ASGI apps, for lifespan
    states: dict = field(default_factory=dict)  # id(app) -> lifespan state

    @classmethod
    def from_config(cls, cfg: Config, backend, apps: AppTable,
                    count_request: Callable[[], int]) -> WorkerContext:
        """The context of ``cfg``'s workers serving ``apps`` with ``backend``
        (decoder.select); ``count_request`` is the server-wide total's.

        The worker kind is decided here, once: ``asgi`` when asgi = true or a
        loaded callable is an ASGI app, else ``sync``.
        """
        from .environ import base_environ  # start-up only
        from .log import ErrorStream
        from .peers import allow_list
        kinds = apps.kinds()
        return cls(
            decode=backend.decode,
            fastpath=backend.fastpath,
            max_block=cfg.buffer_size,  # at most 65535, the 16-bit size field (optypes)
            socket_timeout=float(cfg.socket_timeout),
            post_buffering=cfg.post_buffering,
            post_buffering_bufsize=cfg.post_buffering_bufsize,
            limit_post=cfg.limit_post,
            pick_app=apps.picker(),
            base_environ=base_environ(errors=ErrorStream(), file_wrapper=FileWrapper,
                                      multithread=cfg.threads > 1,
                                      multiprocess=cfg.processes > 1),
            log_requests=not cfg.disable_logging,
            worker_id=1,
            count_request=count_request,
            peers=allow_list(cfg.uwsgi_allow_from),
            kind="asgi" if cfg.asgi or "asgi" in kinds.values() else "sync",
            harakiri=cfg.harakiri,
            concurrency=cfg.async_concurrency,
            threads=cfg.threads,
            kinds=kinds,
            apps=[(name, app) for name, app in apps.named() if kinds[id(app)] == "asgi"],
        )


def packet_info(packet) -> int:
    """The packet summary the request log reads (reqlog.py), packed as the C
    path returns it: consumed << 17 | modifier1 << 34 | item count << 42
    (modifier2 is always 0 in an accepted packet)."""
    return packet.consumed << 17 | packet.modifier1 << 34 | len(packet.items) << 42


class _Exchange:
    """The response state of one request: PEP 3333's start_response/write."""

    __slots__ = ("conn", "head_only", "pending", "sent", "tx", "headers_count",
                 "head_size", "status", "timeout", "aborted")

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
        self.aborted = False  # cut short after the head: the connection must reset

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
            head, count = build_head(*self.pending)
            payload = head + data  # a str body fails here, before anything is sent
            self.status = int(self.pending[0][:3])
            if self.status in BODILESS:
                self.head_only = True
            if self.head_only:
                payload = head
            self.headers_count = count
            self.head_size = len(head)
            self.sent = True
            send_all(self.conn, payload, self.timeout)
            self.tx += len(payload)
        elif data and not self.head_only:
            send_all(self.conn, data, self.timeout)
            self.tx += len(data)

    def send_result(self, result) -> bool:
        """Send the app's return value; False: a FileWrapper for the caller."""
        kind = type(result)
        if kind is bytes:  # not PEP 3333, but uWSGI accepts it and apps rely on it
            self.write(result)
        elif kind is list or kind is tuple:
            self.write(b"".join(result))
        elif kind is FileWrapper:
            return False
        else:
            for chunk in result:
                if chunk:
                    self.write(chunk)
                    if self.head_only:
                        break
            if not self.sent:
                self.write(b"")
        return True


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
    """Serves connections one at a time for one worker thread ("core").

    A connection arrives as a bare descriptor. The C path (ctx.fastpath)
    needs nothing more for a request without a body; a Python socket
    object is made only when the Python code takes over (:meth:`_sock`).
    """

    def __init__(self, ctx: WorkerContext, core: int = 0):
        self.ctx = ctx
        self.core = core
        self.buf = bytearray(_READ_BUFFER)
        self.view = memoryview(self.buf)
        # Plain memory writes into the shared scoreboard: no syscall, no lock.
        # The slot is also where this thread's request and byte counts live
        # (the master zeroes it when it spawns the worker).
        self.slot = ctx.cores[core] if core < len(ctx.cores) else CoreSlot()
        self.env = None  # the current request, for the USR2 dump
        self.fd = -1  # the current connection
        self.conn = None  # its socket object, once the Python path needed one
        fastpath = ctx.fastpath
        self._c_exchange = fastpath.Exchange if fastpath else None
        # A request without a body runs start to end in C (fastpath.Core);
        # it calls back into the methods below for the rare turns.
        self._serve_c = fastpath.Core(
            self, self.buf, ctx.max_block, ctx.base_environ, ctx.socket_timeout,
            ctx.pick_app, io.BytesIO, self.slot, ctypes.addressof(self.slot),
            ctx.count_request, reqlog.ctime, reqlog, log, reqlog._default_emit,
            ctx.track_requests, ctx.log_requests, ctx.pid, core).serve if fastpath else None

    @property
    def requests(self) -> int:
        """Requests this thread has served (the R of the log's ``req: R/T``)."""
        return self.slot.requests

    def _sock(self, fd: int):
        """The connection as a socket object, made on first use."""
        conn = self.conn
        if conn is None:
            conn = self.conn = _socket.socket(fileno=fd)
        return conn

    # -- reading -----------------------------------------------------------

    def _read_packet(self, conn, got: int):
        """Return (packet, n, held), or (None, n, 0) on EOF after n bytes.

        ``got`` is what the C path left in the buffer, all of it consumed:
        > 0 bytes, 0 for EOF before any byte, -1 for nothing read yet. As in
        C (read_request), the reads are MSG_PEEK: the last ``held`` of the
        ``n`` bytes in the buffer stay in the kernel's queue (ending.py). The
        bytes of an incomplete packet are consumed before waiting for more.
        nginx writes the packet right after connecting, so the first read is
        tried without blocking (no timeout set-up, no poll); the socket gets
        its socket-timeout only when a read would wait.
        """
        ctx, view = self.ctx, self.view
        if got == 0:
            return None, 0, 0
        n = max(got, 0)
        if n:
            packet = ctx.decode(view[:n], ctx.max_block)  # raises the C path's error
            if packet is not None:
                return packet, n, 0
        # socket-timeout bounds the whole vars block, not each read: nginx
        # sends it at once, and a client trickling a byte per read must not
        # hold the worker indefinitely.
        deadline = None
        while True:
            try:
                if deadline is None:
                    k = conn.recv_into(view[n:], 0, _DONTWAIT | _PEEK)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("vars block not complete within socket-timeout")
                    conn.settimeout(left)
                    k = conn.recv_into(view[n:], 0, _PEEK)
            except BlockingIOError:
                deadline = time.monotonic() + ctx.socket_timeout
                continue
            if k == 0:
                return None, n, 0
            packet = ctx.decode(view[:n + k], ctx.max_block)
            if packet is not None:
                return packet, n + k, k
            conn.recv_into(view[n:], k, _DONTWAIT)  # queued: consume, then wait for more
            n += k
            if deadline is None:
                deadline = time.monotonic() + ctx.socket_timeout

    def _read_py(self, fd: int, got: int):
        """The Python request path: (env, length, n, info, held), or None when
        the connection was answered or dropped here (each with its log line).
        ``got``: -1 nothing read yet, -2 the C path timed out, else bytes read."""
        ctx = self.ctx
        if got == -2:
            log_read_failure(socket.timeout("vars block not complete within socket-timeout"),
                             ctx.socket_timeout)
            return None
        conn = self._sock(fd)
        try:
            packet, n, held = self._read_packet(conn, got)
        except ProtocolError as exc:
            self._reject(conn, exc, -1)
            return None
        except OSError as exc:
            log_read_failure(exc, ctx.socket_timeout)
            return None
        if packet is None:
            log_incomplete_packet(n)
            return None
        try:
            env, length = build_environ(ctx.base_environ, packet.items, packet.modifier1)
        except ProtocolError as exc:
            self._reject(conn, exc, -1)  # the body size is bogus: read to EOF
            return None
        return env, length, n, packet_info(packet), held

    # -- the request -------------------------------------------------------

    def handle(self, fd: int) -> None:
        self.fd = fd
        try:
            serve_c = self._serve_c
            # C serves the request, or says what it read: Python goes on.
            req = serve_c(fd) if serve_c is not None else -1
            if req is not None:
                self._handle(fd, req)
        except Exception:  # a bug here must cost one connection, not the worker
            log.exception("internal error while serving a connection")
        finally:
            self.slot.busy_since = 0.0
            conn = self.conn
            if conn is None:
                os.close(fd)
            else:
                self.conn = None
                conn.close()

    def _handle(self, fd: int, req) -> None:
        """The request from what was read so far: ``req`` is read_request's
        answer (C), or -1 when nothing was read yet."""
        started = time.time()
        if type(req) is not tuple:
            req = self._read_py(fd, req)
            if req is None:
                return
        env, length, n, info, held = req
        consumed = (info >> 17) & 0x1FFFF
        exchange = self.serve_wsgi(fd, env, self.view[consumed:n], length, held,
                                   self.ctx.pick_app(env), started)
        if exchange is not None:
            self._log_request(env, info, exchange, started)
            self.slot.tx += exchange.tx

    def serve_wsgi(self, fd: int, env: dict, have, length: int, held: int, app,
                   started: float):
        """Run ``app`` (None: no app for this URL) for a request whose environ
        is built, and end the connection; the exchange, or None when the body
        never arrived (logged). ``have``: the bytes after the vars block read
        so far (the start of a body of ``length`` bytes); ``held``: how many of
        the bytes read are still in the kernel's queue (ending.py)."""
        ctx = self.ctx
        busy_since = started
        from_socket = False
        if ctx.limit_post and length > ctx.limit_post:
            self._reject(self._sock(fd), BodyTooLarge(
                "request body of %d bytes exceeds limit-post %d" % (length, ctx.limit_post)),
                held + max(length - len(have), 0))
            return None
        if length == 0:  # most requests: nothing to read, nothing to copy
            wsgi_input = io.BytesIO()
        elif len(have) >= length:
            wsgi_input = io.BytesIO(bytes(have[:length]))
        else:
            conn = self._sock(fd)
            prefix = bytes(have)
            try:
                if held:  # the body goes on: the peeked bytes are ours to consume now
                    conn.recv_into(self.view, held, _DONTWAIT)
                    held = 0
                conn.settimeout(ctx.socket_timeout)
                wsgi_input = open_input(conn, prefix, length, ctx.post_buffering,
                                        ctx.post_buffering_bufsize)
            except (ClientDisconnected, OSError) as exc:
                log.info("%s %s: body not received: %s" % (
                    env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"]), exc))
                return None
            from_socket = True
            # Harakiri counts from here: reading the body was not the app's time.
            busy_since = time.time()
        env["wsgi.input"] = wsgi_input
        slot = self.slot
        if ctx.track_requests:
            slot.req = ("%s %s" % (env["REQUEST_METHOD"], env.get("REQUEST_URI", ""))).encode(
                "latin-1", "replace")[:REQ_SIZE]
        self.env = env
        slot.busy_since = busy_since
        exchange = self._run_app(fd, env, app)
        if not exchange.aborted:
            finish(self._sock(fd), held + unread_after(wsgi_input, from_socket),
                   ctx.socket_timeout)
        if length:
            wsgi_input.close()  # a spooled body must not hold its disk space until the next request
        self.env = None
        return exchange

    def _run_app(self, fd: int, env: dict, app):
        head_only = env["REQUEST_METHOD"] == "HEAD"
        c_exchange = self._c_exchange
        if c_exchange is not None:
            exchange = c_exchange(fd, head_only, self.ctx.socket_timeout)
        else:
            exchange = _Exchange(self._sock(fd), head_only, self.ctx.socket_timeout)
        if app is None:
            self._no_app(exchange, env)
            return exchange
        result = None
        try:
            result = app(env, exchange.start_response)
            if not exchange.send_result(result):
                self._send_file(exchange, result)
        except Exception as exc:
            self._app_failed(exchange, env, exc)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self._close_failed(exc)
        return exchange

    # The turns of a request both paths take (fastpath.Core calls these too,
    # with the exception as the one being handled).

    def _no_app(self, exchange, env: dict) -> None:
        log.error("no application mounted for SCRIPT_NAME=%r PATH_INFO=%r" % (
            env["SCRIPT_NAME"], env["PATH_INFO"]))
        self._fail(exchange, "no application for this URL")

    def _app_failed(self, exchange, env: dict, exc: Exception) -> None:
        """The app, or sending its answer, raised ``exc``: log, answer if possible."""
        what = "%s %s" % (env["REQUEST_METHOD"], env.get("REQUEST_URI", env["PATH_INFO"]))
        if isinstance(exc, ResponseError):
            log.error("invalid response from the app for %s: %s" % (what, exc))
            self._fail(exchange, "invalid response headers")
        elif isinstance(exc, (BrokenPipeError, ConnectionResetError, ClientDisconnected,
                              socket.timeout)):
            log.info("client went away during %s: %s" % (what, exc))
            exchange.aborted = True  # nobody to answer: close at once
        else:
            self.slot.exceptions += 1
            log.exception("exception in the app for %s" % what)
            self._fail(exchange, "internal server error")

    @staticmethod
    def _close_failed(exc: Exception) -> None:
        log.exception("exception in the app's close()")

    def _send_file(self, exchange, wrapper: FileWrapper) -> None:
        """wsgi.file_wrapper: sendfile() a regular file, else iterate it."""
        fd = sendfile_fd(wrapper)
        if fd is None:
            exchange.send_result(iter(wrapper))
            return
        exchange.write(b"")
        if not exchange.head_only:
            exchange.tx += sendfile_all(self._sock(self.fd), fd, os.lseek(fd, 0, os.SEEK_CUR),
                                        self.ctx.socket_timeout)

    def _fail(self, exchange, why: str) -> None:
        """Answer 500 if nothing was sent yet; else abort so nginx knows."""
        exchange.status = 500
        if exchange.sent:
            # The head went out already: a clean end would make nginx take a
            # truncated body for a complete one. Closing with the held tail
            # unread resets the connection instead (ending.py).
            exchange.aborted = True
            return
        data = simple_response("500 Internal Server Error", why + "\n")
        conn = self._sock(self.fd)
        try:
            conn.settimeout(self.ctx.socket_timeout)
            conn.sendall(data)
            exchange.sent = True
            exchange.tx = len(data)
        except OSError:
            exchange.aborted = True

    def _reject(self, conn, exc: ProtocolError, body_left: int) -> None:
        """Refuse a request we will not run: log, answer, drain, close.
        ``body_left``: the bytes of the request still queued (-1: to EOF)."""
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

    def _log_request(self, env: dict, info: int, exchange, started: float) -> None:
        """Count the request, time it for the stats (avg_rt, running_time),
        then hand it to the request log (reqlog.py) if it logs anything."""
        slot = self.slot
        slot.requests += 1
        total = self.ctx.count_request()
        elapsed = time.time() - started
        slot.rt_total += elapsed
        slot.rt_count = slot.requests
        # disable-logging (log_requests false): only log-4xx/5xx/slow, if set.
        emit = reqlog.emit if self.ctx.log_requests else reqlog.emit_filtered
        if emit is not None:
            emit(self, env, info, exchange, started, elapsed, total)


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
