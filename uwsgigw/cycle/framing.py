"""How an HTTP response is framed, I/O-free (RFC 9112 6, 9; RFC 9110 6.6.1).

On a uwsgi socket nginx frames the client's response; on an HTTP socket the
server does: a body with the app's Content-Length is sent as it is; one
without is chunked on HTTP/1.1 and close-delimited on HTTP/1.0; HEAD, 204
and 304 carry none. :func:`http_head` turns the app's status and headers
into the head to send and says how the body goes and whether the connection
may carry another request. The app's own framing and hop-by-hop headers
(Transfer-Encoding, Connection, Keep-Alive) are replaced by the server's;
``Connection: close`` from the app is honoured.
"""

from __future__ import annotations

import time

from .response import BODILESS, ResponseError, build_head

# How the body goes (Framing.mode).
LENGTH = "length"  # exactly Content-Length bytes
CHUNKED = "chunked"  # chunked transfer coding, ended by a zero chunk
CLOSE = "close"  # until the connection closes (HTTP/1.0 without a length)
NONE = "none"  # no body at all (HEAD, 204, 304)

_HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "trailer",
                         "upgrade", "proxy-connection"))
_LAST_CHUNK = b"0\r\n\r\n"


class Framing:
    """The head of a response and how its body goes.

    ``head``: the bytes to send; ``mode``: LENGTH, CHUNKED, CLOSE or NONE;
    ``length``: the Content-Length for LENGTH; ``keep_alive``: the connection
    may carry another request once this response is complete.
    """

    __slots__ = ("head", "headers_count", "mode", "length", "keep_alive")

    def __init__(self, head: bytes, headers_count: int, mode: str, length: int,
                 keep_alive: bool) -> None:
        self.head = head
        self.headers_count = headers_count
        self.mode = mode
        self.length = length
        self.keep_alive = keep_alive

    def encode(self, data: bytes) -> bytes:
        """A piece of the body as it goes on the wire."""
        if self.mode == CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        return data

    def end(self) -> bytes:
        """What ends the body (the last chunk), or b""."""
        return _LAST_CHUNK if self.mode == CHUNKED else b""


_date_cache = (-1, "")


def http_date(now: float | None = None) -> str:
    """The Date header's value (RFC 9110 5.6.7), formatted once per second."""
    global _date_cache
    sec = int(time.time() if now is None else now)
    cached = _date_cache
    if cached[0] != sec:
        cached = _date_cache = (sec, time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                   time.gmtime(sec)))
    return cached[1]


_c_frame = None  # the C twin of the common case (use_c_frame)


def use_c_frame(frame) -> None:
    """Let ``frame`` (the C backend's ``http_frame``) build the heads it can:
    the same bytes, faster (tests/test_http_fast.py compares them); it
    returns None for the rest, which the code below decides."""
    global _c_frame
    _c_frame = frame


def http_head(status: str, headers: list, version: str, head_only: bool,
              keep_alive: bool) -> Framing:
    """Frame the app's response to an HTTP/``version`` request.

    ``keep_alive``: whether the request and the server allow another request
    on the connection. Raises ResponseError (from response.build_head) for an
    unsendable status or header, or a Content-Length that is not a number.
    """
    if _c_frame is not None:
        framed = _c_frame(status, headers, version, head_only, keep_alive)
        if framed is not None:
            return Framing(*framed)
    if type(headers) is not list:
        build_head(status, headers)  # the same error as on a uwsgi socket
    code = int(status[:3]) if isinstance(status, str) and status[:3].isdigit() else 0
    length = -1
    own = []
    for header in headers:
        name = header[0].lower() if type(header) is tuple and len(header) == 2 and \
            isinstance(header[0], str) else ""
        if name in _HOP_BY_HOP:
            if name == "connection" and "close" in str(header[1]).lower():
                keep_alive = False
            continue
        if name == "content-length":
            value = header[1]
            if not (isinstance(value, str) and value.strip().isdigit()):
                raise ResponseError("header %r: Content-Length must be a number" % (header,))
            if length >= 0 and int(value) != length:
                raise ResponseError("two different Content-Length headers")
            if length >= 0:
                continue  # the same value twice: send it once
            length = int(value)
        own.append(header)
    if head_only or code in BODILESS or 100 <= code < 200:
        mode = NONE
    elif length >= 0:
        mode = LENGTH
    elif version == "1.1":
        mode = CHUNKED
        own.append(("Transfer-Encoding", "chunked"))
    else:
        mode, keep_alive = CLOSE, False
    if not any(h[0].lower() == "date" for h in own if type(h) is tuple and h and
               isinstance(h[0], str)):
        own.append(("Date", http_date()))
    if keep_alive:
        if version == "1.0":
            own.append(("Connection", "keep-alive"))
    else:
        own.append(("Connection", "close"))
    head, count = build_head(status, own)
    return Framing(head, count, mode, length, keep_alive)
