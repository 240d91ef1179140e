"""``wsgi.input``: the request body, exactly CONTENT_LENGTH bytes.

Three shapes, chosen per request by :func:`open_input`:

* the body already arrived with the vars block -> ``io.BytesIO``;
* ``post-buffering N`` is set -> read whole before the app runs, into memory
  below N bytes, into an unlinked temp file at N and above (uWSGI semantics);
* otherwise -> :class:`SocketInput`, streaming from the socket and never
  reading past CONTENT_LENGTH (the next bytes are not ours to read).

Every reader that takes the body from the socket *peeks* its last byte
instead of reading it: that byte stays in the kernel's receive queue until
the response is complete, so that a response cut short ends in a reset
(see :mod:`uwsgigw.cycle.ending`). The handler reads it at the clean end.
"""

from __future__ import annotations

import io
import socket
import tempfile
import time

from ..protocol.errors import ClientDisconnected


def _recv_some(sock: socket.socket, limit: int) -> bytes:
    data = sock.recv(limit)
    if not data:
        raise ClientDisconnected("client closed the connection while sending the body")
    return data


def peek_last(sock: socket.socket) -> bytes:
    """The body's last byte, left in the kernel's queue (the held tail)."""
    data = sock.recv(1, socket.MSG_PEEK)
    if not data:
        raise ClientDisconnected("client closed the connection while sending the body")
    return data


class SocketInput(io.RawIOBase):
    """A read-only file over the socket, bounded by CONTENT_LENGTH.

    ``io.RawIOBase`` supplies readline/readlines/iteration on top of
    ``readinto``; ``read`` and ``readline`` are overridden because the
    generic versions read one byte at a time.
    """

    _CHUNK = 65536

    def __init__(self, sock: socket.socket, prefix: bytes, length: int):
        super().__init__()
        self._sock = sock
        self._buf = prefix  # bytes received but not yet given to the app
        self._left = length - len(prefix)  # bytes still in the kernel's queue
        self._peeked = False  # the last of them is in _buf (the held tail)

    @property
    def unread_on_socket(self) -> int:
        """Bytes of the body still in the kernel's queue (the held tail included)."""
        return self._left

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        left = self._left
        if left > 1:
            data = _recv_some(self._sock, min(self._CHUNK, left - 1))
            self._left -= len(data)
        elif left == 1 and not self._peeked:
            data = peek_last(self._sock)
            self._peeked = True
        else:
            return False
        self._buf = self._buf + data if self._buf else data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf]
            self._buf = b""
            while self._left > 1:
                data = _recv_some(self._sock, min(1 << 20, self._left - 1))
                self._left -= len(data)
                parts.append(data)
            if self._left == 1 and not self._peeked:
                parts.append(peek_last(self._sock))
                self._peeked = True
            return b"".join(parts)
        while len(self._buf) < size and self._fill():
            pass
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                end = newline + 1
                break
            if 0 <= size <= len(self._buf):
                end = size
                break
            if not self._fill():
                end = len(self._buf)
                break
        if 0 <= size < end:
            end = size
        out, self._buf = self._buf[:end], self._buf[end:]
        return out

    def drain(self, deadline: float) -> bool:
        """Discard what the app left unread, until ``deadline``; True if done.

        Closing a socket with unread data makes the kernel send RST, and
        nginx turns a reset into a 502 even though the answer was sent.
        """
        self._buf = b""
        return drain_socket(self._sock, self._left, deadline)


def drain_socket(sock: socket.socket, left: int, deadline: float) -> bool:
    """Read and drop ``left`` bytes (-1: until EOF) before ``deadline``."""
    scratch = bytearray(65536)
    while left != 0:
        if time.monotonic() > deadline:
            return False
        try:
            n = sock.recv_into(scratch, len(scratch) if left < 0 else min(left, len(scratch)))
        except OSError:
            return False
        if n == 0:
            return True
        if left > 0:
            left -= n
    return True


def read_to_memory(sock: socket.socket, prefix: bytes, length: int) -> io.BytesIO:
    """The rest of the body into memory; its last byte stays queued (held)."""
    parts = [prefix]
    left = length - len(prefix)
    while left > 1:
        data = _recv_some(sock, min(1 << 20, left - 1))
        left -= len(data)
        parts.append(data)
    parts.append(peek_last(sock))
    return io.BytesIO(b"".join(parts))


# Reads while spooling are at least this large: each read is a trip through
# the Python loop, and uWSGI's 8 KB post-buffering-bufsize default made a
# 20 MB upload cost 34 ms of CPU against 16 ms with 256 KB reads (measured
# with a socketpair, this machine). A smaller setting only ever cost CPU.
_MIN_SPOOL_READ = 256 * 1024


def spool_read_size(bufsize: int) -> int:
    """The read size while spooling a body: ``post-buffering-bufsize``, at
    least :data:`_MIN_SPOOL_READ`."""
    return max(bufsize, _MIN_SPOOL_READ)


def read_to_tempfile(sock: socket.socket, prefix: bytes, length: int, bufsize: int):
    """Spool the body to an anonymous temp file (mode 0600, unlinked at birth).

    ``tempfile.TemporaryFile`` uses O_TMPFILE on Linux, so the file never has
    a name another user could open, and vanishes if the worker is killed.
    """
    spool = tempfile.TemporaryFile()
    try:
        spool.write(prefix)
        left = length - len(prefix)
        buf = bytearray(max(1, min(spool_read_size(bufsize), left)))
        view = memoryview(buf)
        while left > 1:
            n = sock.recv_into(buf, min(len(buf), left - 1))
            if n == 0:
                raise ClientDisconnected("client closed the connection while sending the body")
            spool.write(view[:n])
            left -= n
        if left:
            spool.write(peek_last(sock))
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def open_input(sock, prefix: bytes, length: int, post_buffering: int, bufsize: int):
    """Pick the ``wsgi.input`` for a body of ``length`` bytes of which
    ``prefix`` was read already. Unless the prefix holds it all, the body's
    last byte stays in the kernel's queue: :func:`unread_after` says how many
    bytes of it the connection still holds once the app is done."""
    if post_buffering and length >= post_buffering:
        return read_to_tempfile(sock, prefix[:length], length, bufsize)
    if len(prefix) >= length:
        return io.BytesIO(prefix[:length])
    if post_buffering:
        return read_to_memory(sock, prefix, length)
    return SocketInput(sock, prefix, length)


def unread_after(wsgi_input, from_socket: bool) -> int:
    """Bytes of the body still in the kernel's queue: what the app left of a
    streamed body, or the held last byte of one read before the app ran."""
    if isinstance(wsgi_input, SocketInput):
        return wsgi_input.unread_on_socket
    return 1 if from_socket else 0
