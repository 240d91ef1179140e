"""Attached daemons: uWSGI's attach-daemon family as a master service.

What a container's only process must do for the commands next to the app
(queue workers, mail runners, schedulers), the way uWSGI's users expect it:

- each daemon is started once the first generation of workers accepts, as
  ``/bin/sh -c COMMAND`` from the server's directory, in a session (process
  group) of its own, with stdin on /dev/null (``daemons-honour-stdin``,
  ``stdin=1``: the master's) and stdout/stderr on one pipe the master reads
  without blocking (its select waits on it: services.py ``fds``), each line
  logged as ``[daemon N COMMAND] line``;
- a daemon that exits is started again, at once if it ran for a while,
  after 1, 2, 4 ... seconds (at most ``max_throttle``, default 60) while it
  keeps dying within 10 s of its start; each exit is logged with its status.
  When it failed, what it left running (even ``setsid`` processes) is
  stopped, as systemd does for a service's control group; when it exited 0
  leaving processes (``setsid cmd``, ``cmd &``: it meant to detach), those
  are followed and it starts again once they are all gone (uWSGI would start
  it again at once, piling up copies); ``control=1``: its exit stops the
  server instead;
- a graceful reload keeps every daemon and its pipe across the master's
  re-exec (handed over, same pid as parent); once the new workers accept,
  ``attach-daemon`` processes are restarted (stop signal, then SIGKILL after
  ``reload-mercy``) so they run the deployed code, those with
  ``reloadsignal`` get that signal instead, and pidfile-governed
  (``smart-attach-daemon``) ones keep running with the same pid;
- at server stop each gets its stop signal (default SIGTERM) on its whole
  process group, and so does every process still carrying its marker
  (proctree.py: found through the master's subtree, the master being a
  child subreaper), then SIGKILL after ``reload-mercy``; the master waits
  (``busy``) until all are gone. Unlike uWSGI, smart daemons are stopped
  too: nothing the server started outlives it.

``smart-attach-daemon``'s command forks itself and writes PIDFILE; the
master checks the file once a second, and starts the command again when the
pid in it is gone (or none appears within ``freq`` seconds).
``smart-attach-daemon2``'s command does not fork: the master writes PIDFILE.
``touch=FILE;FILE``: a changed mtime restarts the daemon (its stop signal).
The stats document lists them under "daemons", uWSGI's key.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from .. import log
from ..config import daemonspec
from ..config.daemonspec import DaemonSpec
from ..observe.reqlog import event
from . import proctree
from .outpipes import OutPipes
from .servicebase import MasterService
from .workerproc import describe_status

MARKER = "_UWSGIGW_DAEMON"  # (not UWSGIGW_*: those are options) "<master pid>:<key>"
QUICK_DEATH = 10.0  # seconds: a daemon that dies sooner is started again after a back-off
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
CHECK_EVERY = 1.0  # pidfiles and touched files, as uWSGI does
SCAN_EVERY = 0.1  # the process tree, while waiting for processes to go
GIVE_UP_AFTER = 5.0  # seconds after SIGKILL: a process that cannot die is left (logged)
IMMEDIATE_MERCY = 1.0  # SIGINT/SIGQUIT stop: the master's IMMEDIATE_STOP_WAIT
# systemd's words to the master alone: a daemon must not notify or take sockets for it
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES")


def from_config(cfg, master) -> "Daemons":
    """The service, also without daemons: a reloaded image whose configuration
    no longer has any must still stop those its predecessor handed over."""
    specs = []
    for kind in daemonspec.KINDS:
        for text in getattr(cfg, kind.replace("-", "_")) or ():
            try:
                specs.append(daemonspec.parse(kind, text))
            except ValueError as exc:  # checked at start-up already; never crash here
                log.error("%s = %s: %s; not started" % (kind, text, exc))
    if specs and not proctree.become_subreaper():
        log.warning("cannot become a child subreaper: processes that attached daemons "
                    "detach (setsid, double fork) may outlive the server")
    return Daemons(specs, master, float(cfg.or_default("reload_mercy")),
                   bool(cfg.daemons_honour_stdin))


@dataclass
class Daemon:
    spec: DaemonSpec
    key: str
    number: int  # 1, 2 ... in the order of the configuration
    pid: int = 0  # the process: our child, or the pid in a smart daemon's pidfile
    launcher: int = 0  # smart-attach-daemon: the command we ran, until it exits
    spawns: int = 0
    started: float = 0.0  # time.monotonic() of the last start (system-wide: survives exec)
    started_wall: float = 0.0
    status: str = "idle"  # idle, running, waiting, restarting, stopping, stopped
    fails: int = 0  # quick deaths in a row
    next_start: float = 0.0
    kill_at: float = 0.0  # SIGKILL its group then (restarting, stopping)
    checks: int = 0  # smart: seconds without a live pid in the pidfile
    monitored: bool = False  # smart: a live pid was seen in the pidfile
    last_exit: str = ""
    mtimes: dict = field(default_factory=dict)
    retired: bool = False  # no longer configured (after a reload): stop, never restart
    detached: list = field(default_factory=list)  # what it left when it exited 0 (followed)

    @property
    def label(self) -> str:
        words = self.spec.command.split()
        text = " ".join(words[:3]) + (" ..." if len(words) > 3 else "")
        return "daemon %d %s" % (self.number, text[:60])

    def describe(self) -> str:
        return 'daemon %d "%s"' % (self.number, self.spec.command)

    def children(self) -> list[int]:
        return [p for p in (self.pid if not self.spec.smart or self.spec.daemonize else 0,
                            self.launcher) if p]


class Daemons(MasterService):
    """The attached daemons as a master service (servicebase.MasterService's hooks)."""

    name = "daemons"

    def __init__(self, specs: list[DaemonSpec], master, mercy: float, honour_stdin: bool):
        self.master = master
        self.mercy = mercy
        self.honour_stdin = honour_stdin
        self.marker = "%d:" % os.getpid()
        seen: dict[str, int] = {}
        self.daemons: list[Daemon] = []
        for number, spec in enumerate(specs, 1):
            nth = seen[spec.key()] = seen.get(spec.key(), -1) + 1
            self.daemons.append(Daemon(spec, spec.key(nth), number))
        self.out = OutPipes()
        self.condemned: dict[int, float] = {}  # pid -> SIGKILL time (left-over processes)
        self.killed: dict[int, float] = {}  # pid -> when SIGKILL was sent to it
        self.started = False
        self.adopted = False
        self.stopping = False
        self.next_check = 0.0
        self.next_scan = 0.0

    # -- starting ----------------------------------------------------------------

    def generation_ready(self, reloaded: bool) -> None:
        if self.stopping:
            return
        if not self.started:
            self.started = True
            for d in self.daemons:
                self._first_start(d)
            return
        if not (reloaded or self.adopted):
            return
        self.adopted = False
        now = time.monotonic()
        for d in self.daemons:
            if d.retired:
                self._stop_one(d, now, self.mercy, "no longer configured")
            elif d.status == "idle":
                self._first_start(d)  # new in the reloaded configuration
            elif d.spec.smart:
                if d.spec.notifypid and d.pid:
                    proctree.signal_group(d.pid, d.spec.reload_signal or signal.SIGHUP)
            elif d.spec.reload_signal and (d.pid or d.detached):
                log.info("%s (pid %s): reload: sending it signal %d" % (
                    d.describe(), d.pid or _pids(d.detached), d.spec.reload_signal))
                for pid in [d.pid] if d.pid else d.detached:
                    proctree.signal_group(pid, d.spec.reload_signal)
            elif d.status in ("running", "detached") and (d.pid or d.detached):
                log.info("%s (pid %s): reload: restarting it to run the deployed code" % (
                    d.describe(), d.pid or _pids(d.detached)))
                self._ask_to_stop(d, now, self.mercy, "restarting")

    def _first_start(self, d: Daemon) -> None:
        if d.spec.smart and not d.spec.daemonize:
            pid = _read_pid(d.spec.pidfile)
            if pid and proctree.alive(pid):
                log.info("%s: found a live pid %d in %s; following it" % (
                    d.describe(), pid, d.spec.pidfile))
                d.pid, d.monitored, d.status = pid, True, "running"
                d.started, d.started_wall = time.monotonic(), time.time()
                return
        self._spawn(d)

    def _spawn(self, d: Daemon) -> None:
        spec = d.spec
        try:
            read_fd, write_fd = self.out.open(d.label, d.number)
        except OSError as exc:
            return self._cannot_start(d, exc)
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ONLY}
        env[MARKER] = self.marker + d.key
        stdin = 0 if (self.honour_stdin or spec.stdin) else -1
        argv = ["/bin/sh", "-c", spec.command]
        log.flush_std()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
            if pid == 0:
                proctree.exec_in_session(argv, env, spec.chdir, stdin, write_fd,
                                         die_with_master=not spec.smart,
                                         master=self.master.pid)
        except OSError as exc:
            self.out.discard(read_fd)
            return self._cannot_start(d, exc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(write_fd)
        d.spawns += 1
        d.started, d.started_wall = time.monotonic(), time.time()
        d.status, d.kill_at, d.checks, d.monitored = "running", 0.0, 0, False
        d.detached = []
        if spec.smart and not spec.daemonize:
            d.launcher = pid
        else:
            d.pid = pid
            if spec.daemonize:
                _write_pid(spec.pidfile, pid, d)
        event("daemon", "%s %s (pid %d)" % ("started" if d.spawns == 1 else "restarted",
                                            d.describe(), pid),
              phase="spawn", daemon=d.number, daemon_pid=pid, command=spec.command)

    def _cannot_start(self, d: Daemon, exc: OSError) -> None:
        log.error("%s: cannot start it: %s; retrying in %gs" % (d.describe(), exc, MAX_DELAY))
        d.status, d.next_start = "waiting", time.monotonic() + MAX_DELAY

    # -- exits -------------------------------------------------------------------

    def reaped(self, pid: int, status: int) -> bool:
        for d in self.daemons:
            if pid == d.launcher:
                d.launcher = 0
                if status:
                    log.warning("%s: its command (pid %d) %s" % (
                        d.describe(), pid, describe_status(status)))
                return True
            if pid == d.pid:
                self._exited(d, status)
                return True
        if pid in self.condemned:
            del self.condemned[pid]
            self.killed.pop(pid, None)
            return True
        return False  # an orphan reaped by the master (PID 1, subreaper): nothing to do

    def _exited(self, d: Daemon, status: int) -> None:
        now = time.monotonic()
        how = describe_status(status)
        ran = now - d.started
        pid, d.pid, d.kill_at = d.pid, 0, 0.0
        d.last_exit = how
        fields = {"phase": "exit", "daemon": d.number, "daemon_pid": pid, "status": how,
                  "seconds": round(ran, 3)}
        left = self._left_by(d)
        if left and status == 0 and d.status == "running" and not (self.stopping or d.retired):
            d.status, d.detached = "detached", left  # setsid cmd, cmd &: it meant to detach
            event("daemon", "%s (pid %d) %s and left %s running: following %s; it starts "
                  "again once they are gone" % (d.describe(), pid, how, _pids(left),
                                                "them" if len(left) > 1 else "it"), **fields)
            return
        self._stop_leftovers(d, now, left)
        if self.stopping or d.status == "stopping" or d.retired:
            event("daemon", "%s (pid %d) %s" % (d.describe(), pid, how), **fields)
            d.status = "stopped"
            return
        if d.spec.control:
            event("daemon", "%s (pid %d) %s; it is a control daemon: stopping the server" % (
                d.describe(), pid, how), "error", **fields)
            d.status = "stopped"
            os.kill(self.master.pid, signal.SIGTERM)
            return
        if d.status == "restarting":
            event("daemon", "%s (pid %d) %s; starting it again" % (d.describe(), pid, how),
                  restart_in=0, **fields)
            delay = 0.0
        else:
            delay = self._backoff(d, ran)
            event("daemon", "%s (pid %d) %s after %.1fs; %s" % (
                d.describe(), pid, how, ran,
                "starting it again in %gs" % delay if delay else "starting it again"),
                "warning", restart_in=delay, **fields)
        d.status, d.next_start = "waiting", now + delay

    def _backoff(self, d: Daemon, ran: float) -> float:
        if ran >= QUICK_DEATH:
            d.fails = 0
            return 0.0
        d.fails += 1
        return min(FIRST_DELAY * 2 ** (d.fails - 1), float(d.spec.max_throttle or MAX_DELAY))

    def _left_by(self, d: Daemon) -> list[int]:
        """The processes still carrying ``d``'s marker (not yet condemned)."""
        if d.spec.smart and not d.spec.daemonize:
            return []  # its processes are meant to outlive the command
        return sorted(pid for pid, value in self._marked().items()
                      if value.endswith(":" + d.key) and pid not in self.condemned)

    def _stop_leftovers(self, d: Daemon, now: float, left: list[int]) -> None:
        """What a daemon left running when it failed (or was restarted) gets its
        stop signal, and SIGKILL after reload-mercy (systemd does the same)."""
        if not left:
            return
        log.warning("%s left %s running: sending signal %d" % (
            d.describe(), _pids(left), d.spec.stop_signal))
        mercy = IMMEDIATE_MERCY if self.stopping == "immediate" else self.mercy
        for pid in left:
            proctree.signal_group(pid, d.spec.stop_signal)
            self.condemned[pid] = now + mercy

    # -- the loop ----------------------------------------------------------------

    def tick(self, now: float) -> None:
        for d in self.daemons:
            if d.status == "waiting" and now >= d.next_start and not self.stopping \
                    and not d.retired:
                self._spawn(d)
            if d.kill_at and now >= d.kill_at:
                d.kill_at = 0.0
                for pid in d.children() or ([d.pid] if d.pid else []):
                    log.warning("%s (pid %d) did not stop within %gs; killing it" % (
                        d.describe(), pid, self.mercy if not self.stopping == "immediate"
                        else IMMEDIATE_MERCY))
                    proctree.signal_group(pid, signal.SIGKILL)
        for pid, kill_at in list(self.condemned.items()):
            if not proctree.alive(pid):
                del self.condemned[pid]
                self.killed.pop(pid, None)
            elif pid in self.killed:
                if now >= self.killed[pid] + GIVE_UP_AFTER:
                    log.error("pid %d does not die even from SIGKILL; leaving it" % pid)
                    del self.condemned[pid], self.killed[pid]
            elif now >= kill_at:
                log.warning("pid %d (left by an attached daemon) did not stop; killing it"
                            % pid)
                proctree.signal_group(pid, signal.SIGKILL)
                self.killed[pid] = now
        if now >= self.next_check and self.started and not self.stopping:
            self.next_check = now + CHECK_EVERY
            for d in self.daemons:
                if d.detached:
                    self._check_detached(d, now)
                if d.spec.smart and d.status == "running":
                    self._check_pidfile(d, now)
                if d.spec.touch and d.status == "running":
                    self._check_touch(d, now)
        if self.stopping and now >= self.next_scan:
            self.next_scan = now + SCAN_EVERY
            self._sweep(now)

    def deadline(self, now: float) -> float | None:
        times = [d.next_start for d in self.daemons if d.status == "waiting"]
        times += [d.kill_at for d in self.daemons if d.kill_at]
        if self.condemned or self.stopping:
            times.append(now + SCAN_EVERY)
        if self.started and any(d.spec.smart or d.spec.touch for d in self.daemons):
            times.append(self.next_check)
        return max(0.0, min(times) - now) if times else None

    def _check_pidfile(self, d: Daemon, now: float) -> None:
        pid = _read_pid(d.spec.pidfile)
        if pid and proctree.alive(pid):
            if d.pid and pid != d.pid:
                log.info("%s: the pid in %s changed from %d to %d" % (
                    d.describe(), d.spec.pidfile, d.pid, pid))
            d.pid, d.monitored, d.checks = pid, True, 0
            return
        if d.monitored:
            d.last_exit = "pid %d gone" % d.pid
            log.warning("%s: pid %d in %s is gone; %s" % (
                d.describe(), d.pid, d.spec.pidfile, "starting it again"))
            d.pid, d.monitored = 0, False
            d.status, d.next_start = "waiting", now + self._backoff(d, now - d.started)
            return
        d.checks += 1
        if d.checks >= max(d.spec.freq, 1):
            d.checks = 0
            if d.launcher:
                log.warning("%s: still no live pid in %s after %ds, and its command (pid "
                            "%d) is still running: does it daemonize?" % (
                                d.describe(), d.spec.pidfile, d.spec.freq, d.launcher))
                return
            log.warning("%s: no live pid in %s after %ds; starting it again" % (
                d.describe(), d.spec.pidfile, d.spec.freq))
            d.status, d.next_start = "waiting", now + self._backoff(d, now - d.started)

    def _check_detached(self, d: Daemon, now: float) -> None:
        """A detached daemon starts again once all it left is gone (a scan of
        the process tree only when the pids it is known by are gone)."""
        d.detached = [p for p in d.detached if proctree.alive(p)] or self._left_by(d)
        if not d.detached:
            log.info("%s: the processes it left are gone; starting it again" % d.describe())
            restart = d.status == "restarting"
            d.status = "waiting"
            d.next_start = now + (0.0 if restart else self._backoff(d, now - d.started))

    def _check_touch(self, d: Daemon, now: float) -> None:
        for path in d.spec.touch:
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                mtime = None
            before = d.mtimes.get(path, mtime)
            d.mtimes[path] = mtime
            if mtime != before and d.pid:
                log.info("%s has been touched: restarting %s (pid %d)" % (
                    path, d.describe(), d.pid))
                if d.spec.smart and not d.spec.daemonize:  # the pidfile check restarts it
                    proctree.signal_group(d.pid, d.spec.stop_signal)
                else:
                    self._ask_to_stop(d, now, self.mercy, "restarting")
                return

    # -- stopping ----------------------------------------------------------------

    def _ask_to_stop(self, d: Daemon, now: float, mercy: float, status: str) -> None:
        """The stop signal to the daemon's process group (a smart daemon's: to
        its command and to the pid in its pidfile); SIGKILL after ``mercy``."""
        d.status = status
        for pid in set(d.children() + [d.pid]) - {0}:
            proctree.signal_group(pid, d.spec.stop_signal)
        if d.detached:
            self._stop_leftovers(d, now, d.detached)  # followed until gone (tick)
        d.kill_at = now + mercy if d.children() else 0.0
        if d.spec.smart and d.pid and d.pid not in d.children():
            self.condemned.setdefault(d.pid, now + mercy)  # followed until it is gone

    def _stop_one(self, d: Daemon, now: float, mercy: float, why: str) -> None:
        if d.pid or d.launcher or d.detached:
            log.info("stopping %s (pid %s): %s" % (d.describe(), d.pid or d.launcher
                                                   or _pids(d.detached), why))
            self._ask_to_stop(d, now, mercy, "stopping")
        else:
            d.status = "stopped"

    def stop(self, immediate: bool) -> None:
        if not self.daemons or self.stopping == "immediate" or (self.stopping and not immediate):
            return
        self.stopping = "immediate" if immediate else "graceful"
        now = time.monotonic()
        mercy = IMMEDIATE_MERCY if immediate else self.mercy
        for d in self.daemons:
            self._stop_one(d, now, mercy, "server stop")
        self.next_scan = now
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        """While stopping: every process still carrying a daemon's marker (a
        setsid child, a late fork) gets its daemon's stop signal unless its
        process group got it already, and SIGKILL after the mercy."""
        groups = {p for d in self.daemons for p in d.children() + [d.pid] if p}
        mercy = IMMEDIATE_MERCY if self.stopping == "immediate" else self.mercy
        for pid, value in self._marked().items():
            if pid in self.condemned or pid in groups:
                continue
            d = self._by_key(value.partition(":")[2])
            try:
                signalled = os.getpgid(pid) in groups
            except OSError:
                continue
            if not signalled:
                proctree.signal_group(pid, d.spec.stop_signal if d else signal.SIGTERM)
            self.condemned[pid] = now + mercy

    def busy(self) -> bool:
        if not self.stopping:
            return False
        return bool(self.condemned) or any(d.children() for d in self.daemons)

    # -- output ------------------------------------------------------------------

    def fds(self) -> list[int]:
        return self.out.fds()

    def readable(self, fds: list[int]) -> None:
        self.out.read(fds)

    # -- reload and stats --------------------------------------------------------

    def hand_over(self) -> dict:
        now = time.monotonic()
        return {
            "started": self.started,
            "daemons": [{
                "key": d.key, "kind": d.spec.kind, "cmd": d.spec.command,
                "stopsignal": d.spec.stop_signal, "pidfile": d.spec.pidfile,
                "daemonize": d.spec.daemonize, "pid": d.pid, "launcher": d.launcher,
                "spawns": d.spawns, "started": d.started, "started_wall": d.started_wall,
                "status": d.status, "fails": d.fails, "wait": max(0.0, d.next_start - now),
                "kill_in": max(0.0, d.kill_at - now) if d.kill_at else None,
                "monitored": d.monitored, "last_exit": d.last_exit, "mtimes": d.mtimes,
                "detached": d.detached,
            } for d in self.daemons if d.status != "idle" or d.pid],
            "streams": self.out.hand_over(),
            "condemned": [[pid, max(0.0, at - now)] for pid, at in self.condemned.items()],
        }

    def adopt(self, state: dict) -> None:
        now = time.monotonic()
        self.started = bool(state.get("started"))
        self.adopted = self.started
        by_key = {d.key: d for d in self.daemons}
        for item in state.get("daemons", []):
            d = by_key.get(item["key"])
            if d is None:  # gone from the configuration: stopped once the workers accept
                spec = DaemonSpec(item["kind"], item["cmd"], pidfile=item.get("pidfile"),
                                  daemonize=bool(item.get("daemonize")),
                                  stop_signal=int(item.get("stopsignal") or signal.SIGTERM))
                d = Daemon(spec, item["key"], len(self.daemons) + 1, retired=True)
                self.daemons.append(d)
            d.pid, d.launcher = int(item.get("pid") or 0), int(item.get("launcher") or 0)
            d.spawns, d.fails = int(item.get("spawns", 0)), int(item.get("fails", 0))
            d.started, d.started_wall = item.get("started", now), item.get("started_wall", 0)
            d.status, d.monitored = item.get("status", "running"), bool(item.get("monitored"))
            d.next_start = now + float(item.get("wait") or 0)
            d.kill_at = now + float(item["kill_in"]) if item.get("kill_in") is not None else 0
            d.last_exit, d.mtimes = item.get("last_exit", ""), dict(item.get("mtimes") or {})
            d.detached = [int(p) for p in item.get("detached") or ()]
        self.out.adopt(state.get("streams", []))
        for pid, left in state.get("condemned", []):
            self.condemned[int(pid)] = now + float(left)

    def stats(self) -> list[dict] | None:
        """uWSGI's "daemons" list (cmd, pid, respawns) and what uwsgigw adds;
        None (no key, as in uWSGI) without daemons."""
        return None if not self.daemons else [{
                 "cmd": d.spec.command, "pid": d.pid or (d.detached or [0])[0],
                 "respawns": max(0, d.spawns - 1), "status": d.status, "kind": d.spec.kind, "pidfile": d.spec.pidfile or "",
                 "since": int(d.started_wall), "last_exit": d.last_exit}
                for d in self.daemons]

    # -- helpers -----------------------------------------------------------------

    def _marked(self) -> dict[int, str]:
        return proctree.marked(self.master.pid, MARKER, self.marker,
                               skip=set(self.master.workers))

    def _by_key(self, key: str) -> Daemon | None:
        return next((d for d in self.daemons if d.key == key), None)


def _pids(pids: list[int]) -> str:
    return "pid%s %s" % ("s" if len(pids) > 1 else "", ", ".join(map(str, pids)))


def _read_pid(path: str | None) -> int:
    try:
        with open(path or "", "rb") as f:
            text = f.read(64).strip()
        return int(text) if text.isdigit() else 0
    except (OSError, ValueError):
        return 0


def _write_pid(path: str, pid: int, d: Daemon) -> None:
    try:  # whole or not at all: a reader never sees it empty
        with open(path + ".tmp", "w") as f:
            f.write("%d\n" % pid)
        os.replace(path + ".tmp", path)
    except OSError as exc:
        log.error("%s: cannot write its pidfile %s: %s" % (d.describe(), path, exc.strerror))
