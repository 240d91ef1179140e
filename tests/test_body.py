"""wsgi.input shapes over a real socket pair: streaming, memory, temp file."""

import io
import os
import socket
import stat
import threading
import time

import pytest

from uwsgigw.cycle.body import (ClientDisconnected, SocketInput, drain_socket, open_input,
                                unread_after)

BODY = b"".join(b"line %d\n" % i for i in range(20000)) + b"tail-without-newline"


_feeders: list[threading.Thread] = []


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    while _feeders:  # let writers finish before their socket is closed
        _feeders.pop().join(5)
    a.close()
    b.close()


def feed(sock, data, close=True):
    def run():
        sock.sendall(data)
        if close:
            sock.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=run)
    t.start()
    _feeders.append(t)
    return t


def make(kind, pair, prefix_len=100, post_buffering=0):
    server, client = pair
    feed(client, BODY[prefix_len:])
    return open_input(server, BODY[:prefix_len], len(BODY), post_buffering, 4096)


KINDS = [("stream", 0), ("memory", 10 ** 9), ("tempfile", 1)]


@pytest.mark.parametrize("kind,pb", KINDS)
def test_read_all(kind, pb, pair):
    inp = make(kind, pair, post_buffering=pb)
    assert inp.read() == BODY
    assert inp.read() == b""


@pytest.mark.parametrize("kind,pb", KINDS)
def test_read_n(kind, pb, pair):
    inp = make(kind, pair, post_buffering=pb)
    chunks = []
    while True:
        chunk = inp.read(777)
        if not chunk:
            break
        assert len(chunk) <= 777
        chunks.append(chunk)
    assert b"".join(chunks) == BODY


@pytest.mark.parametrize("kind,pb", KINDS)
def test_readline_readlines_iteration(kind, pb, pair):
    inp = make(kind, pair, post_buffering=pb)
    assert inp.readline() == b"line 0\n"
    assert inp.readline(3) == b"lin"
    assert inp.readline() == b"e 1\n"
    rest = inp.readlines()
    assert rest == io.BytesIO(BODY).readlines()[2:]


@pytest.mark.parametrize("kind,pb", KINDS)
def test_iteration(kind, pb, pair):
    inp = make(kind, pair, post_buffering=pb)
    assert list(inp) == io.BytesIO(BODY).readlines()


def test_kind_selection(pair):
    server, client = pair
    assert isinstance(open_input(server, b"abc", 3, 0, 4096), io.BytesIO)
    assert isinstance(open_input(server, b"a", 3, 0, 4096), SocketInput)
    feed(client, b"bc", close=False).join()
    assert isinstance(open_input(server, b"a", 3, 10, 4096), io.BytesIO)
    assert server.recv(1) == b"c"  # the held tail: the handler reads it at the end
    feed(client, b"bc", close=False).join()
    spooled = open_input(server, b"a", 3, 3, 4096)
    assert not isinstance(spooled, (io.BytesIO, SocketInput))
    assert spooled.read() == b"abc"


def test_tempfile_is_unlinked_and_private(pair):
    server, client = pair
    feed(client, BODY[10:])
    spooled = open_input(server, BODY[:10], len(BODY), 1, 4096)
    st = os.fstat(spooled.fileno())
    assert st.st_nlink == 0  # no name anyone could open
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0
    assert spooled.read() == BODY


def test_streaming_never_reads_past_content_length(pair):
    server, client = pair
    client.sendall(b"0123456789NEXT")
    inp = SocketInput(server, b"", 10)
    assert inp.read() == b"0123456789"
    assert inp.unread_on_socket == 1  # the last byte was peeked: still queued
    assert server.recv(5) == b"9NEXT"


@pytest.mark.parametrize("kind,pb", KINDS)
@pytest.mark.parametrize("prefix_len", [0, 100, len(BODY) - 1])
def test_the_last_body_byte_stays_queued(kind, pb, prefix_len, pair):
    """The held tail (uwsgigw/cycle/ending.py): once the app has the whole body, its
    last byte is still in the kernel's queue, so that closing without reading
    it resets the connection; unread_after says how much the handler reads."""
    server, client = pair
    feed(client, BODY[prefix_len:], close=False).join()
    inp = open_input(server, BODY[:prefix_len], len(BODY), pb, 4096)
    assert inp.read() == BODY
    assert unread_after(inp, from_socket=True) == 1
    assert server.recv(100, socket.MSG_DONTWAIT) == BODY[-1:]


def test_a_body_read_with_the_packet_holds_nothing(pair):
    server, _ = pair
    inp = open_input(server, b"abc", 3, 0, 4096)
    assert inp.read() == b"abc" and unread_after(inp, from_socket=False) == 0


def test_short_body_raises(pair):
    server, client = pair
    feed(client, b"abc")
    inp = SocketInput(server, b"", 10)
    with pytest.raises(ClientDisconnected):
        inp.read()
    with pytest.raises(ClientDisconnected):
        open_input(server, b"", 10, 1, 4096)


def test_drain_reads_the_rest(pair):
    server, client = pair
    data = os.urandom(3 << 20)
    t = feed(client, data, close=False)
    inp = SocketInput(server, b"", len(data))
    inp.read(10)
    assert inp.drain(time.monotonic() + 5)
    t.join()


def test_drain_is_bounded_in_time(pair):
    server, client = pair
    server.settimeout(0.2)
    start = time.monotonic()
    assert not drain_socket(server, 100, time.monotonic() + 0.3)
    assert time.monotonic() - start < 2
