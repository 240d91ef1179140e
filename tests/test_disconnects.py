"""Clients that go away mid-upload and mid-download (issue 6).

For each: the worker survives (same pid), logs exactly one INFO line about
it (no traceback, no ERROR), calls the response's close(), and serves the
next request. nginx in front turns an aborted upload into nothing at all
(it buffers the body before connecting upstream) and an aborted download
into a closed upstream connection.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from conftest import http_request, nginx_vars, parse_response, uwsgi_connect, uwsgi_request
from packet_builder import build_packet
from soak.procinfo import APP_FILE, children, wait_children

MB = 1 << 20


def packet_for(uri: str, method: str = "GET", body: bytes = b"", **extra) -> bytes:
    vars_ = nginx_vars(method=method, uri=uri, body=body, **extra)
    return build_packet([(k.encode(), v.encode()) for k, v in vars_.items()], body=body)


def abort(s: socket.socket, how: str) -> None:
    if how == "reset":  # RST instead of FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.fixture
def start(uwsgigw_factory):
    def _start(*extra):
        srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "1",
                              "--socket-timeout", "5", *extra)
        srv.workers = wait_children(srv.pid, 1)
        return srv
    return _start


def lines_about(text: str, needle: str) -> list[str]:
    return [l for l in text.splitlines() if needle in l]


def assert_one_info_line(srv, mark: int, needle: str, timeout: float = 10.0) -> str:
    text = srv.wait_for_log(needle, since=mark, timeout=timeout)
    time.sleep(0.2)  # anything else it would log comes right after
    text = srv.log_since(mark)
    about = [l for l in lines_about(text, needle) if "=> generated" not in l]
    assert len(about) == 1 and " INFO " in about[0], text
    for word in ("Traceback", " ERROR ", " WARNING ", "died"):
        assert word not in text, text
    return about[0]


def assert_worker_unharmed(srv) -> None:
    assert children(srv.pid) == srv.workers
    resp = parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/ok")))
    assert resp.status == 200 and resp.body == b"ok"


# -- mid-upload ----------------------------------------------------------------------

UPLOAD_MODES = {
    "stream": (),  # the app reads wsgi.input from the socket
    "post-buffering-memory": ("--post-buffering", str(64 * MB)),
    "post-buffering-file": ("--post-buffering", "4096"),
}


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("mode", list(UPLOAD_MODES))
def test_disconnect_mid_upload(start, mode, how):
    srv = start(*UPLOAD_MODES[mode])
    head = packet_for("/sink", "POST", CONTENT_LENGTH=str(16 * MB),
                      CONTENT_TYPE="application/octet-stream")
    mark = srv.log_mark()
    s = uwsgi_connect(srv.socket)
    s.sendall(head + b"u" * (2 * MB))
    time.sleep(0.2)  # the worker is reading the body now
    abort(s, how)
    line = assert_one_info_line(srv, mark, "POST /sink")
    assert "went away" in line or "not received" in line, line
    assert_worker_unharmed(srv)


# -- mid-download --------------------------------------------------------------------

DOWNLOADS = {
    "stream": "/stream?size=%d" % (256 * MB),  # iterable, no Content-Length
    "sized": "/sized?size=%d" % (256 * MB),
    "sendfile": "/file?size=%d" % (64 * MB),  # wsgi.file_wrapper -> sendfile()
}


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("kind", list(DOWNLOADS))
def test_disconnect_mid_download(start, kind, how):
    srv = start()
    uri = DOWNLOADS[kind]
    if kind == "sendfile":  # make the file before the measured request
        assert parse_response(uwsgi_request(srv.socket, nginx_vars(uri=uri))).status == 200
        srv.wait_for_log("GET /file")
    mark = srv.log_mark()
    s = uwsgi_connect(srv.socket)
    s.sendall(packet_for(uri))
    got = 0
    while got < 2 * MB:
        got += len(s.recv(65536))
    abort(s, how)
    path = uri.split("?")[0]
    line = assert_one_info_line(srv, mark, "GET " + path)
    assert "went away" in line, line
    assert_worker_unharmed(srv)


def test_close_is_called_when_the_client_leaves(start, tmp_path):
    srv = start()
    flag = tmp_path / "closed"
    mark = srv.log_mark()
    s = uwsgi_connect(srv.socket)
    s.sendall(packet_for("/close?flag=%s&size=%d" % (flag, 256 * MB)))
    s.recv(65536)
    abort(s, "reset")
    assert_one_info_line(srv, mark, "GET /close")
    deadline = time.monotonic() + 5
    while not flag.exists():
        assert time.monotonic() < deadline, "close() of the app's iterable was not called"
        time.sleep(0.02)
    assert_worker_unharmed(srv)


# -- through nginx ---------------------------------------------------------------------

def test_upload_aborted_before_nginx_has_it_never_reaches_a_worker(start, nginx_factory):
    srv = start()
    nginx = nginx_factory(srv.socket)
    mark = srv.log_mark()
    s = socket.create_connection(("127.0.0.1", nginx.port), timeout=10)
    s.sendall(b"POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
              % (50 * MB) + b"x" * MB)
    time.sleep(0.3)
    abort(s, "reset")
    time.sleep(0.5)
    assert srv.log_since(mark) == ""
    assert http_request(nginx.port, "GET", "/ok").status == 200
    assert_worker_unharmed(srv)


def test_download_aborted_through_nginx(start, nginx_factory):
    srv = start()
    nginx = nginx_factory(srv.socket)
    mark = srv.log_mark()
    s = socket.create_connection(("127.0.0.1", nginx.port), timeout=10)
    s.sendall(b"GET /stream?size=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % (2048 * MB))
    got = 0
    while got < 4 * MB:
        got += len(s.recv(65536))
    abort(s, "reset")
    # nginx notices on its next write to the client and closes upstream.
    line = assert_one_info_line(srv, mark, "GET /stream", timeout=30)
    assert "went away" in line, line
    assert http_request(nginx.port, "GET", "/ok").status == 200
    assert_worker_unharmed(srv)


def test_many_disconnects_leave_no_descriptors_behind(start):
    from soak.procinfo import fds
    srv = start("--post-buffering", "4096")
    (worker,) = srv.workers
    assert parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/ok"))).status == 200
    before = len(fds(worker))
    for i in range(30):
        s = uwsgi_connect(srv.socket)
        if i % 2:
            s.sendall(packet_for("/sink", "POST", CONTENT_LENGTH=str(MB)) + b"z" * 1000)
        else:
            s.sendall(packet_for("/stream?size=%d" % (64 * MB)))
            s.recv(65536)
        abort(s, "reset" if i % 3 else "close")
    time.sleep(0.5)
    assert_worker_unharmed(srv)
    # One spooled body may stay open until the next request (see
    # test_security_defaults: post-buffering file closed after the request).
    assert len(fds(worker)) <= before + 1, fds(worker)
    assert os.path.exists("/proc/%d" % worker)
