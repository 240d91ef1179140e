"""The built-in demo app (``module = uwsgigw.demo``), used by ``make run``.

It shows that the request went nginx -> uwsgi protocol -> uwsgigw, which
decoder served it, and the environ the app received.
"""

from __future__ import annotations

import html
import os
import sys

from . import __version__
from .backend import select


def application(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    decoder = os.environ.get("UWSGIGW_DECODER", "auto")
    try:
        backend = select(decoder).name
    except Exception:
        backend = decoder
    rows = "".join(
        "<tr><td>%s</td><td>%s</td></tr>" % (html.escape(k), html.escape(repr(v)))
        for k, v in sorted(environ.items())
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>uwsgigw demo</title>"
        "</head><body><h1>Hello from uwsgigw %s</h1>"
        "<p>Served through nginx's <code>uwsgi_pass</code> by worker pid %d, "
        "decoder <b>%s</b>, Python %s.</p>"
        "<h2>WSGI environ</h2><table border='1' cellpadding='3'>%s</table>"
        "</body></html>"
        % (__version__, os.getpid(), backend, sys.version.split()[0], rows)
    )
    body = page.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
