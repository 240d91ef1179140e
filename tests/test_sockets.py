"""Socket binding: addresses in uWSGI's spelling, modes, stale sockets."""

import os
import socket
import stat

import pytest

from uwsgigw.devnginx import free_port
from uwsgigw.process.sockets import SocketError, bind_all, bound_to, close_all, parse_address


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




def test_http_sockets_are_bound_after_the_uwsgi_ones_and_know_their_protocol(tmp_path):
    port = free_port()
    listeners = bind_all([str(tmp_path / "u.sock")], 16, "664", None,
                         [str(tmp_path / "h.sock"), "127.0.0.1:%d" % port])
    try:
        assert [l.protocol for l in listeners] == ["uwsgi", "http", "http"]
        assert [l.describe() for l in listeners] == [
            str(tmp_path / "u.sock"), "%s (http)" % (tmp_path / "h.sock"),
            "127.0.0.1:%d (http)" % port]
        # chmod-socket and vacuum apply to unix HTTP sockets as to uwsgi ones
        assert stat.S_IMODE(os.stat(tmp_path / "h.sock").st_mode) == 0o664
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        close_all(listeners, vacuum=True)
    assert not os.path.exists(tmp_path / "h.sock")
    only_http = bind_all([], 16, None, None, ["127.0.0.1:%d" % free_port()])
    close_all(only_http, vacuum=True)
    assert [l.protocol for l in only_http] == ["http"]
    with pytest.raises(SocketError, match="http-socket="):
        bind_all([], 16, None, None, [])


def test_a_failed_http_bind_closes_and_vacuums_what_was_bound(tmp_path):
    with pytest.raises(SocketError, match="directory exist"):
        bind_all([str(tmp_path / "u.sock")], 16, None, None,
                 [str(tmp_path / "nodir" / "h.sock")])
    assert not os.path.exists(tmp_path / "u.sock")


def test_the_network_warning_of_an_http_socket_names_forwarded_allow_ips(capfd):
    listeners = bind_all([], 16, None, None, ["0.0.0.0:%d" % free_port()])
    close_all(listeners, vacuum=True)
    err = capfd.readouterr().err
    assert "HTTP socket 0.0.0.0:" in err and "fine for clients that connect directly" in err
    assert "trusted only from the peers in forwarded-allow-ips" in err
    assert "forge REMOTE_ADDR" not in err


def test_bound_to_compares_family_and_address(tmp_path):
    port = free_port()
    listeners = bind_all([str(tmp_path / "u.sock"), "127.0.0.1:%d" % port,
                          "[::1]:%d" % free_port("::1")], 16, None, None)
    try:
        unix, tcp, tcp6 = (l.sock for l in listeners)
        assert bound_to(unix, str(tmp_path / "u.sock"))
        assert bound_to(unix, str(tmp_path / "x" / ".." / "u.sock"))
        assert not bound_to(unix, str(tmp_path / "other.sock"))
        assert not bound_to(unix, "127.0.0.1:%d" % port)
        assert bound_to(tcp, "127.0.0.1:%d" % port)
        assert not bound_to(tcp, "127.0.0.1:%d" % (port + 1))
        assert not bound_to(tcp, ":%d" % port)  # 0.0.0.0 is another address
        assert not bound_to(tcp, "[::1]:%d" % port)
        assert bound_to(tcp6, "[::1]:%d" % tcp6.getsockname()[1])
        assert bound_to(tcp6, "[0:0::1]:%d" % tcp6.getsockname()[1])
        assert not bound_to(tcp, "not a socket:x")
    finally:
        close_all(listeners, vacuum=True)
    abstract = bind_all(["@ugw-test-%d" % os.getpid()], 16, None, None)
    try:
        assert bound_to(abstract[0].sock, "@ugw-test-%d" % os.getpid())
        assert not bound_to(abstract[0].sock, "@ugw-other")
    finally:
        close_all(abstract, vacuum=True)
