"""The static-file part of `make bench` (issue 15): uwsgigw's ``static-map``
behind nginx and on its HTTP listener, beside nginx alone, uWSGI's
``static-map`` and Granian's static route, a 1 KB and a 1 MB file.

    python tests/bench/run_bench.py --only static            # this part alone
    python tests/bench/run_bench.py --only static --quick    # smoke run
    python tests/bench/run_bench.py --only static --static-peers nginx,uwsgi,granian

The peers (``PEERS``), 2 worker processes each, request logging off (nginx
has ``access_log off``, Granian logs nothing by default), the same two files
in one directory on /dev/shm:

1. ``nginx``: nginx alone, ``location /static/ { alias DIR/; }`` -- the ceiling;
2. ``uwsgi``: uWSGI ``--static-map /static=DIR`` behind nginx ``uwsgi_pass``;
3. ``uwsgigw``: uwsgigw ``--static-map /static=DIR`` behind ``uwsgi_pass``;
4. ``uwsgigw-accel``: the same with ``--file-serve-mode x-accel-redirect``;
   nginx serves the path the worker names from an ``internal`` location
   (``location ^~ DIR/ { internal; root /; }``);
5. ``granian``: Granian's static route (``--static-path-route /static
   --static-path-mount DIR``), HTTP/1.1, direct;
6. ``uwsgigw-http``: uwsgigw ``--http-socket`` + ``--static-map``, direct;

and ``uwsgi-accel`` (uWSGI with ``--file-serve-mode x-accel-redirect``), a
reference row. The app (``apps:hello``) is never meant to be reached: every
answer is checked against the file before the load, and a run whose mean
answer is shorter than the file (the app answered instead) fails.

A round starts each peer once (order rotated from round to round), measures
the 1 KB then the 1 MB file, and stops it by its process group. The rules of
the other parts hold: ``wrk -t1 -c16`` (``--connections``), ``--warmup`` 1 s,
``--duration`` 5 s, ``--rounds`` 3 (``--quick``: 1 round of 2 s).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_procs as procs  # noqa: E402
import bench_static_report as static_report  # noqa: E402
from bench_procs import free_port  # noqa: E402
from bench_servers import find_nginx, venv_bin  # noqa: E402
from bench_static_servers import (FILES, PEERS, ROUTE, launch, make_files,  # noqa: E402
                                  nginx_conf)

WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHRESULT requests=%.0f duration_us=%.0f bytes=%.0f errors=%.0f timeouts=%.0f "
    .. "status_errors=%.0f p50_us=%.1f p99_us=%.1f\\n",
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write,
    e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""


class BenchError(RuntimeError):
    pass


class StaticBench:
    def __init__(self, args, workdir: str, registry: procs.Registry) -> None:
        self.args = args
        self.workdir = workdir
        self.registry = registry
        self.keys = list(args.static_peers)
        self.files_dir = os.path.join(workdir, "files")
        self.files = make_files(self.files_dir)
        self.content = {name: open(path, "rb").read() for name, path in self.files.items()}
        self.address: dict[str, str] = {}
        self.nginx_port: dict[str, int] = {}
        self.nginx: procs.Managed | None = None
        self.probes: dict[str, dict] = {}   # peer -> what its answers looked like
        self.script = os.path.join(workdir, "wrk-static.lua")
        with open(self.script, "w") as f:
            f.write(WRK_SCRIPT)
        for key in self.keys:
            peer = PEERS[key]
            if peer.listen == "unix":
                self.address[key] = os.path.join(workdir, key + ".sock")
            elif peer.listen == "tcp":
                self.address[key] = "127.0.0.1:%d" % free_port()
            if peer.listen != "tcp":
                self.nginx_port[key] = free_port()

    def start_nginx(self) -> None:
        if not self.nginx_port:
            return
        ndir = os.path.join(self.workdir, "nginx-static")
        os.makedirs(ndir, exist_ok=True)
        conf = os.path.join(ndir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(ndir, self.files_dir, {
                key: (port, self.address.get(key, "")) for key, port in self.nginx_port.items()}))
        log = os.path.join(ndir, "nginx-error.log")
        self.nginx = self.registry.start(
            "nginx", [find_nginx(), "-c", conf, "-p", ndir, "-e", log],
            stop_signal=signal.SIGTERM, log_path=os.path.join(ndir, "nginx.out"))
        deadline = time.monotonic() + 15
        for port in self.nginx_port.values():
            while not procs.port_open(port):
                if not self.nginx.alive() or time.monotonic() > deadline:
                    raise BenchError("nginx did not start:\n%s\n%s" % (
                        read(log)[-2000:], self.nginx.log_tail()))
                time.sleep(0.05)

    def port(self, key: str) -> int:
        if key in self.nginx_port:
            return self.nginx_port[key]
        return int(self.address[key].rpartition(":")[2])

    # --- one peer, one round -------------------------------------------------

    def run_peer(self, key: str, rnd: int) -> dict[str, dict]:
        """Start ``key``, measure every file, stop it. file name -> result."""
        peer = PEERS[key]
        proc = None
        log = os.path.join(self.workdir, "%s-r%d.log" % (key, rnd))
        if peer.listen != "nginx":
            if peer.listen == "unix" and os.path.exists(self.address[key]):
                os.unlink(self.address[key])
            lnch = launch(peer, self.address[key], self.files_dir, log, self.workdir)
            proc = self.registry.start(key, lnch.argv, stop_signal=lnch.stop_signal,
                                       env=lnch.env, cwd=self.workdir, log_path=log)
        out: dict[str, dict] = {}
        try:
            try:
                self.wait_ready(key, proc)
            except BenchError as exc:
                return {name: {"failed": "did not serve the file: %s" % exc} for name in FILES}
            for name in FILES:
                try:
                    out[name] = self.measure(key, proc, name)
                except BenchError as exc:
                    out[name] = {"failed": str(exc)}
        finally:
            if proc is not None:
                if any("failed" in r for r in out.values()) or len(out) < len(FILES):
                    print("--- %s log (%s) ---\n%s" % (key, log, proc.log_tail(15)),
                          file=sys.stderr)
                self.registry.stop(proc)
                if not self.args.keep_workdir and os.path.exists(log):
                    os.unlink(log)
        return out

    def wait_ready(self, key: str, proc: procs.Managed | None) -> None:
        """Until every file comes back right (30 s); the first right answers'
        headers (and, on a uwsgi socket, the raw answer) go to ``self.probes``."""
        deadline = time.monotonic() + 30
        port = self.port(key)
        for name in FILES:
            path = "%s/%s.bin" % (ROUTE, name)
            problem = "no answer"
            while True:
                if proc is not None and not proc.alive():
                    raise BenchError("exited at start-up:\n%s" % proc.log_tail(15))
                try:
                    status, headers, body = http_get(port, path)
                except OSError as exc:
                    problem = str(exc)
                else:
                    if status == 200 and body == self.content[name]:
                        break
                    problem = "status %d, %d bytes: %r" % (status, len(body), body[:80])
                    if status not in (502, 503, 504):  # 502: nginx finds no socket yet
                        raise BenchError("GET %s: %s" % (path, problem))
                if time.monotonic() > deadline:
                    raise BenchError("GET %s: %s" % (path, problem))
                time.sleep(0.1)
            if key not in self.probes or name not in self.probes[key]:
                probe = {"status": status, "headers": headers}
                if PEERS[key].listen == "unix":
                    try:
                        probe["raw"] = uwsgi_raw_head(self.address[key], path)
                    except OSError as exc:
                        probe["raw"] = "(raw uwsgi request failed: %s)" % exc
                self.probes.setdefault(key, {})[name] = probe

    def measure(self, key: str, proc: procs.Managed | None, name: str) -> dict:
        url = "http://127.0.0.1:%d%s/%s.bin" % (self.port(key), ROUTE, name)
        via_nginx = key in self.nginx_port
        if self.args.warmup > 0:
            self.wrk(url, self.args.warmup)
        busy0, kids0 = procs.machine_busy_seconds(), os.times()
        cpu0 = procs.tree_cpu_seconds(proc.pid) if proc else 0.0
        ngx0 = procs.tree_cpu_seconds(self.nginx.pid) if via_nginx else 0.0
        res = self.wrk(url, self.args.duration)
        cpu1 = procs.tree_cpu_seconds(proc.pid) if proc else 0.0
        ngx1 = procs.tree_cpu_seconds(self.nginx.pid) if via_nginx else 0.0
        busy1, kids1 = procs.machine_busy_seconds(), os.times()
        if proc is not None and not proc.alive():
            raise BenchError("exited during the run:\n" + proc.log_tail(10))
        seconds = res["duration_us"] / 1e6
        n = res["requests"]
        per_answer = res["bytes"] / n if n else 0.0
        if n and per_answer < FILES[name]:
            raise BenchError("answers of %.0f bytes on average, the file has %d: something "
                             "else answered (%.0f requests)" % (per_answer, FILES[name], n))
        wrk_cpu = (kids1.children_user + kids1.children_system
                   - kids0.children_user - kids0.children_system)
        other = (busy1 - busy0) - (cpu1 - cpu0) - (ngx1 - ngx0) - wrk_cpu
        return {
            "rps": n / seconds if seconds else 0.0,
            "p50": res["p50_us"] / 1000.0 if n else None,
            "p99": res["p99_us"] / 1000.0 if n else None,
            "cpu": (cpu1 - cpu0) / n * 1e6 if n and proc else None,
            "nginx_cpu": (ngx1 - ngx0) / n * 1e6 if n and via_nginx else None,
            "other": max(0.0, other) / seconds * 100 if seconds else None,
            "errors": int(res["errors"] + res["status_errors"]),
            "timeouts": int(res["timeouts"]),
            "requests": int(n),
            "bytes_per_answer": per_answer,
        }

    def wrk(self, url: str, seconds: float) -> dict:
        argv = ["wrk", "-t%d" % self.args.threads, "-c%d" % self.args.connections,
                "-d%ds" % max(1, int(seconds)), "--timeout", "10s", "-s", self.script, url]
        return procs.run_wrk(argv, seconds, BenchError)


# --- helpers -------------------------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def uwsgi_packet(path: str) -> bytes:
    """A GET as nginx's uwsgi_params would send it (modifier1 0)."""
    env = {"QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "",
           "CONTENT_LENGTH": "", "REQUEST_URI": path, "PATH_INFO": path,
           "DOCUMENT_ROOT": "/", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http",
           "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_PORT": "80",
           "SERVER_NAME": "bench", "HTTP_HOST": "bench"}
    body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v))
                    + v.encode() for k, v in env.items())
    return struct.pack("<BHB", 0, len(body), 0) + body


def uwsgi_raw_head(sock_path: str, path: str) -> str:
    """The status line and headers a uwsgi socket answers to a raw GET."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(uwsgi_packet(path))
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, rest = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    return text + ("\n(+ %d body bytes read)" % len(rest) if sep else "\n(no end of head)")


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def preflight(args) -> None:
    for key in args.static_peers:
        tool = {"uwsgi": "uwsgi", "uwsgi-accel": "uwsgi", "granian": "granian"}.get(key)
        if tool:
            try:
                venv_bin(tool)
            except FileNotFoundError as exc:
                raise SystemExit(str(exc)) from None


def versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in ("granian", "uWSGI"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run(args, registry: procs.Registry, workdir: str) -> str:
    """Every round of the static part; its Markdown section of the report."""
    os.makedirs(workdir, exist_ok=True)
    bench = StaticBench(args, workdir, registry)
    keys = bench.keys
    results: dict[tuple[str, str], list[dict]] = {}
    started = time.time()
    bench.start_nginx()
    for i, total, rnd, key in procs.rotations(args.rounds, keys):
        for name, r in bench.run_peer(key, rnd).items():
            results.setdefault((name, key), []).append(r)
            print("[static %d/%d] %-3s %-13s %s" % (
                i, total, name, key, static_report.progress(r)), file=sys.stderr)
    return static_report.render(args, results, bench.probes, time.time() - started,
                                versions())
