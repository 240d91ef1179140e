"""WebSocket echo load client of the HTTP bench (issue 14): messages/s.

    python bench_ws_client.py HOST PORT --begin EPOCH --seconds 5 \\
        [--connections 16] [--window 8] [--size 32]
    python bench_ws_client.py HOST PORT --probe

The client must not be the bottleneck, so it does as little per message as a
client can: after an RFC 6455 handshake (checked: 101 and the
Sec-WebSocket-Accept of its key), each connection sends ``--window`` masked
text frames in one write, reads back exactly the bytes of their ``--window``
echoes (unmasked text frames of the same payload) and compares them with
the expected bytes in one ``==``: no frame parsing, no per-message Python
work. A mismatch (another opcode, a fragment, a close) counts as an error and
ends that connection. Connections run on one asyncio loop (uvloop when
installed); bench_http.py starts several of these processes at once.

Messages echoed in [--begin, --begin + --seconds] (wall clock, so every
process counts the same window) are printed as ``WSRESULT ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import socket
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PATH = "/ws"


def handshake_request(host: str, port: int) -> tuple[bytes, bytes]:
    key = base64.b64encode(os.urandom(16))
    req = (b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (PATH.encode(), host.encode(), port, key))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return req, accept


def check_handshake(head: bytes, accept: bytes) -> str | None:
    """None when ``head`` is a valid 101 answer for our key, else what is wrong."""
    lines = head.split(b"\r\n")
    status = lines[0].decode("latin-1", "replace")
    if not status.startswith("HTTP/1.1 101"):
        return "answered %r" % status
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept:
        return "101 with a wrong Sec-WebSocket-Accept"
    return None


def frames(payload: bytes, window: int) -> tuple[bytes, bytes]:
    """(``window`` masked client text frames, their ``window`` expected echoes)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sent = bytes([0x81, 0x80 | len(payload)]) + mask + masked
    echo = bytes([0x81, len(payload)]) + payload
    return sent * window, echo * window


def probe(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None when the server upgrades and echoes one message; else why not."""
    req, accept = handshake_request(host, port)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                data = s.recv(4096)
                if not data:
                    return "closed the connection (%r)" % head[:80] if head else \
                        "closed the connection without an answer"
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            problem = check_handshake(head, accept)
            if problem:
                return problem
            sent, expected = frames(b"probe-message", 1)
            s.sendall(sent)
            got = rest
            while len(got) < len(expected):
                data = s.recv(4096)
                if not data:
                    break
                got += data
            if got[:len(expected)] != expected:
                return "101, but the echo was %r" % got[:40]
            s.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8")  # close 1000
    except OSError as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None


class EchoPump(asyncio.Protocol):
    """One connection after the handshake: send a window of frames, count the
    echoed bytes in ``data_received`` (one cheap callback per TCP read), compare
    the whole window with one ``==``, send the next."""

    def __init__(self, args, begin: float, end: float, stats: dict, done) -> None:
        self.batch, self.expected = frames(
            os.urandom(args.size // 2).hex().encode()[:args.size], args.window)
        self.window, self.begin, self.end = args.window, begin, end
        self.stats, self.done = stats, done
        self.chunks: list[bytes] = []
        self.got = 0
        self.transport = None

    def start(self, transport, leftover: bytes) -> None:
        self.transport = transport
        transport.write(self.batch)
        if leftover:
            self.data_received(leftover)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.got += len(data)
        if self.got < len(self.expected):
            return
        got = b"".join(self.chunks)
        if got != self.expected:
            return self.finish("unexpected echo %r" % got[:40])
        self.chunks.clear()
        self.got = 0
        now = time.time()
        if now >= self.end:
            self.transport.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8")
            return self.finish(None)
        if now >= self.begin:
            self.stats["messages"] += self.window
        self.transport.write(self.batch)

    def connection_lost(self, exc) -> None:
        self.finish("connection closed during the run: %s" % exc)

    def finish(self, problem: str | None) -> None:
        if self.done.done():
            return
        if problem:
            self.stats["errors"] += 1
            self.stats["why"] = problem
        self.transport.close()
        self.done.set_result(None)


class Handshake(asyncio.Protocol):
    """Until the 101 head is in; then hands the transport to an EchoPump."""

    def __init__(self, request: bytes, headed) -> None:
        self.request, self.headed, self.buf = request, headed, b""
        self.pump = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.pump is not None:
            return self.pump.data_received(data)
        self.buf += data
        if b"\r\n\r\n" in self.buf and not self.headed.done():
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            self.headed.set_result((head, rest))

    def connection_lost(self, exc) -> None:
        if self.pump is not None:
            self.pump.connection_lost(exc)
        elif not self.headed.done():
            self.headed.set_exception(ConnectionError("closed during the handshake"))


async def connection(args, begin: float, end: float, stats: dict) -> None:
    loop = asyncio.get_running_loop()
    req, accept = handshake_request(args.host, args.port)
    headed = loop.create_future()
    try:
        transport, hs = await loop.create_connection(lambda: Handshake(req, headed),
                                                     args.host, args.port)
        head, rest = await asyncio.wait_for(headed, 10)
    except (OSError, asyncio.TimeoutError) as exc:
        stats["errors"] += 1
        stats["why"] = "connect/handshake: %r" % exc
        return
    problem = check_handshake(head, accept)
    if problem:
        stats["errors"] += 1
        stats["why"] = problem
        transport.close()
        return
    stats["connected"] += 1
    done = loop.create_future()
    hs.pump = EchoPump(args, begin, end, stats, done)
    hs.pump.start(transport, rest)
    await done


async def run(args) -> dict:
    stats = {"messages": 0, "errors": 0, "connected": 0, "why": ""}
    begin = args.begin
    end = begin + args.seconds
    try:  # a server that stops answering must not hang the bench
        await asyncio.wait_for(asyncio.gather(*(connection(args, begin, end, stats)
                                                for _ in range(args.connections))),
                               end - time.time() + 10)
    except asyncio.TimeoutError:
        stats["errors"] += 1
        stats["why"] = "connections still waiting for echoes 10 s after the end"
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--probe", action="store_true", help="check the upgrade and one echo")
    p.add_argument("--begin", type=float, help="wall-clock time the measured window starts")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--window", type=int, default=8, help="messages in flight per connection")
    p.add_argument("--size", type=int, default=32, help="payload bytes per message (< 126)")
    args = p.parse_args()
    if args.probe:
        problem = probe(args.host, args.port)
        print("PROBE " + ("ok" if problem is None else "unsupported: " + problem))
        return 0
    if args.begin is None:
        args.begin = time.time() + 1
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    stats = run_loop(run(args))
    print("WSRESULT messages=%d seconds=%g errors=%d connected=%d why=%r" % (
        stats["messages"], args.seconds, stats["errors"], stats["connected"], stats["why"]),
        flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
