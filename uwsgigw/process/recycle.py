"""Recycling a worker: uWSGI's max-requests, reload-on-rss and reload-on-as
(and min-worker-lifetime, which holds them back in a young worker).

A worker checks its limits after each request and, past one, stops itself
gracefully (``WorkerBase._check_limits``); the master sees it stopping and
names the reason in the JSON event (``Master._recycle_reason``), reading the
worker's scoreboard slot. Both ask :meth:`Limits.exceeded`, so the reasons
are worded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.settings import Config


@dataclass(frozen=True)
class Limits:
    """One worker's recycling limits; 0 is off."""

    max_requests: int = 0
    rss: int = 0  # bytes
    address_space: int = 0  # bytes
    min_lifetime: int = 0  # seconds a worker runs before any of the above recycles it

    def __bool__(self) -> bool:
        return bool(self.max_requests or self.rss or self.address_space)

    @property
    def memory(self) -> bool:
        """A memory limit is set: the worker must measure itself after a request."""
        return bool(self.rss or self.address_space)

    @classmethod
    def from_config(cls, cfg: Config, worker_id: int) -> Limits:
        """max-requests-delta is uWSGI's: worker_id * delta more for each worker."""
        max_requests = cfg.max_requests
        if max_requests:
            max_requests += worker_id * cfg.max_requests_delta
        return cls(max_requests=max_requests, rss=cfg.reload_on_rss << 20,
                   address_space=cfg.reload_on_as << 20,
                   min_lifetime=cfg.min_worker_lifetime)

    def too_young(self, age: float) -> bool:
        """min-worker-lifetime: a worker that has run ``age`` seconds may not recycle
        yet (uWSGI checks it for max-requests, reload-on-rss and reload-on-as)."""
        return age < self.min_lifetime

    def exceeded(self, requests: int, rss: int = 0, vsz: int = 0) -> str | None:
        """Why a worker that has served ``requests`` and uses ``rss`` resident and
        ``vsz`` virtual bytes (0: not measured) must recycle, or None."""
        if self.max_requests and requests >= self.max_requests:
            return "max-requests %d reached" % self.max_requests
        if self.rss and rss > self.rss:
            return "reload-on-rss: rss %d MB > %d MB" % (rss >> 20, self.rss >> 20)
        if self.address_space and vsz > self.address_space:
            return "reload-on-as: address space %d MB > %d MB" % (
                vsz >> 20, self.address_space >> 20)
        return None
