"""Raw WSGI apps for edge cases, routed by PATH_INFO from one ``application``.

Apps that must leave evidence (e.g. that ``close()`` was called) write files
into ``$PLAIN_APPS_RECORD_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

# A validator warning must fail the request loudly, not scroll by in a log.
warnings.simplefilter("error", WSGIWarning)

BIG_SIZE = 10 * 1024 * 1024


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _record(name: str, text: str) -> None:
    directory = os.environ.get("PLAIN_APPS_RECORD_DIR")
    if directory:
        with open(os.path.join(directory, name), "a") as f:
            f.write(text + "\n")


def _text(start_response, body: bytes, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))), *extra])
    return [body]


# -- request body ---------------------------------------------------------------

def echo(environ, start_response):
    """Return the body as read with ``?mode=`` (read, readn, readline, ...)."""
    q = _query(environ)
    mode = q.get("mode", "read")
    n = int(q.get("n", "7"))
    inp = environ["wsgi.input"]
    if mode == "read":
        data = inp.read()
    elif mode == "readn":
        parts = []
        while True:
            chunk = inp.read(n)
            assert len(chunk) <= n, "read(%d) returned %d bytes" % (n, len(chunk))
            if not chunk:
                break
            parts.append(chunk)
        data = b"".join(parts)
    elif mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            assert line.endswith(b"\n") or b"\n" not in line
            parts.append(line)
        data = b"".join(parts)
    elif mode == "readline_n":
        parts = []
        while True:
            line = inp.readline(n)
            assert len(line) <= n
            if not line:
                break
            parts.append(line)
        data = b"".join(parts)
    elif mode == "readlines":
        data = b"".join(inp.readlines())
    elif mode == "iter":
        data = b"".join(line for line in inp)
    elif mode == "mixed":
        data = inp.read(1) + inp.readline() + inp.read(5) + inp.read()
    else:
        raise ValueError("unknown mode %r" % mode)
    # After the end, every read says EOF (and never blocks).
    eof = inp.read() == b"" and inp.read(10) == b"" and inp.readline() == b""
    return _text(start_response, data, extra=[
        ("X-Eof-Ok", "1" if eof else "0"),
        ("X-Input-Type", type(inp).__name__),
        ("X-Input-Nlink", _nlink(inp)),
        ("X-Sha256", hashlib.sha256(data).hexdigest())])


def _nlink(inp) -> str:
    """Links of the file behind wsgi.input: "0" for an unlinked temp file."""
    try:
        return str(os.fstat(inp.fileno()).st_nlink)
    except (AttributeError, OSError, ValueError):
        return "-"



def called(environ, start_response):
    """Leaves ``called-<id>`` behind: proves whether the app ran at all."""
    _record("called-" + _query(environ).get("id", "x"), environ.get("REQUEST_URI", ""))
    return _text(start_response, b"the app was called")


def noread(environ, start_response):
    """Answers without touching a (possibly large) body."""
    return _text(start_response, b"ignored the body")


# -- bad responses ----------------------------------------------------------------

BAD_HEADERS = {
    "/bad/crlf-name": ("200 OK", [("X-Evil\r\nInjected", "1")]),
    "/bad/crlf-value": ("200 OK", [("X-Evil", "a\r\nSet-Cookie: injected=1")]),
    "/bad/lf-value": ("200 OK", [("X-Evil", "a\nInjected: 1")]),
    "/bad/cr-value": ("200 OK", [("X-Evil", "a\rInjected: 1")]),
    "/bad/nul-value": ("200 OK", [("X-Evil", "a\x00b")]),
    "/bad/space-name": ("200 OK", [("X Evil", "1")]),
    "/bad/colon-name": ("200 OK", [("X-Evil:", "1")]),
    "/bad/empty-name": ("200 OK", [("", "1")]),
    "/bad/status-crlf": ("200 OK\r\nX-Injected: 1", []),
    "/bad/status-nul": ("200 OK\x00", []),
    "/bad/status-code": ("2000 OK", []),
    "/bad/status-letters": ("abc OK", []),
}


def bad_response(environ, start_response):
    status, headers = BAD_HEADERS[environ["PATH_INFO"]]
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [b"this must never reach the client"]


# -- exceptions -------------------------------------------------------------------

def raise_before(environ, start_response):
    raise ValueError("boom-before-start-response")


def raise_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100000")])
    yield b"partial"
    raise ValueError("boom-after-headers")


def exc_info_app(environ, start_response):
    """PEP 3333: start_response again with exc_info before anything was sent."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("handled")
    except KeyError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"recovered with exc_info"]


# -- response shapes --------------------------------------------------------------

def write_app(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"hello ")
    write(b"from ")
    return [b"write()"]


def bytes_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return b"a bare bytes body"


def file_app(environ, start_response):
    path = _query(environ)["path"]
    f = open(path, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(path)))])
    return environ["wsgi.file_wrapper"](f, 65536)


def big_stream(environ, start_response):
    """10 MiB in uneven chunks, no Content-Length: framed by the connection close."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    data = big_data()
    i, step = 0, 1
    while i < len(data):
        yield data[i:i + step]
        i += step
        step = step * 3 + 1 if step < 300_000 else 123_457


def big_data() -> bytes:
    seed = hashlib.sha256(b"uwsgigw").digest()
    return (seed * (BIG_SIZE // len(seed) + 1))[:BIG_SIZE - 3] + b"end"


def head_app(environ, start_response):
    return _text(start_response, b"body that HEAD must not send")


class ClosingIterable:
    def __init__(self, name: str, chunks, fail: bool = False):
        self.name, self.chunks, self.fail = name, chunks, fail

    def __iter__(self):
        for chunk in self.chunks:
            yield chunk
        if self.fail:
            raise RuntimeError("iteration failed (expected)")

    def close(self):
        _record("close-" + self.name, "closed")


def close_app(environ, start_response):
    """``?id=`` names the record; ``chunks=N`` sends N x 64 KiB instead of "one two"."""
    q = _query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    n = int(q.get("chunks", "0"))
    chunks = [b"c" * 65536] * n if n else [b"one ", b"two"]
    return ClosingIterable(q["id"], chunks, fail=q.get("fail") == "1")


# -- environ ----------------------------------------------------------------------

def environ_app(environ, start_response):
    """Every native-str value, plus the wsgi.* facts tests care about."""
    out = {k: v for k, v in environ.items() if isinstance(v, str)}
    for key in ("wsgi.multiprocess", "wsgi.multithread", "wsgi.run_once",
                "wsgi.input_terminated"):
        out[key] = environ.get(key)
    out["wsgi.version"] = list(environ.get("wsgi.version", ()))
    out["has_file_wrapper"] = "wsgi.file_wrapper" in environ
    out["non_str"] = sorted(k for k, v in environ.items()
                            if not isinstance(v, str) and not k.startswith("wsgi."))
    body = json.dumps(out, sort_keys=True).encode()
    return _text(start_response, body, extra=[("Content-Type", "application/json")])


def errors_app(environ, start_response):
    marker = _query(environ).get("marker", "wsgi-errors-marker")
    environ["wsgi.errors"].write(marker + "\n")
    environ["wsgi.errors"].writelines(["second line " + marker + "\n"])
    environ["wsgi.errors"].flush()
    return _text(start_response, b"logged")


# -- wsgiref.validate -------------------------------------------------------------

def _validated_inner(environ, start_response):
    inp = environ["wsgi.input"]
    body = b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = inp.read(int(length))
    payload = b"validated:" + body
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


validated = validator(_validated_inner)


# -- routing ----------------------------------------------------------------------

ROUTES = {
    "/echo": echo,
    "/called": called,
    "/noread": noread,
    "/raise-before": raise_before,
    "/raise-after": raise_after,
    "/exc-info": exc_info_app,
    "/write": write_app,
    "/bytes": bytes_app,
    "/file": file_app,
    "/big-stream": big_stream,
    "/head": head_app,
    "/close": close_app,
    "/environ": environ_app,
    "/errors": errors_app,
    "/validated": validated,
}
ROUTES.update({path: bad_response for path in BAD_HEADERS})


def application(environ, start_response):
    app = ROUTES.get(environ.get("PATH_INFO", ""))
    if app is None:
        return _text(start_response, b"not found", status="404 Not Found")
    return app(environ, start_response)
