"""Apps for the field faults of issue 12: responses cut short, children that
outlive a request, bodiless statuses, and what an ASGI app receives.

The same routes exist as a WSGI app (``wsgi``) and an ASGI app (``asgi``), so
one table of tests runs over the C path, the Python path and the async worker.
Apps that must leave evidence (their pid before they stall, a forked child's
pid) write it to files under ``$FIELD_APPS_RECORD_DIR``.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs

FIRST = b"first chunk\n"


def record(name: str, text: str) -> None:
    directory = os.environ.get("FIELD_APPS_RECORD_DIR")
    if directory:
        with open(os.path.join(directory, name), "a") as f:
            f.write(text + "\n")


def _query(qs: str) -> dict:
    return {k: v[-1] for k, v in parse_qs(qs).items()}


def _spawn_child(how: str, tag: str) -> None:
    """A child that inherits every descriptor (the connection too) and
    outlives the request by far; its pid goes to the record for the test to
    stop it."""
    if how == "fork":
        pid = os.fork()
        if pid == 0:  # the child: hold everything, do nothing, leave quietly
            try:
                time.sleep(60)
            finally:
                os._exit(0)
    else:  # a subprocess started with the descriptors inherited
        fds = [fd for fd in range(3, 256) if _is_open(fd)]
        pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               pass_fds=fds, close_fds=True).pid
    record("child-" + tag, str(pid))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# -- WSGI ---------------------------------------------------------------------

def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_LENGTH") and path != "/echo":
        environ["wsgi.input"].read()  # the body fully read: the held tail is its last byte
    if path == "/stream-ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([FIRST, b"second chunk\n", b"last chunk\n"])
    if path == "/stream-fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fail_after_first()
    if path == "/exc-info-late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(FIRST)
        try:
            raise ValueError("failed after the head (expected)")
        except ValueError:
            # PEP 3333: too late to change the status; start_response re-raises.
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"never sent"]
    if path == "/stream-stall":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stall_after_first(q.get("tag", "x"), float(q.get("s", "30")))
    if path == "/child":
        _spawn_child(q.get("how", "fork"), q.get("tag", "x"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"answered while a child holds the connection\n"])
    if path == "/echo":  # the body back, with what framed it
        body = environ["wsgi.input"].read() if environ.get("CONTENT_LENGTH") else b""
        meta = "%s %s %s" % (environ["REQUEST_METHOD"], environ.get("CONTENT_LENGTH", "-"),
                             environ.get("HTTP_TRANSFER_ENCODING", "-"))
        out = meta.encode() + b"\n" + body
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if path == "/env":  # the environ's strings, as JSON; "scheme" as the ASGI twin says it
        strings = {k: v for k, v in environ.items() if isinstance(v, str)}
        out = json.dumps(dict(strings, scheme=environ["wsgi.url_scheme"])).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if path == "/file":  # wsgi.file_wrapper, with a Content-Length unless nolength
        f = open(q["path"], "rb")
        headers = [("Content-Type", "application/octet-stream")]
        if not q.get("nolength"):
            headers.append(("Content-Length", str(os.fstat(f.fileno()).st_size)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/slow":
        time.sleep(float(q.get("s", "0.3")))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/status":
        code = q["code"]
        headers = [("Content-Type", "text/plain"), ("Content-Length", "18"),
                   ("X-Kept", "yes")]
        if q.get("te"):
            headers.append(("Transfer-Encoding", "chunked"))
        start_response("%s Status" % code, headers)
        return [b"should not be sent"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no route " + path.encode("latin-1")]


def _fail_after_first():
    yield FIRST
    raise RuntimeError("failed mid-stream (expected)")


def _stall_after_first(tag: str, seconds: float):
    yield FIRST
    record("stalled-" + tag, str(os.getpid()))
    time.sleep(seconds)
    yield b"woke up\n"


# -- ASGI ---------------------------------------------------------------------

async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    q = _query(scope["query_string"].decode("latin-1"))
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/plain")]}
    if path == "/receive":
        await _report_receive(receive, send, q)
        return
    if path == "/send":
        await _send_sequence(send, q["seq"])
        return
    if path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        meta = "%s %s %s" % (scope["method"], headers.get(b"content-length", b"-").decode(),
                             headers.get(b"transfer-encoding", b"-").decode())
        out = meta.encode() + b"\n" + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
        return
    await _read_all(receive)
    if path == "/env":  # what a WSGI app's environ would say, from the scope
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
        qs = scope["query_string"].decode("latin-1")
        out = json.dumps({
            "SERVER_NAME": scope["server"][0], "SERVER_PORT": str(scope["server"][1]),
            "REMOTE_ADDR": (scope["client"] or ("",))[0], "QUERY_STRING": qs,
            "HTTP_X_FORWARDED_FOR": headers.get("x-forwarded-for"),
            "REQUEST_URI": scope["raw_path"].decode("latin-1") + ("?" + qs if qs else ""),
            "scheme": scope["scheme"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
        return
    if path == "/stream-ok":
        await send(start)
        for chunk in (FIRST, b"second chunk\n"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"last chunk\n"})
    elif path == "/stream-fail":
        await send(start)
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        raise RuntimeError("failed mid-stream (expected)")
    elif path == "/stream-stall":
        await send(start)
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        record("stalled-" + q.get("tag", "x"), str(os.getpid()))
        await asyncio.sleep(float(q.get("s", "30")))
        await send({"type": "http.response.body", "body": b"woke up\n"})
    elif path == "/stream-block":  # blocks the event loop: only a kill ends it
        await send(start)
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        record("stalled-" + q.get("tag", "x"), str(os.getpid()))
        time.sleep(float(q.get("s", "30")))
        await send({"type": "http.response.body", "body": b"woke up\n"})
    elif path == "/child":
        _spawn_child(q.get("how", "fork"), q.get("tag", "x"))
        await send(start)
        await send({"type": "http.response.body",
                    "body": b"answered while a child holds the connection\n"})
    elif path == "/slow":
        await asyncio.sleep(float(q.get("s", "0.3")))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"slept"})
    elif path == "/status":
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"18"),
                   (b"x-kept", b"yes")]
        if q.get("te"):
            headers.append((b"transfer-encoding", b"chunked"))
        await send({"type": "http.response.start", "status": int(q["code"]),
                    "headers": headers})
        await send({"type": "http.response.body", "body": b"should not be sent"})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no route"})


async def _read_all(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _report_receive(receive, send, q) -> None:
    """Every message receive() gives until the body ends, as JSON: what an
    app sees. With ``after=1`` one more receive() follows (it waits for the
    client to leave: http.disconnect); it is recorded under ``tag``."""
    seen = []
    while True:
        message = await asyncio.wait_for(receive(), 20)
        seen.append([message["type"], len(message.get("body", b"")),
                     message.get("more_body", False)])
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    total = sum(m[1] for m in seen)
    record("receive-" + q.get("tag", "x"), json.dumps(seen))
    if q.get("after"):
        message = await asyncio.wait_for(receive(), 20)
        record("after-" + q.get("tag", "x"), message["type"])
        return
    body = json.dumps({"messages": seen, "total": total}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_sequence(send, seq: str) -> None:
    """send() messages as the ``seq`` letters say: s start (no length),
    S start with Content-Length 6, b body chunk "abc" with more_body,
    e the last body (empty), E the last body "abc", r return."""
    for letter in seq:
        if letter == "s":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        elif letter == "S":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"6")]})
        elif letter == "b":
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        elif letter == "e":
            await send({"type": "http.response.body"})
        elif letter == "E":
            await send({"type": "http.response.body", "body": b"abc"})
        elif letter == "r":
            return
