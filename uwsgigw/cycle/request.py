"""The request cycle's rules, I/O-free: what every driver decides alike.

A driver moves bytes: the blocking WSGI handler (handler.py), the C core
(csrc/fastpath_core.c, which calls the handler's hooks for every rare turn),
the asyncio worker (asgi/protocol.py) and, later, HTTP. What happens to a
request is decided here, once (h11's ``Connection`` is the model: no sockets,
no clock reads of its own):

* :func:`limit_body` -- ``limit-post``: a body too large for the server;
* :func:`rejection` -- a request we will not run (a protocol error, an
  oversized body): the answer's bytes and the log line;
* :func:`app_failure`, :func:`no_app`, :func:`unfinished` -- a request the app
  did not complete: how it is logged, whether the client gets a 500 or the
  connection a reset (uwsgigw/cycle/ending.py), and whether it counts as an
  exception in the stats;
* :data:`CLIENT_GONE` -- the errors that mean the client left;
* :func:`body_allowed` -- HEAD, 204 and 304 send no body (RFC 9110 9.3.2,
  6.4.1).

* :class:`RequestHead` -- a request read up to its body: what a driver
  knows before the app runs; :class:`Outcome` -- how it leaves its
  connection (reset, bytes still to read, whether another request may follow);

The request log record and the counters live in :mod:`uwsgigw.observe.record`.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

from .. import log
from ..protocol.environ import build_environ
from ..protocol.errors import BodyTooLarge, ClientDisconnected, ProtocolError
from .response import BODILESS, ResponseError, simple_response

# The errors that mean the client (nginx) went away, on any path: a reset or
# a broken pipe while sending, EOF before the whole body, socket-timeout.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ClientDisconnected, TimeoutError)

# The status lines servers and apps send most, ready; the rest of Python's
# http.HTTPStatus names are looked up when first needed (the module and its
# enum would cost every worker memory for codes most never send).
_REASONS = {code: "%d %s" % (code, phrase) for code, phrase in (
    (200, "OK"), (201, "Created"), (202, "Accepted"), (204, "No Content"),
    (206, "Partial Content"), (301, "Moved Permanently"), (302, "Found"),
    (303, "See Other"), (304, "Not Modified"), (307, "Temporary Redirect"),
    (308, "Permanent Redirect"), (400, "Bad Request"), (401, "Unauthorized"),
    (403, "Forbidden"), (404, "Not Found"), (405, "Method Not Allowed"),
    (409, "Conflict"), (410, "Gone"),
    (413, "Content Too Large"),  # RFC 9110's name (Python < 3.13 has the old one)
    (415, "Unsupported Media Type"), (422, "Unprocessable Entity"),
    (429, "Too Many Requests"), (431, "Request Header Fields Too Large"),
    (500, "Internal Server Error"), (501, "Not Implemented"), (502, "Bad Gateway"),
    (503, "Service Unavailable"), (504, "Gateway Timeout"))}
_REASONS_MAX = 1024  # an app inventing statuses cannot grow the table without bound


class RequestHead(namedtuple("RequestHead", ("env", "length", "consumed", "nvars",
                                             "modifier1", "nread", "held"))):
    """A request read up to its body (the C reader builds the same tuple).

    ``env``: the environ (PEP 3333, ``wsgi.input`` not set yet); ``length``:
    CONTENT_LENGTH in bytes (0: none); ``consumed``: bytes of the uwsgi
    packet (4-byte header + vars block); ``nvars``: its items, keys and
    values counted (uWSGI's count); ``modifier1``; ``nread``: bytes read into
    the driver's buffer (the packet, then the start of the body); ``held``:
    how many of those are still in the kernel's queue (uwsgigw/cycle/ending.py).
    """

    __slots__ = ()

    @classmethod
    def from_packet(cls, packet, base_env: dict, nread: int, held: int) -> "RequestHead":
        """From a decoded packet (decoder_c / decoder_py); raises
        BadContentLength for a CONTENT_LENGTH that is not 1-18 digits."""
        env, length = build_environ(base_env, packet.items, packet.modifier1)
        return cls(env, length, packet.consumed, len(packet.items), packet.modifier1,
                   nread, held)

    @property
    def pktsize(self) -> int:
        """Bytes of the vars block (uWSGI's "{N vars in B bytes}")."""
        return self.consumed - 4

    @property
    def own_held(self) -> int:
        """How many of the held bytes are this request's: on a connection
        that carries several, the rest is the next request's start."""
        mine = min(self.nread, self.consumed + self.length)
        return max(0, mine - (self.nread - self.held))


@dataclass(frozen=True)
class Outcome:
    """How a request leaves its connection: what the driver does next.

    The cycle decides; reading, draining and closing are the driver's
    (uwsgigw/cycle/ending.py). ``reset``: close now, with the held tail unread, so
    the peer sees the response cut short. ``unread``: bytes of this request
    still in the kernel's queue (its held tail, a body the app left), to read
    before the connection ends or carries the next request. ``keep_alive``:
    the connection may carry another request -- never on a uwsgi socket
    (nginx opens one per request), but the cycle does not assume it.
    """

    reset: bool
    unread: int
    keep_alive: bool


def outcome(reset: bool, unread: int, protocol_keeps_alive: bool) -> Outcome:
    return Outcome(reset, unread, protocol_keeps_alive and not reset)


def status_line(code: int) -> str:
    """``413`` -> ``"413 Content Too Large"`` (RFC 9110 reason phrases)."""
    text = _REASONS.get(code)
    if text is None:
        from http import HTTPStatus
        try:
            text = "%d %s" % (code, HTTPStatus(code).phrase)
        except ValueError:
            text = "%d Unknown" % code
        if len(_REASONS) < _REASONS_MAX:
            _REASONS[code] = text
    return text


def describe(env: dict) -> str:
    """``METHOD URI`` of a request, for log lines."""
    return "%s %s" % (env.get("REQUEST_METHOD", "-"),
                      env.get("REQUEST_URI", env.get("PATH_INFO", "")))


def body_allowed(head_only: bool, status: int) -> bool:
    """Whether a response may carry a body: not for HEAD (whose headers are
    GET's), nor for 204 and 304."""
    return not head_only and status not in BODILESS


# -- requests we do not run --------------------------------------------------------

def limit_body(length: int, limit_post: int) -> None:
    """``limit-post``: raise BodyTooLarge for a body over the limit (0: none)."""
    if limit_post and length > limit_post:
        raise BodyTooLarge("request body of %d bytes exceeds limit-post %d"
                           % (length, limit_post))


@dataclass(frozen=True)
class Rejection:
    """A request refused before the app: the complete answer and its log line."""

    answer: bytes
    log_key: str  # rate-limit key: one line per kind and second
    message: str


def rejection(exc: ProtocolError) -> Rejection:
    """The answer to a request we will not run: ``exc.status_hint`` as the
    status, the error's text as the body, ``Connection: close``."""
    return Rejection(
        simple_response(status_line(exc.status_hint), str(exc) + "\n",
                        "Connection: close\r\n"),
        type(exc).__name__, "bad request (%s): %s" % (exc.reason, exc))


def log_rejection(rejected: Rejection) -> None:
    log.rate_limited(rejected.log_key, rejected.message, level="WARNING")


def log_read_failure(exc: OSError, timeout: float) -> None:
    """The vars block could not be read (timeout or socket error)."""
    if isinstance(exc, TimeoutError):
        log.rate_limited("read-timeout", "timeout reading the request vars "
                         "after %gs (socket-timeout)" % timeout)
    else:
        log.rate_limited("read-error", "error reading the request: %s" % exc)


def log_incomplete_packet(nbytes: int) -> None:
    """The client closed before a whole packet; silent when it sent nothing."""
    if nbytes:
        log.rate_limited("eof", "client closed the connection after %d bytes "
                         "of an incomplete uwsgi packet" % nbytes)


# -- requests the app did not complete ----------------------------------------------

@dataclass(frozen=True)
class Failure:
    """What a driver does when a request ends badly.

    ``answer``: the body of the 500 (504, ...) to send if the head has not
    gone out yet; None: no answer at all (the client is gone). Once the head
    is out, every failure resets the connection (:meth:`resets`), so nginx
    never passes a truncated body on as complete.
    """

    level: str  # "info", "error" or "exception" (error with the traceback)
    message: str
    status: int = 500  # for the request log
    answer: str | None = "internal server error"
    counts_exception: bool = False  # the stats' "exceptions" of the worker

    def resets(self, head_sent: bool) -> bool:
        return head_sent or self.answer is None

    def answer_parts(self) -> tuple[list, bytes]:
        """The headers and body of this failure's answer (``answer`` set):
        plain text, with its length; the drivers that frame HTTP themselves
        (HTTP sockets, WebSocket handshakes) send them with status_line(status)."""
        body = (self.answer + "\n").encode("utf-8")
        return [("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body)))], body

    def logged_status(self, sent: int) -> int:
        """The status for the request log: the one sent when the client left
        after its head, else this failure's."""
        return sent if self.answer is None and sent else self.status

    def log(self) -> None:
        """Write the log line (in an ``except`` block for "exception")."""
        if not self.message:
            return
        if self.level == "exception":
            log.exception(self.message)
        elif self.level == "error":
            log.error(self.message)
        else:
            log.info(self.message)


def app_failed(exc: BaseException, what: str, count_exception) -> Failure:
    """:func:`app_failure`, logged (with the traceback being handled) and,
    when it is the app's fault, counted by ``count_exception()`` (the
    stats' exceptions); every driver applies the Failure it returns."""
    failure = app_failure(exc, what)
    failure.log()
    if failure.counts_exception:
        count_exception()
    return failure


def app_failure(exc: BaseException, what: str) -> Failure:
    """The app, or sending its answer, raised ``exc`` during request ``what``."""
    if isinstance(exc, ResponseError):
        return Failure("error", "invalid response from the app for %s: %s" % (what, exc),
                       answer="invalid response headers")
    if isinstance(exc, CLIENT_GONE):
        return Failure("info", "client went away during %s: %s" % (
            what, str(exc) or type(exc).__name__), status=499, answer=None)
    return Failure("exception", "exception in the app for %s" % what,
                   counts_exception=True)


def no_app(env: dict) -> Failure:
    return Failure("error", "no application mounted for SCRIPT_NAME=%r PATH_INFO=%r" % (
        env.get("SCRIPT_NAME", ""), env.get("PATH_INFO", "")),
        answer="no application for this URL")


def unfinished(what: str, head_sent: bool) -> Failure:
    """An ASGI app returned without completing its response."""
    if head_sent:
        return Failure("error", "the app returned before completing the response to %s"
                       % what)
    return Failure("error", "the app returned without sending a response to %s" % what,
                   answer="the application sent no response")


def client_left() -> Failure:
    """The app returned after the client went away (it saw http.disconnect)."""
    return Failure("info", "", status=499, answer=None)


def cancelled_for_disconnect(what: str) -> Failure:
    return Failure("info", "%s: client went away; request cancelled" % what, status=499,
                   answer=None)


def cancelled_by_harakiri(seconds: int) -> Failure:
    """The async worker cancelled the request (its own HARAKIRI line is logged
    when it cancels): 504 if nothing was sent yet."""
    return Failure("info", "", status=504,
                   answer="request cancelled by harakiri after %d s" % seconds)


class FailureTurns:
    """The rare turns of a request as a driver's hooks take them (the C
    core calls them: wsgi/fastpath.CoreHooks): logged and classified here;
    the driver says how to answer (``_fail``) and how to count an app's
    exception (``_count_exception``)."""

    def no_app(self, exchange, env: dict) -> None:
        failure = no_app(env)
        failure.log()
        self._fail(exchange, failure)

    def app_failed(self, exchange, env: dict, exc: Exception) -> None:
        """The app, or sending its answer, raised ``exc``: log, answer if possible."""
        self._fail(exchange, app_failed(exc, describe(env), self._count_exception))

    @staticmethod
    def close_failed(exc: Exception) -> None:
        log.exception("exception in the app's close()")

    def _fail(self, exchange, failure: Failure) -> None:
        raise NotImplementedError

    def _count_exception(self) -> None:
        raise NotImplementedError

