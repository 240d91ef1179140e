"""The server log: one stream (stderr, or the ``logto`` file) shared by the
master and every worker.

Each line goes out in a single ``os.write`` on an ``O_APPEND`` descriptor, so
lines from concurrent processes never interleave (POSIX guarantees atomic
appends for regular files; pipes up to PIPE_BUF). The standard ``logging``
module is not used on the request path: one formatted write per request is
what uWSGI pays too, and ``disable-logging`` must cost nothing.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import NoReturn

_fd = 2
_path: str | None = None
_rate: dict[str, tuple[float, int]] = {}  # key -> (last logged, held back)


def ensure_std_fds() -> None:
    """Put /dev/null on whichever of fds 0, 1 and 2 is closed, and give Python
    back the ``sys.std*`` streams it set to None for them.

    Supervisors and test harnesses sometimes start daemons with these closed.
    Left so, the first file opened (the ``logto`` file) would become fd 2 and
    be lost when fds 1 and 2 are pointed at it. Call before anything opens a file.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is None:
            stream = open(fd, "r" if fd == 0 else "w", closefd=False,
                          errors="backslashreplace" if fd == 2 else None)
            setattr(sys, name, stream)
            setattr(sys, "__%s__" % name, stream)


def line_buffered() -> None:
    """Make the app's ``print()`` reach the log line by line (stdout is
    block-buffered when it is a file or a pipe unless PYTHONUNBUFFERED is set)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, OSError):
            pass  # replaced by the app with something else, or closed


def flush_std() -> None:
    """Write out what the app left in ``sys.stdout``/``sys.stderr``; never raises."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # None, closed, or a broken replacement
            pass


def exit_now(code: int) -> NoReturn:
    """``os._exit`` (no atexit, no finalizers: right after fork) without losing
    the app's buffered output."""
    flush_std()
    os._exit(code)


def setup(logto: str | None) -> None:
    """Send the log (and the process's stdout/stderr, as uWSGI does) to ``logto``.

    Apps print and write to ``wsgi.errors``; with ``logto`` set an operator
    expects all of it in that one file, so fds 1 and 2 are pointed there too,
    and ``sys.stdout``/``sys.stderr`` are made line-buffered.
    """
    global _fd, _path
    _path = logto
    line_buffered()
    if not logto:
        _fd = 2
        return
    fd = os.open(logto, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    flush_std()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _fd = 2


def reopen() -> None:
    """Reopen ``logto`` after logrotate moved it (SIGUSR1)."""
    if _path:
        setup(_path)


def fd() -> int:
    """The log's descriptor; it stays the same number across reopen()."""
    return _fd


def write_line(line: str) -> None:
    """Write one complete line; never raises (a full disk must not kill a worker)."""
    try:
        os.write(_fd, (line + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _stamp(level: str, msg: str) -> str:
    now = time.time()
    return "%s.%03d [%d] %s %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
        int(now * 1000) % 1000,
        os.getpid(),
        level,
        msg,
    )


def info(msg: str) -> None:
    write_line(_stamp("INFO", msg))


def warning(msg: str) -> None:
    write_line(_stamp("WARNING", msg))


def error(msg: str) -> None:
    write_line(_stamp("ERROR", msg))


def exception(msg: str) -> None:
    """Log ``msg`` followed by the traceback of the exception being handled."""
    write_line(_stamp("ERROR", msg) + "\n" + traceback.format_exc().rstrip("\n"))


def rate_limited(key: str, msg: str, level: str = "WARNING", every: float = 1.0) -> None:
    """Log at most one line per ``key`` per ``every`` seconds.

    Hostile or broken clients can send thousands of bad packets a second;
    the log must stay readable and must not become the bottleneck. What was
    held back is counted and reported on the next line of the same kind.
    """
    now = time.monotonic()
    last, suppressed = _rate.get(key, (-every, 0))
    if now - last < every:
        _rate[key] = (last, suppressed + 1)
        return
    _rate[key] = (now, 0)
    if suppressed:
        msg += " (%d similar message%s suppressed)" % (suppressed, "" if suppressed == 1 else "s")
    write_line(_stamp(level, msg))


class ErrorStream:
    """``wsgi.errors``: text written by the app goes to the server log."""

    def write(self, s: str) -> int:
        if s:
            write_line(s.rstrip("\n"))
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass
