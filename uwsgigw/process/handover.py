"""The reload handover: what a reloading master passes to its fresh image.

On SIGHUP the master re-executes the interpreter in place (master.py says
why). The new image, same pid, must find what the old one leaves running:
the listening sockets, the scoreboards of the workers still serving, those
workers (to retire them once the new generation accepts), the counters the
stats server must not lose, and the paths a privileged cleaner removes
(vacuum.py). :class:`Handover` names all of it. The descriptors are inherited
across exec; the rest travels as JSON in one environment variable, which
the new image takes out of its environment first thing.

The JSON keeps the layout of earlier releases -- each listener, board and
worker a list in the order of its dataclass's fields -- so the reload that
upgrades uwsgigw, where the old release writes and the new one reads, still
hands the workers over. A field added later goes last, with a default: the
old release's shorter lists read as that default (a listener without its
protocol speaks uwsgi), and a uwsgi listener is still written without it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import astuple, dataclass, field
from typing import Iterable, Mapping, MutableMapping

from .. import log

REEXEC_ENV = "_UWSGIGW_REEXEC"  # not UWSGIGW_*: those are options
try:
    START_CWD = os.getcwd()  # re-exec from where we were started (chdir moves us)
except OSError:  # started in a deleted directory
    START_CWD = "/"


@dataclass
class HandedListener:
    fd: int
    path: str | None  # a unix socket this server created (vacuum may remove it)
    spec: str
    protocol: str = "uwsgi"  # sockets.Listener.protocol; later than the rest

    def wire(self) -> list:
        """As a JSON list; a uwsgi listener in the layout of the releases before
        HTTP sockets, which read three items."""
        item = list(astuple(self))
        return item[:3] if self.protocol == "uwsgi" else item


@dataclass
class HandedBoard:
    """What ``Scoreboard.attach`` needs (``Scoreboard.describe``)."""

    fd: int
    capacity: int
    threads: int


@dataclass
class HandedWorker:
    pid: int
    id: int
    index: int  # its slot in its board
    generation: int
    board: str  # key in Handover.boards
    retiring: str  # why it was asked to stop; "" while it serves
    mercy_left: float  # seconds left before it is killed, when retiring


@dataclass
class Handover:
    generation: int
    listeners: list[HandedListener] = field(default_factory=list)
    boards: dict[str, HandedBoard] = field(default_factory=dict)
    workers: list[HandedWorker] = field(default_factory=list)
    counts: dict[int, list[int]] = field(default_factory=dict)  # id -> [respawns, harakiris]
    # worker id -> the counters of its dead processes (stats.py), so they never go back
    carried: dict[int, list] = field(default_factory=dict)
    vacuum: list[str] = field(default_factory=list)  # paths left to the cleaner
    services: dict = field(default_factory=dict)  # name -> state (services.py)

    # -- the wire format ---------------------------------------------------------

    def to_json(self) -> str:
        state = {
            "generation": self.generation,
            "listeners": [item.wire() for item in self.listeners],
            "boards": {key: list(astuple(item)) for key, item in self.boards.items()},
            "workers": [list(astuple(item)) for item in self.workers],
            "counts": self.counts,
            "carried": self.carried,
            "vacuum": self.vacuum,
        }
        if self.services:  # (a later key: without services, the previous releases' wire)
            state["services"] = self.services
        return json.dumps(state)

    @classmethod
    def from_json(cls, text: str) -> Handover:
        state = json.loads(text)
        workers = [HandedWorker(*item) for item in state.get("workers", [])]
        for worker in workers:
            worker.board = str(worker.board)
        return cls(
            generation=int(state.get("generation", 0)),
            listeners=[HandedListener(*item) for item in state.get("listeners", [])],
            boards={key: HandedBoard(*item) for key, item in state.get("boards", {}).items()},
            workers=workers,
            counts={int(k): v for k, v in state.get("counts", {}).items()},
            carried={int(k): v for k, v in state.get("carried", {}).items()},
            vacuum=list(state.get("vacuum") or ()),
            services=dict(state.get("services") or {}),
        )

    def to_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """``environ`` with this handover in it, for the new image."""
        env = dict(environ)
        env[REEXEC_ENV] = self.to_json()
        return env

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> Handover | None:
        """The handover a reloading master left this image, taken out of
        ``environ`` (the app must not see it, nor pass it on); None at a start."""
        text = environ.pop(REEXEC_ENV, None)
        if not text:
            return None
        try:
            return cls.from_json(text)
        except (ValueError, TypeError, AttributeError):
            log.error("ignoring a malformed %s" % REEXEC_ENV)
            return None

    # -- the new image's view ----------------------------------------------------

    def listener_fds(self) -> tuple[list[int], dict[int, str]]:
        """The listening fds, and fd -> path for the unix sockets we own."""
        return ([item.fd for item in self.listeners],
                {item.fd: item.path for item in self.listeners if item.path})

    def listener_protocols(self) -> dict[int, str]:
        """fd -> the protocol each listening fd speaks."""
        return {item.fd: item.protocol for item in self.listeners}

    # -- the old image's last act ------------------------------------------------

    def exec(self, block: Iterable[signal.Signals]) -> None:
        """Replace this process with a fresh interpreter running our command
        line, from the start directory, with the listeners and boards
        inherited and the signals ``block`` blocked until the new image has
        its handlers. Returns only on failure, raising the OSError with
        everything put back."""
        fds = [item.fd for item in self.listeners] + [b.fd for b in self.boards.values()]
        env = self.to_env(os.environ)
        argv = [sys.executable] + list(getattr(sys, "orig_argv", sys.argv)[1:])
        cwd = os.getcwd()  # (before blocking: its OSError must leave nothing blocked)
        signal.pthread_sigmask(signal.SIG_BLOCK, block)
        log.flush_std()  # exec drops what the app left in sys.stdout's buffer
        try:
            for fd in fds:
                os.set_inheritable(fd, True)
            os.chdir(START_CWD)
            os.execve(sys.executable, argv, env)
        except OSError:
            try:
                os.chdir(cwd)
            except OSError:
                pass
            for fd in fds:
                os.set_inheritable(fd, False)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, block)
            raise
