"""cron, unique-cron, cron2 and cron-harakiri (process/cron.py, cronsched.py,
config/cronspec.py).

The schedule is tested through an injected clock (any date, DST change or
gap, no waiting); the master is tested for real with the test-only clock
``_UWSGIGW_CRON_CLOCK`` (cronsched.Clock.from_env), running 60 times as fast:
a minute of the schedule per second. One test waits for a real minute
boundary (long_running, make soak).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import server_env, short_tmpdir, uwsgigw_cmd, wait_until
from test_master_support import APP
from test_stats import read_stats

from uwsgigw import exitcodes
from uwsgigw.config.cronspec import BadValue, CronSpec, canonical, parse_cron, parse_cron2
from uwsgigw.config.settings import ConfigError, build
from uwsgigw.process.cron import CronService, Job
from uwsgigw.process.cronsched import CLOCK_ENV, Clock, Schedule, ShiftedClock, matches

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "ini-corpus"
BERLIN = ZoneInfo("Europe/Berlin")
REAL_MINUTE = os.environ.get("UWSGIGW_LOAD_SECONDS")  # set by make soak


def spec(text: str) -> CronSpec:
    return parse_cron(text + " true")


# -- the lines -------------------------------------------------------------------------

def test_cron_lines_as_uwsgi_reads_them():
    s = parse_cron("-30 -1 -1 -1 -1 cd /pretix/src && python3 -m pretix runperiodic")
    assert (s.minute, s.hour, s.day, s.month, s.week) == (-30, -1, -1, -1, -1)
    assert s.command == "cd /pretix/src && python3 -m pretix runperiodic"
    assert spec("0 0 1 1 7") == spec("0 0 1 1 7")  # 7 is Sunday, kept as written
    assert spec("* */5 * * 0").schedule == "-1 -5 -1 -1 0"  # crontab's spelling
    assert canonical(parse_cron(" 5  4 -1 -1 -1   echo  a  b"), "cron") == "5 4 -1 -1 -1 echo  a  b"


@pytest.mark.parametrize("text, expected", [
    ("0 6-13 * * 1-5 job", "no ranges or lists (hour 6-13)"),
    ("1,31 -1 -1 -1 -1 job", "no ranges or lists (minute 1,31)"),
    ("60 -1 -1 -1 -1 job", "minute from 0 to 59"),
    ("0 0 0 -1 -1 job", "day from 1 to 31"),
    ("0 0 -1 13 -1 job", "month from 1 to 12"),
    ("0 0 -1 -1 8 job", "week from 0 to 7"),
    ("-1 -1 -1 -1 -1", "MINUTE HOUR DAY MONTH WEEKDAY COMMAND"),
    ("x -1 -1 -1 -1 job", "minute as a number"),
])
def test_malformed_cron_lines_say_why(text, expected):
    with pytest.raises(BadValue) as info:
        parse_cron(text)
    assert expected in info.value.expected


def test_cron2_keys():
    s = parse_cron2("minute=-15,unique=1 /usr/bin/foo --x")
    assert (s.minute, s.hour, s.unique, s.harakiri, s.command) == (-15, -1, True, None,
                                                                    "/usr/bin/foo --x")
    s = parse_cron2("hour=3,harakiri=0,command=echo a, b")
    assert (s.hour, s.harakiri, s.command) == (3, 0, "echo a, b")
    assert parse_cron2("/usr/bin/job").schedule == "-1 -1 -1 -1 -1"  # uWSGI: every minute
    assert parse_cron2(canonical(s, "cron2")) == s
    warned = []
    assert parse_cron2("legion=mycluster,minute=0 job", warned.append).legion == "mycluster"
    assert "legion" in warned[0] and "not run" in warned[0]
    for bad, expected in [("echo hi", "key=value,... COMMAND"), ("foo=1 job", "keys minute"),
                          ("minute=1", "a command"), ("harakiri=x job", "harakiri as a")]:
        with pytest.raises(BadValue, match=re.escape(expected)):
            parse_cron2(bad)


def test_a_malformed_line_stops_start_up_naming_the_option_and_line(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = :1\nunique-cron = 0 6-13 * * 1-5 ./job\n"
                   "cron = -5 -1 -1 -1 -1 ./ok\n")
    with pytest.raises(ConfigError) as info:
        build({"ini": [str(ini)]}, {})
    assert info.value.messages == [
        "%s:3: unique-cron = '0 6-13 * * 1-5 ./job': expected one number per field: uWSGI's "
        "cron has no ranges or lists (hour 6-13); write one cron line per value, or -N for "
        "every N" % ini]
    result = subprocess.run(uwsgigw_cmd("--ini", str(ini)), capture_output=True, text=True,
                            env=server_env(), timeout=60)
    assert result.returncode == exitcodes.CONFIG_ERROR
    assert "site.ini:3: unique-cron = '0 6-13 * * 1-5 ./job'" in result.stderr


def test_cron_options_start_a_master_and_legion_variants_stay_unsupported(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = :1\ncron = 0 3 -1 -1 -1 ./nightly\n"
                   "legion-cron = mycluster 0 3 -1 -1 -1 ./nightly\n")
    cfg = build({"ini": [str(ini)]}, {})
    assert cfg.runs_master and cfg.cron == ["0 3 -1 -1 -1 ./nightly"]
    assert any("'legion-cron' is a uWSGI option uwsgigw does not support" in w
               and "cron = on one host" in w for w in cfg.warnings)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/ini-corpus is not here")
def test_corpus_026_unique_crons():
    cfg = build({"ini": [str(next(CORPUS.glob("026-*.ini")))]}, {}, check=True)
    assert cfg.unique_cron[1] == "-15 -1 -1 -1 -1 ./manage.py runjobs quarter_hourly"
    assert len(cfg.unique_cron) == 7
    assert not [w for w in cfg.warnings if "cron" in w]


# -- matching (uWSGI's uwsgi_cron_task_needs_execution) ----------------------------------

def test_steps_are_multiples_as_in_uwsgi():
    at = datetime(2030, 1, 7, 10, 0)  # a Monday
    every15 = spec("-15 -1 -1 -1 -1")
    assert [m for m in range(60) if matches(every15, at.replace(minute=m))] == [0, 15, 30, 45]
    even_days = spec("0 0 -2 -1 -1")
    assert [d for d in range(1, 32) if matches(even_days, datetime(2030, 1, d))] == \
        list(range(2, 32, 2))  # uWSGI: day % 2 == 0 (crontab's */2 would be 1, 3, ...)
    quarterly = spec("0 0 1 -3 -1")
    assert [m for m in range(1, 13) if matches(quarterly, datetime(2030, m, 1))] == [3, 6, 9, 12]
    assert matches(spec("-1 -1 -1 -1 -1"), at)
    assert not matches(spec("0 11 -1 -1 -1"), at) and matches(spec("0 10 -1 -1 -1"), at)


def test_day_and_weekday():
    sunday, monday_1st = datetime(2030, 9, 1, 0, 0), datetime(2030, 4, 1, 0, 0)
    assert sunday.weekday() == 6 and monday_1st.weekday() == 0
    assert matches(spec("0 0 -1 -1 0"), sunday) and matches(spec("0 0 -1 -1 7"), sunday)
    assert not matches(spec("0 0 -1 -1 0"), monday_1st)
    # both given: either one (crontab's rule, uWSGI's too)
    assert matches(spec("0 0 15 -1 0"), sunday) and matches(spec("0 0 1 -1 3"), monday_1st)
    assert not matches(spec("0 0 15 -1 3"), sunday)
    # a step in either: both must match
    assert not matches(spec("0 0 -2 -1 0"), sunday)  # the 1st is odd
    assert matches(spec("0 0 -1 -1 -2"), sunday)  # Sunday is 0, a multiple of 2


# -- the schedule, through an injected clock -----------------------------------------------

class FakeClock:
    """A clock a test sets: epoch seconds, local time in ``tz``."""

    speed = 1.0

    def __init__(self, local: datetime, tz=BERLIN):
        self.tz = tz
        self.t = local.replace(tzinfo=tz).timestamp()

    def time(self) -> float:
        return self.t

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None)


def test_once_per_minute_however_often_it_looks():
    clock = FakeClock(datetime(2030, 1, 7, 9, 59, 30))
    schedule = Schedule([spec("-1 -1 -1 -1 -1"), spec("0 10 -1 -1 -1")], clock)
    assert schedule.step().run == [0]  # the minute it starts in, as uWSGI
    fired = []
    for _ in range(180):  # every half second for 90 seconds
        clock.t += 0.5
        step = schedule.step()
        if step:
            fired.append((step.minute.strftime("%H:%M"), step.run))
    assert fired == [("10:00", [0, 1]), ("10:01", [0])]
    assert schedule.until_next() == 60.0


def test_minutes_the_master_did_not_look_at_are_missed_or_run_late():
    clock = FakeClock(datetime(2030, 1, 7, 9, 58, 10))
    schedule = Schedule([spec("-1 -1 -1 -1 -1"), spec("0 10 -1 -1 -1"),
                         spec("-15 -1 -1 -1 -1")], clock)
    schedule.step()
    clock.t += 3 * 60  # 09:58 -> 10:01, busy in between
    step = schedule.step()
    assert step.gap == 2 and step.run == [0]
    assert step.missed == {0: (2, datetime(2030, 1, 7, 10, 0)),
                           1: (1, datetime(2030, 1, 7, 10, 0)),
                           2: (1, datetime(2030, 1, 7, 10, 0))}
    clock.t += 8 * 24 * 3600  # suspended for a week: not counted minute by minute
    step = schedule.step()
    assert step.run == [0] and not step.missed and "jumped" in step.note


def test_dst_spring_forward_runs_the_skipped_fixed_time_jobs_late():
    # Europe/Berlin, 2030-03-31: 02:00 CET is 03:00 CEST.
    clock = FakeClock(datetime(2030, 3, 31, 1, 59))
    schedule = Schedule([spec("30 2 -1 -1 -1"), spec("-1 -1 -1 -1 -1"),
                         spec("30 3 -1 -1 -1")], clock)
    schedule.step()
    clock.t += 60
    step = schedule.step()
    assert step.minute == datetime(2030, 3, 31, 3, 0)
    assert step.run == [1] and step.late == {0: datetime(2030, 3, 31, 2, 30)}
    assert not step.missed and step.gap == 0  # one real minute passed
    runs = []
    for _ in range(60):
        clock.t += 60
        step = schedule.step()
        runs += [(step.minute.strftime("%H:%M"), i) for i in step.run + list(step.late)]
    assert [r for r in runs if r[1] != 1] == [("03:30", 2)]  # 03:30 comes once, as usual
    assert len(runs) == 60 + 1


def test_dst_fall_back_runs_fixed_time_jobs_once_and_the_others_each_minute():
    # Europe/Berlin, 2030-10-27: 03:00 CEST is 02:00 CET; 02:00-02:59 comes twice.
    clock = FakeClock(datetime(2030, 10, 27, 1, 59))
    schedule = Schedule([spec("30 2 -1 -1 -1"), spec("-30 -1 -1 -1 -1")], clock)
    schedule.step()
    runs = {0: [], 1: []}
    for _ in range(180):  # 3 real hours, 2 of them on the wall clock
        clock.t += 60
        step = schedule.step()
        for i in step.run:
            runs[i].append(step.minute.strftime("%H:%M"))
        assert not step.missed and not step.late
    assert runs[0] == ["02:30"]
    assert runs[1] == ["02:00", "02:30", "02:00", "02:30", "03:00", "03:30"]


def test_a_clock_set_back_does_not_repeat_fixed_time_jobs():
    clock = FakeClock(datetime(2030, 1, 7, 9, 59, 50))
    schedule = Schedule([spec("0 10 -1 -1 -1"), spec("-1 -1 -1 -1 -1")], clock)
    schedule.step()
    clock.t += 20
    assert schedule.step().run == [0, 1]
    clock.t -= 120  # NTP or an operator sets it back two minutes
    step = schedule.step()
    assert "went back 2 minutes" in step.note and step.run == [1]
    clock.t += 120
    assert schedule.step().run == [1]  # 10:00 again: the fixed job already ran


def test_the_schedule_state_survives_a_reload():
    clock = FakeClock(datetime(2030, 1, 7, 10, 0, 5))
    first = Schedule([spec("0 10 -1 -1 -1")], clock)
    assert first.step().run == [0]
    clock.t += 20
    second = Schedule([spec("0 10 -1 -1 -1")], clock)  # the new image, same minute
    second.restore(first.state())
    assert not second.step()
    clock.t += 60
    step = second.step()
    assert step and step.run == [] and step.gap == 0


def test_a_short_gap_runs_the_missed_job_late_a_long_one_only_logs_it(capfd):
    """The service (cron.py) on the injected clock, with real /bin/sh children
    this test reaps itself, as the master's waitpid would."""
    clock = FakeClock(datetime(2030, 1, 7, 9, 58, 30))
    job = Job(1, "cron", parse_cron("0 10 -1 -1 -1 echo nightly $$"))
    service = CronService([job], clock, harakiri=0, mercy=1.0)
    service.tick(time.monotonic())  # 09:58: not due
    clock.t += 150  # 10:01: the master was busy for two minutes (a slow reload)
    service.tick(time.monotonic())
    pid = job.runs[0].pid
    assert service.fds() == [job.runs[0].fd]
    service.reaped(*os.waitpid(pid, 0))
    err = capfd.readouterr().err
    assert ("cron 1: missed its run due at 10:00 (the master was busy or suspended for 2 "
            "minutes); running it now, late") in err
    assert "[cron 1] nightly %d" % pid in err and "cron 1 (pid %d): exit code 0" % pid in err
    assert not service.fds() and not service.busy()
    clock.t += 24 * 3600 - 120  # the next day, 09:59
    service.tick(time.monotonic())
    clock.t += 10 * 60  # 10:09: ten minutes without a look
    service.tick(time.monotonic())
    err = capfd.readouterr().err
    assert ("cron 1: 1 run missed (the master was busy or suspended for 9 minutes; last due "
            "2030-01-08 10:00); not run") in err
    assert not job.runs and job.missed == 2 and job.started == 1
    assert service.stats()[0]["missed"] == 2


def test_a_job_gets_no_descriptor_but_its_own(capfd):
    """stdin /dev/null, stdout and stderr the pipe to the log, nothing else:
    not what the master inherited from whoever started it."""
    r, w = os.pipe()
    os.set_inheritable(w, True)  # as a shell or CI runner may leave one
    try:
        job = Job(1, "cron", parse_cron("-1 -1 -1 -1 -1 exec ls /proc/self/fd"))
        service = CronService([job], FakeClock(datetime(2030, 1, 7, 10, 0)), 0, 1.0)
        service.tick(time.monotonic())
        service.reaped(*os.waitpid(job.runs[0].pid, 0))
    finally:
        os.close(r)
        os.close(w)
    listed = re.findall(r"\[cron 1\] (\d+)", capfd.readouterr().err)
    assert listed == ["0", "1", "2", "3"]  # 3: ls's own look at the directory


def test_the_test_clock_comes_only_from_its_variable():
    assert type(Clock.from_env({})) is Clock
    clock = Clock.from_env({CLOCK_ENV: "%f 1893456000 60" % time.time()})  # 2030-01-01 UTC
    assert isinstance(clock, ShiftedClock) and clock.speed == 60
    assert 1893456000 <= clock.time() < 1893456000 + 60
    with pytest.raises(ValueError, match="REAL0 START SPEED"):
        Clock.from_env({CLOCK_ENV: "soon"})


# -- the real master, on the test clock -----------------------------------------------------

def clock_env(start: datetime, speed: float = 60.0) -> dict:
    """The server's environment for a clock that reads ``start`` (UTC) now."""
    return {CLOCK_ENV: "%f %f %g" % (time.time(), start.replace(tzinfo=timezone.utc).timestamp(),
                                     speed), "TZ": "UTC"}


def start(factories, tmp_path, lines: list[str], when=datetime(2030, 1, 7, 9, 59, 58),
          speed: float = 60.0, **kw):
    ini = tmp_path / "cron.ini"
    sock = os.path.join(short_tmpdir(), "s.sock")
    ini.write_text("[uwsgi]\nsocket = %s\nmodule = %s\nmaster = true\n%s\n"
                   % (sock, APP, "\n".join(lines)))
    return factories.uwsgigw("--ini", str(ini), socket=sock, env=clock_env(when, speed),
                             cwd=str(tmp_path), **kw)


def pid_of(line_start: str, text: str) -> int:
    return int(re.search(re.escape(line_start) + r'.*\(pid (\d+)\)', text).group(1))


def in_group(pgid: int) -> list[int]:
    """The pids whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_jobs_run_log_their_output_and_status_skip_overlap_and_harakiri(factories, tmp_path):
    stats = os.path.join(short_tmpdir(), "stats.sock")
    server = start(factories, tmp_path, [
        "stats = %s" % stats,
        "cron-harakiri = 1",
        'cron = -1 -1 -1 -1 -1 echo "out $$ in $PWD"; echo "err $$" >&2; exit 3',
        'cron = -5 -1 -1 -1 -1 echo "hk $$"; sleep 30; echo never',
        'cron2 = minute=-1,unique=1,harakiri=0 echo "u-start $$"; sleep 2.5; echo "u-end $$"',
        "cron2 = harakiri=0 sleep 1.5",
        "cron2 = legion=cluster echo legion-ran",
    ])
    log = server.wait_for_log("cron 1: running", "cron 3: skipped", "cron 4: the run started",
                              "cron 2 (pid", "killed by signal 9", timeout=20)
    out = pid_of("cron 1: running", log)
    log = server.wait_for_log("[cron 1] out %d in %s" % (out, tmp_path), "[cron 1] err %d" % out,
                              "cron 1 (pid %d): exit code 3 after" % out)
    assert re.search(r"WARNING cron 4: the run started at \S+ \(pid \d+\) is still going; "
                     r"starting another", log)
    # cron-harakiri: the shell and its sleep, its whole process group
    hk = pid_of("cron 2: running", log)
    server.wait_for_log("cron 2 (pid %d): cron-harakiri: running for more than 1s; killing "
                        "its process group" % hk,
                        "cron 2 (pid %d): killed by signal 9 (SIGKILL) (cron-harakiri" % hk)
    assert "[cron 2] hk %d" % hk in server.log_text()
    assert "[cron 2] never" not in server.log_text()
    wait_until(lambda: not in_group(hk), 5, what="the harakiri'd sleep gone")
    # unique: never two runs at once, each skip logged
    log = server.wait_for_log("cron 3 (pid", "exit code 0", timeout=10)
    events = re.findall(r"cron 3: running .*\(pid (\d+)\)|cron 3 \(pid (\d+)\): exit code 0"
                        r"|cron 3: skipped: the run started at \S+ \(pid (\d+)\)", log)
    running = None
    for started, ended, skipped_for in events:
        if started:
            assert running is None, log
            running = started
        elif ended:
            assert ended == running
            running = None
        else:
            assert skipped_for == running
    u = pid_of("cron 3: running", log)
    assert "[cron 3] u-start %d" % u in log
    server.wait_for_log("[cron 3] u-end %d" % u)
    # a legion job: warned about at start-up, never run
    assert "cron2 = 'legion=cluster echo legion-ran': legion=cluster: uWSGI's legion" in log
    assert "cron 5" not in server.log_text()
    doc = wait_until(lambda: (lambda d: d if d["crons"][0]["last_status"] else None)(
        read_stats(stats)), 5, what="a finished run in the stats")
    first, second, third, fourth, fifth = doc["crons"]
    assert fifth["legion"] == "cluster" and fifth["runs"] == 0
    assert first["command"].startswith('echo "out $$') and first["schedule"] == "-1 -1 -1 -1 -1"
    assert first["last_status"] == "exit code 3" and first["last_code"] == 3
    assert time.time() - 60 < first["last_run"] <= time.time()
    assert second["harakiri"] == 1 and second["schedule"] == "-5 -1 -1 -1 -1"
    assert third["unique"] is True and third["harakiri"] == 0 and third["option"] == "cron2"
    assert third["skipped"] >= 1 and fourth["runs"] >= 2
    assert all(set(job) >= {"command", "schedule", "last_run", "last_status", "pid"}
               for job in doc["crons"])


def test_a_reload_hands_running_jobs_to_the_new_image(factories, tmp_path):
    """Jobs outlive the SIGHUP re-exec: the new image reads their output, reaps
    them, keeps skipping a unique job's next run while it runs, enforces
    cron-harakiri, and does not run a job again in the minute it already ran.
    A minute lasts 5 s here (speed 12), so the reload fits in the first one.
    (Jobs are numbered cron lines first, then unique-cron, then cron2.)"""
    server = start(factories, tmp_path, [
        'unique-cron = -1 -1 -1 -1 -1 echo "start $$"; sleep 7; echo "done $$"',
        'cron2 = minute=-1,unique=1,harakiri=4 echo "h $$"; sleep 30',
        "cron = 0 10 -1 -1 -1 echo ten",
    ], when=datetime(2030, 1, 7, 10, 0, 0), speed=12)
    log = server.wait_for_log("cron 2: running", "cron 3: running", "[cron 1] ten", timeout=20)
    job, hk = pid_of("cron 2: running", log), pid_of("cron 3: running", log)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", since=mark, timeout=20)
    after = server.wait_for_log("[cron 2] done %d" % job, "cron 2 (pid %d): exit code 0" % job,
                                since=mark, timeout=15)
    new_image = after.split("reloading")[1]
    assert "cron 2: skipped: the run started at" in new_image  # 10:01, while it still ran
    before_end = after.split("cron 2 (pid %d): exit code 0" % job)[0]
    assert "cron 2: running" not in before_end  # never two at once
    after = server.wait_for_log("cron 3 (pid %d): cron-harakiri: running for more than 4s" % hk,
                                "cron 3 (pid %d): killed by signal 9" % hk, since=mark)
    assert "reloading" in after.split("cron-harakiri")[0]  # the new image killed it
    assert server.log_text().count("cron 1: running") == 1  # 10:00 once, not again after


def test_stopping_stops_the_jobs_and_leaves_no_process(factories, tmp_path):
    server = start(factories, tmp_path, [
        "reload-mercy = 1",
        "cron = -1 -1 -1 -1 -1 trap '' TERM; sleep 60 & echo ready $$; wait",
    ])
    log = server.wait_for_log("[cron 1] ready", timeout=20)
    job = pid_of("cron 1: running", log)
    group = in_group(job)
    assert len(group) == 2  # the shell and its sleep
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    log = server.log_text()
    assert "cron 1 (pid %d): stopping it (SIGTERM to its process group)" % job in log
    assert "did not stop within 1s of SIGTERM; killing its process group" in log
    assert not in_group(job)


def test_log_json_events(factories, tmp_path):
    import json

    def unique_keys(pairs):
        assert len({k for k, _ in pairs}) == len(pairs), pairs
        return dict(pairs)

    server = start(factories, tmp_path, ["log-json = true",
                                         'cron = -1 -1 -1 -1 -1 echo "said \\"so\\""; exit 2'])
    server.wait_for_log("exit code 2 after")
    events = [json.loads(line, object_pairs_hook=unique_keys)
              for line in server.log_text().splitlines() if '"event":"cron"' in line]
    started, said, ended = events[:3]
    assert started["msg"].startswith("cron 1: running") and started["job"] == 1
    assert said["msg"] == '[cron 1] said "so"' and said["output"] is True
    assert said["job_pid"] == started["job_pid"] == ended["job_pid"] != ended["pid"]
    assert ended["level"] == "warning" and ended["code"] == 2 and ended["status"] == "exit code 2"


@pytest.mark.long_running
@pytest.mark.skipif(not REAL_MINUTE, reason="long: a real minute boundary (make soak)")
def test_a_job_fires_at_a_real_minute_boundary(factories, tmp_path):
    ini = tmp_path / "cron.ini"
    sock = os.path.join(short_tmpdir(), "s.sock")
    ini.write_text("[uwsgi]\nsocket = %s\nmodule = %s\nmaster = true\n"
                   "cron = -1 -1 -1 -1 -1 date +%%%%S.%%%%N\n" % (sock, APP))  # %% in INI: %
    server = factories.uwsgigw("--ini", str(ini), socket=sock, cwd=str(tmp_path))
    # the first run is in the minute it started in; the next at the boundary
    runs = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(
        re.findall(r"\[cron 1\] (\d+\.\d+)", server.log_text())), 75, what="two runs")
    print("\nthe second run's date +%%S.%%N: %s" % runs[1])
    assert float(runs[1]) < 2.0, server.log_text()  # within two seconds of hh:mm:00
    assert server.log_text().count("cron 1: running") == 2
