"""Typed protocol errors, each carrying the HTTP status the worker answers with.

Modelled on h11's ``ProtocolError``: the worker maps ``exc.status_hint`` to a
response and ``exc.reason`` to a log code instead of an isinstance ladder.

The decoder errors take structured arguments (var index, packet offset,
sizes) and build their message here, so the C and the Python decoder raise
byte-identical messages by construction; the differential tests check that
both backends pass the same numbers. ``BadContentLength`` and
``BodyTooLarge`` are raised with a plain message by the environ builder and
the worker.

One error here is not the client's fault but its leaving:
:class:`ClientDisconnected`, an ``OSError``.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError",
    "NeedData",
    "HttpOnUwsgiSocket",
    "BadModifier",
    "BlockTooLarge",
    "EmptyKey",
    "TruncatedVar",
    "TrailingBytes",
    "TooManyVars",
    "BadContentLength",
    "BodyTooLarge",
    "ClientDisconnected",
]


class ProtocolError(Exception):
    """The client (nginx, or whatever connected) broke the uwsgi protocol."""

    status_hint: int = 400
    reason: str = "bad request"


class NeedData:
    """Sentinel type for "more bytes needed" (h11's NEED_DATA).

    Not an exception: ``decode()`` signals it by returning ``None``; the class
    exists so callers and docs can name the state.
    """

    def __repr__(self) -> str:
        return "NeedData"


class _StructuredError(ProtocolError):
    """A ProtocolError built from numbers; keeps them so that it pickles."""

    def __init__(self, message: str, *ctor_args: object) -> None:
        super().__init__(message)
        self._ctor_args = ctor_args

    def __reduce__(self):  # Exception would re-create it from (message,)
        return (type(self), self._ctor_args)


class HttpOnUwsgiSocket(_StructuredError):
    """The packet starts like an HTTP request line, or its datasize is 21573.

    21573 is ``b"ET"`` read as u16le, i.e. ``b"GET "``: uWSGI users know the
    number from its ``invalid request block size: 21573`` log line.
    """

    reason = "http-on-uwsgi-socket"

    def __init__(self, head: bytes) -> None:
        self.head = head
        super().__init__(
            "an HTTP client reached the uwsgi socket (packet starts %r): nginx "
            "must use uwsgi_pass, not proxy_pass, and browsers must go through "
            "nginx" % (head,),
            head,
        )


class BadModifier(_StructuredError):
    """modifier1 is not 0 (WSGI) or 30 (strip SCRIPT_NAME), or modifier2 != 0."""

    reason = "bad-modifier"

    def __init__(self, modifier1: int, modifier2: int) -> None:
        self.modifier1 = modifier1
        self.modifier2 = modifier2
        super().__init__(
            "unsupported packet modifiers %d/%d: only modifier1 0 or 30 with "
            "modifier2 0 are served" % (modifier1, modifier2),
            modifier1, modifier2,
        )


class BlockTooLarge(_StructuredError):
    """datasize > buffer-size. Wording follows uWSGI's log line."""

    status_hint = 431
    reason = "block-too-large"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            "invalid request block size: %d (max %d); raise buffer-size "
            "(up to 65535) to accept requests with larger headers" % (size, limit),
            size, limit,
        )


class EmptyKey(_StructuredError):
    """A var with a zero-length key (uWSGI: "uwsgi key cannot be null")."""

    reason = "empty-key"

    def __init__(self, index: int, offset: int) -> None:
        self.index = index
        self.offset = offset
        super().__init__(
            "var %d has an empty key (key length 0 at packet offset %d)" % (index, offset),
            index, offset,
        )


class TruncatedVar(_StructuredError):
    """A key, value length or value runs past the end of the vars block."""

    reason = "truncated-var"

    def __init__(self, index: int, field: str, offset: int, need: int, left: int) -> None:
        self.index = index
        self.field = field  # "key", "value length" or "value"
        self.offset = offset
        self.need = need
        self.left = left
        super().__init__(
            "var %d is truncated: its %s at packet offset %d needs %d bytes, "
            "the block has %d left" % (index, field, offset, need, left),
            index, field, offset, need, left,
        )


class TrailingBytes(_StructuredError):
    """Bytes after the last var that cannot start another one.

    Only a single byte can be "trailing": two or more are read as a key
    length and fail as EmptyKey or TruncatedVar instead. On the wire this is
    also what a truncated key length looks like.
    """

    reason = "trailing-bytes"

    def __init__(self, count: int, offset: int, nvars: int) -> None:
        self.count = count
        self.offset = offset
        self.nvars = nvars
        super().__init__(
            "%d trailing byte%s at packet offset %d after %d vars: too short for "
            "a 2-byte key length" % (count, "" if count == 1 else "s", offset, nvars),
            count, offset, nvars,
        )


class TooManyVars(_StructuredError):
    """More vars than any real request has; bounds the work per packet."""

    reason = "too-many-vars"

    def __init__(self, limit: int, offset: int) -> None:
        self.limit = limit
        self.offset = offset
        super().__init__(
            "more than %d vars in the request block (var %d starts at packet "
            "offset %d)" % (limit, limit, offset),
            limit, offset,
        )


class BadContentLength(ProtocolError):
    """CONTENT_LENGTH is not 1-18 ASCII digits (raised by the environ builder)."""

    reason = "bad-content-length"


class BodyTooLarge(ProtocolError):
    """The body exceeds limit-post (raised by the worker)."""

    status_hint = 413
    reason = "body-too-large"


class ClientDisconnected(OSError):
    """The client (nginx) closed the connection: before the whole request body
    arrived, or while the response was being sent. An ``OSError``, as the ASGI
    spec (2.4) wants from ``send()`` once the client is gone."""
