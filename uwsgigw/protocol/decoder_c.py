"""C uwsgi packet decoder (cffi), same API and behaviour as decoder_py.

Importing this module raises ImportError when the extension is not built;
``uwsgigw.backend.select()`` turns that into a fallback or an install hint.

Hot path: one C call validates the whole block and writes
``key0\\0value0\\0key1...`` into a per-thread scratch buffer; Python turns it
into the item list with one latin-1 decode and one ``str.split`` (both C
builtins), so nothing here loops per var. C also records each item's end
offset; the wrapper slices by those instead when a key or value itself holds
a NUL byte (legal, never sent by nginx: the split then gives too many items),
and when the items are so large that str.split's byte-by-byte scan costs
more than a short loop (see _SPLIT_MAX_AVG_SHIFT).
"""

from __future__ import annotations

import threading

from .._cdecoder import ffi, lib
from .decoder_py import HTTP_DATASIZE, MAX_VARS, Buffer, Packet
from .errors import (
    BadModifier,
    BlockTooLarge,
    EmptyKey,
    HttpOnUwsgiSocket,
    ProtocolError,
    TooManyVars,
    TrailingBytes,
    TruncatedVar,
)

__all__ = ["decode", "Packet"]

# The C and Python limits must agree, or the backends would diverge. A stale
# extension (built from an older header) fails here, so "auto" falls back.
if lib.UWSGI_MAX_VARS != MAX_VARS or lib.UWSGI_HTTP_DATASIZE != HTTP_DATASIZE:
    raise ImportError("uwsgigw._cdecoder does not match decoder_py: rebuild it")

_FIELD_NAMES = {
    lib.UWSGI_FIELD_KEY: "key",
    lib.UWSGI_FIELD_VAL_LEN: "value length",
    lib.UWSGI_FIELD_VAL: "value",
}
_NEED_DATA = lib.UWSGI_NEED_DATA
_MASK17 = (1 << 17) - 1
_INT64_MAX = (1 << 63) - 1
# str.split("\0") costs ~0.4 ns per byte (CPython scans byte by byte) plus
# ~50 ns per item; slicing by C's offsets costs ~110 ns per item and no
# scan. Measured crossover: items averaging ~200 bytes. Below 256 bytes per
# item (every nginx-typical packet: ~15) split; above (big cookies or blobs)
# slice, 3x faster for a 60 KB block of 4 KB values.
_SPLIT_MAX_AVG_SHIFT = 8
# Packet(...) runs a Python-level __new__; tuple.__new__ builds the same
# NamedTuple instance without that frame (as namedtuple's own __new__ does).
_new_tuple = tuple.__new__

# Per-thread scratch: cffi releases the GIL during the C call and the output
# is read after it returns, so threads (the `threads` option) must not share
# one. A single-threaded worker allocates exactly one, on its first packet.
_local = threading.local()


def _new_scratch() -> tuple:
    sc = ffi.new("uwsgi_scratch *")  # ~74 KB, zeroed once
    # Long-lived views: slicing them is cheaper than a fresh ffi.buffer() or
    # ffi.unpack() per packet.
    out = ffi.buffer(ffi.addressof(sc, "out"))
    out_view = memoryview(out)
    ends = memoryview(ffi.buffer(ffi.addressof(sc, "ends"))).cast("I")
    _local.scratch = scratch = sc, out, out_view, ends
    return scratch


def decode(data: Buffer, max_block: int) -> Packet | None:
    """Decode the packet at the start of ``data``; None means "need data"."""
    try:
        sc, out, out_view, ends = _local.scratch
    except AttributeError:
        sc, out, out_view, ends = _new_scratch()
    try:
        rc = lib.uwsgi_decode(ffi.from_buffer(data), len(data), max_block, sc)
    except OverflowError:
        # max_block beyond int64: only its sign matters against a u16 datasize
        # (the error message takes max_block itself, not the clamped value).
        limit = -1 if max_block < 0 else _INT64_MAX
        rc = lib.uwsgi_decode(ffi.from_buffer(data), len(data), limit, sc)
    if rc > 0:
        # Unpack the summary C packed into rc (see uwsgi_decoder.h).
        outlen = rc & _MASK17
        nitems = rc >> 42
        if outlen < nitems << _SPLIT_MAX_AVG_SHIFT:
            text = out[:outlen].decode("latin-1")
            items = text.split("\0")
            if len(items) != nitems:  # a key or value itself holds NUL
                items = _slice_items(text, ends, nitems)
        else:  # few large items, or none: decode without the bytes copy
            items = _slice_items(str(out_view[:outlen], "latin-1"), ends, nitems)
        return _new_tuple(Packet, ((rc >> 34) & 0xFF, 0, (rc >> 17) & _MASK17, items))
    if rc == _NEED_DATA:
        return None
    raise _error(sc.res, data, max_block)


def _slice_items(text: str, ends: memoryview, nitems: int) -> list[str]:
    """The items by the end offsets C recorded; exact even with NULs inside."""
    items: list[str] = []
    append = items.append
    start = 0
    for end in ends[:nitems].tolist():
        append(text[start:end])
        start = end + 1
    return items


def _error(res, data: Buffer, max_block: int) -> ProtocolError:
    """Map C's error record to the same exception decoder_py raises."""
    code = res.error
    if code == lib.UWSGI_E_HTTP:
        return HttpOnUwsgiSocket(bytes(data[:4]))
    if code == lib.UWSGI_E_MODIFIER:
        return BadModifier(res.modifier1, res.modifier2)
    if code == lib.UWSGI_E_BLOCK_TOO_LARGE:
        return BlockTooLarge(res.datasize, max_block)
    if code == lib.UWSGI_E_EMPTY_KEY:
        return EmptyKey(res.index, res.offset)
    if code == lib.UWSGI_E_TRUNCATED:
        return TruncatedVar(res.index, _FIELD_NAMES[res.field], res.offset, res.need, res.left)
    if code == lib.UWSGI_E_TRAILING:
        return TrailingBytes(res.left, res.offset, res.index)
    if code == lib.UWSGI_E_TOO_MANY_VARS:
        return TooManyVars(MAX_VARS, res.offset)
    raise AssertionError("uwsgi_decode: unexpected error code %d" % code)
