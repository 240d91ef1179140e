"""max-worker-lifetime (process/lifetime.py), max-worker-lifetime-delta and
min-worker-lifetime (process/recycle.py) with the real master."""

from __future__ import annotations

import json
import time

import pytest
from test_master_support import APP, children, poll, raw_get, wait_workers
from test_touch_reload import Load

from uwsgigw.cli import load as load_config
from uwsgigw.config.settings import Config
from uwsgigw.process.lifetime import Lifetime
from uwsgigw.process.recycle import Limits

pytestmark = pytest.mark.timeout(120)


def test_the_limit_of_each_worker_is_uwsgis():
    """core/master_checks.c: worker N gets max-worker-lifetime + (N - 1) * delta."""
    lifetime = Lifetime(master=None, seconds=3600, delta=120)
    assert [lifetime.limit(n) for n in (1, 2, 3)] == [3600, 3720, 3840]
    assert Limits.from_config(Config.defaults(min_worker_lifetime=10), 1).too_young(9.9)
    assert not Limits.from_config(Config.defaults(min_worker_lifetime=10), 1).too_young(10)
    assert not Limits().too_young(0)


def test_lifetime_recycles_each_worker_with_its_reason_under_load(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--max-worker-lifetime", "2", "--max-worker-lifetime-delta", "2")
    first = wait_workers(server, 2)
    started = time.monotonic()
    load = Load(server.socket, "/pid", clients=3)
    try:
        log = server.wait_for_log("worker 1 (pid", "recycling: max-worker-lifetime 2s reached",
                                  "exited (max-worker-lifetime 2s reached; exit code 0)",
                                  timeout=15)
        one = time.monotonic() - started
        log = server.wait_for_log("recycling: max-worker-lifetime 4s reached",
                                  "exited (max-worker-lifetime 4s reached; exit code 0)",
                                  timeout=15)
        two = time.monotonic() - started
    finally:
        load.stop()
    assert load.failed == [], load.failed[:5]
    assert 1.5 < one < 5.0 and 3.5 < two < 8.0, (one, two)  # checked once a second
    line = next(l for l in log.splitlines() if "max-worker-lifetime 2s reached (ran" in l)
    assert " worker 1 (pid " in line and "its replacement starts first" in line
    assert int(line.split("(pid ")[1].split(")")[0]) in first
    # the replacement accepted before the old worker was told to stop
    old = int(line.split("(pid ")[1].split(")")[0])
    assert log.index("accepts: worker 1 (pid %d) stops" % old) < \
        log.index("worker 1 (pid %d) exited" % old)
    # and it goes on: the new workers recycle too, and the pool stays at 2
    assert len(wait_workers(server, 2)) == 2
    assert raw_get(server.socket, "/").status == 200


def test_lifetime_event_names_the_reason_in_json(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--max-worker-lifetime", "1",
                             "--log-json")
    server.wait_for_log('"event":"recycle"', "max-worker-lifetime 1s reached", timeout=15)
    events = [json.loads(l) for l in server.log_text().splitlines()
              if l.startswith("{") and '"type":"event"' in l]
    recycle = next(e for e in events if e["event"] == "recycle")
    assert recycle["reason"] == "max-worker-lifetime 1s reached" and recycle["worker"] == 1
    server.wait_for_log('"event":"death"', timeout=10)
    events = [json.loads(l) for l in server.log_text().splitlines()
              if l.startswith("{") and '"type":"event"' in l]
    death = next(e for e in events if e["event"] == "death")
    assert death["reason"] == "max-worker-lifetime 1s reached"
    assert death["worker_pid"] == recycle["worker_pid"]


def test_min_worker_lifetime_holds_back_max_requests(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--max-requests", "1",
                             "--min-worker-lifetime", "3")
    (first,) = wait_workers(server, 1)
    started = time.monotonic()
    # past max-requests, but younger than 3 s: the same worker answers
    pids = set()
    while time.monotonic() - started < 1.5:
        pids.add(int(raw_get(server.socket, "/pid").body.split()[0]))
    assert pids == {first}
    assert "recycling" not in server.log_text()
    time.sleep(max(0.0, 3.2 - (time.monotonic() - started)))
    assert int(raw_get(server.socket, "/pid").body.split()[0]) == first  # then it recycles
    server.wait_for_log("worker 1 (pid %d) recycling: max-requests 1 reached" % first,
                        "worker 1 (pid %d) stopped (recycled" % first)
    poll(lambda: children(server.pid) and first not in children(server.pid), 10, "respawn")


def test_max_requests_without_min_worker_lifetime_recycles_at_once(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--max-requests", "1")
    (first,) = wait_workers(server, 1)
    assert raw_get(server.socket, "/").status == 200
    server.wait_for_log("worker 1 (pid %d) recycling: max-requests 1 reached" % first)


def test_min_not_below_max_lifetime_is_warned_and_ignored():
    cfg = load_config(["--socket", "/tmp/x.sock", "--module", APP,
                       "--max-worker-lifetime", "5", "--min-worker-lifetime", "10"], {})
    assert cfg.min_worker_lifetime == 0
    assert any("min-worker-lifetime = 10 is not lower than max-worker-lifetime = 5" in w
               for w in cfg.warnings), cfg.warnings
    assert cfg.runs_master  # max-worker-lifetime needs the master, as in uWSGI
    cfg = load_config(["--socket", "/tmp/x.sock", "--module", APP,
                       "--max-worker-lifetime", "60", "--min-worker-lifetime", "10"], {})
    assert cfg.min_worker_lifetime == 10 and not cfg.warnings


def test_lifetime_values_in_an_ini_file(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = /tmp/x.sock\nmodule = %s\nmax-worker-lifetime = 3600"
                   "           ; Restart workers after this many seconds\n"
                   "max-worker-lifetime-delta = 120\ntouch-reload = %s\n"
                   "touch-chain-reload = %%p\n" % (APP, tmp_path / "reload"))
    cfg = load_config(["--ini", str(ini)], {})
    assert cfg.max_worker_lifetime == 3600 and cfg.max_worker_lifetime_delta == 120
    assert cfg.touch_reload == [str(tmp_path / "reload")]
    assert cfg.touch_chain_reload == [str(ini)]
    assert not [w for w in cfg.warnings if "lifetime" in w or "touch" in w], cfg.warnings
