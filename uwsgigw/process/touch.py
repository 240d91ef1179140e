"""Watched files: uWSGI's touch-reload, touch-chain-reload, touch-workers-reload
and touch-logreopen.

Each file is ``stat()``-ed on the master's tick, at most once a second
(``CHECK_EVERY``; uWSGI checks once per master cycle, also about a second). A
file fires when its modification time changes, or when it appears or
disappears (uWSGI's rules, ``uwsgi_check_touches``: a file missing at start
is logged and fires once it is created). uWSGI compares whole seconds and
fires only when the time grows; here any change of the nanosecond mtime
fires, so two deploys within a second, or a checkout that sets an older
time, are not missed.

What fires does what a signal does:

- touch-reload: SIGHUP's graceful reload (``Master.handle_hup``: a fresh
  master image imports the app again; the old workers serve until the new
  ones accept, so no request fails);
- touch-workers-reload: a new generation of workers forked from the master
  (``reload.reload_workers``; the app is imported again only with lazy-apps);
- touch-chain-reload: the workers replaced one at a time (chain.py);
- touch-logreopen: SIGUSR1 (``Master.handle_usr1``: master and workers
  reopen the log).

As in uWSGI, touch-reload wins over touch-workers-reload, which wins over
touch-chain-reload, when several fire at once; nothing is checked while the
workers are (re)starting (a touch in the meantime fires afterwards) or the
server stops. The last seen state crosses the master's re-exec (hand_over),
so a file touched again while the reload it asked for runs fires once more.

Cost: one ``stat()`` per file per second; with 10 files the master spends
well under a millisecond of CPU per second on it (tests/test_touch_reload.py
measures it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import log
from . import chain
from .servicebase import MasterService

CHECK_EVERY = 1.0  # seconds between two looks at the files
MISSING = -1  # the state of a file that does not exist

# option attribute -> its name, in the order of precedence
OPTIONS = ("touch_reload", "touch_workers_reload", "touch_chain_reload", "touch_logreopen")


def _state(path: str) -> int:
    """The file's mtime in nanoseconds, or MISSING."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return MISSING


@dataclass
class Watched:
    option: str  # attribute name, e.g. "touch_reload"
    path: str
    state: int

    @property
    def option_name(self) -> str:
        return self.option.replace("_", "-")


class TouchWatcher(MasterService):
    """Stats the watched files on the master's tick and acts on a change."""

    name = "touch"

    def __init__(self, master, files: list[tuple[str, str]]):
        """``files``: (option attribute, path) pairs."""
        self.master = master
        self.files = [Watched(option, path, _state(path)) for option, path in files]
        self.next_check = 0.0
        self.announce = True  # say which files are missing, once (not after a re-exec)

    def adopt(self, state) -> None:
        """The states the previous image saw: [[option, path, state], ...]."""
        self.announce = False
        seen = {(option, path): value for option, path, value in state}
        for f in self.files:
            if (f.option, f.path) in seen:
                f.state = int(seen[f.option, f.path])

    def hand_over(self):
        return [[f.option, f.path, f.state] for f in self.files]

    def deadline(self, now: float) -> float | None:
        return max(0.0, self.next_check - now)

    def tick(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY
        if self.announce:
            self.announce = False
            for f in self.files:
                if f.state == MISSING:
                    log.info("%s: cannot stat %s (%s); it fires once the file is created"
                             % (f.option_name, f.path, _why_missing(f.path)))
        m = self.master
        if m.stopping:
            return
        # Not while a generation of workers starts (as uWSGI skips them while
        # reloading): the states stay as they were, so a touch fires after.
        starting = not m.ready
        fired: dict[str, Watched] = {}
        for f in self.files:
            if starting and f.option != "touch_logreopen":
                continue
            state = _state(f.path)
            if state != f.state:
                what = ("created" if f.state == MISSING else "removed" if state == MISSING
                        else "modified")
                f.state = state
                if f.option not in fired:
                    fired[f.option] = f
                    log.info("%s: %s was %s" % (f.option_name, f.path, what))
        self._act(fired)

    def _act(self, fired: dict[str, Watched]) -> None:
        m = self.master
        if "touch_logreopen" in fired:
            m.handle_usr1()
        if "touch_reload" in fired:
            m.handle_hup()  # may re-execute: nothing after this
        elif "touch_workers_reload" in fired:
            f = fired["touch_workers_reload"]
            m.reload_workers("touch-workers-reload: %s" % f.path, fallback=False)
        elif "touch_chain_reload" in fired:
            chain.request(m, "touch-chain-reload: %s" % fired["touch_chain_reload"].path)

    def stats(self):
        return [{"option": f.option_name, "path": f.path, "exists": f.state != MISSING}
                for f in self.files]


def _why_missing(path: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return "it exists now"


def from_config(cfg, master) -> TouchWatcher | None:
    files = [(option, path) for option in OPTIONS for path in getattr(cfg, option)]
    return TouchWatcher(master, files) if files else None
