"""The master's cron: uWSGI's ``cron``, ``unique-cron``, ``cron2`` and ``cron-harakiri``.

Each minute the schedule (cronsched.py) says which jobs are due; the master
starts each as ``/bin/sh -c COMMAND`` (posix_spawn: nothing of the master's
Python runs in the child) from its working directory (``chdir``), with its
uid/gid and environment, stdin on /dev/null, in a process group of its own
(so cron-harakiri and a stop reach the shell's children too). Its stdout and
stderr go through a pipe the master reads without blocking from its select
loop (``fds``/``readable``) into the log, as ``[cron N] line``. Logged:
each start, each exit status and run time, a run skipped because the last
one still runs (``unique``), a run started although the last one still
runs (not unique), a run killed by cron-harakiri, and runs missed while the
master was busy or suspended (a gap of up to CATCH_UP minutes -- a slow
reload -- runs the missed job once, late).

A reload (SIGHUP re-exec) does not touch the runs: their pids, start times,
harakiri deadlines and output pipes are handed to the new image, which
reaps them, logs their ends and keeps unique-cron and cron-harakiri in force;
the schedule's last minute is handed over too, so nothing runs twice. A
stop sends SIGTERM to each run's process group, SIGKILL after reload-mercy
(1 s on an immediate stop); the master waits for them (``busy``).

A job is numbered by its place in the configuration: the ``cron`` lines,
then ``unique-cron``, then ``cron2``. The stats document lists them as
``crons``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from .. import log
from ..config import cronspec
from ..config.cronspec import CronSpec
from ..observe.reqlog import event
from .cronsched import CLOCK_ENV, Clock, Schedule, ShiftedClock, Step
from .servicebase import MasterService
from .workerproc import describe_status

CATCH_UP = 5  # minutes: a shorter gap runs a missed job once, late
IMMEDIATE_WAIT = 1.0  # seconds before SIGKILL on an immediate stop
READ_SIZE = 65536
LONGEST_LINE = 8192  # longer output without a newline is logged in pieces
SHELL = "/bin/sh"
# Not the jobs' business: systemd's and the test clock's variables.
PRIVATE_ENV = (CLOCK_ENV, "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
               "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass
class Run:
    """One running command: a process group led by ``pid``."""

    pid: int
    started: float  # time.monotonic() (system-wide: valid across the re-exec)
    started_wall: float  # time.time()
    harakiri_at: float = 0.0  # monotonic deadline; 0: none
    killed_for: str = ""
    fd: int = -1  # the read end of its output pipe; -1: closed


@dataclass
class Job:
    """A configured job and what it did; ``number`` 0 is a job a reload removed."""

    number: int
    option: str  # cron, unique-cron or cron2
    spec: CronSpec
    runs: list[Run] = field(default_factory=list)
    started: int = 0  # runs started
    skipped: int = 0
    missed: int = 0
    last_run: float = 0.0  # time.time() of the last start
    last_status: str = ""
    last_code: int | None = None

    @property
    def label(self) -> str:
        return "cron %d" % self.number if self.number else "cron (removed)"

    @property
    def key(self) -> str:
        return "%s %s" % (self.option, cronspec.canonical(self.spec, self.option))


@dataclass
class Pipe:
    label: str
    pid: int
    buf: bytes = b""


class CronService(MasterService):
    """The cron jobs as a master service (servicebase.MasterService's hooks)."""

    name = "crons"

    def __init__(self, jobs: list[Job], clock: Clock, harakiri: int, mercy: float):
        self.jobs = jobs
        self.schedule = Schedule([j.spec for j in jobs], clock)
        self.harakiri = harakiri
        self.mercy = mercy
        self.leftovers: list[Job] = []  # running jobs a reload took out of the config
        self.pipes: dict[int, Pipe] = {}
        self.stopping = False
        self.kill_at = 0.0

    # -- the schedule ----------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self.stopping:
            step = self.schedule.step()
            if step:
                self._apply(step)
        for job in self.jobs + self.leftovers:
            for run in job.runs:
                if run.harakiri_at and now >= run.harakiri_at and not run.killed_for:
                    run.killed_for = "cron-harakiri: running for more than %ds" % round(
                        run.harakiri_at - run.started)
                    _say("warning", "%s (pid %d): %s; killing its process group" % (
                        job.label, run.pid, run.killed_for), job=job.number, job_pid=run.pid)
                    _killpg(run.pid, signal.SIGKILL)
                elif self.stopping and self.kill_at and now >= self.kill_at \
                        and not run.killed_for:
                    run.killed_for = "did not stop within %gs of SIGTERM" % self.mercy
                    _say("warning", "%s (pid %d) %s; killing its process group" % (
                        job.label, run.pid, run.killed_for), job=job.number, job_pid=run.pid)
                    _killpg(run.pid, signal.SIGKILL)

    def deadline(self, now: float) -> float | None:
        wait = self.schedule.until_next() + 0.002 if not self.stopping else None
        deadlines = [run.harakiri_at for job in self.jobs + self.leftovers
                     for run in job.runs if run.harakiri_at and not run.killed_for]
        if self.stopping and self.kill_at:
            deadlines.append(self.kill_at)
        if deadlines:
            soonest = max(0.0, min(deadlines) - now)
            wait = soonest if wait is None else min(wait, soonest)
        return wait

    def _apply(self, step: Step) -> None:
        if step.note:
            _say("warning", "cron: %s" % step.note)
        starts: set[int] = set(step.run)
        legion = {i for i, job in enumerate(self.jobs) if job.spec.legion}  # never run
        for i in legion:
            step.missed.pop(i, None)
            step.late.pop(i, None)
        for i, (count, last) in sorted(step.missed.items()):
            job = self.jobs[i]
            job.missed += count
            runs = "%d run%s" % (count, "" if count == 1 else "s")
            busy = "the master was busy or suspended for %d minute%s" % (
                step.gap, "" if step.gap == 1 else "s")
            if i in step.run:
                text = "%s missed (%s; last due %s); it runs now as scheduled" % (
                    runs, busy, last.strftime("%H:%M"))
            elif step.gap <= CATCH_UP:
                text = "missed its run due at %s (%s); running it now, late" % (
                    last.strftime("%H:%M"), busy)
                starts.add(i)
            else:
                text = "%s missed (%s; last due %s); not run" % (
                    runs, busy, last.strftime("%Y-%m-%d %H:%M"))
            _say("warning", "%s: %s" % (job.label, text), job=job.number, missed=count)
        for i, wall in sorted(step.late.items()):
            _say("warning", "%s: due at %s, which the clock skipped (a DST change); "
                 "running it now" % (self.jobs[i].label, wall.strftime("%H:%M")),
                 job=self.jobs[i].number)
            starts.add(i)
        for i in sorted(starts):
            self._start(self.jobs[i])

    def _start(self, job: Job) -> None:
        if job.spec.legion:
            return  # not supported: said at start-up (cronspec.parse_cron2)
        if job.runs:
            last = job.runs[-1]
            since = time.strftime("%H:%M:%S", time.localtime(last.started_wall))
            if job.spec.unique:
                job.skipped += 1
                _say("warning", "%s: skipped: the run started at %s (pid %d) is still "
                     "going (unique)" % (job.label, since, last.pid), job=job.number,
                     job_pid=last.pid)
                return
            _say("warning", "%s: the run started at %s (pid %d) is still going; starting "
                 "another (unique-cron would skip it)" % (job.label, since, last.pid),
                 job=job.number, job_pid=last.pid)
        run = self._spawn(job)
        if run is None:
            return
        job.runs.append(run)
        job.started += 1
        job.last_run = run.started_wall
        _say("info", '%s: running "%s" (pid %d)' % (job.label, job.spec.command, run.pid),
             job=job.number, job_pid=run.pid)

    def _spawn(self, job: Job) -> Run | None:
        for fd in self.pipes:  # a failed re-exec left them inheritable
            os.set_inheritable(fd, False)
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds() if fd != w]
        try:
            os.set_blocking(w, True)  # the job's own writes block, as on any pipe
            pid = os.posix_spawn(SHELL, [SHELL, "-c", job.spec.command], env,
                                 file_actions=actions, setpgroup=0, setsigmask=(),
                                 setsigdef=_DEFAULT_SIGNALS)
        except OSError as exc:
            os.close(r)
            _say("error", "%s: cannot run %s: %s" % (job.label, SHELL, exc), job=job.number)
            job.last_status, job.last_code = "not started: %s" % exc.strerror, None
            return None
        finally:
            os.close(w)
        self.pipes[r] = Pipe(job.label, pid)
        now = time.monotonic()
        harakiri = job.spec.harakiri if job.spec.harakiri is not None else self.harakiri
        return Run(pid, now, time.time(), now + harakiri if harakiri else 0.0, fd=r)

    # -- children and their output ---------------------------------------------

    def reaped(self, pid: int, status: int) -> bool:
        for job in self.jobs + self.leftovers:
            for run in job.runs:
                if run.pid == pid:
                    job.runs.remove(run)
                    self._ended(job, run, status)
                    if not job.number and not job.runs:
                        self.leftovers.remove(job)
                    return True
        return False

    def _ended(self, job: Job, run: Run, status: int) -> None:
        if run.fd in self.pipes:
            self._drain(run.fd)  # its last lines before its end
        how = describe_status(status)
        job.last_status = how + (" (%s)" % run.killed_for if run.killed_for else "")
        job.last_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else \
            -os.WTERMSIG(status)
        seconds = time.monotonic() - run.started
        stopped = self.stopping and job.last_code == -signal.SIGTERM and not run.killed_for
        level = "info" if job.last_code == 0 or stopped else "warning"
        _say(level, "%s (pid %d): %s after %.1fs" % (job.label, run.pid, job.last_status,
                                                     seconds),
             job=job.number, job_pid=run.pid, status=how, code=job.last_code,
             seconds=round(seconds, 3))

    def fds(self) -> list[int]:
        return list(self.pipes)

    def readable(self, fds: list[int]) -> None:
        for fd in fds:
            if fd in self.pipes:
                self._read(fd)

    def _drain(self, fd: int) -> None:
        for _ in range(64):  # what is in the pipe now, never waiting for more
            if not self._read(fd):
                return

    def _read(self, fd: int) -> bool:
        """One read; False when nothing more is there now (or ever)."""
        pipe = self.pipes[fd]
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # every writer is gone (the job and whatever it left behind)
            if pipe.buf:
                self._line(pipe, pipe.buf)
            os.close(fd)
            del self.pipes[fd]
            return False
        lines = (pipe.buf + data).split(b"\n")
        pipe.buf = lines.pop()
        for line in lines:
            self._line(pipe, line)
        while len(pipe.buf) > LONGEST_LINE:
            self._line(pipe, pipe.buf[:LONGEST_LINE])
            pipe.buf = pipe.buf[LONGEST_LINE:]
        return True

    @staticmethod
    def _line(pipe: Pipe, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "backslashreplace")
        _say("info", "[%s] %s" % (pipe.label, text), job_pid=pipe.pid, output=True)

    # -- stop, reload, stats ---------------------------------------------------

    def stop(self, immediate: bool) -> None:
        if self.stopping and not immediate:
            return
        self.stopping = True
        mercy = IMMEDIATE_WAIT if immediate else self.mercy
        self.kill_at = min(self.kill_at or float("inf"), time.monotonic() + mercy)
        self.mercy = min(self.mercy, mercy)
        for job in self.jobs + self.leftovers:
            for run in job.runs:
                if not run.killed_for:
                    _say("info", "%s (pid %d): stopping it (SIGTERM to its process group)"
                         % (job.label, run.pid), job=job.number, job_pid=run.pid)
                    _killpg(run.pid, signal.SIGTERM)

    def generation_ready(self, reloaded: bool) -> None:
        pass

    def busy(self) -> bool:
        return any(job.runs for job in self.jobs + self.leftovers)

    def hand_over(self) -> dict:
        for fd in self.pipes:
            os.set_inheritable(fd, True)  # the next image reads them on
        jobs = []
        for job in self.jobs + self.leftovers:
            jobs.append({"key": job.key, "started": job.started, "skipped": job.skipped,
                         "missed": job.missed, "last_run": job.last_run,
                         "last_status": job.last_status, "last_code": job.last_code,
                         "runs": [[r.pid, r.started, r.started_wall, r.harakiri_at,
                                   r.killed_for, r.fd] for r in job.runs]})
        pipes = [[fd, p.label, p.pid, p.buf.decode("latin-1")] for fd, p in self.pipes.items()]
        return {"schedule": self.schedule.state(), "jobs": jobs, "pipes": pipes}

    def adopt(self, state: dict) -> None:
        self.schedule.restore(state.get("schedule") or {})
        for fd, label, pid, buf in state.get("pipes", []):
            try:
                os.set_inheritable(fd, False)
                os.set_blocking(fd, False)
            except OSError:
                continue
            self.pipes[fd] = Pipe(label, pid, buf.encode("latin-1"))
        free = list(self.jobs)
        for item in state.get("jobs", []):
            job = next((j for j in free if j.key == item["key"]), None)
            runs = [Run(*r) for r in item.get("runs", [])]
            if job is None:
                if not runs:
                    continue
                option, _, text = item["key"].partition(" ")
                job = Job(0, option, cronspec.parse(text, option))
                self.leftovers.append(job)
                _say("info", "cron: the job %r is no longer configured; its run (pid %s) "
                     "is left to finish" % (job.spec.command, ", ".join(
                         str(r.pid) for r in runs)))
            else:
                free.remove(job)
            job.runs = runs
            job.started, job.skipped, job.missed = item["started"], item["skipped"], \
                item["missed"]
            job.last_run, job.last_status, job.last_code = item["last_run"], \
                item["last_status"], item["last_code"]
            for run in runs:  # its pipe now says whose output it is
                if run.fd in self.pipes:
                    self.pipes[run.fd].label = job.label

    def stats(self) -> list:
        out = []
        for job in self.jobs:
            harakiri = job.spec.harakiri if job.spec.harakiri is not None else self.harakiri
            out.append({
                "id": job.number, "option": job.option, "command": job.spec.command,
                "schedule": job.spec.schedule, "unique": job.spec.unique,
                "harakiri": harakiri, "legion": job.spec.legion,
                "last_run": int(job.last_run), "last_status": job.last_status,
                "last_code": job.last_code,
                "pid": job.runs[-1].pid if job.runs else 0,
                "running": [r.pid for r in job.runs],
                "runs": job.started, "skipped": job.skipped, "missed": job.missed,
            })
        return out


_DEFAULT_SIGNALS = [s for s in signal.valid_signals()
                    if s not in (signal.SIGKILL, signal.SIGSTOP)]


def _inherited_fds() -> list[int]:
    """Descriptors above 2 an exec would pass on: the master's own are
    close-on-exec; these came from whoever started it (a shell, a CI runner)
    and are none of a job's business."""
    found = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:  # (the listing's own descriptor, closed by now)
            pass
    return found


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)  # it left its group (setsid): at least the leader
        except OSError:
            pass


def _say(level: str, msg: str, **fields) -> None:
    event("cron", msg, level, **fields)


def from_config(cfg, master) -> CronService | None:
    """The cron jobs of ``cfg`` (cron, unique-cron, cron2), or None if none."""
    jobs: list[Job] = []
    for option, texts in (("cron", cfg.cron), ("unique-cron", cfg.unique_cron),
                          ("cron2", cfg.cron2)):
        for text in texts:
            jobs.append(Job(len(jobs) + 1, option, cronspec.parse(text, option)))
    if not jobs:
        return None
    try:
        clock = Clock.from_env()
    except ValueError as exc:
        log.error("cron: %s; using the real clock" % exc)
        clock = Clock()
    if isinstance(clock, ShiftedClock):
        log.warning("cron: test clock from %s (%s): for the test suite only"
                    % (CLOCK_ENV, clock.describe()))
    return CronService(jobs, clock, cfg.cron_harakiri, float(cfg.or_default("reload_mercy")))
