"""Apps for the master tests: they report who served them, sleep, die, grow.

``application`` dispatches on PATH_INFO:

- ``/pid``            -> "pid uid gid thread" of the serving worker
- ``/sleep?S``        -> sleeps S seconds in ``sleepy_handler`` (harakiri target)
- ``/slow?S``         -> sleeps S seconds, then answers (graceful stop/reload)
- ``/cblock``          -> deadlocks in C holding the GIL (harakiri must still work)
- ``/exit``           -> ``os._exit(1)`` in the middle of the request
- ``/grow?MB``        -> keeps MB more megabytes alive (reload-on-rss)
- ``/slow?S`` logs "slow request started" first (tests poll for it)
- ``/env?NAME``       -> os.environ[NAME] in the worker, or "-"
- ``/version``        -> VERSION from the file named by $MASTER_APP_VERSION_FILE,
                         read at import time (reload picks up new code)
- anything else       -> "ok"
"""

import os
import threading
import time

_hoard = []

if os.environ.get("MASTER_APP_DIE_AT_IMPORT"):
    os._exit(9)  # a worker that dies while booting (with lazy-apps)

VERSION = "none"
_version_file = os.environ.get("MASTER_APP_VERSION_FILE")
if _version_file:
    with open(_version_file) as _f:
        VERSION = _f.read().strip()


def sleepy_handler(seconds: float) -> None:
    time.sleep(seconds)


def c_deadlock() -> None:
    """Block forever inside C with the GIL held: no Python signal handler can
    run here, only faulthandler's C-level dump."""
    import ctypes
    libc = ctypes.PyDLL(None)  # PyDLL keeps the GIL during the call
    mutex = ctypes.create_string_buffer(64)  # a zeroed default pthread mutex
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # relocking a default mutex never returns


def _reply(start_response, text: str, status: str = "200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/pid":
        return _reply(start_response, "%d %d %d %d" % (
            os.getpid(), os.getuid(), os.getgid(), threading.get_ident()))
    if path == "/sleep":
        sleepy_handler(float(query or 10))
        return _reply(start_response, "woke up")
    if path == "/slow":
        # The test polls the log for this line to know the request is running.
        environ["wsgi.errors"].write("slow request started in pid %d\n" % os.getpid())
        time.sleep(float(query or 1))
        return _reply(start_response, "slow done %d" % os.getpid())
    if path == "/cblock":
        c_deadlock()
    if path == "/exit":
        os._exit(1)
    if path == "/grow":
        _hoard.append(bytearray(int(query or 10) << 20))
        return _reply(start_response, "grown")
    if path == "/env":
        return _reply(start_response, os.environ.get(query, "-"))
    if path == "/version":
        return _reply(start_response, "%s %d" % (VERSION, os.getpid()))
    return _reply(start_response, "ok")


def broken_at_boot(environ, start_response):  # pragma: no cover - never served
    return _reply(start_response, "unreachable")
