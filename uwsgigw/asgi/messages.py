"""The ASGI ``http`` scope's message rules, the same for every driver.

``send()`` checks each message against the state of the response (ASGI 3,
HTTP spec: ``http.response.start`` once, then ``http.response.body`` until
``more_body`` is false; nothing after; no extension not offered) and hands
the valid ones to the driver's exchange: ``_start(status, headers)`` and
``_body(body, more)``. The hang-up watch is the same too: once the body has
been received, the socket becoming readable means the client left; a
pending ``receive()`` then gets ``http.disconnect`` and a task not listening
is cancelled. asgi/protocol.py (uwsgi) and asgi/http_asgi.py (HTTP) differ
only in how a valid message goes out.
"""

from __future__ import annotations

import asyncio

from ..cycle import request
from ..cycle.response import ResponseError
from ..protocol.errors import ClientDisconnected

_UNOFFERED = ("http.response.trailers", "http.response.zerocopysend",
              "http.response.pathsend")


def status_line(status) -> str:
    """An ASGI int status -> ``"200 OK"`` for build_head (which validates it)."""
    if type(status) is not int:
        raise ResponseError("invalid status %r: ASGI wants an int" % (status,))
    return request.status_line(status)


def str_headers(headers) -> list:
    """ASGI ``[(bytes, bytes)]`` -> build_head's ``[(str, str)]`` (latin-1)."""
    try:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
    except (AttributeError, TypeError, ValueError):
        if not isinstance(headers, (list, tuple)):
            raise ResponseError("headers must be a list of (bytes, bytes) pairs, got %r"
                                % (headers,)) from None
        for i, header in enumerate(headers):
            if not (isinstance(header, (tuple, list)) and len(header) == 2
                    and all(isinstance(x, (bytes, bytearray)) for x in header)):
                raise ResponseError("header #%d is %r, not a (bytes, bytes) pair"
                                    % (i, header)) from None
        raise ResponseError("headers %r are invalid" % (headers,)) from None


class AsgiExchange:
    """What both drivers' exchanges share. A subclass sets, in its
    ``__init__``: ``worker``, ``fd``, ``head`` (None: no validated head
    waiting), ``sent``, ``complete``, ``closed``, ``disconnected``,
    ``watching``, ``waiter``, ``task``, ``cancelled_for``; and defines
    ``_start`` and ``_body``."""

    worker = None
    fd = -1
    head: bytes | None = None
    sent = complete = closed = disconnected = watching = False
    waiter: asyncio.Future | None = None
    task: asyncio.Task | None = None
    cancelled_for = ""

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.head is None and not self.sent:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response completed")
            if self.disconnected:
                raise ClientDisconnected("the client went away")
            await self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            if self.head is not None or self.sent:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], str_headers(message.get("headers", ())))
        elif kind in _UNOFFERED:
            raise RuntimeError("%s is not supported (no extension was offered)" % kind)
        else:
            raise RuntimeError("unexpected ASGI message %r for an http scope" % kind)

    def _start(self, status, headers: list) -> None:
        """Validate and keep the response head (``status`` as the app gave it)."""
        raise NotImplementedError

    async def _body(self, body: bytes, more: bool) -> None:
        """Send a piece of the body (with the head before the first one)."""
        raise NotImplementedError

    # -- the hang-up watch ---------------------------------------------------------

    def watch(self) -> None:
        """Once the body is in: a readable socket now means the client left."""
        if not self.watching and not self.closed and not self.disconnected:
            self.watching = True
            self.worker.hangups.watch(self.fd, self._hung_up)

    def unwatch(self) -> None:
        if self.watching:
            self.watching = False
            self.worker.hangups.unwatch(self.fd)

    def disconnect(self) -> None:
        self.unwatch()
        self.disconnected = True

    def _hung_up(self) -> None:
        self.watching = False  # the watcher forgets the fd after calling
        self.disconnect()
        if self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)
        elif not self.complete and self.task is not None and not self.cancelled_for:
            self.cancel("disconnect")

    async def wait_for_disconnect(self) -> None:
        """A ``receive()`` after the body: until the client leaves or the
        response is complete."""
        self.watch()
        self.waiter = self.worker.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def wake_receiver(self) -> None:
        """The response is complete: a pending ``receive()`` returns."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def cancel(self, why: str) -> None:
        self.cancelled_for = why
        self.task.cancel()
