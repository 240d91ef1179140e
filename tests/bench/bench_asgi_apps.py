"""The async benchmark's apps (issue 8): a raw ASGI hello world and a FastAPI
JSON endpoint. The same module is served by every server under test."""

HELLO = b"Hello, World!\n"
HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"14")]


async def hello(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


def _fastapi():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/json")
    async def json_endpoint(x: int = 0):
        return {"message": "Hello, World!", "x": x, "items": [1, 2, 3]}

    return app


fastapi_app = _fastapi()
