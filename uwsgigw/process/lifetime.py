"""max-worker-lifetime: recycle a worker that has run long enough.

uWSGI's rule (core/master_checks.c): worker N (1, 2, ...) recycles once it
has run more than ``max-worker-lifetime + (N - 1) * max-worker-lifetime-delta``
seconds since it was spawned; its master checks once per cycle (a second) and
sends the worker a graceful-reload signal, so it finishes its request and a
replacement is forked after it exits. Here the master checks once a second
too, but the worker is replaced the way a chain reload replaces one (chain.py):
the replacement starts first and the old worker stops only once the new one
accepts, one worker at a time, so the pool never shrinks (uWSGI's leaves a
gap, and with delta 0 every worker recycles at the same moment).

The line says why (``worker 2 (pid 123) recycling: max-worker-lifetime 3600s
reached (ran 3601s)``); with log-json the ``recycle`` event's ``reason`` is
``max-worker-lifetime 3600s reached``; when the old worker exits, its death
event names the same reason. The age is wall-clock seconds since the spawn as
the scoreboard slot recorded it, so it survives the master's re-exec.

min-worker-lifetime holds back max-requests, reload-on-rss and reload-on-as
(recycle.py), as in uWSGI, not this limit (which must be the larger one;
settings.py warns otherwise).
"""

from __future__ import annotations

import time

from ..observe.reqlog import event
from . import chain
from .servicebase import MasterService

CHECK_EVERY = 1.0  # seconds


class Lifetime(MasterService):
    name = "lifetime"

    def __init__(self, master, seconds: int, delta: int):
        self.master = master
        self.seconds = seconds
        self.delta = delta
        self.next_check = 0.0

    def limit(self, worker_id: int) -> int:
        """Seconds worker ``worker_id`` (1-based) may run (uWSGI's formula)."""
        return self.seconds + (worker_id - 1) * self.delta

    def deadline(self, now: float) -> float | None:
        return max(0.0, self.next_check - now)

    def tick(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY
        m = self.master
        if m.stopping or not m.ready:
            return
        wall = time.time()
        replacer = chain.of(m)
        for w in list(m.workers.values()):
            if w.generation != m.generation or w.retiring or not w.booted:
                continue
            spawned = w.slot.last_spawn
            limit = self.limit(w.id)
            if not spawned or wall - spawned <= limit:
                continue
            reason = "max-worker-lifetime %ds reached" % limit
            if replacer.replace(w, reason):
                event("recycle", "%s recycling: %s (ran %ds); its replacement starts "
                      "first" % (w.name(), reason, wall - spawned), worker=w.id,
                      worker_pid=w.pid, reason=reason)


def from_config(cfg, master) -> Lifetime | None:
    if not cfg.max_worker_lifetime:
        return None
    return Lifetime(master, cfg.max_worker_lifetime, cfg.max_worker_lifetime_delta)
