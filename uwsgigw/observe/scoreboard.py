"""The scoreboard: per-worker and per-core state in memory shared by the master
and every worker.

It is a ``memfd`` (an anonymous file) mapped ``MAP_SHARED`` before the workers
are forked, viewed as two ctypes arrays: :class:`WorkerSlot` per worker and
:class:`CoreSlot` per request thread ("core"). A worker updates its own slots
with plain memory writes -- no syscall, no lock per request, as in uWSGI's
shared ``uwsgi.workers`` table. Readers (the master's harakiri check, the stats
server) may see a field that is a few nanoseconds stale; every field is an
aligned 8-byte word (or a byte string only its owner writes), so they never
see a torn number.

Using a memfd rather than ``mmap(-1)`` lets a reloading master (which re-execs
itself, see master.py) hand the table of its old workers to its new image.
"""

from __future__ import annotations

import ctypes
import mmap
import os

# WorkerSlot.state
FREE = 0
BOOTING = 1  # forked, importing (lazy-apps) or setting up
ACCEPTING = 2  # waiting for / serving requests
STOPPING = 3  # finishing in-flight requests, accepts no more
STATE_NAMES = {FREE: "free", BOOTING: "booting", ACCEPTING: "idle", STOPPING: "stopping"}

REQ_SIZE = 248  # "METHOD URI" of the running request, truncated


class CoreSlot(ctypes.Structure):
    """One request thread. ``busy_since`` (epoch seconds, 0 = idle) is written
    last when a request starts, so a reader that sees it set sees its ``req``."""

    _fields_ = [
        ("busy_since", ctypes.c_double),
        ("requests", ctypes.c_uint64),
        ("exceptions", ctypes.c_uint64),
        ("tx", ctypes.c_uint64),
        ("rt_total", ctypes.c_double),  # seconds spent in timed requests
        ("rt_count", ctypes.c_uint64),  # requests that rt_total covers
        ("req", ctypes.c_char * REQ_SIZE),
    ]


class WorkerSlot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int64),
        ("id", ctypes.c_int64),  # worker id as logged (1..processes)
        ("generation", ctypes.c_int64),
        ("state", ctypes.c_int64),
        ("last_spawn", ctypes.c_double),
        ("stopping_since", ctypes.c_double),  # set by a worker that recycles itself
        ("respawn_count", ctypes.c_uint64),
        ("harakiri_count", ctypes.c_uint64),
        ("rss", ctypes.c_uint64),
        ("vsz", ctypes.c_uint64),
        ("signals", ctypes.c_uint64),
        ("dump_ack", ctypes.c_uint64),  # bumped by the worker after a SIGUSR2 dump
    ]


class Scoreboard:
    """``capacity`` worker slots with ``threads`` core slots each."""

    def __init__(self, capacity: int, threads: int, fd: int | None = None):
        self.capacity = capacity
        self.threads = max(1, threads)
        size = capacity * (ctypes.sizeof(WorkerSlot) + self.threads * ctypes.sizeof(CoreSlot))
        size = max(mmap.PAGESIZE, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
        if fd is None:
            fd = os.memfd_create("uwsgigw-scoreboard", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        else:
            os.set_inheritable(fd, False)  # handed over across exec; keep it ours
        self.fd = fd
        self._mem = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.workers = (WorkerSlot * capacity).from_buffer(self._mem)
        self.cores = (CoreSlot * (capacity * self.threads)).from_buffer(
            self._mem, ctypes.sizeof(WorkerSlot) * capacity)

    @classmethod
    def attach(cls, fd: int, capacity: int, threads: int) -> "Scoreboard":
        """Map a scoreboard inherited across exec (see master.py's reload)."""
        return cls(capacity, threads, fd)

    def describe(self) -> list:
        """What a new image needs to :meth:`attach` this table."""
        return [self.fd, self.capacity, self.threads]

    def close(self) -> None:
        # ctypes arrays export buffers of the mmap; drop them before closing.
        self.workers = self.cores = None
        try:
            self._mem.close()
        except BufferError:  # a view is still alive somewhere; the GC will do it
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass

    # -- slots -----------------------------------------------------------------

    def cores_of(self, index: int) -> list[CoreSlot]:
        start = index * self.threads
        return [self.cores[i] for i in range(start, start + self.threads)]

    def allocate(self) -> int | None:
        """A free worker slot, reset except for its lifetime counters."""
        for index in range(self.capacity):
            if self.workers[index].state == FREE and self.workers[index].pid == 0:
                return index
        return None

    def reset(self, index: int, worker_id: int, generation: int) -> None:
        slot = self.workers[index]
        slot.id = worker_id
        slot.generation = generation
        slot.state = BOOTING
        slot.stopping_since = 0.0
        slot.dump_ack = 0
        slot.rss = slot.vsz = 0
        for core in self.cores_of(index):
            core.busy_since = 0.0
            core.req = b""
            core.requests = core.exceptions = core.tx = core.rt_count = 0
            core.rt_total = 0.0

    def release(self, index: int) -> None:
        slot = self.workers[index]
        slot.state = FREE
        slot.pid = 0
        for core in self.cores_of(index):
            core.busy_since = 0.0


def totals(cores: list[CoreSlot]) -> dict:
    """A worker's counters: the sum over its cores (uWSGI's per-worker stats)."""
    requests = sum(c.requests for c in cores)
    rt_total = sum(c.rt_total for c in cores)
    rt_count = sum(c.rt_count for c in cores)
    return {
        "requests": requests,
        "exceptions": sum(c.exceptions for c in cores),
        "tx": sum(c.tx for c in cores),
        "avg_rt": int(rt_total / rt_count * 1e6) if rt_count else 0,  # microseconds
        "running_time": int(rt_total * 1e6),
        "busy": any(c.busy_since for c in cores),
    }


def read_statm(pid: int | str = "self") -> tuple[int, int] | None:
    """(rss, vsz) in bytes from /proc/<pid>/statm; None if the process is gone."""
    try:
        with open("/proc/%s/statm" % pid, "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    page = mmap.PAGESIZE
    return int(fields[1]) * page, int(fields[0]) * page
