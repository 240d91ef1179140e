"""A raw ASGI app for the WebSocket tests (tests/test_http_websocket.py),
routed by path. Plain HTTP requests get a short text answer.

What the app saw at the end of a session (the disconnect code) is written
as lines into files under ``$ASGI_APPS_RECORD_DIR``, named by ``?tag=``.
"""

import json
import os
from urllib.parse import parse_qs


def record(name: str, text: str) -> None:
    directory = os.environ.get("ASGI_APPS_RECORD_DIR")
    if directory and name:
        with open(os.path.join(directory, name), "a") as f:
            f.write(text + "\n")


def _query(scope) -> dict:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = b"plain http: %s\n" % scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "websocket":
        return  # lifespan: not supported
    message = await receive()
    assert message["type"] == "websocket.connect", message
    path, q = scope["path"], _query(scope)
    tag = q.get("tag", "")
    if path == "/ws/reject":
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/ws/http-reject":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-refused", b"yes")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
    elif path == "/ws/error-before":
        raise RuntimeError("failing before accept (test)")
    elif path == "/ws/no-accept":
        return
    else:
        await _accepted(scope, receive, send, path, q, tag)


async def _accepted(scope, receive, send, path, q, tag):
    accept = {"type": "websocket.accept", "headers": [(b"x-ws-app", b"ws_apps")]}
    if "subprotocol" in q:
        accept["subprotocol"] = q["subprotocol"]
    await send(accept)
    if path == "/ws/scope":
        data = {k: v for k, v in scope.items() if k not in ("headers", "raw_path",
                                                             "query_string", "state")}
        data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")]
                           for k, v in scope["headers"]]
        data["query_string"] = scope["query_string"].decode("latin-1")
        await send({"type": "websocket.send", "text": json.dumps(data)})
    elif path == "/ws/close":
        await send({"type": "websocket.close", "code": int(q.get("code", 1000)),
                    "reason": q.get("reason", "")})
        message = await receive()
        record(tag, "after close: %s %s" % (message["type"], message.get("code")))
        return
    elif path == "/ws/error-after":
        await send({"type": "websocket.send", "text": "about to fail"})
        raise RuntimeError("failing after accept (test)")
    elif path == "/ws/return":
        await send({"type": "websocket.send", "text": "bye"})
        return
    # /ws/echo and the rest: echo until the client leaves
    record(tag, "open")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record(tag, "disconnect %s" % message["code"])
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def _starlette():
    """A Starlette app with WebSocket routes: a framework's view of the scope."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def echo(websocket):
        await websocket.accept(subprotocol="v1")
        try:
            while True:
                await websocket.send_text("st:" + await websocket.receive_text())
        except WebSocketDisconnect as exc:
            record(websocket.query_params.get("tag", ""), "disconnect %s" % exc.code)

    async def deny(websocket):
        await websocket.close(code=1008)

    return Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/deny", deny)])


starlette_app = _starlette()
