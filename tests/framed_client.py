"""An HTTP/1.1 client that reports whether a response was complete.

What a browser or curl concludes about a response nginx relays: with
``Transfer-Encoding: chunked``, complete only when the terminating zero-size
chunk arrived; with ``Content-Length``, when that many bytes did; otherwise
(close-delimited) when the connection ended with a FIN, not a reset.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Framed:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    ended: str = ""  # "eof", "reset" or "timeout": how the connection ended
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


def _read_all(s: socket.socket, deadline: float) -> tuple[bytes, str]:
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        except socket.timeout:
            return b"".join(chunks), "timeout"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """(body, complete) of a chunked body (RFC 9112 7.1), tolerant of a cut."""
    body, complete, _ = dechunk_at(data)
    return body, complete


def dechunk_at(data: bytes) -> tuple[bytes, bool, int]:
    """(body, complete, where the chunked body ended in ``data``)."""
    body, pos = [], 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return b"".join(body), False, pos
        size = int(data[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)  # trailers end with an empty line
            return b"".join(body), end >= 0, end + 4 if end >= 0 else pos
        chunk = data[pos:pos + size]
        body.append(chunk)
        if len(chunk) < size or data[pos + size:pos + size + 2] != b"\r\n":
            return b"".join(body), False, pos
        pos += size + 2


def fetch(port: int, path: str, method: str = "GET", body: bytes | None = None,
          headers: dict | None = None, timeout: float = 15.0,
          host: str = "127.0.0.1", source: str | None = None) -> Framed:
    """One request to nginx on ``port``; the answer with its framing judged.
    ``source``: the client's own address (any of 127/8 on Linux loopback)."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k in (headers or {})):
        lines.append("Content-Length: %d" % len(body))
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(request)
        raw, ended = _read_all(s, deadline)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return Framed(0, ended=ended, raw=raw)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    result = Framed(int(status_line.split()[1]), ended=ended, raw=raw)
    for line in header_lines:
        name, _, value = line.partition(":")
        result.headers.setdefault(name.strip().lower(), []).append(value.strip())
    if method == "HEAD" or result.status in (204, 304) or 100 <= result.status < 200:
        result.body, result.complete = rest, ended == "eof" and not rest
    elif "chunked" in (result.header("transfer-encoding") or ""):
        result.body, result.complete = dechunk(rest)
    elif result.header("content-length") is not None:
        result.body = rest
        result.complete = len(rest) == int(result.header("content-length"))
    else:
        result.body, result.complete = rest, ended == "eof"
    return result


class Connection:
    """A kept-alive HTTP/1.1 client connection: requests in, responses out
    one at a time (or several sent at once: pipelining)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 source: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection (EOF), within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while not self.eof:
                if not self._fill():
                    return True
        except socket.timeout:
            return False
        return True

    def response(self, method: str = "GET") -> Framed:
        """Read the next whole response (its framing decides its end)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return Framed(0, raw=self.buf, ended="eof")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        result = Framed(int(status_line.split()[1]), raw=head)
        for line in header_lines:
            name, _, value = line.partition(":")
            result.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if method == "HEAD" or result.status in (204, 304) or 100 <= result.status < 200:
            result.complete = True
            return result
        if "chunked" in (result.header("transfer-encoding") or ""):
            while True:
                body, complete, end = dechunk_at(self.buf)
                if complete:
                    result.body, result.complete, self.buf = body, True, self.buf[end:]
                    return result
                if not self._fill():
                    result.body = body
                    return result
        length = result.header("content-length")
        if length is not None:
            while len(self.buf) < int(length) and self._fill():
                pass
            result.body, self.buf = self.buf[:int(length)], self.buf[int(length):]
            result.complete = len(result.body) == int(length)
            return result
        while self._fill():
            pass
        result.body, self.buf, result.complete = self.buf, b"", True
        return result
