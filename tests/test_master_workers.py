"""The pre-fork master with real processes: workers, threads, respawn,
recycling, TTIN/TTOU, start-up failures, pidfile, vacuum, privileges."""

from __future__ import annotations

import os
import pwd
import signal
import time

import pytest
from conftest import has_ipv6
from test_master_support import (APP, children, exit_status, get, in_thread, poll, raw_get,
                                 wait_workers)


def test_concurrent_requests_land_on_different_workers(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    wait_workers(server, 2)
    slow = [in_thread(raw_get, server.socket, "/slow?0.6") for _ in range(2)]
    pids = {r.result().body.decode().split()[-1] for r in slow}
    assert len(pids) == 2, pids
    assert {int(p) for p in pids} == children(server.pid)


def test_threads_serve_concurrently(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "1",
                             "--threads", "4")
    started = time.monotonic()
    slow = [in_thread(raw_get, server.socket, "/slow?0.8") for _ in range(4)]
    bodies = [r.result().body.decode() for r in slow]
    assert time.monotonic() - started < 2.0  # four 0.8 s requests side by side
    assert len({b.split()[-1] for b in bodies}) == 1  # all in the one worker


def test_worker_exit_in_request_is_502_then_replaced(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    nginx = nginx_factory(server.socket)
    before = wait_workers(server, 2)
    assert get(nginx.port, "/exit").status == 502
    for _ in range(6):
        assert get(nginx.port, "/").status == 200
    after = wait_workers(server, 2)
    assert len(after - before) == 1
    log = server.wait_for_log("died (exit code 1); respawning")
    assert "spawned worker" in log


def test_ttin_ttou_change_the_worker_count(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    wait_workers(server, 2)
    os.kill(server.pid, signal.SIGTTIN)
    wait_workers(server, 3)
    os.kill(server.pid, signal.SIGTTOU)
    wait_workers(server, 2)
    os.kill(server.pid, signal.SIGTTOU)
    os.kill(server.pid, signal.SIGTTOU)  # never below one
    wait_workers(server, 1)
    assert raw_get(server.socket, "/").status == 200


def test_max_requests_recycles(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "1",
                             "--max-requests", "3")
    pids = []
    for _ in range(7):
        pids.append(int(raw_get(server.socket, "/pid").body.split()[0]))
    assert len(set(pids)) >= 2
    assert pids[:3] == [pids[0]] * 3 and pids[3] != pids[0]
    server.wait_for_log("recycling: max-requests 3 reached")
    wait_workers(server, 1)


def test_reload_on_rss_recycles(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "1",
                             "--reload-on-rss", "100")
    first = int(raw_get(server.socket, "/pid").body.split()[0])
    assert raw_get(server.socket, "/grow?150").status == 200
    server.wait_for_log("reload-on-rss: rss")
    (worker,) = wait_workers(server, 1)
    poll(lambda: int(raw_get(server.socket, "/pid").body.split()[0]) != first, 10,
         "a new worker")


def test_bad_module_exits_fast_with_app_load_error(uwsgigw_factory):
    started = time.monotonic()
    server = uwsgigw_factory("--module", "no_such_module_here", "--master",
                             "--processes", "2", wait=False)
    assert exit_status(server) == 4
    assert time.monotonic() - started < 10
    log = server.log_text()
    assert "ModuleNotFoundError" in log and "Traceback" in log
    assert "spawned worker" not in log  # never forked


def test_bad_module_with_lazy_apps_stops_without_respawn_loop(uwsgigw_factory):
    server = uwsgigw_factory("--module", "no_such_module_here", "--master",
                             "--processes", "2", "--lazy-apps", wait=False)
    assert exit_status(server) == 4
    log = server.log_text()
    assert "ModuleNotFoundError" in log
    assert log.count("spawned worker") <= 2


def test_worker_dying_at_boot_backs_off_then_gives_up(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "1",
                             "--lazy-apps", env={"MASTER_APP_DIE_AT_IMPORT": "1"},
                             wait=False)
    assert exit_status(server, 30) == 3
    log = server.log_text()
    assert "died while booting (exit code 9); retrying in 0.1s" in log
    assert "retrying in 0.8s" in log
    assert "giving up" in log


def test_pidfile_and_vacuum(uwsgigw_factory, tmp_path):
    pidfile = str(tmp_path / "uwsgigw.pid")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--pidfile", pidfile, "--vacuum")
    with open(pidfile) as f:
        assert int(f.read()) == server.pid
    assert os.path.exists(server.socket)
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    assert not os.path.exists(pidfile)
    assert not os.path.exists(server.socket)


def test_without_vacuum_the_socket_stays(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master")
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    assert os.path.exists(server.socket)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_uid_gid_dropped_after_bind(uwsgigw_factory):
    nobody = pwd.getpwnam("nobody")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--uid", "nobody", "--gid", str(nobody.pw_gid))
    # The socket was bound as root before the drop: it stays root's, 0660.
    assert os.stat(server.socket).st_uid == 0
    uid, gid = raw_get(server.socket, "/pid").body.split()[1:3]
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    for pid in wait_workers(server, 2):
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
        assert "\nUid:\t%d\t%d" % (nobody.pw_uid, nobody.pw_uid) in status
    server.wait_for_log("dropped privileges to uid %d" % nobody.pw_uid)


def test_several_sockets_unix_tcp_ipv6(uwsgigw_factory):
    from uwsgigw.devnginx import free_port

    tcp = "127.0.0.1:%d" % free_port()
    args = ["--module", APP, "--master", "--processes", "2", "--socket", tcp]
    if has_ipv6():
        v6 = "[::1]:%d" % free_port("::1")
        args += ["--socket", v6]
    server = uwsgigw_factory(*args, socket=tcp)
    for addr in [tcp] + ([v6] if has_ipv6() else []):
        assert raw_get(addr, "/").status == 200
    server.wait_for_log("ready to accept requests: 2 workers on %s" % tcp)


def test_unix_socket_mode_and_several_unix_sockets(uwsgigw_factory):
    import stat
    from conftest import short_tmpdir

    folder = short_tmpdir()
    a, b = os.path.join(folder, "a.sock"), os.path.join(folder, "b.sock")
    uwsgigw_factory("--module", APP, "--master", "--socket", a, "--socket", b,
                    "--chmod-socket", "640", socket=a)
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o640
    assert raw_get(b, "/").status == 200


def test_need_app_off_serves_500_without_an_app(uwsgigw_factory):
    server = uwsgigw_factory("--module", "no_such_module_here", "--master",
                             "--no-need-app")
    response = raw_get(server.socket, "/")
    assert response.status == 500
    assert "ModuleNotFoundError" in server.log_text()
