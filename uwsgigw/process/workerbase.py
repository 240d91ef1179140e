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
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import importlib
import os
import signal
import time
from typing import Callable

from .. import log
from ..observe.scoreboard import STOPPING, WorkerSlot, read_statm
from .recycle import Limits

ACCEPT_BACKOFF = 0.05  # seconds without accept() once descriptors run out


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

    def stop(self) -> None:
        """Finish the requests in flight, accept no more (async-signal safe)."""
        if self.stopping:
            return
        self.stopping = True
        self.slot.state = STOPPING
        self._stopped()

    def _stopped(self) -> None:
        """Wake whatever waits for connections, so it sees ``stopping``."""

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
            self.stop()

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
