"""A graceful stop (SIGTERM to the master) serves the connections waiting in
the listen queue and then refuses new ones; it never accepts a connection
only to reset it at the exit.

For every worker kind, on TCP and on a unix socket: one worker (one thread,
async-concurrency 1) runs a 2 s request; three more connections are
connected and have sent their request (a POST with a body) but are not
accepted yet. SIGTERM to the master. Every queued request gets its whole
answer; connections tried after the stop began (the master's log line) are
refused, or, until the worker closed its copy of the socket, answered in
full too. Where the worker's signal handler runs while the slow request
does (all but a WSGI app run on the event loop's thread), the refusal comes
before the slow request ends: closing the socket, not the exit, refuses.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

from conftest import (_build_packet, nginx_vars, parse_response, short_tmpdir, to_pairs,
                      uwsgigw_cmd, wait_until)
from test_master_support import Launched, launch_env
from test_master_systemd import activating

SLOW = 2.0  # seconds the request in flight takes
QUEUED = 3  # connections waiting in the listen queue at the SIGTERM
BODY = os.urandom(20000)
ECHO = b"%d %s" % (len(BODY), hashlib.sha256(BODY).hexdigest().encode())

# kind: (arguments, protocol, the signal handler runs while the app sleeps)
KINDS = {
    "sync-c": (("--module", "drain_apps:wsgi", "--decoder", "c"), "uwsgi", True),
    "sync-python": (("--module", "drain_apps:wsgi", "--decoder", "python"), "uwsgi", True),
    "asgi-uwsgi": (("--module", "drain_apps:asgi", "--async-concurrency", "1"), "uwsgi", True),
    # WSGI on an HTTP socket with one thread: the app runs on the loop's
    # thread, which sees the stop once the slow request returns.
    "http-wsgi": (("--module", "drain_apps:wsgi", "--async-concurrency", "1"), "http", False),
    "http-asgi": (("--module", "drain_apps:asgi", "--async-concurrency", "1"), "http", True),
}


def request_bytes(protocol: str, method: str, uri: str, body: bytes = b"") -> bytes:
    if protocol == "uwsgi":
        path, _, query = uri.partition("?")
        return _build_packet(to_pairs(nginx_vars(
            method, path, body=body, content_type="application/octet-stream" if body else "",
            QUERY_STRING=query)), body=body)
    return (b"%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (method.encode(), uri.encode(), len(body)) + body)


def connect(address: str) -> socket.socket:
    """A connected socket, or ConnectionRefusedError."""
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address
    else:
        host, _, port = address.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    s.settimeout(20)
    try:
        s.connect(target)
    except BaseException:
        s.close()
        raise
    return s


def answer(s: socket.socket) -> tuple[int, bytes, str]:
    """(status, body, error) of the response on ``s``, read to EOF."""
    data, error = b"", ""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:  # a reset: the bug this file is about
        error = repr(exc)
    finally:
        s.close()
    if not data:
        return 0, b"", error or "closed without an answer"
    response = parse_response(data)
    return response.status, data.partition(b"\r\n\r\n")[2], error


class Sent:
    """A request sent on a connection of its own, answered in a thread."""

    def __init__(self, address: str, protocol: str, method: str, uri: str,
                 body: bytes = b"", sock: socket.socket | None = None):
        self.sock = sock or connect(address)
        self.sock.sendall(request_bytes(protocol, method, uri, body))
        self.result: tuple[int, bytes, str] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            self.result = answer(self.sock)
        finally:
            self.done.set()

    def wait(self) -> tuple[int, bytes, str]:
        self.thread.join(30)
        assert self.result is not None, "no answer within 30 s"
        return self.result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sigterm_serves_the_listen_queue_then_refuses(factories, kind, transport):
    args, protocol, prompt = KINDS[kind]
    server = factories.uwsgigw(*args, "--master", "--processes", "1",
                               tcp=transport == "tcp", http=protocol == "http")
    address = server.socket
    slow = Sent(address, protocol, "GET", "/slow?%g" % SLOW)
    server.wait_for_log("slow request started")
    queued = [Sent(address, protocol, "POST", "/echo", BODY) for _ in range(QUEUED)]
    time.sleep(0.2)  # the requests reach the server's socket buffers
    assert not any(q.done.is_set() for q in queued), "not queued: the worker took them"

    mark = server.log_mark()
    os.kill(server.pid, signal.SIGTERM)
    server.wait_for_log("SIGTERM: graceful stop", since=mark)
    # Keep trying until refused; a connection the kernel still completes
    # must be answered in full like the queued ones.
    late: list[Sent] = []

    def refused() -> bool:
        try:
            s = connect(address)
        except ConnectionRefusedError:
            return True
        late.append(Sent(address, protocol, "POST", "/echo", BODY, sock=s))
        return False

    wait_until(refused, 15, interval=0.01, what="connect() refused")
    refused_during_slow = not slow.done.is_set()

    assert slow.wait() == (200, b"slept %g" % SLOW, "")
    for n, sent in enumerate(queued + late):
        assert sent.wait() == (200, ECHO, ""), "request %d of %d (%d queued)" % (
            n + 1, len(queued) + len(late), QUEUED)
    assert server.proc.wait(20) == 0
    log = server.log_since(mark)
    taken = [int(n) for n in re.findall(r"stopping: serving (\d+) connections? taken", log)]
    assert sum(taken) >= QUEUED, log
    if prompt:
        # (A connection tried between the master's log line and the worker's
        # close may still be queued: it was answered in full above.)
        assert refused_during_slow, "refused only after the slow request ended:\n" + log


@pytest.mark.timeout(60)
def test_socket_activation_keeps_connections_for_the_next_start(tmp_path):
    """Under systemd socket activation systemd keeps its own copy of the
    socket (this test plays systemd): the stopped server's connections are
    not refused but wait in the queue for the next start, as they should."""
    path = os.path.join(short_tmpdir(), "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    fd = listener.fileno()
    cmd = [sys.executable, "-c", activating([fd]),
           *uwsgigw_cmd("--module", "drain_apps:wsgi", "--master", "--processes", "2")]
    server = Launched(cmd, str(tmp_path / "log"), launch_env(), pass_fds=(fd,))
    try:
        wait_until(lambda: "ready to accept requests" in server.log_text(), 15, what="ready")
        first = Sent(path, "uwsgi", "POST", "/echo", BODY)
        assert first.wait() == (200, ECHO, "")
        os.kill(server.pid, signal.SIGTERM)
        assert server.proc.wait(20) == 0
        later = connect(path)  # queued on systemd's copy, not refused
        later.sendall(request_bytes("uwsgi", "GET", "/"))
        listener.settimeout(5)
        conn, _ = listener.accept()  # the next start would take it: it is there
        conn.close()
        later.close()
    finally:
        server.stop()
        listener.close()
