"""`make bench-ab`: two uwsgigw builds side by side, the working tree vs a base.

    python tests/bench/bench_ab.py                      # base: see --base
    python tests/bench/bench_ab.py --base b6ad724
    python tests/bench/bench_ab.py --base HEAD --workloads hello --rounds 8 --log-off
    python tests/bench/bench_ab.py --others uwsgi       # uWSGI alongside (bench venv)

Both builds are installed from wheels into venvs of their own outside the
repo (bench_ab_build.py) and started with their venv's ``uwsgigw`` script,
without PYTHONPATH; the bench checks in /proc that each server maps its own
build's C extensions and no other uwsgigw files. Then `make bench`'s machinery
(run_bench.py: one nginx, wrk, CPU from /proc) runs every workload with both
builds in every round, the order alternating from round to round. The report
(bench_ab_report.py) gives per workload the median server CPU µs/request of
each build, their ratio, the per-round values and a verdict against --limit.
See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ab_build as abbuild  # noqa: E402
import bench_ab_report as abreport  # noqa: E402
import bench_procs as procs  # noqa: E402
import bench_servers as servers  # noqa: E402
import run_bench  # noqa: E402

AB_SERVERS = ["uwsgigw", "uwsgigw-base"]  # the working tree, the base


class ABBench(run_bench.Bench):
    """run_bench.Bench whose two uwsgigw servers are the two installed builds."""

    def __init__(self, args, workdir, registry, builds: dict) -> None:
        super().__init__(args, workdir, registry)
        self.builds = builds
        self.decoders: dict[str, str | None] = {}

    def launch(self, server, wl, log_requests, server_log):
        b = self.builds.get(server)
        if b is None:
            return super().launch(server, wl, log_requests, server_log)
        return servers.uwsgigw_script_launch(b.script, wl.app, self.sock(server),
                                             log_requests, server_log, self.workdir)

    def on_ready(self, server, proc, server_log) -> None:
        b = self.builds.get(server)
        if b is None:
            return
        if server not in self.decoders:
            self.decoders[server] = servers.decoder_from_log(server_log)
        problem = abbuild.check_running([proc.pid] + procs.descendants(proc.pid), b)
        if problem:
            raise run_bench.BenchError(problem)


def make_plan(args) -> list[tuple[bool, int, str, str]]:
    """Every round runs every (workload, log variant) with each server once, the
    server order rotated by one per round: with the two builds, AB then BA."""
    variants = [True, False] if args.log_off else [True]
    return [(log_on, rnd, wl, server)
            for rnd in range(args.rounds)
            for wl in args.workloads
            for log_on in variants
            for server in run_bench.rotate(args.servers, rnd)]


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="git revision to compare with (default: the merge base "
                   "of HEAD and origin/main or main; if that is HEAD, HEAD when the "
                   "package has uncommitted changes, else HEAD~1)")
    p.add_argument("--workloads", default="hello,flask",
                   help="comma list of %s" % ", ".join(run_bench.WORKLOADS))
    p.add_argument("--others", default="",
                   help="also run these servers (uwsgi, gunicorn; from the bench venv "
                        "`make bench` fills)")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds, each with both builds (6: even, so each build runs "
                        "first equally often)")
    p.add_argument("--duration", type=int, default=5, help="seconds measured per run")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run")
    p.add_argument("--connections", type=int, default=16, help="wrk -c")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--log-off", action="store_true",
                   help="also run each workload with request logging off")
    p.add_argument("--limit", type=float, default=5.0,
                   help="verdict: current CPU/req at most this %% above base")
    p.add_argument("--python", default="python3",
                   help="the interpreter both venvs are made with")
    p.add_argument("--build-dir", default=abbuild.BUILD_DIR,
                   help="where the two builds go (current/, base/)")
    p.add_argument("--rebuild-base", action="store_true",
                   help="rebuild the base even if its venv is of the same revision")
    p.add_argument("--gunicorn-proxy", action="store_true",
                   help="with --others gunicorn: HTTP behind proxy_pass")
    p.add_argument("--out", default="/tmp/uwsgigw-bench/ab.md")
    p.add_argument("--workdir", help="default: a fresh dir in /dev/shm, removed at the end")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and server logs")
    args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    others = [s for s in args.others.split(",") if s]
    for w in args.workloads:
        if w not in run_bench.WORKLOADS:
            p.error("unknown workload %r (choose from %s)" % (w, ", ".join(run_bench.WORKLOADS)))
    for s in others:
        if s not in ("uwsgi", "gunicorn"):
            p.error("--others: %r is not uwsgi or gunicorn" % s)
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    python = shutil.which(args.python)
    if python is None:
        p.error("--python %s: not found" % args.python)
    args.python = python
    args.servers = AB_SERVERS + others
    args.uwsgigw_launch = "cli"  # what run_bench.Bench expects; ABBench overrides it
    if args.rounds < 5:
        print("warning: %d round(s): the issue asks for at least 5; fine for a smoke run"
              % args.rounds, file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_bench.preflight(args)
    command = shlex.join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    try:
        current, base = abbuild.build_both(args.base, args.build_dir, args.python,
                                           args.rebuild_base)
    except abbuild.BuildError as exc:
        print("build failed: %s" % exc, file=sys.stderr)
        return 1
    for b in (current, base):
        print("%-13s %s (%s): %s, C extensions %s" % (
            b.name, b.rev.label, b.rev.detail, b.version, ", ".join(b.extensions) or "none"),
            file=sys.stderr)
    load_before = os.getloadavg()
    started = time.time()
    builds = {current.name: current, base.name: base}
    done = run_bench.run_plan(args, make_plan(args),
                              lambda a, w, r: ABBench(a, w, r, builds))
    if isinstance(done, int):
        return done
    bench, results = done
    versions = {"Python": servers._version_of(lambda: [args.python, "--version"]),
                "nginx": servers._version_of(lambda: [servers.find_nginx(), "-v"]),
                "wrk": servers._version_of(lambda: ["wrk", "-v"])}
    info = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "wall": time.time() - started,
        "machine": run_bench.machine_info(load_before, os.getloadavg()),
        "versions": versions,
        "decoders": bench.decoders,
        "package_diffs": abbuild.package_differences(current, base),
        "settings": args,
    }
    text = abreport.render(info, results, [current, base], run_bench.WORKLOADS)
    run_bench.write_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
