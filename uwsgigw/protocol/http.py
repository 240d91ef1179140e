"""HTTP/1.0 and 1.1 requests, sans-IO: bytes in, request events out.

The parsing is llhttp's (through httptools, as Uvicorn does): a parser that
has met every request-smuggling test suite there is, in strict mode. It
already refuses Content-Length with Transfer-Encoding, repeated or malformed
Content-Length, a ``chunked`` that is not the final coding, obs-fold,
whitespace before a colon, bare CR or LF and NUL in values, and chunk sizes
that overflow (RFC 9112 6.1, 6.3, 5.1, 5.2). This module adds what llhttp
leaves to the server: versions other than 1.0/1.1 (505), a missing or
repeated Host on 1.1 (400), codings other than ``chunked`` (501), the size
of the head (431: ``buffer-size``) and of the target (414), and it drops
header names with ``_`` (they would pose as the dashed header in the
environ: ``X_Forwarded_For`` as ``HTTP_X_FORWARDED_FOR``).

:class:`RequestParser` is fed what the socket gives and yields, in order,
for each request: :class:`HttpHead`, its body's bytes (de-chunked), and
:data:`END`. Pipelined requests simply follow each other.
"""

from __future__ import annotations

from collections import deque
from urllib.parse import unquote_to_bytes

import httptools

from .errors import ProtocolError

END = object()  # the request's body is complete


class HttpError(ProtocolError):
    """The request breaks HTTP/1.1; answered with ``status_hint``, then the
    connection is closed (its framing can no longer be trusted)."""

    reason = "bad-http-request"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status


class HttpHead:
    """A request's line and headers (RFC 9112 3, 5).

    ``headers``: [(name, value)] as bytes, names lower-cased, in order, those
    with ``_`` left out; ``content_length``: the body's size when the request
    gave one, None for a chunked body, 0 for none; ``keep_alive``: what the
    request allows (its version and Connection header); ``expect_continue``:
    ``Expect: 100-continue``.
    """

    __slots__ = ("method", "target", "version", "headers", "content_length", "chunked",
                 "keep_alive", "expect_continue", "host", "size")

    def __init__(self, method: str, target: str, version: str, headers: list,
                 content_length: int | None, chunked: bool, keep_alive: bool,
                 expect_continue: bool, host: str | None, size: int) -> None:
        self.method = method
        self.target = target  # the raw request-target, latin-1 (REQUEST_URI)
        self.version = version  # "1.0" or "1.1"
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.host = host
        self.size = size  # bytes of the request line and headers

    def describe(self) -> str:
        return "%s %s" % (self.method, self.target)


class RequestParser:
    """Incremental parser of one connection's requests.

    ``max_head``: the largest request line + headers accepted (431 past it);
    ``max_target``: the largest request-target (414). A request it refuses
    raises :class:`HttpError` (a ProtocolError) from :meth:`next_event`, once
    the events of the requests before it are taken.
    """

    def __init__(self, max_head: int, max_target: int = 16384) -> None:
        self.max_head = max_head
        self.max_target = max_target
        self.events: deque = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._upgraded = False
        self.trailing = b""  # after an Upgrade head: the bytes that followed it
        self._error: ProtocolError | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list = []
        self._head_bytes = 0
        self._in_head = False
        self._host_count = 0

    # -- input ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``. A refused request does not raise here but from
        :meth:`next_event`, after the events of the requests before it: a
        pipelined request that is fine is answered before its bad successor."""
        if self._error is not None:
            return  # nothing after a refused request is parsed
        if self._upgraded:
            self.trailing += data  # the switched-to protocol's bytes
            return
        in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # An Upgrade request: the bytes after its head are not HTTP (a
            # WebSocket client may send its first frame at once): kept for
            # the protocol switched to.
            self._upgraded = True
            self.trailing = bytes(data[exc.args[0]:]) if exc.args else b""
        except httptools.HttpParserCallbackError as exc:
            self._error = (exc.__context__ if isinstance(exc.__context__, ProtocolError)
                           else HttpError("bad request: %s" % exc))
            return
        except httptools.HttpParserError as exc:
            self._error = HttpError("bad request: %s" % exc)
            return
        if self._in_head:
            # A head still arriving: bound the bytes llhttp holds for it. Only
            # whole feeds spent inside a head count, so a feed that also held
            # a body is never blamed; the head's own size is checked exactly
            # when it completes (on_headers_complete).
            self._head_bytes += len(data) if in_head else self._parsed_size()
            if self._head_bytes > self.max_head:
                self._error = self._too_large()

    @property
    def upgraded(self) -> bool:
        """The connection switched protocols after the last head (Upgrade):
        what follows it is not HTTP and was not parsed."""
        return self._upgraded

    @property
    def idle(self) -> bool:
        """Between requests: nothing of a next one parsed or held."""
        return not (self.events or self._in_head or self._upgraded or
                    self._error is not None)

    def next_event(self):
        """The next event, or None until more bytes are fed; raises the
        refused request's error once the events before it are taken."""
        if self.events:
            return self.events.popleft()
        if self._error is not None:
            raise self._error
        return None

    def _parsed_size(self) -> int:
        """The size of the request line and headers parsed so far (RFC 9112:
        method SP target SP version CRLF, name ": " value CRLF, CRLF)."""
        return (len(self._parser.get_method() or b"") + len(self._url) + 12 +
                sum(len(n) + len(v) + 4 for n, v in self._headers) + 2)

    def _too_large(self) -> HttpError:
        if len(self._url) >= self.max_head:  # the target alone: 414, however it was read
            return HttpError("request-target over %d bytes (buffer-size)" % self.max_head, 414)
        return HttpError("request head over %d bytes (buffer-size)" % self.max_head, 431)

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.max_target:
            raise HttpError("request-target over %d bytes" % self.max_target, 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= 1000:
            raise HttpError("more than 1000 header fields", 431)
        name = name.lower()
        if b"_" in name:
            # HTTP_X_FORWARDED_FOR could then come from "X_Forwarded_For"
            # as well as "X-Forwarded-For"; nginx drops them too.
            return
        if name == b"host":
            self._host_count += 1
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError("HTTP/%s is not supported (HTTP/1.0 and 1.1 are)" % version, 505)
        if self._host_count > 1:
            raise HttpError("more than one Host header")
        host = None
        chunked = False
        content_length = 0
        expect = False
        for name, value in self._headers:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                if codings[-1] != b"chunked":  # the body's length is unknown (RFC 9112 6.3)
                    raise HttpError("Transfer-Encoding %r does not end with chunked"
                                    % value.decode("latin-1"))
                if len(codings) > 1:  # gzip, ... before it: not decoded here (RFC 9112 6.1)
                    raise HttpError("Transfer-Encoding %r: only chunked is supported"
                                    % value.decode("latin-1"), 501)
                chunked = True
            elif name == b"content-length":
                content_length = int(value)  # llhttp validated the digits
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        if version == "1.1" and host is None:
            raise HttpError("HTTP/1.1 request without Host")
        size = self._parsed_size()
        if size > self.max_head:
            raise self._too_large()
        self._in_head = False
        method = parser.get_method().decode("ascii")
        self.events.append(HttpHead(
            method, self._url.decode("latin-1"), version, self._headers,
            None if chunked else content_length, chunked,
            parser.should_keep_alive() and not parser.should_upgrade(), expect, host, size))

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)


def websocket_upgrade(head: HttpHead) -> bool:
    """Whether ``head`` asks to switch to the WebSocket protocol (RFC 6455
    4.1: an HTTP/1.1 GET with ``Upgrade: websocket``); the rest of the
    handshake is checked by the WebSocket driver."""
    if head.method != "GET" or head.version != "1.1":
        return False
    for name, value in head.headers:
        if name == b"upgrade" and any(token.strip().lower() == b"websocket"
                                      for token in value.split(b",")):
            return True
    return False


# -- the environ (PEP 3333) ------------------------------------------------------------

_COOKIE = b"cookie"
# Headers CGI names without HTTP_ (RFC 3875 4.1): the body's framing and type.
_CGI_NAMES = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


def environ_vars(head: HttpHead, server: tuple[str, str], peer: tuple[str, str]) -> dict:
    """The CGI vars of an HTTP request, as nginx's uwsgi_params would send them.

    ``server``: (SERVER_NAME, SERVER_PORT) of the listener, used when the
    request has no Host; ``peer``: (REMOTE_ADDR, REMOTE_PORT). PATH_INFO is
    the target's path percent-decoded, then read as latin-1 (PEP 3333);
    REQUEST_URI stays raw. Repeated headers are joined with ", " ("; " for
    Cookie, RFC 6265). CONTENT_LENGTH is left to the caller, who knows the
    body's real size once it is read (a chunked body has none here).
    """
    target = head.target
    if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
        _, _, rest = target.partition("//")
        _, slash, path_query = rest.partition("/")
        target = slash + path_query if slash else "/"
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    env = {
        "REQUEST_METHOD": head.method,
        "REQUEST_URI": head.target,
        "PATH_INFO": unquote_to_bytes(path.encode("latin-1")).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/" + head.version,
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": peer[1],
    }
    name, port = server
    if head.host:
        host = head.host
        if host.startswith("["):  # [v6]:port
            end = host.find("]")
            name, rest = host[:end + 1], host[end + 1:]
            if rest.startswith(":") and rest[1:].isdigit():
                port = rest[1:]
        elif ":" in host:
            name, _, p = host.rpartition(":")
            if p.isdigit():
                port = p
        else:
            name = host
    env["SERVER_NAME"] = name
    env["SERVER_PORT"] = port
    for key, value in head.headers:
        cgi = _CGI_NAMES.get(key)
        if cgi is not None:
            if cgi == "CONTENT_TYPE":
                env[cgi] = value.decode("latin-1")
            continue
        var = "HTTP_" + key.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if var in env:
            env[var] += ("; " if key == _COOKIE else ", ") + text
        else:
            env[var] = text
    return env
