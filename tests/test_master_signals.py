"""Signals and harakiri with real processes and the real nginx."""

from __future__ import annotations

import os
import signal
import threading
import time

from test_master_support import (APP, children, exit_status, get, in_thread, poll, raw_get,
                                 wait_workers)


def test_harakiri_kills_a_stuck_request_with_its_traceback(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--harakiri", "1")
    nginx = nginx_factory(server.socket)
    before = wait_workers(server, 2)
    other = in_thread(get, nginx.port, "/slow?0.5")  # must not be hurt
    started = time.monotonic()
    result = get(nginx.port, "/sleep?30")
    elapsed = time.monotonic() - started
    assert result.status == 502
    assert 1.0 <= elapsed < 2.3, elapsed  # within about a second of the limit
    assert other.result().status == 200
    log = server.wait_for_log("HARAKIRI ON WORKER", "GET /sleep?30", "killed by signal 9")
    # The traceback names the function that was stuck, with its file.
    assert "in sleepy_handler" in log and "master_apps.py" in log
    assert "harakiri after 1 s" in log
    for _ in range(4):
        assert get(nginx.port, "/").status == 200
    after = wait_workers(server, 2)
    assert len(after - before) == 1


def test_harakiri_verbose_logs_the_request_vars(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--harakiri", "1",
                             "--harakiri-verbose")
    assert raw_get(server.socket, "/sleep?30") is None  # killed: no answer
    log = server.wait_for_log("HARAKIRI ON WORKER 1", "REQUEST_URI = '/sleep?30'",
                              "in sleepy_handler")
    assert "REMOTE_ADDR = '127.0.0.1'" in log
    assert raw_get(server.socket, "/").status == 200


def test_harakiri_traceback_even_when_blocked_in_c_holding_the_gil(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--threads", "2",
                             "--harakiri", "1")
    started = time.monotonic()
    assert raw_get(server.socket, "/cblock") is None
    # No Python code can run in that worker, yet faulthandler's C handler names
    # the stuck function; the master kills it after a short wait for the dump.
    assert time.monotonic() - started < 2.5
    log = server.wait_for_log("HARAKIRI ON WORKER 1", "in c_deadlock", "killed by signal 9")
    assert "GET /cblock running for" in log
    assert raw_get(server.socket, "/").status == 200


def test_usr2_dumps_the_current_request_and_threads(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--threads", "2")
    (worker,) = wait_workers(server, 1)
    slow = in_thread(raw_get, server.socket, "/slow?1.5")
    server.wait_for_log("slow request started")
    mark = server.log_mark()
    os.kill(worker, signal.SIGUSR2)
    log = server.wait_for_log("GET /slow?1.5 running for", "(most recent call first)",
                              since=mark)
    assert "in application" in log
    assert slow.result().status == 200  # a dump does not disturb the request


def test_sigterm_lets_the_request_in_flight_finish(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    nginx = nginx_factory(server.socket)
    slow = in_thread(get, nginx.port, "/slow?1.5")
    server.wait_for_log("slow request started")
    os.kill(server.pid, signal.SIGTERM)
    result = slow.result()
    assert result.status == 200 and result.body.startswith(b"slow done")
    assert exit_status(server) == 0
    assert "graceful stop" in server.log_text()


def test_sigint_stops_at_once(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    slow = in_thread(raw_get, server.socket, "/slow?30")
    server.wait_for_log("slow request started")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGINT)
    assert exit_status(server) == 0
    assert time.monotonic() - started < 3
    assert slow.result() is None


def test_worker_reload_mercy_kills_a_slow_recycling_worker(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--threads", "2",
                             "--max-requests", "1", "--worker-reload-mercy", "1")
    (first,) = wait_workers(server, 1)
    slow = in_thread(raw_get, server.socket, "/slow?30")
    server.wait_for_log("slow request started")
    # The other thread serves this one: max-requests is reached and the worker
    # recycles, but its slow request outlives worker-reload-mercy.
    assert raw_get(server.socket, "/").status == 200
    server.wait_for_log("recycling: max-requests 1 reached",
                        "did not stop within 1s (recycled)", timeout=5)
    assert slow.result() is None
    (second,) = wait_workers(server, 1)
    assert second != first
    assert raw_get(server.socket, "/").status == 200


def test_reload_under_load_through_nginx(uwsgigw_factory, nginx_factory, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             env={"MASTER_APP_VERSION_FILE": str(version)})
    nginx = nginx_factory(server.socket)
    before = wait_workers(server, 2)
    statuses: list[int] = []
    bodies: list[bytes] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            r = get(nginx.port, "/version")
            statuses.append(r.status)
            bodies.append(r.body)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for c in clients:
        c.start()
    poll(lambda: len(statuses) > 20, 10, "traffic")
    version.write_text("v2")
    for n in range(1, 4):
        mark = server.log_mark()
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for_log("reloaded in", "exited (reload", since=mark, timeout=20)
        count = len(statuses)
        poll(lambda: len(statuses) > count + 10, 10, "traffic after reload %d" % n)
    stop.set()
    for c in clients:
        c.join(30)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in statuses}
    assert any(b.startswith(b"v2 ") for b in bodies)  # the new code is served
    after = wait_workers(server, 2)
    assert not (after & before)
    assert server.pid == int(open(f"/proc/{server.pid}/stat").read().split()[0])
    assert get(nginx.port, "/version").body.startswith(b"v2 ")


def test_reload_keeps_master_rss_and_fds_flat(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2")
    wait_workers(server, 2)

    def fds():
        return len(os.listdir("/proc/%d/fd" % server.pid))

    def rss_kb():
        with open("/proc/%d/status" % server.pid) as f:
            return int(f.read().split("VmRSS:")[1].split()[0])

    first_fds, first_rss = fds(), rss_kb()
    for _ in range(5):
        mark = server.log_mark()
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for_log("reloaded in", since=mark, timeout=20)
        poll(lambda: len(children(server.pid)) == 2, 10, "old workers gone")
    assert raw_get(server.socket, "/").status == 200
    assert fds() == first_fds
    # e.g. no stray UWSGIGW_* variable; the tests run as root, which is warned about once,
    # as is a socket nginx's usual users could not reach (test_socket_access.py)
    warnings = [l for l in server.log_text().splitlines() if "WARNING" in l and
                "running as root without uid" not in l and "nginx usually runs as" not in l]
    assert warnings == []
    assert rss_kb() < first_rss * 1.3 + 2048


def test_reload_with_a_broken_app_keeps_the_old_workers(uwsgigw_factory, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             env={"MASTER_APP_VERSION_FILE": str(version)})
    before = wait_workers(server, 2)
    version.unlink()  # the app now fails at import
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reload failed", since=mark)
    assert raw_get(server.socket, "/version").body.startswith(b"v1 ")
    assert children(server.pid) == before
    assert "spawned worker" not in server.log_since(mark)  # the app failed in the master
    version.write_text("v3")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", since=mark)
    poll(lambda: raw_get(server.socket, "/version").body.startswith(b"v3 "), 10, "v3")
    assert server.alive()


def test_reload_with_lazy_apps_imports_in_the_new_workers(uwsgigw_factory, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--lazy-apps", env={"MASTER_APP_VERSION_FILE": str(version)})
    assert raw_get(server.socket, "/version").body.startswith(b"v1 ")
    version.write_text("v2")
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", "exited (reload", since=mark)
    assert raw_get(server.socket, "/version").body.startswith(b"v2 ")


def test_reload_and_stop_through_the_pidfile(uwsgigw_factory, tmp_path):
    import subprocess

    from conftest import server_env, uwsgigw_cmd

    pidfile = str(tmp_path / "pid")
    server = uwsgigw_factory("--module", APP, "--master", "--pidfile", pidfile)
    before = wait_workers(server, 1)
    mark = server.log_mark()
    cli = uwsgigw_cmd()
    assert subprocess.run(cli + ["--reload", pidfile], env=server_env(),
                          timeout=30).returncode == 0
    server.wait_for_log("reloaded in", since=mark)
    poll(lambda: children(server.pid) and not children(server.pid) & before, 10,
         "new workers")
    assert subprocess.run(cli + ["--stop", pidfile], env=server_env(),
                          timeout=30).returncode == 0
    assert exit_status(server) == 0


def test_reload_rereads_the_ini_file(uwsgigw_factory, tmp_path):
    from conftest import short_tmpdir

    sock = os.path.join(short_tmpdir(), "ini.sock")
    ini = tmp_path / "app.ini"
    text = "[uwsgi]\nsocket = %s\nmodule = %s\nmaster = true\nprocesses = %d\n"
    ini.write_text(text % (sock, APP, 1))
    server = uwsgigw_factory("--ini", str(ini), socket=sock)
    wait_workers(server, 1)
    ini.write_text(text % (sock, APP, 3))
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in")
    wait_workers(server, 3)
    assert raw_get(sock, "/").status == 200


def test_reload_after_dropping_privileges_keeps_serving(uwsgigw_factory):
    import pwd

    if os.geteuid() != 0:
        return
    nobody = pwd.getpwnam("nobody")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--uid", "nobody", "--gid", str(nobody.pw_gid))
    before = wait_workers(server, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    # Either the re-exec works as nobody, or (interpreter not readable by
    # nobody, as under /root/.pyenv) the master reloads just the workers.
    server.wait_for_log("reloaded in", "exited (reload", since=mark)
    assert server.alive()
    assert int(raw_get(server.socket, "/pid").body.split()[1]) == nobody.pw_uid
    assert not children(server.pid) & before


def test_usr1_reopens_the_log_in_master_and_workers(uwsgigw_factory, tmp_path):
    logto = tmp_path / "app.log"
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--logto", str(logto), wait=False)
    poll(lambda: logto.exists() and "ready to accept requests" in logto.read_text(), 15,
         "ready in logto")
    os.rename(logto, tmp_path / "app.log.1")  # what logrotate does
    os.kill(server.pid, signal.SIGUSR1)
    poll(lambda: logto.exists() and "log reopened" in logto.read_text(), 10, "reopened")
    # Both workers reopen too: their request lines land in the new file.
    for _ in range(2):
        slow = [in_thread(raw_get, server.socket, "/slow?0.3") for _ in range(2)]
        for r in slow:
            assert r.result().status == 200
    pids = {line.split("|")[0][6:] for line in logto.read_text().splitlines()
            if line.startswith("[pid: ")}
    assert len(pids) == 2
