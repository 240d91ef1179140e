"""`make soak`: mixed load through nginx with faults, then an accounting.

    python tests/soak/run_soak.py [--seconds 600] [--report /tmp/uwsgigw-soak/report.md]

For ``--seconds`` (default 600) client threads send a mix through nginx
(small GETs, 100 KB uploads spooled by post-buffering, 1 MB sized and 4 MB
streamed downloads) while a hostile thread sends mutated packets straight
to the uwsgi socket, and a fault schedule runs:

- every 45 s SIGHUP to the master (graceful reload: a fresh master image);
- every 20 s SIGKILL to a random worker;
- every 15 s a request that sleeps past ``harakiri`` (2 s).

At the end every failed request (a non-2xx status or a broken connection)
must be accounted for: a harakiri target itself, or a request in flight on
a worker at the moment it was SIGKILLed (at most ``threads`` per kill). The
master's RSS and open descriptors, sampled every 10 s, must stay flat. The
report goes to stdout and ``--report``; the exit status is 0 only if all of
that holds. Only loopback addresses are used; every process is stopped by
its pid (process group) at the end, also on failure.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
sys.path[:0] = [TESTS, REPO]

from uwsgigw.devnginx import can_connect, stop_process_group  # noqa: E402
from soak.procinfo import APP_FILE, children, fds, kb  # noqa: E402
from soak.load import LoadNginx  # noqa: E402
from fuzz.mutate import hostile_packets  # noqa: E402

HARAKIRI = 2
PROCESSES = 4
THREADS = 1
MIX = [  # (weight, method, path, body bytes)
    (70, "GET", "/ok", 0),
    (10, "POST", "/sink", 100_000),
    (10, "GET", "/sized?size=1048576", 0),
    (5, "GET", "/stream?size=4194304", 0),
    (5, "GET", "/sleep?s=0.2", 0),
]


@dataclass
class Outcome:
    started: float
    ended: float
    path: str
    status: int  # 0: the connection broke
    error: str = ""


@dataclass
class Events:
    kills: list = field(default_factory=list)  # (time, pid)
    reloads: list = field(default_factory=list)
    harakiri_sent: int = 0
    samples: list = field(default_factory=list)  # (time, rss kB, fds)
    hostile: int = 0


def request(port: int, method: str, path: str, body: bytes | None) -> Outcome:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        status = resp.status
        if status == 200 and path.startswith("/sized") and len(data) != 1048576:
            return Outcome(started, time.monotonic(), path, 0, "short body %d" % len(data))
        return Outcome(started, time.monotonic(), path, status)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(started, time.monotonic(), path, 0, repr(exc))
    finally:
        conn.close()


def client(port: int, stop: threading.Event, out: list, seed: int) -> None:
    rng = random.Random(seed)
    weights = [m[0] for m in MIX]
    bodies = {n: os.urandom(n) for _, _, _, n in MIX if n}
    while not stop.is_set():
        _, method, path, size = rng.choices(MIX, weights)[0]
        out.append(request(port, method, path, bodies.get(size)))


def hostile(sock_path: str, stop: threading.Event, events: Events) -> None:
    rng = random.Random(6)
    while not stop.is_set():
        for _, data in hostile_packets(rng, 50):
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(sock_path)
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
            except OSError:
                pass
            events.hostile += 1
        stop.wait(0.2)


def faults(master: int, port: int, stop: threading.Event, events: Events, out: list,
           seconds: float) -> None:
    started = time.monotonic()
    rng = random.Random(9)
    next_kill, next_hup, next_hara, next_sample = 20.0, 45.0, 15.0, 0.0
    while not stop.is_set():
        now = time.monotonic() - started
        if now >= next_sample:
            events.samples.append((now, kb(master, "VmRSS"), len(fds(master))))
            next_sample += 10
        if now >= next_kill:
            workers = sorted(children(master))
            if workers:
                pid = rng.choice(workers)
                events.kills.append((time.monotonic(), pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            next_kill += 20
        if now >= next_hup and now < seconds - 30:
            events.reloads.append(time.monotonic())
            os.kill(master, signal.SIGHUP)
            next_hup += 45
        if now >= next_hara:
            events.harakiri_sent += 1
            threading.Thread(target=lambda: out.append(
                request(port, "GET", "/sleep?s=%d" % (HARAKIRI * 5), None)),
                daemon=True).start()
            next_hara += 15
        stop.wait(0.2)


def account(outcomes: list, events: Events) -> tuple[dict, list]:
    """Attribute each failure to a harakiri target or a SIGKILL it overlapped."""
    causes = {"harakiri": 0, "sigkill": 0}
    per_kill: dict = {}
    unexplained = []
    for o in outcomes:
        if 200 <= o.status < 300:
            continue
        if o.path.startswith("/sleep?s=%d" % (HARAKIRI * 5)):
            causes["harakiri"] += 1
            continue
        kill = next((k for k in events.kills if o.started - 0.05 <= k[0] <= o.ended + 0.05),
                    None)
        if kill is not None and per_kill.get(kill, 0) < THREADS:
            per_kill[kill] = per_kill.get(kill, 0) + 1
            causes["sigkill"] += 1
            continue
        unexplained.append(o)
    return causes, unexplained


def flat(samples: list) -> tuple[bool, str]:
    if len(samples) < 6:
        return True, "too few samples"
    third = len(samples) // 3
    first, last = samples[:third], samples[-third:]
    rss_first = max(s[1] for s in first)
    rss_last = max(s[1] for s in last)
    fd_first = max(s[2] for s in first)
    fd_last = max(s[2] for s in last)
    ok = rss_last <= rss_first * 1.10 + 2048 and fd_last <= fd_first + 2
    return ok, ("master RSS %d -> %d kB (min %d, max %d), open fds %d -> %d (min %d, max %d)"
                % (rss_first, rss_last, min(s[1] for s in samples), max(s[1] for s in samples),
                   fd_first, fd_last, min(s[2] for s in samples), max(s[2] for s in samples)))


def start_server(workdir: str) -> tuple[subprocess.Popen, str, str]:
    sock = os.path.join(workdir, "soak.sock")
    log = os.path.join(workdir, "uwsgigw.log")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS]), PYTHONUNBUFFERED="1")
    for key in [k for k in env if k.startswith("UWSGIGW_")]:
        del env[key]
    cmd = [sys.executable, "-m", "uwsgigw", "--socket", sock, "--wsgi-file", APP_FILE,
           "--master", "--processes", str(PROCESSES), "--threads", str(THREADS),
           "--harakiri", str(HARAKIRI), "--post-buffering", "65536", "--max-requests",
           "20000", "--disable-logging", "--log-5xx", "--listen", "4096"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("uwsgigw exited at start-up:\n" + open(log).read())
        if "ready to accept requests" in open(log).read() and can_connect(socket.AF_UNIX, sock):
            return proc, sock, log
        time.sleep(0.05)
    stop_process_group(proc)
    raise SystemExit("uwsgigw not ready in 30 s:\n" + open(log).read())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get(
        "SOAK_SECONDS", "600")))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--report", default="/tmp/uwsgigw-soak/report.md")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="uwsgigw-soak-run-")
    proc = nginx = None
    status = 1
    try:
        proc, sock, log_path = start_server(workdir)
        nginx = LoadNginx(sock, workdir=os.path.join(workdir, "nginx"),
                          nginx_dir=os.path.join(REPO, "nginx"))
        os.makedirs(nginx.workdir)
        nginx.start()
        outcomes: list = []
        events = Events()
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(nginx.port, stop, outcomes, i),
                                    daemon=True) for i in range(args.clients)]
        threads.append(threading.Thread(target=hostile, args=(sock, stop, events), daemon=True))
        threads.append(threading.Thread(target=faults, args=(proc.pid, nginx.port, stop, events,
                                                             outcomes, args.seconds),
                                        daemon=True))
        print("soak: %d s, %d clients through nginx :%d, uwsgigw pid %d, log %s"
              % (args.seconds, args.clients, nginx.port, proc.pid, log_path), flush=True)
        started = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - started < args.seconds:
            time.sleep(min(10, args.seconds))
            print("  %4.0f s: %d requests" % (time.monotonic() - started, len(outcomes)),
                  flush=True)
        stop.set()
        for t in threads:
            t.join(90)
        time.sleep(HARAKIRI * 5 + 2)  # the last harakiri target comes back
        elapsed = time.monotonic() - started
        log_text = open(log_path, encoding="utf-8", errors="replace").read()
        status = report(args, outcomes, events, elapsed, log_text, proc, nginx)
        return status
    finally:
        if nginx is not None:
            nginx.stop()
        if proc is not None:
            stop_process_group(proc, signal.SIGTERM, 60)
        if status == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("logs kept in %s" % workdir)


def report(args, outcomes, events, elapsed, log_text, proc, nginx) -> int:
    statuses: dict = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    causes, unexplained = account(outcomes, events)
    is_flat, flat_text = flat(events.samples)
    harakiri_logged = log_text.count("HARAKIRI ON WORKER")
    tracebacks = log_text.count("Traceback")
    alive = proc.poll() is None
    lines = [
        "# uwsgigw soak",
        "",
        "- duration: %.0f s, %d client threads through nginx, %d workers x %d thread, "
        "harakiri %d s" % (elapsed, args.clients, PROCESSES, THREADS, HARAKIRI),
        "- requests: %d (%.0f/s); statuses: %s" % (len(outcomes), len(outcomes) / elapsed,
                                                   dict(sorted(statuses.items()))),
        "- hostile packets sent to the uwsgi socket meanwhile: %d" % events.hostile,
        "- faults: %d SIGHUP reloads, %d SIGKILLed workers, %d harakiri targets "
        "(%d HARAKIRI lines logged)" % (len(events.reloads), len(events.kills),
                                        events.harakiri_sent, harakiri_logged),
        "- failed requests: %d harakiri targets, %d in flight on a SIGKILLed worker, "
        "%d unexplained" % (causes["harakiri"], causes["sigkill"], len(unexplained)),
        "- %s (%d samples): %s" % (flat_text, len(events.samples),
                                   "flat" if is_flat else "GROWING"),
        "- tracebacks in the log: %d; master alive at the end: %s" % (tracebacks, alive),
    ]
    for o in unexplained[:20]:
        lines.append("  - unexplained: %s -> %s %s (%.2f-%.2f)" % (
            o.path, o.status, o.error, o.started, o.ended))
    ok = (not unexplained and is_flat and alive and tracebacks == 0 and
          causes["harakiri"] == events.harakiri_sent and outcomes)
    lines.append("")
    lines.append("RESULT: %s" % ("PASS" if ok else "FAIL"))
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "w") as f:
        f.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
