"""The async worker: one asyncio event loop per worker process.

Accepting: the listening sockets are watched by the loop; each connection
becomes one task in its listener's protocol (:func:`.protocol.serve_connection`
for uwsgi, :func:`.http_connection.serve_http_connection` for HTTP). At
``async-concurrency`` connections in flight the worker stops watching the
listeners, so further connections wait in the kernel backlog -- where another
worker can take them -- instead of piling up here (back-pressure on accept).

Harakiri, two levels. The loop cancels a request task that runs longer than
``harakiri`` seconds, logging the task's stack first; the worker lives on.
A *blocked* loop (sync code in an ``async def``) cannot cancel anything, so
the loop also keeps core 0 of its scoreboard slot fresh: every
``HEARTBEAT`` seconds, while requests are in flight, it writes "now" to
``busy_since``. If the loop stops beating, that time ages and the master's
ordinary harakiri (master.py) dumps every thread's traceback and kills the
worker. A WSGI request in the thread pool cannot be cancelled either: its
start time is what the heartbeat writes, so the master treats it as the
WSGI worker would.

Signals as in every worker (workerbase.py), run by the loop: TERM/HUP finish
the requests in flight (and the tasks they run after the response, such as
Starlette background tasks), run lifespan shutdown and exit; INT/QUIT exit at
once; USR1 reopens the log; USR2 dumps tracebacks (faulthandler, from C) and
the requests in flight.
"""

from __future__ import annotations

import asyncio
import ctypes
import linecache
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import exitcodes, log
from ..cycle.ending import finish
from ..observe import reqlog
from ..observe.record import RequestRecord, account
from ..observe.scoreboard import ACCEPTING, REQ_SIZE, CoreSlot, WorkerSlot
from ..process import peers
from ..process.recycle import Limits
from ..process.workerbase import WorkerBase
from ..wsgi.handler import ConnectionHandler
from .hangup import HangupWatcher
from .lifespan import Lifespan, LifespanFailed
from .protocol import Exchange, serve_connection

from .http_connection import serve_http_connection
from .http_front import HttpFront, usable

HEARTBEAT = 0.2  # seconds between the loop's scoreboard writes (harakiri on)
ACCEPT_BATCH = 16  # connections taken per wake-up, so other workers get some
# An HTTP connection is kept alive and carries many requests: one per
# wake-up, so a burst of new connections (a proxy's pool, a load test)
# spreads over the workers instead of landing on the first one awake.
HTTP_ACCEPT_BATCH = 1
LIFESPAN_SHUTDOWN_TIMEOUT = 10.0


def await_stack(coro) -> str:
    """Where a suspended task waits: its coroutine and every awaitable it
    awaits, outermost first (``Task.get_stack`` shows the outermost only)."""
    lines = []
    for _ in range(200):  # bounded: a cycle would be a bug elsewhere
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or \
            getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append('  File "%s", line %d, in %s' % (code.co_filename, frame.f_lineno,
                                                      code.co_name))
        source = linecache.getline(code.co_filename, frame.f_lineno).strip()
        if source:
            lines.append("    " + source)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or \
            getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return "\n".join(lines) if lines else "(no Python frames)"


def new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


class AsyncWorker(WorkerBase):
    def __init__(self, ctx, listeners, threads: int = 1, slot: WorkerSlot | None = None,
                 limits: Limits | None = None, verbose_dump: bool = False):
        super().__init__(ctx, listeners, slot, limits, verbose_dump)
        self.threads = max(1, threads, ctx.threads)
        self.forked = slot is not None  # under a master (else: single process)
        if not ctx.cores:
            ctx.cores = [CoreSlot()]
        self.core = ctx.cores[0]  # the loop's slot: heartbeat and counters
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_name = ""
        self.accepting = False
        self.serving = False  # start-up done: connections can be served
        self.active = 0  # connection tasks (and drains) in flight
        self.tasks: set = set()
        self.inflight: set[Exchange] = set()  # requests an app is running
        self.pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._done: asyncio.Future | None = None
        self._heartbeat = None
        self.hangups: HangupWatcher | None = None  # made with the loop (_main)
        self.idle_http: set = set()  # HTTP connections waiting for their next request
        self.front: HttpFront | None = None  # HTTP connections on the C path (http_front.py)
        self.stop_signalled = ctypes.c_int(0)  # read by C (fastpath CoreSettings)
        self.websockets: set = set()  # open WebSocket sessions (asgi/websocket.py)
        self._emit = reqlog.emitter(ctx.log_requests)  # chosen once (reqlog.setup)

    # -- set-up -----------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop, self.loop_name = new_event_loop()
            asyncio.set_event_loop(self.loop)
        return self.loop

    def _on_signal(self, sig, action) -> None:
        # The loop runs the action; faulthandler still writes the USR2
        # tracebacks from C while the loop is blocked, then chains to it.
        self._ensure_loop().add_signal_handler(sig, action)
        if action == self.stop:
            # The loop sees the signal only once the callback it runs returns;
            # an app running on the loop's thread (http_front.py) sees it at
            # once through this flag, so its answer says Connection: close.
            # The loop's own wake-up (its set_wakeup_fd) still runs ``action``.
            signal.signal(sig, self._stop_signalled)

    def _stop_signalled(self, signum, frame) -> None:
        self.stop_signalled.value = 1

    def run(self) -> None:
        loop = self._ensure_loop()
        self.ctx.pid = os.getpid()
        log.line_buffered()  # the app's print() reaches the log line by line
        try:
            loop.run_until_complete(self._main())
        except LifespanFailed as exc:
            log.error("%s; stopping (exit %d)" % (exc, exitcodes.APP_LOAD_ERROR))
            if self.forked:
                log.exit_now(exitcodes.APP_LOAD_ERROR)  # master.py: stop start-up
            raise SystemExit(exitcodes.APP_LOAD_ERROR) from None
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False)

    async def _main(self) -> None:
        ctx = self.ctx
        self._done = self.loop.create_future()
        self.hangups = HangupWatcher(self.loop)
        lifespans = []
        seen = set()
        for name, app in ctx.apps:
            if id(app) in seen:
                continue
            seen.add(id(app))
            lifespan = Lifespan(app, name)
            await lifespan.startup()  # LifespanFailed stops the worker
            if lifespan.supported:
                ctx.states[id(app)] = lifespan.state
                lifespans.append(lifespan)
        if "wsgi" in ctx.kinds.values():
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="uwsgigw-wsgi")
        if any(listener.protocol == "http" for listener in self.listeners) and usable(self):
            self.front = HttpFront(self)
        log.info("worker %d (pid %d): %s event loop, async-concurrency %d%s" % (
            ctx.worker_id, os.getpid(), self.loop_name, ctx.concurrency,
            ", %d thread%s for WSGI apps" % (self.threads, "s" if self.threads > 1 else "")
            if self.pool is not None else ""))
        self.serving = True
        if self.closed_listeners:  # TERM/HUP during start-up: what waits is served
            self._take_queued()
            if self.active and self._done.done():  # _stopped found nothing to wait for
                self._done = self.loop.create_future()
        if not self.stopping:
            self.slot.state = ACCEPTING
            self._resume()
            if ctx.harakiri or ctx.track_requests:
                self._heartbeat = self.loop.call_later(HEARTBEAT, self._beat)
        if not self.stopping or self.active:
            await self._done
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for lifespan in reversed(lifespans):
            await lifespan.shutdown(LIFESPAN_SHUTDOWN_TIMEOUT)

    # -- accepting ----------------------------------------------------------------

    def _resume(self) -> None:
        if self.accepting or self.stopping:
            return
        self.accepting = True
        allow = self.ctx.peers  # uwsgi-allow-from (peers.py)
        for listener in self.listeners:
            self.loop.add_reader(listener.fileno(), self._accept, listener,
                                 peers.guard(listener.sock, allow))

    def _pause(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for listener in self.listeners:
            self.loop.remove_reader(listener.fileno())

    def _accept(self, listener, sock) -> None:
        """Take connections from ``listener`` (``sock`` is its accept, guarded
        by uwsgi-allow-from), each served in the listener's protocol."""
        http = listener.protocol == "http"
        for _ in range(HTTP_ACCEPT_BATCH if http else ACCEPT_BATCH):
            if self.active >= self.ctx.concurrency or self.stopping:
                self._pause()
                return
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._open(conn, listener)

    def _open(self, conn: socket.socket, listener) -> None:
        """Serve a new connection ``conn`` of ``listener`` in its protocol."""
        http = listener.protocol == "http"
        conn.setblocking(False)
        if http and conn.family != socket.AF_UNIX:
            # An answer written in pieces (a streamed body, WebSocket
            # frames) must not wait for the client's delayed ACK (Nagle).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if http and self.front is not None and not self.ctx.proxy_protocol:
            self.front.adopt(conn, listener)
        elif http:
            self.spawn(serve_http_connection(self, conn, listener))
        else:
            self.spawn(serve_connection(self, conn))

    def _take_queued(self) -> None:
        """TERM/HUP (workerbase.stop, run by the loop): serve every connection
        waiting in the listening sockets' queues, async-concurrency or not
        (at most a backlog's worth), and close this process's copies. A stop
        during start-up (lifespan) leaves it to _main, once it can serve."""
        if not self.serving:
            return
        self._pause()
        allow = self.ctx.peers
        count = 0
        for listener in self.listeners:
            sock = peers.guard(listener.sock, allow)
            count += self._take_all(sock.accept, lambda pair, listener=listener:
                                    self._open(pair[0], listener))
        self._close_listeners()
        self._log_taken(count)

    def spawn(self, coro, counted: bool = False) -> None:
        """Run ``coro`` as a task counted against async-concurrency
        (``counted``: its connection is counted already)."""
        if not counted:
            self.active += 1
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.connection_done()

    def connection_done(self) -> None:
        """A connection (a task, or one on the C path) ended."""
        self.active -= 1
        if self.stopping:
            if self.active == 0 and not self._done.done():
                self._done.set_result(None)
        elif not self.accepting and self.active < self.ctx.concurrency:
            self._resume()

    def _stopped(self) -> None:
        self._pause()
        # Kept-alive HTTP connections waiting for their next request close
        # once quiet (http_connection.DRAIN_QUIET); those with a request in
        # flight answer it with Connection: close, then close.
        for connection in list(self.idle_http):
            connection.drain()
        if self.front is not None:
            self.front.drain()
        for session in list(self.websockets):
            session.going_away()  # close 1001, then the session ends
        if self.active == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def count_exception(self) -> None:
        """An app raised (the stats' exceptions): from the pool threads too."""
        self.core.exceptions += 1

    def _back_off(self, seconds: float) -> None:
        # Stop watching the listeners for a while; the loop keeps serving.
        self._pause()
        self.loop.call_later(seconds, self._resume)

    # -- per request ------------------------------------------------------------

    def track(self, ex: Exchange) -> None:
        """A request runs: the heartbeat, harakiri and USR2 see it."""
        if not self.inflight:
            self.core.busy_since = ex.started
            if self.ctx.track_requests:
                self.core.req = ex.describe().encode("latin-1", "replace")[:REQ_SIZE]
        self.inflight.add(ex)

    def untrack(self, ex: Exchange) -> None:
        self.inflight.discard(ex)
        if not self.inflight:
            self.core.busy_since = 0.0

    request_started = track

    def request_done(self, ex: Exchange) -> None:
        """Count the request and hand its record to the request log: the same
        steps as the WSGI paths' (record.py), on the loop's core slot."""
        self.untrack(ex)
        ctx, head = self.ctx, ex.request_head
        elapsed = time.time() - ex.started
        requests, total = account(self.core, ex.tx, elapsed, ctx.count_request)
        if self._emit is not None:
            self._emit(RequestRecord(head.env, ex.status, ex.tx, ex.head_size,
                                     ex.headers_count, head.nvars, head.pktsize,
                                     head.modifier1, ex.started, elapsed, ctx.pid,
                                     ctx.worker_id, 0, requests, total))
        if self.limits:
            self._check_limits()  # sets self.stopping via self.stop(take_queued=False)

    def _beat(self) -> None:
        """Keep the scoreboard fresh; cancel requests past harakiri."""
        now = time.time()
        harakiri = self.ctx.harakiri
        oldest_sync = None
        for ex in list(self.inflight):
            if ex.task is None:  # a WSGI request in the pool
                if oldest_sync is None or ex.started < oldest_sync.started:
                    oldest_sync = ex
            elif harakiri and now - ex.started > harakiri and not \
                    getattr(ex, "websocket", False):  # a WebSocket lives on
                self._harakiri(ex, now)
        if self.inflight:
            current = oldest_sync or min(self.inflight, key=lambda e: e.started)
            if self.ctx.track_requests:
                self.core.req = current.describe().encode("latin-1", "replace")[:REQ_SIZE]
            self.core.busy_since = oldest_sync.started if oldest_sync else now
        self._heartbeat = self.loop.call_later(HEARTBEAT, self._beat)

    def _harakiri(self, ex: Exchange, now: float) -> None:
        harakiri = self.ctx.harakiri
        if ex.cancelled_for == "harakiri":
            if now - ex.started > 2 * harakiri and not ex.closed:
                log.error("HARAKIRI: %s ignored its cancellation for %d s; resetting "
                          "its connection" % (ex.describe(), harakiri))
                ex.abort()
            return
        try:
            stack = await_stack(ex.task.get_coro())
        except Exception:  # a diagnostic must not break the loop
            stack = "(stack unavailable)"
        log.error("HARAKIRI ON WORKER %d (pid %d, task): %s running for %.2f s (harakiri "
                  "%d s); cancelling the request, its stack:\n%s" % (
                      self.ctx.worker_id, os.getpid(), ex.describe(), now - ex.started,
                      harakiri, stack))
        self.slot.harakiri_count += 1
        ex.cancel("harakiri")

    # -- WSGI apps in the thread pool ------------------------------------------------

    async def run_wsgi(self, app, conn, env: dict, prefix: bytes, length: int, held: int,
                       ex: Exchange) -> None:
        self.request_started(ex)
        try:
            await self.loop.run_in_executor(self.pool, self._wsgi_in_thread, app, conn, env,
                                            prefix, length, held, ex)
        finally:
            self.request_done(ex)

    def _wsgi_in_thread(self, app, conn, env, prefix, length, held, ex) -> None:
        """handler.py's request path (serve_wsgi), on a blocking socket, in a
        pool thread. The app was picked on the loop: picking again would see
        the SCRIPT_NAME it set. A private core slot: the loop owns core 0."""
        handler = getattr(self._local, "handler", None)
        if handler is None:
            handler = self._local.handler = ConnectionHandler(self.ctx, core=len(self.ctx.cores))
        try:
            conn.setblocking(True)
            before = handler.slot.exceptions
            handler.conn, handler.fd = conn, conn.fileno()  # closed here, not by the handler
            exchange, out = handler.serve_wsgi(handler.fd, env, prefix, length, held, app,
                                               ex.started)
            if out is not None and not out.reset:
                finish(conn, out.unread, self.ctx.socket_timeout)
            self.core.exceptions += handler.slot.exceptions - before
            if exchange is not None:
                ex.tx, ex.status = exchange.tx, exchange.status
                ex.head_size, ex.headers_count = exchange.head_size, exchange.headers_count
        finally:
            handler.env = handler.conn = None
            conn.close()

    # -- diagnostics --------------------------------------------------------------

    def _dump_lines(self, now: float) -> list[str]:
        """USR2: the requests in flight."""
        lines = ["%s: %d request%s in flight (%s loop)" % (
            self.name(), len(self.inflight), "" if len(self.inflight) == 1 else "s",
            self.loop_name)]
        for ex in sorted(self.inflight, key=lambda e: e.started):
            lines.append("  %s running for %.3f s%s" % (
                ex.describe(), now - ex.started, " (WSGI, thread pool)" if ex.task is None
                else ""))
            lines.extend(self._env_lines(ex.env))
        return lines
