"""Chain reload: the workers are replaced one at a time, never fewer accepting.

uWSGI's chain reload (touch-chain-reload, the master FIFO's ``c``) stops
worker 1, waits until its respawn accepts, then worker 2, and so on: while
one is being replaced, one fewer accepts. Here the replacement starts
*first*: the old worker is marked as leaving (``retiring`` without a
deadline), so the master's ``_manage`` forks a new worker under the same id
while the old one keeps serving; once the new one accepts, the old one gets
SIGTERM, finishes its requests and exits (``worker-reload-mercy`` applies),
and the next worker's turn begins. At every moment at least as many workers
accept as before the chain started.

What it reloads: the master does not re-execute, so the new workers are
forked from this master and run the app it imported, as
``reload.reload_workers`` does; only with lazy-apps does each new worker
import the app (and so the deployed code) afresh. SIGHUP or touch-reload
reload the code in every mode (all workers at once, after the new ones accept).

Triggers: touch-chain-reload (touch.py) and SIGURG, which ``uwsgigw
--chain-reload PIDFILE`` sends. Why SIGURG: the master already gives HUP,
TERM, INT, QUIT, TTIN, TTOU, USR1 and USR2 their gunicorn/uWSGI meanings.
SIGWINCH is what a terminal sends its foreground process group when the
window is resized (a server started in a terminal would reload on every
resize), and gunicorn and nginx use it to stop their workers; SIGTSTP/SIGCONT
are job control; most other free signals (SIGPWR, real-time signals) kill a
process that has no handler. SIGURG's default action is to ignore it, so
sending it to a server that does not know it (an older uwsgigw) does nothing;
the kernel sends it only for out-of-band data on a socket whose owner was set
with F_SETOWN, which uwsgigw never does; gunicorn and nginx do not use it.

max-worker-lifetime (lifetime.py) uses the same queue: expired workers are
replaced the same way, one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import log
from ..observe.scoreboard import ACCEPTING
from .servicebase import MasterService

STALL_FAILURES = 5  # replacements dying at boot in a row before a chain gives up
WAIT_NOTE_EVERY = 10.0  # seconds between "still waiting" lines
TICK = 0.05  # seconds between ticks while a replacement is under way


@dataclass
class Step:
    """One worker being replaced."""

    worker_id: int
    old: object  # the WorkerProc leaving (workerproc.py)
    reason: str
    started: float  # monotonic
    failures: int  # the master's boot_failures when the step began
    noted: float = 0.0


class ChainReload(MasterService):
    """The master's chain reload and the one-at-a-time worker replacement."""

    name = "chain"

    def __init__(self, master):
        self.master = master
        self.queue: list[tuple[int, int, str]] = []
        self.step: Step | None = None
        self.why = ""  # the chain reload under way ("" none)
        self.replaced = 0
        self.pending = ""  # asked for while the workers were (re)starting
        self.generation = master.generation

    # -- asking --------------------------------------------------------------------

    def start(self, why: str) -> None:
        """Chain reload every worker (``why``: what asked, for the log)."""
        m = self.master
        if m.stopping:
            return
        if self.why:
            log.info("%s: a chain reload is already running (%d worker%s to go); ignored"
                     % (why, len(self.queue) + bool(self.step),
                        "" if len(self.queue) + bool(self.step) == 1 else "s"))
            return
        if m.spawn_disabled:
            log.warning("%s: no chain reload: %s (fix it and send SIGHUP)"
                        % (why, m.spawn_disabled))
            return
        if not m.ready or self._reloading():
            log.info("%s: the workers are still starting; chain reload once they accept"
                     % why)
            self.pending = why
            return
        current = sorted(self._current(), key=lambda w: w.id)
        queued = {item[0] for item in self.queue}
        self.queue += [(w.id, 0, "chain reload") for w in current if w.id not in queued]
        self.why, self.replaced, self.generation = why, 0, m.generation
        log.info("%s: chain reload: replacing %d worker%s one at a time, each once its "
                 "replacement accepts (%s)" % (
                     why, len(current), "" if len(current) == 1 else "s",
                     "each new worker imports the app afresh (lazy-apps)" if m.lazy else
                     "the new workers run the app the master loaded; SIGHUP or "
                     "touch-reload re-imports it"))

    def replace(self, w, reason: str) -> bool:
        """Queue worker process ``w`` (a WorkerProc) for replacement; False if it
        is queued or being replaced already."""
        if self.step is not None and self.step.old is w:
            return False
        if any(item[1] == w.pid or (item[0] == w.id and not item[1]) for item in self.queue):
            return False
        self.queue.append((w.id, w.pid, reason))
        return True

    # -- the hooks -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        m = self.master
        if m.stopping:
            self.queue, self.step, self.why, self.pending = [], None, "", ""
            return
        if m.generation != self.generation:
            if self.step is not None or self.queue:  # a reload replaces them all anyway
                log.info("chain reload stopped: a reload of every worker began")
            self.queue, self.step, self.why = [], None, ""
            self.generation = m.generation
        if self.pending and m.ready and not self._reloading():
            why, self.pending = self.pending, ""
            self.start(why)
        if self.step is not None and not self._advance(now):
            return
        while self.queue and self.step is None:
            self._begin(self.queue.pop(0), now)
        if self.step is None and self.why:
            log.info("chain reload complete: %d worker%s replaced (%s)" % (
                self.replaced, "" if self.replaced == 1 else "s", self.why))
            self.why = ""

    def deadline(self, now: float) -> float | None:
        return TICK if (self.step is not None or self.queue or self.pending) else None

    def stats(self):
        if self.step is None and not self.queue:
            return None
        return {"running": bool(self.why), "worker": self.step.worker_id if self.step
                else None, "queued": len(self.queue)}

    # -- steps ---------------------------------------------------------------------

    def _current(self) -> list:
        m = self.master
        return [w for w in m.workers.values()
                if w.generation == m.generation and not w.retiring and w.booted]

    def _reloading(self) -> bool:
        m = self.master
        return any(w.generation < m.generation for w in m.workers.values())

    def _begin(self, item: tuple[int, int, str], now: float) -> None:
        worker_id, pid, reason = item
        old = next((w for w in self._current() if w.id == worker_id), None)
        if old is None or (pid and old.pid != pid):
            return  # gone, shrunk away, or already replaced
        # Leaving, but serving: _manage forks its replacement in this tick.
        old.retiring = reason
        self.step = Step(worker_id, old, reason, now, self.master.boot_failures, now)
        log.info("%s: %s; starting its replacement first" % (old.name(), reason))

    def _replacement(self, step: Step):
        m = self.master
        return next((w for w in m.workers.values() if w.id == step.worker_id
                     and w.generation == m.generation and not w.retiring), None)

    def _advance(self, now: float) -> bool:
        """Drive the step: True once it is over (done or given up)."""
        m, step = self.master, self.step
        old, new = step.old, self._replacement(step)
        if step.worker_id > m.target:  # the pool shrank past it meanwhile (SIGTTOU)
            if old.pid in m.workers and not old.kill_at:
                m._retire(old, step.reason, m.worker_mercy)
            self.step = None
            return True
        if new is not None and new.booted and new.slot.state == ACCEPTING:
            if old.pid in m.workers and not old.kill_at:
                m._retire(old, step.reason, m.worker_mercy)
                m.counts.setdefault(old.id, [0, 0])[0] += 1
                log.info("%s accepts: %s stops after its requests (%s)" % (
                    new.name(), old.name(), step.reason))
            self.replaced += 1
            self.step = None
            return True
        if m.boot_failures >= step.failures + STALL_FAILURES or m.spawn_disabled:
            log.error("%s stopped: worker %d's replacement does not start (%d attempts; "
                      "see above); %s keeps serving" % (
                          "chain reload" if self.why else step.reason, step.worker_id,
                          m.boot_failures - step.failures, old.name()))
            if new is not None:
                m._retire(new, "replacement given up", m.worker_mercy)
            if old.pid in m.workers and not old.kill_at:
                old.retiring = ""  # back to serving as before
            self.queue, self.step, self.why = [], None, ""
            return True
        if now - step.noted >= WAIT_NOTE_EVERY:
            step.noted = now
            log.info("%s: still waiting for worker %d's replacement to accept (%.0fs)"
                     % ("chain reload" if self.why else step.reason, step.worker_id,
                        now - step.started))
        return False


def of(master) -> ChainReload:
    """The master's ChainReload service (always built)."""
    for service in master.services.items:
        if isinstance(service, ChainReload):
            return service
    raise LookupError("the master has no chain reload service")


def request(master, why: str) -> None:
    """Start a chain reload of ``master``'s workers (SIGURG, touch-chain-reload)."""
    of(master).start(why)


def from_config(cfg, master) -> ChainReload:
    """Always there: ``uwsgigw --chain-reload`` works without any option."""
    return ChainReload(master)
