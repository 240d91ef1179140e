"""ASGI apps (FastAPI, Starlette, ...) over the uwsgi protocol.

The async worker (:mod:`.worker`) runs one asyncio event loop per worker
process (uvloop when installed) with up to ``async-concurrency`` requests in
flight. It is picked when ``asgi = true`` or when a loaded callable is an
ASGI app; WSGI apps loaded next to it (``mount``) run in a pool of
``threads`` threads, so one server runs both kinds.

``async_context`` is the only entry point the rest of the server uses: it
turns the WSGI :class:`WorkerContext` into an :class:`AsyncContext` whose
``worker_class`` master.py and server.py instantiate instead of ``Worker``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, fields

from ..handler import WorkerContext

DEFAULT_CONCURRENCY = 1000


def is_asgi(app) -> bool:
    """True for an ASGI 3 callable: ``async def app(scope, receive, send)``,
    an object with ``async def __call__`` (FastAPI, Starlette), or a plain
    callable taking exactly three positional arguments."""
    target = app
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)
    if not inspect.isfunction(target) and call is not None and \
            inspect.iscoroutinefunction(call):
        return True
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) == 3 and not any(p.kind == p.VAR_POSITIONAL for p in params)


@dataclass
class AsyncContext(WorkerContext):
    """What the async worker needs on top of the WSGI context."""

    harakiri: int = 0  # seconds; per-request cancellation in the loop
    concurrency: int = DEFAULT_CONCURRENCY
    threads: int = 1  # the WSGI thread pool
    kinds: dict = field(default_factory=dict)  # id(app) -> "asgi" | "wsgi"
    apps: list = field(default_factory=list)  # [(name, app)] for lifespan
    states: dict = field(default_factory=dict)  # id(app) -> lifespan state

    @property
    def worker_class(self):
        from .worker import AsyncWorker
        return AsyncWorker


def _named_apps(apps) -> list:
    named = []
    if apps.default is not None:
        named.append(("the app", apps.default))
    for prefix, app in apps.mounts:
        named.append(("the app mounted at %s" % prefix, app))
    return named


def async_context(cfg, ctx: WorkerContext, apps) -> WorkerContext:
    """``ctx`` unchanged for WSGI-only configs, else an :class:`AsyncContext`."""
    named = _named_apps(apps)
    kinds = {id(app): ("asgi" if is_asgi(app) else "wsgi") for _, app in named}
    if not cfg.asgi and "asgi" not in kinds.values():
        return ctx
    values = {f.name: getattr(ctx, f.name) for f in fields(WorkerContext)}
    actx = AsyncContext(
        **values,
        harakiri=cfg.harakiri,
        concurrency=cfg.async_concurrency,
        threads=cfg.threads,
        kinds=kinds,
        apps=[(name, app) for name, app in named if kinds[id(app)] == "asgi"],
    )
    for key, value in vars(ctx).items():  # attributes set outside the dataclass
        if key not in values:
            setattr(actx, key, value)
    return actx
