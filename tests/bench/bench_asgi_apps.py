"""The async benchmark's apps (issue 8): a raw ASGI hello world (which also
echoes WebSocket messages, for the HTTP bench of issue 14) and a FastAPI
JSON endpoint. The same module is served by every server under test."""

HELLO = b"Hello, World!\n"
HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"14")]


async def hello(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "websocket":
            return await ws_echo(receive, send)
        message = await receive()  # lifespan: nothing to set up
        await send({"type": message["type"] + ".complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


async def ws_echo(receive, send):
    """WebSocket echo (the HTTP bench's messages/s): accept, send every
    message back as it came, until the client leaves."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def _fastapi():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/json")
    async def json_endpoint(x: int = 0):
        return {"message": "Hello, World!", "x": x, "items": [1, 2, 3]}

    return app


fastapi_app = _fastapi()
