"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans-IO.

A TCP load balancer that does not speak HTTP (HAProxy in ``mode tcp``, AWS
NLB, nginx's ``stream`` module with ``proxy_protocol on``) cannot add
X-Forwarded-For; instead it opens each connection to the server with one
header naming the client's address, then relays the client's bytes. The
spec (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) says the
receiver must not guess: when it is enabled, every connection starts with a
header, and one that does not is closed.

Version 1 is a text line of at most 107 bytes with its CRLF::

    PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\\r\\n
    PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\\r\\n
    PROXY UNKNOWN\\r\\n                 (anything may follow UNKNOWN)

Version 2 is binary: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, a
version/command byte (0x21 PROXY, 0x20 LOCAL: a health check by the
balancer itself, whose addresses are the connection's own), a
family/transport byte (AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX; STREAM or
DGRAM), a big-endian u16 length of what follows, the addresses (12, 36 or
216 bytes) and TLVs, which are skipped.

Use :class:`ProxyParser` (``feed`` bytes as they come; it returns the
:class:`ProxyHeader` once complete, ``None`` while it needs more) or
:func:`parse` on a buffer. Bytes after the header belong to the proxied
connection (``ProxyParser.rest``). Every malformed input raises
:class:`ProxyHeaderError` -- as soon as the bytes seen cannot begin a valid
header, never after more than 107 bytes for version 1 or 16 + 65535 for
version 2 -- and nothing else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import ProtocolError

__all__ = ["ProxyHeader", "ProxyHeaderError", "ProxyParser", "parse",
           "V1_PREFIX", "V1_MAX", "V2_SIGNATURE"]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEAD = struct.Struct("!12sBBH")  # signature, version/command, family/transport, length
# family nibble -> (name, address block size, address length)
_V2_FAMILIES = {0x0: ("UNSPEC", 0, 0), 0x1: ("INET", 12, 4), 0x2: ("INET6", 36, 16),
                0x3: ("UNIX", 216, 108)}
_V2_TRANSPORTS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}
_V1_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}


class ProxyHeaderError(ProtocolError):
    """The connection did not start with a valid PROXY protocol header; the
    message says what was wrong (and, for a plain request, that it was one)."""

    status_hint = 400
    reason = "bad-proxy-header"

    def __init__(self, message: str, version: int = 0) -> None:
        super().__init__(message)
        self.version = version  # 1 or 2: a header of that version; 0: none at all

    def __reduce__(self):
        return (type(self), (str(self), self.version))


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed header.

    ``version``: 1 or 2. ``command``: "PROXY" or "LOCAL" (v2 only).
    ``family``: v1 "TCP4", "TCP6", "UNKNOWN"; v2 "INET", "INET6", "UNIX",
    "UNSPEC". ``source``/``destination``: ``(ip, port)`` for TCP/INET
    families, ``(path, 0)`` for UNIX (NULs stripped), ``None`` when the
    header gives none (LOCAL, UNKNOWN, UNSPEC: use the connection's own).
    ``size``: bytes the header took on the wire.
    """

    version: int
    command: str
    family: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    size: int

    @property
    def client(self) -> tuple[str, int] | None:
        """The proxied client's address, or None when the connection's own
        peer stands (LOCAL, UNKNOWN, UNSPEC)."""
        return self.source if self.command == "PROXY" else None


def _fail(message: str, data: bytes) -> ProxyHeaderError:
    version = 1 if message.startswith("PROXY v1") else 2 if message.startswith("PROXY v2") else 0
    return ProxyHeaderError("%s (connection starts %r)" % (message, bytes(data[:40])), version)


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None if ``data`` is a valid
    beginning of one that needs more bytes. Raises ProxyHeaderError."""
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    what = "an HTTP request" if data[:1].isalpha() else "something else"
    raise _fail("no PROXY protocol header: %s came first" % what, data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = bytes(data[:len(V1_PREFIX)])
    if not V1_PREFIX.startswith(head):
        raise _fail("no PROXY protocol header: an HTTP request came first"
                    if head[:1].isalpha() else "no PROXY protocol header", data)
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise _fail("PROXY v1 line has no CRLF within %d bytes" % V1_MAX, data)
        if b"\n" in data[:V1_MAX] or b"\0" in data[:V1_MAX]:
            raise _fail("PROXY v1 line has a bare LF or a NUL", data)
        return None
    line = bytes(data[:end])
    size = end + 2
    fields = line.split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, size)
    if len(fields) != 6:
        raise _fail("PROXY v1 line needs 'PROXY TCP4|TCP6 SRC DST SPORT DPORT', got %d "
                    "fields" % len(fields), data)
    family = _V1_FAMILIES.get(fields[1])
    if family is None:
        raise _fail("PROXY v1 protocol %r is not TCP4, TCP6 or UNKNOWN" % fields[1], data)
    source = (_v1_address(fields[2], family, data), _v1_port(fields[4], data))
    destination = (_v1_address(fields[3], family, data), _v1_port(fields[5], data))
    return ProxyHeader(1, "PROXY", fields[1].decode(), source, destination, size)


def _v1_address(text: bytes, family, data: bytes) -> str:
    try:
        if b"%" in text:  # ipaddress takes an IPv6 scope ("fe80::1%eth0"); the spec has none
            raise ValueError(text)
        return str(family(text.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise _fail("PROXY v1 address %r is not an %s address" % (
            text[:45], "IPv4" if family is ipaddress.IPv4Address else "IPv6"), data) from None


def _v1_port(text: bytes, data: bytes) -> int:
    # 0..65535 in decimal, no sign, no leading zero (spec 2.1)
    if not (text.isdigit() and text.isascii()) or len(text) > 5 or \
            (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise _fail("PROXY v1 port %r is not a number 0-65535" % text[:8], data)
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    head = bytes(data[:len(V2_SIGNATURE)])
    if not V2_SIGNATURE.startswith(head):
        raise _fail("no PROXY protocol header (not the v2 signature)", data)
    if len(data) < _V2_HEAD.size:
        return None
    _, ver_cmd, fam, length = _V2_HEAD.unpack_from(data)
    if ver_cmd >> 4 != 2:
        raise _fail("PROXY v2 header has version %d, not 2" % (ver_cmd >> 4), data)
    command = {0x0: "LOCAL", 0x1: "PROXY"}.get(ver_cmd & 0xF)
    if command is None:
        raise _fail("PROXY v2 command %d is neither LOCAL (0) nor PROXY (1)"
                    % (ver_cmd & 0xF), data)
    family = _V2_FAMILIES.get(fam >> 4)
    if family is None or (fam & 0xF) not in _V2_TRANSPORTS:
        raise _fail("PROXY v2 family/transport byte 0x%02x is not one the spec defines"
                    % fam, data)
    name, block, alen = family
    if length < block:
        raise _fail("PROXY v2 %s addresses need %d bytes, the header has %d"
                    % (name, block, length), data)
    size = _V2_HEAD.size + length
    if len(data) < size:
        return None
    if command == "LOCAL" or name == "UNSPEC":
        return ProxyHeader(2, command, name, None, None, size)
    at = _V2_HEAD.size
    if name == "UNIX":
        src = bytes(data[at:at + alen]).split(b"\0", 1)[0].decode("latin-1")
        dst = bytes(data[at + alen:at + 2 * alen]).split(b"\0", 1)[0].decode("latin-1")
        return ProxyHeader(2, command, name, (src, 0), (dst, 0), size)
    kind = ipaddress.IPv4Address if name == "INET" else ipaddress.IPv6Address
    src = str(kind(bytes(data[at:at + alen])))
    dst = str(kind(bytes(data[at + alen:at + 2 * alen])))
    sport, dport = struct.unpack_from("!HH", data, at + 2 * alen)
    return ProxyHeader(2, command, name, (src, sport), (dst, dport), size)


class ProxyParser:
    """Incremental: ``feed`` bytes as they arrive until it returns the header;
    then ``rest`` holds the bytes that followed it (the proxied stream)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.header: ProxyHeader | None = None
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """The header once complete (later calls keep returning it and add to
        ``rest``), None while more bytes are needed; raises ProxyHeaderError."""
        if self.header is not None:
            self.rest += data
            return self.header
        self._buffer += data
        header = parse(self._buffer)
        if header is not None:
            self.header = header
            self.rest = bytes(self._buffer[header.size:])
            self._buffer = bytearray()
        return header
