"""The async benchmark (issue 8): uwsgigw's async worker vs Gunicorn + Uvicorn
workers behind ``proxy_pass`` and Gunicorn's own ASGI worker over uwsgi.

    python tests/bench/bench_asgi.py [--seconds 5] [--rounds 3] [--connections 64]

Needs gunicorn (>= 25 for ``--protocol uwsgi`` with ``-k asgi``), uvicorn,
uvicorn-worker, fastapi and uvloop in the interpreter that runs it (``make
bench`` uses /tmp/uwsgigw-bench-venv), plus nginx and wrk. Every server gets 2
workers, request logging off, uvloop. One nginx worker fronts all of them,
each on its own port (bench_servers.nginx_conf). Each cell is the median over
rounds; the server order rotates between rounds. Every process is stopped by
its process group id (bench_procs.Registry).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_procs import Registry, wait_for_path  # noqa: E402
from bench_servers import BENCH_DIR, REPO, WORKERS, find_nginx, nginx_conf, venv_bin  # noqa: E402

WORKLOADS = {"hello": ("bench_asgi_apps:hello", "/"),
             "fastapi": ("bench_asgi_apps:fastapi_app", "/json?x=1")}
SERVERS = ("uwsgigw", "gunicorn-uvicorn", "gunicorn-asgi-uwsgi")


def launch(server: str, app: str, sock: str) -> tuple[list[str], dict, bool]:
    """(argv, env, speaks uwsgi) for one server."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(BENCH_DIR)]))
    if server == "uwsgigw":
        return ([sys.executable, "-m", "uwsgigw", "--socket", sock, "--master",
                 "--processes", str(WORKERS), "--module", app, "--disable-logging",
                 "--listen", "1024"], env, True)
    common = [venv_bin("gunicorn"), "--workers", str(WORKERS), "--bind", "unix:" + sock,
              "--log-level", "warning", "--backlog", "1024"]
    if server == "gunicorn-uvicorn":
        return (common + ["--worker-class", "uvicorn_worker.UvicornWorker", app], env, False)
    return (common + ["--worker-class", "asgi", "--protocol", "uwsgi", app], env, True)


def wrk(port: int, path: str, seconds: float, connections: int) -> tuple[float, int]:
    out = subprocess.run(["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds,
                          "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(errors.group(1)) if errors else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    workloads = args.workloads.split(",")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="uwsgigw-bench-asgi-", dir=base)
    registry = Registry()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    results: dict = {}
    try:
        for rnd in range(args.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for workload in workloads:
                app, path = WORKLOADS[workload]
                for server in order:
                    rps = run_one(registry, workdir, server, app, path, args)
                    results.setdefault((workload, server), []).append(rps)
                    print("round %d %-8s %-20s %9.0f req/s" % (rnd + 1, workload, server, rps),
                          flush=True)
    finally:
        registry.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| workload | " + " | ".join(servers) + " | uwsgigw / best other |")
    print("|---|" + "---|" * (len(servers) + 1))
    for workload in workloads:
        medians = {s: statistics.median(results[(workload, s)]) for s in servers}
        others = [v for s, v in medians.items() if s != "uwsgigw"]
        ratio = ("%.2fx" % (medians["uwsgigw"] / max(others))) if others and \
            "uwsgigw" in medians else "-"
        print("| %s | %s | %s |" % (workload, " | ".join("%.0f" % medians[s] for s in servers),
                                    ratio))
    return 0


def run_one(registry: Registry, workdir: str, server: str, app: str, path: str,
            args) -> float:
    sock = os.path.join(workdir, "%s.sock" % server)
    argv, env, uwsgi = launch(server, app, sock)
    proc = registry.start(server, argv, env=env, cwd=str(BENCH_DIR),
                          log_path=os.path.join(workdir, server + ".log"),
                          stop_signal=signal.SIGINT)
    nginx = None
    try:
        if not wait_for_path(sock, 30, proc.alive):
            raise SystemExit("%s did not start:\n%s" % (server, proc.log_tail()))
        port = _free_port()
        ndir = os.path.join(workdir, "nginx-" + server)
        os.makedirs(ndir, exist_ok=True)
        conf = os.path.join(ndir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(ndir, {server: (port, sock, uwsgi)}))
        nginx = registry.start("nginx", [find_nginx(), "-c", conf, "-p", ndir],
                               log_path=os.path.join(ndir, "out.log"),
                               stop_signal=signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while True:  # until nginx and the app answer
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                            timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("%s: no answer through nginx:\n%s" % (server,
                                                                       proc.log_tail()))
            time.sleep(0.05)
        wrk(port, path, 1, args.connections)  # warm-up
        rps, errors = wrk(port, path, args.seconds, args.connections)
        if errors:
            print("warning: %s: %d non-2xx responses" % (server, errors))
        return rps
    finally:
        if nginx is not None:
            registry.stop(nginx)
        registry.stop(proc)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
