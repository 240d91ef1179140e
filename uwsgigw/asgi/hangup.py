"""Knowing that nginx closed a connection, without reading from it.

While the app runs, the request's last byte stays in the kernel's queue (the
held tail, uwsgigw/cycle/ending.py), so the socket is always readable: the event
loop's readability cannot say "EOF". One epoll set per worker, watching its
connections for EPOLLRDHUP (the peer closed; EPOLLHUP and EPOLLERR come
anyway), is itself one readable descriptor on the loop.
"""

from __future__ import annotations

import select
from typing import Callable


class HangupWatcher:
    """Calls ``callback()`` once when the peer of a watched fd hangs up."""

    def __init__(self, loop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        self._epoll.register(fd, select.EPOLLRDHUP)
        self._callbacks[fd] = callback

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed)."""
        if self._callbacks.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._callbacks.pop(fd, None)
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
            if callback is not None:
                callback()

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
