"""The C hot path (``uwsgigw._fastpath``, csrc/fastpath.c), wired to the
Python pieces it defers to.

Part of the "c" backend (decoder.py): with it, a worker accepts a
connection as a bare descriptor, reads, decodes and builds the environ in
one C call, and sends the response head and body with one ``sendmsg()``.
Anything unusual (a packet not complete in the first read, a protocol
error, an invalid response header) goes back to the Python code that
explains it; tests/test_fastpath.py checks both give the same results.

Importing raises ImportError when the extension is not built.
"""

from __future__ import annotations

from . import _fastpath
from .response import FileWrapper, HeadersAlreadySent, ResponseError, build_head
from .scoreboard import CoreSlot

_fastpath.init(ResponseError, HeadersAlreadySent, build_head, FileWrapper)
# Core writes the scoreboard slot in place: tell it where the fields are.
_fastpath.slot_layout(CoreSlot.busy_since.offset, CoreSlot.requests.offset,
                      CoreSlot.tx.offset, CoreSlot.rt_total.offset, CoreSlot.rt_count.offset)

accept = _fastpath.accept
read_request = _fastpath.read_request
environ_from = _fastpath.environ_from
Exchange = _fastpath.Exchange
uwsgi_line = _fastpath.uwsgi_line  # reqlog's default line, built in C
Core = _fastpath.Core  # a request without a body, start to end (handler.py)

__all__ = ["accept", "read_request", "environ_from", "Exchange", "uwsgi_line", "Core"]
