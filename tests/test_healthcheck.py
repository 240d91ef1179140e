"""``uwsgigw healthcheck``: one uwsgi request from the command line, the exit
status systemd, Docker and Kubernetes act on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import pytest
from click.testing import CliRunner
from conftest import server_env, short_tmpdir, uwsgigw_cmd

from uwsgigw import healthcheck
from uwsgigw.cli import main
from uwsgigw.devnginx import free_port

PLAIN = "plain_apps:application"


def run(*args: str, input=None):
    """In-process, through the real ``uwsgigw`` click command."""
    return CliRunner().invoke(main, ["healthcheck", *args], input=input,
                              catch_exceptions=False)


@pytest.fixture(scope="module")
def plain(module_uwsgigw_factory):
    return module_uwsgigw_factory("--module", PLAIN)


def test_healthy_answer_is_printed_and_exits_0(plain):
    result = run(plain.socket, "/echo", "-X", "POST", "-d", "ping")
    assert result.exit_code == 0, result.output
    head, _, body = result.stdout_bytes.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4" in head
    assert body == b"ping\n" or body == b"ping"


def test_request_vars_headers_and_body(plain):
    result = run(plain.socket, "/environ?a=1&b=%20", "-H", "X-Probe: yes",
                 "-H", "Content-Type: application/json", "-H", "Host: example.org:8080",
                 "-d", '{"k": 1}', "-X", "put")
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])
    assert env["REQUEST_METHOD"] == "PUT" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20" and env["REQUEST_URI"] == "/environ?a=1&b=%20"
    assert env["HTTP_X_PROBE"] == "yes" and env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "8" and env["HTTP_HOST"] == "example.org:8080"
    assert env["SERVER_NAME"] == "example.org"
    assert env["HTTP_USER_AGENT"].startswith("uwsgigw-healthcheck/")


@pytest.mark.parametrize("path, status", [("/nope", 404), ("/raise-before", 500)])
def test_unhealthy_status_exits_1(plain, path, status):
    result = run(plain.socket, path)
    assert result.exit_code == 1
    assert result.stdout_bytes.startswith(b"HTTP/1.1 %d " % status)
    assert "answered %d" % status in result.stderr


def test_quiet_prints_nothing(plain):
    result = run("-q", plain.socket, "/echo")
    assert result.exit_code == 0 and result.stdout_bytes == b""
    assert run(plain.socket, "/nope", "--quiet").stdout_bytes == b""


def test_no_server_exits_1_with_the_reason():
    missing = os.path.join(short_tmpdir(), "none.sock")
    result = run(missing)
    assert result.exit_code == 1 and "No such file or directory" in result.stderr
    result = run("127.0.0.1:%d" % free_port())
    assert result.exit_code == 1 and "refused" in result.stderr.lower()


class CannedServer:
    """A TCP socket answering each connection with fixed bytes (or nothing)."""

    def __init__(self, answer: bytes | None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.recv(65536)
            if self.answer is not None:
                conn.sendall(self.answer)
                conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(5)


@pytest.fixture
def canned():
    servers = []

    def make(answer):
        servers.append(CannedServer(answer))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def test_redirect_is_healthy_and_garbage_is_not(canned):
    redirect = canned(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n")
    assert run(":%d" % redirect.port).exit_code == 0  # ":PORT" asks 127.0.0.1
    garbage = canned(b"hello\r\n\r\n")
    result = run("127.0.0.1:%d" % garbage.port)
    assert result.exit_code == 1 and "not an HTTP status line" in result.stderr
    empty = canned(b"")
    result = run("127.0.0.1:%d" % empty.port)
    assert result.exit_code == 1 and "closed the connection" in result.stderr


def test_timeout(canned):
    silent = canned(None)
    result = run("127.0.0.1:%d" % silent.port, "--timeout", "0.3")
    assert result.exit_code == 1 and "within 0.3s" in result.stderr


def test_bad_header_is_a_usage_error(plain):
    result = run(plain.socket, "-H", "no colon")
    assert result.exit_code == 2 and "Name: value" in result.output


def test_packet_is_what_nginx_would_send():
    pairs = healthcheck.request_vars("GET", "/a%20b?x=1", [], 0)
    keys = [k for k, _ in pairs]
    assert keys[:6] == [b"QUERY_STRING", b"REQUEST_METHOD", b"CONTENT_TYPE",
                        b"CONTENT_LENGTH", b"REQUEST_URI", b"PATH_INFO"]
    assert dict(pairs)[b"PATH_INFO"] == b"/a b"
    data = healthcheck.packet(pairs, b"")
    assert data[0] == 0 and data[3] == 0 and int.from_bytes(data[1:3], "little") == \
        len(data) - 4


def test_as_a_real_command_over_tcp(module_uwsgigw_factory):
    server = module_uwsgigw_factory("--module", PLAIN, tcp=True)
    port = server.socket.rsplit(":", 1)[1]
    env = server_env()
    done = subprocess.run(uwsgigw_cmd("healthcheck", ":" + port, "/echo", "-d", "x"),
                          capture_output=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"HTTP/1.1 200 OK")
    done = subprocess.run(uwsgigw_cmd("healthcheck", ":" + port, "/nope", "-q"),
                          capture_output=True, env=env, timeout=30)
    assert done.returncode == 1 and done.stdout == b""


# -- HTTP sockets ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def http_servers(module_uwsgigw_factory):
    """One server with an HTTP socket on TCP and one on a unix path (and a
    uwsgi socket beside the unix one)."""
    tcp = module_uwsgigw_factory("--module", PLAIN, http=True)
    unix_path = os.path.join(short_tmpdir(), "h.sock")
    unix = module_uwsgigw_factory("--module", PLAIN, "--socket",
                                  os.path.join(short_tmpdir(), "u.sock"), http=True,
                                  socket=unix_path)
    return tcp, unix


def test_http_socket_over_tcp_and_unix(http_servers):
    for server in http_servers:
        result = run("--http", server.socket, "/environ?a=1", "-H", "X-Probe: yes")
        assert result.exit_code == 0, result.output
        head, _, body = result.stdout_bytes.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        env = json.loads(body)
        assert env["REQUEST_METHOD"] == "GET" and env["QUERY_STRING"] == "a=1"
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["HTTP_X_PROBE"] == "yes"
        assert env["HTTP_USER_AGENT"].startswith("uwsgigw-healthcheck/")
        assert env["HTTP_CONNECTION"] == "close"
        result = run("--protocol", "http", server.socket, "/echo", "-X", "POST", "-d", "ping")
        assert result.exit_code == 0 and result.stdout_bytes.rstrip().endswith(b"ping")


def test_http_status_decides_the_exit_code(http_servers):
    tcp = http_servers[0]
    result = run("--http", tcp.socket, "/nope")
    assert result.exit_code == 1 and "answered 404" in result.stderr
    result = run("-q", "--http", tcp.socket, "/raise-before")
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert "answered 500" in result.stderr


def test_http_url_address(http_servers):
    port = http_servers[0].socket.rsplit(":", 1)[1]
    result = run("http://127.0.0.1:%s/environ?x=2" % port)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])["QUERY_STRING"] == "x=2"
    result = run("http://localhost:%s/environ" % port)
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])
    assert env["HTTP_HOST"] == "localhost:%s" % port  # the URL's, as curl sends it
    result = run("--protocol", "uwsgi", "http://127.0.0.1:%s/" % port)
    assert result.exit_code == 2 and "not --protocol uwsgi" in result.output


def test_addresses_and_protocols_resolved():
    assert healthcheck.resolve("http://[::1]:81", None, None, None, {}) == (
        "[::1]:81", "/", "http", "[::1]:81", False)
    assert healthcheck.resolve("http://h.example/x?y", None, None, None, {}) == (
        "h.example:80", "/x?y", "http", "h.example", False)
    assert healthcheck.resolve(":8000", None, None, None, {}) == (
        ":8000", "/", "uwsgi", "localhost", False)
    assert healthcheck.resolve(":8000", "/h", "http", None, {})[1:3] == ("/h", "http")
    assert run("http://h:99999/").exit_code == 2  # a usage error, not a traceback
    assert run().exit_code == 2 and "missing ADDRESS" in run().output
    from uwsgigw.protocol.proxy import parse
    header = parse(healthcheck.PROXY_V2_LOCAL)
    assert (header.command, header.client, header.size) == ("LOCAL", None, 16)


def test_the_wrong_protocol_says_so(http_servers):
    tcp, unix = http_servers
    result = run(tcp.socket, "/echo")  # a uwsgi packet to an HTTP socket
    assert result.exit_code == 1 and "answered 400" in result.stderr
    assert "if ADDRESS is an http-socket, add --http" in result.stderr
    uwsgi_socket = unix.args[unix.args.index("--socket") + 1]
    result = run("--http", uwsgi_socket, "/echo")  # HTTP to a uwsgi socket
    assert result.exit_code == 1 and "is a uwsgi socket" in result.stderr


def test_ini_picks_the_http_socket_or_the_uwsgi_one(http_servers, tmp_path, monkeypatch):
    _, unix = http_servers
    uwsgi_socket = unix.args[unix.args.index("--socket") + 1]
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nmodule = %s\nsocket = %s\nhttp-socket = %s\n"
                   % (PLAIN, uwsgi_socket, unix.socket))
    result = run("--ini", str(ini), "/environ")
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])
    assert env["HTTP_CONNECTION"] == "close"  # HTTP: nginx's uwsgi vars have no Connection
    result = run("--ini", str(ini), "--protocol", "uwsgi", "/environ")
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])
    assert "HTTP_CONNECTION" not in env and env["DOCUMENT_ROOT"] == ""  # uwsgi_params
    result = run("--ini", str(ini), "/a", "/b")
    assert result.exit_code == 2 and "give only PATH" in result.output
    only_uwsgi = tmp_path / "u.ini"
    only_uwsgi.write_text("[uwsgi]\nmodule = %s\nsocket = %s\n" % (PLAIN, uwsgi_socket))
    result = run("--ini", str(only_uwsgi), "--http", "/")
    assert result.exit_code == 1 and "binds no http-socket to probe" in result.stderr
    # the environment counts, as for the server (Docker sets UWSGIGW_HTTP_SOCKET)
    monkeypatch.setenv("UWSGIGW_HTTP_SOCKET", unix.socket)
    result = run("--ini", str(only_uwsgi), "-q", "/environ")
    assert result.exit_code == 0, result.output


def test_http_healthcheck_as_a_real_command(http_servers):
    port = http_servers[0].socket.rsplit(":", 1)[1]
    env = server_env()
    done = subprocess.run(uwsgigw_cmd("healthcheck", "--http", ":" + port, "/echo", "-d", "x"),
                          capture_output=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"HTTP/1.1 200 OK")
    done = subprocess.run(uwsgigw_cmd("healthcheck", "http://127.0.0.1:%s/nope" % port, "-q"),
                          capture_output=True, env=env, timeout=30)
    assert done.returncode == 1 and done.stdout == b"" and b"answered 404" in done.stderr


def test_http_socket_with_the_proxy_protocol(module_uwsgigw_factory, tmp_path):
    """The spec's LOCAL command is the balancer's own health check: the
    server answers it; with --ini the header is sent when the file enables it."""
    server = module_uwsgigw_factory("--module", PLAIN, "--http-enable-proxy-protocol",
                                    http=True)
    result = run("--http", server.socket, "/echo")  # no header: the server closes
    assert result.exit_code == 1 and "closed the connection" in result.stderr
    result = run("--http", "--proxy-protocol", server.socket, "/environ")
    assert result.exit_code == 0, result.output
    env = json.loads(result.stdout_bytes.partition(b"\r\n\r\n")[2])
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    ini = tmp_path / "pp.ini"
    ini.write_text("[uwsgi]\nmodule = %s\nhttp-socket = %s\nhttp-enable-proxy-protocol = true\n"
                   % (PLAIN, server.socket))
    assert run("--ini", str(ini), "-q", "/environ").exit_code == 0
    result = run("--proxy-protocol", server.socket)
    assert result.exit_code == 2 and "for HTTP sockets" in result.output
