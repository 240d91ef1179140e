"""A WSGI app for the hostile-input, resource and soak runs (``--wsgi-file``).

It never raises on odd input (a mutated packet must not turn into an app
traceback that would hide a server one) and uses constant memory for any
body or response size. Routes (PATH_INFO):

- ``/ok``                   -> 200 "ok"
- ``/sink``                 -> reads wsgi.input in 64 KiB chunks; "<bytes> <sha256>"
- ``/stream?size=N&chunk=M``-> N bytes in M-byte chunks, no Content-Length
- ``/sized?size=N``         -> N bytes with a Content-Length
- ``/file?size=N``          -> N bytes through wsgi.file_wrapper (sendfile)
- ``/sleep?s=S``            -> sleeps S seconds (harakiri target in the soak)
- ``/hold?flag=PATH&s=S``   -> reads the body's first byte, writes PATH.ready
                               with "<pid> <fd>" of wsgi.input, then waits up to
                               S seconds for PATH to exist (tests look at
                               /proc/<pid>/fd meanwhile)
- ``/whoami``               -> JSON: pid, uid/gid, groups, cwd, sys.path, the
                               names of os.environ, the app's id
- ``/close?flag=PATH``      -> a streamed body whose close() writes PATH
- ``/pid``                  -> the worker's pid
- ``/reflect?v=TEXT``       -> TEXT copied into an X-Reflect header
- ``/request-keys``         -> JSON list of the environ's str keys
- anything else             -> 200 "ok <PATH_INFO length>"
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from urllib.parse import parse_qs

CHUNK = 65536
_BLOCK = bytes(range(256)) * (1 << 12)  # 1 MiB, shared by every response
_FILES: dict[int, int] = {}  # size -> descriptor of a nameless file
_SPOOLS: list = []


def _query(environ) -> dict:
    try:
        return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    except Exception:
        return {}


def _int(q: dict, name: str, default: int) -> int:
    try:
        return int(q.get(name, default))
    except ValueError:
        return default


def _text(start_response, text: str, status: str = "200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _stream(size: int, chunk: int):
    chunk = max(1, min(chunk, len(_BLOCK)))
    piece = _BLOCK[:chunk]
    left = size
    while left >= chunk:
        yield piece
        left -= chunk
    if left:
        yield _BLOCK[:left]


def _drain_body(environ) -> tuple[int, str]:
    inp = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    while True:
        data = inp.read(CHUNK)
        if not data:
            break
        total += len(data)
        digest.update(data)
    return total, digest.hexdigest()


def _file_of(size: int):
    """A new file object on a nameless file of ``size`` bytes (made once per
    worker). The file is unlinked at once: a worker killed by the soak, or
    leaving through os._exit, leaves nothing behind in the temp directory.
    Each call opens its own description (own offset) via /proc/self/fd."""
    fd = _FILES.get(size)
    if fd is None:
        spool = tempfile.TemporaryFile(prefix="uwsgigw-soak-")
        for piece in _stream(size, len(_BLOCK)):
            spool.write(piece)
        spool.flush()
        _SPOOLS.append(spool)  # keeps the descriptor open for the worker's life
        fd = _FILES[size] = spool.fileno()
    return open("/proc/self/fd/%d" % fd, "rb")


class _Closing:
    def __init__(self, flag: str, size: int):
        self.flag, self.size = flag, size

    def __iter__(self):
        return _stream(self.size, CHUNK)

    def close(self):
        if self.flag:
            with open(self.flag, "w") as f:
                f.write("closed")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _query(environ)
    if path == "/ok":
        return _text(start_response, "ok")
    if path == "/sink":
        total, digest = _drain_body(environ)
        return _text(start_response, "%d %s" % (total, digest))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _stream(_int(q, "size", 1 << 20), _int(q, "chunk", CHUNK))
    if path == "/sized":
        size = _int(q, "size", 1 << 20)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return _stream(size, CHUNK)
    if path == "/file":
        size = _int(q, "size", 1 << 20)
        f = _file_of(size)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, CHUNK)
    if path == "/sleep":
        try:
            seconds = float(q.get("s", "1"))
        except ValueError:
            seconds = 1.0
        time.sleep(min(max(seconds, 0.0), 120.0))
        return _text(start_response, "slept")
    if path == "/hold":
        return _hold(environ, start_response, q)
    if path == "/whoami":
        return _text(start_response, json.dumps(_whoami(), sort_keys=True))
    if path == "/close":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Closing(q.get("flag", ""), _int(q, "size", 64 << 20))
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/reflect":  # user input copied into a header: the splitting bait
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Reflect", q.get("v", ""))])
        return [b"reflected"]
    if path == "/request-keys":
        keys = sorted(k for k, v in environ.items() if isinstance(v, str))
        return _text(start_response, json.dumps(keys))
    # Anything else (mutated packets land here): read the body, answer 200.
    _drain_body(environ)
    return _text(start_response, "ok %d" % len(path))


def _hold(environ, start_response, q):
    flag = q.get("flag", "")
    inp = environ["wsgi.input"]
    first = inp.read(1)
    try:
        fd = inp.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    with open(flag + ".ready", "w") as f:
        f.write("%d %d %s" % (os.getpid(), fd, type(inp).__name__))
    deadline = time.monotonic() + float(q.get("s", "10"))
    while flag and not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    rest, _ = _drain_body(environ)
    return _text(start_response, "held %d" % (len(first) + rest))


_APP_ID = "%x" % id(application)


def _whoami() -> dict:
    return {
        "pid": os.getpid(),
        "uid": os.getuid(), "euid": os.geteuid(),
        "gid": os.getgid(), "egid": os.getegid(),
        "groups": sorted(os.getgroups()),
        "cwd": os.getcwd(),
        "sys_path": sys.path,
        "environ_keys": sorted(os.environ),
        "app": _APP_ID,
        "modules": len(sys.modules),
    }
