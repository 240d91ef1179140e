"""Every bad-input rule: the answer on the socket AND the log line, per decoder.

Each test gets a fresh server: bad-request log lines are rate limited per
kind (hostile clients must not flood the log), so a shared server would
legitimately swallow the second line of a kind within a second.
"""

from __future__ import annotations

import json
import os
import re
import struct

import pytest

from conftest import (
    DECODERS,
    nginx_vars,
    parse_response,
    uwsgi_connect,
    uwsgi_request,
    recv_all,
    recv_response,
    http_request,
)
from packet_builder import build_packet, encode_vars, raw_packet


@pytest.fixture(params=DECODERS)
def decoder(request):
    return request.param


@pytest.fixture
def start(uwsgigw_factory, decoder, tmp_path):
    """start(*extra_args) -> a plain_apps server using this test's decoder."""
    record = tmp_path / "records"
    record.mkdir()

    def _start(*extra: str, **kwargs):
        srv = uwsgigw_factory("--module", "plain_apps", "--decoder", decoder, *extra,
                              env={"PLAIN_APPS_RECORD_DIR": str(record)}, **kwargs)
        srv.record = record
        return srv
    return _start


def app_called(srv) -> bool:
    return any(p.name.startswith("called") for p in srv.record.iterdir())


def called_vars(**extra) -> dict:
    """Vars for a request to /called, which leaves a file behind if it runs."""
    return nginx_vars(uri="/called?id=x", **extra)


def assert_still_serves(srv):
    """After a bad packet the server (same worker) still serves a good one."""
    resp = parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/bytes")))
    assert resp.status == 200 and resp.body == b"a bare bytes body"


def assert_rejected(raw: bytes, status: int) -> None:
    resp = parse_response(raw)
    assert resp.status == status, raw[:300]
    # The app's answer would be JSON from /environ; a rejection is the server's.
    assert b"REQUEST_METHOD" not in resp.body


def test_decoder_named_in_startup_log(start, decoder):
    srv = start()
    assert "decoder: %s" % decoder in srv.log_text()


# -- CONTENT_LENGTH ---------------------------------------------------------------

BAD_LENGTHS = ["-1", "1e3", " 5", "5 ", "+5", "0x10", "1" * 19, "5,5", "\xb2",
               "\uff15".encode("utf-8").decode("latin-1"), "abc"]


@pytest.mark.parametrize("value", BAD_LENGTHS, ids=lambda v: repr(v))
def test_bad_content_length(start, value):
    srv = start()
    mark = srv.log_mark()
    raw = uwsgi_request(srv.socket, called_vars(CONTENT_LENGTH=value, REQUEST_METHOD="POST"),
                        body=b"hello", shutdown_write=True)
    assert_rejected(raw, 400)
    text = srv.wait_for_log("CONTENT_LENGTH", since=mark)
    assert "=> generated" not in text
    assert not app_called(srv)
    assert_still_serves(srv)


@pytest.mark.parametrize("value,body", [("007", b"leading"), ("0", b""),
                                        ("5", b"12345")])
def test_good_content_length(start, value, body):
    srv = start()
    raw = uwsgi_request(srv.socket, nginx_vars(method="POST", uri="/echo?mode=read",
                                               CONTENT_LENGTH=value), body=body)
    resp = parse_response(raw)
    assert resp.status == 200 and resp.body == body


# -- vars block size ----------------------------------------------------------------

def test_block_larger_than_buffer_size(start):
    srv = start("--buffer-size", "4096")
    pairs = list(nginx_vars(uri="/environ").items()) + [("HTTP_X_BIG", "x" * 5000)]
    packet = build_packet([(k.encode(), v.encode()) for k, v in pairs])
    datasize = struct.unpack_from("<H", packet, 1)[0]
    mark = srv.log_mark()
    raw = uwsgi_request(srv.socket, raw=packet, shutdown_write=True)
    assert_rejected(raw, 431)
    text = srv.wait_for_log("invalid request block size: %d (max 4096)" % datasize,
                            "buffer-size", since=mark)
    assert "=> generated" not in text
    assert_still_serves(srv)


def test_header_only_of_huge_block_is_refused_without_waiting(start):
    """A datasize over the limit is refused from the 4-byte header alone."""
    srv = start("--buffer-size", "4096", "--socket-timeout", "30")
    mark = srv.log_mark()
    with uwsgi_connect(srv.socket, timeout=10) as s:
        s.sendall(raw_packet(b"", datasize=60000))
        # No shutdown, no block: the answer must come from the header alone.
        data = recv_response(s)
    assert_rejected(data, 431)
    srv.wait_for_log("invalid request block size: 60000 (max 4096)", since=mark)


def test_block_exactly_buffer_size_is_served(start):
    srv = start("--buffer-size", "4096")
    base = encode_vars([(k.encode(), v.encode()) for k, v in nginx_vars(uri="/bytes").items()])
    pad = 4096 - len(base) - 4 - len("HTTP_X_PAD")
    packet = build_packet([(k.encode(), v.encode()) for k, v in nginx_vars(uri="/bytes").items()]
                          + [(b"HTTP_X_PAD", b"p" * pad)])
    assert struct.unpack_from("<H", packet, 1)[0] == 4096
    resp = parse_response(uwsgi_request(srv.socket, raw=packet))
    assert resp.status == 200


def test_buffer_size_65535_accepts_60k_of_headers(start):
    srv = start("--buffer-size", "65535")
    vars = nginx_vars(uri="/environ")
    vars.update({"HTTP_X_BLOB_%02d" % i: "b" * 3900 for i in range(15)})
    resp = parse_response(uwsgi_request(srv.socket, vars))
    assert resp.status == 200
    assert b"HTTP_X_BLOB_14" in resp.body


# -- HTTP spoken to the uwsgi socket ------------------------------------------------

@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    b"HEAD / HTTP/1.0\r\n\r\n",
], ids=["GET", "POST", "HEAD"])
def test_http_client_on_uwsgi_socket(start, request_line):
    srv = start()
    mark = srv.log_mark()
    raw = uwsgi_request(srv.socket, raw=request_line, shutdown_write=True)
    assert raw.startswith(b"HTTP/1.1 400 ")
    resp = parse_response(raw)
    assert b"uwsgi_pass" in resp.body
    srv.wait_for_log("HTTP client", "uwsgi_pass", since=mark)
    assert_still_serves(srv)


# -- malformed packets --------------------------------------------------------------

GOOD_BLOCK = encode_vars([(k.encode(), v.encode())
                          for k, v in nginx_vars(uri="/environ").items()])

MALFORMED = {
    "modifier1_5": (raw_packet(GOOD_BLOCK, modifier1=5), "modifier"),
    "modifier1_1": (raw_packet(GOOD_BLOCK, modifier1=1), "modifier"),
    "modifier1_255": (raw_packet(GOOD_BLOCK, modifier1=255), "modifier"),
    "modifier2_1": (raw_packet(GOOD_BLOCK, modifier2=1), "modifier"),
    "empty_key_first": (raw_packet(b"\0\0\3\0abc" + GOOD_BLOCK), "empty key"),
    "empty_key_last": (raw_packet(GOOD_BLOCK + b"\0\0\0\0"), "empty key"),
    "truncated_key": (raw_packet(GOOD_BLOCK + b"\x10\0ABC"), "truncated"),
    "truncated_value_len": (raw_packet(GOOD_BLOCK + b"\3\0KEY\1"), "truncated"),
    "truncated_value": (raw_packet(GOOD_BLOCK + b"\3\0KEY\x20\0short"), "truncated"),
    "trailing_byte": (raw_packet(GOOD_BLOCK + b"\5"), "trailing"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_packet(start, name):
    packet, words = MALFORMED[name]
    srv = start()
    mark = srv.log_mark()
    raw = uwsgi_request(srv.socket, raw=packet, shutdown_write=True)
    assert_rejected(raw, 400)
    text = srv.wait_for_log("bad request", since=mark)
    assert words in text.lower(), text
    assert "=> generated" not in text
    assert_still_serves(srv)


def test_too_many_vars(start):
    srv = start("--buffer-size", "65535")
    pairs = [(k.encode(), v.encode()) for k, v in nginx_vars(uri="/environ").items()]
    pairs += [(b"HTTP_X_%d" % i, b"%d" % i) for i in range(1001 - len(pairs))]
    assert len(pairs) == 1001
    mark = srv.log_mark()
    raw = uwsgi_request(srv.socket, raw=build_packet(pairs), shutdown_write=True)
    assert_rejected(raw, 400)
    text = srv.wait_for_log("bad request", since=mark)
    assert re.search(r"too[ -]many[ -]vars", text, re.I), text
    # 1000 is still fine.
    resp = parse_response(uwsgi_request(srv.socket, raw=build_packet(pairs[:1000])))
    assert resp.status == 200


# -- limit-post ---------------------------------------------------------------------

def test_limit_post_refuses_before_reading_body(start):
    srv = start("--limit-post", "1000")
    mark = srv.log_mark()
    # The body is never sent: the 413 must come from the vars alone.
    raw = uwsgi_request(srv.socket, nginx_vars(method="POST", uri="/echo",
                                               CONTENT_LENGTH="5000"), shutdown_write=True)
    assert_rejected(raw, 413)
    srv.wait_for_log("limit-post", since=mark)
    # At the limit is fine.
    body = b"x" * 1000
    resp = parse_response(uwsgi_request(srv.socket, nginx_vars("POST", "/echo", body),
                                        body=body))
    assert resp.status == 200 and resp.body == b"x" * 1000


def test_limit_post_through_nginx(start, nginx_factory):
    srv = start("--limit-post", "1000")
    nginx = nginx_factory(srv.socket)
    mark = srv.log_mark()
    r = http_request(nginx.port, "POST", "/echo", body=b"y" * 200_000)
    assert r.status == 413
    srv.wait_for_log("limit-post", since=mark)
    assert "upstream prematurely closed" not in nginx.error_log()
    assert http_request(nginx.port, "POST", "/echo", body=b"z" * 999).body == b"z" * 999


# -- UWSGI_* magic vars ---------------------------------------------------------------

def test_uwsgi_magic_vars_are_stripped_and_never_loaded(start, tmp_path):
    srv = start()
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(
        "open(%r, 'w').write('loaded')\n"
        "def application(e, s):\n"
        "    s('200 OK', [])\n"
        "    return [b'EVIL']\n" % str(marker))
    magic = {
        "UWSGI_FILE": str(evil), "UWSGI_SCRIPT": "evil", "UWSGI_MODULE": "evil",
        "UWSGI_CALLABLE": "application", "UWSGI_CHDIR": str(tmp_path),
        "UWSGI_PYHOME": str(tmp_path), "UWSGI_APPID": "evil", "UWSGI_SETENV": "X=1",
        "UWSGI_SCHEME": "https", "UWSGI_TOUCH_RELOAD": str(evil),
    }
    for _ in range(3):  # every worker, more than once
        resp = parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/environ", **magic)))
        assert resp.status == 200
        assert b"EVIL" not in resp.body
        env = json.loads(resp.body)
        assert not [k for k in env if k.upper().startswith("UWSGI_")], env
        assert env["wsgi.url_scheme"] == "http"  # UWSGI_SCHEME is not acted on
    assert not marker.exists()


# -- connections that end early or never start ---------------------------------------

def test_connect_and_close_without_data(start):
    srv = start()
    for _ in range(5):
        uwsgi_connect(srv.socket).close()
    assert_still_serves(srv)
    assert srv.alive()


@pytest.mark.parametrize("cut", [1, 3, 4, 20])
def test_eof_inside_packet(start, cut):
    srv = start()
    packet = build_packet([(k.encode(), v.encode())
                           for k, v in nginx_vars(uri="/environ").items()])
    raw = uwsgi_request(srv.socket, raw=packet[:cut], shutdown_write=True)
    # Nothing to answer to: no response, no crash.
    assert raw == b"" or parse_response(raw).status == 400
    assert_still_serves(srv)
    assert "Traceback" not in srv.log_text()


def test_eof_inside_body(start):
    srv = start()
    raw = uwsgi_request(srv.socket, nginx_vars(method="POST", uri="/echo?mode=read",
                                               CONTENT_LENGTH="1000"),
                        body=b"only part", shutdown_write=True)
    assert not raw.startswith(b"HTTP/1.1 200")  # a short body is never served as whole
    assert_still_serves(srv)
    assert srv.alive()


def test_silent_client_times_out(start):
    srv = start("--socket-timeout", "1")
    mark = srv.log_mark()
    with uwsgi_connect(srv.socket, timeout=15) as s:
        s.sendall(b"\0\x10")  # half a header, then nothing
        data = recv_all(s)  # the server gives up after socket-timeout and closes
    assert not data.startswith(b"HTTP/1.1 200")
    srv.wait_for_log("timeout", since=mark)
    assert_still_serves(srv)


def test_random_garbage(start):
    srv = start()
    rnd = os.urandom
    for n in (4, 50, 5000):
        uwsgi_request(srv.socket, raw=b"\xff\x00\x01\x07" + rnd(n), shutdown_write=True)
    assert_still_serves(srv)
    assert srv.alive()
