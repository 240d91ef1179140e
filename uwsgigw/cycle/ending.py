"""How a response's end reaches nginx: a clean end, or a visibly cut one.

nginx decides from the upstream connection alone whether a uwsgi response is
complete (ngx_http_upstream.c): with a Content-Length, fewer bytes then EOF
is an error; without one, EOF is the normal end and only a read error
(ECONNRESET) or ``uwsgi_read_timeout`` aborts the client's response. So an
app that fails after its headers went out must end the connection with a
reset, or nginx hands the client a truncated body as a complete one.

Linux resets a connection whose socket is closed with unread data in its
receive queue, on unix sockets as on TCP (``SO_LINGER`` works on TCP only).
Hence **the held tail**: the readers leave the request's last byte in the
kernel's queue (``MSG_PEEK``, csrc/fastpath_environ.c ``read_request``,
:mod:`uwsgigw.cycle.body`) until the response is complete.

* :func:`finish` -- the response is complete: ``shutdown(SHUT_WR)`` so that
  nginx sees the end now, even when a process the app forked still holds
  the descriptor; then read what is still queued of the request (the held
  tail, a body the app did not read; bounded) so the close is clean.
* an abort is just the close, without :func:`finish`: the queued tail
  makes it a reset. It also happens when the worker dies (harakiri, a
  crash, ``reload-mercy`` running out): the kernel closes for it.

A child process that inherited the connection keeps it open after the
worker's close; its end then comes when the child exits (or closes it).
"""

from __future__ import annotations

import socket
import time

from .body import drain_socket

_DONTWAIT = socket.MSG_DONTWAIT


def finish(conn: socket.socket, unread: int, timeout: float) -> bool:
    """End a completed response cleanly; ``unread`` is how many bytes of the
    request are still queued (-1: read until EOF). True if all were read
    within ``timeout`` seconds; the caller closes either way."""
    try:
        conn.shutdown(socket.SHUT_WR)
        if unread > 0:  # the held tail is queued already: no wait, no poll
            try:
                unread -= len(conn.recv(min(unread, 65536), _DONTWAIT))
            except BlockingIOError:
                pass
        if unread == 0:
            return True
        conn.settimeout(timeout)
    except OSError:
        return False  # the peer is gone: nothing to tell it
    return drain_socket(conn, unread, time.monotonic() + timeout)
