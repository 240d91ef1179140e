"""Build uwsgi packets for tests, and (re)generate the fixture packets.

``build_packet`` is importable from any test (``from packet_builder import
build_packet``; pytest puts tests/ on sys.path). Run this file to rewrite
``tests/packets/{valid,invalid}/*.bin`` and their ``expected.json``:

    python tests/packet_builder.py

The fixtures are committed; test_decoder.py checks that they still match
what this file generates, so edit the tables here, not the .bin files.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

PACKETS = Path(__file__).resolve().parent / "packets"


def encode_vars(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The vars block: u16le keylen, key, u16le vallen, value, repeated."""
    out = bytearray()
    for key, value in pairs:
        out += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return bytes(out)


def build_packet(
    pairs: list[tuple[bytes, bytes]],
    modifier1: int = 0,
    modifier2: int = 0,
    body: bytes = b"",
) -> bytes:
    """A complete uwsgi request: header, vars block, then ``body``."""
    block = encode_vars(pairs)
    if len(block) > 0xFFFF:
        raise ValueError("vars block of %d bytes does not fit a u16 datasize" % len(block))
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block + body


def raw_packet(
    block: bytes, modifier1: int = 0, modifier2: int = 0, datasize: int | None = None
) -> bytes:
    """A packet around an arbitrary (possibly malformed) block."""
    size = len(block) if datasize is None else datasize
    return struct.pack("<BHB", modifier1, size, modifier2) + block


def c_unavailable_reason() -> str | None:
    """Why the C backend cannot be tested here, or None when it can.

    Set UWSGIGW_TEST_REQUIRE_C=1 (CI) to turn the skip into an error, so a
    broken extension build cannot pass as "skipped".
    """
    from uwsgigw import backend as decoder

    try:
        decoder.select("c")
    except decoder.DecoderUnavailable as exc:
        if os.environ.get("UWSGIGW_TEST_REQUIRE_C"):
            raise
        return "C decoder extension not built; `pip install -e .` builds it (%s)" % exc.__cause__
    return None


def decoder_params() -> list:
    """pytest params for both decoder backends; C is skipped if not built."""
    import pytest

    from uwsgigw import backend as decoder

    params = [pytest.param(decoder.select("python"), id="python")]
    reason = c_unavailable_reason()
    if reason is None:
        params.append(pytest.param(decoder.select("c"), id="c"))
    else:
        params.append(pytest.param(None, id="c", marks=pytest.mark.skip(reason=reason)))
    return params


# -- fixtures ----------------------------------------------------------------

def nginx_get() -> list[tuple[bytes, bytes]]:
    """What nginx sends for a browser GET with the stock uwsgi_params."""
    return [
        (b"QUERY_STRING", b"page=2&sort=desc"),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""),
        (b"REQUEST_URI", b"/articles/?page=2&sort=desc"),
        (b"PATH_INFO", b"/articles/"),
        (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"https"),
        (b"HTTPS", b"on"),
        (b"REMOTE_ADDR", b"203.0.113.7"),
        (b"REMOTE_PORT", b"51234"),
        (b"SERVER_PORT", b"443"),
        (b"SERVER_NAME", b"example.com"),
        (b"HTTP_HOST", b"example.com"),
        (b"HTTP_USER_AGENT",
         b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
        (b"HTTP_ACCEPT", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        (b"HTTP_ACCEPT_LANGUAGE", b"en-US,en;q=0.5"),
        (b"HTTP_ACCEPT_ENCODING", b"gzip, deflate, br"),
        (b"HTTP_COOKIE", b"sessionid=4f2a9c1e7b3d; csrftoken=Zx81kPq0"),
    ]


def nginx_post() -> list[tuple[bytes, bytes]]:
    pairs = [p for p in nginx_get() if p[0] not in (b"CONTENT_TYPE", b"CONTENT_LENGTH")]
    return pairs + [
        (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
        (b"CONTENT_LENGTH", b"27"),
    ]


def many_headers() -> list[tuple[bytes, bytes]]:
    """An old nginx (< 1.23) passes repeated headers as repeated vars."""
    extra = [(b"HTTP_X_CUSTOM_%03d" % i, b"value-%d" % i) for i in range(80)]
    dupes = [(b"HTTP_COOKIE", b"a=1"), (b"HTTP_COOKIE", b"b=2"), (b"HTTP_ACCEPT", b"*/*")]
    return nginx_get() + extra + dupes


def big_block() -> list[tuple[bytes, bytes]]:
    """~60 KB: a large cookie jar, legal with buffer-size 65535."""
    pairs = nginx_get()
    pairs += [(b"HTTP_X_BLOB_%02d" % i, bytes(range(32, 127)) * 42) for i in range(15)]
    return pairs


def thousand_vars() -> list[tuple[bytes, bytes]]:
    return [(b"V%d" % i, b"%d" % i) for i in range(1000)]


def valid_fixtures() -> dict[str, dict[str, Any]]:
    """name -> {"packet": bytes, "max_block": int, "pairs": [...], "modifier1": int}."""
    form = b"title=Hello&body=caf%C3%A9!"
    high = [(b"HTTP_X_LATIN1", bytes(range(0x80, 0x100))),
            (b"PATH_INFO", "/café".encode("latin-1"))]
    nul = [(b"HTTP_X_NUL", b"a\0b"), (b"K\0EY", b"\0"), (b"PATH_INFO", b"/")]
    table: list[tuple[str, list[tuple[bytes, bytes]], int, bytes, int]] = [
        # name, pairs, modifier1, body, max_block
        ("nginx_get", nginx_get(), 0, b"", 4096),
        ("nginx_post_with_body", nginx_post(), 0, form, 4096),
        ("empty_values", [(b"A", b""), (b"B", b""), (b"C", b"")], 0, b"", 4096),
        ("empty_packet", [], 0, b"", 4096),
        ("empty_packet_with_body", [], 0, b"xyz", 0),
        ("modifier1_30", nginx_get(), 30, b"", 4096),
        ("many_headers", many_headers(), 0, b"", 4096),
        ("high_bytes", high, 0, b"", 4096),
        ("nul_inside", nul, 0, b"", 4096),
        ("block_60k", big_block(), 0, b"", 65535),
        ("vars_1000", thousand_vars(), 0, b"", 65535),
        ("block_exactly_max", [(b"K", b"v" * 4091)], 0, b"", 4096),
    ]
    return {
        name: {"packet": build_packet(pairs, m1, body=body), "max_block": mb,
               "pairs": pairs, "modifier1": m1, "body": body}
        for name, pairs, m1, body, mb in table
    }


def expected_items(pairs: list[tuple[bytes, bytes]]) -> list[str]:
    """The flat, latin-1 decoded item list a decoder must return."""
    return [s.decode("latin-1") for pair in pairs for s in pair]


def invalid_fixtures() -> dict[str, dict[str, Any]]:
    """name -> {"packet", "max_block", "error": class name}.

    The error class is also the first part of the file name.
    """
    get = encode_vars(nginx_get()[:3])
    one = encode_vars([(b"KEY", b"value")])
    cases: list[tuple[str, bytes, int]] = [
        ("HttpOnUwsgiSocket__get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4096),
        ("HttpOnUwsgiSocket__post", b"POST /form HTTP/1.1\r\n\r\n", 4096),
        ("HttpOnUwsgiSocket__datasize_21573", raw_packet(b"", datasize=21573), 65535),
        ("BadModifier__modifier1_5", raw_packet(get, modifier1=5), 4096),
        ("BadModifier__modifier2_1", raw_packet(get, modifier2=1), 4096),
        ("BlockTooLarge__4097_max_4096", build_packet([(b"K", b"v" * 4092)]), 4096),
        ("BlockTooLarge__header_only", raw_packet(b"", datasize=60000), 4096),
        ("EmptyKey__first", raw_packet(b"\0\0\3\0abc"), 4096),
        ("EmptyKey__after_vars", raw_packet(get + b"\0\0\0\0"), 4096),
        # A lone byte after the last var is both a "truncated key length"
        # and a "trailing byte"; the decoders call it TrailingBytes.
        ("TrailingBytes__truncated_key_len", raw_packet(get + b"\5"), 4096),
        ("TrailingBytes__one_byte_block", raw_packet(b"\0"), 4096),
        ("TruncatedVar__key", raw_packet(get + b"\x10\0ABC"), 4096),
        ("TruncatedVar__key_no_val_len", raw_packet(get + b"\3\0KEY"), 4096),
        ("TruncatedVar__val_len", raw_packet(get + b"\3\0KEY\1"), 4096),
        ("TruncatedVar__val", raw_packet(get + b"\3\0KEY\x20\0short"), 4096),
        ("TruncatedVar__val_short_by_one", raw_packet(one[:-1]), 4096),
        ("TooManyVars__1001", build_packet(thousand_vars() + [(b"X", b"")]), 65535),
    ]
    return {
        name: {"packet": pkt, "max_block": mb, "error": name.split("__")[0]}
        for name, pkt, mb in cases
    }


def write_fixtures(root: Path = PACKETS) -> None:
    """Write the .bin files plus expected.json (what tests compare against).

    Valid expectations come from the pairs, not from a decoder; invalid ones
    record the error class and the message decoder_py gives today, so a
    message change shows up as a fixture diff.
    """
    sys.path.insert(0, str(root.parent.parent))
    from uwsgigw.protocol import decoder_py  # only the generator needs uwsgigw
    from uwsgigw.protocol.errors import ProtocolError

    for kind, table in (("valid", valid_fixtures()), ("invalid", invalid_fixtures())):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.bin"):
            old.unlink()
        expected: dict[str, Any] = {}
        for name, fx in table.items():
            (folder / (name + ".bin")).write_bytes(fx["packet"])
            entry: dict[str, Any] = {"max_block": fx["max_block"]}
            if kind == "valid":
                entry.update(modifier1=fx["modifier1"], modifier2=0,
                             consumed=len(fx["packet"]) - len(fx["body"]),
                             items=expected_items(fx["pairs"]))
            else:
                try:
                    decoder_py.decode(fx["packet"], fx["max_block"])
                except ProtocolError as exc:
                    assert type(exc).__name__ == fx["error"], (name, exc)
                    entry.update(error=fx["error"], message=str(exc))
                else:
                    raise AssertionError("%s: decoded without error" % name)
            expected[name + ".bin"] = entry
        text = json.dumps(expected, indent=1, sort_keys=True) + "\n"
        (folder / "expected.json").write_text(text, encoding="utf-8")
        print("wrote %d fixtures to %s" % (len(table), folder))


if __name__ == "__main__":
    write_fixtures()
