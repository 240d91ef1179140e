"""The Markdown section of the HTTP bench (issue 14): tables and targets.

Every cell is the median over rounds; ``±`` is half the min-max range over
rounds in % of the median. A ratio is uwsgigw's median / the peer's median;
"rounds a-b" is the range of the per-round ratios (the two ran minutes apart
in the same round, so that range is the ratio's own spread).
"""

from __future__ import annotations

import statistics

import bench_http_servers as hs
from bench_report import noise_warning

BASE = {"direct": "uwsgigw", "nginx": "uwsgigw", "asgi": "uwsgigw-asgi",
        "crowd": "uwsgigw", "ws": "uwsgigw-asgi"}


def label(key: str) -> str:
    return hs.PEERS[key].label


def _median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _spread(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    med = statistics.median(values) if values else None
    return (max(values) - min(values)) / 2 / med * 100 if med else None


def _problems(runs: list[dict]) -> str:
    """Failed/unsupported rounds, as a short text ('' when none)."""
    failed = [" / ".join(r["failed"].split("\n"))[:200] for r in runs if "failed" in r]
    if failed:
        return "failed in %d/%d round(s): %s" % (len(failed), len(runs), failed[0])
    return ""


def ratio(results, part, mode, a, b, key="rps"):
    """(median a / median b, min and max of the per-round ratios) or None."""
    ra, rb = results.get((part, mode, a)), results.get((part, mode, b))
    if not ra or not rb:
        return None
    ma, mb = _median(ra, key), _median(rb, key)
    if ma is None or not mb:
        return None
    paired = [x[key] / y[key] for x, y in zip(ra, rb)
              if x.get(key) is not None and y.get(key)]
    return ma / mb, min(paired), max(paired)


def _fmt(value, fmt="{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _ratio_cell(r) -> str:
    if r is None:
        return "-"
    return "%.2fx (rounds %.2f-%.2f)" % r


def progress(r: dict) -> str:
    if "failed" in r:
        return "FAILED: " + r["failed"].splitlines()[0][:150]
    if "unsupported" in r:
        return "not supported: " + r["unsupported"][:150]
    if "mps" in r:
        return "%8.0f msg/s  server cpu %s us/msg  client cpu %.0f%% (busiest %.0f%%)%s" % (
            r["mps"], _fmt(r["cpu"], "{:.1f}"), r["client_cpu"], r["client_busiest"],
            "  ERRORS %d %s" % (r["errors"], r["why"]) if r["errors"] else "")
    text = "%8.0f req/s  p50 %s ms  p99 %s ms  cpu %s us/req  other %s%%" % (
        r["rps"], _fmt(r["p50"], "{:.2f}"), _fmt(r["p99"], "{:.2f}"),
        _fmt(r["cpu"], "{:.1f}"), _fmt(r["other"], "{:.0f}"))
    if r["errors"] or r["timeouts"]:
        text += "  ERRORS %d TIMEOUTS %d" % (r["errors"], r["timeouts"])
    if "crowd" in r:
        text += "  crowd " + " ".join("%s=%s" % kv for kv in r["crowd"].items())
    return text


def wrk_table(results, part, mode, with_nginx: bool) -> str:
    keys = [k for (p, m, k) in results if (p, m) == (part, mode)]
    if not keys:
        return ""
    base = BASE[part]
    head = ["server", "req/s", "req/s ±", "p50 ms", "p99 ms", "server CPU µs/req"]
    if with_nginx:
        head.append("nginx CPU µs/req")
    head += ["other CPU %", "errors", "uwsgigw / this (req/s)", "uwsgigw / this (CPU/req)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for key in keys:
        runs = results[(part, mode, key)]
        ok = [r for r in runs if "rps" in r]
        cells = [label(key), _fmt(_median(ok, "rps")), _fmt(_spread(ok, "rps"), "{:.1f}%"),
                 _fmt(_median(ok, "p50"), "{:.2f}"), _fmt(_median(ok, "p99"), "{:.2f}"),
                 _fmt(_median(ok, "cpu"), "{:.1f}")]
        if with_nginx:
            cells.append(_fmt(_median(ok, "nginx_cpu"), "{:.1f}"))
        cells.append(_fmt(_median(ok, "other"), "{:.0f}"))
        errors = sum(r["errors"] + r["timeouts"] for r in ok)
        problem = _problems(runs)
        cells.append(str(errors) + ("; " + problem if problem else ""))
        same = key == base
        cells.append("" if same else _ratio_cell(ratio(results, part, mode, base, key)))
        cells.append("" if same else _ratio_cell(ratio(results, part, mode, base, key, "cpu")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crowd_verdict(runs: list[dict]) -> str:
    ok = [r for r in runs if "rps" in r]
    if not ok:
        return "failed"
    if any(r["requests"] == 0 for r in ok):
        return "**starved** (no request answered in a round)"
    bad = sum(r["errors"] + r["timeouts"] for r in ok)
    if bad:
        return "**degraded**: %d errors/timeouts (> %s)" % (bad, "2 s")
    return "served"


def crowd_table(results) -> str:
    keys = [k for (p, m, k) in results if (p, m) == ("crowd", "crowd")]
    if not keys:
        return ""
    head = ["server", "alone: req/s", "p50 ms", "p99 ms", "with crowd: req/s", "p50 ms",
            "p99 ms", "answered; errors + timeouts", "the crowd at the end", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for key in keys:
        calm = [r for r in results.get(("crowd", "calm", key), []) if "rps" in r]
        runs = results[("crowd", "crowd", key)]
        crowd = [r for r in runs if "rps" in r]
        last = crowd[-1]["crowd"] if crowd else {}
        state = ("idle %s open, %s closed, %s failed; slow %s open, %s reconnects" % tuple(
            last.get(k, "?") for k in ("idle_open", "idle_closed", "idle_failed", "slow_open",
                                       "slow_reconnects"))) if last else "-"
        verdict = crowd_verdict(runs)
        problem = _problems(runs)
        if problem:
            verdict += "; " + problem
        lines.append("| " + " | ".join([
            label(key), _fmt(_median(calm, "rps")), _fmt(_median(calm, "p50"), "{:.2f}"),
            _fmt(_median(calm, "p99"), "{:.2f}"), _fmt(_median(crowd, "rps")),
            _fmt(_median(crowd, "p50"), "{:.2f}"), _fmt(_median(crowd, "p99"), "{:.2f}"),
            "%d; %d" % (sum(r["requests"] for r in crowd),
                        sum(r["errors"] + r["timeouts"] for r in crowd)), state, verdict]) + " |")
    return "\n".join(lines)


def ws_status(runs: list[dict]) -> str:
    unsupported = [r["unsupported"] for r in runs if "unsupported" in r]
    if unsupported:
        return "not supported by this build (%s)" % unsupported[0]
    problem = _problems(runs)
    errors = sum(r.get("errors", 0) for r in runs if "mps" in r)
    whys = [r["why"] for r in runs if r.get("why")]
    return problem or ("%d errors: %s" % (errors, whys[0]) if errors else "ok")


def ws_table(results) -> str:
    keys = [k for (p, m, k) in results if p == "ws"]
    if not keys:
        return ""
    lines = ["| server | messages/s | ± | server CPU µs/msg | client CPU % of a core "
             "(busiest process) | uwsgigw / this | status |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key in keys:
        runs = results[("ws", "ws", key)]
        ok = [r for r in runs if "mps" in r]
        lines.append("| " + " | ".join([
            label(key), _fmt(_median(ok, "mps")), _fmt(_spread(ok, "mps"), "{:.1f}%"),
            _fmt(_median(ok, "cpu"), "{:.1f}"),
            "%s (%s)" % (_fmt(_median(ok, "client_cpu")), _fmt(_median(ok, "client_busiest"))),
            "" if key == BASE["ws"] else _ratio_cell(
                ratio(results, "ws", "ws", BASE["ws"], key, "mps")),
            ws_status(runs)]) + " |")
    return "\n".join(lines)


def targets(results, rounds: int) -> tuple[str, dict]:
    """The issue-14 targets checked against this run; (text, bar -> met?)."""
    lines, bars = [], {}

    def add(kind, text, r, limit, at_least=True, bar=None):
        if r is None:
            lines.append("- [ ] %s %s: not measured" % (kind, text))
            if bar:
                bars.setdefault(bar, []).append(None)
            return
        ok = r[0] >= limit if at_least else r[0] <= limit
        lines.append("- [%s] %s %s: **%.2fx** (%s %.2fx; rounds %.2f-%.2f)%s" % (
            "x" if ok else " ", kind, text, r[0], ">=" if at_least else "<=", limit,
            r[1], r[2], "" if ok else "  **MISSED**"))
        if bar:
            bars.setdefault(bar, []).append(ok)

    add("**bar**", "behind nginx (proxy_pass + keepalive), req/s vs Granian",
        ratio(results, "nginx", "nginx", "uwsgigw", "granian"), 1.0, bar="nginx")
    add("goal", "behind nginx, req/s vs Granian",
        ratio(results, "nginx", "nginx", "uwsgigw", "granian"), 1.2)
    add("goal", "behind nginx, req/s vs uwsgigw's own uwsgi_pass",
        ratio(results, "nginx", "nginx", "uwsgigw", "uwsgigw-uwsgi"), 1.0)
    add("goal", "behind nginx, server CPU/request vs Granian",
        ratio(results, "nginx", "nginx", "uwsgigw", "granian", "cpu"), 0.6, False)
    add("**bar**", "direct keep-alive, req/s vs uWSGI http11-socket",
        ratio(results, "direct", "direct", "uwsgigw", "uwsgi-http11"), 1.0, bar="direct")
    add("goal", "direct keep-alive, req/s vs Granian",
        ratio(results, "direct", "direct", "uwsgigw", "granian"), 1.0)
    add("**bar**", "ASGI behind nginx, req/s vs Uvicorn",
        ratio(results, "asgi", "nginx", "uwsgigw-asgi", "uvicorn"), 0.9, bar="asgi")
    add("**bar**", "ASGI direct, req/s vs Uvicorn",
        ratio(results, "asgi", "direct", "uwsgigw-asgi", "uvicorn"), 0.9, bar="asgi")
    add("goal", "ASGI behind nginx, req/s vs Uvicorn",
        ratio(results, "asgi", "nginx", "uwsgigw-asgi", "uvicorn"), 1.0)
    add("goal", "ASGI direct, req/s vs Uvicorn",
        ratio(results, "asgi", "direct", "uwsgigw-asgi", "uvicorn"), 1.0)
    ws_runs = results.get(("ws", "ws", "uwsgigw-asgi"), [])
    unsupported = [r["unsupported"] for r in ws_runs if "unsupported" in r]
    if unsupported:
        lines.append("- [ ] goal WebSocket echo messages/s vs Uvicorn: **not supported by "
                     "this build** (%s)" % unsupported[0])
    else:
        add("goal", "WebSocket echo messages/s vs Uvicorn",
            ratio(results, "ws", "ws", "uwsgigw-asgi", "uvicorn", "mps"), 1.0)
    crowd = results.get(("crowd", "crowd", "uwsgigw"))
    if crowd:
        verdict = crowd_verdict(crowd)
        calm = [r for r in results.get(("crowd", "calm", "uwsgigw"), []) if "rps" in r]
        p99 = _median([r for r in crowd if "rps" in r], "p99")
        lines.append("- [%s] goal 200 idle keep-alive + 50 slow-header clients do not starve "
                     "uwsgigw (2 workers x 1 thread): %s; normal client p99 %s ms with the "
                     "crowd, %s ms without" % (
                         "x" if verdict == "served" else " ", verdict, _fmt(p99, "{:.2f}"),
                         _fmt(_median(calm, "p99"), "{:.2f}")))
    met = {}
    for bar, oks in bars.items():
        met[bar] = None if None in oks else all(oks)
    if bars:
        words = {True: "met", False: "**not met**", None: "not measured"}
        lines.append("")
        lines.append("Bars for `resolved` (behind nginx >= 1.0x Granian; direct >= 1.0x uWSGI "
                     "http11-socket; ASGI >= 0.9x Uvicorn behind nginx and direct): " +
                     "; ".join("%s %s" % (b, words[m]) for b, m in met.items()) +
                     ("" if rounds >= 3 else " -- **only %d round(s): issue 14 asks for the "
                      "median of at least 3, so this is no verdict**" % rounds))
    return "\n".join(lines), met


def render(args, results, wall: float, versions: dict) -> str:
    out = ["## HTTP listener (issue 14)", "",
           "- Setup: 2 worker processes per server (1 thread where there are threads), "
           "request logging off, TCP on 127.0.0.1; `wrk -t1 -c%d`, %g s warm-up + %g s "
           "measured, %d round(s), each round starting every server once, order rotated; "
           "medians over rounds (%.0f s)." % (
               args.http_connections, args.warmup, args.duration, args.rounds, wall),
           "- Behind nginx: one nginx worker, nginx/site-http.conf per server (proxy_pass, "
           "HTTP/1.1, upstream `keepalive 16`); uwsgigw's uwsgi path with the uwsgi bench's "
           "`uwsgi_pass unix:` block.",
           "- Versions: " + "; ".join("%s %s" % kv for kv in versions.items()),
           ]
    for key in sorted({k for (_, _, k) in results}):
        if hs.PEERS[key].note:
            out.append("- %s: %s" % (label(key), hs.PEERS[key].note))
    warning = noise_warning({k: [r for r in runs if r.get("other") is not None]
                             for k, runs in results.items()})
    if warning:
        out.append(warning)
    out.append("- Ratios: uwsgigw's median / the server's median; \"rounds a-b\": the "
               "per-round ratios. For CPU/request lower is better.")
    sections = [
        ("### Direct, keep-alive (WSGI hello)", wrk_table(results, "direct", "direct", False)),
        ("### Behind nginx proxy_pass with upstream keepalive (WSGI hello)",
         wrk_table(results, "nginx", "nginx", True)),
        ("### ASGI hello, direct", wrk_table(results, "asgi", "direct", False)),
        ("### ASGI hello, behind nginx with upstream keepalive",
         wrk_table(results, "asgi", "nginx", True)),
        ("### Latency of a normal client (wrk -c%d, timeout %s) alone and beside %d idle "
         "keep-alive + %d slow-header connections" % (
             4, "2 s", args.crowd_idle, args.crowd_slow), crowd_table(results)),
        ("### WebSocket echo (%d client processes, %d connections, %d messages in flight "
         "each, 32-byte text)" % (args.ws_clients, args.ws_connections, args.ws_window),
         ws_table(results)),
    ]
    for title, body in sections:
        if body:
            out += ["", title, "", body]
    text, _ = targets(results, args.rounds)
    out += ["", "### Issue 14 targets (this run)", "", text, ""]
    return "\n".join(out)
