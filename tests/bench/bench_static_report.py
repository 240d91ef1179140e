"""The Markdown section of the static-file bench (issue 15): per file a table
of the peers, the issue's targets, and what each peer's answer looked like.

Every cell is the median over rounds; "min-max" is the range of req/s over
rounds and ``±`` half of it in % of the median. A ratio is the median of one
peer over the median of the other, with "rounds a-b" the range of the
per-round ratios (the two ran in the same round, so that range is the
ratio's own spread).
"""

from __future__ import annotations

import statistics

import bench_static_servers as bs
from bench_report import noise_warning

SHOWN_HEADERS = ("content-type", "content-length", "last-modified", "etag", "cache-control",
                 "expires", "accept-ranges", "vary")


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "rps" in r]


def _median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value, fmt="{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _problems(runs: list[dict]) -> str:
    failed = [" / ".join(r["failed"].split("\n"))[:240] for r in runs if "failed" in r]
    if failed:
        return "failed in %d/%d round(s): %s" % (len(failed), len(runs), failed[0])
    return ""


def ratio(results, name: str, a: str, b: str, key: str = "rps"):
    """(median a / median b, min and max of the per-round ratios) or None."""
    ra, rb = results.get((name, a)), results.get((name, b))
    if not ra or not rb:
        return None
    ma, mb = _median(_ok(ra), key), _median(_ok(rb), key)
    if ma is None or not mb:
        return None
    paired = [x[key] / y[key] for x, y in zip(ra, rb)
              if x.get(key) is not None and y.get(key)]
    if not paired:
        return None
    return ma / mb, min(paired), max(paired)


def _ratio_cell(r) -> str:
    return "-" if r is None else "%.2fx (rounds %.2f-%.2f)" % r


def progress(r: dict) -> str:
    if "failed" in r:
        return "FAILED: " + r["failed"].splitlines()[0][:150]
    text = "%8.0f req/s  p50 %s ms  p99 %s ms  cpu %s us/req  nginx %s us/req  other %s%%" % (
        r["rps"], _fmt(r["p50"], "{:.2f}"), _fmt(r["p99"], "{:.2f}"),
        _fmt(r["cpu"], "{:.1f}"), _fmt(r["nginx_cpu"], "{:.1f}"), _fmt(r["other"], "{:.0f}"))
    if r["errors"] or r["timeouts"]:
        text += "  ERRORS %d TIMEOUTS %d" % (r["errors"], r["timeouts"])
    return text


def table(results, name: str) -> str:
    keys = [k for (n, k) in results if n == name]
    if not keys:
        return ""
    head = ["server", "req/s (median)", "min-max", "req/s ±", "p50 ms", "p99 ms",
            "server CPU µs/req", "nginx CPU µs/req", "MB/s", "other CPU %", "errors",
            "this / nginx alone"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for key in keys:
        runs = results[(name, key)]
        ok = _ok(runs)
        rps = [r["rps"] for r in ok]
        med = _median(ok, "rps")
        spread = (max(rps) - min(rps)) / 2 / med * 100 if med else None
        mbps = med * bs.FILES[name] / 1e6 if med else None
        errors = sum(r["errors"] + r["timeouts"] for r in ok)
        problem = _problems(runs)
        cells = [bs.PEERS[key].label, _fmt(med),
                 "%s-%s" % (_fmt(min(rps)), _fmt(max(rps))) if rps else "-",
                 _fmt(spread, "{:.1f}%"), _fmt(_median(ok, "p50"), "{:.2f}"),
                 _fmt(_median(ok, "p99"), "{:.2f}"), _fmt(_median(ok, "cpu"), "{:.1f}"),
                 _fmt(_median(ok, "nginx_cpu"), "{:.1f}"), _fmt(mbps),
                 _fmt(_median(ok, "other"), "{:.0f}"),
                 str(errors) + ("; " + problem if problem else ""),
                 "" if key == "nginx" else _ratio_cell(ratio(results, name, key, "nginx"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (file, a, b, limit, what): the issue-15 targets, a / b >= limit.
TARGETS = (
    ("1k", "uwsgigw", "uwsgi", 1.0, "behind nginx, (3) uwsgigw / (2) uWSGI static-map, 1 KB"),
    ("1m", "uwsgigw", "uwsgi", 1.0, "behind nginx, (3) uwsgigw / (2) uWSGI static-map, 1 MB"),
    ("1k", "uwsgigw-http", "granian", 1.0,
     "direct, (6) uwsgigw http-socket / (5) Granian static route, 1 KB"),
    ("1m", "uwsgigw-http", "granian", 1.0,
     "direct, (6) uwsgigw http-socket / (5) Granian static route, 1 MB"),
    ("1m", "uwsgigw-accel", "nginx", 0.8,
     "x-accel-redirect, (4) uwsgigw accel / (1) nginx alone, 1 MB"),
    ("1k", "uwsgigw-accel", "uwsgi", 1.0,
     "x-accel-redirect, (4) uwsgigw accel / (2) uWSGI static-map, 1 KB"),
)

# Reported beside the targets, no limit.
INFO = (
    ("1k", "uwsgigw-accel", "nginx", "(4) uwsgigw accel / (1) nginx alone, 1 KB"),
    ("1m", "uwsgigw-accel", "uwsgi", "(4) uwsgigw accel / (2) uWSGI static-map, 1 MB"),
    ("1k", "uwsgigw-accel", "uwsgi-accel", "(4) uwsgigw accel / uWSGI accel, 1 KB"),
    ("1m", "uwsgigw-accel", "uwsgi-accel", "(4) uwsgigw accel / uWSGI accel, 1 MB"),
    ("1k", "uwsgigw", "uwsgigw-accel", "(3) uwsgigw / (4) uwsgigw accel, 1 KB"),
    ("1k", "uwsgi", "nginx", "(2) uWSGI static-map / (1) nginx alone, 1 KB"),
    ("1m", "uwsgi", "nginx", "(2) uWSGI static-map / (1) nginx alone, 1 MB"),
)


def no_accel(probes: dict) -> list[str]:
    """The x-accel-redirect peers whose raw uwsgi answer had no X-Accel-Redirect
    (the worker sent the file itself: what is measured is not the accel path)."""
    return [key for key, per_file in probes.items() if bs.PEERS[key].accel and any(
        "x-accel-redirect:" not in p.get("raw", "").lower() for p in per_file.values())]


# Server CPU per request (lower is better): steadier than req/s on a busy box.
CPU_INFO = (
    ("1k", "uwsgigw", "uwsgi", "(3) uwsgigw / (2) uWSGI static-map, 1 KB"),
    ("1m", "uwsgigw", "uwsgi", "(3) uwsgigw / (2) uWSGI static-map, 1 MB"),
    ("1k", "uwsgigw-http", "granian", "(6) uwsgigw http-socket / (5) Granian, 1 KB"),
    ("1m", "uwsgigw-http", "granian", "(6) uwsgigw http-socket / (5) Granian, 1 MB"),
    ("1k", "uwsgigw-accel", "uwsgi-accel", "(4) uwsgigw accel / uWSGI accel, 1 KB"),
    ("1m", "uwsgigw-accel", "uwsgi-accel", "(4) uwsgigw accel / uWSGI accel, 1 MB"),
)


def targets(results, rounds: int, probes: dict | None = None) -> str:
    lines, oks = [], []
    plain = no_accel(probes or {})
    for name, a, b, limit, what in TARGETS:
        r = ratio(results, name, a, b)
        if r is None:
            lines.append("- [ ] %s >= %.1fx: not measured" % (what, limit))
            oks.append(None)
            continue
        ok = r[0] >= limit
        oks.append(ok)
        crosses = r[1] < limit <= r[2] or r[2] < limit <= r[1]
        lines.append("- [%s] %s: **%.2fx** (>= %.2fx; rounds %.2f-%.2f)%s%s%s" % (
            "x" if ok else " ", what, r[0], limit, r[1], r[2],
            "" if ok else "  **MISSED**", "  (within the noise)" if crosses else "",
            "  -- **no X-Accel-Redirect in its answer: the worker sent the file itself**"
            if a in plain or b in plain else ""))
    for name, a, b, what in INFO:
        r = ratio(results, name, a, b)
        if r is not None:
            lines.append("- (info) %s: %.2fx (rounds %.2f-%.2f)" % ((what,) + r))
    for name, a, b, what in CPU_INFO:
        r = ratio(results, name, a, b, "cpu")
        if r is not None:
            lines.append("- (info) server CPU/request, lower is better, %s: %.2fx "
                         "(rounds %.2f-%.2f)" % ((what,) + r))
    words = ("all met" if all(oks) else "not measured" if None in oks and all(
        o is not False for o in oks) else "**not all met**")
    lines += ["", "Issue 15 speed targets: %s (%d/%d met)%s" % (
        words, sum(1 for o in oks if o), len(oks),
        "" if rounds >= 3 else " -- **only %d round(s): the issue asks for the median of "
        "at least 3, so this is no verdict**" % rounds)]
    return "\n".join(lines)


def probes_table(probes: dict, name: str) -> str:
    """What each peer's first right answer looked like (through nginx where
    it sits behind nginx), and the raw answer of its uwsgi socket."""
    if not probes:
        return ""
    head = ["server", "status"] + [h.title() for h in SHOWN_HEADERS] + ["other headers"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    raws = []
    for key, per_file in probes.items():
        probe = per_file.get(name)
        if not probe:
            continue
        got = {}
        for k, v in probe["headers"]:
            got.setdefault(k.lower(), []).append(v)
        cells = [bs.PEERS[key].label, str(probe["status"])]
        cells += [", ".join(got.pop(h, [])) or "-" for h in SHOWN_HEADERS]
        for skip in ("date", "server", "connection", "keep-alive"):
            got.pop(skip, None)
        cells.append("; ".join("%s: %s" % (k, ", ".join(v)) for k, v in got.items()) or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if probe.get("raw"):
            raws.append("%s, raw uwsgi GET %s/%s.bin on its socket:\n\n```\n%s\n```" % (
                bs.PEERS[key].label, bs.ROUTE, name, probe["raw"]))
    return "\n".join(lines) + ("\n\n" + "\n\n".join(raws) if raws else "")


def render(args, results, probes: dict, wall: float, versions: dict) -> str:
    out = ["## Static files (issue 15)", "",
           "- Setup: 2 worker processes per server, request logging off (nginx "
           "`access_log off`); files `1k.bin` (1,024 bytes) and `1m.bin` (1,048,576 bytes) "
           "in one directory on /dev/shm, URL `%s/NAME.bin`; `wrk -t%d -c%d`, %g s warm-up + "
           "%g s measured, %d round(s), each round starting every server once (order "
           "rotated) and measuring 1 KB then 1 MB; medians over rounds (%.0f s)." % (
               bs.ROUTE, args.threads, args.connections, args.warmup, args.duration,
               args.rounds, wall),
           "- nginx: one worker, the uwsgi bench's frame (`uwsgi_buffers 16 64k`: a 1 MB "
           "answer stays in memory) plus `sendfile on; tcp_nopush on;`, a port per server. "
           "Direct servers (5, 6) get wrk straight on 127.0.0.1, keep-alive.",
           "- Versions: " + "; ".join("%s %s" % kv for kv in versions.items()),
           ]
    for key in bs.PEERS:
        if any(k == key for (_, k) in results):
            out.append("- %s: %s" % (bs.PEERS[key].label, bs.PEERS[key].note))
    warning = noise_warning({k: [r for r in runs if r.get("other") is not None]
                             for k, runs in results.items()})
    if warning:
        out.append(warning)
    out.append("- server CPU: the server's process tree (none for nginx alone: see nginx "
               "CPU); nginx CPU: the one nginx worker, per request. A run whose mean answer "
               "is shorter than the file fails (the app answered instead).")
    for name, title in (("1k", "1 KB file"), ("1m", "1 MB file")):
        body = table(results, name)
        if body:
            out += ["", "### %s" % title, "", body]
    out += ["", "### Issue 15 targets (this run)", "", targets(results, args.rounds, probes)]
    for name, title in (("1k", "1 KB"), ("1m", "1 MB")):
        body = probes_table(probes, name)
        if body:
            out += ["", "### What the answers looked like (%s, first right answer of the "
                    "run)" % title, "", body]
    out.append("")
    return "\n".join(out)
