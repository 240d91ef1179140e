"""Pure-Python uwsgi packet decoder (sans-IO), the reference twin of the C one.

Correct rather than fast: it follows csrc/uwsgi_decoder.c check for check, in
the same order, and raises the same errors with the same arguments. The C
backend is differential-tested against this module, so when the two disagree
this file is the specification.

Wire format (DESIGN.md, "The uwsgi protocol as nginx speaks it"):
header ``modifier1 u8, datasize u16le, modifier2 u8``; then ``datasize``
bytes of ``u16le keylen, key, u16le vallen, value`` with no terminator; then
the request body.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import (
    BadModifier,
    BlockTooLarge,
    EmptyKey,
    HttpOnUwsgiSocket,
    TooManyVars,
    TrailingBytes,
    TruncatedVar,
)

__all__ = ["Packet", "decode", "HEADER_SIZE", "MAX_VARS", "HTTP_DATASIZE", "HTTP_STARTS"]

Buffer = bytes | bytearray | memoryview  # itemsize 1

HEADER_SIZE = 4
MAX_VARS = 1000
#: b"ET" as u16le: the datasize of a packet that starts b"GET ".
HTTP_DATASIZE = 21573
#: First 4 bytes of HTTP request lines (same list as looks_like_http() in C).
HTTP_STARTS = frozenset(
    (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")
)
#: modifier1 values we serve: 0 = WSGI, 30 = WSGI with SCRIPT_NAME stripped
#: from PATH_INFO (uWSGI's UWSGI_MODIFIER_MANAGE_PATH_INFO).
MODIFIER1_OK = (0, 30)

_HEADER = struct.Struct("<BHB")
_U16 = struct.Struct("<H")


class Packet(NamedTuple):
    """A decoded uwsgi request header.

    ``items`` is flat, ``[key0, value0, key1, value1, ...]`` in wire order,
    latin-1 decoded (PEP 3333 native strings), duplicates kept. The request
    body starts at ``data[consumed:]``.
    """

    modifier1: int
    modifier2: int
    consumed: int
    items: list[str]


def check_header(head: bytes, max_block: int) -> int:
    """Raise for a bad 4-byte header, else return the datasize.

    Order matters and matches C: HTTP first (an HTTP request line would also
    fail the modifier check, but "use uwsgi_pass" is the useful message).
    """
    modifier1, datasize, modifier2 = _HEADER.unpack(head)
    if datasize == HTTP_DATASIZE or head in HTTP_STARTS:
        raise HttpOnUwsgiSocket(head)
    if modifier1 not in MODIFIER1_OK or modifier2 != 0:
        raise BadModifier(modifier1, modifier2)
    if datasize > max_block:
        raise BlockTooLarge(datasize, max_block)
    return datasize


def decode(data: Buffer, max_block: int) -> Packet | None:
    """Decode the packet at the start of ``data``; None means "need data".

    Header errors are raised as soon as the 4 header bytes are there; block
    errors once the whole block is.
    """
    if len(data) < HEADER_SIZE:
        return None
    head = bytes(data[:HEADER_SIZE])
    datasize = check_header(head, max_block)
    end = HEADER_SIZE + datasize
    if len(data) < end:
        return None
    # Release the view even on error: an exported bytearray cannot resize.
    with memoryview(data) as view:
        items = _parse_vars(view, end)
    return Packet(head[0], head[3], end, items)


def _parse_vars(pkt: memoryview, end: int) -> list[str]:
    """Split the vars block ``pkt[4:end]``; error offsets are packet offsets."""
    items: list[str] = []
    pos = HEADER_SIZE
    nvars = 0
    while pos < end:
        left = end - pos
        if nvars == MAX_VARS:
            raise TooManyVars(MAX_VARS, pos)
        if left < 2:
            raise TrailingBytes(left, pos, nvars)
        (klen,) = _U16.unpack_from(pkt, pos)
        if klen == 0:
            raise EmptyKey(nvars, pos)
        pos += 2
        left -= 2
        if klen > left:
            raise TruncatedVar(nvars, "key", pos, klen, left)
        items.append(str(pkt[pos:pos + klen], "latin-1"))
        pos += klen
        left -= klen
        if left < 2:
            raise TruncatedVar(nvars, "value length", pos, 2, left)
        (vlen,) = _U16.unpack_from(pkt, pos)
        pos += 2
        left -= 2
        if vlen > left:
            raise TruncatedVar(nvars, "value", pos, vlen, left)
        items.append(str(pkt[pos:pos + vlen], "latin-1"))
        pos += vlen
        nvars += 1
    return items
