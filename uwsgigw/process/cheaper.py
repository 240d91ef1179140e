"""Cheaper mode: uWSGI's adaptive process spawning, as a master service.

``cheaper = N`` with ``processes = M`` (N < M) runs between N and M workers.
The master starts ``cheaper-initial`` of them (N when unset); this service
then moves the master's target worker count (``Master.target``; the master's
``_manage`` forks up to it) from what it samples every ``period`` seconds
(a third of ``cheaper-overload``, from 0.1 s to 1 s, uWSGI's master cycle;
a sample reads the scoreboard, about 3 us, so the cost is the master's wake-up):

- *overloaded*: no current worker has a free core (every request thread is in
  a request, read from the scoreboard), or none is idle and connections wait
  in a listen queue (``stats.socket_queue``: what workers with a free thread
  but a slow accept, or an async worker at its concurrency limit, leave
  there); with an idle worker the queue is not read (it accepts at once).
  As in uWSGI's ``spare`` algorithm (core/master_utils.c) an overloaded
  sample adds one to a counter and a calm one takes one off, so a pool busy
  most of the time still grows; once the counter reaches ``cheaper-overload``
  seconds' worth of samples (at least 3), ``cheaper-step`` more workers are
  started (up to M) and it starts over.
- *calm*: the counter is at 0 and at least two workers have a free core.
  After ``cheaper-overload`` seconds of calm (and at least that long after the
  last change), one worker with no request running -- the highest id, which
  keeps the ids compact -- is retired gracefully (SIGTERM, then
  ``worker-reload-mercy``, like a recycle), and so on, one at a time, down to
  N. With only one free worker the pool is stable, as in uWSGI (a spare).

Scaling never drops a request: only a worker with no request running is
retired, and a retiring worker finishes what it accepted; the listening
socket is shared, so connections the others have not accepted wait in its
queue. The target crosses a reload (``hand_over``/``adopt``), so a deploy
under load keeps the capacity it grew to.

``cheaper-rss-limit-soft`` (bytes): no growth while the current workers'
resident memory adds up to it; ``cheaper-rss-limit-hard``: above it, retire
one idle worker per ``cheaper-overload`` (down to one), as uWSGI does, and no
growth either (uWSGI checks the hard limit only with a soft one set, which
stops growth below it).

``cheaper-algo``: ``spare`` is the algorithm above. uWSGI's ``busyness``,
``spare2`` and ``backlog`` run as spare, said in the log: busyness averages
the workers' request time over a window to the same end (grow when they are
busy, shrink when not) with seven tunables of its own, and its "backlog
alert" is what the listen-queue condition here does on every sample;
``backlog`` grows on the listen queue alone, which spare also does. An
unknown name falls back to spare with a warning, as uWSGI does.

SIGTTIN and SIGTTOU still move the target by one; the samples then move it by
load again, within cheaper..processes.

The stats document (stats.py) lists every worker id up to M, the ones not
running with uWSGI's status ``cheap``, and this service's ``cheaper`` object
(``running``, ``target``, ``min``, ``max``, ...).
"""

from __future__ import annotations

from .. import log
from ..observe.reqlog import event
from ..observe.scoreboard import read_statm
from .servicebase import MasterService
from .stats import socket_queue

SAMPLE_MAX = 1.0  # seconds between samples at most
SAMPLE_MIN = 0.1  # and at least (the master's loop turn with harakiri on)
MAPPED_ALGOS = {"busyness", "spare2", "backlog"}


def from_config(cfg, master) -> "Cheaper | None":
    """The cheaper service when ``cheaper`` is on (logged either way when a
    cheaper option is set, so the log says what it amounts to); else None."""
    processes = cfg.processes
    if not cfg.cheaper:
        given = [o for o in ("cheaper", "cheaper_initial", "cheaper_step", "cheaper_overload",
                             "cheaper_algo") if cfg.source(o) != "default"]
        if given:
            log.info("cheaper mode is off: %s; all %d processes run (uWSGI reads a word "
                     "such as true as 0, and needs cheaper = N for the other cheaper "
                     "options)" % ("cheaper = 0" if "cheaper" in given else
                                   "%s without cheaper = N" % given[0].replace("_", "-"),
                                   processes))
        return None
    algo = (cfg.cheaper_algo or "spare").strip().lower()
    if algo in MAPPED_ALGOS:
        log.info("cheaper-algo = %s runs as spare (grow when every worker is busy or "
                 "connections wait in the listen queue, retire idle ones): see "
                 "cheaper-overload and cheaper-step" % algo)
    elif algo != "spare":
        log.warning("cheaper-algo = %s: no such cheaper algorithm; falling back to spare, "
                    "as uWSGI does" % algo)
    return Cheaper(master, cfg.cheaper, processes, cfg.cheaper_initial or cfg.cheaper,
                   cfg.cheaper_step, float(cfg.cheaper_overload),
                   cfg.cheaper_rss_limit_soft, cfg.cheaper_rss_limit_hard)


class Cheaper(MasterService):
    """Moves ``master.target`` between ``minimum`` and ``maximum`` workers."""

    name = "cheaper"

    def __init__(self, master, minimum: int, maximum: int, initial: int, step: int,
                 overload: float, rss_soft: int = 0, rss_hard: int = 0):
        self.master = master
        self.minimum, self.maximum, self.step = minimum, maximum, step
        self.overload = overload  # seconds
        self.rss_soft, self.rss_hard = rss_soft, rss_hard  # bytes, 0: off
        self.period = min(SAMPLE_MAX, max(SAMPLE_MIN, overload / 3))
        self.needed = max(1, round(overload / self.period))  # net overloaded samples
        self.overloaded = 0  # uWSGI's overload_count
        self.calm_since: float | None = None  # monotonic
        self.last_change = 0.0
        self.next_sample = 0.0
        master.target = min(max(initial, minimum), maximum)
        log.info("cheaper mode: %d to %d workers (cheaper-initial %d, step %d, overload "
                 "%gs)" % (minimum, maximum, master.target, step, overload))

    # -- the master's hooks ---------------------------------------------------------

    def adopt(self, state) -> None:
        """A reloaded image starts the count its predecessor had grown to."""
        if isinstance(state, dict) and isinstance(state.get("target"), int):
            self.master.target = min(max(state["target"], self.minimum), self.maximum)

    def hand_over(self):
        return {"target": self.master.target}

    def deadline(self, now: float) -> float | None:
        return max(0.0, self.next_sample - now)

    def stats(self):
        m = self.master
        running = sum(1 for w in m.workers.values()
                      if w.generation == m.generation and not w.retiring)
        return {"algo": "spare", "running": running, "target": m.target, "min": self.minimum,
                "max": self.maximum, "step": self.step, "overload": self.overload}

    def tick(self, now: float) -> None:
        if now < self.next_sample:
            return
        self.next_sample = now + self.period
        m = self.master
        current = [w for w in m.workers.values()
                   if w.generation == m.generation and not w.retiring]
        if (m.stopping or not m.ready or m.spawn_disabled or len(current) != m.target
                or not all(w.booted for w in current)):
            # Starting, reloading, stopping, or a worker being replaced: wait.
            self.calm_since = None
            return
        self.sample(now, current)

    # -- the algorithm ----------------------------------------------------------------

    def sample(self, now: float, current: list) -> None:
        """One look at the pool: grow, retire one worker, or wait."""
        busy = {w.pid: [bool(c.busy_since) for c in w.cores()] for w in current}
        free = [w for w in current if not all(busy[w.pid])]
        idle = [w for w in free if not any(busy[w.pid])]
        # A worker with no request running takes the next connection at once, so
        # the queue is only read when none is idle (and not when all are full).
        queued = 0 if idle or not free else sum(socket_queue(l.sock)[0]
                                                for l in self.master.listeners)
        hot = not free or queued > 0
        if hot:
            self.overloaded += 1
            self.calm_since = None
        elif self.overloaded:
            self.overloaded -= 1
        rss = self._rss(current) if self.rss_soft or self.rss_hard else 0
        paced = now - self.last_change >= self.overload
        if self.rss_hard and rss >= self.rss_hard and len(current) > 1:
            if idle and paced:
                self._retire(now, idle, current, "resident memory %d MB >= "
                             "cheaper-rss-limit-hard %d MB" % (rss >> 20, self.rss_hard >> 20))
            return
        if hot and self.overloaded >= self.needed:
            self.overloaded = 0
            limit = min(x for x in (self.rss_soft, self.rss_hard, 1 << 62) if x)
            if rss >= limit:
                log.rate_limited("cheaper-rss", "cheaper: workers busy, but their resident "
                                 "memory (%d MB) is at cheaper-rss-limit-%s (%d MB): not "
                                 "adding any" % (rss >> 20, "soft" if limit == self.rss_soft
                                                 else "hard", limit >> 20),
                                 level="WARNING", every=60.0)
            elif self.master.target < self.maximum:
                self._grow(now, current, queued)
            return
        if self.overloaded or len(free) < 2:
            self.calm_since = None  # busy, or one spare worker: stable
            return
        if self.calm_since is None:
            self.calm_since = now
        if (len(current) > self.minimum and idle and paced
                and now - self.calm_since >= self.overload):
            self._retire(now, idle, current, "%d of %d workers idle for %gs" % (
                len(idle), len(current), self.overload))

    def _grow(self, now: float, current: list, queued: int) -> None:
        m = self.master
        more = min(self.step, self.maximum - m.target)
        why = "every worker busy" if queued == 0 else "%d connection%s waiting" % (
            queued, "s" if queued > 1 else "")
        m.target += more
        self.last_change = now
        self.calm_since = None
        event("cheaper", "cheaper: %s for %gs: starting %d more worker%s (%d -> %d of %d)" % (
            why, self.overload, more, "s" if more > 1 else "", len(current), m.target,
            self.maximum), action="grow", workers=m.target, reason=why)

    def _retire(self, now: float, idle: list, current: list, why: str) -> None:
        m = self.master
        w = max(idle, key=lambda w: (w.id, w.spawned))
        m._retire(w, "cheaper", m.worker_mercy)
        m.target = len(current) - 1
        self.last_change = now
        self.calm_since = None
        event("cheaper", "cheaper: %s: retiring %s (%d -> %d of %d)" % (
            why, w.name(), len(current), m.target, self.maximum), action="shrink",
            workers=m.target, worker=w.id, worker_pid=w.pid, reason=why)

    @staticmethod
    def _rss(current: list) -> int:
        """Resident bytes of the current workers, from /proc."""
        return sum((read_statm(w.pid) or (0, 0))[0] for w in current)
