"""Static files as one more responder of the request cycle.

``static-map`` hits are answered by a :class:`StaticResponder` that the app
picker returns in place of the app (:func:`static_picker`): every driver
(the uwsgi C core and Python handler, the HTTP listener's C and llhttp paths,
the ASGI worker) then runs it, logs it, counts it and shows it in the stats
exactly like an app's request. What a request gets (status, headers, which
file, which bytes) is static.py's; this module only hands it to a driver:

- WSGI drivers get ``wsgi.file_wrapper`` semantics: a :class:`FileWrapper`
  whose ``length`` bounds a byte range; they ``sendfile()`` it (the HTTP
  listener offloads a slow download to its event loop: http_front.py);
- ASGI drivers get ``http.response.start`` and the bytes in 256 KiB
  ``http.response.body`` messages;
- ``file-serve-mode = x-accel-redirect`` (or ``nginx``): a 200/206 hit is
  answered with ``X-Accel-Redirect: <the file's path>`` and no body, so nginx
  serves the file from an ``internal`` location (nginx/static-accel.conf);
  ``x-sendfile`` (or ``apache``) sends ``X-Sendfile`` the same way.
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import quote

from .. import log
from .request import status_line
from .response import FileWrapper

_ASGI_CHUNK = 256 * 1024
# A file this small is read and sent as bytes (one writev with the head)
# rather than sendfile()d: a file object, a FileWrapper and a second send
# cost more than copying 64 KiB from the page cache.
_SMALL = 64 * 1024
# Headers of the file's own answer that nginx keeps from the redirecting
# response (the rest, Content-Length and Content-Range, it makes itself).
_ACCEL_KEEP = frozenset(("content-type", "expires", "cache-control", "vary", "last-modified"))


class StaticResponder:
    """One static hit: a WSGI app (``environ, start_response``) and an ASGI
    app (``scope, receive, send``) at once, so every worker kind runs it."""

    __slots__ = ("answer", "accel")

    def __init__(self, answer, accel: str = ""):
        self.answer = answer  # static.StaticAnswer: its fd is ours to close
        self.accel = accel  # "X-Accel-Redirect", "X-Sendfile" or ""

    def __call__(self, *args):
        if len(args) == 3:
            return self.asgi(*args)
        return self.wsgi(*args)

    def head(self) -> tuple[str, list[tuple[str, str]], bool]:
        """(status line, headers, has a body to send): what the driver sends."""
        answer = self.answer
        if self.accel and answer.status in (200, 206) and answer.fd is not None:
            path = answer.path
            headers = [(name, value) for name, value in answer.headers
                       if name.lower() in _ACCEL_KEEP]
            if any(n.lower() == "content-encoding" for n, _ in answer.headers):
                path = path[:-3] if path.endswith(".gz") else path  # nginx: gzip_static
            # The path's bytes as they are on disk (a name need not be UTF-8):
            # %-escaped for nginx, which unescapes X-Accel-Redirect; raw
            # (latin-1, one char per byte) for mod_xsendfile, which does not.
            raw = os.fsencode(path)
            headers.append((self.accel, quote(raw, safe="/") if self.accel[2] == "A"
                            else raw.decode("latin-1")))
            return status_line(200), headers, False
        return (status_line(answer.status), list(answer.headers),
                answer.fd is not None and answer.length > 0)

    def _head(self) -> tuple[str, list[tuple[str, str]], bool]:
        if self.answer.log:
            log.warning(self.answer.log)
        return self.head()

    def wsgi(self, environ: dict, start_response: Callable):
        status, headers, body = self._head()
        start_response(status, headers)
        if not body:
            self.answer.close()
            return []
        answer = self.answer
        if answer.length <= _SMALL:
            try:
                data = os.pread(answer.fd, answer.length, answer.offset)
            except BaseException:
                answer.close()
                raise
            if len(data) == answer.length:
                answer.close()
                return [data]
            # The file shrank since its fstat: the wrapper below sends what is
            # left and the driver cuts the response visibly (a short sendfile).
        filelike = os.fdopen(answer.fd, "rb", buffering=0)
        answer.fd = None  # the wrapper closes it now
        filelike.seek(answer.offset)
        wrapper = FileWrapper(filelike)
        wrapper.length = answer.length
        return wrapper

    async def asgi(self, scope: dict, receive, send) -> None:
        status, headers, body = self._head()
        answer = self.answer
        try:
            await send({"type": "http.response.start", "status": int(status[:3]),
                        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1"))
                                    for n, v in headers]})
            offset, left = answer.offset, answer.length if body else 0
            data = b""
            while left > 0:
                # A pread from the page cache; nginx's own static module
                # reads the same way from its event loop.
                data = os.pread(answer.fd, min(_ASGI_CHUNK, left), offset)
                if not data:
                    return  # the file shrank: the response stays incomplete (a cut)
                offset += len(data)
                left -= len(data)
                await send({"type": "http.response.body", "body": data,
                            "more_body": left > 0})
            if not data:  # nothing was sent: the one (empty) body message
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            answer.close()


def is_static(app) -> bool:
    """Whether the picker gave a static hit rather than an app."""
    return type(app) is StaticResponder


def static_picker(pick: Callable[[dict], object], static, serve_mode: str = "",
                  cache=None) -> Callable[[dict], object]:
    """``pick`` (environ -> app or None, app.py's, which strips a mount's
    SCRIPT_NAME) with the static maps in front: a hit's responder, else the
    app. ``static``: static.StaticFiles; ``serve_mode``: file-serve-mode;
    ``cache``: a fastpath.StaticCache that gets every plain answer under the
    request's PATH_INFO (the uwsgi C core answers its repeats), or None."""
    accel = {"x-accel-redirect": "X-Accel-Redirect", "xaccelredirect": "X-Accel-Redirect",
             "nginx": "X-Accel-Redirect", "x-sendfile": "X-Sendfile",
             "xsendfile": "X-Sendfile", "apache": "X-Sendfile"}.get(serve_mode.lower(), "")
    lookup = static.lookup

    def pick_static(env: dict):
        key = env.get("PATH_INFO")  # as the request came: what the C core looks up
        app = pick(env)
        answer = lookup(env)
        if answer is None:
            return app
        responder = StaticResponder(answer, accel)
        if cache is not None and answer.plain is not None and (answer.fd is not None
                                                               or not accel):
            # (A HEAD's accel answer is the file's own headers: not stored.)
            dirfd, rel, st = answer.plain
            status, headers, _ = responder.head()
            cache.put(key, dirfd, rel, st.st_dev, st.st_ino, st.st_mtime_ns,
                      st.st_size, status, headers, bool(accel))
        return responder

    return pick_static
