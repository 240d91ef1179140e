"""Apps for tests/test_graceful_stop_queue.py, the same answers in WSGI
(``wsgi``) and ASGI (``asgi``):

- ``/slow?S``  -> prints "slow request started" (the test polls the log for
  it), sleeps S seconds, answers "slept S"
- ``/echo``    -> "<length> <sha256 hex>" of the body it read
- anything else -> "ok"
"""

import asyncio
import hashlib
import time


def _echo(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        print("slow request started", flush=True)
        seconds = float(environ.get("QUERY_STRING") or 1)
        time.sleep(seconds)
        data = b"slept %g" % seconds
    elif path == "/echo":
        data = _echo(environ["wsgi.input"].read())
    else:
        data = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope, receive, send):
    if scope["type"] != "http":  # lifespan: not supported
        return
    path = scope["path"]
    if path == "/slow":
        print("slow request started", flush=True)
        seconds = float(scope["query_string"] or 1)
        await asyncio.sleep(seconds)
        data = b"slept %g" % seconds
    elif path == "/echo":
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        data = _echo(b"".join(parts))
    else:
        data = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
