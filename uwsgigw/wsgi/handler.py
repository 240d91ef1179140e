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

from .. import log
from ..cycle import request
from ..cycle.body import drain_socket, open_input, unread_after
from ..cycle.ending import finish
from ..cycle.request import RequestHead
from ..cycle.response import (
    FileWrapper,
    StartResponse,
    build_head,
    sendfile_fd,
    simple_response,
)
from ..cycle.static import StaticFiles
from ..cycle.static_app import static_picker
from ..observe import reqlog
from ..observe.record import RequestRecord, SharedCounter, account
from ..observe.scoreboard import REQ_SIZE, CoreSlot
from ..protocol.errors import BodyTooLarge, ClientDisconnected, ProtocolError

if TYPE_CHECKING:  # WorkerContext.from_config's parameters
    from ..app import AppTable
    from ..config.settings import Config

# The vars block is at most 65535 bytes (16-bit size field); the rest of the
# read buffer holds the start of the body, which nginx sends right behind.
_READ_BUFFER = 4 + 65535 + 65536
_DONTWAIT = socket.MSG_DONTWAIT
_PEEK = socket.MSG_PEEK


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
    total_address: int = 0  # that total's memory (record.SharedCounter), for the C core
    pid: int = 0  # set by the worker after fork
    # Scoreboard slots, one per core (scoreboard.py); the master reads them.
    cores: list = field(default_factory=list)
    track_requests: bool = False  # copy "METHOD URI" to the slot (harakiri logs it)
    peers: object = None  # peers.AllowList (uwsgi-allow-from), or None: accept anyone
    fastpath: object = None  # uwsgigw.wsgi.fastpath (C request path), or None: Python only
    static_cache: object = None  # fastpath.StaticCache the picker fills and the C core reads
    # The worker kind that runs the apps (workerbase.WORKERS), and what the
    # async worker (asgi/) reads besides the above.
    kind: str = "sync"
    harakiri: int = 0  # seconds; the async worker cancels a request past it
    concurrency: int = 1000  # async-concurrency: requests in flight
    threads: int = 1  # the async worker's thread pool for WSGI apps
    kinds: dict = field(default_factory=dict)  # id(app) -> "asgi" | "wsgi"
    # HTTP sockets (asgi/http_connection.py); from_config fills them from the
    # options (the zero values mean "no HTTP socket settings").
    http_keepalive: bool = False
    http_keepalive_timeout: float = 0.0
    http_headers_timeout: float = 0.0
    forwarded_allow: object = None  # peers.AllowList of forwarded-allow-ips
    proxy_protocol: bool = False  # http-enable-proxy-protocol (protocol/proxy.py)
    websockets_max_size: int = 0  # bytes (the option is in KB); asgi/websocket.py
    apps: list = field(default_factory=list)  # [(name, app)]: the ASGI apps, for lifespan
    states: dict = field(default_factory=dict)  # id(app) -> lifespan state

    @classmethod
    def from_config(cls, cfg: Config, backend, apps: AppTable,
                    counter: SharedCounter) -> WorkerContext:
        """The context of ``cfg``'s workers serving ``apps`` with ``backend``
        (decoder.select); ``counter`` is the server-wide request total.

        The worker kind is decided here, once: ``asgi`` when asgi = true or a
        loaded callable is an ASGI app, else ``sync``.
        """
        from ..log import ErrorStream
        from ..process.peers import allow_list
        from ..protocol.environ import base_environ  # start-up only
        kinds = apps.kinds()
        kind = "asgi" if cfg.asgi or cfg.http_socket or "asgi" in kinds.values() else "sync"
        # The sync worker's C core answers a repeat static hit itself; the
        # cache's key is the PATH_INFO nginx sent, so a mount (which rewrites
        # PATH_INFO in the picker) keeps every hit in Python.
        pick_app, cache = _picker(cfg, apps, backend.fastpath if kind == "sync"
                                  and not apps.mounts else None)
        return cls(
            decode=backend.decode,
            fastpath=backend.fastpath,
            max_block=cfg.buffer_size,  # at most 65535, the 16-bit size field (optypes)
            socket_timeout=float(cfg.socket_timeout),
            post_buffering=cfg.post_buffering,
            post_buffering_bufsize=cfg.post_buffering_bufsize,
            limit_post=cfg.limit_post,
            pick_app=pick_app,
            static_cache=cache,
            base_environ=base_environ(errors=ErrorStream(), file_wrapper=FileWrapper,
                                      multithread=cfg.threads > 1,
                                      multiprocess=cfg.processes > 1),
            log_requests=not cfg.disable_logging,
            worker_id=1,
            count_request=counter.incr,
            total_address=counter.address,
            peers=allow_list(cfg.uwsgi_allow_from),
            kind=kind,
            http_keepalive=cfg.http_keepalive,
            http_keepalive_timeout=float(cfg.http_keepalive_timeout),
            http_headers_timeout=float(cfg.http_headers_timeout),
            forwarded_allow=allow_list(cfg.forwarded_allow_ips),
            proxy_protocol=cfg.http_enable_proxy_protocol,
            websockets_max_size=cfg.websockets_max_size * 1024,
            harakiri=cfg.harakiri,
            concurrency=cfg.async_concurrency,
            threads=cfg.threads,
            kinds=kinds,
            apps=[(name, app) for name, app in apps.named() if kinds[id(app)] == "asgi"],
        )


def _picker(cfg: Config, apps: AppTable, fastpath=None):
    """(environ -> the app to run, a fastpath.StaticCache or None): app.py's
    picker, with the static maps in front when static-map (or static-map2,
    check-static) is set, and with ``fastpath`` (the C module, or None) a
    cache their plain answers go to for the C core. (Their modules are
    imported with this one, not here: a reload's fresh image builds the
    context after dropping uid, and may not read the stdlib then.)"""
    static = StaticFiles.from_config(cfg)
    if static is None:
        return apps.picker(), None
    cache = fastpath.StaticCache() if fastpath is not None else None
    return static_picker(apps.picker(), static, cfg.file_serve_mode or "", cache), cache


class _Exchange(StartResponse):
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

    def write(self, data: bytes) -> None:
        if not self.sent:
            if self.pending is None:
                raise AssertionError("write() before start_response()")
            head, count = build_head(*self.pending)
            payload = head + data  # a str body fails here, before anything is sent
            self.status = int(self.pending[0][:3])
            if not request.body_allowed(self.head_only, self.status):
                self.head_only = True  # HEAD, 204, 304 (C: send_body does the same)
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


def sendfile_all(conn, fd: int, offset: int, timeout: float, count: int | None,
                 exchange) -> int:
    """``os.sendfile`` from ``offset``, ``count`` bytes (None: to EOF); each
    wait bounded by ``timeout``; returns the bytes sent. ``exchange.tx``
    counts them as they go, so a timeout's log line says what was sent.

    The connection is a bare ``_socket.socket`` (no Python ``sendfile``):
    blocking mode plus SO_SNDTIMEO gives the bound without a poll per chunk.
    """
    conn.settimeout(None)
    seconds = int(timeout)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", seconds, int((timeout - seconds) * 1e6)))
    out = conn.fileno()
    total = 0
    while count is None or total < count:
        try:
            sent = os.sendfile(out, fd, offset, 1 << 20 if count is None
                               else min(1 << 20, count - total))
        except BlockingIOError:
            raise socket.timeout("sendfile: no progress in %gs (socket-timeout)" % timeout)
        if sent == 0:
            return total
        offset += sent
        total += sent
        exchange.tx += sent
    return total


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


class ConnectionHandler(request.FailureTurns):
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
        self._emit = reqlog.emitter(ctx.log_requests)  # chosen once (reqlog.setup)
        # A request without a body runs start to end in C (fastpath.Core); it
        # calls back into the public methods below for the rare turns
        # (fastpath.CoreHooks).
        self._serve_c = None
        if fastpath is not None and ctx.total_address:
            self._serve_c = fastpath.Core(self, fastpath.CoreSettings(
                buffer=self.buf, max_block=ctx.max_block, base_environ=ctx.base_environ,
                socket_timeout=ctx.socket_timeout, pick_app=ctx.pick_app,
                new_input=io.BytesIO, slot_address=ctypes.addressof(self.slot),
                total_address=ctx.total_address, track_requests=ctx.track_requests,
                line_fd=log.fd() if reqlog.c_default_line(ctx.log_requests) else -1,
                emit=self._emit, pid=ctx.pid, worker_id=ctx.worker_id, core=core,
                http_keepalive=ctx.http_keepalive, forwarded=None,
                stop_flag_address=0, static_cache=ctx.static_cache)).serve

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
        > 0 bytes, 0 for EOF before any byte, None for nothing read yet. As in
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
        n = got or 0
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

    def read_head(self, fd: int, got: int | None = None) -> RequestHead | None:
        """The Python request path: the request's head, or None when the
        connection was answered or dropped here (each with its log line).
        ``got``: None when nothing was read yet, else the bytes the C path read."""
        ctx = self.ctx
        conn = self._sock(fd)
        try:
            packet, n, held = self._read_packet(conn, got)
        except ProtocolError as exc:
            self._reject(conn, exc, -1)
            return None
        except OSError as exc:
            request.log_read_failure(exc, ctx.socket_timeout)
            return None
        if packet is None:
            request.log_incomplete_packet(n)
            return None
        try:
            return RequestHead.from_packet(packet, ctx.base_environ, n, held)
        except ProtocolError as exc:
            self._reject(conn, exc, -1)  # the body size is bogus: read to EOF
            return None

    # -- the request -------------------------------------------------------

    def handle(self, fd: int) -> None:
        self.fd = fd
        try:
            serve_c = self._serve_c
            req = None
            if serve_c is not None:
                # C serves the request, or says what it read: Python goes on.
                try:
                    req = serve_c(fd)
                except OSError as exc:  # C's read: a timeout, a reset
                    request.log_read_failure(exc, self.ctx.socket_timeout)
                    return
                if req is None:
                    return
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
        answer (C: a RequestHead, or the int of a hand-over), or None when
        nothing was read yet (the Python backend)."""
        started = time.time()
        head = req if type(req) is RequestHead else self.read_head(fd, req)
        if head is None:
            return
        env = head.env
        exchange, out = self.serve_wsgi(fd, env, self.view[head.consumed:head.nread],
                                        head.length, head.own_held, self.ctx.pick_app(env),
                                        started)
        if out is not None and not out.reset:
            # No second request on a uwsgi connection: what a client sent
            # after this one is read too (nginx sends none), so the close is
            # clean.
            finish(self._sock(fd), out.unread + head.held - head.own_held,
                   self.ctx.socket_timeout)
        if exchange is not None:
            self._log_request(head, exchange, started)

    def serve_wsgi(self, fd: int, env: dict, have, length: int, held: int, app,
                   started: float, keep_alive: bool = False):
        """Run ``app`` (None: no app for this URL) for a request whose environ
        is built: (exchange, request.Outcome), for the driver to end or reuse
        the connection. (None, None) when the request was refused or its body
        never arrived: answered or logged, nothing left but to close.
        ``have``: the bytes after the vars block read so far (the start of a
        body of ``length`` bytes); ``held``: how many of this request's bytes
        read are still in the kernel's queue (ending.py); ``keep_alive``:
        whether the protocol lets the connection carry another request."""
        ctx = self.ctx
        busy_since = started
        from_socket = False
        try:
            request.limit_body(length, ctx.limit_post)
        except BodyTooLarge as exc:
            self._reject(self._sock(fd), exc, held + max(length - len(have), 0))
            return None, None
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
                log.info("%s: body not received: %s" % (request.describe(env), exc))
                return None, None
            from_socket = True
            # Harakiri counts from here: reading the body was not the app's time.
            busy_since = time.time()
        env["wsgi.input"] = wsgi_input
        slot = self.slot
        if ctx.track_requests:  # the C core writes the same text (fastpath_core.c track)
            slot.req = request.describe(env).encode("latin-1", "replace")[:REQ_SIZE]
        self.env = env
        slot.busy_since = busy_since
        exchange = self._run_app(fd, env, app)
        out = request.outcome(exchange.aborted, held + unread_after(wsgi_input, from_socket),
                              keep_alive)
        if length:
            wsgi_input.close()  # a spooled body must not hold its disk space until the next request
        self.env = None
        return exchange, out

    def _run_app(self, fd: int, env: dict, app):
        head_only = env["REQUEST_METHOD"] == "HEAD"
        c_exchange = self._c_exchange
        if c_exchange is not None:
            exchange = c_exchange(fd, head_only, self.ctx.socket_timeout)
        else:
            exchange = _Exchange(self._sock(fd), head_only, self.ctx.socket_timeout)
        if app is None:
            self.no_app(exchange, env)
            return exchange
        result = None
        try:
            result = app(env, exchange.start_response)
            if not exchange.send_result(result):
                self.send_file(exchange, result)
        except Exception as exc:
            self.app_failed(exchange, env, exc)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self.close_failed(exc)
        return exchange

    # The turns of a request both paths take (fastpath.Core calls these too,
    # with the exception as the one being handled: fastpath.CoreHooks). What
    # each turn means is decided in request.py; these apply it to this
    # connection.

    def _count_exception(self) -> None:
        self.slot.exceptions += 1

    def send_file(self, exchange, wrapper: FileWrapper) -> None:
        """wsgi.file_wrapper: sendfile() a regular file, else iterate it."""
        fd = sendfile_fd(wrapper)
        if fd is None:
            exchange.send_result(iter(wrapper))
            return
        exchange.write(b"")
        if not exchange.head_only:
            sent = sendfile_all(self._sock(self.fd), fd, os.lseek(fd, 0, os.SEEK_CUR),
                                self.ctx.socket_timeout, wrapper.length, exchange)
            if wrapper.length is not None and sent < wrapper.length:
                exchange.aborted = True  # the file was shorter: a visible cut (ending.py)

    def _fail(self, exchange, failure: request.Failure) -> None:
        """Answer the failure's status if nothing was sent yet; else (or when
        the client is gone) close with the held tail unread: a reset, so
        nginx does not take a truncated body for a complete one (ending.py)."""
        exchange.status = failure.logged_status(exchange.status)
        if failure.resets(exchange.sent):
            exchange.aborted = True
            return
        data = simple_response(request.status_line(failure.status), failure.answer + "\n")
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
        rejected = request.rejection(exc)
        request.log_rejection(rejected)
        try:
            conn.settimeout(self.ctx.socket_timeout)
            conn.sendall(rejected.answer)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            return
        # Read what nginx still sends so our close does not reset the
        # connection and turn this answer into a 502.
        drain_socket(conn, body_left, time.monotonic() + min(self.ctx.socket_timeout, 2.0))

    # -- logging -----------------------------------------------------------

    def _log_request(self, head: RequestHead, exchange, started: float) -> None:
        """Count the request and hand its record to the request log: the same
        steps as the C core's and the async worker's (record.py)."""
        ctx = self.ctx
        elapsed = time.time() - started
        requests, total = account(self.slot, exchange.tx, elapsed, ctx.count_request)
        emit = self._emit
        if emit is not None:
            emit(RequestRecord(head.env, exchange.status, exchange.tx, exchange.head_size,
                               exchange.headers_count, head.nvars, head.pktsize,
                               head.modifier1, started, elapsed, ctx.pid, ctx.worker_id,
                               self.core, requests, total))
