"""Apps that write to every output an app has: ``print()``, ``logging``,
``sys.stderr`` and (WSGI) ``wsgi.errors``, one line each per request, tagged
with the query string so a test can look for exactly those lines in the log.

- ``/partial?TAG`` also writes ``out-partial TAG`` to stdout with no newline:
  only a flush at exit gets it out.
- The body is ``unbuffered=1`` if PYTHONUNBUFFERED is set (non-empty, as Python
  reads it), else ``unbuffered=0``: the tests check they run without it, as the
  fault needs.
- Importing the module prints ``out-import PID`` (the master, or a lazy worker).
"""

import logging
import os
import sys

print("out-import %d" % os.getpid())


def _write_lines(tag: str, path: str) -> bytes:
    print("out-print %s" % tag)
    logging.getLogger().warning("out-logging %s", tag)
    sys.stderr.write("out-stderr %s\n" % tag)
    if path == "/partial":
        sys.stdout.write("out-partial %s" % tag)
    return ("unbuffered=%d" % bool(os.environ.get("PYTHONUNBUFFERED"))).encode()


def application(environ, start_response):
    tag = environ.get("QUERY_STRING", "")
    body = _write_lines(tag, environ["PATH_INFO"])
    environ["wsgi.errors"].write("out-errors %s\n" % tag)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan support
    body = _write_lines(scope["query_string"].decode("latin-1"), scope["path"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
