"""The attach-daemon family's values, read as uWSGI reads them (``core/daemons.c``).

- ``attach-daemon CMD``: a command the master keeps running (``/bin/sh -c``);
- ``attach-daemon2 key=value,...``: the same with settings: ``cmd`` (also
  ``command``, ``exec``), ``freq``, ``pidfile``, ``daemonize`` (``daemon``),
  ``control``, ``touch`` (files separated by ``;``), ``stopsignal``
  (``stop_signal``), ``reloadsignal`` (``reload_signal``), ``stdin``,
  ``chdir``, ``max_throttle`` and ``notifypid``. A ``,`` inside a value is
  written ``\\,``;
- ``smart-attach-daemon PIDFILE[,FREQ] CMD``: a command that forks itself and
  writes PIDFILE; the master follows the pid in the file;
- ``smart-attach-daemon2 PIDFILE[,FREQ] CMD``: the same for a command that
  does not fork: the master writes PIDFILE.

Signals are numbers (as in uWSGI) or names (``TERM``, ``SIGHUP``). The
parsers raise ``optypes.BadValue`` (what would fit) and warn about keys
uwsgigw accepts but ignores.
"""

from __future__ import annotations

import signal
import zlib
from dataclasses import dataclass, field

from .optypes import BadValue, Warn

ATTACH, ATTACH2, SMART, SMART2 = ("attach-daemon", "attach-daemon2", "smart-attach-daemon",
                                  "smart-attach-daemon2")
DEFAULT_FREQ = 10  # seconds a smart daemon has to write its pidfile (uWSGI's default)
_KEYS = {"command": "cmd", "cmd": "cmd", "exec": "cmd", "freq": "freq", "pidfile": "pidfile",
         "control": "control", "daemonize": "daemonize", "daemon": "daemonize",
         "touch": "touch", "stopsignal": "stopsignal", "stop_signal": "stopsignal",
         "reloadsignal": "reloadsignal", "reload_signal": "reloadsignal", "stdin": "stdin",
         "chdir": "chdir", "max_throttle": "max_throttle", "notifypid": "notifypid"}
_IGNORED = {"uid": "run uwsgigw as that user (uid =) or use su/setpriv in the command",
            "gid": "run uwsgigw as that group (gid =) or use setpriv in the command",
            "ns_pid": "use unshare in the command", "legion": "legions are not supported"}


@dataclass(frozen=True)
class DaemonSpec:
    """One attached daemon. ``stop_signal``/``reload_signal``: signal numbers
    (0: none); ``freq``: seconds; ``max_throttle``: seconds (0: the default)."""

    kind: str
    command: str
    pidfile: str | None = None
    freq: int = DEFAULT_FREQ
    daemonize: bool = False  # the master writes the pidfile (smart-attach-daemon2)
    stop_signal: int = int(signal.SIGTERM)
    reload_signal: int = 0
    control: bool = False  # its death stops the server
    stdin: bool = False  # inherit the master's stdin instead of /dev/null
    touch: tuple[str, ...] = field(default_factory=tuple)
    chdir: str | None = None
    max_throttle: int = 0
    notifypid: bool = False  # a smart daemon gets the reload signal (or HUP) on reloads

    @property
    def smart(self) -> bool:
        return self.pidfile is not None

    def key(self, nth: int = 0) -> str:
        """Stable across the master's re-exec: the same line gives the same key."""
        text = "%s\0%s\0%s\0%d" % (self.kind, self.command, self.pidfile, nth)
        return "%08x" % zlib.crc32(text.encode("utf-8", "surrogateescape"))


def parse_signal(text: str) -> int:
    value = text.strip().upper()
    if value.isdigit() and 0 < int(value) < signal.NSIG:
        return int(value)
    name = value if value.startswith("SIG") else "SIG" + value
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise BadValue("a signal number or name (e.g. 15, TERM, SIGHUP)") from None


def _split_kv(text: str) -> list[tuple[str, str]]:
    """uWSGI's kvlist: ``k=v,k=v`` with ``\\,`` for a comma inside a value."""
    items, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    pairs = []
    for item in items:
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise BadValue("key=value pairs separated by commas, e.g. "
                           "cmd=celery worker,stopsignal=TERM (%r has no =)" % item.strip())
        pairs.append((key.strip().lower(), value.strip()))
    return pairs


def _int(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise BadValue("%s as a whole number of seconds (got %r)" % (what, text))
    return int(text)


def parse(kind: str, text: str, warn: Warn | None = None) -> DaemonSpec:
    """One option value -> its DaemonSpec; BadValue says what would fit."""
    warn = warn or (lambda msg: None)
    value = text.strip()
    if not value:
        raise BadValue("a command")
    if kind == ATTACH:
        return DaemonSpec(kind, value)
    if kind in (SMART, SMART2):
        head, _, command = value.partition(" ")
        pidfile, _, freq = head.partition(",")
        if not command.strip() or not pidfile:
            raise BadValue("PIDFILE[,FREQ] COMMAND, e.g. /run/app/worker.pid celery worker")
        return DaemonSpec(kind, command.strip(), pidfile=pidfile,
                          freq=_int(freq, "FREQ") if freq else DEFAULT_FREQ,
                          daemonize=kind == SMART2)
    if kind != ATTACH2:
        raise ValueError("not a daemon option: %s" % kind)
    got: dict[str, str] = {}
    for key, val in _split_kv(value):
        if key in _KEYS:
            got[_KEYS[key]] = val
        elif key in _IGNORED:
            warn("%s=%s is ignored: %s" % (key, val, _IGNORED[key]))
        else:
            warn("unknown key %r ignored (known: %s)" % (key, ", ".join(sorted(set(_KEYS)))))
    if not got.get("cmd"):
        raise BadValue("cmd=COMMAND among its key=value pairs")
    flag = lambda key: key in got and got[key].lower() not in ("0", "false", "off", "no")  # noqa: E731
    return DaemonSpec(
        kind, got["cmd"], pidfile=got.get("pidfile") or None,
        freq=_int(got["freq"], "freq") if got.get("freq") else DEFAULT_FREQ,
        daemonize=flag("daemonize"),
        stop_signal=parse_signal(got["stopsignal"]) if got.get("stopsignal")
        else int(signal.SIGTERM),
        reload_signal=parse_signal(got["reloadsignal"]) if got.get("reloadsignal") else 0,
        control=flag("control"), stdin=flag("stdin"),
        touch=tuple(p for p in got.get("touch", "").split(";") if p),
        chdir=got.get("chdir") or None,
        max_throttle=_int(got["max_throttle"], "max_throttle") if got.get("max_throttle")
        else 0,
        notifypid=flag("notifypid"))


def check(kind: str):
    """The option table's parser for ``kind``: validates, keeps the text."""
    def parser(opt, text: str, warn: Warn) -> str:
        parse(kind, text, warn)
        return text.strip()
    return parser


KINDS = (ATTACH, ATTACH2, SMART, SMART2)
