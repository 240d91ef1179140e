"""Binding the ``socket`` and ``http-socket`` entries: unix paths, IPv4 and
IPv6, uWSGI's spelling.

``/run/x.sock`` (anything without ``:``) is a unix socket, ``@name`` an
abstract one; ``host:port``, ``:port`` (all IPv4 interfaces, as in uWSGI) and
``[v6addr]:port`` are TCP. Each :class:`Listener` knows the protocol it
speaks: ``uwsgi`` (``socket``) or ``http`` (``http-socket``); the worker
serves each connection in its listener's protocol.
"""

from __future__ import annotations

import errno
import functools
import grp
import ipaddress
import os
import pwd
import socket
import stat
from dataclasses import dataclass

from .. import log
from .vacuum import remove_socket


class SocketError(Exception):
    """A socket cannot be bound; start-up stops with this message."""


UWSGI, HTTP = "uwsgi", "http"  # Listener.protocol


@dataclass
class Listener:
    spec: str  # as the user wrote it, for log lines
    sock: socket.socket
    path: str | None = None  # filesystem path of a unix socket (for vacuum)
    protocol: str = UWSGI  # what its connections speak: UWSGI or HTTP

    def fileno(self) -> int:
        return self.sock.fileno()

    @functools.cached_property
    def address(self):
        """``getsockname()``, kept: a stopping worker reads it before closing
        its copy (workerbase.py). Raises OSError (not kept) when unknown."""
        return self.sock.getsockname()

    def describe(self) -> str:
        """For log lines: the address, and ``(http)`` for an HTTP listener."""
        return self.spec if self.protocol == UWSGI else "%s (%s)" % (self.spec, self.protocol)


def parse_address(spec: str):
    """-> (family, address) for ``socket.bind``."""
    spec = spec.strip()
    if not spec:
        raise SocketError("empty socket address")
    if spec.startswith("@"):
        return socket.AF_UNIX, "\0" + spec[1:]
    if ":" not in spec:
        return socket.AF_UNIX, spec
    host, _, port_text = spec.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SocketError("socket %r: port must be 1-65535" % spec)
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], port)
    if host in ("", "*"):
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SocketError("socket %r: cannot resolve %r: %s" % (spec, host, exc)) from None
    family, _, _, _, address = infos[0]
    return family, address[:2]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _remove_stale_unix_socket(path: str) -> None:
    """Replace a socket file nobody listens on; refuse a live one.

    A crashed server leaves its socket file behind; refusing to start would
    need a manual rm. But unlinking a live socket would silently steal
    another server's traffic, so we probe it first.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketError("socket %s: the path exists and is not a socket; "
                          "refusing to replace it" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        log.info("removed stale unix socket %s (nothing was listening)" % path)
        return
    except OSError as exc:
        raise SocketError("socket %s: cannot probe the existing socket: %s" % (path, exc))
    finally:
        probe.close()
    raise SocketError("socket %s is in use: another server is listening on it "
                      "(stop it, or choose another socket path)" % path)


def _chown(path: str, owner: str) -> None:
    user, _, group = owner.partition(":")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid if user else -1
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise SocketError("chown-socket %s: unknown user or group %s" % (owner, exc)) from None
    os.chown(path, uid, gid)


def bind_unix(spec: str, address: str, backlog: int, mode: int,
              owner: str | None, protocol: str = UWSGI) -> Listener:
    path = None if address.startswith("\0") else address
    if path:
        _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a tight umask so the socket is never briefly more open than
    # chmod-socket says.
    old_umask = os.umask(0o177)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = " (does the directory exist and is it writable?)" if exc.errno in (
            errno.ENOENT, errno.EACCES) else ""
        raise SocketError("cannot bind unix socket %s: %s%s" % (spec, exc.strerror, hint))
    finally:
        os.umask(old_umask)
    if path:
        os.chmod(path, mode)
        if owner:
            _chown(path, owner)
    sock.listen(backlog)
    return Listener(spec, sock, path, protocol)


_FROM_THE_NETWORK = {
    UWSGI: "socket %s accepts connections from the network: anyone who can connect can "
           "forge REMOTE_ADDR and every other uwsgi var; prefer a unix socket or "
           "127.0.0.1, or firewall it",
    HTTP: "HTTP socket %s accepts connections from the network: fine for clients that "
          "connect directly, but X-Forwarded-For and X-Forwarded-Proto are trusted only "
          "from the peers in forwarded-allow-ips; set it to your proxy's or load "
          "balancer's address if one is in front",
}


def bind_tcp(spec: str, family, address, backlog: int, protocol: str = UWSGI) -> Listener:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SocketError("cannot bind %s: %s" % (spec, exc.strerror))
    sock.listen(backlog)
    if not _is_loopback(address[0]):
        log.warning(_FROM_THE_NETWORK[protocol] % spec)
    return Listener(spec, sock, protocol=protocol)


def bind_all(specs, backlog: int, chmod: str | None, chown: str | None,
             http_specs=()) -> list[Listener]:
    """Bind the ``socket`` entries (uwsgi), then the ``http-socket`` ones (HTTP)."""
    if not specs and not http_specs:
        raise SocketError("no socket configured: set socket= (e.g. socket = "
                          "/run/uwsgigw/app.sock, and uwsgi_pass unix:/run/uwsgigw/app.sock "
                          "in nginx) or http-socket= (e.g. http-socket = 127.0.0.1:8000)")
    limit = _somaxconn()
    if limit is not None and backlog > limit:
        log.warning("listen %d is capped to %d by net.core.somaxconn; raise it with "
                    "sysctl to absorb bigger bursts" % (backlog, limit))
    mode = int(chmod or "660", 8)
    listeners: list[Listener] = []
    try:
        for spec, protocol in [(s, UWSGI) for s in specs] + [(s, HTTP) for s in http_specs]:
            family, address = parse_address(spec)
            if family == socket.AF_UNIX:
                listeners.append(bind_unix(spec, address, backlog, mode, chown, protocol))
            else:
                listeners.append(bind_tcp(spec, family, address, backlog, protocol))
    except BaseException:
        close_all(listeners, vacuum=True)
        raise
    for listener in listeners:
        listener.sock.setblocking(False)
    return listeners


def describe_socket(sock: socket.socket) -> str:
    """A socket's address in uWSGI's spelling, for log lines."""
    try:
        name = sock.getsockname()
    except OSError:
        return "fd %d" % sock.fileno()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return "@" + name[1:] if name.startswith("\0") else (name or "unnamed unix socket")
    if sock.family == socket.AF_INET6:
        return "[%s]:%d" % name[:2]
    return "%s:%d" % name[:2]


def bound_to(sock: socket.socket, spec: str) -> bool:
    """Whether ``sock`` is bound to the address ``spec`` (a ``socket`` entry):
    the same family and address, unix sockets by their path."""
    try:
        family, address = parse_address(spec)
        name = sock.getsockname()
    except (SocketError, OSError):
        return False
    if family != sock.family:
        return False
    if family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract
            name = name.decode("utf-8", "surrogateescape")
        if not name:
            return False
        if address.startswith("\0") or name.startswith("\0"):
            return name == address
        return os.path.abspath(name) == os.path.abspath(address)
    try:
        same_host = ipaddress.ip_address(name[0]) == ipaddress.ip_address(address[0])
    except ValueError:
        return False
    return same_host and name[1] == address[1]


def adopt(fds, owned_paths: dict | None = None,
          protocols: dict | None = None) -> list[Listener]:
    """Listening sockets we did not bind: systemd socket activation (LISTEN_FDS)
    or a reloading master's own sockets handed over across exec.

    ``owned_paths`` maps fd -> unix path we created (vacuum may remove it);
    systemd's sockets belong to systemd and are never unlinked. ``protocols``
    maps fd -> the protocol it speaks (UWSGI when not there).
    """
    listeners = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise SocketError("inherited fd %d is not a socket: %s" % (fd, exc.strerror))
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise SocketError("inherited fd %d is not a listening stream socket "
                              "(check ListenStream= in the .socket unit)" % fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        path = (owned_paths or {}).get(fd)
        listeners.append(Listener(describe_socket(sock), sock, path,
                                  (protocols or {}).get(fd, UWSGI)))
    return listeners


def close_all(listeners: list[Listener], vacuum: bool) -> None:
    for listener in listeners:
        listener.sock.close()
        if vacuum and listener.path:
            remove_socket(listener.path)  # a failure is logged (vacuum.py)
