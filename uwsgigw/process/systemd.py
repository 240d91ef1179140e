"""systemd integration without libsystemd: sd_notify(3) and sd_listen_fds(3).

Both protocols are tiny and stable: notifications are datagrams of
``KEY=VALUE`` lines sent to the unix socket named by ``$NOTIFY_SOCKET`` (a
leading ``@`` means the abstract namespace); socket activation passes
``$LISTEN_FDS`` descriptors starting at fd 3 to the process ``$LISTEN_PID``,
named by ``$LISTEN_FDNAMES`` (the units' ``FileDescriptorName=``).
"""

from __future__ import annotations

import os
import socket
import time

from .sockets import HTTP, UWSGI, bound_to

LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages; does nothing when not run by systemd."""

    def __init__(self, environ=os.environ):
        self.address = None
        self.sock = None
        self.watchdog_interval = 0.0
        self._last_watchdog = 0.0
        address = environ.get("NOTIFY_SOCKET")
        if address and (address.startswith("/") or address.startswith("@")):
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        wd_pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not wd_pid or wd_pid == str(os.getpid())):
            # sd_watchdog_enabled(3): ping at half the timeout.
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        try:
            self.sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
            return True
        except OSError:
            return False  # systemd gone or socket full: never fatal

    def ready(self, status: str) -> None:
        self.notify("READY=1", "STATUS=" + status, "MAINPID=%d" % os.getpid())

    def status(self, status: str) -> None:
        self.notify("STATUS=" + status)

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload).
        self.notify("RELOADING=1", "MONOTONIC_USEC=%d" % (time.monotonic_ns() // 1000),
                    "STATUS=reloading")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog(self, now: float) -> None:
        """Ping the watchdog when half its timeout has passed (call every tick)."""
        if self.watchdog_interval and now - self._last_watchdog >= self.watchdog_interval:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def listen_fds(environ=os.environ, unset: bool = True) -> list[tuple[int, str]]:
    """Sockets passed by systemd socket activation: [(fd, name)], or [].

    Like sd_listen_fds(unset_environment=1): the variables are removed so the
    workers and the app do not take them for their own.
    """
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    names = environ.get("LISTEN_FDNAMES", "")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(key, None)
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return []
    n = int(count)
    labels = names.split(":") if names else []
    fds = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        os.set_inheritable(fd, False)  # FD_CLOEXEC, as sd_listen_fds sets it
        fds.append((fd, labels[i] if i < len(labels) else "fd%d" % fd))
    return fds


def protocol_of(sock: socket.socket, name: str, http_specs) -> str:
    """The protocol of an activated socket: HTTP when systemd names it ``http``
    (``FileDescriptorName=http``) or it is bound to one of the ``http-socket``
    addresses, else UWSGI."""
    if name.lower() == HTTP or any(bound_to(sock, spec) for spec in http_specs):
        return HTTP
    return UWSGI
