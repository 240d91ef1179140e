"""Hostile uwsgi packets for a running server: every way nginx would never
send one, generated from a seeded RNG so that a failure replays exactly.

``hostile_packets(rng, n)`` yields ``(kind, bytes)``. The kinds follow the
issue's list: truncations, wrong and huge sizes, bad modifiers, bad
CONTENT_LENGTH, random bytes, plus bit flips, broken vars, pipelining and
HTTP spoken to the socket. Each packet is sent on its own connection followed
by a half-close, so the server sees EOF where the packet ends short.
"""

from __future__ import annotations

import random
import struct
from typing import Iterator

BAD_LENGTHS = ["-1", "1e3", " 5", "5 ", "+5", "0x10", "1" * 19, "5,5", "\xb2", "abc",
               "9" * 18, "\uff15".encode("utf-8").decode("latin-1"), "1 2", "0" * 40,
               "18446744073709551616", "\x00", "5\r\n"]


def encode_vars(pairs) -> bytes:
    out = bytearray()
    for key, value in pairs:
        out += struct.pack("<H", len(key) & 0xFFFF) + key
        out += struct.pack("<H", len(value) & 0xFFFF) + value
    return bytes(out)


def packet(pairs, body: bytes = b"", modifier1: int = 0, modifier2: int = 0,
           datasize: int | None = None) -> bytes:
    block = encode_vars(pairs)
    size = len(block) if datasize is None else datasize
    return struct.pack("<BHB", modifier1, size & 0xFFFF, modifier2) + block + body


def base_vars(rng: random.Random, uri: str = "/echo", body: bytes = b"",
              method: str | None = None) -> list:
    """What nginx's uwsgi_params would send, as (bytes, bytes) pairs."""
    path, _, query = uri.partition("?")
    pairs = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method or rng.choice(["GET", "POST", "HEAD"])),
        ("CONTENT_TYPE", "application/octet-stream" if body else ""),
        ("CONTENT_LENGTH", str(len(body)) if body else ""),
        ("REQUEST_URI", uri), ("PATH_INFO", path), ("DOCUMENT_ROOT", "/srv"),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "40000"), ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"), ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "hostile/1.0"),
    ]
    return [(k.encode(), v.encode("latin-1")) for k, v in pairs]


def valid(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice([0, 0, 1, 100, 5000]))
    return packet(base_vars(rng, "/h?x=%d" % rng.randrange(1000), body), body)


def _truncated(rng):
    data = valid(rng)
    return data[:rng.randrange(len(data))]


def _wrong_size(rng):
    body = rng.randbytes(rng.choice([0, 10, 300]))
    pairs = base_vars(rng, "/h", body)
    size = len(encode_vars(pairs)) + rng.choice([-3, -2, -1, 1, 2, 3, 7, -50, 100])
    return packet(pairs, body, datasize=max(0, size))


def _huge_size(rng):
    pairs = base_vars(rng, "/h")
    return packet(pairs, datasize=rng.choice([4097, 8193, 21573, 32768, 65535,
                                              rng.randrange(4097, 65536)]))


def _bad_modifiers(rng):
    m1 = rng.choice([1, 5, 7, 9, 10, 14, 17, 18, 29, 31, 100, 111, 250, 255])
    m2 = rng.choice([0, 0, 1, 255])
    if rng.random() < 0.2:
        m1, m2 = rng.choice([0, 30]), rng.randrange(1, 256)
    return packet(base_vars(rng, "/h"), modifier1=m1, modifier2=m2)


def _bad_content_length(rng):
    body = rng.randbytes(rng.choice([0, 5, 100]))
    pairs = [p for p in base_vars(rng, "/h", body) if p[0] != b"CONTENT_LENGTH"]
    choice = rng.random()
    if choice < 0.5:
        value = rng.choice(BAD_LENGTHS)
    elif choice < 0.75:  # announces more than follows (EOF in the body)
        value = str(len(body) + rng.choice([1, 100, 10**6, 10**12]))
    else:  # announces less: the rest must never be read as a request
        value = str(max(0, len(body) - rng.randrange(1, 6)))
        body += packet(base_vars(rng, "/smuggled"))
    pairs.append((b"CONTENT_LENGTH", value.encode("latin-1")))
    rng.shuffle(pairs)
    return packet(pairs, body)


def _random_bytes(rng):
    data = rng.randbytes(rng.choice([1, 3, 4, 5, 16, 200, 2000]))
    if rng.random() < 0.5:  # a plausible header in front of junk
        data = bytes([rng.choice([0, 30])]) + struct.pack("<H", len(data)) + b"\0" + data
    return data


def _bit_flips(rng):
    data = bytearray(valid(rng))
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def _broken_vars(rng):
    pairs = base_vars(rng, "/h")
    block = bytearray(encode_vars(pairs))
    kind = rng.randrange(7)
    if kind == 0:
        block += b"\0\0\3\0abc"  # empty key
    elif kind == 1:
        block += struct.pack("<H", rng.randrange(10, 65536)) + b"KEY"  # key runs past the end
    elif kind == 2:
        block += b"\3\0KEY" + struct.pack("<H", rng.randrange(10, 65536)) + b"v"
    elif kind == 3:
        block += b"\x05"  # one trailing byte
    elif kind == 4:
        block += b"".join(struct.pack("<H", 3) + b"K%02d" % (i % 100) + b"\1\0v"
                          for i in range(rng.choice([990, 1001, 1500])))
    elif kind == 5:  # NUL, CR, LF, high bytes inside keys and values
        block += encode_vars([(b"HTTP_X\0EVIL", b"a\r\nb\0c\xff"),
                              (b"PATH_INFO", b"/\0/../\xff\r\n")])
    else:  # the same var many times
        block += encode_vars([(b"HTTP_COOKIE", b"a=%d" % i) for i in range(300)])
    block = bytes(block[:65535])
    return struct.pack("<BHB", 0, len(block), 0) + block


def _pipelined(rng):
    return valid(rng) + valid(rng) + rng.randbytes(rng.randrange(50))


def _http(rng):
    line = rng.choice([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /x HTTP/1.0\r\n\r\n",
                       b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01\x02\x00\x01",
                       b"GET", b"OPTIONS * HTTP/1.1\r\n\r\n"])
    return line


MUTATORS = {
    "truncated": _truncated, "wrong-size": _wrong_size, "huge-size": _huge_size,
    "bad-modifiers": _bad_modifiers, "bad-content-length": _bad_content_length,
    "random-bytes": _random_bytes, "bit-flips": _bit_flips, "broken-vars": _broken_vars,
    "pipelined": _pipelined, "http": _http,
}


def hostile_packets(rng: random.Random, n: int) -> Iterator[tuple[str, bytes]]:
    kinds = list(MUTATORS)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        yield kind, MUTATORS[kind](rng)
