"""ASGI apps (FastAPI, Starlette, ...) over the uwsgi protocol.

The async worker (:mod:`.worker`) runs one asyncio event loop per worker
process (uvloop when installed) with up to ``async-concurrency`` requests in
flight. It is the worker kind when ``asgi = true`` or when a loaded callable
is an ASGI app (``app.is_asgi``; decided in ``WorkerContext.from_config``);
WSGI apps loaded next to it (``mount``) run in a pool of ``threads``
threads, so one server runs both kinds.
"""
