"""When cron jobs are due: uWSGI's matching rules, minute by minute, from a clock.

A job is due in a minute of local (wall-clock) time when every field matches,
as ``uwsgi_cron_task_needs_execution`` (``core/master_utils.c``) decides:
a field ``>= 0`` is that value, ``-N`` matches values that are multiples of N
(``-1``: any); weekday 7 is Sunday (0); when day *and* weekday are both given
(``>= 0``) either may match (crontab's rule), otherwise all must.

:class:`Schedule` looks at each real minute (epoch seconds // 60) once, so a
job fires at most once per minute however often the master ticks, and:

- the minutes the master did not look at (busy, suspended, a slow reload)
  are reported as missed, with the jobs that were due in them;
- a DST change that skips wall-clock time (02:00 -> 03:00) lets the jobs set
  to a fixed time in the gap run at once, late (as Vixie cron does); one that
  repeats an hour (03:00 -> 02:00) does not run the fixed-time jobs a second
  time -- jobs with a wildcard or step minute or hour run in every minute;
- a clock set back or jumped far ahead is noted, and nothing in between counted.

The clock is injectable (:class:`Clock`): tests drive the schedule through
any dates, DST changes and speeds without waiting for wall-clock minutes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..config.cronspec import CronSpec

MINUTE = timedelta(minutes=1)
MAX_GAP = 7 * 24 * 60  # minutes scanned for missed runs; beyond it: "jumped"
DST_JUMP = timedelta(hours=3)  # a larger forward jump of wall time is a clock set
CLOCK_ENV = "_UWSGIGW_CRON_CLOCK"  # tests only: see Clock.from_env


def matches(spec: CronSpec, wall: datetime) -> bool:
    """Is ``spec`` due in the minute of ``wall`` (naive local time)?"""
    wday = (wall.weekday() + 1) % 7  # tm_wday: Sunday 0

    def field_ok(value: int, actual: int) -> bool:
        return actual % -value == 0 if value < 0 else actual == value

    week = 0 if spec.week == 7 else spec.week
    if not (field_ok(spec.minute, wall.minute) and field_ok(spec.hour, wall.hour)
            and field_ok(spec.month, wall.month)):
        return False
    if spec.day >= 0 and spec.week >= 0:
        return wall.day == spec.day or wday == week
    return field_ok(spec.day, wall.day) and field_ok(week, wday)


class Clock:
    """Now, and the local wall-clock time of an instant.

    ``time()``: epoch seconds (``time.time``); ``local(ts)``: naive local
    datetime of epoch ``ts`` under the process's time zone (``TZ``);
    ``speed``: clock seconds per real second (1; a test clock runs faster).
    """

    speed = 1.0

    def time(self) -> float:
        return time.time()

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts)

    @staticmethod
    def from_env(environ=os.environ) -> "Clock":
        """The real clock, or -- for tests only, never documented as an option --
        the clock ``_UWSGIGW_CRON_CLOCK="REAL0 START SPEED"`` describes: at real
        epoch REAL0 it reads START and it runs SPEED times faster, so a test
        sees jobs fire within seconds. Being a function of the real time, it
        survives the master's re-exec (the variable stays in its environment).
        """
        text = environ.get(CLOCK_ENV, "")
        if not text:
            return Clock()
        try:
            real0, start, speed = (float(x) for x in text.split())
        except ValueError:
            raise ValueError("%s=%r: expected REAL0 START SPEED" % (CLOCK_ENV, text)) from None
        return ShiftedClock(real0, start, speed)


class ShiftedClock(Clock):
    """A clock that read ``start`` at real epoch ``real0`` and runs ``speed``
    times as fast; ``local`` uses the process's time zone."""

    def __init__(self, real0: float, start: float, speed: float = 1.0, tz=None):
        self.real0, self.start, self.speed, self.tz = real0, start, max(speed, 1e-6), tz

    def time(self) -> float:
        return self.start + (time.time() - self.real0) * self.speed

    def local(self, ts: float) -> datetime:
        if self.tz is None:
            return datetime.fromtimestamp(ts)
        return datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None)

    def describe(self) -> str:
        return "starting at %s, %g times as fast" % (
            self.local(self.time()).strftime("%Y-%m-%d %H:%M:%S"), self.speed)


@dataclass
class Step:
    """What one look at the clock found (job numbers are indexes into the specs).

    ``run``: due now; ``late``: due in wall time a DST change skipped (run
    now); ``missed``: index -> (runs due in minutes not looked at, the last
    such wall minute); ``gap``: minutes not looked at; ``note``: a clock
    change in words, or "".
    """

    minute: datetime | None = None  # the wall minute looked at
    run: list[int] = field(default_factory=list)
    late: dict[int, datetime] = field(default_factory=dict)
    missed: dict[int, tuple[int, datetime]] = field(default_factory=dict)
    gap: int = 0
    note: str = ""

    def __bool__(self) -> bool:
        return self.minute is not None


class Schedule:
    """Decides, each real minute, which of ``specs`` are due (see the module)."""

    def __init__(self, specs: list[CronSpec], clock: Clock | None = None):
        self.specs = specs
        self.clock = clock or Clock()
        self.last_real: int | None = None  # epoch minute last looked at
        self.last_wall: datetime | None = None  # its wall minute
        self.high_water: datetime | None = None  # latest wall minute looked at

    def until_next(self) -> float:
        """Real seconds until the clock's next minute starts."""
        now = self.clock.time()
        return (60.0 - now % 60.0) / self.clock.speed

    def step(self) -> Step:
        """Look at the clock: an empty Step when this minute was looked at already."""
        real = int(self.clock.time() // 60)
        if real == self.last_real:
            return Step()
        wall_now = _minute(self.clock.local(real * 60))
        result = Step(minute=wall_now)
        prev = self.last_wall
        if self.last_real is None:
            minutes = [real]
        elif real < self.last_real:
            result.note = "the clock went back %d minute%s" % _plural(self.last_real - real)
            minutes, prev = [real], None
        elif real - self.last_real > MAX_GAP:
            result.note = ("the clock jumped %d minutes ahead (or the master was suspended); "
                           "runs due in between are not counted" % (real - self.last_real))
            minutes, prev = [real], None
        else:
            minutes = list(range(self.last_real + 1, real + 1))
        result.gap = len(minutes) - 1
        for m in minutes:
            wall = wall_now if m == real else _minute(self.clock.local(m * 60))
            if prev is not None and MINUTE < wall - prev <= DST_JUMP:
                self._skipped(prev, wall, result)
            for i, spec in enumerate(self.specs):
                if not matches(spec, wall):
                    continue
                if spec.fixed_time and self.high_water is not None and wall <= self.high_water:
                    continue  # this wall time came round again (DST, clock set back)
                if m == real:
                    result.run.append(i)
                else:
                    count = result.missed.get(i, (0, wall))[0]
                    result.missed[i] = (count + 1, wall)
            if self.high_water is None or wall > self.high_water:
                self.high_water = wall
            prev = wall
        for i in result.run:
            result.late.pop(i, None)
        self.last_real, self.last_wall = real, wall_now
        return result

    def _skipped(self, prev: datetime, wall: datetime, result: Step) -> None:
        """Wall time jumped from ``prev`` to ``wall`` in one real minute (DST):
        the fixed-time jobs due in between run now, late."""
        t = prev + MINUTE
        while t < wall:
            for i, spec in enumerate(self.specs):
                if spec.fixed_time and i not in result.late and matches(spec, t):
                    result.late[i] = t
            t += MINUTE

    def state(self) -> dict:
        """For the reloaded master's :meth:`restore` (JSON)."""
        return {"last_real": self.last_real,
                "high_water": self.high_water.isoformat() if self.high_water else None}

    def restore(self, state: dict) -> None:
        last = state.get("last_real")
        if isinstance(last, int):
            self.last_real = last
            self.last_wall = _minute(self.clock.local(last * 60))
        if state.get("high_water"):
            self.high_water = datetime.fromisoformat(state["high_water"])


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _plural(n: int) -> tuple[int, str]:
    return n, "" if n == 1 else "s"
