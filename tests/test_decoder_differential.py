"""Differential tests: the C decoder must behave exactly like decoder_py.

Hypothesis generates valid packets (NUL and high bytes, empty values,
duplicate keys, modifier1 30, bodies) and mutated ones (bit flips,
truncation, datasize changes, spliced random bytes, pure noise) with random
max_block values; both backends must return equal Packets or raise the same
error class with the same message.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packet_builder import build_packet, c_unavailable_reason, expected_items, raw_packet

from uwsgigw import backend as decoder
from uwsgigw.protocol import decoder_py
from uwsgigw.protocol.errors import ProtocolError

_SKIP = c_unavailable_reason()
if _SKIP is None:
    C_DECODE = decoder.select("c").decode
else:  # pragma: no cover - depends on the build
    pytestmark = pytest.mark.skip(reason=_SKIP)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the parser: NUL (the C output separator), high
# latin-1 bytes, the letters of HTTP methods, and small length-like values.
interesting_bytes = st.binary(max_size=40) | st.lists(
    st.sampled_from([0, 1, 2, 0x1E, 0x7F, 0x80, 0xE9, 0xFF, 0x45, 0x54, 0x47]), max_size=12
).map(bytes)
keys = st.one_of(
    st.sampled_from([b"HTTP_COOKIE", b"REQUEST_METHOD", b"PATH_INFO", b"\0", b"K\0EY"]),
    interesting_bytes.filter(bool),
)
values = st.one_of(st.just(b""), interesting_bytes, st.binary(min_size=200, max_size=3000))
pairs_strategy = st.lists(st.tuples(keys, values), max_size=40)
max_blocks = st.one_of(
    st.sampled_from([4096, 65535, 0, 1, -1, 2**70, -(2**70)]),
    st.integers(min_value=-5, max_value=70000),
)


def outcome(decode, data, max_block):
    try:
        return ("ok", decode(data, max_block))
    except ProtocolError as exc:
        return ("error", type(exc).__name__, str(exc))


def assert_same(data: bytes, max_block: int) -> tuple:
    py = outcome(decoder_py.decode, data, max_block)
    for wrap in (bytes, bytearray, memoryview):
        assert outcome(C_DECODE, wrap(data), max_block) == py, (data[:64], max_block)
    return py


@st.composite
def valid_packets(draw) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    pairs = draw(pairs_strategy)
    if pairs and draw(st.booleans()):  # duplicate some keys, as old nginx does
        for _ in range(draw(st.integers(1, 3))):
            pairs.append((draw(st.sampled_from(pairs))[0], draw(values)))
    while 4 * len(pairs) + sum(len(k) + len(v) for k, v in pairs) > 0xFFFF:
        pairs.pop()  # keep the block within a u16 datasize
    modifier1 = draw(st.sampled_from([0, 30]))
    body = draw(st.binary(max_size=20))
    return build_packet(pairs, modifier1=modifier1, body=body), pairs


# Weighted so that most mutants get past the header checks and hit the
# per-var bounds checks, where an off-by-one would hide.
MUTATIONS = ["flip"] * 3 + ["size"] * 3 + ["truncate", "splice", "delete", "modifier"]


@st.composite
def mutated_packets(draw) -> bytes:
    data = bytearray(draw(valid_packets())[0])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "flip" and len(data) > 4:
            i = draw(st.integers(4, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "size" and len(data) >= 4:
            # mostly shrink: the block then ends inside a var
            size = int.from_bytes(data[1:3], "little") + draw(st.integers(-4, 2))
            data[1:3] = (size % 0x10000).to_bytes(2, "little")
        elif kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == "splice":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i:i + draw(st.integers(1, 4))]
        elif kind == "modifier" and len(data) >= 4:
            data[draw(st.sampled_from([0, 3]))] = draw(st.sampled_from([0, 1, 5, 30, 71, 255]))
    return bytes(data)


@SETTINGS
@given(valid_packets(), max_blocks)
def test_valid_packets(packet_and_pairs, max_block):
    data, pairs = packet_and_pairs
    result = assert_same(data, max_block)
    block = int.from_bytes(data[1:3], "little")
    if block <= max_block and result[0] == "ok":
        assert result[1].items == expected_items(pairs)
        assert result[1].consumed == 4 + block


@SETTINGS
@given(valid_packets())
def test_valid_packets_decode(packet_and_pairs):
    data, pairs = packet_and_pairs
    _, packet = assert_same(data, 65535)
    assert packet.items == expected_items(pairs)


@SETTINGS
@given(mutated_packets())
def test_mutated_packets(data):
    assert_same(data, 65535)


@SETTINGS
@given(mutated_packets(), max_blocks)
def test_mutated_packets_any_limit(data, max_block):
    assert_same(data, max_block)


@SETTINGS
@given(st.binary(max_size=300), max_blocks)
@example(b"GET / HTTP/1.1\r\n", 4096)
@example(b"\0ET\0", 65535)
@example(b"\0\1\0\0\0", 4096)
def test_random_bytes(data, max_block):
    assert_same(data, max_block)


@SETTINGS
@given(st.binary(min_size=1, max_size=300))
def test_random_block_behind_valid_header(block):
    # noise inside the block exercises every per-var check
    assert_same(raw_packet(block), 65535)


@settings(max_examples=60, deadline=None)
@given(st.integers(990, 1010), st.integers(0, 3))
def test_var_count_limit(nvars, tail):
    block = b"".join(struct.pack("<H", 1) + b"K" + struct.pack("<H", 0) for _ in range(nvars))
    data = raw_packet(block + b"\1" * tail)
    result = assert_same(data, 65535)
    if nvars > decoder_py.MAX_VARS:
        assert result[1] == "TooManyVars"


@SETTINGS
@given(valid_packets(), st.data())
def test_prefixes_agree(packet_and_pairs, data_strategy):
    data, _ = packet_and_pairs
    cut = data_strategy.draw(st.integers(0, len(data)))
    assert_same(data[:cut], 65535)


small_pairs = st.lists(
    st.tuples(interesting_bytes.filter(bool), st.just(b"") | interesting_bytes), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(small_pairs, st.binary(max_size=3))
def test_every_block_truncation(pairs, tail):
    # Exhaustive over cut points: each one ends the block inside, or right
    # after, some field, which is where an off-by-one bounds check hides.
    block = build_packet(pairs)[4:] + tail
    for cut in range(len(block) + 1):
        assert_same(raw_packet(block[:cut]), 65535)
