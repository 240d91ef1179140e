"""vacuum after uid/gid were dropped, with real processes (issue 12, section 5).

The socket and pidfile live in a root-owned directory (systemd's
RuntimeDirectory=, /run/...) or a sticky one (/tmp); the server drops to
nobody:nogroup, which may not remove them there. A privileged cleaner forked
before the drop removes them once the master has ended: after TERM, after a
HUP reload and TERM, and after a SIGKILL of the master. Every cleanup that
fails is logged with the path and the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import short_tmpdir, wait_until
from test_master_support import APP, exit_status, raw_get, wait_workers
from uwsgigw import log
from uwsgigw.process import vacuum
from uwsgigw.devnginx import stop_process_group

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop privileges)")


def run_dir(mode: int) -> str:
    """A root-owned directory like /run/uwsgigw (0755) or /tmp (01777)."""
    path = short_tmpdir()
    os.chmod(path, mode)
    return path


def gone(*paths: str, timeout: float = 10.0) -> None:
    try:
        wait_until(lambda: not any(os.path.lexists(p) for p in paths), timeout,
                   what="%s removed" % (paths,))
    except TimeoutError:
        raise AssertionError("left behind: %s" % [p for p in paths if os.path.lexists(p)]) \
            from None


def start(uwsgigw_factory, directory: str, *extra: str):
    sock, pidfile = os.path.join(directory, "app.sock"), os.path.join(directory, "app.pid")
    server = uwsgigw_factory("--socket", sock, "--module", APP, "--uid", "nobody",
                             "--gid", "nogroup", "--vacuum", "--pidfile", pidfile, *extra,
                             socket=sock)
    assert os.stat(sock).st_uid == 0 and os.stat(pidfile).st_uid == 0
    assert raw_get(sock, "/pid").status == 200
    return server, sock, pidfile


@needs_root
@pytest.mark.parametrize("mode", [0o755, 0o1777], ids=["root-dir", "sticky-dir"])
def test_term_removes_socket_and_pidfile(uwsgigw_factory, mode):
    server, sock, pidfile = start(uwsgigw_factory, run_dir(mode), "--master")
    server.wait_for_log("a privileged cleaner (pid")
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    gone(sock, pidfile)
    log_text = server.wait_for_log("vacuum: removed socket %s" % sock,
                                   "vacuum: removed pidfile %s" % pidfile)
    assert "vacuum: cannot remove" not in log_text


@needs_root
def test_single_process_mode_removes_them_too(uwsgigw_factory):
    server, sock, pidfile = start(uwsgigw_factory, run_dir(0o755))
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    gone(sock, pidfile)


@needs_root
def test_hup_reload_then_term_removes_them(uwsgigw_factory):
    server, sock, pidfile = start(uwsgigw_factory, run_dir(0o755), "--master",
                                  "--processes", "2")
    before = wait_workers(server, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    # A re-exec as nobody, or (this machine's Python is under /root, which nobody
    # cannot read) a reload of the workers only: either way the master keeps its pid.
    server.wait_for_log("reloaded in", "exited (reload", since=mark, timeout=20)
    wait_until(lambda: not (set(wait_workers(server, 2)) & before), 10, what="new workers")
    assert os.path.exists(sock) and os.path.exists(pidfile)  # a reload is not an end
    assert raw_get(sock, "/").status == 200
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    gone(sock, pidfile)
    assert "vacuum: cannot remove" not in server.log_text()


@needs_root
def test_sigkill_of_the_master_still_removes_them(uwsgigw_factory):
    server, sock, pidfile = start(uwsgigw_factory, run_dir(0o755), "--master")
    os.kill(server.pid, signal.SIGKILL)
    assert exit_status(server) == -signal.SIGKILL
    gone(sock, pidfile)


# -- the cleaner itself: exec is not an end ---------------------------------------------

CLEANER_CHILD = textwrap.dedent("""
    import os, socket, sys
    from uwsgigw.process import vacuum
    sock_path, pidfile = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock_path)
    with open(pidfile, "w") as f:
        f.write("%d\\n" % os.getpid())
    vacuum.start_cleaner([("socket", sock_path, vacuum.identity(sock_path)),
                          ("pidfile", pidfile, None)])
    s.close()
    # The same process goes on as another program, as a reloading master does.
    os.execv(sys.executable, [sys.executable, "-c",
             "import time; print('exec done', flush=True); time.sleep(60)"])
""")


@pytest.fixture
def exec_child(tmp_path):
    """A process that binds a socket, writes its pidfile, starts the cleaner and
    execs another program; -> (proc, sock, pidfile, output file). Killed at the end."""
    directory = short_tmpdir()
    sock, pidfile = os.path.join(directory, "c.sock"), os.path.join(directory, "c.pid")
    out = tmp_path / "child.out"
    with open(out, "wb") as f:
        # -P: the uwsgigw this venv has installed, never the checkout in the cwd.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        proc = subprocess.Popen([sys.executable, *safe_path, "-c", CLEANER_CHILD, sock,
                                 pidfile], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: b"exec done" in out.read_bytes(), 20, what="the exec")
        yield proc, sock, pidfile, out
    finally:
        stop_process_group(proc, signal.SIGKILL, 5)


def test_the_cleaner_waits_through_exec_and_acts_on_exit(exec_child):
    proc, sock, pidfile, out = exec_child
    # The cleaner must not take the exec for an end: give it the time it
    # would need to act (it acts within milliseconds of an end).
    with pytest.raises(TimeoutError):
        wait_until(lambda: not os.path.exists(sock), 0.5)
    assert open(pidfile).read() == "%d\n" % proc.pid
    proc.kill()
    proc.wait(10)
    gone(sock, pidfile)
    assert "vacuum: removed socket %s (the master, pid %d" % (sock, proc.pid) in out.read_text()


def test_the_cleaner_leaves_a_replaced_socket_and_pidfile_alone(exec_child):
    proc, sock, pidfile, out = exec_child
    # Another server replaced both while this one was still running.
    os.unlink(sock)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(sock)
        with open(pidfile, "w") as f:
            f.write("1\n")
        proc.kill()
        proc.wait(10)
        wait_until(lambda: out.read_text().count("left alone") == 2, 10,
                   what="the cleaner's verdict")
        assert os.path.exists(sock) and open(pidfile).read() == "1\n"


# -- failures are logged, never silent ------------------------------------------------------

def test_cleanup_failures_are_logged_with_path_and_reason(tmp_path, monkeypatch):
    logfile = tmp_path / "log"
    sock, pidfile = tmp_path / "s.sock", tmp_path / "p.pid"
    sock.write_text("")
    pidfile.write_text("%d\n" % os.getpid())

    def refuse(path, *a, **kw):
        raise PermissionError(13, "Permission denied", path)

    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    monkeypatch.setattr(log, "_fd", fd)
    monkeypatch.setattr(os, "unlink", refuse)
    try:
        vacuum.remove_socket(str(sock))
        vacuum.remove_pidfile(str(pidfile))
    finally:
        monkeypatch.undo()
        os.close(fd)
    text = logfile.read_text()
    assert "WARNING vacuum: cannot remove socket %s: Permission denied" % sock in text
    assert "WARNING vacuum: cannot remove pidfile %s: Permission denied" % pidfile in text
