"""The C hot path (``uwsgigw._fastpath``, csrc/fastpath*.c) and its seam
with Python: the one place that says what C may call and what it reads.

Part of the "c" backend (backend.py): with it, a worker accepts a connection
as a bare descriptor, reads, decodes and builds the environ in one C call,
and sends the response head and body with one ``sendmsg()``. A request
without a body runs start to end in C (:class:`Core`); anything unusual (a
body to read, a protocol error, an invalid response header) goes back to
the Python code that explains it; tests/test_fastpath.py checks both give
the same results.

What crosses the seam:

* :class:`CoreHooks` -- the public methods C calls for a request's rare
  turns (handler.ConnectionHandler implements them), and the ``env``
  attribute it sets while a request runs (for USR2's dump);
* :class:`CoreSettings` -- read once, when a Core is made: nothing is looked
  up by name per request;
* :class:`uwsgigw.cycle.request.RequestHead` and :class:`uwsgigw.observe.record.RequestRecord`,
  which C reads and builds by position (``init`` checks their fields).

Importing raises ImportError when the extension is not built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .. import _fastpath
from ..cycle import framing
from ..cycle.framing import http_head
from ..cycle.request import RequestHead
from ..cycle.response import FileWrapper, HeadersAlreadySent, ResponseError, build_head
from ..observe import reqlog
from ..observe.record import RequestRecord
from ..observe.scoreboard import REQ_SIZE, CoreSlot

reqlog.use_c_line(_fastpath.uwsgi_line)  # the default request line, built in C
_fastpath.init(ResponseError, HeadersAlreadySent, build_head, FileWrapper, RequestHead,
               RequestRecord,
               # Core writes the scoreboard slot in place: where its fields are.
               (CoreSlot.busy_since.offset, CoreSlot.requests.offset, CoreSlot.tx.offset,
                CoreSlot.rt_total.offset, CoreSlot.rt_count.offset, CoreSlot.req.offset,
                REQ_SIZE))
_fastpath.init_http(http_head)  # the HTTP responses C leaves to Python
framing.use_c_frame(_fastpath.http_frame)  # and the common ones, for Python's drivers


class CoreHooks(Protocol):
    """What the C core calls back, each with the exception being handled set
    where there is one (so ``log.exception`` sees its traceback)."""

    env: dict | None  # the running request's environ, None between requests

    def no_app(self, exchange: Any, env: dict) -> None: ...

    def app_failed(self, exchange: Any, env: dict, exc: Exception) -> None: ...

    def close_failed(self, exc: Exception) -> None: ...

    def send_file(self, exchange: Any, wrapper: FileWrapper) -> None: ...


@dataclass(frozen=True)
class CoreSettings:
    """What a :class:`Core` reads once, when it is made."""

    buffer: bytearray  # the thread's read buffer
    max_block: int  # buffer-size, capped at 65535
    base_environ: dict
    socket_timeout: float  # seconds
    pick_app: Callable[[dict], Any]  # environ -> WSGI app or None
    new_input: Callable[[], Any]  # io.BytesIO: wsgi.input of a request without a body
    slot_address: int  # this core's scoreboard.CoreSlot
    total_address: int  # the server's request count (server.SharedCounter)
    track_requests: bool  # write "METHOD URI" to the slot (harakiri logs it)
    line_fd: int  # >= 0: C writes uWSGI's default request line there
    emit: Callable[[RequestRecord], None] | None  # else: the record goes here
    pid: int
    worker_id: int
    core: int  # the thread's index in the worker
    # HTTP sockets (Core.serve_http, asgi/http_front.py):
    http_keepalive: bool  # http-keepalive: False closes after every answer
    forwarded: Callable[[dict], None] | None  # X-Forwarded-* of a trusted peer
    stop_flag_address: int  # a C int set by the stop-signal handler (0: none)
    # uwsgi sockets: repeat static-map hits answered in C (csrc/fastpath_static.c)
    static_cache: Any = None  # a StaticCache, or None


accept = _fastpath.accept
read_request = _fastpath.read_request
environ_from = _fastpath.environ_from
Exchange = _fastpath.Exchange
uwsgi_line = _fastpath.uwsgi_line  # reqlog's default line, built in C
Core = _fastpath.Core  # Core(hooks, settings).serve(fd): a request without a body
StaticCache = _fastpath.StaticCache  # plain static-map answers Core.serve sends again
http_parse = _fastpath.http_parse  # the C HTTP head parser (tests)
http_environ = _fastpath.http_environ  # its environ (tests)
http_date = _fastpath.http_date

__all__ = ["accept", "read_request", "environ_from", "Exchange", "uwsgi_line", "Core",
           "CoreHooks", "CoreSettings", "StaticCache", "http_parse", "http_environ", "http_date"]
