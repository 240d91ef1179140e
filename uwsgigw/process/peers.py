"""``uwsgi-allow-from``: which peers may connect to the TCP uwsgi sockets.

The uwsgi vars are a trusted CGI environment: whoever can connect can forge
REMOTE_ADDR, HTTPS, SCRIPT_NAME and every header (DESIGN.md, Security). A
unix socket is guarded by its file mode; a TCP socket on anything but
loopback needs a firewall, or this list: connections from peers outside it
are closed before a byte is read, and logged (rate limited, so a scan cannot
flood the log).

The networks are parsed once, at configuration time, into integer
``(network, mask)`` pairs per address family; checking a peer is then one
``int()`` of its packed address and a few ANDs, with no ``ipaddress`` object
per connection. IPv4-mapped IPv6 peers (``::ffff:10.1.2.3``, what a
dual-stack ``[::]`` socket reports for IPv4 clients) are checked against the
IPv4 networks. Unix sockets are never filtered.
"""

from __future__ import annotations

import socket

from .. import log
from ..config.optypes import parse_networks

# Refused connections taken per wake-up before yielding back to epoll: a
# flood of refused connects must not keep a worker from serving for long.
_REFUSE_BURST = 64

class AllowList:
    """A parsed ``uwsgi-allow-from``: ``admits(peer)`` for accept()'s address."""

    __slots__ = ("v4", "v6", "text")

    def __init__(self, networks) -> None:
        self.v4: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 4)
        self.v6: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 6)
        self.text = ", ".join(str(n) for n in networks)

    @classmethod
    def from_values(cls, values) -> "AllowList | None":
        """From the option's list of values (each may hold several networks);
        None when the list is empty, i.e. the option is not set."""
        networks = []
        for value in values or ():
            networks.extend(parse_networks(value))
        return cls(networks) if networks else None

    def admits(self, peer) -> bool:
        """``peer`` as ``socket.accept()`` returns it. Non-IP peers pass."""
        if not isinstance(peer, tuple):
            return True  # AF_UNIX: '' or a path; the file mode guards it
        host = peer[0]
        if ":" in host:
            try:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, host.split("%")[0]),
                                       "big")
            except OSError:
                return False
            if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, an IPv4 peer on [::]
                return self._match(self.v4, value & 0xFFFFFFFF)
            return self._match(self.v6, value)
        try:
            value = int.from_bytes(socket.inet_aton(host), "big")
        except OSError:
            return False
        return self._match(self.v4, value)

    @staticmethod
    def _match(pairs, value: int) -> bool:
        for network, mask in pairs:
            if value & mask == network:
                return True
        return False


def allow_list(values) -> AllowList | None:
    """``cfg.uwsgi_allow_from`` -> AllowList, or None when not configured."""
    return AllowList.from_values(values)


class GuardedListener:
    """A listening socket whose ``accept()`` only returns admitted peers.

    The worker loop treats ``BlockingIOError`` as "another worker took it",
    so a refused connection looks exactly like that to it: nothing else in
    the loop changes, and both of its accept sites are covered.
    """

    __slots__ = ("sock", "allow", "where")

    def __init__(self, sock: socket.socket, allow: AllowList) -> None:
        self.sock = sock
        self.allow = allow
        try:
            name = sock.getsockname()
            self.where = "%s:%d" % name[:2] if sock.family == socket.AF_INET else (
                "[%s]:%d" % name[:2])
        except OSError:
            self.where = "fd %d" % sock.fileno()

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        for _ in range(_REFUSE_BURST):
            conn, peer = self.sock.accept()  # BlockingIOError when the queue is empty
            if self.allow.admits(peer):
                return conn, peer
            self.refuse(conn, peer)
        raise BlockingIOError("refused %d connections in a row" % _REFUSE_BURST)

    def refuse(self, conn: socket.socket, peer) -> None:
        conn.close()  # before logging: the peer learns nothing from us
        log.rate_limited("peer-refused", "refused connection from %s port %s on %s: "
                         "not in uwsgi-allow-from (%s)" % (peer[0], peer[1], self.where,
                                                           self.allow.text))


def guard(sock: socket.socket, allow: AllowList | None):
    """``sock`` itself when there is nothing to check (no list, unix socket),
    else a GuardedListener: the common case keeps the bare socket's accept."""
    if allow is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    return GuardedListener(sock, allow)
