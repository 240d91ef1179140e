"""``wsgi.file_wrapper`` bodies on the HTTP listener: sendfile, and a slow
download that costs a descriptor, not the worker (asgi/offload.py).

Every WSGI path of the HTTP listener (test_http_listener.KINDS): the C path
with the app on the loop's thread (wsgi-c: the rest of a slow file goes to
the loop), the C path in pool threads (wsgi-pool) and llhttp's driver
(wsgi-py). The same table serves the static files (test_static_files.py).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from framed_client import Connection, fetch

KINDS = {
    "wsgi-c": ("--threads", "1"),
    "wsgi-pool": ("--threads", "2"),
    "wsgi-py": ("--threads", "2", "--decoder", "python"),
}
SIZE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(data)
    return str(path), data


@pytest.fixture(scope="module", params=list(KINDS))
def server(request, module_factories):
    return module_factories.uwsgigw(
        "--module", "field_apps:wsgi", *KINDS[request.param], "--master", "--processes", "1",
        "--socket-timeout", "4", "--http-keepalive-timeout", "10", http=True)


def port_of(server) -> int:
    return int(server.socket.rpartition(":")[2])


def get(path: str, method: str = "GET") -> bytes:
    return ("%s %s HTTP/1.1\r\nHost: t\r\n\r\n" % (method, path)).encode()


def slow_socket(port: int) -> socket.socket:
    """A client whose receive buffer is small: it takes a file slowly."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def test_a_file_arrives_whole_and_the_connection_goes_on(server, big_file):
    path, data = big_file
    with Connection(port_of(server)) as c:
        c.send(get("/file?path=" + path) + get("/env"))  # pipelined behind the file
        first = c.response()
        assert (first.status, first.complete, first.body == data) == (200, True, True)
        assert first.header("content-length") == str(SIZE)
        second = c.response()
        assert second.status == 200 and b"REQUEST_METHOD" in second.body
        c.send(get("/file?path=" + path, "HEAD"))
        head = c.response("HEAD")
        assert head.status == 200 and head.header("content-length") == str(SIZE)
        c.send(get("/env"))
        assert c.response().status == 200  # the HEAD sent no body bytes


def test_a_file_without_a_length_is_framed_chunked(server, big_file):
    path, data = big_file
    answer = fetch(port_of(server), "/file?nolength=1&path=" + path)
    assert answer.status == 200 and answer.complete and answer.body == data
    assert answer.header("transfer-encoding") == "chunked"


def test_a_slow_downloader_does_not_hold_the_worker(server, big_file):
    """One worker, one thread on wsgi-c: another client is answered while
    the first one takes its file slowly; the file still arrives whole."""
    path, data = big_file
    port = port_of(server)
    slow = slow_socket(port)
    try:
        slow.sendall(get("/file?path=" + path))
        first = slow.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        # answered before socket-timeout (4 s) could free a blocked worker
        # by cutting the slow client, which then still gets its whole file
        other = fetch(port, "/env", timeout=3)
        assert other.status == 200 and other.complete
        raw = first
        while raw.count(b"\r\n\r\n") == 0 or len(raw.partition(b"\r\n\r\n")[2]) < SIZE:
            chunk = slow.recv(1 << 20)
            assert chunk, "the server closed before the whole file came"
            raw += chunk
        assert raw.partition(b"\r\n\r\n")[2] == data
    finally:
        slow.close()


def test_a_client_leaving_mid_file_costs_one_info_line(server, big_file):
    path, _ = big_file
    port = port_of(server)
    mark = server.log_mark()
    s = slow_socket(port)
    s.sendall(get("/file?path=" + path))
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)  # the server has filled the socket's buffers
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset
    server.wait_for_log("client went away during GET /file?path=", since=mark)
    assert fetch(port, "/env").status == 200  # the worker goes on
    text = server.log_since(mark)
    gone = [line for line in text.splitlines() if "client went away" in line]
    assert len(gone) == 1 and " INFO " in gone[0], text
    assert "Traceback" not in text and "ERROR" not in text, text


def test_a_client_that_stops_reading_is_cut_at_the_socket_timeout(server, big_file):
    path, _ = big_file
    port = port_of(server)
    mark = server.log_mark()
    s = slow_socket(port)
    try:
        s.sendall(get("/file?path=" + path))
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        # reads nothing more: socket-timeout (4 s) without progress ends it
        line = server.wait_for_log("client went away during GET /file?path=", since=mark,
                                   timeout=15)
        assert "Traceback" not in line
        assert fetch(port, "/env").status == 200
    finally:
        s.close()
