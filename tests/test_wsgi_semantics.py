"""PEP 3333 semantics of uwsgigw, raw on the socket and through real nginx.

Three shared servers run ``tests/apps/plain_apps.py``: "streaming" (2 worker
processes, wsgi.input reads the socket), "buffered" (1 process,
``--post-buffering 4096``: bodies of 4096+ bytes go to an unlinked temp file)
and "pure_python" (as streaming, with ``--decoder python``: the Python request
path instead of the C one, which must behave the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

import plain_apps
from conftest import (
    _build_packet,
    http_request,
    to_pairs,
    nginx_vars,
    parse_response,
    uwsgi_connect,
    uwsgi_request,
    wait_until,
)

SERVERS = {
    "streaming": ("--processes", "2", "--master"),
    "buffered": ("--processes", "1", "--post-buffering", "4096",
                 "--post-buffering-bufsize", "1024"),
    "pure_python": ("--processes", "2", "--master", "--decoder", "python"),
}


@pytest.fixture(scope="module")
def record_root(tmp_path_factory):
    return tmp_path_factory.mktemp("plain-records")


class Served:
    """A plain_apps server and the nginx in front of it."""

    def __init__(self, name, server, nginx, record):
        self.name, self.server, self.nginx, self.record = name, server, nginx, record

    @property
    def socket(self):
        return self.server.socket

    def raw(self, uri="/", method="GET", body=b"", **extra):
        return parse_response(uwsgi_request(self.socket, nginx_vars(method, uri, body, **extra),
                                            body=body))

    def http(self, method="GET", path="/", **kwargs):
        return http_request(self.nginx.port, method, path, **kwargs)


def _serve(name, factories, record_root):
    record = record_root / name
    record.mkdir(exist_ok=True)
    server = factories.uwsgigw("--module", "plain_apps", *SERVERS[name],
                               env={"PLAIN_APPS_RECORD_DIR": str(record)})
    nginx = factories.nginx(server.socket)
    return Served(name, server, nginx, record)


@pytest.fixture(scope="module")
def streaming(module_factories, record_root):
    return _serve("streaming", module_factories, record_root)


@pytest.fixture(scope="module")
def buffered(module_factories, record_root):
    return _serve("buffered", module_factories, record_root)


@pytest.fixture(scope="module")
def pure_python(module_factories, record_root):
    return _serve("pure_python", module_factories, record_root)


@pytest.fixture(params=list(SERVERS))
def served(request):
    return request.getfixturevalue(request.param)


def environ_of(resp) -> dict:
    assert resp.status == 200, resp
    return json.loads(resp.body)


# -- environ ---------------------------------------------------------------------

def test_environ_defaults(streaming):
    env = environ_of(streaming.raw("/environ"))
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    # nginx sends them empty when there is no body: PEP 3333 wants them absent.
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.run_once"] is False
    assert env["has_file_wrapper"] is True
    # Only wsgi.* keys may hold non-str values (PEP 3333: native strings).
    assert env["non_str"] == []


def test_multiprocess_flag(streaming, buffered):
    assert environ_of(streaming.raw("/environ"))["wsgi.multiprocess"] is True
    assert environ_of(buffered.raw("/environ"))["wsgi.multiprocess"] is False
    assert environ_of(buffered.raw("/environ"))["wsgi.multithread"] is False


@pytest.mark.parametrize("extra,scheme", [
    ({"HTTPS": "on"}, "https"),
    ({"REQUEST_SCHEME": "https"}, "https"),
    ({"HTTPS": "on", "REQUEST_SCHEME": "https"}, "https"),
    ({"HTTP_X_FORWARDED_PROTO": "https"}, "http"),
    ({"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_SSL": "on"}, "http"),
    ({}, "http"),
])
def test_url_scheme(streaming, extra, scheme):
    env = environ_of(streaming.raw("/environ", **extra))
    assert env["wsgi.url_scheme"] == scheme


def test_modifier1_30_strips_script_name(streaming):
    vars = nginx_vars(uri="/app/environ?x=1", SCRIPT_NAME="/app")
    env = environ_of(parse_response(uwsgi_request(streaming.socket, vars, modifier1=30)))
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/environ"
    # Without the modifier the prefix stays (and plain_apps has no such route).
    resp = parse_response(uwsgi_request(streaming.socket, vars, modifier1=0))
    assert resp.status == 404


def test_repeated_vars_are_merged(streaming):
    pairs = list(nginx_vars(uri="/environ").items()) + [
        ("HTTP_X_A", "1"), ("HTTP_X_A", "2"), ("HTTP_X_A", "3"),
        ("HTTP_COOKIE", "a=1"), ("HTTP_COOKIE", "b=2"),
    ]
    env = environ_of(parse_response(uwsgi_request(streaming.socket, pairs)))
    assert env["HTTP_X_A"] == "1, 2, 3"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_values_are_latin1_native_strings(streaming):
    high = bytes(range(0x80, 0x100))
    pairs = list(nginx_vars(uri="/environ").items()) + [(b"HTTP_X_HIGH", high),
                                                          (b"HTTP_X_UTF8", "é☃".encode())]
    env = environ_of(parse_response(uwsgi_request(streaming.socket, pairs)))
    assert env["HTTP_X_HIGH"] == high.decode("latin-1")
    assert env["HTTP_X_UTF8"].encode("latin-1").decode("utf-8") == "é☃"


def test_environ_through_nginx(streaming):
    r = streaming.http("GET", "/envir%6Fn?q=%C3%A9&x=1",
                       headers=[("X-A", "1"), ("X-A", "2"), ("Cookie", "a=1"),
                                ("Cookie", "b=2"), ("X-Forwarded-Proto", "https")])
    env = environ_of(r)
    assert env["PATH_INFO"] == "/environ"  # decoded by nginx
    assert env["REQUEST_URI"] == "/envir%6Fn?q=%C3%A9&x=1"  # raw
    assert env["QUERY_STRING"] == "q=%C3%A9&x=1"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_PORT"] == str(streaming.nginx.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SCRIPT_NAME"] == ""
    # nginx < 1.23 sends these as repeated vars; newer nginx merges them itself.
    assert env["HTTP_X_A"] == "1, 2"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["wsgi.url_scheme"] == "http"  # X-Forwarded-Proto is not trusted
    assert "HTTPS" not in env


def test_https_through_nginx_tls(module_factories, streaming, tls_cert):
    nginx = module_factories.nginx(streaming.socket, tls=tls_cert)
    env = environ_of(http_request(nginx.port, "GET", "/environ", https=True))
    assert env["HTTPS"] == "on"
    assert env["REQUEST_SCHEME"] == "https"
    assert env["wsgi.url_scheme"] == "https"


def test_wsgi_errors_reach_the_log(streaming):
    marker = "errors-marker-%d" % random.randrange(10**9)
    mark = streaming.server.log_mark()
    assert streaming.raw("/errors?marker=" + marker).status == 200
    streaming.server.wait_for_log(marker, "second line " + marker, since=mark)


# -- request body -----------------------------------------------------------------

def _lines_body(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b"x" * rnd.randrange(0, 300) + rnd.choice([b"\n", b"\r\n", b""])
    return bytes(out[:size])


BODIES = {
    "empty": b"",
    "lines": b"line1\nline2\n\nno-newline-at-end",
    "4095": _lines_body(4095, 1),   # just below post-buffering
    "4096": _lines_body(4096, 2),   # at post-buffering: temp file
    "300k": _lines_body(300_000, 3) + os.urandom(1000),
}
MODES = ["read", "readn", "readline", "readline_n", "readlines", "iter", "mixed"]


@pytest.mark.parametrize("body_name", list(BODIES))
@pytest.mark.parametrize("mode", MODES)
def test_input_reads_like_a_file(served, mode, body_name):
    body = BODIES[body_name]
    r = served.http("POST", "/echo?mode=%s&n=7" % mode, body=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert r.body == body
    assert r.header("X-Eof-Ok") == "1"


def test_input_read_sizes_raw(served):
    body = os.urandom(100_000)
    for n in (1, 1000, 65536, 10**6):
        r = served.raw("/echo?mode=readn&n=%d" % n, "POST", body)
        assert r.status == 200 and r.body == body


def test_post_buffering_uses_unlinked_temp_file(buffered):
    # 300 KB: more than arrives with the vars in the server's first read
    # (a body already in memory in full is served from memory).
    body = os.urandom(300_000)
    big = buffered.http("POST", "/echo?mode=read", body=body)
    assert big.status == 200 and big.body == body
    assert big.header("X-Input-Nlink") == "0"
    small = buffered.http("POST", "/echo?mode=read", body=b"s" * 4095)
    assert small.status == 200 and small.header("X-Input-Nlink") in ("-",)


def test_unread_5mb_body_is_drained(served):
    """An app that ignores a big body must still give nginx a clean answer."""
    before = served.nginx.error_log()
    for _ in range(2):
        r = served.http("POST", "/noread", body=os.urandom(5 * 1024 * 1024))
        assert r.status == 200 and r.body == b"ignored the body"
    new = served.nginx.error_log()[len(before):]
    assert "prematurely closed" not in new and "reset by peer" not in new, new
    assert "broken pipe" not in new.lower(), new


# -- response shapes ----------------------------------------------------------------

def test_head_sends_no_body_raw(served):
    r = served.raw("/head", "HEAD")
    assert r.status == 200
    assert r.header("Content-Length") == str(len(b"body that HEAD must not send"))
    assert r.body == b""
    r = served.raw("/big-stream", "HEAD")
    assert r.status == 200 and r.body == b""


def test_head_through_nginx(served):
    r = served.http("HEAD", "/head")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Length") == "28"


def test_bare_bytes_return(served):
    assert served.raw("/bytes").body == b"a bare bytes body"
    assert served.http("GET", "/bytes").body == b"a bare bytes body"


def test_write_callable(served):
    assert served.raw("/write").body == b"hello from write()"
    assert served.http("GET", "/write").body == b"hello from write()"


def test_exc_info_replaces_unsent_status(served):
    r = served.http("GET", "/exc-info")
    assert r.status == 503 and r.body == b"recovered with exc_info"


@pytest.mark.parametrize("fail", ["0", "1"])
def test_iterable_close_is_called(served, fail):
    ident = "%s-%s-%d" % (served.name, fail, random.randrange(10**9))
    r = served.http("GET", "/close?id=%s&fail=%s" % (ident, fail))
    if fail == "0":
        assert r.status == 200 and r.body == b"one two"
    wait_until(lambda: (served.record / ("close-" + ident)).exists(), 5,
               what="close() record")


def test_close_called_when_client_disconnects(buffered):
    ident = "disconnect-%d" % random.randrange(10**9)
    mark = buffered.server.log_mark()
    with uwsgi_connect(buffered.socket) as s:
        s.sendall(_build_packet(to_pairs(nginx_vars(uri="/close?id=%s&chunks=2000" % ident))))
        assert s.recv(1000)
    wait_until(lambda: (buffered.record / ("close-" + ident)).exists(), 10,
               what="close() after disconnect")
    # The single worker serves again, and the disconnect was no error.
    assert buffered.raw("/bytes").status == 200
    text = buffered.server.log_since(mark)
    assert "Traceback" not in text and " ERROR " not in text, text


@pytest.mark.parametrize("size", [0, 1, 65536, 3 * 1024 * 1024 + 7])
def test_file_wrapper_sends_exact_bytes(served, tmp_path, size):
    path = tmp_path / "blob.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    r = served.raw("/file?path=%s" % path)
    assert r.status == 200 and r.body == data
    r = served.http("GET", "/file?path=%s" % path)
    assert r.status == 200 and r.body == data
    assert int(r.header("Content-Length")) == size


def test_10mb_streamed_response_byte_exact(served):
    expected = plain_apps.big_data()
    r = served.http("GET", "/big-stream")
    assert r.status == 200 and r.error is None
    assert len(r.body) == len(expected)
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(expected).digest()
    raw = served.raw("/big-stream")
    assert raw.body == expected


# -- app errors ---------------------------------------------------------------------

def test_exception_before_start_response(served):
    mark = served.server.log_mark()
    r = served.http("GET", "/raise-before")
    assert r.status == 500
    served.server.wait_for_log("Traceback", "boom-before-start-response", since=mark)
    raw = served.raw("/raise-before")
    assert raw.status == 500 and b"boom" not in raw.body  # no details to the client


def test_exception_after_headers_closes_connection(served):
    mark = served.server.log_mark()
    before = served.nginx.error_log()
    r = served.http("GET", "/raise-after")
    # nginx got a cut-off body: it either fails the request (502) or passes
    # the truncation on; a complete 200 would be a lie.
    if r.status == 200:
        assert r.error is not None or len(r.body) < 100000
    else:
        assert r.status == 502
    served.server.wait_for_log("Traceback", "boom-after-headers", since=mark)
    new = served.nginx.error_log()[len(before):]
    assert "upstream" in new, new
    raw = uwsgi_request(served.socket, nginx_vars(uri="/raise-after"))
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"partial")


BAD_RESPONSE_LOG = {
    "/bad/crlf-name": "X-Evil", "/bad/crlf-value": "X-Evil", "/bad/lf-value": "X-Evil",
    "/bad/cr-value": "X-Evil", "/bad/nul-value": "X-Evil", "/bad/space-name": "X Evil",
    "/bad/colon-name": "X-Evil:", "/bad/empty-name": "header",
    "/bad/status-crlf": "status", "/bad/status-nul": "status",
    "/bad/status-code": "status", "/bad/status-letters": "status",
}


@pytest.mark.parametrize("path", list(plain_apps.BAD_HEADERS))
def test_unsendable_headers_give_500(served, path):
    mark = served.server.log_mark()
    raw = uwsgi_request(served.socket, nginx_vars(uri=path))
    resp = parse_response(raw)
    assert resp.status == 500
    lower = raw.lower()
    assert b"injected" not in lower and b"never reach" not in lower and b"x-evil" not in lower
    text = served.server.wait_for_log(BAD_RESPONSE_LOG[path], since=mark)
    assert path in text
    r = served.http("GET", path)
    assert r.status == 500 and r.header("X-Evil") is None and r.header("Injected") is None


# -- wsgiref.validate ----------------------------------------------------------------

def test_validator_get(served):
    mark = served.server.log_mark()
    r = served.http("GET", "/validated?x=1")
    assert r.status == 200 and r.body == b"validated:"
    text = served.server.log_since(mark)
    assert "WSGIWarning" not in text and "AssertionError" not in text, text


def test_validator_post(served):
    mark = served.server.log_mark()
    r = served.http("POST", "/validated", body=b"payload=1",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    text = served.server.log_since(mark)
    assert r.status == 200, text
    assert r.body == b"validated:payload=1"
    assert "WSGIWarning" not in text and "AssertionError" not in text, text
