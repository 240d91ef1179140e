"""The C fast path of HTTP connections on the worker's event loop.

With the C backend and either only WSGI apps (one thread) or only ASGI
apps mounted, an HTTP connection starts here: the loop watches its
descriptor and, when it is readable, one C call reads what arrived. For
WSGI apps (``Core.serve_http``, csrc/fastpath_http.c) it serves every
complete common request -- a GET or HEAD without a body that the C parser
takes -- start to end: the environ, the app, the framed response, the
counters and the request line; the app runs on the loop's thread, as it
would on a sync worker's only thread. For ASGI apps (``Core.read_http``)
it parses the head and builds the environ, and the request runs as on
llhttp's driver (http_asgi.serve_asgi), in a task, the connection's
reading paused until it is answered.

Everything else goes to the general driver (http_connection.py, llhttp):
a request the C parser declines (a body, an Upgrade, an unusual head, a
bad one), and any request while another is in flight (a body's request
running in the pool thread: one app call at a time, as ``threads = 1``
promises). The connection comes back here when that driver has answered
and nothing of the next request is buffered.

Waiting costs a descriptor, not a thread: a connection with half a head or
none sits in the loop until the sweep closes it at its timeout
(``http-headers-timeout`` for a head, ``http-keepalive-timeout`` between
requests; a stopping worker closes it once quiet for DRAIN_QUIET, and
answers a request arriving meanwhile with ``Connection: close``).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import io
import socket
import threading
import time

from .. import log
from ..cycle import request
from ..cycle.request import RequestHead
from ..observe import reqlog
from .http_asgi import AsgiHttpExchange, serve_asgi
from .offload import Offload, send_file
from .http_connection import (DRAIN_QUIET, HttpRequest, forwarded, log_head_timeout,
                              log_no_request, peer_of, send_all, serve_http_connection,
                              server_of, trusted_peer)

_WAIT, _SERVED, _CLOSE = 0, 1, 2  # Core.serve_http's answers (3: declined, to llhttp)
_OFFLOAD = 4  # ... and: a file's rest is the loop's to send (offload.py)
_SWEEP = 0.25  # seconds between timeout sweeps
_FAILED = (None, None, None)  # an exc_info for start_response: nothing was sent
_READ = 65536
_PIPELINE_MAX = 65536  # bytes of later requests kept while one runs


def usable(worker) -> bool:
    """Whether ``worker``'s HTTP connections can start on the C path: the C
    backend, and only ASGI or only WSGI apps."""
    ctx = worker.ctx
    kinds = set(ctx.kinds.values())
    return (ctx.fastpath is not None and bool(ctx.total_address) and
            kinds in ({"asgi"}, {"wsgi"}))


class HttpHooks(request.FailureTurns):
    """What the C core calls back on an HTTP connection (fastpath.CoreHooks):
    the rare turns of a request, answered in HTTP through the exchange
    itself, so C frames them like any response."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.env: dict | None = None
        self.offload: Offload | None = None  # what send_file left for the loop

    def _count_exception(self) -> None:
        self.worker.count_exception()

    def send_file(self, exchange, wrapper) -> None:
        self.offload = send_file(exchange, wrapper, self.env)

    @staticmethod
    def _fail(exchange, failure: request.Failure) -> None:
        """Answer the failure's status if nothing was sent yet; else mark the
        response aborted: the connection closes, the client sees the cut."""
        status = failure.logged_status(exchange.status)
        exchange.status = status
        if failure.resets(exchange.sent):
            exchange.aborted = True
            return
        headers, body = failure.answer_parts()
        try:
            exchange.start_response(request.status_line(failure.status), headers, _FAILED)
            exchange.write(body)
        except OSError:
            exchange.aborted = True
        exchange.status = status


class HttpFront:
    """The worker's HTTP connections on the C path, and their timeouts."""

    def __init__(self, worker) -> None:
        ctx = worker.ctx
        self.worker = worker
        self.ctx = ctx
        self.loop = worker.loop
        fastpath = ctx.fastpath
        settings = fastpath.CoreSettings(
            buffer=bytearray(), max_block=ctx.max_block, base_environ=ctx.base_environ,
            socket_timeout=ctx.socket_timeout, pick_app=ctx.pick_app, new_input=io.BytesIO,
            slot_address=ctypes.addressof(worker.core), total_address=ctx.total_address,
            track_requests=ctx.track_requests,
            line_fd=log.fd() if reqlog.c_default_line(ctx.log_requests) else -1,
            emit=worker._emit, pid=ctx.pid, worker_id=ctx.worker_id, core=0,
            http_keepalive=ctx.http_keepalive,
            forwarded=functools.partial(forwarded, trusted=ctx.forwarded_allow),
            stop_flag_address=ctypes.addressof(worker.stop_signalled))
        self.asgi = set(ctx.kinds.values()) == {"asgi"}
        # WSGI with one thread: the app runs here, on the loop's thread; with
        # more, in the pool, each thread with a Core of its own (its hooks
        # hold the request's env) counting on the same slot (under the GIL).
        self.inline = not self.asgi and worker.threads == 1
        self.hooks = HttpHooks(worker)
        core = fastpath.Core(self.hooks, settings)
        self.serve = core.serve_http if self.inline else core.read_http
        self._settings = settings
        self._local = threading.local()
        self.connections: set[FrontConnection] = set()
        self._sweep = None

    def budget(self) -> int:
        """Requests this worker may still serve before max-requests: the C
        path serves no more of a pipelined batch, and the rest is read once
        the limit was checked (a stopping worker answers it with close)."""
        served = sum(core.requests for core in self.ctx.cores)
        return max(1, self.worker.limits.max_requests - served)

    def run_in_thread(self, fd: int, head: tuple, started: float) -> tuple:
        """In a pool thread: run the WSGI app for ``head`` (read_http's) and
        answer it; (True when the connection may carry the next request, the
        Offload of a file body the socket did not take at once, or None)."""
        local = self._local
        run = getattr(local, "run", None)
        if run is None:
            local.hooks = HttpHooks(self.worker)
            run = local.run = self.ctx.fastpath.Core(local.hooks, self._settings).run_http
        keep = run(fd, head, started)
        offload, local.hooks.offload = local.hooks.offload, None
        return keep, offload

    def adopt(self, conn: socket.socket, listener, served: bool = False,
              origin: tuple | None = None) -> None:
        """Serve ``conn`` here from now on; ``served``: it carried a request
        already (its idle time is keep-alive's); ``origin``: (peer, trusted)
        when the driver that had it knows better than the socket (a PROXY
        header: http-enable-proxy-protocol). A connection starts with the
        driver when it must read a PROXY header first."""
        self.worker.active += 1
        connection = FrontConnection(self, conn, listener, served, origin)
        self.connections.add(connection)
        self.loop.add_reader(connection.fd, connection.readable)
        if self._sweep is None:
            self._sweep = self.loop.call_later(_SWEEP, self.sweep)
        if self.worker.stopping:
            self.drain()

    def drain(self) -> None:
        """The worker stops: sweep soon, so quiet connections close."""
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = self.loop.call_soon(self.sweep)

    def sweep(self) -> None:
        """Close the connections past their timeout."""
        self._sweep = None
        now = self.loop.time()
        ctx = self.ctx
        stopping = self.worker.stopping
        for connection in list(self.connections):
            if connection.task is not None:
                continue  # a request runs: its own limits apply
            if connection.pending:
                if now - connection.head_since > ctx.http_headers_timeout:
                    log_head_timeout(connection.peer[0], ctx.http_headers_timeout)
                    connection.close()
                continue
            idle = now - connection.last_active
            if stopping and idle >= DRAIN_QUIET:
                connection.close()
            elif connection.served and idle > ctx.http_keepalive_timeout:
                connection.close()
            elif not connection.served and idle > ctx.http_headers_timeout:
                if not stopping:
                    log_no_request(connection.peer[0], ctx.http_headers_timeout)
                connection.close()
        if self.connections:
            self._sweep = self.loop.call_later(_SWEEP, self.sweep)


class FrontConnection:
    """One HTTP connection while it is on the C path."""

    __slots__ = ("front", "conn", "fd", "listener", "pending", "info", "peer", "served",
                 "last_active", "head_since", "closed", "task", "paused", "worker", "ctx",
                 "loop")

    def __init__(self, front: HttpFront, conn: socket.socket, listener, served: bool,
                 origin: tuple | None) -> None:
        self.front = front
        self.conn = conn
        self.fd = conn.fileno()
        self.listener = listener
        self.pending = bytearray()  # bytes read and not yet used: a head arriving
        if origin is not None:
            peer, trusted = origin
        else:
            peer = peer_of(conn)
            trusted = trusted_peer(conn, peer, front.ctx.forwarded_allow)
        self.peer = peer
        self.info = peer + server_of(listener) + (trusted,)
        self.served = served
        self.last_active = self.head_since = front.loop.time()
        self.closed = False
        self.task: asyncio.Task | None = None  # an ASGI request running
        self.paused = False  # not read until its request is answered
        self.worker, self.ctx, self.loop = front.worker, front.ctx, front.loop  # (http_asgi)

    def readable(self) -> None:
        front = self.front
        worker = front.worker
        if self.task is not None:
            self._buffer()  # its request runs: keep what comes for later
            return
        if front.inline and worker.inflight:
            self._hand_over()  # a request runs in the pool: one app call at a time
            return
        core = worker.core
        idle_since = core.busy_since
        had = len(self.pending)
        try:
            if front.inline and worker.limits.max_requests:
                answer = front.serve(self.fd, self.pending, self.info, worker.stopping,
                                     front.budget())
            else:
                answer = front.serve(self.fd, self.pending, self.info, worker.stopping)
        except Exception:  # a bug here must cost one connection, not the worker
            log.exception("internal error while serving an HTTP connection")
            self.close()
            return
        finally:
            core.busy_since = idle_since
        if answer == _WAIT:
            if len(self.pending) > had:  # part of a head came
                if not had:
                    self.head_since = front.loop.time()  # a head began
                # A reset that came with those bytes is still pending on the
                # socket, and uvloop's watcher dies on it without another
                # call: the connection would sit to http-headers-timeout,
                # a descriptor and an async-concurrency slot for a packet.
                if self.conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.close()
            return
        if type(answer) is tuple:  # a request's head (Core.read_http)
            if front.asgi:
                self.task = front.loop.create_task(self._asgi(answer))
            else:
                self._in_pool(answer)
            return
        if answer == _SERVED:
            self.served = True
            self.last_active = self.head_since = front.loop.time()
            if worker.limits:
                worker._check_limits()
                if worker.stopping and self.pending:
                    self.readable()  # the rest of a batch cut at max-requests: with close
            return
        if answer == _CLOSE:
            self.close()
            return
        if answer == _OFFLOAD:
            offload, front.hooks.offload = front.hooks.offload, None
            self.served = True
            self._start_offload(offload)
            return
        self._hand_over()

    def _start_offload(self, offload: Offload) -> None:
        """The rest of a file goes out from the loop as the socket drains;
        this connection reads nothing meanwhile (a pipelined request waits
        in ``pending``); then it goes on as after any answer."""
        if not self.paused:
            self.loop.remove_reader(self.fd)
            self.paused = True
        self.task = offload  # (the sweep leaves it be: its own timeout applies)
        offload.progress = self.loop.time()
        self.loop.add_writer(self.fd, self._offload_step, offload)
        self._offload_check(offload)

    def _offload_step(self, offload: Offload) -> None:
        done = offload.step(self.loop.time())
        if done is not None:
            self._end_offload(offload, done)

    def _offload_check(self, offload: Offload) -> None:
        if self.task is not offload:
            return
        timeout = self.ctx.socket_timeout
        waited = self.loop.time() - offload.progress
        if waited >= timeout:
            offload.timed_out(timeout)
            self._end_offload(offload, False)
            return
        self.loop.call_later(timeout - waited + 0.01, self._offload_check, offload)

    def _end_offload(self, offload: Offload, done: bool) -> None:
        self.loop.remove_writer(self.fd)
        offload.close()
        self.task = None
        exchange = offload.exchange
        if self.worker.limits:
            self.worker._check_limits()
        self._answered(done and exchange.keep_alive)

    async def _asgi(self, head: tuple) -> None:
        """Run one ASGI request, then read again (or close)."""
        env, keep_alive, head_only, version, nvars, size = head
        started = time.time()
        worker = self.worker
        reusable = False
        try:
            record_head = RequestHead(env, 0, size + 4, nvars, 0, 0, 0)
            app = self.ctx.pick_app(env)
            if app is None:
                ex = AsgiHttpExchange(self, version, head_only, env, record_head, started,
                                      keep_alive)
                worker.request_started(ex)
                try:
                    failure = request.no_app(env)
                    failure.log()
                    await ex.fail(failure)
                finally:
                    worker.request_done(ex)
                reusable = ex.reusable
            else:
                reusable = await serve_asgi(self, version, head_only, env, app, record_head,
                                            started, keep_alive)
        except Exception:  # a bug here must cost one connection, not the worker
            log.exception("internal error while serving an HTTP connection")
        finally:
            self.task = None
            if not reusable:
                self.close()  # also when the task itself was cancelled
        self._answered(reusable)

    def _in_pool(self, head: tuple) -> None:
        """Run one WSGI request in the worker's thread pool (threads > 1),
        answered by C there (Core.run_http); tracked for harakiri and USR2."""
        worker = self.worker
        started = time.time()
        env, _, _, _, nvars, size = head
        tracked = HttpRequest(started, env, RequestHead(env, 0, size + 4, nvars, 0, 0, 0),
                              self.conn)
        worker.track(tracked)
        self.task = future = self.loop.run_in_executor(worker.pool, self.front.run_in_thread,
                                                       self.fd, head, started)
        future.add_done_callback(functools.partial(self._pool_done, tracked))

    def _pool_done(self, tracked, future) -> None:
        self.worker.untrack(tracked)
        self.task = None
        reusable = False
        if future.cancelled():
            pass
        elif future.exception() is not None:
            exc = future.exception()
            log.error("internal error while serving an HTTP connection: %s: %s"
                      % (type(exc).__name__, exc))
        else:
            reusable, offload = future.result()
            if offload is not None and not self.closed:
                self._start_offload(offload)  # the thread is free; the loop sends the rest
                return
            if offload is not None:
                offload.close()
        if self.worker.limits:
            self.worker._check_limits()
        self._answered(reusable)

    def _answered(self, reusable: bool) -> None:
        """A request on the pool or in a task was answered: read the next
        one (one may be pending already), or close. A stopping worker keeps
        a connection its answer kept alive (max-requests is reached only once
        that answer went out) until it is quiet (the sweep), as on the
        inline path: a request that comes meanwhile is answered with
        Connection: close, not met by a close."""
        if not reusable or self.closed:
            self.close()
            return
        self.served = True
        self.last_active = self.head_since = self.loop.time()
        if self.paused:
            self.paused = False
            self.loop.add_reader(self.fd, self.readable)
        if self.pending:
            self.readable()  # a pipelined request is here already

    def _buffer(self) -> None:
        """Readable while a request runs: keep the bytes (a pipelined
        request) up to a bound, then stop reading until it is answered (the
        kernel's buffer then pushes back on the client); at EOF, stop too."""
        try:
            data = self.conn.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.pending += data
        if not data or len(self.pending) >= _PIPELINE_MAX:
            self.loop.remove_reader(self.fd)
            self.paused = True

    async def _send(self, data: bytes) -> None:
        """http_asgi's exchange writes through this."""
        await send_all(self.loop, self.conn, data, self.ctx.socket_timeout)

    def _hand_over(self) -> None:
        """To the general driver, with the bytes read so far; the connection
        stays one of the worker's active ones."""
        front = self.front
        front.loop.remove_reader(self.fd)
        front.connections.discard(self)
        self.closed = True
        front.worker.spawn(serve_http_connection(front.worker, self.conn, self.listener,
                                                 bytes(self.pending), self.served,
                                                 (self.peer, self.info[4])),
                           counted=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        front = self.front
        if not self.paused:
            front.loop.remove_reader(self.fd)
        if type(self.task) is Offload:
            front.loop.remove_writer(self.fd)
            self.task.close()
            self.task = None
        front.connections.discard(self)
        self.conn.close()
        front.worker.connection_done()


__all__ = ["HttpFront", "HttpHooks", "usable"]
