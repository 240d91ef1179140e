"""The master's two ways to reload, moved out of master.py.

- :func:`reexec` (SIGHUP, touch-reload): the master re-executes itself in
  place (same pid) and the new image adopts the sockets and the running
  workers (handover.py), imports the app afresh and replaces the workers once
  its own accept (master.py's module docstring tells the whole story).
- :func:`reload_workers` (touch-workers-reload, and the fallback when the
  re-exec fails): a new generation of workers forked from this master; the old
  ones retire once every new one accepts. With lazy-apps the new workers
  import the app afresh; otherwise they run the app this master loaded.

Both take the running ``Master`` (master.py) and change only its state; its
loop does the rest (``_manage`` forks, ``_check_generation`` retires).
"""

from __future__ import annotations

import sys
import time

from .. import log
from ..observe.reqlog import event
from . import vacuum
from .handover import HandedBoard, HandedListener, Handover


def reexec(master, signals: list[int]) -> None:
    """Replace the master's image with a fresh one that adopts sockets and
    workers; if the exec fails, reload the workers only. ``signals``: the
    master's, blocked across the exec so none is lost (the new image
    unblocks them once its handlers are in place)."""
    event("reload", "SIGHUP: graceful reload: starting a fresh master image (same pid); "
          "the current workers keep serving until the new ones accept",
          phase="start", generation=master.generation + 1)
    master.notifier.reloading()
    key = {id(b): str(i) for i, b in enumerate(master.boards)}
    now = time.monotonic()
    handover = Handover(
        generation=master.generation,
        listeners=[HandedListener(l.fileno(), l.path, l.spec, l.protocol)
                   for l in master.listeners],
        boards={key[id(b)]: HandedBoard(*b.describe()) for b in master.boards},
        workers=[w.handed(key[id(w.board)], now) for w in master.workers.values()
                 if not w.killed_for],
        counts=master.counts, carried=master.carried, vacuum=vacuum.state(),
        services=master.services.hand_over())
    try:
        handover.exec(block=signals)  # returns only if it failed
    except OSError as exc:
        reload_workers(master, "cannot re-execute %s: %s" % (sys.executable, exc))


def reload_workers(master, why: str, fallback: bool = True) -> None:
    """A new generation forked from ``master``; the old one retires once it
    accepts. ``why`` starts the log line; ``fallback``: this replaces a failed
    re-exec (a warning, with what to change), else it was asked for."""
    if fallback:
        log.warning("%s; reloading the workers only%s" % (why, "" if master.lazy else
                    " (the app loaded in the master is not re-imported: use "
                    "lazy-apps, or let the uid/gid user execute the interpreter)"))
    else:
        log.info("%s; reloading the workers only: %s" % (why, (
            "each new worker imports the app afresh (lazy-apps)" if master.lazy else
            "the new workers run the app the master loaded (SIGHUP or touch-reload "
            "re-imports it)")))
    master.generation += 1
    master.ready = False
    master.spawn_disabled = ""
    master.boot_failures = 0
    master.reload_started = time.monotonic()
