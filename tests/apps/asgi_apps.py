"""ASGI apps for the async worker tests: raw ASGI, Starlette and FastAPI.

Apps that must leave evidence (a cancelled task, a background task that ran,
lifespan shutdown) write lines into files under ``$ASGI_APPS_RECORD_DIR``.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import time
from urllib.parse import parse_qs


def record(name: str, text: str) -> None:
    directory = os.environ.get("ASGI_APPS_RECORD_DIR")
    if directory:
        with open(os.path.join(directory, name), "a") as f:
            f.write(text + "\n")


# -- raw ASGI -------------------------------------------------------------------

def _query(scope) -> dict:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _answer(send, body: bytes, status=200, headers=(), content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> tuple[bytes, int]:
    parts, messages = [], 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        messages += 1
        parts.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(parts), messages


async def raw(scope, receive, send):
    """Raw ASGI 3, routed by path. No lifespan support (it asserts http)."""
    assert scope["type"] == "http", "raw app: no lifespan"
    path, q = scope["path"], _query(scope)
    if path.startswith("/scope"):
        data = {k: v for k, v in scope.items() if k not in ("headers", "raw_path",
                                                             "query_string", "state")}
        data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")]
                           for k, v in scope["headers"]]
        data["raw_path"] = scope["raw_path"].decode("latin-1")
        data["query_string"] = scope["query_string"].decode("latin-1")
        await _answer(send, json.dumps(data).encode(), content_type=b"application/json")
    elif path == "/echo":
        body, messages = await _read_body(receive)
        await _answer(send, body, headers=[(b"x-messages", str(messages).encode()),
                                           (b"x-sha256", hashlib.sha256(body).hexdigest()
                                            .encode())])
    elif path == "/sleep":
        if "tag" in q:
            record("started-" + q["tag"], "started")
        await asyncio.sleep(float(q.get("s", "0.5")))
        await _answer(send, b"slept")
    elif path == "/stream":
        n = int(q.get("n", "5"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"x-accel-buffering", b"no")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i,
                        "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/bad-header":
        value = q.get("v", "a\r\nSet-Cookie: evil=1").encode("latin-1")
        await _answer(send, b"never", headers=[(b"x-bad", value)])
    elif path == "/bad-status":
        await send({"type": "http.response.start", "status": "200 OK", "headers": []})
    elif path == "/raise":
        raise RuntimeError("raw app exploded")
    elif path == "/raise-after-head":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("exploded mid-body")
    elif path == "/no-response":
        return
    elif path == "/wait-disconnect":
        # Listens: must get http.disconnect when nginx goes away.
        tag = q.get("tag", "x")
        record("started-" + tag, "started")
        message = await receive()  # ASGI: the (empty) request body comes first
        while message["type"] == "http.request" and message.get("more_body"):
            message = await receive()
        message = await receive()
        record("disconnect-" + tag, message["type"])
    elif path == "/cancel-me":
        # Does not listen: the worker must cancel it when nginx goes away.
        tag = q.get("tag", "x")
        record("started-" + tag, "started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record("cancelled-" + tag, "cancelled")
            raise
        await _answer(send, b"not cancelled")
    elif path == "/stuck":
        tag = q.get("tag", "x")
        try:
            await asyncio.sleep(float(q.get("s", "30")))
        except asyncio.CancelledError:
            record("cancelled-" + tag, "cancelled")
            raise
        await _answer(send, b"woke up")
    elif path == "/block":
        time.sleep(float(q.get("s", "30")))  # blocks the whole loop: a bug
        await _answer(send, b"unblocked")
    elif path == "/after-response":
        tag = q.get("tag", "x")
        await _answer(send, b"done")
        await asyncio.sleep(0.3)  # work after the response, like a background task
        record("after-" + tag, "ran")
    else:
        await _answer(send, b"raw asgi: " + scope["path"].encode(), status=200)


def wsgi_hello(environ, start_response):
    """A WSGI app mounted next to the ASGI one (runs in the thread pool)."""
    body = environ["wsgi.input"].read()
    text = b"wsgi hello %s %s multithread=%s body=%d" % (
        environ["SCRIPT_NAME"].encode(), environ["PATH_INFO"].encode(),
        str(environ["wsgi.multithread"]).encode(), len(body))
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(0.3)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(text)))])
    return [text]


# -- Starlette --------------------------------------------------------------------

def _starlette():
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app):
        record("lifespan-starlette", "startup %d" % os.getpid())
        yield {"greeting": "hello from lifespan"}
        record("lifespan-starlette", "shutdown %d" % os.getpid())

    async def index(request: Request):
        return JSONResponse({"app": "starlette", "greeting": request.state.greeting,
                             "path": request.url.path, "root_path": request.scope["root_path"],
                             "query": dict(request.query_params)})

    async def stream(request: Request):
        async def numbers():
            for i in range(int(request.query_params.get("n", "10"))):
                yield ("line %d\n" % i).encode()
                await asyncio.sleep(0.005)
        return StreamingResponse(numbers(), media_type="text/plain")

    async def upload(request: Request):
        form = await request.form()
        upload = form["file"]
        data = await upload.read()
        return JSONResponse({"name": form["name"], "filename": upload.filename,
                             "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    async def background(request: Request):
        tag = request.query_params["tag"]

        async def later():
            await asyncio.sleep(0.3)
            record("bg-" + tag, "ran")

        return PlainTextResponse("queued", background=BackgroundTask(later))

    return Starlette(routes=[
        Route("/", index), Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
        Route("/background", background),
    ], lifespan=lifespan)


starlette_app = _starlette()


# -- FastAPI ------------------------------------------------------------------------

def _fastapi():
    from fastapi import BackgroundTasks, FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.started_pid = os.getpid()
        record("lifespan-fastapi", "startup %d" % os.getpid())
        yield {"db": {"items": 3}}
        record("lifespan-fastapi", "shutdown %d" % os.getpid())

    app = FastAPI(lifespan=lifespan)

    class Item(BaseModel):
        name: str
        price: float
        tags: list[str] = []

    @app.get("/")
    async def root(request: Request):
        return {"app": "fastapi", "items": request.state.db["items"],
                "client": request.client.host if request.client else None}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(item: Item):
        return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2),
                "tags": item.tags}

    @app.get("/sleep")
    async def sleep(s: float = 0.5, tag: str = ""):
        if tag:
            record("started-" + tag, "started")
        await asyncio.sleep(s)
        return {"slept": s}

    @app.get("/stream")
    async def stream(n: int = 10):
        async def gen():
            for i in range(n):
                yield ("{\"i\": %d}\n" % i).encode()
                await asyncio.sleep(0.005)
        return StreamingResponse(gen(), media_type="application/x-ndjson")

    @app.post("/upload")
    async def upload(name: str = Form(...), file: UploadFile = File(...)):
        data = await file.read()
        return {"name": name, "filename": file.filename, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    @app.get("/background")
    async def background(tag: str, tasks: BackgroundTasks):
        async def later():
            await asyncio.sleep(0.3)
            record("bg-" + tag, "ran")
        tasks.add_task(later)
        return {"queued": tag}

    @app.get("/sync")
    def sync_endpoint():
        # FastAPI runs plain def endpoints in its own thread pool.
        return {"sync": True}

    return app


fastapi_app = _fastapi()


# -- lifespan failures ----------------------------------------------------------------

def _failing_starlette():
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("database unreachable at startup")
        yield  # pragma: no cover

    return Starlette(routes=[], lifespan=lifespan)


failing_lifespan = _failing_starlette()


async def refusing_lifespan(scope, receive, send):
    """Raw lifespan that answers startup.failed with a message."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "config missing: API_KEY"})
        return
    await _answer(send, b"unreachable")
