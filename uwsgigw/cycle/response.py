"""The response side of PEP 3333: ``start_response``, header validation and
the response head nginx parses.

The status line is always ``HTTP/1.1 <code> <reason>``: we never echo a
client-supplied SERVER_PROTOCOL there. A status or header carrying CR, LF or
NUL would let an app (or the user input it copies into a header) split the
response; such a response is never sent.

Statuses without a body (RFC 9110 6.4.1, 15.3.5, 15.4.5): a 1xx is interim,
never an app's final answer (the app gets a :class:`ResponseError`, the client
a 500); a 204 or 304 goes out without Content-Length or Transfer-Encoding and
without a body, whatever the app returned (:data:`BODILESS`).
"""

from __future__ import annotations

import operator
import os
import re
import stat

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_STATUS = re.compile(r"[1-9][0-9][0-9](?: [^\r\n\0]*)?").fullmatch
_FORBIDDEN = re.compile(r"[\r\n\0]").search
_first = operator.itemgetter(0)
BODILESS = (204, 304)  # the exchanges send their head only
_BODILESS_PREFIX = ("204", "304")
_FRAMING = ("content-length", "transfer-encoding")


class ResponseError(Exception):
    """The app's status or headers cannot be sent; the client gets a 500."""


class HeadersAlreadySent(AssertionError):
    """start_response called again without exc_info (PEP 3333 says: error)."""


class StartResponse:
    """PEP 3333's ``start_response`` for a WSGI exchange with ``pending``
    (the (status, headers) kept until the first write), ``sent`` (the head
    went out) and ``write``; the same for every driver."""

    __slots__ = ()

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.pending is not None:
            raise HeadersAlreadySent("start_response() called twice without exc_info")
        self.pending = (status, headers)
        return self.write


def _find_bad_header(headers) -> str:
    """Explain which header is unsendable (slow path, only after a failure)."""
    for i, header in enumerate(headers):
        if not (isinstance(header, tuple) and len(header) == 2):
            return "header #%d is %r, not a (name, value) tuple" % (i, header)
        name, value = header
        if not isinstance(name, str) or not isinstance(value, str):
            return "header %r: name and value must be str, got %s/%s" % (
                name, type(name).__name__, type(value).__name__)
        if not _TOKEN(name):
            return "header name %r is not an HTTP token" % name
        if _FORBIDDEN(value):
            return "header %r: value contains CR, LF or NUL: %r" % (name, value[:80])
        try:
            name.encode("latin-1")
            value.encode("latin-1")
        except UnicodeEncodeError:
            return "header %r: value %r is not latin-1" % (name, value[:80])
    return "headers %r are invalid" % (headers,)


# Statuses and header names already proven valid. Apps send the same few
# over and over, so one set lookup replaces a regex match per header; the
# caches are bounded so an app echoing client input into names cannot grow
# them without limit.
_good_statuses: set[str] = set()
_good_names: set[str] = set()
_CACHE_MAX = 1024


def _names_valid(headers) -> bool:
    if _good_names.issuperset(map(_first, headers)):
        return True
    names = list(map(_first, headers))
    if not all(isinstance(n, str) and _TOKEN(n) for n in names):
        return False
    if len(_good_names) < _CACHE_MAX:
        _good_names.update(names)
    return True


def _without_framing(headers):
    """A 204/304 has no body to frame: drop Content-Length and
    Transfer-Encoding (RFC 9110 8.6, RFC 9112 6.1). Malformed items stay, so
    validation still names them."""
    if not isinstance(headers, list):
        return headers
    return [h for h in headers if not (type(h) is tuple and len(h) == 2 and
                                       isinstance(h[0], str) and h[0].lower() in _FRAMING)]


def build_head(status, headers) -> tuple[bytes, int]:
    """Validate and serialise; return (head bytes, header count).

    The common case costs a few builtin calls: headers are joined first and
    the join is checked for stray line breaks, names against the token
    grammar (RFC 9110 5.1, cached); only a failure walks the list to name
    the culprit.
    """
    if status not in _good_statuses:
        if not isinstance(status, str) or not _STATUS(status):
            raise ResponseError("invalid status %r: expected '<3 digits> <reason>' "
                                "without CR, LF or NUL" % (status,))
        if status[0] == "1":
            raise ResponseError("status %r is informational (1xx): it cannot be the final "
                                "response (RFC 9110 15.2)" % (status,))
        if len(_good_statuses) < _CACHE_MAX:
            _good_statuses.add(status)
    if headers and status.startswith(_BODILESS_PREFIX):
        headers = _without_framing(headers)
    if not headers:
        if type(headers) is not list:
            raise ResponseError("headers must be a list of (name, value) tuples, got %r"
                                % (headers,))
        try:
            return ("HTTP/1.1 %s\r\n\r\n" % status).encode("latin-1"), 0
        except UnicodeEncodeError:
            raise ResponseError("invalid status %r: not latin-1" % (status,)) from None
    try:
        lines = "\r\n".join(map(": ".join, headers))
        breaks = len(headers) - 1
        if (
            lines.count("\n") != breaks
            or lines.count("\r") != breaks
            or "\0" in lines
            or set(map(len, headers)) != {2}
            or not _names_valid(headers)
        ):
            raise ValueError
        head = ("HTTP/1.1 %s\r\n%s\r\n\r\n" % (status, lines)).encode("latin-1")
    except UnicodeEncodeError:
        try:
            status.encode("latin-1")
        except UnicodeEncodeError:
            raise ResponseError("invalid status %r: not latin-1" % (status,)) from None
        raise ResponseError(_find_bad_header(headers)) from None
    except (TypeError, ValueError):
        raise ResponseError(_find_bad_header(headers)) from None
    return head, len(headers)


def simple_response(status: str, body: str, extra: str = "") -> bytes:
    """A complete server-generated answer (errors, rejections)."""
    data = body.encode("utf-8")
    return (
        "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Length: %d\r\n%s\r\n" % (status, len(data), extra)
    ).encode("latin-1") + data


class FileWrapper:
    """``wsgi.file_wrapper``: lets the server ``sendfile()`` a real file.

    Iterating it (what middleware that rewrites bodies does) still works.
    ``length`` (bytes, None: to EOF) bounds what is sent from the file's
    current position: static files set it for a byte range (cycle/static_app.py).
    """

    __slots__ = ("filelike", "blksize", "length")

    def __init__(self, filelike, blksize: int = 65536):
        self.filelike = filelike
        self.blksize = blksize
        self.length: int | None = None

    def __iter__(self):
        read = self.filelike.read
        left = self.length
        while left is None or left > 0:
            data = read(self.blksize if left is None else min(self.blksize, left))
            if not data:
                return
            if left is not None:
                left -= len(data)
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def sendfile_fd(wrapper: FileWrapper) -> int | None:
    """The descriptor to ``sendfile()`` from, or None to iterate instead.

    Only regular files qualify: sendfile from a pipe or socket would block
    or fail, and a BytesIO has no descriptor at all.
    """
    fileno = getattr(wrapper.filelike, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        pass
    return None
