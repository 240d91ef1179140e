"""uWSGI's cron lines, read and checked: ``cron``, ``unique-cron`` and ``cron2``.

``cron = MINUTE HOUR DAY MONTH WEEKDAY COMMAND`` (``core/cron.c``): each field a
number, ``-1`` for any value and ``-N`` for "every N" -- the field's value is a
multiple of N, as uWSGI tests it (``-15`` minutes: 0, 15, 30, 45; ``-2``
days: the even days 2, 4, ...; ``-3`` months: March, June, September,
December). Weekday 0 and 7 are Sunday. crontab's ``*`` and ``*/N`` are read
as ``-1`` and ``-N``; ranges and lists (``1-5``, ``1,3``), which uWSGI's
``sscanf`` silently misreads, are refused with advice.

``cron2 = key=value,... COMMAND`` (or ``...,command=COMMAND`` last): keys
minute, hour, day, month, week (default -1 each), unique (0/1),
harakiri (seconds; 0 turns ``cron-harakiri`` off for this job) and legion
(uWSGI's cluster lord election: not supported, the job is not run, a
warning says so).

The option values stay text in the Config (``--print-config`` shows them);
:func:`canonical` gives the checked text and :func:`parse` reads it back
into a :class:`CronSpec` for the master (process/cron.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .optypes import BadValue, Warn

# name, lowest, highest: the fields in crontab order
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
          ("week", 0, 7))
CRON_EXPECTED = ("MINUTE HOUR DAY MONTH WEEKDAY COMMAND, each field a number, -1 for any "
                 "or -N for every N, e.g. -15 -1 -1 -1 -1 ./manage.py job")
CRON2_KEYS = ("minute", "hour", "day", "month", "week", "unique", "harakiri", "legion",
              "command")
_NUMBER = re.compile(r"[+-]?[0-9]+\Z")


@dataclass(frozen=True)
class CronSpec:
    """One cron job. Fields: a value in range, or -N (every N; -1 any)."""

    minute: int
    hour: int
    day: int
    month: int
    week: int
    command: str
    unique: bool = False
    harakiri: int | None = None  # seconds; None: cron-harakiri applies; 0: none
    legion: str = ""  # uWSGI legion name: not supported, not run

    @property
    def schedule(self) -> str:
        """The five fields as a ``cron`` line writes them: "-15 -1 -1 -1 -1"."""
        return "%d %d %d %d %d" % (self.minute, self.hour, self.day, self.month, self.week)

    @property
    def fixed_time(self) -> bool:
        """Runs at a set time of day (minute and hour given), as crontab's
        non-wildcard jobs: not repeated when a DST change repeats an hour."""
        return self.minute >= 0 and self.hour >= 0


def _field(name: str, low: int, high: int, word: str) -> int:
    if word == "*":
        return -1
    if word.startswith("*/") and word[2:].isdigit() and int(word[2:]) > 0:
        return -int(word[2:])
    if _NUMBER.match(word):
        value = int(word)
        if value < 0 or low <= value <= high:
            return value
        raise BadValue("%s from %d to %d, -1 for any or -N for every N (got %s)"
                       % (name, low, high, word))
    if re.fullmatch(r"[0-9*/]+([-,][0-9*/]+)+", word):
        raise BadValue("one number per field: uWSGI's cron has no ranges or lists (%s %s); "
                       "write one cron line per value, or -N for every N" % (name, word))
    raise BadValue("%s as a number, -1 for any or -N for every N (got %r)" % (name, word))


def parse_cron(text: str, unique: bool = False) -> CronSpec:
    """``cron``/``unique-cron`` text -> CronSpec; BadValue says what is wrong."""
    words = text.split(None, 5)
    if len(words) < 6:
        raise BadValue(CRON_EXPECTED)
    values = [_field(name, low, high, word)
              for (name, low, high), word in zip(FIELDS, words)]
    return CronSpec(*values, command=words[5].strip(), unique=unique)


def parse_cron2(text: str, warn: Warn | None = None) -> CronSpec:
    """``cron2`` text -> CronSpec; BadValue says what is wrong. ``warn`` hears
    about a legion key (the job will not run)."""
    value = text.strip()
    words = value.split(None, 1)
    first = words[0] if words else ""
    at = re.search(r"(?:^|,)command=", first)
    if at:
        keys, command = value[:at.start()], value[at.end():].strip()
    elif "=" in first:
        keys, command = first, words[1].strip() if len(words) > 1 else ""
    elif len(words) == 1:
        keys, command = "", first  # uWSGI: a lone command runs every minute
    else:
        raise BadValue("key=value,... COMMAND (keys: %s), e.g. minute=-15,unique=1 "
                       "./manage.py job" % ", ".join(CRON2_KEYS))
    if not command:
        raise BadValue("a command after the key=value list (or command=... last)")
    fields = {name: -1 for name, _, _ in FIELDS}
    unique, harakiri, legion = False, None, ""
    for item in filter(None, keys.split(",")):
        key, eq, word = item.partition("=")
        key, word = key.strip(), word.strip()
        if not eq or key not in CRON2_KEYS:
            raise BadValue("key=value items with the keys %s (got %r)"
                           % (", ".join(CRON2_KEYS), item))
        bounds = {name: (low, high) for name, low, high in FIELDS}
        if key in bounds:
            fields[key] = _field(key, *bounds[key], word)
        elif key == "unique":
            unique = word.lower() in ("true", "yes", "on") or (
                bool(_NUMBER.match(word)) and int(word) != 0)
        elif key == "harakiri":
            if not word.isdigit():
                raise BadValue("harakiri as a whole number of seconds (0: none), got %r" % word)
            harakiri = int(word)
        elif key == "legion":
            legion = word
    if legion and warn is not None:
        warn("legion=%s: uWSGI's legion (a cron run by one node of a cluster) is not "
             "supported; this job is not run (run it from one host's cron, or a "
             "Kubernetes CronJob)" % legion)
    return CronSpec(*(fields[name] for name, _, _ in FIELDS), command=command,
                    unique=unique, harakiri=harakiri, legion=legion)


def canonical(spec: CronSpec, option: str) -> str:
    """The checked text of a job, as its option writes it (parse reads it back)."""
    if option != "cron2":
        return "%s %s" % (spec.schedule, spec.command)
    keys = ["%s=%d" % (name, getattr(spec, name)) for name, _, _ in FIELDS]
    if spec.unique:
        keys.append("unique=1")
    if spec.harakiri is not None:
        keys.append("harakiri=%d" % spec.harakiri)
    if spec.legion:
        keys.append("legion=%s" % spec.legion)
    return "%s %s" % (",".join(keys), spec.command)


def parse(text: str, option: str) -> CronSpec:
    """The text of a ``cron``, ``unique-cron`` or ``cron2`` value -> CronSpec."""
    if option == "cron2":
        return parse_cron2(text)
    return parse_cron(text, unique=option == "unique-cron")
