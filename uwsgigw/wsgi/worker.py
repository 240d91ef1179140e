"""The sync worker: accept connections on the inherited sockets and serve them.

Each thread ("core") waits in its own epoll set on every listening socket
with EPOLLEXCLUSIVE, so the kernel wakes one waiter per connection instead
of the whole pool (the thundering herd uWSGI's ``thunder-lock`` works
around). A pipe in every set lets a stop request wake all threads at once.

Signals, stopping and recycling are every worker's (workerbase.py); USR2
adds the request each core is running to the tracebacks. On TERM/HUP the
signal handler (main thread, between two bytecodes, also while core 0 runs a
request) takes the queued connections and closes the listening descriptors
at once; every core, once out of its loop, serves what was taken.
"""

from __future__ import annotations

import collections
import functools
import os
import select
import socket
import threading

from .. import log
from ..observe.scoreboard import ACCEPTING, CoreSlot, WorkerSlot
from ..process import peers
from ..process.recycle import Limits
from ..process.sockets import Listener
from ..process.workerbase import CLOSED_ERRNOS, WorkerBase
from .handler import ConnectionHandler, WorkerContext

_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
# Connections a stopping thread still takes from the backlog: the kernel may
# have handed one to its epoll set (EPOLLEXCLUSIVE wakes one waiter only).
_DRAIN_ON_STOP = 16


class Worker(WorkerBase):
    def __init__(self, ctx: WorkerContext, listeners: list[Listener], threads: int = 1,
                 slot: WorkerSlot | None = None, limits: Limits | None = None,
                 verbose_dump: bool = False):
        super().__init__(ctx, listeners, slot, limits, verbose_dump)
        self.threads = max(1, threads)
        if len(ctx.cores) < self.threads:
            ctx.cores = list(ctx.cores) + [CoreSlot() for _ in range(self.threads -
                                                                     len(ctx.cores))]
        self.handlers: list[ConnectionHandler | None] = [None] * self.threads
        self.idents = [0] * self.threads
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.pollers: list = []  # each core's epoll set (_take_queued empties them)
        self.taken: collections.deque[int] = collections.deque()  # fds to serve at the end

    def _stopped(self) -> None:
        try:
            os.write(self._stop_w, b"x")  # wakes every core's epoll
        except OSError:
            pass

    def run(self) -> None:
        self.ctx.pid = os.getpid()
        log.line_buffered()  # the app's print() reaches the log line by line
        others = [threading.Thread(target=self._serve, args=(core,), daemon=True,
                                   name="uwsgigw-core-%d" % core)
                  for core in range(1, self.threads)]
        for thread in others:
            thread.start()
        self._serve(0)
        for thread in others:
            thread.join()
        # A TERM after every core had left its loop (a recycling worker).
        self._serve_taken(self.handlers[0])

    def _serve(self, core: int) -> None:
        handler = ConnectionHandler(self.ctx, core)
        self.handlers[core] = handler
        self.idents[core] = threading.get_ident()
        poller = select.epoll()
        self.pollers.append(poller)
        by_fd = {}
        for listener in self.listeners:
            if self.closed_listeners:
                break  # TERM before this core started: the taken ones are served below
            poller.register(listener.fileno(), select.EPOLLIN | _EXCLUSIVE)
            # uwsgi-allow-from: accept() of a guarded TCP socket closes and
            # logs other peers (peers.py); without the option, the bare socket.
            by_fd[listener.fileno()] = peers.guard(listener.sock, self.ctx.peers)
        accepts = {fd: fd_accept(sock, self.ctx.fastpath) for fd, sock in by_fd.items()}
        poller.register(self._stop_r, select.EPOLLIN)
        stop_fd = self._stop_r
        check = bool(self.limits)
        if core == 0 and not self.stopping:
            self.slot.state = ACCEPTING
        owed = False  # the kernel may have routed a connection to us alone
        try:
            while not self.stopping:
                events = poller.poll()
                for i, (fd, _) in enumerate(events):
                    if fd == stop_fd:
                        owed = True
                        continue
                    # Under load the accept queue is rarely empty: keep
                    # accepting until it is, saving an epoll_wait per request.
                    # The first accept happens even when stopping: with
                    # EPOLLEXCLUSIVE this wake-up may be the only one the
                    # kernel gives for that connection.
                    accept = accepts[fd]
                    while True:
                        try:
                            conn = accept()
                        except BlockingIOError:
                            break  # queue empty, or another worker got it
                        except OSError as exc:
                            if not (self.closed_listeners and exc.errno in CLOSED_ERRNOS):
                                self._accept_failed(exc)
                            break
                        if conn < 0:
                            break  # the C accept's "queue empty"
                        handler.handle(conn)
                        if check:
                            self._check_limits()
                        if self.stopping:
                            break
                    if self.stopping:
                        owed = owed or i + 1 < len(events)
                        break
            if owed:
                self._drain(handler, poller, by_fd)
        finally:
            poller.close()
        self._serve_taken(handler)

    def _take_queued(self) -> None:
        """TERM/HUP (workerbase.stop, in the signal handler): take every
        connection waiting in the listening sockets' queues, then close this
        process's copies. Each core's epoll set lets go of the listeners
        first: with EPOLLEXCLUSIVE a set that nobody waits on any more could
        still take the kernel's one wake-up for a new connection, which
        another worker (a new generation after a reload) should get."""
        fds = [listener.fileno() for listener in self.listeners]
        for poller in list(self.pollers):
            for fd in fds:
                try:
                    poller.unregister(fd)
                except (OSError, ValueError):  # not registered, or the set is closed
                    pass
        count = 0
        for listener in self.listeners:
            accept = fd_accept(peers.guard(listener.sock, self.ctx.peers), self.ctx.fastpath)
            count += self._take_all(accept, self.taken.append)
        self._close_listeners()
        self._log_taken(count)

    def _serve_taken(self, handler: ConnectionHandler | None) -> None:
        """Serve the connections the stop took (the cores share them)."""
        if handler is None:
            handler = ConnectionHandler(self.ctx, 0)
        while True:
            try:
                conn = self.taken.popleft()
            except IndexError:
                return
            handler.handle(conn)

    def _drain(self, handler: ConnectionHandler, poller, by_fd: dict) -> None:
        """Serve the connections the kernel already handed to this thread.

        With EPOLLEXCLUSIVE a new connection wakes one waiting thread only.
        If that was this thread, just as it was told to stop, nobody else
        was woken for it: left alone it would wait in the backlog until the
        next connection wakes another worker. Once we are out of epoll_wait,
        new connections wake the others, so a bounded sweep of what epoll
        still reports is enough. (A thread that stops after a request was
        not waiting, so the kernel woke someone else: no sweep.)
        """
        for fd, _ in poller.poll(0):
            sock = by_fd.get(fd)
            if sock is None:
                continue
            accept = fd_accept(sock, self.ctx.fastpath)
            for _ in range(_DRAIN_ON_STOP):
                try:
                    conn = accept()
                except OSError:
                    break
                if conn < 0:
                    break
                handler.handle(conn)

    def _dump_lines(self, now: float) -> list[str]:
        """USR2: what each core is running."""
        lines = []
        for core, handler in enumerate(self.handlers):
            if handler is None:
                continue
            since = handler.slot.busy_since
            head = "%s core %d (thread 0x%016x): " % (self.name(), core, self.idents[core])
            env = handler.env
            if not since or env is None:
                lines.append(head + "idle")
                continue
            lines.append(head + "%s %s running for %.3f s" % (
                env.get("REQUEST_METHOD", "-"), env.get("REQUEST_URI", env.get("PATH_INFO")),
                now - since))
            lines.extend(self._env_lines(env))
        return lines or ["worker %d: no request thread yet" % self.ctx.worker_id]


def fd_accept(sock, fastpath=None):
    """An ``accept()`` for ``sock`` returning the bare descriptor (the C one
    returns -1 for an empty queue, the others raise BlockingIOError).

    The handler makes a socket object only when its Python path needs one:
    ``socket.socket.accept`` costs a Python wrapper, its ``__init__`` and
    ``close()``, and a getsockname() syscall per connection, all for
    nothing on the common request. A guarded listener (uwsgi-allow-from)
    checks the peer address, so it accepts through Python.
    """
    if not isinstance(sock, socket.socket):
        guarded = sock.accept
        return lambda: guarded()[0].detach()
    if fastpath is not None:
        return functools.partial(fastpath.accept, sock.fileno())
    raw_accept = sock._accept  # (fd, address), no socket object
    return lambda: raw_accept()[0]
