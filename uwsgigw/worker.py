"""A worker process: accept connections on the inherited sockets and serve them.

Each thread ("core") waits in its own epoll set on every listening socket
with EPOLLEXCLUSIVE, so the kernel wakes one waiter per connection instead
of the whole pool (the thundering herd uWSGI's ``thunder-lock`` works
around). A pipe in every set lets a stop request wake all threads at once.

Signals (Gunicorn's meanings): TERM and HUP finish the requests in flight
and exit; INT and QUIT exit at once; USR1 reopens the log; USR2 logs the
traceback of every thread and the request each core is running. The
traceback comes from :mod:`faulthandler`'s C-level handler, which writes it
from inside the signal handler: it works while the interpreter is stuck in
C code or waiting for the GIL, which a Python-level handler would not. The
master's harakiri relies on that (see master.py).
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import functools
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass

from . import log, peers
from .config import Config
from .handler import ConnectionHandler, WorkerContext
from .scoreboard import ACCEPTING, STOPPING, CoreSlot, WorkerSlot, read_statm
from .sockets import Listener

_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
# Connections a stopping thread still takes from the backlog: the kernel may
# have handed one to its epoll set (EPOLLEXCLUSIVE wakes one waiter only).
_DRAIN_ON_STOP = 16


@dataclass
class Limits:
    """Recycling: checked after each request (uWSGI's max-requests, reload-on-*)."""

    max_requests: int = 0
    rss: int = 0  # bytes
    address_space: int = 0  # bytes

    def __bool__(self) -> bool:
        return bool(self.max_requests or self.rss or self.address_space)

    @classmethod
    def from_config(cls, cfg: Config, worker_id: int) -> "Limits":
        """max-requests-delta is uWSGI's: worker_id * delta more for each worker."""
        max_requests = cfg.max_requests
        if max_requests:
            max_requests += worker_id * cfg.max_requests_delta
        return cls(max_requests=max_requests, rss=cfg.reload_on_rss << 20,
                   address_space=cfg.reload_on_as << 20)


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def stop_with_parent(master_pid: int) -> bool:
    """Get SIGTERM (a graceful stop) if the master dies; False if it already has."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == master_pid


class Worker:
    def __init__(self, ctx: WorkerContext, listeners: list[Listener], threads: int = 1,
                 slot: WorkerSlot | None = None, limits: Limits | None = None,
                 verbose_dump: bool = False):
        self.ctx = ctx
        self.listeners = listeners
        self.threads = max(1, threads)
        self.slot = slot if slot is not None else WorkerSlot()
        if len(ctx.cores) < self.threads:
            ctx.cores = list(ctx.cores) + [CoreSlot() for _ in range(self.threads -
                                                                     len(ctx.cores))]
        self.limits = limits or Limits()
        self.verbose_dump = verbose_dump
        self.stopping = False
        self.handlers: list[ConnectionHandler | None] = [None] * self.threads
        self.idents = [0] * self.threads
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def stop(self) -> None:
        """Finish the requests in flight, accept no more (async-signal safe)."""
        self.stopping = True
        self.slot.state = STOPPING
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.stop())
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, lambda signum, frame: log.reopen())
        # TTIN/TTOU are the master's; their default action would stop us.
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        # USR2: faulthandler dumps every thread from C at once, then chains to
        # the Python handler, which adds the requests and acknowledges.
        signal.signal(signal.SIGUSR2, lambda signum, frame: self.dump_requests())
        faulthandler.register(signal.SIGUSR2, file=2, all_threads=True, chain=True)

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

    def _serve(self, core: int) -> None:
        handler = ConnectionHandler(self.ctx, core)
        self.handlers[core] = handler
        self.idents[core] = threading.get_ident()
        poller = select.epoll()
        by_fd = {}
        for listener in self.listeners:
            poller.register(listener.fileno(), select.EPOLLIN | _EXCLUSIVE)
            # uwsgi-allow-from: accept() of a guarded TCP socket closes and
            # logs other peers (peers.py); without the option, the bare socket.
            by_fd[listener.fileno()] = peers.guard(listener.sock,
                                                   getattr(self.ctx, "peers", None))
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

    # -- recycling ---------------------------------------------------------------

    def _check_limits(self) -> None:
        limits = self.limits
        reason = None
        if limits.max_requests:
            done = sum(c.requests for c in self.ctx.cores)
            if done >= limits.max_requests:
                reason = "max-requests %d reached" % limits.max_requests
        if reason is None and (limits.rss or limits.address_space):
            mem = read_statm()
            if mem is not None:
                self.slot.rss, self.slot.vsz = mem
                if limits.rss and mem[0] > limits.rss:
                    reason = "reload-on-rss: rss %d MB > %d MB" % (mem[0] >> 20,
                                                                   limits.rss >> 20)
                elif limits.address_space and mem[1] > limits.address_space:
                    reason = "reload-on-as: address space %d MB > %d MB" % (
                        mem[1] >> 20, limits.address_space >> 20)
        if reason and not self.stopping:
            log.info("worker %d (pid %d) recycling: %s" % (self.ctx.worker_id, os.getpid(),
                                                          reason))
            self.slot.stopping_since = time.time()
            self.stop()

    # -- diagnostics -------------------------------------------------------------

    def dump_requests(self) -> None:
        """After faulthandler's traceback (USR2): what each core is running."""
        now = time.time()
        lines = []
        for core, handler in enumerate(self.handlers):
            if handler is None:
                continue
            since = handler.slot.busy_since
            head = "worker %d (pid %d) core %d (thread 0x%016x): " % (
                self.ctx.worker_id, os.getpid(), core, self.idents[core])
            env = handler.env
            if not since or env is None:
                lines.append(head + "idle")
                continue
            lines.append(head + "%s %s running for %.3f s" % (
                env.get("REQUEST_METHOD", "-"), env.get("REQUEST_URI", env.get("PATH_INFO")),
                now - since))
            if self.verbose_dump:
                lines.extend("    %s = %r" % (k, v) for k, v in sorted(env.items())
                             if not k.startswith("wsgi."))
        log.warning("\n".join(lines) if lines else "worker %d: no request thread yet"
                    % self.ctx.worker_id)
        self.slot.dump_ack += 1

    @staticmethod
    def _accept_failed(exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            # Out of descriptors: say which limit, and back off instead of
            # spinning on a socket that stays readable.
            log.rate_limited("accept", "accept() failed: %s; raise the open files "
                             "limit (ulimit -n / LimitNOFILE=)" % exc.strerror,
                             level="ERROR")
            time.sleep(0.05)
        elif exc.errno not in (errno.EINTR, errno.ECONNABORTED, errno.EPROTO):
            log.rate_limited("accept", "accept() failed: %s" % exc, level="ERROR")


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
