"""Socket binding: addresses in uWSGI's spelling, modes, stale sockets."""

import os
import socket
import stat

import pytest

from uwsgigw.devnginx import free_port
from uwsgigw.process.sockets import SocketError, bind_all, close_all, parse_address


@pytest.mark.parametrize("spec,expected", [
    ("/run/x.sock", (socket.AF_UNIX, "/run/x.sock")),
    ("@abstract", (socket.AF_UNIX, "\0abstract")),
    (":8000", (socket.AF_INET, ("0.0.0.0", 8000))),
    ("127.0.0.1:9000", (socket.AF_INET, ("127.0.0.1", 9000))),
    ("[::1]:9000", (socket.AF_INET6, ("::1", 9000))),
])
def test_parse_address(spec, expected):
    assert parse_address(spec) == expected


@pytest.mark.parametrize("spec", ["127.0.0.1:0", "127.0.0.1:70000", "host:abc", ""])
def test_parse_address_errors(spec):
    with pytest.raises(SocketError):
        parse_address(spec)


def test_unix_socket_default_mode_and_vacuum(tmp_path):
    path = str(tmp_path / "s.sock")
    listeners = bind_all([path], 16, None, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    close_all(listeners, vacuum=True)
    assert not os.path.exists(path)


def test_chmod_socket(tmp_path):
    path = str(tmp_path / "s.sock")
    listeners = bind_all([path], 16, "664", None)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o664
    finally:
        close_all(listeners, vacuum=True)


def test_stale_socket_replaced_live_socket_refused(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening
    listeners = bind_all([path], 16, None, None)
    try:
        with pytest.raises(SocketError, match="in use"):
            bind_all([path], 16, None, None)
    finally:
        close_all(listeners, vacuum=True)


def test_regular_file_is_not_replaced(tmp_path):
    path = tmp_path / "s.sock"
    path.write_text("data")
    with pytest.raises(SocketError, match="not a socket"):
        bind_all([str(path)], 16, None, None)
    assert path.read_text() == "data"


def test_missing_directory_error_names_it(tmp_path):
    with pytest.raises(SocketError, match="directory exist"):
        bind_all([str(tmp_path / "nodir" / "s.sock")], 16, None, None)


def test_tcp_ipv4_and_ipv6(tmp_path):
    listeners = bind_all(["127.0.0.1:0".replace(":0", ":%d" % free_port()),
                          "[::1]:%d" % free_port("::1")], 16, None, None)
    try:
        assert [l.sock.family for l in listeners] == [socket.AF_INET, socket.AF_INET6]
    finally:
        close_all(listeners, vacuum=True)


def test_no_socket_is_an_error():
    with pytest.raises(SocketError, match="socket="):
        bind_all([], 16, None, None)


