"""The Markdown report of `make bench`: header, tables, issue-7 targets."""

from __future__ import annotations

import statistics

BASELINE = "uwsgi"
SERVER_NAMES = {"uwsgigw": "uwsgigw", "uwsgi": "uWSGI", "gunicorn": "Gunicorn"}

# (key, header, format, lower is better)
METRICS = (
    ("rps", "req/s", "{:,.0f}", False),
    ("p50", "p50 ms", "{:.2f}", True),
    ("p99", "p99 ms", "{:.2f}", True),
    ("cpu", "server CPU µs/req", "{:,.0f}", True),
    ("pss", "worker PSS MB", "{:.1f}", True),
)


def summarize(runs: list[dict]) -> dict:
    """Median over rounds of every metric, plus the req/s spread and errors."""
    out = {}
    for key in ("rps", "p50", "p99", "cpu", "nginx_cpu", "pss", "other"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    rps = [r["rps"] for r in runs]
    out["spread"] = (max(rps) - min(rps)) / 2 / out["rps"] * 100 if out["rps"] else 0.0
    out["errors"] = sum(r["errors"] for r in runs)
    out["rounds"] = len(runs)
    return out


def _cell(value, fmt: str, base) -> str:
    if value is None:
        return "?"
    text = fmt.format(value)
    if base:
        text += " (%.2fx)" % (value / base)
    return text


def table(results: dict, log_on: bool, workloads: dict, servers: list[str]) -> str:
    head = ["workload", "server"] + [m[1] for m in METRICS] + [
        "nginx CPU µs/req", "req/s ±", "other CPU %", "errors"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for wl_name in workloads:
        rows = {s: summarize(results[(log_on, wl_name, s)])
                for s in servers if (log_on, wl_name, s) in results}
        if not rows:
            continue
        base = rows.get(BASELINE)
        for server, row in rows.items():
            cells = [wl_name, SERVER_NAMES.get(server, server)]
            for key, _, fmt, _ in METRICS:
                ref = base[key] if base and server != BASELINE else None
                cells.append(_cell(row[key], fmt, ref))
            cells.append(_cell(row["nginx_cpu"], "{:,.0f}", None))
            cells.append("%.1f%%" % row["spread"])
            cells.append(_cell(row["other"], "{:.0f}", None))
            cells.append(str(row["errors"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(results, log_on, wl, key, server="uwsgigw", base=BASELINE):
    a, b = results.get((log_on, wl, server)), results.get((log_on, wl, base))
    if not a or not b:
        return None
    va, vb = summarize(a)[key], summarize(b)[key]
    return va / vb if va is not None and vb else None


def targets(results: dict, decoder_ratios: dict) -> str:
    """The issue-7 targets, checked against this run (medians, log on)."""
    checks = []

    def add(label, ratio, limit, at_least=True):
        if ratio is None:
            checks.append("- [ ] %s: not measured" % label)
            return
        ok = ratio >= limit if at_least else ratio <= limit
        checks.append("- [%s] %s: **%.2fx** (target %s %.2fx)%s" % (
            "x" if ok else " ", label, ratio, ">=" if at_least else "<=", limit,
            "" if ok else "  **MISSED**"))

    add("hello req/s vs uWSGI", _ratio(results, True, "hello", "rps"), 1.0)
    add("hello CPU/req vs uWSGI", _ratio(results, True, "hello", "cpu"), 1.3, False)
    add("hello CPU/req vs Gunicorn", _ratio(results, True, "hello", "cpu", base="gunicorn"),
        0.2, False)
    add("flask req/s vs uWSGI", _ratio(results, True, "flask", "rps"), 1.0)
    add("upload20m req/s vs uWSGI", _ratio(results, True, "upload20m", "rps"), 0.9)
    add("resp1m req/s vs uWSGI", _ratio(results, True, "resp1m", "rps"), 0.9)
    pss = [r for r in (_ratio(results, True, wl, "pss")
                       for wl in ("hello", "flask", "post64k", "resp1m", "upload20m"))
           if r is not None]
    add("worker PSS vs uWSGI (worst workload)", max(pss) if pss else None, 1.5, False)
    add("request log on vs on: hello req/s vs uWSGI",
        _ratio(results, True, "hello", "rps"), 0.9)
    for label, ratio in decoder_ratios.items():
        add("decoder + environ, C vs Python (%s)" % label, ratio, 3.0)
    costs = []
    for server in ("uwsgigw", "uwsgi", "gunicorn"):
        on, off = results.get((True, "hello", server)), results.get((False, "hello", server))
        if on and off:
            costs.append("%s %+.0f µs" % (SERVER_NAMES[server],
                                           summarize(on)["cpu"] - summarize(off)["cpu"]))
    if costs:
        checks.append("- (info) CPU cost of the request log, hello, log on - log off: "
                      + ", ".join(costs) + " per request")
    return "\n".join(checks)


def noise_warning(results: dict) -> str | None:
    """A warning line when other processes used much CPU during the runs."""
    others = [r["other"] for runs in results.values() for r in runs if "other" in r]
    if not others:
        return None
    median = statistics.median(others)
    if median < 25:
        return None
    return ("- **Warning: the machine was busy** (median %.0f%% of a CPU used by other "
            "processes during runs, max %.0f%%): req/s and latency are noisy; server "
            "CPU µs/req and PSS are the reliable columns. Rerun on a quiet machine "
            "for throughput." % (median, max(others)))


def render(info: dict, results: dict, workloads: dict, decoder_text: str,
           decoder_ratios: dict, http_text: str = "") -> str:
    args = info["settings"]
    servers = args.servers
    m, v = info["machine"], info["versions"]
    out = ["# uwsgigw benchmark", "",
           "Produced by `%s` on %s (%.0f s)." % (info["command"], info["date"], info["wall"]),
           "",
           "- Machine: %s CPUs, %s, Linux %s; load %s" % (
               m["nproc"], m["cpu"], m["kernel"], m["load"]),
           "- Versions: " + "; ".join("%s %s" % kv for kv in v.items())]
    if getattr(args, "only", None) in ("http", "static"):
        return "\n".join(out + ["", http_text])
    if http_text:
        out += ["", "## uwsgi protocol behind nginx `uwsgi_pass` (issue 7)", ""]
    out += [
           "- uwsgigw decoder backend: %s" % (info["decoder"] or "unknown"),
           "- Setup: each server with a master + 2 workers on a unix socket, buffer-size "
           "and post-buffering 65536 (uWSGI, uwsgigw); one nginx worker, `uwsgi_pass unix:`, "
           "access_log off; `wrk -t%d -c%d`, %g s warm-up + %g s measured per run, "
           "%d round(s) with the server order rotated; medians over rounds." % (
               args.threads, args.connections, args.warmup, args.duration, args.rounds),
           "- Server CPU: utime+stime of the whole server tree (master + workers) over "
           "the measured run / requests. PSS: mean per worker after the run. "
           "Ratios in parentheses are to uWSGI (for p50/p99/CPU/PSS lower is better). "
           "req/s ±: half the min-max range over rounds. Other CPU %: CPU used by "
           "processes outside the bench during the run (% of one CPU); high means noisy.",
           ]
    warning = noise_warning(results)
    if warning:
        out.append(warning)
    for server, note in sorted(info["notes"].items()):
        out.append("- %s: %s" % (SERVER_NAMES.get(server, server), note))
    out += ["", "## Request log on (uWSGI, uwsgigw default; Gunicorn --access-logfile)", "",
            table(results, True, workloads, servers), ""]
    if args.log_off_rounds and args.log_off_workloads:
        out += ["## Request log off (`--disable-logging`; Gunicorn without access log), "
                "%d round(s)" % args.log_off_rounds, "",
                table(results, False, workloads, servers), ""]
    out += ["", "Workloads: " + "; ".join(
        "`%s` %s" % (w.name, w.what) for w in workloads.values()
        if w.name in args.workloads or w.name in args.log_off_workloads), ""]
    if decoder_text:
        out += ["## Decoder microbenchmark", "", decoder_text, ""]
    out += ["## Issue 7 targets (this run)", "", targets(results, decoder_ratios), ""]
    if http_text:
        out += [http_text]
    return "\n".join(out)
