"""The request record and the per-request counters, the same for every driver.

Every finished request -- WSGI on the C core or the Python path, ASGI, a WSGI
app in the async worker's thread pool -- is counted by :func:`account` and
described by one :class:`RequestRecord`, which the request log's one
:func:`uwsgigw.observe.reqlog.emit` formats. (The C core keeps the record as a C
struct of the same fields and builds this tuple only when a Python formatter
needs it: csrc/fastpath_core.c, ``fp_record``; it counts with a C twin of
:func:`account`; tests/test_request_log_paths.py checks both count alike.)

Fields (units):

====================  ============================================================
env                   the request's environ (PEP 3333 native strings)
status                the response status sent (or logged: 499 client gone)
tx                    bytes sent: head and body
head_size             bytes of the status line and headers
headers_count         response headers
nvars                 uwsgi vars in the request, keys and values counted (uWSGI's)
pktsize               bytes of the vars block (the packet without its 4-byte header)
modifier1             the packet's modifier1
started               when the request started, epoch seconds
elapsed               seconds from start to the response's end
pid, worker_id, core  who served it (worker id from 1, core = thread index)
requests              requests this core has served, this one included
total                 requests the server has served, this one included
====================  ============================================================
"""

from __future__ import annotations

import ctypes
import mmap
from collections import namedtuple

FIELDS = ("env", "status", "tx", "head_size", "headers_count", "nvars", "pktsize",
          "modifier1", "started", "elapsed", "pid", "worker_id", "core", "requests",
          "total")

RequestRecord = namedtuple("RequestRecord", FIELDS)


def account(slot, tx: int, elapsed: float, count_request) -> tuple[int, int]:
    """Count one finished request on its core's scoreboard slot, whatever its
    status and whether or not it is logged: the stats' requests, tx and
    avg_rt read these. ``count_request()`` bumps the server's total.
    Returns (this core's requests, the server's total)."""
    requests = slot.requests + 1
    slot.requests = requests
    slot.rt_total += elapsed
    slot.rt_count = requests
    slot.tx += tx
    return requests, count_request()


class SharedCounter:
    """The server-wide request total (``req: R/T`` in the log), in memory the
    master and every worker share (the C core increments the same word).

    Increments are plain memory writes without a lock: like uWSGI's own
    counters, a rare lost update skews a log figure, never behaviour.
    """

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, 8)
        self._value = ctypes.c_uint64.from_buffer(self._mem)

    @property
    def address(self) -> int:
        return ctypes.addressof(self._value)

    def incr(self) -> int:
        value = self._value.value + 1
        self._value.value = value
        return value
