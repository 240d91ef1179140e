"""What every worker kind shares (gunicorn's ``workers/base.py``), and the
table of kinds.

A worker process runs one kind: ``sync`` (worker.py: a thread per core, each
blocking in epoll and serving one connection at a time) or ``asgi``
(asgi/worker.py: an asyncio event loop). Both are a :class:`WorkerBase`: the
signals and what they mean, stopping, the back-off when ``accept()`` fails,
the recycle check after a request and the head of the USR2 dump live here;
a kind brings how it waits for connections and runs requests.

Signals (Gunicorn's meanings): TERM and HUP finish the requests in flight and
exit; INT and QUIT exit at once; USR1 reopens the log; USR2 logs the
traceback of every thread and the requests in flight. The traceback comes
from :mod:`faulthandler`'s C-level handler, which writes it from inside the
signal handler: it works while the interpreter is stuck in C code or waiting
for the GIL, which a Python-level handler would not. The master's harakiri
relies on that (see master.py).

A stop asked for by TERM or HUP (the master's graceful stop, its retirement
of an old generation after a reload, a cheaper/TTOU shrink) first takes
every connection already waiting in the kernel's queue of each listening
socket (non-blocking accept until EAGAIN), then closes this process's copy
of those sockets, and serves what it took before exiting. Closing one copy
is harmless while another process holds the socket (the master, other
workers, a new generation, systemd); when the last copy goes (a graceful
stop: the master closes its own right after signalling the workers, see
listenclose.py), the kernel refuses new connections (TCP: RST to the SYN,
ECONNREFUSED on a unix socket), which a proxy retries elsewhere for any
method, instead of resetting connections it had queued -- after the proxy
sent a request on them. A worker that recycles itself (max-requests,
reload-on-*) only stops accepting: the others keep serving the queue.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import importlib
import os
import signal
import socket
import time
from typing import Callable

from .. import log
from ..observe.scoreboard import STOPPING, WorkerSlot, read_statm
from .recycle import Limits

ACCEPT_BACKOFF = 0.05  # seconds without accept() once descriptors run out
# Connections a stopping worker takes from one listening socket at most: the
# queue holds at most its backlog (``listen``, capped by somaxconn), and an
# accept takes microseconds, so EAGAIN comes long before this.
TAKE_MAX = 65536
# accept() errors of a listening descriptor this process closed (another
# thread of it may still be in its accept loop): not worth a log line.
CLOSED_ERRNOS = (errno.EBADF, errno.EINVAL, errno.ENOTSOCK)


# The worker kinds, imported when used (gunicorn's SUPPORTED_WORKERS does the
# same): a WSGI-only server never imports asyncio. WorkerContext.from_config
# (handler.py) decides ``ctx.kind``: with lazy-apps only a worker that has
# loaded the app knows it, so the table is read where the worker is made.
WORKERS = {"sync": "uwsgigw.wsgi.worker:Worker", "asgi": "uwsgigw.asgi.worker:AsyncWorker"}


def worker_class(kind: str) -> type[WorkerBase]:
    module, _, name = WORKERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def stop_with_parent(master_pid: int) -> bool:
    """Get SIGTERM (a graceful stop) if the master dies; False if it already has."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == master_pid


class WorkerBase:
    def __init__(self, ctx, listeners: list, slot: WorkerSlot | None = None,
                 limits: Limits | None = None, verbose_dump: bool = False):
        self.ctx = ctx
        self.listeners = listeners
        self.slot = slot if slot is not None else WorkerSlot()
        self.limits = limits or Limits()
        self.verbose_dump = verbose_dump
        self.stopping = False
        self.started = time.monotonic()  # min-worker-lifetime counts from here
        self.closed_listeners = False  # this process closed its copies (stop)

    def name(self) -> str:
        return "worker %d (pid %d)" % (self.ctx.worker_id, os.getpid())

    # -- signals -----------------------------------------------------------------

    def install_signals(self) -> None:
        table: dict[int, Callable[[], object] | signal.Handlers] = {
            signal.SIGTERM: self.stop, signal.SIGHUP: self.stop,
            signal.SIGINT: signal.SIG_DFL, signal.SIGQUIT: signal.SIG_DFL,
            signal.SIGUSR1: log.reopen,
            # TTIN/TTOU are the master's; their default action would stop us.
            signal.SIGTTIN: signal.SIG_IGN, signal.SIGTTOU: signal.SIG_IGN,
            signal.SIGUSR2: self.dump_requests,
        }
        for sig, action in table.items():
            if isinstance(action, signal.Handlers):
                signal.signal(sig, action)
            else:
                self._on_signal(sig, action)
        # USR2: faulthandler dumps every thread from C at once, then chains to
        # the handler above, which adds the requests and acknowledges.
        faulthandler.register(signal.SIGUSR2, file=2, all_threads=True, chain=True)

    def _on_signal(self, sig: int, action: Callable[[], object]) -> None:
        """Run ``action`` on ``sig`` (a kind with an event loop lets the loop run it)."""
        signal.signal(sig, lambda signum, frame: action())

    # -- stopping ----------------------------------------------------------------

    def stop(self, take_queued: bool = True) -> None:
        """Finish the requests in flight, accept no more (run from a Python
        signal handler or the worker's loop, never from C).

        ``take_queued`` (TERM or HUP; False when the worker recycles itself):
        first take the connections waiting in the listening sockets' queues
        and close this process's copies of those sockets (see the module's
        docstring); the connections taken are served before the worker
        exits. Asked again while stopping already, it still takes and closes."""
        if take_queued and not self.closed_listeners:
            self.closed_listeners = True
            self._take_queued()
        if self.stopping:
            return
        self.stopping = True
        self.slot.state = STOPPING
        self._stopped()

    def _stopped(self) -> None:
        """Wake whatever waits for connections, so it sees ``stopping``."""

    def _take_queued(self) -> None:
        """Take what waits in the listening sockets' queues, to be served
        before exiting, and close this process's copies (a kind's own)."""

    def _close_listeners(self) -> None:
        """Close this process's copy of every listening socket.

        The descriptor number is not freed: a harmless unbound socket takes
        its place (dup2), so an accept another thread still makes on it
        fails (EINVAL, not logged: ``closed_listeners``) instead of reaching
        whatever descriptor would reuse the number. The address is kept for
        SERVER_NAME (``Listener.address``)."""
        placeholder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for listener in self.listeners:
                try:
                    _ = listener.address  # cached before the close
                    fd = listener.fileno()
                    if fd >= 0:
                        os.dup2(placeholder.fileno(), fd, inheritable=False)
                except OSError as exc:
                    log.warning("%s: cannot close its copy of socket %s: %s"
                                % (self.name(), listener.describe(), exc))
        finally:
            placeholder.close()

    def _take_all(self, accept: Callable[[], object], take: Callable[[object], None]) -> int:
        """``take(accept())`` until the queue is empty (BlockingIOError, or
        -1 from the C accept), at most TAKE_MAX times; how many were taken.
        An aborted handshake is skipped; another error is logged and ends it."""
        count = 0
        for _ in range(TAKE_MAX):
            try:
                conn = accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.rate_limited("accept", "accept() failed while stopping: %s" % exc,
                                 level="ERROR")
                break
            if isinstance(conn, int) and conn < 0:
                break
            take(conn)
            count += 1
        return count

    def _log_taken(self, count: int) -> None:
        if count:
            log.info("%s stopping: serving %d connection%s taken from the listen queue"
                     % (self.name(), count, "" if count == 1 else "s"))

    # -- accepting ---------------------------------------------------------------

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            # Out of descriptors: say which limit, and back off instead of
            # spinning on a socket that stays readable.
            log.rate_limited("accept", "accept() failed: %s; raise the open files "
                             "limit (ulimit -n / LimitNOFILE=)" % exc.strerror,
                             level="ERROR")
            self._back_off(ACCEPT_BACKOFF)
        elif exc.errno not in (errno.EINTR, errno.ECONNABORTED, errno.EPROTO):
            log.rate_limited("accept", "accept() failed: %s" % exc, level="ERROR")

    def _back_off(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- recycling (recycle.py) --------------------------------------------------

    def _check_limits(self) -> None:
        """After a request: past a limit, log why and stop gracefully."""
        limits = self.limits
        rss = vsz = 0
        if limits.memory:
            mem = read_statm()
            if mem is not None:
                self.slot.rss, self.slot.vsz = rss, vsz = mem
        reason = limits.exceeded(sum(c.requests for c in self.ctx.cores), rss, vsz)
        if reason and not self.stopping and \
                not limits.too_young(time.monotonic() - self.started):
            log.info("%s recycling: %s" % (self.name(), reason))
            self.slot.stopping_since = time.time()
            self.stop(take_queued=False)  # the others keep serving the queue

    # -- diagnostics -------------------------------------------------------------

    def dump_requests(self) -> None:
        """After faulthandler's traceback (USR2): what this worker is running;
        then the acknowledgement the master's harakiri waits for."""
        log.warning("\n".join(self._dump_lines(time.time())))
        self.slot.dump_ack += 1

    def _dump_lines(self, now: float) -> list[str]:
        raise NotImplementedError

    def _env_lines(self, env: dict) -> list[str]:
        """harakiri-verbose: the request's variables under its dump line."""
        if not self.verbose_dump:
            return []
        return ["    %s = %r" % (k, v) for k, v in sorted(env.items())
                if not k.startswith("wsgi.")]
