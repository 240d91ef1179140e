"""The base of every master service (services.py says when each hook runs).

It lives apart from services.py, which imports each service's module to
build the list: a service module imports this one, so no import circle.
"""

from __future__ import annotations

from typing import Any


class MasterService:
    """Base: every hook does nothing. ``name`` keys the handover and stats."""

    name = "service"

    def adopt(self, state: Any) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def deadline(self, now: float) -> float | None:
        """Seconds until the service needs its next tick; None: no need."""
        return None

    def reaped(self, pid: int, status: int) -> bool:
        return False

    def generation_ready(self, reloaded: bool) -> None:
        pass

    def stop(self, immediate: bool) -> None:
        pass

    def busy(self) -> bool:
        return False

    def hand_over(self) -> Any:
        return None

    def stats(self) -> Any:
        return None
