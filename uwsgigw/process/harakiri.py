"""Harakiri, the master's half: kill a worker whose request runs too long.

The master reads each core's ``busy_since`` in the scoreboard. Past the
limit it logs ``HARAKIRI ON WORKER`` with the request, sends the worker
SIGUSR2 -- whose faulthandler C handler writes every thread's Python
traceback from inside the signal handler, so it works even while the worker
is blocked in C or waiting for the GIL, where a Python handler or
``sys._current_frames`` could not run -- waits for the dump's acknowledgement
(at most ``DUMP_WAIT``), then SIGKILLs it, and the master forks a
replacement. ``faulthandler.dump_traceback_later`` per request was rejected:
arming and cancelling its watchdog thread costs a lock and a wake-up per
request. (The async worker also cancels a request task itself, and keeps
``busy_since`` fresh while its loop runs: asgi/worker.py.)
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from .. import log
from ..observe.reqlog import event

DUMP_WAIT = 0.5  # seconds the tracebacks get before SIGKILL


@dataclass
class Dump:
    """The tracebacks asked of a worker over one request (``WorkerProc.dump``)."""

    core: int
    since: float  # that request's busy_since: if it changes, the request ended
    ack: int  # the slot's dump_ack when asked: the worker bumps it once written
    kill_at: float  # monotonic: SIGKILL by then, acknowledged or not


class Harakiri:
    """Run from the master's tick (master.py) when ``harakiri`` is set."""

    def __init__(self, master, limit: int):
        self.master = master
        self.limit = limit

    def check(self, mono: float) -> None:
        now = time.time()
        for w in list(self.master.workers.values()):
            if w.killed_for:
                continue
            if w.dump is not None:
                if w.slot.dump_ack != w.dump.ack or mono >= w.dump.kill_at:
                    self._kill(w)
                continue
            for core_index, core in enumerate(w.cores()):
                since = core.busy_since
                if since and now - since > self.limit:
                    self._start(w, core_index, core, since, now, mono)
                    break

    def _start(self, w, core_index, core, since, now, mono) -> None:
        request = core.req.decode("latin-1", "replace") or "(request unknown)"
        event("harakiri", "HARAKIRI ON WORKER %d (pid %d, core %d): %s running for %.2f s "
              "(harakiri %d s); the Python tracebacks of its threads follow" % (
                  w.id, w.pid, core_index, request, now - since, self.limit), "error",
              worker=w.id, worker_pid=w.pid, core=core_index, request=request,
              seconds=round(now - since, 3), harakiri=self.limit)
        w.dump = Dump(core_index, since, w.slot.dump_ack, mono + DUMP_WAIT)
        self.master.kill(w, signal.SIGUSR2)

    def _kill(self, w) -> None:
        dump, w.dump = w.dump, None
        if w.cores()[dump.core].busy_since != dump.since:
            log.warning("%s finished that request after all; harakiri cancelled" % w.name())
            return
        w.killed_for = "harakiri after %d s" % self.limit
        counts = self.master.counts.setdefault(w.id, [0, 0])
        counts[1] += 1
        w.slot.harakiri_count = counts[1]
        self.master.kill(w, signal.SIGKILL)
