"""Watched files (process/touch.py) and the chain reload (process/chain.py),
with the real master under load: touch-reload, touch-workers-reload,
touch-chain-reload, touch-logreopen and ``uwsgigw --chain-reload PIDFILE``."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from test_master_support import APP, children, get, poll, raw_get, wait_workers

from conftest import server_env, short_tmpdir, uwsgigw_cmd
from uwsgigw.devnginx import free_port

pytestmark = pytest.mark.timeout(120)


class Load:
    """Clients hammering a uwsgi socket (or an nginx port) until stopped; every
    request that does not get a 200 is a failure, with what happened."""

    def __init__(self, target, path: str = "/pid", clients: int = 4):
        self.target, self.path = target, path
        self.ok = 0
        self.failed: list[str] = []
        self.bodies: list[bytes] = []
        self.slowest = 0.0  # seconds, of the answered requests
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _one(self):
        if isinstance(self.target, int):
            r = get(self.target, self.path, timeout=30)
            return r.status, r.body
        r = raw_get(self.target, self.path, timeout=30)
        return (r.status, r.body) if r is not None else (None, b"no answer")

    def _run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            try:
                status, body = self._one()
            except Exception as exc:  # refused, reset, timed out: all failures
                status, body = None, repr(exc).encode()
            took = time.monotonic() - started
            with self.lock:
                if status == 200:
                    self.ok += 1
                    self.slowest = max(self.slowest, took)
                    self.bodies.append(body)
                else:
                    self.failed.append("%s %r" % (status, body[:200]))

    def wait_for(self, more: int, timeout: float = 15.0) -> None:
        start = self.ok
        poll(lambda: self.ok >= start + more, timeout, "%d more answers" % more)

    def stop(self) -> "Load":
        self.done.set()
        for t in self.threads:
            t.join(40)
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"
        return self


def touch(path) -> None:
    """A new modification time (creates the file if needed)."""
    with open(path, "a"):
        pass
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def read_stats(addr: str) -> dict:
    import json

    from conftest import uwsgi_connect
    with uwsgi_connect(addr, timeout=5) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


# -- touch-reload ------------------------------------------------------------------

def test_touch_reload_under_load_fails_no_request(uwsgigw_factory, tmp_path):
    version, trigger = tmp_path / "version", tmp_path / "reload.trigger"
    version.write_text("v1")
    trigger.write_text("")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--touch-reload", str(trigger),
                             env={"MASTER_APP_VERSION_FILE": str(version)})
    before = wait_workers(server, 2)
    load = Load(server.socket, "/version", clients=4)
    try:
        load.wait_for(20)
        version.write_text("v2")
        for n in range(3):
            mark = server.log_mark()
            touch(trigger)
            server.wait_for_log("touch-reload: %s was modified" % trigger, "reloaded in",
                                "exited (reload", since=mark, timeout=20)
            load.wait_for(10)
    finally:
        load.stop()
    assert load.failed == [], load.failed[:5]
    assert load.ok > 50
    assert any(b.startswith(b"v2 ") for b in load.bodies)  # the new code is served
    assert not wait_workers(server, 2) & before
    assert raw_get(server.socket, "/version").body.startswith(b"v2 ")


def test_touch_reload_fires_when_the_file_appears_and_disappears(uwsgigw_factory, tmp_path):
    trigger = tmp_path / "deploy.flag"
    server = uwsgigw_factory("--module", APP, "--master", "--touch-reload", str(trigger))
    server.wait_for_log("touch-reload: cannot stat %s (No such file or directory); it fires "
                        "once the file is created" % trigger)
    first = wait_workers(server, 1)
    mark = server.log_mark()
    trigger.write_text("x")
    server.wait_for_log("touch-reload: %s was created" % trigger, "reloaded in", since=mark)
    poll(lambda: children(server.pid) and not children(server.pid) & first, 10, "new worker")
    second = wait_workers(server, 1)
    mark = server.log_mark()
    trigger.unlink()
    server.wait_for_log("touch-reload: %s was removed" % trigger, "reloaded in", since=mark)
    poll(lambda: children(server.pid) and not children(server.pid) & second, 10, "new worker")
    # the new image knows what the old one saw: no second "cannot stat" line, no reload loop
    mark = server.log_mark()
    time.sleep(2.5)
    assert "touch-reload" not in server.log_since(mark)
    assert server.log_text().count("cannot stat") == 1


def test_touch_reload_repeatable_and_first_of_several_wins(uwsgigw_factory, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for f in (a, b):
        f.write_text("")
    # a is watched by touch-reload and touch-chain-reload: one touch fires both at once
    server = uwsgigw_factory("--module", APP, "--master", "--touch-reload", str(a),
                             "--touch-reload", str(b), "--touch-chain-reload", str(a))
    wait_workers(server, 1)
    mark = server.log_mark()
    touch(b)
    server.wait_for_log("touch-reload: %s was modified" % b, "reloaded in", since=mark)
    # touch-reload and touch-chain-reload at once: the full reload wins (as in uWSGI)
    mark = server.log_mark()
    touch(a)
    server.wait_for_log("touch-reload: %s was modified" % a, "reloaded in", since=mark)
    time.sleep(2.5)  # the new image saw the same state: no chain reload afterwards either
    assert "chain reload" not in server.log_since(mark)


# -- touch-workers-reload, touch-logreopen ------------------------------------------------

def test_touch_workers_reload_forks_new_workers_from_the_master(uwsgigw_factory, tmp_path):
    version, trigger = tmp_path / "version", tmp_path / "workers.trigger"
    version.write_text("v1")
    trigger.write_text("")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--lazy-apps", "--touch-workers-reload", str(trigger),
                             env={"MASTER_APP_VERSION_FILE": str(version)})
    before = wait_workers(server, 2)
    load = Load(server.socket, "/version", clients=3)
    try:
        load.wait_for(10)
        version.write_text("v2")
        mark = server.log_mark()
        touch(trigger)
        log = server.wait_for_log("reloading the workers only: each new worker imports the "
                                  "app afresh (lazy-apps)", "reloaded in", "exited (reload",
                                  since=mark)
        load.wait_for(10)
    finally:
        load.stop()
    assert "graceful reload: starting a fresh master image" not in log  # no re-exec
    assert load.failed == [], load.failed[:5]
    assert not wait_workers(server, 2) & before
    assert raw_get(server.socket, "/version").body.startswith(b"v2 ")


def test_touch_logreopen_reopens_the_log(uwsgigw_factory, tmp_path):
    logto, trigger = tmp_path / "app.log", tmp_path / "rotated"
    trigger.write_text("")
    uwsgigw_factory("--module", APP, "--master", "--logto", str(logto),
                    "--touch-logreopen", str(trigger), wait=False)
    poll(lambda: logto.exists() and "ready to accept requests" in logto.read_text(), 15,
         "ready in logto")
    os.rename(logto, tmp_path / "app.log.1")  # what logrotate does, then touches the file
    touch(trigger)
    poll(lambda: logto.exists() and "log reopened" in logto.read_text(), 10, "reopened")
    assert "touch-logreopen: %s was modified" % trigger in (tmp_path / "app.log.1").read_text()


# -- chain reload --------------------------------------------------------------------

SLOW_BOOT = '''"""Takes a while to import (a big app): each worker boots for %(secs)s s.
Answers "VERSION PID" (VERSION: $MASTER_APP_VERSION_FILE's text at import)."""
import os
import time

time.sleep(%(secs)s)
VERSION = "none"
if os.environ.get("MASTER_APP_VERSION_FILE"):
    with open(os.environ["MASTER_APP_VERSION_FILE"]) as f:
        VERSION = f.read().strip()


def application(environ, start_response):
    body = ("%%s %%d" %% (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def slow_boot_app(tmp_path, seconds: float) -> list[str]:
    """Options for an app whose import takes ``seconds`` (lazy-apps: in each worker)."""
    (tmp_path / "slowboot.py").write_text(SLOW_BOOT % {"secs": seconds})
    return ["--pythonpath", str(tmp_path), "--module", "slowboot:application",
            "--lazy-apps"]


def test_chain_reload_keeps_workers_accepting_and_replaces_every_one(uwsgigw_factory,
                                                                     tmp_path):
    trigger = tmp_path / "chain.trigger"
    trigger.write_text("")
    stats = os.path.join(short_tmpdir(), "stats.sock")
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 0.5), "--master", "--processes", "3",
                             "--stats", stats, "--touch-chain-reload", str(trigger))
    before = wait_workers(server, 3)
    load = Load(server.socket, "/pid", clients=4)
    accepting_seen, most_processes = [], 0
    try:
        load.wait_for(20)
        mark = server.log_mark()
        touch(trigger)
        while "chain reload complete" not in server.log_since(mark):
            doc = read_stats(stats)
            accepting_seen.append(sum(w["accepting"] for w in doc["workers"]))
            most_processes = max(most_processes, len(children(server.pid)))
            assert len(accepting_seen) < 5000, server.log_since(mark)
            time.sleep(0.005)
        load.wait_for(10)
    finally:
        load.stop()
    log = server.wait_for_log(*["worker %d (pid %d) exited (chain reload" % (w, p)
                                for w, p in _ids(server.log_since(mark), before)],
                              since=mark)
    assert load.failed == [], load.failed[:5]
    assert accepting_seen and min(accepting_seen) >= 2, accepting_seen  # never below 3 - 1
    # one replacement at a time (plus old workers still finishing after SIGTERM)
    assert most_processes <= 5
    after = wait_workers(server, 3)
    assert not after & before  # every worker pid changed
    # each old worker stops only after its replacement accepts, one worker at a time
    for worker_id in (1, 2, 3):
        line = next(l for l in log.splitlines()
                    if "accepts: worker %d (pid" % worker_id in l)
        old = int(line.split("accepts: worker %d (pid " % worker_id)[1].split(")")[0])
        assert old in before
        assert log.index(line) < log.index("worker %d (pid %d) exited (chain reload"
                                           % (worker_id, old))
    starts = [log.index("worker %d (pid %d): chain reload; starting its replacement first"
                        % (w, p)) for w, p in _ids(log, before)]
    assert starts == sorted(starts) and len(starts) == 3
    accepted = [log.index("accepts: worker %d (pid" % w) for w in (1, 2, 3)]
    # worker 2's turn begins only once worker 1's replacement accepts, and so on
    assert starts[0] < accepted[0] < starts[1] < accepted[1] < starts[2] < accepted[2]


def _ids(log: str, pids: set[int]) -> list[tuple[int, int]]:
    found = []
    for line in log.splitlines():
        if ": chain reload; starting its replacement first" in line:
            head = line.split("] INFO ")[1]
            worker_id = int(head.split()[1])
            pid = int(head.split("(pid ")[1].split(")")[0])
            if pid in pids:
                found.append((worker_id, pid))
    return found


def test_chain_reload_of_a_single_worker_with_lazy_apps_loads_new_code(uwsgigw_factory,
                                                                         tmp_path):
    """processes = 1: the old worker serves until its replacement accepts, so
    no request waits for the new one's (slow) import."""
    version = tmp_path / "version"
    version.write_text("v1")
    pidfile = str(tmp_path / "master.pid")
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 1.5), "--master", "--pidfile",
                             pidfile, env={"MASTER_APP_VERSION_FILE": str(version)})
    (first,) = wait_workers(server, 1)
    poll(lambda: raw_get(server.socket, "/").status == 200, 10, "the first worker accepts")
    load = Load(server.socket, "/version", clients=3)
    try:
        load.wait_for(10)
        version.write_text("v2")
        mark = server.log_mark()
        result = subprocess.run(uwsgigw_cmd("--chain-reload", pidfile), env=server_env(),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "sent SIGURG to uwsgigw master %d" % server.pid in result.stdout
        log = server.wait_for_log("chain reload complete: 1 worker replaced", since=mark)
        load.wait_for(10)
    finally:
        load.stop()
    log = server.wait_for_log("worker 1 (pid %d) exited (chain reload" % first, since=mark)
    assert load.failed == [], load.failed[:5]
    assert load.slowest < 1.0, load.slowest  # a gap would have cost the 1.5 s import
    assert "each new worker imports the app afresh (lazy-apps)" in log
    assert log.index("accepts: worker 1 (pid %d) stops" % first) < \
        log.index("worker 1 (pid %d) exited (chain reload" % first)
    (second,) = wait_workers(server, 1)
    assert second != first
    assert raw_get(server.socket, "/version").body.startswith(b"v2 ")
    assert server.alive()


def test_chain_reload_with_a_broken_app_keeps_the_old_worker(uwsgigw_factory, tmp_path):
    version = tmp_path / "version"
    version.write_text("v1")
    pidfile = str(tmp_path / "master.pid")
    server = uwsgigw_factory("--module", APP, "--master", "--lazy-apps", "--processes", "2",
                             "--pidfile", pidfile,
                             env={"MASTER_APP_VERSION_FILE": str(version)})
    before = wait_workers(server, 2)
    version.unlink()  # a new worker now fails to import the app
    mark = server.log_mark()
    assert subprocess.run(uwsgigw_cmd("--chain-reload", pidfile), env=server_env(),
                          capture_output=True, timeout=30).returncode == 0
    server.wait_for_log("chain reload stopped: worker 1's replacement does not start",
                        "keeps serving", since=mark, timeout=30)
    poll(lambda: children(server.pid) == before, 10, "only the old workers")
    for _ in range(4):
        assert raw_get(server.socket, "/version").body.startswith(b"v1 ")
    version.write_text("v3")  # fixed: the next chain reload goes through
    mark = server.log_mark()
    os.kill(server.pid, __import__("signal").SIGURG)
    server.wait_for_log("chain reload complete: 2 workers replaced", since=mark, timeout=30)
    assert not wait_workers(server, 2) & before


def test_a_second_chain_reload_while_one_runs_is_ignored(uwsgigw_factory, tmp_path):
    import signal
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 0.5), "--master", "--processes", "2")
    wait_workers(server, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGURG)
    server.wait_for_log("chain reload: replacing 2 workers", since=mark)
    os.kill(server.pid, signal.SIGURG)
    server.wait_for_log("SIGURG (uwsgigw --chain-reload): a chain reload is already "
                        "running (2 workers to go); ignored", since=mark)
    server.wait_for_log("chain reload complete: 2 workers replaced", since=mark, timeout=30)
    log = server.log_since(mark)
    assert log.count("chain reload: replacing") == 1
    assert log.count("starting its replacement first") == 2


def test_chain_reload_through_nginx_under_load(uwsgigw_factory, nginx_factory, tmp_path):
    pidfile = str(tmp_path / "master.pid")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2", "--pidfile",
                             pidfile)
    nginx = nginx_factory(server.socket)
    before = wait_workers(server, 2)
    load = Load(nginx.port, "/pid", clients=4)
    try:
        load.wait_for(20)
        for _ in range(2):
            mark = server.log_mark()
            assert subprocess.run(uwsgigw_cmd("--chain-reload", pidfile), env=server_env(),
                                  capture_output=True, timeout=30).returncode == 0
            server.wait_for_log("chain reload complete", since=mark, timeout=30)
            load.wait_for(10)
    finally:
        load.stop()
    assert load.failed == [], load.failed[:5]
    assert not wait_workers(server, 2) & before


# -- the cost of watching ------------------------------------------------------------

def master_cpu_ns(pid: int) -> int:
    """Nanoseconds the master has run on a CPU (/proc/PID/schedstat; one thread)."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def test_watching_ten_files_costs_under_a_millisecond_per_second(uwsgigw_factory, tmp_path):
    files = []
    for n in range(10):
        path = tmp_path / ("watched-%d" % n)
        path.write_text("")
        files += ["--touch-reload" if n % 2 else "--touch-chain-reload", str(path)]
    server = uwsgigw_factory("--module", APP, "--master", *files)
    wait_workers(server, 1)
    time.sleep(1.0)  # past start-up
    start_cpu, start = master_cpu_ns(server.pid), time.monotonic()
    time.sleep(5.0)  # idle: what the master spends is the tick, the stats and the watching
    per_second = (master_cpu_ns(server.pid) - start_cpu) / (time.monotonic() - start)
    assert per_second < 1e6, "%.0f µs of master CPU per second" % (per_second / 1e3)
    assert "touch" not in server.log_text().split("ready to accept requests")[1]


def test_bad_touch_values_are_named_at_start_up(tmp_path):
    from uwsgigw.cli import load as load_config
    from uwsgigw.config.settings import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(["--socket", "127.0.0.1:%d" % free_port(), "--module", APP,
                     "--max-worker-lifetime", "an hour"], {})
    assert "max-worker-lifetime" in str(err.value.messages)


def test_sighup_during_a_chain_step_kills_no_worker(uwsgigw_factory, tmp_path):
    """A reload while a replacement boots: the worker waiting for it crosses the
    re-exec as a serving one (not killed for a deadline it never had)."""
    import signal
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 1.0), "--master", "--processes", "2")
    before = wait_workers(server, 2)
    poll(lambda: raw_get(server.socket, "/").status == 200, 10, "accepting")
    load = Load(server.socket, "/", clients=2)
    try:
        load.wait_for(5)
        mark = server.log_mark()
        os.kill(server.pid, signal.SIGURG)
        server.wait_for_log("chain reload; starting its replacement first", since=mark)
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for_log("reloaded in", since=mark, timeout=30)
        poll(lambda: len(children(server.pid)) == 2 and not children(server.pid) & before,
             20, "old workers gone")
        load.wait_for(5)
    finally:
        load.stop()
    log = server.log_since(mark)
    assert load.failed == [], load.failed[:5]
    assert "killed by signal 9" not in log and "did not stop within" not in log, log
    assert "chain reload complete" not in log  # the reload replaced them all


def test_sigterm_during_a_chain_step_stops_gracefully(uwsgigw_factory, tmp_path):
    import signal

    from test_master_support import exit_status
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 1.0), "--master", "--processes", "2")
    wait_workers(server, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGURG)
    server.wait_for_log("chain reload; starting its replacement first", since=mark)
    os.kill(server.pid, signal.SIGTERM)
    assert exit_status(server) == 0
    log = server.log_since(mark)
    assert "killed by signal 9" not in log and "exited (shutdown" in log, log


def test_sigttou_during_a_chain_step_leaves_the_smaller_pool(uwsgigw_factory, tmp_path):
    import signal
    server = uwsgigw_factory(*slow_boot_app(tmp_path, 1.0), "--master", "--processes", "2")
    wait_workers(server, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGURG)
    server.wait_for_log("worker 2 (pid", "chain reload; starting its replacement first",
                        "spawned worker 2", since=mark, timeout=20)
    poll(lambda: server.log_since(mark).count("starting its replacement first") == 2, 20,
         "worker 2's turn")
    os.kill(server.pid, signal.SIGTTOU)
    server.wait_for_log("chain reload complete", since=mark, timeout=20)
    wait_workers(server, 1, timeout=20)
    assert raw_get(server.socket, "/").status == 200
    assert "killed by signal 9" not in server.log_since(mark)
