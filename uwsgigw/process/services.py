"""Master services: the jobs the master runs beside its workers.

Attached daemons, cron jobs, watched files and the cheaper scaler each live in
their own module as a :class:`MasterService`; the master (master.py) calls
every service from its loop at the points below and knows nothing else about
them. A service never blocks: the master's loop is also the stats server and
the harakiri clock.

Points in the master's life, in order:

- ``adopt(state)``: a reloaded image takes over what its predecessor handed
  (the JSON value :meth:`MasterService.hand_over` returned), before the loop;
- ``tick(now)``: every loop turn (``now``: ``time.monotonic()`` seconds);
  ``deadline(now)`` bounds the loop's sleep so the next tick comes in time;
- ``reaped(pid, status)``: a child that is not a worker exited
  (``os.waitpid`` status); True if the service owned it;
- ``generation_ready(reloaded)``: a generation of workers all accept, at the
  start (False) or after a graceful reload (True);
- ``stop(immediate)``: the server is stopping; ``busy()`` keeps the master
  alive until the service's children are gone (the master's own mercy
  deadlines still apply through ``tick``);
- ``hand_over()``: the master re-executes (SIGHUP): what the next image's
  ``adopt`` needs, as JSON-able data; the service's processes keep running;
- ``stats()``: its part of the stats document (stats.py), JSON-able;
- ``fds()``: descriptors (pipes from its children) the master's select
  waits on to read; ``readable(fds)``: those of them that are readable now
  (read them without blocking).
"""

from __future__ import annotations

from .. import log
from .servicebase import MasterService


def build(cfg, master) -> list[MasterService]:
    """The services ``cfg`` asks for, in the order the master calls them."""
    services: list[MasterService] = []
    for factory in _factories():
        service = factory(cfg, master)
        if service is not None:
            services.append(service)
    return services


def _factories() -> list:
    """Each module's ``from_config(cfg, master) -> MasterService | None``."""
    from . import chain, cheaper, cron, daemons, lifetime, listenclose, touch
    return [cron.from_config, daemons.from_config, cheaper.from_config, chain.from_config,
            lifetime.from_config, touch.from_config, listenclose.from_config]


class Services:
    """The master's view of its services: each call reaches every service, and
    a bug in one is logged without stopping the others or the master."""

    def __init__(self, items: list[MasterService]):
        self.items = items

    def _each(self, what: str, *args) -> list:
        results = []
        for service in self.items:
            try:
                results.append(getattr(service, what)(*args))
            except Exception:
                log.exception("internal error in the master's %s (%s)" % (service.name, what))
                results.append(None)
        return results

    def adopt(self, states: dict) -> None:
        for service in self.items:
            if service.name in states:
                try:
                    service.adopt(states[service.name])
                except Exception:
                    log.exception("cannot adopt the %s state of the previous image"
                                  % service.name)

    def tick(self, now: float) -> None:
        self._each("tick", now)

    def deadline(self, now: float) -> float | None:
        found = [d for d in self._each("deadline", now) if d is not None]
        return min(found) if found else None

    def reaped(self, pid: int, status: int) -> bool:
        for service in self.items:
            try:
                if service.reaped(pid, status):
                    return True
            except Exception:
                log.exception("internal error in the master's %s (reaped)" % service.name)
        return False

    def generation_ready(self, reloaded: bool) -> None:
        self._each("generation_ready", reloaded)

    def stop(self, immediate: bool) -> None:
        self._each("stop", immediate)

    def busy(self) -> bool:
        return any(self._each("busy"))

    def hand_over(self) -> dict:
        return {s.name: state for s, state in zip(self.items, self._each("hand_over"))
                if state is not None}

    def stats(self) -> dict:
        return {s.name: doc for s, doc in zip(self.items, self._each("stats"))
                if doc is not None}

    def fds(self) -> list[int]:
        return [fd for fds in self._each("fds") if fds for fd in fds]

    def readable(self, fds: list[int]) -> None:
        if fds:
            self._each("readable", fds)
