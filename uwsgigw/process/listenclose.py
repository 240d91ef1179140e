"""The master lets go of the listening sockets when the server stops.

On a stop (SIGTERM: graceful; SIGINT/SIGQUIT: immediate) the master closes
its own copy of every listening socket right after it has told the workers
to stop (the ``stop`` hook of a master service, services.py). Each worker
stopping on TERM takes the connections already queued and closes its copy
too (workerbase.py), so once the last one is closed the kernel refuses new
connections -- TCP answers the SYN with a reset, a unix socket's connect()
fails with ECONNREFUSED -- and a proxy such as nginx passes the request to
its next upstream server for any method, because it sent nothing. Before
this, the kernel kept completing connections until the last worker exited,
queued them where nobody accepted them any more, and reset them at the exit,
after nginx had sent the request: a POST answered 502.

Not on a reload (SIGHUP): the listening sockets go to the new image. A unix
socket's file stays until the master's end (``vacuum`` removes it then, as
before), so a client sees "connection refused", not "no such file". Under
systemd socket activation systemd keeps a copy: connections then wait in
the queue for the next start, as they should.
"""

from __future__ import annotations

from .. import log
from .servicebase import MasterService


class ListenClose(MasterService):
    name = "listen-close"

    def __init__(self, master) -> None:
        self.master = master
        self.closed = False

    def stop(self, immediate: bool) -> None:
        """The master stops: close its copy of each listening socket (the
        stats document then shows their queue as 0)."""
        if self.closed:
            return
        self.closed = True
        for listener in self.master.listeners:
            try:
                listener.sock.close()
            except OSError as exc:
                log.warning("cannot close socket %s: %s" % (listener.describe(), exc))


def from_config(cfg, master) -> MasterService | None:
    """Always on: there is nothing to choose."""
    return ListenClose(master)
