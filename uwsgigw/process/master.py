"""The master ("arbiter", as in gunicorn's arbiter.py): forks the workers and
keeps them alive, kills stuck ones, recycles, reloads and stops.

Signal handlers only enqueue; the main loop sleeps on a wake-up pipe
(``signal.set_wakeup_fd``), then reaps with ``waitpid(-1, WNOHANG)``,
dispatches ``handle_<signal>`` and runs one :meth:`tick`. It never
busy-loops: the sleep is bounded by the next thing that has a deadline.

Harakiri (a stuck request: tracebacks, then SIGKILL) is harakiri.py's.

Reload (SIGHUP) re-executes the master in place, as uWSGI does, but without
a gap: the running workers are left serving, and the new image (same pid, so
systemd and the pidfile stay right) adopts the listening sockets and the old
workers, imports the app afresh in a clean interpreter -- code, libraries and
the INI file are all re-read -- forks the new generation and only once every
new worker accepts sends the old ones SIGTERM; they finish their requests
and exit. Requests queue in the shared listen backlog in between, so none
fail. A fresh image also keeps the master's RSS and fd count flat however
often it reloads. If the new app does not load, the old workers keep serving.
What one image hands the next is handover.py's.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time

from .. import exitcodes, log
from ..config.settings import Config
from ..observe import reqlog
from ..observe.reqlog import event
from ..observe.scoreboard import ACCEPTING, BOOTING, STOPPING, Scoreboard
from . import services, vacuum
from .handover import HandedBoard, HandedListener, Handover
from .harakiri import Harakiri
from .recycle import Limits
from .stats import StatsServer
from .systemd import Notifier
from .workerbase import stop_with_parent, worker_class
from .workerproc import WorkerProc, describe_status

IMMEDIATE_STOP_WAIT = 1.0  # after SIGINT/SIGQUIT, SIGKILL what is left
BOOT_FAILURES_MAX = 5  # consecutive workers dying at boot before giving up
SIGNALS = [signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD]


class Master:
    def __init__(self, cfg: Config, listeners, sockets_text: str, make_ctx, ctx=None,
                 inherited: Handover | None = None, notifier: Notifier | None = None):
        """``make_ctx()`` loads the app and returns a WorkerContext (None on
        failure, logged); ``ctx`` is that context when loaded in the master."""
        self.cfg = cfg
        self.listeners = listeners
        self.sockets_text = sockets_text
        self.make_ctx = make_ctx
        self.ctx = ctx
        self.lazy = cfg.lazy_apps
        self.notifier = notifier or Notifier()
        self.pid = os.getpid()
        self.target = cfg.processes
        self.threads = cfg.threads
        self.harakiri = cfg.harakiri
        self.harakiri_check = Harakiri(self, self.harakiri)
        self.reload_mercy = float(cfg.or_default("reload_mercy"))
        self.worker_mercy = float(cfg.or_default("worker_reload_mercy"))
        self.board = Scoreboard(max(2 * self.target + 8, 32), self.threads)
        self.boards = [self.board]
        self.workers: dict[int, WorkerProc] = {}
        self.generation = 1
        self.counts: dict[int, list[int]] = {}  # worker id -> [respawns, harakiris]
        # worker id -> [requests, exceptions, tx, rt seconds, timed requests] of
        # its dead processes, so the stats server's counters never go back.
        self.carried: dict[int, list] = {}
        self.stats: StatsServer | None = None
        self.stopping = ""  # "", "graceful" or "immediate"
        self.exit_code = exitcodes.OK
        self.ready = False  # the current generation accepts (READY=1 sent)
        self.reload_pending = False
        self.reload_started = 0.0
        self.spawn_disabled = ""  # why no worker may be forked (reload failed)
        self.boot_failures = 0
        self.next_spawn = 0.0
        self.queue: list[int] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.services = services.Services(services.build(cfg, self))
        if inherited:
            self._adopt(inherited)

    # -- set-up ------------------------------------------------------------------

    def _adopt(self, handover: Handover) -> None:
        """Take over the workers of the image that re-executed into this one."""
        self.generation = handover.generation + 1
        boards = {key: Scoreboard.attach(b.fd, b.capacity, b.threads)
                  for key, b in handover.boards.items()}
        self.boards.extend(boards.values())
        now = time.monotonic()
        for handed in handover.workers:
            self.workers[handed.pid] = WorkerProc.adopted(handed, boards[handed.board], now)
        self.counts, self.carried = handover.counts, handover.carried
        self.services.adopt(handover.services)
        self.reload_started = now
        if self.ctx is None and not self.lazy:
            self.spawn_disabled = "the app failed to load"

    def _install_signals(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._enqueue)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        # A reloading image blocked these before exec: deliver what is pending.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def _enqueue(self, signum, frame) -> None:
        if signum != signal.SIGCHLD and len(self.queue) < 16:
            self.queue.append(signum)

    # -- main loop ---------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        if self.ctx is not None:
            # Keep the app's objects out of the workers' collections, so
            # copy-on-write pages stay shared (gc.freeze, Python >= 3.7).
            gc.freeze()
        old = len(self.workers)
        if self.spawn_disabled:
            log.error("reload failed: %s; the old workers keep serving (fix it and send "
                      "SIGHUP again)" % self.spawn_disabled)
            self.ready = True
            self.notifier.ready("reload failed: %s; serving with the old workers"
                                % self.spawn_disabled)
        self.stats = StatsServer.start(self)
        log.info("master (pid %d) starting %d worker%s%s" % (
            self.pid, self.target, "s" if self.target > 1 else "",
            " next to %d old one%s (reload)" % (old, "s" if old > 1 else "") if old else ""))
        while True:
            try:
                self.reap()
                while self.queue:
                    self.dispatch(self.queue.pop(0))
                    self.reap()
                self.tick()
            except Exception:  # a master bug must not take the workers down
                log.exception("internal error in the master loop")
                time.sleep(0.1)
            if self.stopping and not self.workers and not self.services.busy():
                break
            if not self.workers and self.spawn_disabled:
                log.error("no worker left and none can be started (%s); exiting"
                          % self.spawn_disabled)
                self.exit_code = self.exit_code or exitcodes.APP_LOAD_ERROR
                break
            self._sleep(self._timeout())
        self.notifier.stopping()
        if self.stats is not None:
            self.stats.close()
        for board in self.boards:
            board.close()
        log.info("master (pid %d) exiting (code %d)" % (self.pid, self.exit_code))
        return self.exit_code

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = 1.0
        if self.harakiri:
            timeout = 0.1
        if self.notifier.watchdog_interval:
            timeout = min(timeout, self.notifier.watchdog_interval / 2)
        for w in self.workers.values():
            if w.dump is not None:
                timeout = min(timeout, 0.01)
            elif w.kill_at and not w.killed_for:
                timeout = min(timeout, max(0.0, w.kill_at - now))
            if not w.booted and now - w.spawned < 10:
                timeout = min(timeout, 0.02)  # notice readiness quickly
        if self.next_spawn > now:
            timeout = min(timeout, self.next_spawn - now)
        wanted = self.services.deadline(now)
        if wanted is not None:
            timeout = min(timeout, wanted)
        return max(timeout, 0.005)

    def _sleep(self, timeout: float) -> None:
        reads, writes = [self._wake_r, *self.services.fds()], []
        if self.stats is not None:  # stats.py: non-blocking, served from this loop
            more, writes = self.stats.fds()
            reads += more
        try:
            ready, writable, _ = select.select(reads, writes, [], timeout)
        except InterruptedError:
            return
        self.services.readable(ready)  # (services.py: the pipes of their children)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if self.stats is not None and (len(ready) > (self._wake_r in ready) or writable):
            try:
                self.stats.handle(ready, writable)
            except Exception:
                log.exception("internal error in the stats server")

    def dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name
        handler = getattr(self, "handle_" + name[3:].lower(), None)
        if handler is not None:
            handler()

    # -- signals -----------------------------------------------------------------

    def handle_term(self) -> None:
        if self.stopping:
            return
        log.info("SIGTERM: graceful stop; finishing requests in flight (up to %gs)"
                 % self.reload_mercy)
        self.stopping = "graceful"
        self.notifier.stopping()
        for w in list(self.workers.values()):
            self._retire(w, "shutdown", self.reload_mercy)
        self.services.stop(immediate=False)

    def handle_int(self) -> None:
        if self.stopping == "immediate":
            return
        log.info("immediate stop")
        self.stopping = "immediate"
        self.notifier.stopping()
        deadline = time.monotonic() + IMMEDIATE_STOP_WAIT
        for w in list(self.workers.values()):
            w.retiring, w.kill_at = w.retiring or "shutdown", deadline
            w.mercy = IMMEDIATE_STOP_WAIT
            self.kill(w, signal.SIGINT)
        self.services.stop(immediate=True)

    handle_quit = handle_int

    def handle_hup(self) -> None:
        if self.stopping:
            return
        if not self.ready and not self.spawn_disabled:
            log.info("SIGHUP: the workers are still starting; reloading once they accept")
            self.reload_pending = True
            return
        self.reexec()

    def handle_ttin(self) -> None:
        if self.stopping:
            return
        self.target += 1
        log.info("SIGTTIN: %d workers" % self.target)

    def handle_ttou(self) -> None:
        if self.stopping or self.target <= 1:
            return
        self.target -= 1
        log.info("SIGTTOU: %d workers" % self.target)

    def handle_usr1(self) -> None:
        log.reopen()
        log.info("SIGUSR1: log reopened (master and workers)")
        for w in self.workers.values():
            self.kill(w, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        lines = ["SIGUSR2: %d workers, generation %d; each dumps its threads" % (
            len(self.workers), self.generation)]
        for w in sorted(self.workers.values(), key=lambda w: (w.generation, w.id)):
            lines.append("  %s generation %d%s" % (w.name(), w.generation,
                                                   " retiring (%s)" % w.retiring
                                                   if w.retiring else ""))
        log.info("\n".join(lines))
        for w in self.workers.values():
            self.kill(w, signal.SIGUSR2)

    # -- workers -----------------------------------------------------------------

    def kill(self, w: WorkerProc, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _retire(self, w: WorkerProc, why: str, mercy: float) -> None:
        """Ask a worker to finish its requests and exit; kill it after ``mercy``."""
        if w.retiring and w.kill_at:
            return
        w.retiring = why
        w.kill_at = time.monotonic() + mercy
        w.mercy = mercy
        self.kill(w, signal.SIGTERM)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is not None:
                self._exited(w, status)
            else:  # a service's child, or an orphan reparented to us (PID 1, subreaper)
                self.services.reaped(pid, status)

    def _carry(self, w: WorkerProc) -> None:
        """Keep a dead process's counters under its worker id (stats.py)."""
        carried = self.carried.setdefault(w.id, [0, 0, 0, 0.0, 0])
        for core in w.cores():
            carried[0] += core.requests
            carried[1] += core.exceptions
            carried[2] += core.tx
            carried[3] += core.rt_total
            carried[4] += core.rt_count

    def _exited(self, w: WorkerProc, status: int) -> None:
        slot_state = w.slot.state
        self._carry(w)
        if slot_state == STOPPING and not w.retiring and reqlog.json_mode:
            # It recycled itself and exited before _watch saw it stopping.
            event("recycle", "%s recycling" % w.name(), worker=w.id, worker_pid=w.pid,
                  reason=self._recycle_reason(w))
        w.board.release(w.index)
        how = describe_status(status)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        fields = {"worker": w.id, "worker_pid": w.pid, "generation": w.generation,
                  "status": how}
        respawning = w.generation == self.generation and not self.spawn_disabled
        if w.killed_for:
            event("death", "%s %s (%s)" % (w.name(), how, w.killed_for), "error",
                  reason=w.killed_for, **fields)
        elif w.retiring:
            event("death", "%s exited (%s; %s)" % (w.name(), w.retiring, how),
                  reason=w.retiring, **fields)
        elif not w.booted and slot_state == BOOTING and not self.stopping:
            self._boot_failed(w, code, how)
            return
        elif code == 0 and slot_state == STOPPING:
            event("death", "%s stopped (recycled or told to stop)%s" % (
                w.name(), "; respawning" if respawning else ""), reason="recycled",
                respawning=respawning, **fields)
        else:
            event("death", "%s died (%s)%s" % (w.name(), how, "; respawning" if respawning
                                               else ""), "error", reason="died",
                  respawning=respawning, **fields)
        if w.generation == self.generation and w.retiring in ("", "recycled"):
            self.counts.setdefault(w.id, [0, 0])[0] += 1

    def _boot_failed(self, w: WorkerProc, code: int, how: str) -> None:
        self.boot_failures += 1
        reloading = any(o.generation < self.generation for o in self.workers.values())
        if self.ready and not reloading:
            # Running for a while (e.g. lazy-apps after a bad deploy): keep
            # serving with the others and keep retrying, slower and slower.
            delay = min(0.1 * 2 ** (self.boot_failures - 1), 10.0)
            event("death", "%s died while booting (%s); retrying in %.1fs" % (
                w.name(), how, delay), "error", worker=w.id, worker_pid=w.pid,
                reason="died while booting", status=how, retry_in=delay)
            self.next_spawn = time.monotonic() + delay
            return
        if code == exitcodes.APP_LOAD_ERROR:
            # An import error does not go away by retrying.
            reason = "the app failed to load in %s" % w.name()
            if reloading:
                return self._reload_failed(reason)
            log.error("%s; stopping (exit %d)" % (reason, exitcodes.APP_LOAD_ERROR))
            return self._give_up(exitcodes.APP_LOAD_ERROR)
        if self.boot_failures >= BOOT_FAILURES_MAX:
            reason = "%d workers in a row died while booting (last: %s, %s)" % (
                self.boot_failures, w.name(), how)
            if reloading:
                return self._reload_failed(reason)
            log.error("%s; giving up: check the log above for the cause" % reason)
            return self._give_up(exitcodes.WORKER_BOOT_ERROR)
        delay = min(0.1 * 2 ** (self.boot_failures - 1), 5.0)
        event("death", "%s died while booting (%s); retrying in %.1fs" % (w.name(), how, delay),
              "error", worker=w.id, worker_pid=w.pid, reason="died while booting",
              status=how, retry_in=delay)
        self.next_spawn = time.monotonic() + delay

    def _give_up(self, code: int) -> None:
        self.exit_code = code
        self.handle_int()

    def _reload_failed(self, reason: str) -> None:
        self.spawn_disabled = reason
        event("reload", "reload failed: %s; the old workers keep serving (fix it and send "
              "SIGHUP again)" % reason, "error", phase="failed", reason=reason)
        for w in list(self.workers.values()):
            if w.generation == self.generation:
                self._retire(w, "failed reload", self.worker_mercy)
        self.ready = True
        self.notifier.ready("reload failed: %s; serving with the old workers" % reason)

    def spawn(self, worker_id: int) -> WorkerProc | None:
        index = self.board.allocate()
        if index is None:
            log.rate_limited("scoreboard-full", "cannot start worker %d: all %d scoreboard "
                             "slots are in use" % (worker_id, self.board.capacity),
                             level="ERROR")
            return None
        self.board.reset(index, worker_id, self.generation)
        slot = self.board.workers[index]
        respawns, harakiris = self.counts.setdefault(worker_id, [0, 0])
        slot.respawn_count, slot.harakiri_count = respawns, harakiris
        slot.last_spawn = time.time()
        # Blocked across fork: a signal sent to the new pid before it has
        # reset the master's handlers would otherwise be swallowed by them.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        log.flush_std()  # or each worker would write out a copy of what is buffered
        try:
            pid = os.fork()
            if pid == 0:
                self._child(worker_id, index)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        slot.pid = pid
        w = WorkerProc(pid, worker_id, index, self.generation, self.board, time.monotonic())
        self.workers[pid] = w
        event("spawn", "spawned %s" % w.name(), worker=worker_id, worker_pid=pid,
              generation=self.generation)
        return w

    def _child(self, worker_id: int, index: int) -> None:
        code = exitcodes.WORKER_BOOT_ERROR
        slot = self.board.workers[index]
        try:
            signal.set_wakeup_fd(-1)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self.stats is not None:
                self.stats.close_in_child()
            if not stop_with_parent(self.pid):
                log.exit_now(0)  # the master died before we could ask
            self.notifier.close()
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)
            slot.pid = os.getpid()
            ctx = self.ctx
            if ctx is None:  # lazy-apps: import after fork, in this worker
                ctx = self.make_ctx()
                if ctx is None:
                    code = exitcodes.APP_LOAD_ERROR
                    return
            ctx.worker_id = worker_id
            ctx.cores = self.board.cores_of(index)
            ctx.track_requests = bool(self.harakiri)
            worker = worker_class(ctx.kind)(ctx, self.listeners, self.threads, slot,
                                            Limits.from_config(self.cfg, worker_id),
                                            verbose_dump=self.cfg.harakiri_verbose)
            worker.install_signals()
            code = 1
            worker.run()
            code = 0
        except BaseException:
            log.exception("worker %d (pid %d) failed" % (worker_id, os.getpid()))
        finally:
            log.exit_now(code)

    # -- the periodic work -------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        self.notifier.watchdog(now)
        for w in list(self.workers.values()):
            self._watch(w, now)
        if self.harakiri:
            self.harakiri_check.check(now)
        if self.stats is not None:
            self.stats.tick(now)
        self.services.tick(now)
        if not self.stopping:
            self._manage(now)
            self._check_generation()
        for board in self.boards[1:]:
            if not any(w.board is board for w in self.workers.values()):
                self.boards.remove(board)  # the last worker of an old image is gone
                board.close()

    def _watch(self, w: WorkerProc, now: float) -> None:
        state = w.slot.state
        if not w.booted and state in (ACCEPTING, STOPPING):
            w.booted = True
            if w.generation == self.generation:
                self.boot_failures = 0
        if state == STOPPING and not w.retiring:
            # It recycles itself (max-requests, reload-on-*); a replacement
            # is forked right away by _manage.
            w.retiring = "recycled"
            w.kill_at = now + self.worker_mercy
            w.mercy = self.worker_mercy
            if reqlog.json_mode:  # as text, the worker has logged why already
                event("recycle", "%s recycling" % w.name(), worker=w.id,
                      worker_pid=w.pid, reason=self._recycle_reason(w))
        if w.kill_at and now >= w.kill_at and not w.killed_for:
            w.killed_for = "did not stop within %gs (%s)" % (w.mercy, w.retiring)
            if self.stopping != "immediate":
                log.warning("%s %s; killing it" % (w.name(), w.killed_for))
            self.kill(w, signal.SIGKILL)

    def _recycle_reason(self, w: WorkerProc) -> str:
        """Why a worker stopped itself, from its limits and scoreboard slot (the
        worker's own log line says it in words; this is for the JSON event)."""
        limits = Limits.from_config(self.cfg, w.id)
        return limits.exceeded(sum(c.requests for c in w.cores()), w.slot.rss,
                               w.slot.vsz) or "recycled"

    def _manage(self, now: float) -> None:
        current = [w for w in self.workers.values()
                   if w.generation == self.generation and not w.retiring]
        if len(current) > self.target:
            for w in sorted(current, key=lambda w: w.id)[self.target:]:
                self._retire(w, "SIGTTOU", self.worker_mercy)
            return
        if self.spawn_disabled or now < self.next_spawn:
            return
        used = {w.id for w in current}
        for worker_id in range(1, self.target + 1):
            if worker_id not in used:
                if self.spawn(worker_id) is None:
                    return
                if self.boot_failures:
                    return  # one at a time while backing off

    def _check_generation(self) -> None:
        current = [w for w in self.workers.values()
                   if w.generation == self.generation and not w.retiring]
        if self.ready or self.spawn_disabled:
            return
        if len(current) < self.target or not all(w.booted for w in current):
            return
        self.ready = True
        old = [w for w in self.workers.values() if w.generation < self.generation]
        status = "%d worker%s on %s" % (self.target, "s" if self.target > 1 else "",
                                         self.sockets_text)
        if old:
            event("reload", "reloaded in %.2fs: generation %d accepts (%s); retiring %d old "
                  "workers" % (time.monotonic() - self.reload_started, self.generation,
                               status, len(old)), phase="done", generation=self.generation,
                  seconds=round(time.monotonic() - self.reload_started, 3))
            for w in old:
                self._retire(w, "reload", self.reload_mercy)
        else:
            log.info("ready to accept requests: %s (threads: %d)" % (status, self.threads))
        self.notifier.ready(status)
        self.services.generation_ready(reloaded=bool(old))
        if self.reload_pending:
            self.reload_pending = False
            self.reexec()

    # -- reload ------------------------------------------------------------------

    def reexec(self) -> None:
        """Replace this image with a fresh one that adopts sockets and workers."""
        event("reload", "SIGHUP: graceful reload: starting a fresh master image (same pid); "
              "the current workers keep serving until the new ones accept",
              phase="start", generation=self.generation + 1)
        self.notifier.reloading()
        key = {id(b): str(i) for i, b in enumerate(self.boards)}
        now = time.monotonic()
        handover = Handover(
            generation=self.generation,
            listeners=[HandedListener(l.fileno(), l.path, l.spec, l.protocol)
                       for l in self.listeners],
            boards={key[id(b)]: HandedBoard(*b.describe()) for b in self.boards},
            workers=[w.handed(key[id(w.board)], now) for w in self.workers.values()
                     if not w.killed_for],
            counts=self.counts, carried=self.carried, vacuum=vacuum.state(),
            services=self.services.hand_over())
        try:
            handover.exec(block=SIGNALS)  # returns only if it failed
        except OSError as exc:
            self.reload_workers("cannot re-execute %s: %s" % (sys.executable, exc))

    def reload_workers(self, why: str) -> None:
        """Fallback reload without re-exec: a new generation of workers forked
        from this master, then the old ones retire. With lazy-apps they import
        the app afresh; otherwise they run the app this master loaded."""
        log.warning("%s; reloading the workers only%s" % (why, "" if self.lazy else
                    " (the app loaded in the master is not re-imported: use "
                    "lazy-apps, or let the uid/gid user execute the interpreter)"))
        self.generation += 1
        self.ready = False
        self.spawn_disabled = ""
        self.boot_failures = 0
        self.reload_started = time.monotonic()
