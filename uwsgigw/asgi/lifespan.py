"""The ASGI ``lifespan`` protocol, run once per app in each worker.

Start-up: the app gets ``lifespan.startup`` and answers ``.complete`` or
``.failed``. A failure (``.failed``, or an exception after the app took the
startup event) stops the worker with the app-load exit code, which makes the
master stop start-up instead of respawning (master.py ``_boot_failed``). An
app that raises before it even calls ``receive()`` does not speak lifespan
(a raw ASGI app that asserts ``scope["type"] == "http"``): that is logged
and ignored, as uvicorn's ``lifespan=auto`` does.

Shutdown: ``lifespan.shutdown`` once the worker's requests are finished.
"""

from __future__ import annotations

import asyncio
import traceback

from .. import log

SPEC = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailed(Exception):
    """The app refused to start; the message holds its reason or traceback."""


class Lifespan:
    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.state: dict = {}
        self.supported = True
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._started = False  # the app called receive() at least once
        self._startup: asyncio.Future | None = None
        self._shutdown: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._error: str = ""

    async def _receive(self) -> dict:
        self._started = True
        return await self._inbox.get()

    async def _send(self, message: dict) -> None:
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._startup is not None and not self._startup.done():
                self._startup.set_result(message)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if self._shutdown is not None and not self._shutdown.done():
                self._shutdown.set_result(message)
        else:
            raise RuntimeError("unexpected ASGI message %r in lifespan" % kind)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": SPEC, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self._error = traceback.format_exc().rstrip()
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            for fut in (self._startup, self._shutdown):
                if fut is not None and not fut.done():
                    fut.set_result(None)  # returned or raised without answering

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._main())
        message = await self._startup
        if message is not None and message["type"] == "lifespan.startup.complete":
            return
        if message is not None:  # lifespan.startup.failed
            why = message.get("message") or "(no message)"
            if self._error:
                why += "\n" + self._error
            elif not self._task.done():
                # Starlette sends .failed, then re-raises: let that show too.
                await asyncio.wait([self._task], timeout=1.0)
                if self._error:
                    why += "\n" + self._error
            raise LifespanFailed("%s: lifespan startup failed: %s" % (self.name, why))
        if not self._started:
            # It raised (or returned) before taking the event: no lifespan support.
            self.supported = False
            log.info("%s does not support the ASGI lifespan protocol; continuing "
                     "without it%s" % (self.name, (" (%s)" % self._error.splitlines()[-1])
                                       if self._error else ""))
            return
        raise LifespanFailed("%s: the app %s during lifespan startup%s" % (
            self.name, "raised" if self._error else "returned",
            (":\n" + self._error) if self._error else " without answering"))

    async def shutdown(self, timeout: float) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._shutdown = loop.create_future()
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            async with asyncio.timeout(timeout):
                message = await self._shutdown
        except TimeoutError:
            log.warning("%s: lifespan shutdown did not finish within %gs" % (self.name,
                                                                              timeout))
            self._task.cancel()
            return
        if message is None:
            if self._error:
                log.error("%s: exception during lifespan shutdown:\n%s" % (self.name,
                                                                           self._error))
        elif message["type"] == "lifespan.shutdown.failed":
            log.error("%s: lifespan shutdown failed: %s" % (
                self.name, message.get("message") or "(no message)"))
        if not self._task.done():
            await asyncio.wait([self._task], timeout=1.0)
