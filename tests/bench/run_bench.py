"""`make bench`: uwsgigw vs uWSGI vs Gunicorn behind the same nginx, under wrk,
then the HTTP listener vs uWSGI, Granian, Gunicorn, Uvicorn (bench_http.py), then
static files vs nginx, uWSGI's static-map and Granian's static route (bench_static.py).

    python tests/bench/run_bench.py                 # full run (about 20 minutes)
    python tests/bench/run_bench.py --quick         # 1 round, 2 s per run
    python tests/bench/run_bench.py --only http     # the HTTP part alone (issue 14)
    python tests/bench/run_bench.py --only static   # the static-file part alone (issue 15)
    python tests/bench/run_bench.py --workloads hello,flask --servers uwsgigw,uwsgi

Each server runs the same app (tests/bench/apps.py) with 2 workers and a
master on a unix socket; one nginx (1 worker, access_log off) has a port per
server and ``uwsgi_pass``es to it; wrk drives it over loopback. A run is one
(server, workload): start the server, check one response, warm up, measure,
stop. Rounds repeat every run with the server order rotated, so drift of
the machine (and other load on it) hits every server alike; the table shows
the median over rounds. See tests/bench/README.md for how to read it.

Must run where nginx can reach the sockets (the bench writes ``user root;``
and is meant to run as root, as `make bench` does).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http  # noqa: E402
import bench_static  # noqa: E402
import bench_static_servers  # noqa: E402
import bench_procs as procs  # noqa: E402
from bench_procs import free_port, port_open, rotate  # noqa: E402
import bench_servers as servers  # noqa: E402
import bench_report as report  # noqa: E402


@dataclass(frozen=True)
class Workload:
    name: str
    app: str            # module:callable under tests/bench
    path: str
    body_size: int      # > 0: POST this many bytes
    what: str

    def check(self, status: int, body: bytes, sent: bytes) -> str | None:
        """None if the response is right, else what is wrong with it."""
        if status != 200:
            return "status %d: %r" % (status, body[:200])
        expected = {
            "hello": lambda: body == b"Hello, World!\n",
            "flask": lambda: json.loads(body).get("message") == "Hello, World!",
            "post64k": lambda: body == sent,
            "resp1m": lambda: len(body) == 1024 * 1024,
            "upload20m": lambda: body == b"%d\n" % self.body_size,
        }[self.name]
        return None if expected() else "unexpected body (%d bytes): %r" % (len(body), body[:80])


WORKLOADS = {w.name: w for w in (
    Workload("hello", "apps:hello", "/hello", 0, "hello world, 14-byte body"),
    Workload("flask", "bench_flask:app", "/json?x=1", 0, "Flask JSON endpoint"),
    Workload("post64k", "apps:echo", "/echo", 64 * 1024, "64 KB POST echoed back"),
    Workload("resp1m", "apps:big", "/big", 0, "1 MB response"),
    Workload("upload20m", "apps:upload", "/upload", 20 * 1024 * 1024,
             "20 MB upload read in 64 KB chunks (post-buffering 64 KB)"),
)}

WRK_SCRIPT = """\
%(setup)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHRESULT requests=%%.0f duration_us=%%.0f bytes=%%.0f errors=%%.0f "
    .. "status_errors=%%.0f p50_us=%%.1f p99_us=%%.1f\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

POST_SETUP = """\
wrk.method = "POST"
wrk.body = string.rep("a", %d)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


class BenchError(RuntimeError):
    pass


class Bench:
    def __init__(self, args, workdir: str, registry: procs.Registry) -> None:
        self.args = args
        self.workdir = workdir
        self.registry = registry
        self.ports: dict[str, int] = {}
        self.nginx: procs.Managed | None = None
        self.gunicorn_uwsgi = ("gunicorn" in args.servers and not args.gunicorn_proxy
                               and servers.gunicorn_has_uwsgi_protocol())
        self.notes: dict[str, str] = {}
        self.decoder: str | None = None

    # --- nginx -------------------------------------------------------------

    def start_nginx(self) -> None:
        upstreams = {}
        for name in self.args.servers:
            self.ports[name] = free_port()
            speaks_uwsgi = name != "gunicorn" or self.gunicorn_uwsgi
            upstreams[name] = (self.ports[name], self.sock(name), speaks_uwsgi)
        conf = os.path.join(self.workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(servers.nginx_conf(self.workdir, upstreams))
        log = os.path.join(self.workdir, "nginx-error.log")
        self.nginx = self.registry.start(
            "nginx", [servers.find_nginx(), "-c", conf, "-p", self.workdir, "-e", log],
            stop_signal=signal.SIGTERM, log_path=os.path.join(self.workdir, "nginx.out"))
        deadline = time.monotonic() + 15
        for port in self.ports.values():
            while not port_open(port):
                if not self.nginx.alive() or time.monotonic() > deadline:
                    raise BenchError("nginx did not start:\n" + tail(log))
                time.sleep(0.05)

    def sock(self, server: str) -> str:
        return os.path.join(self.workdir, server + ".sock")

    # --- one run -----------------------------------------------------------

    def launch(self, server: str, wl: Workload, log_requests: bool, server_log: str):
        sock = self.sock(server)
        if server == "uwsgi":
            return servers.uwsgi_launch(wl.app, sock, log_requests, server_log, self.workdir)
        if server == "gunicorn":
            return servers.gunicorn_launch(wl.app, sock, log_requests, server_log,
                                           self.workdir, self.gunicorn_uwsgi)
        return servers.uwsgigw_launch(wl.app, sock, log_requests, server_log, self.workdir,
                                      self.args.uwsgigw_launch, self.workdir)

    def run_one(self, server: str, wl: Workload, log_requests: bool, rnd: int) -> dict:
        tag = "%s-%s-%s-r%d" % (server, wl.name, "log" if log_requests else "nolog", rnd)
        server_log = os.path.join(self.workdir, tag + ".log")
        sock = self.sock(server)
        if os.path.exists(sock):
            os.unlink(sock)
        launch = self.launch(server, wl, log_requests, server_log)
        if launch.note:
            self.notes[server] = launch.note
        proc = self.registry.start(server, launch.argv, stop_signal=launch.stop_signal,
                                   env=launch.env, cwd=self.workdir, log_path=server_log)
        try:
            self.wait_ready(proc, wl)
            self.on_ready(server, proc, server_log)
            script = self.wrk_script(wl)
            url = "http://127.0.0.1:%d%s" % (self.ports[server], wl.path)
            if self.args.warmup > 0:
                self.wrk(script, url, self.args.warmup)
            busy0, kids0 = procs.machine_busy_seconds(), os.times()
            cpu0 = procs.tree_cpu_seconds(proc.pid)
            ngx0 = procs.tree_cpu_seconds(self.nginx.pid)
            res = self.wrk(script, url, self.args.duration)
            cpu1 = procs.tree_cpu_seconds(proc.pid)
            ngx1 = procs.tree_cpu_seconds(self.nginx.pid)
            busy1, kids1 = procs.machine_busy_seconds(), os.times()
            nprocs = 1 + len(procs.descendants(proc.pid))
            pss = procs.mean_worker_pss_mb(proc.pid)
            if not proc.alive():
                raise BenchError("%s exited during the run:\n%s" % (server, proc.log_tail()))
        except Exception:
            print("--- %s log (%s) ---\n%s" % (server, server_log, proc.log_tail()),
                  file=sys.stderr)
            raise
        finally:
            self.registry.stop(proc)
        if not self.args.keep_workdir and os.path.exists(server_log):
            os.unlink(server_log)  # request logs of a hello run reach tens of MB
        n = max(res["requests"], 1)
        seconds = res["duration_us"] / 1e6
        # CPU the rest of the machine used meanwhile (other jobs on a shared
        # box): all busy time minus server, nginx and wrk (the only child
        # reaped in between), as % of one CPU. High values mean noisy numbers.
        wrk_cpu = (kids1.children_user + kids1.children_system
                   - kids0.children_user - kids0.children_system)
        other = (busy1 - busy0) - (cpu1 - cpu0) - (ngx1 - ngx0) - wrk_cpu
        return {
            "rps": res["requests"] / seconds,
            "p50": res["p50_us"] / 1000.0,
            "p99": res["p99_us"] / 1000.0,
            "cpu": (cpu1 - cpu0) / n * 1e6,
            "nginx_cpu": (ngx1 - ngx0) / n * 1e6,
            "pss": pss,
            "other": max(0.0, other) / seconds * 100,
            "errors": int(res["errors"] + res["status_errors"]),
            "requests": int(res["requests"]),
            "cpu_s": cpu1 - cpu0,   # for the tick-resolution bound of the A/B report
            "nprocs": nprocs,
        }

    def on_ready(self, server: str, proc: procs.Managed, server_log: str) -> None:
        """Called once the server answers right, before the load."""
        if server == "uwsgigw" and self.decoder is None:
            self.decoder = servers.decoder_from_log(server_log)

    def wait_ready(self, proc: procs.Managed, wl: Workload) -> None:
        """Until one real request through nginx answers right (30 s at most)."""
        sent = b"a" * wl.body_size
        deadline = time.monotonic() + 30
        problem = "no answer"
        while time.monotonic() < deadline:
            if not proc.alive():
                raise BenchError("%s exited at start-up:\n%s" % (proc.name, proc.log_tail()))
            try:
                status, body = http_request(self.ports[proc.name], wl.path, sent or None)
            except OSError as exc:
                problem = str(exc)
            else:
                problem = wl.check(status, body, sent)
                if problem is None:
                    return
                if status != 502:  # 502: nginx found no socket yet; anything else is real
                    break
            time.sleep(0.1)
        raise BenchError("%s does not serve %s correctly: %s\n%s" % (
            proc.name, wl.name, problem, proc.log_tail()))

    def wrk_script(self, wl: Workload) -> str:
        path = os.path.join(self.workdir, "wrk-%s.lua" % wl.name)
        if not os.path.exists(path):
            setup = POST_SETUP % wl.body_size if wl.body_size else ""
            with open(path, "w") as f:
                f.write(WRK_SCRIPT % {"setup": setup})
        return path

    def wrk(self, script: str, url: str, seconds: float) -> dict:
        argv = ["wrk", "-t%d" % self.args.threads, "-c%d" % self.args.connections,
                "-d%ds" % max(1, int(seconds)), "--timeout", "10s", "-s", script, url]
        try:
            out = subprocess.run(argv, capture_output=True, text=True,
                                 timeout=seconds + 60).stdout
        except subprocess.TimeoutExpired:
            raise BenchError("wrk did not finish: %s" % shlex.join(argv)) from None
        match = re.search(r"BENCHRESULT (.*)", out)
        if not match:
            raise BenchError("no result from wrk (%s):\n%s" % (shlex.join(argv), out))
        return {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


# --- helpers ------------------------------------------------------------------

def http_request(port: int, path: str, body: bytes | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        conn.request("POST" if body else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return "(no %s)" % path


def make_plan(args) -> list[tuple[bool, int, str, str]]:
    """(log on?, round, workload, server), server order rotated every round."""
    plan = []
    for rnd in range(args.rounds):
        for wl in args.workloads:
            for server in rotate(args.servers, rnd):
                plan.append((True, rnd, wl, server))
    for rnd in range(args.log_off_rounds):
        for wl in args.log_off_workloads:
            for server in rotate(args.servers, rnd):
                plan.append((False, rnd, wl, server))
    return plan


def bench_workdir(explicit: str | None) -> str:
    if explicit:
        os.makedirs(explicit, exist_ok=True)
        return explicit
    # tmpfs when there is one: nginx spools 20 MB uploads and post-buffering
    # writes temp files; a disk there would measure the disk.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="uwsgigw-bench-", dir=base)


FULL = {"rounds": 3, "duration": 5, "warmup": 1, "log_off_rounds": 2}
QUICK = {"rounds": 1, "duration": 2, "warmup": 1, "log_off_rounds": 1}


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 1 round, 2 s per run, 1 log-off round")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma list of %s" % ", ".join(WORKLOADS))
    p.add_argument("--servers", default=",".join(servers.SERVERS),
                   help="comma list of uwsgigw, uwsgi, gunicorn")
    p.add_argument("--duration", type=int, help="seconds measured per run (5; quick 2)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up per run (1)")
    p.add_argument("--rounds", type=int, help="rounds of every run (3; quick 1)")
    p.add_argument("--connections", type=int, default=16, help="wrk -c")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--log-off-workloads", default="hello",
                   help="workloads also run with request logging off ('' for none)")
    p.add_argument("--log-off-rounds", type=int, help="(2; quick 1)")
    p.add_argument("--uwsgigw-launch", choices=("auto", "cli", "serve"), default="auto",
                   help="python -m uwsgigw (cli) or uwsgigw.server.serve (serve)")
    p.add_argument("--gunicorn-proxy", action="store_true",
                   help="run Gunicorn over HTTP behind proxy_pass even if it has "
                        "--protocol uwsgi (what older releases get)")
    p.add_argument("--no-decoder", action="store_true", help="skip the decoder microbenchmark")
    p.add_argument("--only", choices=("uwsgi", "http", "static"),
                   help="run only the uwsgi_pass part (issue 7), the HTTP part "
                        "(issue 14, bench_http.py) or the static-file part (issue 15, "
                        "bench_static.py); default: all three")
    p.add_argument("--static-peers", default=",".join(bench_static_servers.PEERS),
                   help="static part: comma list of %s" % ", ".join(bench_static_servers.PEERS))
    p.add_argument("--http-parts", default=",".join(bench_http.PARTS),
                   help="HTTP part: comma list of %s" % ", ".join(bench_http.PARTS))
    p.add_argument("--http-connections", type=int, default=16,
                   help="HTTP part: wrk -c for the direct/nginx/asgi runs")
    p.add_argument("--crowd-idle", type=int, default=200,
                   help="HTTP part: idle keep-alive connections of the crowd")
    p.add_argument("--crowd-slow", type=int, default=50,
                   help="HTTP part: slow-header clients of the crowd")
    p.add_argument("--ws-clients", type=int, default=2,
                   help="HTTP part: WebSocket load client processes")
    p.add_argument("--ws-connections", type=int, default=32,
                   help="HTTP part: WebSocket connections, over all client processes")
    p.add_argument("--ws-window", type=int, default=8,
                   help="HTTP part: WebSocket messages in flight per connection")
    p.add_argument("--out", default="/tmp/uwsgigw-bench/report.md")
    p.add_argument("--workdir", help="default: a fresh dir in /dev/shm, removed at the end")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and server logs")
    args = p.parse_args(argv)
    # --quick changes the defaults; options given explicitly still win.
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.servers = [s for s in args.servers.split(",") if s]
    args.log_off_workloads = [w for w in args.log_off_workloads.split(",") if w]
    args.http_parts = [w for w in args.http_parts.split(",") if w]
    args.static_peers = [w for w in args.static_peers.split(",") if w]
    for peer in args.static_peers:
        if peer not in bench_static_servers.PEERS:
            p.error("unknown static peer %r (choose from %s)" % (
                peer, ", ".join(bench_static_servers.PEERS)))
    for part in args.http_parts:
        if part not in bench_http.PARTS:
            p.error("unknown HTTP part %r (choose from %s)" % (
                part, ", ".join(bench_http.PARTS)))
    for w in args.workloads + args.log_off_workloads:
        if w not in WORKLOADS:
            p.error("unknown workload %r (choose from %s)" % (w, ", ".join(WORKLOADS)))
    for s in args.servers:
        if s not in servers.SERVERS:
            p.error("unknown server %r" % s)
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    return args


def preflight(args) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    only = getattr(args, "only", "uwsgi")  # bench_ab.py's args have no --only
    if only in (None, "uwsgi"):
        servers.check_installed(args.servers)
    if only in (None, "http"):
        bench_http.preflight(args)
    if only in (None, "static"):
        bench_static.preflight(args)
    if os.geteuid() != 0:
        print("warning: not root; nginx's `user root;` is ignored and it must be able "
              "to reach the sockets as you", file=sys.stderr)


def progress_line(i: int, n: int, wl_name: str, server: str, log_on: bool, r: dict) -> str:
    return ("[%d/%d] %-9s %-12s log %-3s  %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  "
            "cpu %7.1f us/req  pss %s MB  other %3.0f%%%s" % (
                i, n, wl_name, server, "on" if log_on else "off", r["rps"],
                r["p50"], r["p99"], r["cpu"],
                "%.1f" % r["pss"] if r["pss"] is not None else "?", r["other"],
                "  ERRORS %d" % r["errors"] if r["errors"] else ""))


def run_plan(args, plan, bench_factory=Bench):
    """Start nginx, run every (log on?, round, workload, server) of ``plan``,
    stop everything. Returns (bench, results), or an exit status if it failed.
    results: (log on?, workload, server) -> one dict per round, in plan order."""
    registry = procs.Registry()
    workdir = bench_workdir(args.workdir)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    # Ctrl-C must stop the bench even when started with SIGINT ignored (a
    # background job of a non-interactive shell): servers would outlive it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    results: dict[tuple[bool, str, str], list[dict]] = {}
    try:
        bench = bench_factory(args, workdir, registry)
        bench.start_nginx()
        for i, (log_on, rnd, wl_name, server) in enumerate(plan, 1):
            r = bench.run_one(server, WORKLOADS[wl_name], log_on, rnd)
            results.setdefault((log_on, wl_name, server), []).append(r)
            print(progress_line(i, len(plan), wl_name, server, log_on, r), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: stopping everything the bench started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print("bench failed: %s" % exc, file=sys.stderr)
        return 1
    finally:
        registry.stop_all()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("workdir kept: %s" % workdir, file=sys.stderr)
    return bench, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args)
    command = shlex.join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    load_before = os.getloadavg()
    started = time.time()
    bench, results = None, {}
    decoder_text, decoder_ratios = "", {}
    if args.only in (None, "uwsgi"):
        done = run_plan(args, make_plan(args))
        if isinstance(done, int):
            return done
        bench, results = done
        if not args.no_decoder:
            import decoder_bench
            decoder_results = decoder_bench.measure(quick=args.quick)
            decoder_text = decoder_bench.format_markdown(decoder_results)
            decoder_ratios = decoder_bench.ratios(decoder_results)
    http_text, status = "", 0
    for part, title, runner in (("http", "HTTP listener (issue 14)", bench_http),
                                ("static", "Static files (issue 15)", bench_static)):
        if args.only not in (None, part):
            continue
        done = run_part(args, part, runner)
        if done == 130:
            return done
        if isinstance(done, int):  # the other parts' results are still reported
            http_text += "## %s\n\n**The %s part failed** (see stderr).\n" % (title, part)
            status = done
        else:
            http_text += done

    info = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "wall": time.time() - started,
        "machine": machine_info(load_before, os.getloadavg()),
        "versions": servers.versions(),
        "decoder": bench.decoder if bench else None,
        "notes": bench.notes if bench else {},
        "settings": args,
    }
    text = report.render(info, results, WORKLOADS, decoder_text, decoder_ratios, http_text)
    write_report(text, args.out)
    return status


def run_part(args, part: str, runner):
    """The HTTP part (bench_http.py) or the static part (bench_static.py), each
    with its own nginx and process registry; its Markdown section, or an exit
    status if it could not run at all."""
    registry = procs.Registry()
    workdir = bench_workdir(args.workdir and os.path.join(args.workdir, part))

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        return runner.run(args, registry, workdir)
    except KeyboardInterrupt:
        print("interrupted: stopping everything the bench started", file=sys.stderr)
        return 130
    except runner.BenchError as exc:
        print("%s bench failed: %s" % (part, exc), file=sys.stderr)
        return 1
    finally:
        registry.stop_all()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("workdir kept: %s" % workdir, file=sys.stderr)


def write_report(text: str, path: str) -> None:
    """The report on stdout and in ``path``."""
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print("report written to %s" % path, file=sys.stderr)


def machine_info(load_before, load_after) -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "load": "%.2f before, %.2f after (1-min load average)" % (load_before[0], load_after[0]),
    }


if __name__ == "__main__":
    sys.exit(main())
