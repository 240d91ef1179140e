"""``http-enable-proxy-protocol``: the PROXY header (HAProxy's spec, v1 and v2).

The sans-IO parser (uwsgigw/protocol/proxy.py) on a table of valid and
invalid headers, fed whole, byte by byte and in random splits, and on random
bytes (hypothesis: nothing but ProxyHeaderError ever comes out); then real
servers with the option on, spoken to over raw sockets: the header's source
is REMOTE_ADDR in the app and in the request log, forwarded-allow-ips is
checked against it, and a missing, malformed, truncated or late header
closes the connection with a log line naming the setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import struct

import pytest
from framed_client import Connection
from hypothesis import given, settings
from hypothesis import strategies as st

from uwsgigw.protocol.proxy import (V1_MAX, V2_SIGNATURE, ProxyHeader, ProxyHeaderError,
                                    ProxyParser, parse)

SETTING = "http-enable-proxy-protocol"


def v2(command: int = 1, family: int = 1, transport: int = 1, addresses: bytes = b"",
       tlvs: bytes = b"", version: int = 2, length: int | None = None) -> bytes:
    """A v2 header: signature, version/command, family/transport, length, body."""
    body = addresses + tlvs
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack("!H", len(body) if length is None else length) + body)


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport))


def unix_paths(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


TLV = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN "h2", then an empty NOOP

VALID = [
    ("v1 TCP4", b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n",
     ProxyHeader(1, "PROXY", "TCP4", ("192.0.2.7", 56324), ("198.51.100.1", 443), 45)),
    ("v1 TCP6", b"PROXY TCP6 2001:db8::7 2001:db8::1 0 65535\r\n",
     ProxyHeader(1, "PROXY", "TCP6", ("2001:db8::7", 0), ("2001:db8::1", 65535), 44)),
    ("v1 TCP6 longest", b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7
     + b"ffff 65535 65535\r\n", ProxyHeader(
         1, "PROXY", "TCP6", (":".join(["ffff"] * 8), 65535), (":".join(["ffff"] * 8), 65535),
         104)),
    ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", "UNKNOWN", None, None, 15)),
    ("v1 UNKNOWN with addresses", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
     ProxyHeader(1, "PROXY", "UNKNOWN", None, None, 35)),
    ("v1 UNKNOWN of 107 bytes", b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n",
     ProxyHeader(1, "PROXY", "UNKNOWN", None, None, 107)),
    ("v2 INET", v2(addresses=inet("192.0.2.7", "198.51.100.1", 56324, 443)),
     ProxyHeader(2, "PROXY", "INET", ("192.0.2.7", 56324), ("198.51.100.1", 443), 28)),
    ("v2 INET6", v2(family=2, addresses=inet("2001:db8::7", "2001:db8::1", 1, 2)),
     ProxyHeader(2, "PROXY", "INET6", ("2001:db8::7", 1), ("2001:db8::1", 2), 52)),
    ("v2 INET with TLVs", v2(addresses=inet("192.0.2.7", "198.51.100.1", 5, 6), tlvs=TLV),
     ProxyHeader(2, "PROXY", "INET", ("192.0.2.7", 5), ("198.51.100.1", 6), 28 + len(TLV))),
    ("v2 INET over DGRAM", v2(transport=2, addresses=inet("192.0.2.7", "192.0.2.8", 5, 6)),
     ProxyHeader(2, "PROXY", "INET", ("192.0.2.7", 5), ("192.0.2.8", 6), 28)),
    ("v2 UNIX", v2(family=3, addresses=unix_paths(b"/run/client", b"/run/lb")),
     ProxyHeader(2, "PROXY", "UNIX", ("/run/client", 0), ("/run/lb", 0), 232)),
    ("v2 LOCAL", v2(command=0, family=0, transport=0),
     ProxyHeader(2, "LOCAL", "UNSPEC", None, None, 16)),
    ("v2 LOCAL with addresses", v2(command=0, addresses=inet("10.0.0.1", "10.0.0.2", 1, 2)),
     ProxyHeader(2, "LOCAL", "INET", None, None, 28)),
    ("v2 PROXY UNSPEC with TLVs", v2(family=0, transport=0, tlvs=TLV),
     ProxyHeader(2, "PROXY", "UNSPEC", None, None, 16 + len(TLV))),
]

INVALID = [
    ("an HTTP request", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", "an HTTP request came first"),
    ("POST", b"POST / HTTP/1.1\r\n", "an HTTP request came first"),
    ("lower case", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"),
    ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "something else"),
    ("v1 bare LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
    ("v1 no CRLF in 107 bytes", b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n", "no CRLF within 107"),
    ("v1 TCP5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    ("v1 too few fields", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "got 5 fields"),
    ("v1 double space", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "got 7 fields"),
    ("v1 TCP4 with IPv6", b"PROXY TCP4 ::1 ::1 1 2\r\n", "not an IPv4 address"),
    ("v1 TCP6 with IPv4", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "not an IPv6 address"),
    ("v1 IPv6 scope", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not an IPv6 address"),
    ("v1 leading zero address", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not an IPv4"),
    ("v1 port too big", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "not a number 0-65535"),
    ("v1 port with zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "not a number 0-65535"),
    ("v1 negative port", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a number 0-65535"),
    ("v1 port not ASCII", "PROXY TCP4 1.2.3.4 5.6.7.8 \u0661 2\r\n".encode(), "not a number"),
    ("v1 address not ASCII", b"PROXY TCP4 1.2.3.\xb9 5.6.7.8 1 2\r\n", "not an IPv4"),
    ("v2 bad signature", V2_SIGNATURE[:-1] + b"X" + bytes(4), "not the v2 signature"),
    ("v2 version 1", v2(version=1), "version 1, not 2"),
    ("v2 version 3", v2(version=3), "version 3, not 2"),
    ("v2 command 2", v2(command=2), "command 2 is neither"),
    ("v2 family 4", v2(family=4), "not one the spec defines"),
    ("v2 transport 3", v2(transport=3), "not one the spec defines"),
    ("v2 INET too short", v2(addresses=bytes(11)), "INET addresses need 12 bytes"),
    ("v2 INET6 too short", v2(family=2, addresses=bytes(12)), "INET6 addresses need 36"),
    ("v2 UNIX too short", v2(family=3, addresses=bytes(108)), "UNIX addresses need 216"),
]


@pytest.mark.parametrize("name,data,expected", VALID, ids=[v[0] for v in VALID])
def test_valid_headers_whole_byte_by_byte_and_split(name, data, expected):
    after = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    assert parse(data) == expected and parse(data + after) == expected
    assert expected.size == len(data)
    for i in range(len(data)):  # every proper prefix asks for more
        assert parse(data[:i]) is None
    rng = random.Random(name)
    for split in ("bytes", "random", "random"):
        parser = ProxyParser()
        stream = data + after
        got, i = None, 0
        while i < len(stream):
            n = 1 if split == "bytes" else rng.randint(1, 40)
            result = parser.feed(stream[i:i + n])
            assert got is None or result is got  # once complete it stays so
            got = result or got
            i += n
        assert got == expected and parser.rest == after


def test_client_is_the_source_only_for_a_proxied_connection():
    assert parse(VALID[0][1]).client == ("192.0.2.7", 56324)
    for header in (b"PROXY UNKNOWN\r\n", v2(command=0, addresses=inet("1.1.1.1", "2.2.2.2", 1, 2)),
                   v2(family=0, transport=0)):
        assert parse(header).client is None  # the connection's own peer stands


@pytest.mark.parametrize("name,data,message", INVALID, ids=[v[0] for v in INVALID])
def test_invalid_headers_raise_the_typed_error(name, data, message):
    with pytest.raises(ProxyHeaderError, match=message.replace("(", r"\(")) as info:
        parse(data)
    assert info.value.status_hint == 400 and "connection starts" in str(info.value)
    parser = ProxyParser()  # fed byte by byte: the same error, never a hang
    with pytest.raises(ProxyHeaderError, match=message.replace("(", r"\(")):
        for i in range(len(data)):
            parser.feed(data[i:i + 1])


def test_not_a_header_fails_on_its_first_byte():
    """A plain request is refused at once, without waiting for 107 bytes."""
    for first in (b"G", b"\x16", b"\x00", b"PR0"):
        with pytest.raises(ProxyHeaderError):
            ProxyParser().feed(first)
    assert ProxyParser().feed(b"PROXY TCP4 1.2.3.4") is None
    assert ProxyParser().feed(V2_SIGNATURE[:7]) is None


def test_v1_waits_at_most_107_bytes():
    parser = ProxyParser()
    assert parser.feed(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15)) is None  # 106 bytes
    with pytest.raises(ProxyHeaderError, match="no CRLF within 107"):
        parser.feed(b"x")


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_the_typed_error(data):
    for prefix in (b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE,
                   V2_SIGNATURE + b"\x21"):
        stream = prefix + data
        try:
            header = parse(stream)
        except ProxyHeaderError:
            continue
        assert header is None or (isinstance(header, ProxyHeader)
                                  and header.size <= len(stream))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.binary(max_size=64), st.integers(1, 30))
def test_random_v2_headers_parse_or_raise_the_typed_error(head, body, step):
    stream = V2_SIGNATURE + head + body
    parser = ProxyParser()
    try:
        for i in range(0, len(stream), step):
            parser.feed(stream[i:i + step])
    except ProxyHeaderError:
        return
    if parser.header is not None:
        assert parser.header.size + len(parser.rest) == len(stream)


# -- a real server with the option on ----------------------------------------------

# The three HTTP paths (test_http_listener.py): with one thread a WSGI
# connection returns to the C path after its first request, keeping the
# PROXY header's client.
KINDS = {"wsgi-c": ("--module", "field_apps:wsgi", "--threads", "1"),
         "wsgi-pool": ("--module", "field_apps:wsgi", "--threads", "2"),
         "wsgi-py": ("--module", "field_apps:wsgi", "--threads", "2", "--decoder", "python"),
         "asgi": ("--module", "field_apps:asgi")}
REQUEST = b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module", params=list(KINDS))
def server(request, module_factories):
    return module_factories.uwsgigw(
        *KINDS[request.param], "--http-enable-proxy-protocol", "--http-headers-timeout", "2",
        "--processes", "1", http=True)


def port_of(server) -> int:
    return int(server.socket.rpartition(":")[2])


def env_of(c: Connection, request: bytes = REQUEST) -> dict:
    c.send(request)
    r = c.response()
    assert r.status == 200, r.raw
    return json.loads(r.body)


@pytest.mark.parametrize("header,addr,port", [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 8000\r\n", "192.0.2.7", "56324"),
    (v2(family=2, addresses=inet("2001:db8::7", "2001:db8::1", 4242, 80)), "2001:db8::7",
     "4242"),
    (v2(addresses=inet("203.0.113.9", "10.0.0.1", 1234, 80), tlvs=TLV), "203.0.113.9", "1234"),
], ids=["v1", "v2-inet6", "v2-tlvs"])
def test_the_source_becomes_remote_addr_and_is_logged(server, header, addr, port):
    mark = server.log_mark()
    with Connection(port_of(server)) as c:
        c.send(header[:9])  # the header in pieces, the request in the same packet as its end
        env = env_of(c, header[9:] + REQUEST)
        assert env["REMOTE_ADDR"] == addr
        if "REMOTE_PORT" in env:  # WSGI; the ASGI app reports the scope's client host
            assert env["REMOTE_PORT"] == port
        assert env_of(c)["REMOTE_ADDR"] == addr  # kept-alive: still the same client
    log = server.wait_for_log("GET /env", since=mark)
    assert "] %s () {" % addr in log, log


def test_local_and_unknown_keep_the_real_peer(server):
    for header in (v2(command=0, family=0, transport=0), b"PROXY UNKNOWN\r\n"):
        with Connection(port_of(server)) as c:
            c.send(header)
            assert env_of(c)["REMOTE_ADDR"] == "127.0.0.1"


def test_forwarded_allow_ips_is_checked_against_the_proxied_source(server):
    """The real peer (127.0.0.1, trusted by default) is the balancer; what
    counts is the client it names: its own X-Forwarded-For is not believed."""
    spoof = b"GET /env HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    with Connection(port_of(server)) as c:
        c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 80\r\n")
        assert env_of(c, spoof)["REMOTE_ADDR"] == "192.0.2.7"
    with Connection(port_of(server)) as c:  # a trusted proxy behind the balancer
        c.send(b"PROXY TCP4 127.0.0.1 127.0.0.1 5000 80\r\n")
        assert env_of(c, spoof)["REMOTE_ADDR"] == "6.6.6.6"


@pytest.mark.parametrize("data,logged", [
    (REQUEST, "connection closed: no PROXY protocol header: an HTTP request came first"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n" + REQUEST,
     "connection closed: PROXY v1 port b'99999' is not a number 0-65535"),
    (v2(version=1) + REQUEST, "connection closed: PROXY v2 header has version 1, not 2"),
], ids=["missing", "bad-v1", "bad-v2"])
def test_a_missing_or_malformed_header_closes_the_connection(server, data, logged):
    mark = server.log_mark()
    with Connection(port_of(server)) as c:
        c.send(data)
        assert c.closed_by_server() and c.buf == b""  # closed unanswered, as nginx does
    line = server.wait_for_log(logged, since=mark)
    assert "%s is on, so every connection must start with one" % SETTING in line
    with Connection(port_of(server)) as c:  # and the server goes on
        c.send(b"PROXY UNKNOWN\r\n")
        assert env_of(c)["REMOTE_ADDR"] == "127.0.0.1"


def test_a_truncated_or_late_header_is_cut_at_the_headers_timeout(server):
    mark = server.log_mark()
    with Connection(port_of(server)) as c:
        c.send(b"PROXY TCP4 1.2.3.4 ")  # and nothing more
        assert c.closed_by_server(timeout=10) and c.buf == b""
    server.wait_for_log("127.0.0.1: no complete PROXY header within 2s (%s, "
                        "http-headers-timeout)" % SETTING, since=mark)
    with Connection(port_of(server)) as c:  # closed half-way: said so
        c.send(b"PROXY TCP4 1.2.3.4 ")
    server.wait_for_log("closed after 19 bytes of an incomplete PROXY header (%s)" % SETTING,
                        since=mark)


def test_a_tcp_health_check_is_not_logged(server):
    """Load balancers probe by connecting and closing: not worth a line."""
    mark = server.log_mark()
    for _ in range(3):
        socket.create_connection(("127.0.0.1", port_of(server)), timeout=5).close()
    with Connection(port_of(server)) as c:
        c.send(b"PROXY UNKNOWN\r\n")
        env_of(c)
    log = server.wait_for_log("GET /env", since=mark)
    assert "PROXY" not in log, log


def test_a_unix_http_socket_takes_the_header_too(factories):
    from conftest import short_tmpdir

    from uwsgigw.devnginx import connect_address

    server = factories.uwsgigw(*KINDS["wsgi-c"], "--http-enable-proxy-protocol", http=True,
                               socket=os.path.join(short_tmpdir(), "pp.sock"))
    family, address = connect_address(server.socket)
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect(address)
        s.sendall(v2(addresses=inet("192.0.2.99", "10.0.0.1", 777, 80)) + REQUEST)
        data = b""
        while b"}" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    env = json.loads(data.partition(b"\r\n\r\n")[2])
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.99", "777")


# -- behind the real nginx as a TCP balancer ----------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_behind_nginx_stream_proxy_protocol(factories, kind):
    """nginx's stream module with ``proxy_protocol on`` (v1) in front: the
    client's own address (127.0.0.2 here) reaches the app and the log, not
    nginx's. (nginx's http proxy_pass has no way to send the header.)"""
    server = factories.uwsgigw(*KINDS[kind], "--http-enable-proxy-protocol", http=True)
    nginx = factories.nginx(server.socket, site="stream")
    mark = server.log_mark()
    with Connection(nginx.port, source="127.0.0.2") as c:
        client_port = c.sock.getsockname()[1]
        for _ in range(2):  # two requests on the one proxied connection
            env = env_of(c)
            assert env["REMOTE_ADDR"] == "127.0.0.2"
            if kind == "wsgi":
                assert env["REMOTE_PORT"] == str(client_port)
    log = server.wait_for_log("GET /env", since=mark)
    assert "] 127.0.0.2 () {" in log, log
    assert "PROXY" not in log and "[error]" not in nginx.error_log()
