"""The Markdown report of `make bench-ab`: two uwsgigw builds, the verdict.

The verdict per workload compares the median server CPU µs/request of the
working tree's build with the base build's: "within 5%" means the ratio
current/base is at most 1.05 (a faster build passes too: the issue asks that
no speed be lost). The rounds are paired (both builds run in every round, one
right after the other), so the report also shows each round's own ratio: their
range is the noise the median has to be read against.
"""

from __future__ import annotations

import statistics

import bench_procs as procs
from bench_report import SERVER_NAMES, noise_warning, summarize

BUILD_NAMES = {"uwsgigw": "current", "uwsgigw-base": "base"}
PER_ROUND_MAX = 12  # more rounds than this: min-max instead of every value


def spread(values: list[float]) -> float:
    """Half the min-max range in % of the median."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / 2 / mid * 100 if mid else 0.0


def per_round(values: list[float], fmt: str) -> str:
    if len(values) > PER_ROUND_MAX:
        return (fmt + "–" + fmt).format(min(values), max(values))
    return " ".join(fmt.format(v) for v in values)


def paired_ratios(cur: list[dict], base: list[dict], key: str) -> list[float]:
    """Round by round current/base (the two lists are in round order)."""
    return [c[key] / b[key] for c, b in zip(cur, base) if b[key]]


def ab_table(results: dict, log_on: bool, workloads: list[str],
             servers: list[str]) -> str:
    head = ["workload", "build", "server CPU µs/req", "CPU ±", "CPU µs/req per round",
            "req/s", "req/s ±", "p50 ms", "p99 ms", "other CPU %", "errors"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * 2 + ["---"] + ["---:"] * 6) + "|"]
    for wl in workloads:
        for server in servers:
            runs = results.get((log_on, wl, server))
            if not runs:
                continue
            s = summarize(runs)
            cpu = [r["cpu"] for r in runs]
            name = BUILD_NAMES.get(server) or SERVER_NAMES.get(server, server)
            lines.append("| " + " | ".join([
                wl, name, "%.1f" % s["cpu"], "%.1f%%" % spread(cpu), per_round(cpu, "{:.1f}"),
                "{:,.0f}".format(s["rps"]), "%.1f%%" % s["spread"], "%.2f" % s["p50"],
                "%.2f" % s["p99"], "%.0f" % s["other"], str(s["errors"])]) + " |")
        cur, base = results.get((log_on, wl, "uwsgigw")), results.get((log_on, wl, "uwsgigw-base"))
        if cur and base:
            sc, sb = summarize(cur), summarize(base)
            cpu_r, rps_r = paired_ratios(cur, base, "cpu"), paired_ratios(cur, base, "rps")
            lines.append("| " + " | ".join([
                wl, "**current/base**", "**%.3f**" % (sc["cpu"] / sb["cpu"]), "",
                "paired: " + per_round(cpu_r, "{:.3f}"), "%.3f" % (sc["rps"] / sb["rps"]),
                "paired %s" % per_round(rps_r, "{:.2f}") if len(rps_r) <= 6 else
                "paired ±%.1f%%" % spread(rps_r),
                "%.2f" % (sc["p50"] / sb["p50"]), "%.2f" % (sc["p99"] / sb["p99"]),
                "", ""]) + " |")
    return "\n".join(lines)


def verdicts(results: dict, log_on: bool, workloads: list[str], limit: float,
             rounds: int) -> list[str]:
    out = []
    for wl in workloads:
        cur, base = results.get((log_on, wl, "uwsgigw")), results.get((log_on, wl, "uwsgigw-base"))
        if not cur or not base:
            out.append("- %s: not measured" % wl)
            continue
        ratio = summarize(cur)["cpu"] / summarize(base)["cpu"]
        ok = ratio <= 1 + limit / 100
        line = "- **%s: CPU/req within %g%% of base: %s (ratio %.2f)**" % (
            wl, limit, "yes" if ok else "no", ratio)
        notes = []
        paired = paired_ratios(cur, base, "cpu")
        if paired and min(paired) <= 1 + limit / 100 < max(paired):
            notes.append("per-round ratios %.3f–%.3f straddle %.2f: noise can tip it, "
                         "rerun with more rounds or on a quieter machine" % (
                             min(paired), max(paired), 1 + limit / 100))
        errors = summarize(cur)["errors"] + summarize(base)["errors"]
        if errors:
            notes.append("%d errors: not comparable" % errors)
        if rounds < 5:
            notes.append("only %d round(s): a smoke run, not a measurement" % rounds)
        out.append(line + ("; " + "; ".join(notes) if notes else ""))
    return out


def tick_note(results: dict, limit: float) -> str:
    """How far the 10 ms CPU ticks of /proc can move a run's CPU reading.

    utime and stime of each of the n processes are whole ticks, cut down, at
    both reads: each of the 2n differences is off by less than a tick (worst
    case 2n ticks in all), and, as the cut-off parts are uniform, by a
    standard deviation of sqrt(2n/6) = sqrt(n/3) ticks in all."""
    least = min((r for runs in results.values() for r in runs if r.get("cpu_s")),
                key=lambda r: r["cpu_s"], default=None)
    if least is None:
        return "- CPU tick resolution: no run used measurable CPU"
    tick, n, cpu_s = 1 / procs.CLK_TCK, least["nprocs"], least["cpu_s"]
    worst, typical = 2 * n * tick / cpu_s * 100, (n / 3) ** 0.5 * tick / cpu_s * 100
    return ("- CPU tick resolution: /proc counts CPU in %d ms ticks. The least CPU a run "
            "used was %.2f s (%d processes): rounding moves that reading by ±%.1f%% at "
            "worst, ±%.1f%% typically (σ), and the median over rounds less.%s" % (
                tick * 1000, cpu_s, n, worst, typical,
                " **Too coarse for a %g%% verdict: use a longer --duration.**" % limit
                if typical > limit / 5 else ""))


def render(info: dict, results: dict, builds: list, workloads_doc: dict) -> str:
    args = info["settings"]
    current, base = builds
    m = info["machine"]
    out = ["# uwsgigw A/B benchmark", "",
           "Produced by `%s` on %s (%.0f s)." % (info["command"], info["date"], info["wall"]),
           "",
           "- Machine: %s CPUs, %s, Linux %s; load %s" % (
               m["nproc"], m["cpu"], m["kernel"], m["load"])]
    for b in builds:
        out.append("- %s (`%s`): %s%s; `%s`; C extensions: %s; decoder logged: %s; "
                   "venv %s" % (
                       BUILD_NAMES[b.name], b.name, b.rev.label,
                       " (%s)" % b.rev.detail if b.rev.detail else "", b.version,
                       ", ".join(b.extensions) or "none",
                       info["decoders"].get(b.name) or "?", b.venv))
        if b.completed:
            out.append("  - its wheel lacked %d module(s) of its own sources (packaging of "
                       "revisions before 96d0f33), copied in from them: %s" % (
                           len(b.completed), ", ".join(b.completed)))
    diffs = info["package_diffs"]
    out.append("- Other packages in the two venvs: %s" % (
        "identical (Flask %s)" % current.packages.get("flask", "?") if not diffs
        else "**differ**: " + "; ".join(diffs) + " (current vs base)"))
    out.append("- Versions: " + "; ".join("%s %s" % kv for kv in info["versions"].items()))
    out.append("- Setup: `make bench`'s (master + 2 workers on a unix socket, one nginx "
               "worker, `wrk -t%d -c%d`), %g s warm-up + %g s measured per run; %d round(s), "
               "each running both builds back to back, the order alternating (round 1 "
               "current first, round 2 base first, ...). Medians over rounds." % (
                   args.threads, args.connections, args.warmup, args.duration, args.rounds))
    out.append(tick_note(results, args.limit))
    out.append("- CPU ± and req/s ±: half the min-max range over rounds, in % of the median; "
               "paired: the ratio current/base of each round (both ran within seconds of "
               "each other, so machine drift mostly cancels in it).")
    warning = noise_warning(results)
    if warning:
        out.append(warning)
    if args.rounds < 5:
        out.append("- **%d round(s) only**: the issue asks for at least 5; this is a "
                   "smoke run." % args.rounds)
    title = "%s vs %s" % (current.rev.label, base.rev.label)
    variants = [(True, "Request log on (as deployed)")]
    if args.log_off:
        variants.append((False, "Request log off (`--disable-logging`)"))
    out += ["", "## A/B: %s" % title, ""]
    for log_on, heading in variants:
        out += ["### %s" % heading, "",
                ab_table(results, log_on, args.workloads, args.servers), "",
                *verdicts(results, log_on, args.workloads, args.limit, args.rounds), ""]
    out += ["Workloads: " + "; ".join("`%s` %s" % (w, workloads_doc[w].what)
                                      for w in args.workloads), ""]
    return "\n".join(out)
