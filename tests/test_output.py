"""Output and start-up, with real processes (issue 12, section 5).

The app's ``print()``, ``logging``, ``sys.stderr`` and ``wsgi.errors`` reach
``logto`` line by line, promptly, and survive recycling, reload and stop --
without PYTHONUNBUFFERED (``server_env`` sets it; these tests empty it, which
Python reads as unset, and the app reports whether it is set).
A server started with descriptors 0, 1 and 2 closed still starts, logs and serves.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import (READY_LINE, nginx_vars, parse_response, server_env, short_tmpdir,
                      stop_pid, uwsgi_request, uwsgigw_cmd, wait_until)
from uwsgigw.devnginx import can_connect, stop_process_group

APP = "output_apps:application"
BUFFERED = {"PYTHONUNBUFFERED": ""}  # empty is unset for Python: stdout block-buffered
KINDS = ("out-print", "out-logging", "out-stderr", "out-errors")


def read(path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_ready(logto, sock: str, proc=None, timeout: float = 30.0) -> None:
    def ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError("uwsgigw exited (%s) at start-up; log:\n%s"
                                 % (proc.returncode, read(logto)))
        return READY_LINE in read(logto) and can_connect(*_unix(sock), timeout=0.5)
    wait_until(ready, timeout, what="ready line in %s" % logto)


def _unix(sock: str):
    import socket
    return socket.AF_UNIX, sock


def wait_for_lines(logto, tag: str, kinds=KINDS, timeout: float = 5.0) -> None:
    """Every kind of line for ``tag`` is in the log within ``timeout`` (prompt)."""
    wanted = ["%s %s\n" % (kind, tag) for kind in kinds]
    try:
        wait_until(lambda: all(w in read(logto) for w in wanted), timeout,
                   what="lines %s" % wanted)
    except TimeoutError:
        text = read(logto)
        missing = [w.strip() for w in wanted if w not in text]
        raise AssertionError("missing from the log: %s\nlog:\n%s" % (missing, text)) from None


def request(sock: str, tag: str, path: str = "/") -> None:
    resp = parse_response(uwsgi_request(sock, nginx_vars(uri="%s?%s" % (path, tag))))
    assert resp.status == 200
    assert resp.body == b"unbuffered=0"  # the fault's condition: no PYTHONUNBUFFERED


def start(factories, tmp_path, *args: str, app: str = APP):
    logto = tmp_path / "app.log"
    server = factories.uwsgigw("--module", app, "--logto", str(logto), *args,
                               env=BUFFERED, wait=False)
    wait_ready(logto, server.socket, server.proc)
    return server, logto


def stopped(server, timeout: float = 15.0) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("uwsgigw did not stop") from None


@pytest.mark.parametrize("stop", ["TERM", "INT"])
def test_app_output_reaches_logto_through_recycle_reload_and_stop(factories, tmp_path, stop):
    server, logto = start(factories, tmp_path, "--master", "--max-requests", "2")
    # Printed at import in the master (the app is preloaded): line-buffered there too.
    wait_until(lambda: "out-import %d\n" % server.pid in read(logto), 5, what="import line")
    for n in range(1, 5):  # max-requests 2: the worker recycles twice on the way
        request(server.socket, "r%d" % n)
        wait_for_lines(logto, "r%d" % n)
    wait_until(lambda: read(logto).count("recycling: max-requests 2 reached") >= 2, 10,
               what="two recycles")
    imports = read(logto).count("out-import %d\n" % server.pid)
    mark = len(read(logto))
    os.kill(server.pid, signal.SIGHUP)  # re-executes the master: a fresh import
    # "reloaded in", or "ready" when the recycling old worker was gone by then
    wait_until(lambda: any(w in read(logto)[mark:] for w in ("reloaded in", READY_LINE)),
               20, what="reload")
    assert read(logto).count("out-import %d\n" % server.pid) == imports + 1
    request(server.socket, "r5")
    wait_for_lines(logto, "r5")
    if stop == "TERM":
        # No newline: only a flush before the worker's os._exit() writes it.
        request(server.socket, "r6", path="/partial")
        wait_for_lines(logto, "r6")
    os.kill(server.pid, getattr(signal, "SIG" + stop))
    assert stopped(server) == 0 or stop == "INT"
    text = read(logto)
    for n in range(1, 6):
        for kind in KINDS:
            assert text.count("%s r%d\n" % (kind, n)) == 1, (kind, n, text)
    if stop == "TERM":
        assert "out-partial r6" in text, text


def test_app_output_in_single_process_mode(factories, tmp_path):
    server, logto = start(factories, tmp_path)
    for n in range(1, 3):
        request(server.socket, "s%d" % n)
        wait_for_lines(logto, "s%d" % n)
    request(server.socket, "s3", path="/partial")
    os.kill(server.pid, signal.SIGTERM)
    assert stopped(server) == 0
    assert "out-partial s3" in read(logto)


def test_asgi_app_output_reaches_logto(factories, tmp_path):
    server, logto = start(factories, tmp_path, "--master", "--max-requests", "2",
                          app="output_apps:asgi")
    for n in range(1, 4):
        request(server.socket, "a%d" % n)
        wait_for_lines(logto, "a%d" % n, kinds=KINDS[:3])
    request(server.socket, "a4", path="/partial")
    os.kill(server.pid, signal.SIGTERM)
    assert stopped(server) == 0
    assert "out-partial a4" in read(logto)


# -- started with descriptors 0, 1 and 2 closed -------------------------------------------

def _close_std_fds() -> None:
    for fd in (0, 1, 2):
        os.close(fd)


@pytest.fixture
def closed_fds_server():
    """Start ``uwsgigw ARGS`` with fds 0, 1, 2 closed; stop it (its
    process group, or the daemon's pid from its pidfile) at teardown."""
    started = []

    def launch(*args: str):
        cmd = uwsgigw_cmd(*args)
        proc = subprocess.Popen(cmd, close_fds=True, pass_fds=(), env=server_env(BUFFERED),
                                preexec_fn=_close_std_fds, start_new_session=True)
        started.append(proc)
        return proc

    yield launch
    for proc in started:
        stop_process_group(proc, signal.SIGTERM, 10)


def test_starts_logs_and_serves_with_fds_0_1_2_closed(closed_fds_server, tmp_path):
    logto = tmp_path / "app.log"
    sock = os.path.join(short_tmpdir(), "closed.sock")
    proc = closed_fds_server("--socket", sock, "--module", APP, "--logto", str(logto))
    wait_ready(logto, sock, proc)
    request(sock, "c1")
    wait_for_lines(logto, "c1")
    wait_until(lambda: "GET /?c1 => generated" in read(logto), 5, what="request line")
    # What was closed is /dev/null now, not the log file, nor a socket.
    for fd in (0, 1, 2):
        target = os.readlink("/proc/%d/fd/%d" % (proc.pid, fd))
        assert target == (str(logto) if fd else os.devnull), (fd, target)


def test_daemonize_with_fds_0_1_2_closed(closed_fds_server, tmp_path):
    logto = tmp_path / "daemon.log"
    pidfile = tmp_path / "daemon.pid"
    sock = os.path.join(short_tmpdir(), "daemon.sock")
    proc = closed_fds_server("--socket", sock, "--module", APP, "--daemonize", str(logto),
                             "--pidfile", str(pidfile))
    try:
        assert proc.wait(30) == 0  # the parent of the double fork returns at once
        wait_ready(logto, sock)
        request(sock, "d1")
        wait_for_lines(logto, "d1")
        daemon = int(read(pidfile))
        assert daemon != proc.pid
    finally:
        if read(pidfile).strip():
            stop_pid(int(read(pidfile)))
    assert not os.path.exists("/proc/%d" % daemon)
