"""The HTTP half of `make bench` (issue 14): uwsgigw's ``--http-socket`` vs
uWSGI, Granian, Gunicorn and Uvicorn, directly and behind nginx
``proxy_pass`` with upstream keepalive, WSGI and ASGI, latency under an
idle/slow crowd, and WebSocket echo messages/s.

    python tests/bench/run_bench.py --only http            # this part alone
    python tests/bench/run_bench.py --only http --quick    # smoke run
    python tests/bench/run_bench.py --only http --http-parts direct,nginx

Parts (``--http-parts``), each a set of measurements (tests/bench/README.md):

- ``direct``: wrk keep-alive straight to the server, WSGI hello.
- ``nginx``: wrk -> nginx (site-http.conf: proxy_pass, upstream keepalive) ->
  server, WSGI hello; uwsgigw's own ``uwsgi_pass`` path beside it.
- ``asgi``: ASGI hello, direct and behind nginx.
- ``crowd``: a normal client's latency (wrk -c4, 2 s timeout) without and with
  200 idle keep-alive connections + 50 slow-header clients (bench_crowd.py).
- ``ws``: WebSocket echo messages/s (bench_ws_client.py, several processes).

A round starts each peer once (order rotated from round to round), runs all
of that peer's measurements, and stops it by its process group; a peer that
fails to start or starves gets that written in its cells, the bench goes on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http_report as http_report  # noqa: E402
import bench_http_servers as hs  # noqa: E402
import bench_procs as procs  # noqa: E402
from bench_procs import free_port, port_open  # noqa: E402
import bench_servers as servers  # noqa: E402
from bench_ws_client import probe as ws_probe  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
PARTS = ("direct", "nginx", "asgi", "crowd", "ws")

# Each peer's measurements, in the order they run once it is up: (part, mode).
PEER_PLAN = {
    "uwsgigw": [("direct", "direct"), ("nginx", "nginx"), ("crowd", "calm"),
                ("crowd", "crowd")],
    "uwsgi-http11": [("direct", "direct"), ("nginx", "nginx")],
    "uwsgi-http": [("direct", "direct"), ("crowd", "calm"), ("crowd", "crowd")],
    "granian": [("direct", "direct"), ("nginx", "nginx"), ("crowd", "calm"),
                ("crowd", "crowd")],
    "gunicorn-gthread": [("direct", "direct"), ("crowd", "calm"), ("crowd", "crowd")],
    "uvicorn-wsgi": [("direct", "direct")],
    "uwsgigw-uwsgi": [("nginx", "nginx")],
    "uwsgigw-asgi": [("asgi", "direct"), ("asgi", "nginx"), ("ws", "ws")],
    "uvicorn": [("asgi", "direct"), ("asgi", "nginx"), ("ws", "ws")],
    "granian-asgi": [("asgi", "direct"), ("asgi", "nginx")],
}

CROWD_CLIENT = 4           # wrk connections of the "normal client"
CROWD_TIMEOUT = "2s"       # a request slower than this counts as a timeout

# A server without keep-alive closes after each answer; to HTTP/1.1 wrk counts
# that as a read error, to HTTP/1.0 it reconnects cleanly.
HTTP10 = """\
request = function()
  return "GET /hello HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
end
"""

WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHRESULT requests=%.0f duration_us=%.0f errors=%.0f timeouts=%.0f "
    .. "status_errors=%.0f p50_us=%.1f p99_us=%.1f\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""


class BenchError(RuntimeError):
    pass


def peer_plan(parts: list[str]) -> dict[str, list[tuple[str, str]]]:
    plan = {}
    for key, measures in PEER_PLAN.items():
        chosen = [m for m in measures if m[0] in parts]
        if chosen:
            plan[key] = chosen
    return plan


class HttpBench:
    def __init__(self, args, workdir: str, registry: procs.Registry) -> None:
        self.args = args
        self.workdir = workdir
        self.registry = registry
        self.plan = peer_plan(args.http_parts)
        self.address: dict[str, str] = {}
        self.nginx_port: dict[str, int] = {}
        self.nginx: procs.Managed | None = None
        self.script = os.path.join(workdir, "wrk-http.lua")
        with open(self.script, "w") as f:
            f.write(WRK_SCRIPT)
        self.script10 = os.path.join(workdir, "wrk-http10.lua")
        with open(self.script10, "w") as f:
            f.write(HTTP10 + WRK_SCRIPT)
        for key in self.plan:
            peer = hs.PEERS[key]
            self.address[key] = (os.path.join(workdir, key + ".sock") if peer.listen == "unix"
                                 else "127.0.0.1:%d" % free_port())
            if any(mode == "nginx" for _, mode in self.plan[key]):
                self.nginx_port[key] = free_port()

    # --- nginx ---------------------------------------------------------------

    def start_nginx(self) -> None:
        if not self.nginx_port:
            return
        sites = {key: (port, self.address[key], hs.PEERS[key].speaks)
                 for key, port in self.nginx_port.items()}
        ndir = os.path.join(self.workdir, "nginx-http")
        os.makedirs(ndir, exist_ok=True)
        conf = os.path.join(ndir, "nginx.conf")
        try:
            text = hs.nginx_conf(ndir, sites)
        except hs.SiteConfError as exc:
            raise BenchError(str(exc)) from None
        with open(conf, "w") as f:
            f.write(text)
        log = os.path.join(ndir, "nginx-error.log")
        self.nginx = self.registry.start(
            "nginx", [servers.find_nginx(), "-c", conf, "-p", ndir, "-e", log],
            stop_signal=signal.SIGTERM, log_path=os.path.join(ndir, "nginx.out"))
        deadline = time.monotonic() + 15
        for port in self.nginx_port.values():
            while not port_open(port):
                if not self.nginx.alive() or time.monotonic() > deadline:
                    raise BenchError("nginx did not start:\n" + tail(log) + "\n" +
                                     self.nginx.log_tail())
                time.sleep(0.05)

    # --- one peer, one round ---------------------------------------------------

    def run_peer(self, key: str, rnd: int) -> dict[tuple[str, str], dict]:
        """Start ``key``, run its measurements, stop it. (part, mode) -> result."""
        peer = hs.PEERS[key]
        log = os.path.join(self.workdir, "%s-r%d.log" % (key, rnd))
        if peer.listen == "unix" and os.path.exists(self.address[key]):
            os.unlink(self.address[key])
        launch = hs.launch(peer, self.address[key], log, self.workdir)
        proc = self.registry.start(key, launch.argv, stop_signal=launch.stop_signal,
                                   env=launch.env, cwd=self.workdir, log_path=log)
        out = {}
        try:
            try:
                self.wait_ready(proc, key)
            except BenchError as exc:
                return {m: {"failed": "did not start: %s" % exc} for m in self.plan[key]}
            for part, mode in self.plan[key]:
                try:
                    if not proc.alive():
                        raise BenchError("exited:\n" + proc.log_tail(10))
                    if part == "ws":
                        r = self.measure_ws(key, proc)
                    elif part == "crowd":
                        r = self.measure_crowd(key, proc, mode == "crowd")
                    else:
                        r = self.measure_wrk(key, proc, mode == "nginx")
                except BenchError as exc:
                    r = {"failed": str(exc)}
                out[(part, mode)] = r
        finally:
            if any("failed" in r for r in out.values()) or len(out) < len(self.plan[key]):
                print("--- %s log (%s) ---\n%s" % (key, log, proc.log_tail(15)),
                      file=sys.stderr)
            self.registry.stop(proc)
            if not self.args.keep_workdir and os.path.exists(log):
                os.unlink(log)
        return out

    def direct_port(self, key: str) -> int | None:
        addr = self.address[key]
        return int(addr.rpartition(":")[2]) if hs.PEERS[key].listen == "tcp" else None

    def wait_ready(self, proc: procs.Managed, key: str) -> None:
        """Until GET /hello answers right, directly and through nginx (30 s)."""
        ports = [p for p in (self.direct_port(key), self.nginx_port.get(key)) if p]
        deadline = time.monotonic() + 30
        for port in ports:
            problem = "no answer"
            while True:
                if not proc.alive():
                    raise BenchError("exited at start-up:\n%s" % proc.log_tail(15))
                try:
                    status, body = http_get(port, "/hello")
                except OSError as exc:
                    problem = str(exc)
                else:
                    if status == 200 and body == b"Hello, World!\n":
                        break
                    problem = "status %d: %r" % (status, body[:100])
                if time.monotonic() > deadline:
                    raise BenchError("no right answer on port %d: %s" % (port, problem))
                time.sleep(0.1)

    # --- measurements --------------------------------------------------------

    def measure_wrk(self, key: str, proc: procs.Managed, via_nginx: bool, *,
                    connections: int | None = None, timeout: str = "10s",
                    extra_pids: tuple[int, ...] = ()) -> dict:
        port = self.nginx_port[key] if via_nginx else self.direct_port(key)
        url = "http://127.0.0.1:%d/hello" % port
        conns = connections or self.args.http_connections
        close = hs.PEERS[key].closes
        if self.args.warmup > 0:
            self.wrk(url, self.args.warmup, conns, timeout, close)
        busy0, kids0 = procs.machine_busy_seconds(), os.times()
        cpu0 = procs.tree_cpu_seconds(proc.pid)
        ngx0 = procs.tree_cpu_seconds(self.nginx.pid) if via_nginx else 0.0
        ext0 = sum(procs.tree_cpu_seconds(p) for p in extra_pids)
        res = self.wrk(url, self.args.duration, conns, timeout, close)
        cpu1 = procs.tree_cpu_seconds(proc.pid)
        ngx1 = procs.tree_cpu_seconds(self.nginx.pid) if via_nginx else 0.0
        ext1 = sum(procs.tree_cpu_seconds(p) for p in extra_pids)
        busy1, kids1 = procs.machine_busy_seconds(), os.times()
        seconds = res["duration_us"] / 1e6
        n = res["requests"]
        wrk_cpu = (kids1.children_user + kids1.children_system
                   - kids0.children_user - kids0.children_system)
        other = (busy1 - busy0) - (cpu1 - cpu0) - (ngx1 - ngx0) - (ext1 - ext0) - wrk_cpu
        return {
            "rps": n / seconds if seconds else 0.0,
            "p50": res["p50_us"] / 1000.0 if n else None,
            "p99": res["p99_us"] / 1000.0 if n else None,
            "cpu": (cpu1 - cpu0) / n * 1e6 if n else None,
            "nginx_cpu": (ngx1 - ngx0) / n * 1e6 if n and via_nginx else None,
            "other": max(0.0, other) / seconds * 100 if seconds else None,
            "errors": int(res["errors"] + res["status_errors"]),
            "timeouts": int(res["timeouts"]),
            "requests": int(n),
        }

    def wrk(self, url: str, seconds: float, connections: int, timeout: str,
            close: bool = False) -> dict:
        argv = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % max(1, int(seconds)),
                "--timeout", timeout, "-s", self.script10 if close else self.script, url]
        return procs.run_wrk(argv, seconds, BenchError)

    def measure_crowd(self, key: str, proc: procs.Managed, with_crowd: bool) -> dict:
        if not with_crowd:
            return self.measure_wrk(key, proc, False, connections=CROWD_CLIENT,
                                    timeout=CROWD_TIMEOUT)
        port = self.direct_port(key)
        log = os.path.join(self.workdir, "crowd-%s.log" % key)
        crowd = self.registry.start(
            "crowd", [sys.executable, str(BENCH_DIR / "bench_crowd.py"), "127.0.0.1",
                      str(port), "--idle", str(self.args.crowd_idle),
                      "--slow", str(self.args.crowd_slow)],
            stop_signal=signal.SIGTERM, log_path=log)
        try:
            deadline = time.monotonic() + 20
            while "READY" not in read(log):
                if not crowd.alive() or time.monotonic() > deadline:
                    raise BenchError("the crowd did not get ready:\n" + crowd.log_tail(5))
                time.sleep(0.1)
            r = self.measure_wrk(key, proc, False, connections=CROWD_CLIENT,
                                 timeout=CROWD_TIMEOUT, extra_pids=(crowd.pid,))
            lines = [line for line in read(log).splitlines()
                     if line.startswith(("READY", "CROWD"))]
            r["crowd"] = dict(kv.split("=") for kv in lines[-1].split()[1:])
        finally:
            self.registry.stop(crowd)
            if not self.args.keep_workdir and os.path.exists(log):
                os.unlink(log)
        return r

    def measure_ws(self, key: str, proc: procs.Managed) -> dict:
        port = self.direct_port(key)
        problem = ws_probe("127.0.0.1", port)
        if problem:
            return {"unsupported": problem}
        a = self.args
        begin = time.time() + 1.0 + a.warmup
        end = begin + a.duration
        clients = []
        per = max(1, a.ws_connections // a.ws_clients)
        for i in range(a.ws_clients):
            log = os.path.join(self.workdir, "ws-%s-%d.log" % (key, i))
            if os.path.exists(log):
                os.unlink(log)
            clients.append(self.registry.start(
                "ws-client", [sys.executable, str(BENCH_DIR / "bench_ws_client.py"),
                              "127.0.0.1", str(port), "--begin", "%.3f" % begin,
                              "--seconds", str(a.duration), "--connections", str(per),
                              "--window", str(a.ws_window)],
                stop_signal=signal.SIGTERM, log_path=log))
        try:
            time.sleep(max(0.0, begin - time.time()))
            cpu0 = procs.tree_cpu_seconds(proc.pid)
            cli0 = sum(procs.tree_cpu_seconds(c.pid) for c in clients)
            cli_each0 = [procs.tree_cpu_seconds(c.pid) for c in clients]
            time.sleep(max(0.0, end - time.time()))
            cpu1 = procs.tree_cpu_seconds(proc.pid)
            cli1 = sum(procs.tree_cpu_seconds(c.pid) for c in clients)
            cli_each1 = [procs.tree_cpu_seconds(c.pid) for c in clients]
            deadline = time.monotonic() + 20
            for c in clients:
                try:
                    c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise BenchError("a WebSocket client did not finish") from None
            messages, errors, why = 0, 0, ""
            for c in clients:
                m = re.search(r"WSRESULT messages=(\d+) \S+ errors=(\d+) connected=(\d+) "
                              r"why=(.*)", read(c.log_path))
                if not m:
                    raise BenchError("no result from a WebSocket client:\n" + c.log_tail(5))
                messages += int(m.group(1))
                errors += int(m.group(2))
                why = why or m.group(4).strip("'\"")
        finally:
            for c in clients:
                self.registry.stop(c)
        busiest = max(after - before for before, after in zip(cli_each0, cli_each1))
        return {
            "mps": messages / a.duration,
            "cpu": (cpu1 - cpu0) / messages * 1e6 if messages else None,
            "client_cpu": (cli1 - cli0) / a.duration * 100,
            "client_busiest": busiest / a.duration * 100,
            "errors": errors,
            "why": why,
        }


# --- helpers ---------------------------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read(path: str | None) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except (OSError, TypeError):
        return ""


def tail(path: str, n: int = 20) -> str:
    return "\n".join(read(path).splitlines()[-n:]) or "(no %s)" % path


def preflight(args) -> None:
    need = {"uwsgi-http11": "uwsgi", "uwsgi-http": "uwsgi", "granian": "granian",
            "granian-asgi": "granian", "gunicorn-gthread": "gunicorn",
            "uvicorn-wsgi": "uvicorn", "uvicorn": "uvicorn"}
    for key in peer_plan(args.http_parts):
        if key in need:
            try:
                servers.venv_bin(need[key])
            except FileNotFoundError as exc:
                raise SystemExit(str(exc)) from None


def run(args, registry: procs.Registry, workdir: str) -> str:
    """Every round of the HTTP part; the Markdown section of the report."""
    os.makedirs(workdir, exist_ok=True)
    bench = HttpBench(args, workdir, registry)
    keys = list(bench.plan)
    results: dict[tuple[str, str, str], list[dict]] = {}
    started = time.time()
    bench.start_nginx()
    for i, total, rnd, key in procs.rotations(args.rounds, keys):
        for (part, mode), r in bench.run_peer(key, rnd).items():
            results.setdefault((part, mode, key), []).append(r)
            print("[http %d/%d] %-6s %-6s %-17s %s" % (
                i, total, part, mode, key, http_report.progress(r)), file=sys.stderr)
    return http_report.render(args, results, time.time() - started, hs.versions())
