"""``wsgi.file_wrapper`` bodies on HTTP connections: sendfile, and the rest
of a slow download sent from the event loop.

A static file (cycle/static_app.py) or an app's FileWrapper answered on the
HTTP listener's C path goes out with ``sendfile()`` as far as the socket
takes it at once. The rest of a file the client is slow to take is then an
:class:`Offload`: the loop writes it as the socket drains, while the worker
(the loop's thread with ``threads = 1``, the pool thread with more) serves
other requests -- a slow downloader costs a descriptor, not a thread (what
uWSGI's ``offload-threads`` are for). The loop cuts a download that makes no
progress for ``socket-timeout``.

The exchange is told the body is complete when the rest is handed over
(``body_sent``, ``tx``: the request log counts the bytes it planned to
send, as uWSGI logs an offloaded transfer), and ``offloaded`` makes
``Core.serve_http`` stop its batch until the file has gone out (a pool
thread returns it to the loop with its answer: http_front.run_in_thread).
"""

from __future__ import annotations

import os

from .. import log
from ..cycle import request
from ..cycle.response import sendfile_fd

_BODY_LENGTH = 0  # exchange.mode: Content-Length framing (csrc/fastpath.h FP_BODY_*)
_CHUNK = 1 << 20


def send_file(exchange, wrapper, env: dict | None = None) -> Offload | None:
    """Send ``wrapper``'s file as ``exchange``'s body (the C Exchange of an
    HTTP connection with a non-blocking socket). Returns an Offload holding
    the rest when the socket would block, else None once all went out;
    ``env``: the request's environ, named in an offload's log line. Raises OSError when the client is gone (the request's
    failure turns handle it as for any write)."""
    fd = sendfile_fd(wrapper)
    if fd is None or exchange.head_only:
        exchange.send_result(iter(wrapper))
        return None
    exchange.write(b"")  # the head: now the framing is known
    if exchange.mode != _BODY_LENGTH:  # chunked, or to the close: the bytes need framing
        exchange.send_result(iter(wrapper))
        return None
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    left = exchange.length - exchange.body_sent
    if wrapper.length is not None:
        left = min(left, wrapper.length)
    left = max(0, min(left, os.fstat(fd).st_size - offset))
    out = exchange.fd
    while left > 0:
        try:
            sent = os.sendfile(out, fd, offset, min(left, _CHUNK))
        except BlockingIOError:
            exchange.body_sent += left
            exchange.tx += left
            exchange.offloaded = True
            exchange.finish()
            return Offload(os.dup(fd), offset, left, exchange,
                           request.describe(env) if env else "")
        if sent == 0:
            break  # the file shrank under us: the short body shows the cut
        offset += sent
        left -= sent
        exchange.body_sent += sent
        exchange.tx += sent
    exchange.finish()
    return None


class Offload:
    """The rest of a file for the loop to send: ``count`` bytes of ``fd``
    (ours: a dup, closed at the end) from ``offset``, for ``exchange``'s
    connection. :meth:`step` sends what the socket takes."""

    __slots__ = ("fd", "offset", "left", "exchange", "total", "progress", "what")

    def __init__(self, fd: int, offset: int, count: int, exchange, what: str = "") -> None:
        self.fd, self.offset, self.left, self.exchange = fd, offset, count, exchange
        self.total = count
        self.what = what
        self.progress = 0.0  # loop time of the last bytes taken (the caller sets it)

    def step(self, now: float) -> bool | None:
        """Send what the socket takes: True when all went, None when it
        must wait for the socket again, False when the download is over
        (the client left, or the file shrank: one INFO line; close)."""
        out = self.exchange.fd
        while self.left > 0:
            try:
                sent = os.sendfile(out, self.fd, self.offset, min(self.left, _CHUNK))
            except BlockingIOError:
                return None
            except OSError as exc:
                self._cut("client went away", exc.strerror or str(exc))
                return False
            if sent == 0:
                self._cut("file shrank", "the rest is missing")
                return False
            self.offset += sent
            self.left -= sent
            self.progress = now
        return True

    def timed_out(self, timeout: float) -> None:
        self._cut("client went away", "no progress in %gs (socket-timeout)" % timeout)

    def _cut(self, what: str, why: str) -> None:
        # request.py's words for a client gone mid-response, with the bytes
        # (the request line, logged when the rest was handed over, counts all)
        log.info("%s during %s: %d of the file's last %d bytes sent (offloaded): %s"
                 % (what, self.what or "a file download", self.total - self.left,
                    self.total, why))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["Offload", "send_file"]
