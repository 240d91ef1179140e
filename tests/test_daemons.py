"""Attached daemons (process/daemons.py) with the real master: output in the log,
restarts with back-off, stop with mercy and no orphan, reloads, stats."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest
from conftest import short_tmpdir
from test_master_support import APP, exit_status, poll

from uwsgigw.config import daemonspec
from uwsgigw.config.optypes import BadValue

MARKER = "_UWSGIGW_DAEMON"
STARTED = re.compile(r'(?:started|restarted) daemon (\d+) ".*" \(pid (\d+)\)$', re.M)

pytestmark = pytest.mark.timeout(60)


def marked(master_pid: int) -> set[int]:
    """Live processes whose environment carries the daemons' marker of this master."""
    found = set()
    needle = ("%s=%d:" % (MARKER, master_pid)).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read()
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:][:1] != b"Z" and any(
                item.startswith(needle) for item in env.split(b"\0")):
            found.add(int(name))
    return found


def gone(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"


def ppid_of(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def daemon_pids(log: str) -> dict[int, list[int]]:
    """daemon number -> the pids it was started with, in order."""
    pids: dict[int, list[int]] = {}
    for number, pid in STARTED.findall(log):
        pids.setdefault(int(number), []).append(int(pid))
    return pids


@pytest.fixture
def server(uwsgigw_factory, tmp_path):
    """Start ``uwsgigw --master`` with the test app and these daemon options,
    from tmp_path; whatever carries its daemons' marker is killed at the end."""
    started = []

    def start(*args, **kw):
        srv = uwsgigw_factory("--module", APP, "--master", "--chdir", str(tmp_path), *args,
                              cwd=str(tmp_path), **kw)
        started.append(srv.pid)
        return srv

    yield start
    for pid in started:
        for left in marked(pid):
            try:
                os.kill(left, signal.SIGKILL)
            except ProcessLookupError:
                pass


def read_pid(path, timeout: float = 10.0) -> int:
    def pid():
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0
    return poll(pid, timeout, what="pid in %s" % path)


# -- output, directory, restarts ------------------------------------------------------

def test_output_goes_to_the_log_with_a_prefix_naming_the_daemon(server, tmp_path):
    srv = server("--attach-daemon", "echo out-line; echo err-line >&2; pwd; exec sleep 300",
                 "--attach-daemon",
                 "printf 'no newline at the end'; exec sleep 300 >/dev/null 2>&1")
    log = srv.wait_for_log("] out-line", "] err-line", "] no newline at the end")
    assert re.search(r"INFO \[daemon 1 echo out-line; echo [^\]]*\] out-line", log), log
    assert re.search(r"INFO \[daemon 1 [^\]]*\] err-line", log)
    assert "] %s\n" % tmp_path in log  # /bin/sh -c, from the server's chdir
    # an unfinished line is logged when the pipe closes
    assert re.search(r"\[daemon 2 printf 'no newline [^\]]*\] no newline at the end", log)
    # started once the workers accept, not before
    assert log.index("ready to accept requests") < log.index('started daemon 1 "')


def test_a_daemon_that_keeps_dying_is_restarted_slower_and_slower(server):
    srv = server("--attach-daemon", "echo run; exit 3")
    started = time.monotonic()
    log = srv.wait_for_log("starting it again in 1s", "starting it again in 2s",
                           "starting it again in 4s", timeout=15)
    assert time.monotonic() - started >= 3  # 1 s, then 2 s between the starts
    assert re.search(r'daemon 1 "echo run; exit 3" \(pid \d+\) exit code 3 after 0\.\ds', log)
    runs = log.count("] run\n")
    assert 3 <= runs <= 4, log  # no tight loop
    assert srv.alive()


def test_a_daemon_killed_from_outside_is_started_again(server, tmp_path):
    srv = server("--attach-daemon", "echo tick; exec sleep 300")
    (pid,) = daemon_pids(srv.wait_for_log("] tick"))[1]
    os.kill(pid, signal.SIGKILL)
    srv.wait_for_log('daemon 1 "echo tick; exec sleep 300" (pid %d) killed by signal 9 '
                     '(SIGKILL) after' % pid, "starting it again in 1s")
    poll(lambda: srv.log_text().count("] tick\n") == 2, 5, what="a second start")
    (first, second) = daemon_pids(srv.log_text())[1]
    assert first == pid and not gone(second)


# -- stop ----------------------------------------------------------------------------

def test_stop_kills_a_daemon_that_ignores_term_after_reload_mercy(server):
    srv = server("--reload-mercy", "1", "--attach-daemon",
                 "trap '' TERM; echo stubborn; while :; do sleep 0.1; done")
    (pid,) = daemon_pids(srv.wait_for_log("] stubborn"))[1]
    started = time.monotonic()
    os.kill(srv.pid, signal.SIGTERM)
    assert exit_status(srv) == 0
    assert 1.0 <= time.monotonic() - started < 5
    log = srv.log_text()
    assert 'daemon 1 "trap' in log and "did not stop within 1s; killing it" in log
    assert "killed by signal 9 (SIGKILL)" in log
    assert gone(pid) and not marked(srv.pid)


def test_no_orphan_after_stop_even_when_the_daemon_calls_setsid(server, tmp_path):
    escaped = tmp_path / "escaped.pid"
    srv = server("--reload-mercy", "1", "--attach-daemon",
                 "setsid sh -c 'echo $$ > %s; trap \"\" TERM; while :; do sleep 0.1; done' & "
                 "echo parent; exec sleep 300" % escaped)
    srv.wait_for_log("] parent")
    runaway = read_pid(escaped)
    (daemon,) = daemon_pids(srv.log_text())[1]
    assert os.getsid(runaway) == runaway != os.getsid(daemon)  # out of the daemon's group
    os.kill(srv.pid, signal.SIGTERM)
    assert exit_status(srv) == 0
    assert gone(runaway) and gone(daemon)
    assert not marked(srv.pid)
    assert "pid %d (left by an attached daemon) did not stop; killing it" % runaway \
        in srv.log_text()


def test_what_a_failed_daemon_left_running_is_stopped_before_it_starts_again(server,
                                                                            tmp_path):
    left = tmp_path / "left.pid"
    srv = server("--attach-daemon", "setsid sh -c 'echo $$ > %s; exec sleep 300' & "
                 "echo parent; sleep 0.3; exit 2" % left)
    srv.wait_for_log("] parent")
    first = read_pid(left)
    srv.wait_for_log("exit code 2 after", "left pid %d running: sending signal 15" % first)
    poll(lambda: gone(first), 5, what="the left-over process gone")


def test_a_daemon_that_detaches_is_followed_not_restarted(server, tmp_path):
    # corpus 018: "attach-daemon = setsid watchmedo ...": where the shell execs
    # setsid (bash does; exec says so for dash), setsid forks, being a process
    # group leader, and its parent exits 0 at once.
    followed = tmp_path / "followed.pid"
    srv = server("--attach-daemon", "exec setsid sh -c 'echo $$ > %s; exec sleep 300'"
                 % followed)
    pid = read_pid(followed)
    log = srv.wait_for_log("exit code 0 and left pid %d running: following it" % pid)
    time.sleep(2.5)  # two checks of the process tree: it is left alone
    assert not gone(pid) and "restarted daemon 1" not in srv.log_text(), log
    os.kill(pid, signal.SIGTERM)
    srv.wait_for_log("the processes it left are gone; starting it again", "restarted daemon 1")
    second = poll(lambda: (lambda p: p if p != pid else 0)(read_pid(followed)), 10,
                  what="a new detached process")
    os.kill(srv.pid, signal.SIGTERM)
    assert exit_status(srv) == 0
    assert gone(second) and not marked(srv.pid)


def test_an_orphan_landing_on_the_master_is_reaped(server, tmp_path):
    orphan = tmp_path / "orphan.pid"
    # The subshell forks a sleep and exits: the sleep's parent is gone, so it is
    # reparented to the master (a child subreaper, as PID 1 would be), which must
    # reap it when it exits, leaving no zombie.
    srv = server("--attach-daemon", "(sleep 1.5 & echo $! > %s); echo forked; exec sleep 300"
                 % orphan)
    srv.wait_for_log("] forked")
    pid = read_pid(orphan)
    assert ppid_of(pid) == srv.pid
    poll(lambda: not os.path.exists("/proc/%d" % pid), 10, what="the orphan reaped")
    assert srv.alive()


def test_a_control_daemon_stops_the_server(server):
    srv = server("--attach-daemon2", "cmd=echo controlling; sleep 0.5,control=1")
    assert exit_status(srv) == 0
    log = srv.log_text()
    assert "it is a control daemon: stopping the server" in log
    assert "SIGTERM: graceful stop" in log


# -- reloads ---------------------------------------------------------------------------

def test_reload_restarts_attach_daemon_signals_reloadsignal_keeps_smart(server, tmp_path):
    smart_pidfile = tmp_path / "smart.pid"
    srv = server(
        "--attach-daemon", "echo plain; exec sleep 300",
        "--attach-daemon2", "cmd=trap 'echo got-usr1' USR1; echo signalled; "
        "while :; do sleep 0.1; done,reloadsignal=USR1",
        "--smart-attach-daemon", "%s sh -c 'sleep 300 & echo $! > %s'" % (
            smart_pidfile, smart_pidfile))
    srv.wait_for_log("] plain", "] signalled")
    smart = read_pid(smart_pidfile)
    before = daemon_pids(srv.log_text())
    mark = srv.log_mark()
    os.kill(srv.pid, signal.SIGHUP)
    log = srv.wait_for_log("reloaded in", "reload: restarting it to run the deployed code",
                           "] got-usr1", since=mark, timeout=20)
    log = srv.wait_for_log("restarted daemon 1", "] plain", since=mark)
    after = daemon_pids(log)
    assert after[1][0] != before[1][0] and gone(before[1][0])
    assert "reload: sending it signal 10" in log
    assert 2 not in after and not gone(before[2][0])  # same process: it got USR1
    assert 3 not in after and not gone(smart) and read_pid(smart_pidfile) == smart
    assert ppid_of(smart) == srv.pid  # its launcher exited: the subreaper adopted it
    os.kill(srv.pid, signal.SIGTERM)
    assert exit_status(srv) == 0
    assert gone(smart) and not marked(srv.pid)


def test_touch_restarts_the_daemon(server, tmp_path):
    touched = tmp_path / "restart-me"
    touched.write_text("")
    srv = server("--attach-daemon2", "cmd=echo touchable; exec sleep 300,touch=%s" % touched)
    srv.wait_for_log("] touchable")
    (first,) = daemon_pids(srv.log_text())[1]
    time.sleep(1.1)  # mtime granularity, and the once-a-second check sees the old mtime
    os.utime(touched)
    srv.wait_for_log("%s has been touched: restarting" % touched, "restarted daemon 1")
    assert gone(first)


def test_smart_attach_daemon2_writes_its_pidfile_and_respawns(server, tmp_path):
    pidfile = tmp_path / "s2.pid"
    srv = server("--smart-attach-daemon2", "%s sleep 300" % pidfile)
    first = read_pid(pidfile)
    assert ppid_of(first) == srv.pid
    os.kill(first, signal.SIGKILL)
    poll(lambda: read_pid(pidfile) != first, 10, what="a new pid in the pidfile")
    assert not gone(read_pid(pidfile))


# -- stats -----------------------------------------------------------------------------

def test_stats_list_the_daemons(server, tmp_path):
    stats = str(tmp_path / "stats.sock")
    srv = server("--stats", stats, "--attach-daemon", "echo listed; exec sleep 300",
                 "--attach-daemon", "exit 1")
    srv.wait_for_log("] listed", "starting it again in 1s")

    def document():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(stats)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data)

    doc = poll(lambda: (lambda d: d if d["daemons"][1]["respawns"] >= 1 else None)(
        document()), 10, what="a respawn counted")
    first, second = doc["daemons"]
    (pid,) = daemon_pids(srv.log_text())[1]
    assert first["cmd"] == "echo listed; exec sleep 300" and first["pid"] == pid
    assert first["respawns"] == 0 and first["status"] == "running"
    assert second["cmd"] == "exit 1" and second["last_exit"] == "exit code 1"


# -- values ----------------------------------------------------------------------------

def test_attach_daemon2_keys_as_uwsgi_reads_them():
    warnings = []
    spec = daemonspec.parse(daemonspec.ATTACH2, "command=celery worker\\, -B,stopsignal=INT,"
                            "reload_signal=1,touch=/a;/b,stdin=1,control=1,freq=3,uid=33",
                            warnings.append)
    assert spec.command == "celery worker, -B" and spec.stop_signal == signal.SIGINT
    assert spec.reload_signal == signal.SIGHUP and spec.touch == ("/a", "/b")
    assert spec.stdin and spec.control and spec.freq == 3 and not spec.smart
    assert warnings == ["uid=33 is ignored: run uwsgigw as that user (uid =) or use "
                        "su/setpriv in the command"]
    smart = daemonspec.parse(daemonspec.SMART, "/run/x.pid,5 memcached -d")
    assert (smart.pidfile, smart.freq, smart.command, smart.daemonize) == (
        "/run/x.pid", 5, "memcached -d", False)
    assert daemonspec.parse(daemonspec.SMART2, "/run/y.pid sleep 9").daemonize


@pytest.mark.parametrize("kind, text", [
    (daemonspec.ATTACH2, "freq=3"), (daemonspec.ATTACH2, "cmd=x,stopsignal=NOPE"),
    (daemonspec.ATTACH2, "cmd=x,oops"), (daemonspec.SMART, "/run/x.pid"),
    (daemonspec.SMART, "/run/x.pid,soon cmd"), (daemonspec.ATTACH, "  "),
])
def test_bad_daemon_values_say_what_would_fit(kind, text):
    with pytest.raises(BadValue):
        daemonspec.parse(kind, text)


def test_a_bad_value_stops_start_up_naming_the_option(uwsgigw_factory):
    srv = uwsgigw_factory("--module", APP, "--master", "--attach-daemon2", "freq=3",
                          wait=False)
    assert exit_status(srv) != 0
    assert "attach-daemon2 = 'freq=3': expected cmd=COMMAND" in srv.log_text()
    assert "Traceback" not in srv.log_text()


def test_attached_daemons_imply_the_master_as_in_uwsgi(uwsgigw_factory, tmp_path):
    srv = uwsgigw_factory("--module", APP, "--attach-daemon", "echo without-master; "
                          "exec sleep 300", cwd=str(tmp_path))
    srv.wait_for_log("] without-master", "master (pid %d)" % srv.pid)


def test_back_off_doubles_while_it_keeps_dying_and_resets_after_a_good_run():
    from types import SimpleNamespace

    from uwsgigw.process.daemons import Daemons

    specs = [daemonspec.parse(daemonspec.ATTACH, "x"),
             daemonspec.parse(daemonspec.ATTACH2, "cmd=y,max_throttle=5")]
    service = Daemons(specs, SimpleNamespace(pid=os.getpid(), workers={}), 60.0, False)
    plain, capped = service.daemons
    assert [service._backoff(plain, 0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert service._backoff(plain, 10.0) == 0 and plain.fails == 0  # ran 10 s: at once
    assert service._backoff(plain, 0.1) == 1
    assert [service._backoff(capped, 0.1) for _ in range(4)] == [1, 2, 4, 5]
    assert plain.key != capped.key and len(plain.key) == 8


def test_with_log_json_daemon_output_and_exits_are_json_events(server):
    srv = server("--log-json", "--attach-daemon", "echo as-json; exit 4")
    srv.wait_for_log('"output":"as-json"', '"phase":"exit"')
    events = [json.loads(line) for line in srv.log_text().splitlines()
              if line.startswith("{") and '"event":"daemon"' in line]
    output = next(e for e in events if e["phase"] == "output")
    assert output["daemon"] == 1 and output["msg"].endswith("] as-json")
    spawn = next(e for e in events if e["phase"] == "spawn")
    exit_ = next(e for e in events if e["phase"] == "exit")
    assert exit_["daemon_pid"] == spawn["daemon_pid"] and exit_["status"] == "exit code 4"
    assert exit_["level"] == "warning" and exit_["restart_in"] == 1


def test_a_daemon_removed_from_the_ini_is_stopped_by_the_reload(server, tmp_path):
    ini = tmp_path / "site.ini"
    sock = os.path.join(short_tmpdir(), "d.sock")
    head = "[uwsgi]\nsocket = %s\n" % sock
    ini.write_text(head + "attach-daemon = echo kept; exec sleep 300\n"
                   "attach-daemon = echo dropped; exec sleep 301\n")
    srv = server("--ini", str(ini), socket=sock)
    srv.wait_for_log("] kept", "] dropped")
    pids = daemon_pids(srv.log_text())
    ini.write_text(head + "attach-daemon = echo kept; exec sleep 300\n")
    mark = srv.log_mark()
    os.kill(srv.pid, signal.SIGHUP)
    srv.wait_for_log('stopping daemon 2 "echo dropped; exec sleep 301" (pid %d): no longer '
                     'configured' % pids[2][0], "restarted daemon 1", since=mark, timeout=20)
    poll(lambda: gone(pids[2][0]), 10, what="the dropped daemon gone")
    ini.write_text(head)  # none left: the reloaded image still stops the last one
    mark = srv.log_mark()
    os.kill(srv.pid, signal.SIGHUP)
    srv.wait_for_log("reloaded in", "no longer configured", since=mark, timeout=20)
    poll(lambda: not marked(srv.pid), 10, what="no daemon left")


def test_stdin_is_dev_null_unless_honoured(tmp_path):
    import subprocess

    from conftest import server_env, uwsgigw_cmd
    from uwsgigw.devnginx import stop_process_group

    sock = os.path.join(short_tmpdir(), "i.sock")
    log = tmp_path / "stdin.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(uwsgigw_cmd(
            "--socket", sock, "--module", APP, "--attach-daemon", "echo a; exec sleep 300",
            "--attach-daemon2", "cmd=echo b; exec sleep 301,stdin=1"),
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=server_env(),
            cwd=str(tmp_path), start_new_session=True)
    try:
        poll(lambda: "] a\n" in log.read_text() and "] b\n" in log.read_text(), 20,
             what="both daemons")
        pids = daemon_pids(log.read_text())
        stdin_of = lambda pid: os.readlink("/proc/%d/fd/0" % pid)  # noqa: E731
        assert stdin_of(pids[1][0]) == "/dev/null"
        assert stdin_of(pids[2][0]) == stdin_of(proc.pid) and "pipe:" in stdin_of(proc.pid)
    finally:
        stop_process_group(proc)
        for pid in marked(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_an_immediate_stop_kills_a_stubborn_daemon_within_a_second(server):
    srv = server("--attach-daemon", "trap '' TERM; echo stubborn; while :; do sleep 0.1; done")
    (pid,) = daemon_pids(srv.wait_for_log("] stubborn"))[1]
    started = time.monotonic()
    os.kill(srv.pid, signal.SIGINT)
    assert exit_status(srv) == 0
    assert time.monotonic() - started < 3  # not reload-mercy's 60 s
    assert gone(pid) and "did not stop within 1s; killing it" in srv.log_text()


def test_a_daemon_dies_with_a_killed_master(server):
    srv = server("--attach-daemon", "echo orphaned-if-not-killed; exec sleep 300")
    (pid,) = daemon_pids(srv.wait_for_log("] orphaned-if-not-killed"))[1]
    assert os.getsid(pid) == pid != os.getsid(srv.pid)  # the server's group kill misses it
    os.kill(srv.pid, signal.SIGKILL)
    poll(lambda: gone(pid), 5, what="the daemon gone with its master")


def test_a_reload_restarts_a_detached_daemon_too(server, tmp_path):
    followed = tmp_path / "followed.pid"
    srv = server("--attach-daemon", "exec setsid sh -c 'echo $$ > %s; exec sleep 300'"
                 % followed)
    pid = read_pid(followed)
    srv.wait_for_log("left pid %d running: following it" % pid)
    mark = srv.log_mark()
    os.kill(srv.pid, signal.SIGHUP)
    srv.wait_for_log("reload: restarting it to run the deployed code",
                     "the processes it left are gone; starting it again", "restarted daemon 1",
                     since=mark, timeout=20)
    assert gone(pid)
    poll(lambda: (lambda p: p if p != pid else 0)(read_pid(followed)), 10,
         what="the new detached process")
