"""WSGI apps for the benchmark: one callable per workload.

Every server under test loads the same callable from this file
(``apps:hello``, ``apps:echo``, ...), so the app costs the same for all of
them and the differences are the server's own.

The Flask endpoint lives in ``bench_flask.py`` so that the other workloads'
worker memory does not include Flask. (A PEP 562 module ``__getattr__``
would not do: uWSGI looks the callable up in the module dict directly.)
"""

from __future__ import annotations

HELLO = b"Hello, World!\n"
BIG = b"x" * (1024 * 1024)  # built once at import, shared copy-on-write
CHUNK = 64 * 1024


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def _read_all(environ) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def echo(environ, start_response):
    """The 64 KB POST echo: read the whole body, send it back."""
    body = _read_all(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def big(environ, start_response):
    """A 1 MB response in one piece with Content-Length."""
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BIG)))])
    return [BIG]


def upload(environ, start_response):
    """The 20 MB upload: read the body in 64 KB chunks, answer its size.

    Chunked reads are what real upload handlers (werkzeug's form parser,
    Django's MultiPartParser) do; reading it in one call would measure one
    20 MB allocation instead.
    """
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    total = 0
    while remaining > 0:
        data = stream.read(min(CHUNK, remaining))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    body = b"%d\n" % total
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
