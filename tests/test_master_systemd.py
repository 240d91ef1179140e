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


def test_socket_activation_serves(launched, tmp_path):
    path = os.path.join(short_tmpdir(), "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    fd = listener.fileno()
    # systemd's contract: the sockets are fds 3.., LISTEN_PID is the service's pid.
    # (sh -c 'LISTEN_PID=$$ exec ...' cannot move fds above 9: do it in Python.)
    wrapper = ("import os, sys\n"
               "if %d != 3:\n"
               "    os.dup2(%d, 3)\n"
               "    os.close(%d)\n"
               "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
               "os.execv(sys.argv[1], sys.argv[1:])\n" % (fd, fd, fd))
    cmd = [sys.executable, "-c", wrapper,
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
