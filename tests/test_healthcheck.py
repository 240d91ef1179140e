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
