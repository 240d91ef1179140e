"""Cheaper mode (process/cheaper.py): a real master that starts cheaper-initial
workers, grows under a burst of slow requests, shrinks back to cheaper when
idle, loses no request either way, and says so in its log, stats and /metrics;
and the option rules uWSGI has (core/init.c)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading

import pytest
from conftest import short_tmpdir, uwsgigw_cmd, wait_until
from test_master_support import APP, in_thread, raw_get
from test_stats import http_get, parse_prometheus, read_stats

from uwsgigw import exitcodes
from uwsgigw.cli import load
from uwsgigw.config.settings import ConfigError
from uwsgigw.devnginx import free_port
from uwsgigw.process.stats import socket_queue

OVERLOAD = "0.3"  # seconds: small, so the test does not wait for uWSGI's 3 s


def start(factory, *args: str, http: bool = False):
    run = short_tmpdir()
    stats, port = os.path.join(run, "stats.sock"), free_port()
    server = factory("--module", APP, "--master", "--processes", "4", "--cheaper", "1",
                     "--cheaper-overload", OVERLOAD, "--stats", stats,
                     "--stats-http", "127.0.0.1:%d" % port, *args, http=http)
    server.stats, server.stats_port = stats, port
    return server


def running(server) -> int:
    return read_stats(server.stats)["cheaper"]["running"]


def statuses(server) -> list[str]:
    return [w["status"] for w in read_stats(server.stats)["workers"]]


class ClientLoop:
    """Requests one after another on fresh connections (as nginx makes them)
    until stopped; every answer must be a 200 from the app."""

    def __init__(self, sock: str):
        self.sock, self.done, self.failures, self.pids = sock, 0, [], set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                r = raw_get(self.sock, "/pid")
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if r is None or r.status != 200:
                self.failures.append(r and r.status)
            else:
                self.done += 1
                self.pids.add(int(r.body.split()[0]))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


@pytest.mark.timeout(90)
def test_a_burst_grows_the_pool_and_idleness_shrinks_it_back(uwsgigw_factory):
    server = start(uwsgigw_factory, "--cheaper-initial", "2")
    log = server.log_text()
    # cheaper-initial workers at boot, not processes.
    assert "cheaper mode: 1 to 4 workers (cheaper-initial 2, step 1, overload 0.3s)" in log
    assert re.search(r"master \(pid \d+\) starting 2 workers\n", log), log
    assert "ready to accept requests: 2 workers" in log
    assert "spawned worker 3" not in log
    # Idle: back to cheaper = 1, the other ids shown as uWSGI's "cheap".
    wait_until(lambda: statuses(server) == ["idle", "cheap", "cheap", "cheap"], 10,
               what="one worker and three cheap slots")
    assert running(server) == 1
    server.wait_for_log("cheaper: 2 of 2 workers idle for 0.3s: retiring worker 2")

    # A burst of slow requests: 8 at once on one worker would take 8 x 1.5 s.
    mark = server.log_mark()
    burst = [in_thread(raw_get, server.socket, "/slow?1.5", 30) for _ in range(8)]
    wait_until(lambda: running(server) == 4, 10, what="4 workers under the burst")
    grown = server.log_since(mark)
    assert re.search(r"INFO cheaper: (every worker busy|\d+ connections? waiting) for 0\.3s: "
                     r"starting 1 more worker \(1 -> 2 of 4\)", grown), grown
    assert "(3 -> 4 of 4)" in server.wait_for_log("(3 -> 4 of 4)", since=mark)
    status, _, body = http_get(server.stats_port, "/metrics")
    samples = parse_prometheus(body.decode())
    assert status == 200 and samples[("uwsgigw_workers_running", ())] == 4
    assert sum(v for (name, _), v in samples.items() if name == "uwsgi_worker_cheap") == 0
    answers = [h.result(30) for h in burst]
    assert all(r is not None and r.status == 200 and r.body.startswith(b"slow done")
               for r in answers), answers
    served_by = {int(r.body.split()[2]) for r in answers}
    assert len(served_by) >= 3, served_by  # the new workers took part of the burst

    # Idle again, with a client loop running: one worker retired at a time, back
    # to 1, and no request lost while they go.
    loop = ClientLoop(server.socket)
    try:
        wait_until(lambda: running(server) == 1 and loop.done > 20, 20,
                   what="back to cheaper = 1 under a light load")
    finally:
        loop.stop()
    assert loop.failures == [] and loop.done > 20
    shrunk = server.log_since(mark)
    for n in (4, 3, 2):
        assert "(%d -> %d of 4)" % (n, n - 1) in shrunk, shrunk
    assert re.search(r"worker \d \(pid \d+\) exited \(cheaper; exit code 0\)", shrunk), shrunk
    assert "killing it" not in shrunk and "died" not in shrunk
    status, _, body = http_get(server.stats_port, "/metrics")
    samples = parse_prometheus(body.decode())
    assert samples[("uwsgigw_workers_running", ())] == 1
    assert sum(v for (name, _), v in samples.items() if name == "uwsgi_worker_cheap") == 3
    assert read_stats(server.stats)["cheaper"] == {
        "algo": "spare", "running": 1, "target": 1, "min": 1, "max": 4, "step": 1,
        "overload": 0.3}


@pytest.mark.timeout(60)
def test_a_busy_worker_is_never_the_one_retired(uwsgigw_factory):
    """Shrinking picks a worker with no request running; a long request keeps
    its worker, and finishes."""
    server = start(uwsgigw_factory, "--cheaper-initial", "3", "--cheaper-step", "2")
    slow = in_thread(raw_get, server.socket, "/slow?3", 30)
    server.wait_for_log("slow request started in pid")
    busy_pid = int(re.search(r"slow request started in pid (\d+)",
                             server.log_text()).group(1))
    # 3 workers, 1 busy: 2 spare, one is retired; then 1 busy + 1 spare is stable.
    wait_until(lambda: running(server) == 2, 10, what="down to 2 (one spare)")
    doc = read_stats(server.stats)
    assert [w["accepting"] for w in doc["workers"] if w["pid"] == busy_pid] == [1], doc
    retired = re.findall(r"retiring worker \d \(pid (\d+)\)", server.log_text())
    assert len(retired) == 1 and int(retired[0]) != busy_pid
    r = slow.result(30)
    assert r is not None and r.status == 200 and r.body == b"slow done %d" % busy_pid
    wait_until(lambda: running(server) == 1, 10, what="down to cheaper = 1")


@pytest.mark.timeout(60)
def test_a_reload_keeps_the_count_the_pool_grew_to(uwsgigw_factory):
    server = start(uwsgigw_factory, "--cheaper-overload", "1")
    mark = server.log_mark()
    burst = [in_thread(raw_get, server.socket, "/slow?2", 30) for _ in range(6)]
    wait_until(lambda: running(server) >= 2, 15, what="grown to 2")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", since=mark, timeout=20)
    started = re.search(r"master \(pid \d+\) starting (\d) workers next to",
                        server.log_since(mark))
    assert started and int(started.group(1)) >= 2, server.log_since(mark)
    assert all(r is not None and r.status == 200 for r in (h.result(30) for h in burst))


# -- options ----------------------------------------------------------------------------

def check(tmp_path, text: str):
    path = tmp_path / "site.ini"
    path.write_text("[uwsgi]\nsocket = /tmp/x.sock\nmodule = m:app\nmaster = true\n" + text)
    return subprocess.run(uwsgigw_cmd("--ini", str(path), "--check"), capture_output=True,
                          text=True, timeout=60)


def test_cheaper_must_be_lower_than_processes(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(["--processes", "4", "--cheaper", "4", "--socket", "/tmp/x.sock", "--module", "m:app"], {})
    assert info.value.exit_code == exitcodes.CONFIG_ERROR
    assert info.value.messages == [
        "command line (--cheaper): cheaper = 4: must be lower than processes (4): cheaper is the "
        "fewest workers, processes the most"]
    result = check(tmp_path, "processes = 2\ncheaper = 2\n")
    assert result.returncode == 1
    assert "site.ini:6: cheaper = 2: must be lower than processes (2)" in result.stderr


@pytest.mark.parametrize("initial, fixed", [("1", 2), ("9", 4)])
def test_cheaper_initial_is_moved_into_its_range(initial, fixed):
    cfg = load(["--processes", "4", "--cheaper", "2", "--cheaper-initial", initial,
                "--socket", "/tmp/x.sock", "--module", "m:app"], {})
    assert cfg.cheaper_initial == fixed
    assert ["command line (--cheaper-initial): cheaper-initial = %s: must be from cheaper (2) to processes (4); "
            "starting %d workers" % (initial, fixed)] == cfg.warnings


@pytest.mark.parametrize("value", ["true", "0", "off"])
def test_cheaper_true_is_zero_as_in_uwsgi_and_starts_every_process(value, uwsgigw_factory):
    cfg = load(["--processes", "2", "--cheaper", value, "--socket", "/tmp/x.sock", "--module", "m:app"], {})
    assert cfg.cheaper == 0 and cfg.warnings == []
    if value != "true":
        return
    server = uwsgigw_factory("--module", APP, "--processes", "2", "--cheaper", "true")
    log = server.log_text()
    assert "cheaper mode is off: cheaper = 0; all 2 processes run (uWSGI reads a word " \
           "such as true as 0" in log
    assert "ready to accept requests: 2 workers" in log and "WARNING" not in \
        "".join(line for line in log.splitlines(True) if "cheaper" in line)


def test_bad_values_are_errors_naming_the_option(tmp_path):
    for text, expected in [("cheaper = many\n", "cheaper = 'many': expected"),
                           ("cheaper-step = 0\n", "cheaper-step = '0': expected"),
                           ("cheaper-overload = -1\n", "cheaper-overload = '-1': expected")]:
        result = check(tmp_path, "processes = 4\ncheaper = 1\n" + text
                       if not text.startswith("cheaper =") else "processes = 4\n" + text)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("algo, line, level", [
    ("busyness", "cheaper-algo = busyness runs as spare", "INFO"),
    ("spare2", "cheaper-algo = spare2 runs as spare", "INFO"),
    ("nosuch", "cheaper-algo = nosuch: no such cheaper algorithm; falling back to spare",
     "WARNING"),
])
def test_other_algorithms_run_as_spare_and_say_so(algo, line, level, uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--processes", "3", "--cheaper", "1",
                             "--cheaper-algo", algo)
    found = [entry for entry in server.log_text().splitlines() if line in entry]
    assert found and " %s " % level in found[0], server.log_text()
    assert "ready to accept requests: 1 worker" in server.log_text()


class KeepAliveLoop(ClientLoop):
    """Requests on one HTTP/1.1 connection, kept alive, a new one only when the
    server says Connection: close (as a retiring worker does); an error on a
    kept-alive connection counts as a lost request."""

    def __init__(self, port: int):
        self.port, self.reconnects = port, 0
        super().__init__("")

    def run(self) -> None:
        import http.client
        conn = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self.reconnects += 1
            try:
                conn.request("GET", "/pid")
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = None
                continue
            if r.status != 200:
                self.failures.append(r.status)
            else:
                self.done += 1
                self.pids.add(int(body.split()[0]))
            if r.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


@pytest.mark.timeout(90)
def test_keep_alive_http_clients_lose_nothing_while_the_pool_shrinks(uwsgigw_factory):
    server = start(uwsgigw_factory, "--cheaper-initial", "4", http=True)
    port = int(server.socket.rpartition(":")[2])
    loops = [KeepAliveLoop(port) for _ in range(2)]
    try:
        wait_until(lambda: running(server) == 1 and all(l.done > 20 for l in loops), 30,
                   what="down to cheaper = 1 under keep-alive clients")
    finally:
        for loop in loops:
            loop.stop()
    assert [l.failures for l in loops] == [[], []]
    log = server.log_text()
    for n in (4, 3, 2):
        assert "(%d -> %d of 4)" % (n, n - 1) in log, log


# -- the algorithm, sample by sample (a real scoreboard, the master's state) -------------

class Pool:
    """The part of the master cheaper.py reads and moves: its workers (on a real
    scoreboard), target, listeners and _retire. Worker pids are this process's
    (rss limits read /proc/<pid>/statm), told apart by worker id."""

    def __init__(self, running: int, threads: int = 1, pids=()):
        from uwsgigw.observe.scoreboard import Scoreboard
        self.board = Scoreboard(16, threads)
        self.workers, self.generation, self.target = {}, 1, running
        self.listeners, self.stopping, self.ready, self.spawn_disabled = [], "", True, ""
        self.worker_mercy, self.retired, self.pids = 60.0, [], list(pids)
        for wid in range(1, running + 1):
            self.add(wid)

    def add(self, wid: int):
        from uwsgigw.process.workerproc import WorkerProc
        index = self.board.allocate()
        self.board.reset(index, wid, 1)
        pid = self.pids.pop(0) if self.pids else 10**7 + wid  # real ones have an rss
        self.board.workers[index].pid = pid
        w = WorkerProc(pid, wid, index, 1, self.board, 0.0, booted=True)
        self.workers[w.pid] = w
        return w

    def busy(self, *wids: int, cores: int = 1) -> None:
        for w in self.workers.values():
            for i, core in enumerate(w.cores()):
                core.busy_since = 1.0 if w.id in wids and i < cores else 0.0

    def _retire(self, w, why: str, mercy: float) -> None:
        w.retiring = why
        self.retired.append(w.id)

    def settle(self) -> None:
        """What the master's _manage does next: fork up to target (lowest free ids)."""
        current = [w for w in self.workers.values() if not w.retiring]
        self.workers = {w.pid: w for w in current}
        used = {w.id for w in current}
        for wid in [i for i in range(1, 2 * self.target + 1) if i not in used][
                :self.target - len(current)]:
            self.add(wid)


def scaler(pool: Pool, **kw):
    from uwsgigw.process.cheaper import Cheaper
    target = pool.target
    args = dict(minimum=1, maximum=4, initial=target, step=1, overload=3.0)
    args.update(kw)
    return Cheaper(pool, **args)


def run(pool: Pool, cheaper, start: float, seconds: float) -> float:
    """Tick every period for ``seconds``, settling after each; -> the time reached."""
    now = start
    while now < start + seconds:
        cheaper.tick(now)
        pool.settle()
        now += cheaper.period
    return now


def test_grows_by_step_after_overload_seconds_of_busy_samples():
    pool = Pool(1)
    cheaper = scaler(pool, step=2)
    pool.busy(1)
    assert cheaper.period == 1.0 and cheaper.needed == 3  # uWSGI: 3 one-second cycles
    for now in (0.0, 1.0):
        cheaper.tick(now)
        assert pool.target == 1
    cheaper.tick(2.0)
    assert pool.target == 3  # cheaper-step 2
    pool.settle()
    pool.busy(1, 2, 3)
    run(pool, cheaper, 3.0, 3.0)
    assert pool.target == 4  # capped at processes


def test_a_calm_sample_takes_one_off_the_overload_count():
    pool = Pool(2)
    cheaper = scaler(pool)
    pool.busy(1, 2)
    cheaper.tick(0.0)
    cheaper.tick(1.0)
    pool.busy(1)  # one free for a sample: 2 -> 1
    cheaper.tick(2.0)
    pool.busy(1, 2)
    cheaper.tick(3.0)
    assert pool.target == 2
    cheaper.tick(4.0)
    assert pool.target == 3


def test_a_worker_with_a_free_thread_is_not_busy():
    pool = Pool(2, threads=2)
    cheaper = scaler(pool)
    pool.busy(1, 2, cores=1)
    run(pool, cheaper, 0.0, 10.0)
    assert pool.target == 2 and pool.retired == []  # two with a free core: no shrink...
    pool.busy(1, 2, cores=2)
    run(pool, cheaper, 10.0, 3.0)
    assert pool.target == 3  # ... all cores busy: grow


def test_shrinks_one_idle_worker_at_a_time_never_a_busy_one_keeping_a_spare():
    pool = Pool(4)
    cheaper = scaler(pool, overload=1.0)
    pool.busy(4, 3)
    run(pool, cheaper, 0.0, 5.0)
    assert pool.retired == [2] and pool.target == 3  # 1 and 2 idle: 2 goes, 1 is the spare
    pool.busy()
    now = run(pool, cheaper, 5.0, 0.9)
    assert pool.retired == [2]  # calm for less than cheaper-overload: not yet
    now = run(pool, cheaper, now, 1.2)
    assert pool.retired == [2, 4] and pool.target == 2  # the highest idle id
    run(pool, cheaper, now, 10.0)
    assert pool.retired == [2, 4, 3] and pool.target == 1  # and no further than cheaper


def test_overloaded_by_the_listen_queue_with_free_threads():
    pool = Pool(2, threads=2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        pool.listeners = [type("L", (), {"sock": server})()]
        clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
        try:
            cheaper = scaler(pool)
            wait_until(lambda: socket_queue(server)[0] == 3, 5, what="3 queued")
            pool.busy(1, cores=1)  # worker 2 idle: it takes them at once, no overload
            now = run(pool, cheaper, 0.0, 2.5)  # (shorter than calm's overload)
            assert pool.target == 2
            pool.busy(1, 2, cores=1)  # a free thread in each, but 3 connections wait
            run(pool, cheaper, now, 3.0)
            assert pool.target == 3
        finally:
            for c in clients:
                c.close()


def test_rss_limits():
    pool = Pool(2, pids=[os.getpid(), os.getppid()])
    cheaper = scaler(pool, rss_soft=1, overload=1.0)  # 1 byte: always at the limit
    pool.busy(1, 2)
    run(pool, cheaper, 0.0, 5.0)
    assert pool.target == 2  # busy, but no growth
    cheaper = scaler(pool, rss_hard=1, overload=1.0)
    pool.busy(1)
    run(pool, cheaper, 0.0, 5.0)
    assert pool.retired == [2] and pool.target == 1  # an idle one retired, down to one


def test_waits_while_starting_reloading_or_stopping():
    pool = Pool(2)
    cheaper = scaler(pool)
    pool.busy(1, 2)
    for change in ({"ready": False}, {"stopping": "graceful"}, {"spawn_disabled": "x"}):
        for key, value in change.items():
            setattr(pool, key, value)
        run(pool, cheaper, 0.0, 10.0)
        assert pool.target == 2
        pool.ready, pool.stopping, pool.spawn_disabled = True, "", ""
    next(iter(pool.workers.values())).booted = False  # a worker still importing
    run(pool, cheaper, 0.0, 10.0)
    assert pool.target == 2


def test_the_target_crosses_a_reload_within_bounds():
    pool = Pool(1)
    cheaper = scaler(pool)
    pool.target = 3
    assert cheaper.hand_over() == {"target": 3}
    fresh = Pool(1)
    again = scaler(fresh)
    again.adopt({"target": 3})
    assert fresh.target == 3
    again.adopt({"target": 99})
    assert fresh.target == 4
    again.adopt(None)
    assert fresh.target == 4
