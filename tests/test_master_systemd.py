"""systemd: sd_notify on a real datagram socket, the watchdog, socket
activation (LISTEN_PID/LISTEN_FDS from fd 3), plus the scoreboard layout."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest
from conftest import short_tmpdir
from test_master_support import (APP, Launched, exit_status, launch_env, poll, raw_get,
                                 uwsgigw_cmd)

from uwsgigw.observe import scoreboard
from uwsgigw.process import systemd


class NotifySocket:
    """What systemd listens on: a unix datagram socket (path or abstract)."""

    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "uwsgigw-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(short_tmpdir(), "notify")
            self.sock.bind(self.address)
        self.messages: list[str] = []

    def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if needle in message.split("\n"):
                self.messages.remove(message)
                return message
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(65536).decode()
            except socket.timeout:
                break
            if needle in message.split("\n"):
                return message
            self.messages.append(message)
        raise AssertionError("no %r notification; got %r" % (needle, self.messages))

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    yield ns
    ns.close()


def test_notify_ready_reloading_stopping(uwsgigw_factory, notify_socket):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             env={"NOTIFY_SOCKET": notify_socket.address})
    ready = notify_socket.wait_for("READY=1")
    assert "STATUS=2 workers on %s" % server.socket in ready
    assert "MAINPID=%d" % server.pid in ready
    os.kill(server.pid, signal.SIGHUP)
    assert "RELOADING=1" in notify_socket.wait_for("RELOADING=1")
    notify_socket.wait_for("READY=1")
    server.wait_for_log("reloaded in")
    os.kill(server.pid, signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1")
    assert exit_status(server) == 0


def test_notify_abstract_socket_and_watchdog(uwsgigw_factory):
    ns = NotifySocket(abstract=True)
    try:
        uwsgigw_factory("--module", APP, "--master",
                        env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "200000"})
        ns.wait_for("READY=1")
        ns.wait_for("WATCHDOG=1", timeout=2)
        ns.wait_for("WATCHDOG=1", timeout=2)  # keeps pinging
    finally:
        ns.close()


def test_workers_do_not_see_notify_socket(uwsgigw_factory, notify_socket):
    server = uwsgigw_factory("--module", APP, "--master",
                             env={"NOTIFY_SOCKET": notify_socket.address})
    notify_socket.wait_for("READY=1")
    # Only the master talks to systemd (NotifyAccess=main); the app must not
    # mistake the variable for its own.
    assert raw_get(server.socket, "/env?NOTIFY_SOCKET").body == b"-"


def test_systemd_units_are_shipped():
    import configparser
    from conftest import NGINX_DIR

    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.optionxform = str
    service.read(NGINX_DIR / "uwsgigw@.service")
    svc = service["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecStart"].endswith("uwsgigw --ini /etc/uwsgigw/%i.ini")
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["KillSignal"] == "SIGTERM"
    socket_unit = configparser.ConfigParser(strict=False, interpolation=None)
    socket_unit.optionxform = str
    socket_unit.read(NGINX_DIR / "uwsgigw@.socket")
    assert socket_unit["Socket"]["ListenStream"] == "/run/uwsgigw/%i.sock"
    assert socket_unit["Socket"]["SocketMode"] == "0660"


@pytest.fixture
def launched():
    procs: list[Launched] = []
    yield procs
    for p in procs:
        p.stop()


def activating(fds: list[int], names: str = "") -> str:
    """Python that moves ``fds`` to 3, 4, ... and sets LISTEN_* as systemd does,
    then execs its arguments (sh -c cannot move fds above 9)."""
    return ("import fcntl, os, sys\n"
            "fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in %r]\n"  # above 3.. first
            "for fd in %r:\n"
            "    os.close(fd)\n"
            "for i, fd in enumerate(fds):\n"
            "    os.dup2(fd, 3 + i)\n"
            "    os.close(fd)\n"
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))\n"
            "if %r:\n"
            "    os.environ['LISTEN_FDNAMES'] = %r\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n" % (fds, fds, names, names))


def test_socket_activation_serves(launched, tmp_path):
    path = os.path.join(short_tmpdir(), "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    fd = listener.fileno()
    # systemd's contract: the sockets are fds 3.., LISTEN_PID is the service's pid.
    cmd = [sys.executable, "-c", activating([fd]),
           *uwsgigw_cmd("--module", APP, "--master", "--processes", "2")]
    server = Launched(cmd, str(tmp_path / "log"), launch_env(), pass_fds=(fd,))
    launched.append(server)
    listener.close()  # only the server holds it now
    try:
        poll(lambda: "ready to accept requests" in server.log_text(), 15, "ready")
    finally:
        log = server.log_text()
        print(log)
    assert "socket activation: using 1 socket from systemd (%s)" % path in log
    assert raw_get(path, "/").status == 200
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert os.path.exists(path)  # systemd's socket: never vacuumed by us


def test_socket_activation_names_the_http_sockets(launched, tmp_path):
    # fd 3: a uwsgi socket; fd 4: bound to the config's http-socket path; fd 5: named
    # "http" by systemd (FileDescriptorName=http), at an address the config does not have
    d = short_tmpdir()
    uwsgi_path, http_path = os.path.join(d, "u.sock"), os.path.join(d, "h.sock")
    socks = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX), socket.socket()]
    for sock, address in zip(socks, [uwsgi_path, http_path, ("127.0.0.1", 0)]):
        sock.bind(address)
        sock.listen(64)
    port = socks[2].getsockname()[1]
    fds = [s.fileno() for s in socks]
    cmd = [sys.executable, "-c", activating(fds, "web:api:http"),
           *uwsgigw_cmd("--module", APP, "--master", "--http-socket", http_path)]
    server = Launched(cmd, str(tmp_path / "log"), launch_env(), pass_fds=fds)
    launched.append(server)
    for sock in socks:
        sock.close()
    try:
        poll(lambda: "ready to accept requests" in server.log_text(), 15, "ready")
    finally:
        log = server.log_text()
        print(log)
    assert ("socket activation: using 3 sockets from systemd (%s, %s (http), 127.0.0.1:%d "
            "(http)); socket= and http-socket= entries are not bound"
            % (uwsgi_path, http_path, port)) in log
    assert "ready to accept requests: 1 worker on %s, %s (http), 127.0.0.1:%d (http)" % (
        uwsgi_path, http_path, port) in log
    assert raw_get(uwsgi_path, "/").status == 200  # the uwsgi one still speaks uwsgi


def test_protocol_of_an_activated_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    path = os.path.join(short_tmpdir(), "a.sock")
    sock.bind(path)
    try:
        assert systemd.protocol_of(sock, "fd3", []) == "uwsgi"
        assert systemd.protocol_of(sock, "http", []) == "http"  # FileDescriptorName=http
        assert systemd.protocol_of(sock, "fd3", [path]) == "http"  # its http-socket address
        assert systemd.protocol_of(sock, "fd3", ["127.0.0.1:8000", path + "x"]) == "uwsgi"
    finally:
        sock.close()


def test_listen_fds_ignores_other_pids_and_unsets():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd.listen_fds(env) == []
    assert "LISTEN_PID" not in env and "LISTEN_FDS" not in env


def test_notifier_is_silent_without_systemd():
    n = systemd.Notifier({})
    assert not n.enabled and not n.notify("READY=1")
    assert n.watchdog_interval == 0


def test_scoreboard_slots_are_shared_across_fork():
    board = scoreboard.Scoreboard(4, 2)
    index = board.allocate()
    board.reset(index, 1, 1)
    cores = board.cores_of(index)
    pid = os.fork()
    if pid == 0:
        cores[1].requests = 7
        cores[1].tx = 100
        cores[1].busy_since = 12.5
        board.workers[index].state = scoreboard.ACCEPTING
        os._exit(0)
    os.waitpid(pid, 0)
    totals = scoreboard.totals(cores)
    assert totals["requests"] == 7 and totals["tx"] == 100 and totals["busy"]
    assert board.workers[index].state == scoreboard.ACCEPTING
    assert board.allocate() != index
    board.release(index)
    assert board.allocate() == index
    board.close()
