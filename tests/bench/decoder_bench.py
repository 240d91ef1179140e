"""Decoder microbenchmark: time per packet, C vs Python, with the environ built.

    python tests/bench/decoder_bench.py [--quick] [--trials N] [--best-of N]

Two packets: an nginx-typical one (the uwsgi_params vars plus the headers a
browser sends: about 20 vars, about 600 bytes) and a 60 KB one (the same plus
a big cookie and many long headers, close to nginx's 64 KB cap). For each
backend (``uwsgigw.backend.select("c" | "python")``) two timings:

- decode: ``backend.decode(data, 65535)``
- decode + environ: what a worker does per request before calling the app.
  Python: ``decode`` then ``uwsgigw.protocol.environ.build_environ(base,
  packet.items, packet.modifier1)``; C: ``uwsgigw.wsgi.fastpath.environ_from``,
  the one C call the worker makes (the cffi decode + build_environ when
  the fast path is not built).

Each cell is measured in several trials with the backends interleaved; a
trial is the best of a few timeit repeats (``number`` loops sized so a repeat
takes about 0.05 s), and the cell is the median over trials ("best-of-N
median"), which holds up on a shared, busy machine. The C/Python ratio is of
those medians.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MAX_BLOCK = 65535

TYPICAL_VARS = [
    ("QUERY_STRING", "page=2"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/articles/uwsgi?page=2"),
    ("PATH_INFO", "/articles/uwsgi"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("REMOTE_ADDR", "203.0.113.57"),
    ("REMOTE_PORT", "51234"),
    ("SERVER_PORT", "80"),
    ("SERVER_NAME", "example.com"),
    ("HTTP_HOST", "example.com"),
    ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0"),
    ("HTTP_ACCEPT", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
    ("HTTP_COOKIE", "sessionid=8f14e45fceea167a5a36dedd4bea2543"),
    ("HTTP_REFERER", "http://example.com/articles/"),
]


def encode(pairs: list[tuple[str, str]], modifier1: int = 0) -> bytes:
    block = bytearray()
    for key, value in pairs:
        k, v = key.encode("latin-1"), value.encode("latin-1")
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    if len(block) > MAX_BLOCK:
        raise ValueError("vars block of %d bytes does not fit a uwsgi packet" % len(block))
    return struct.pack("<BHB", modifier1, len(block), 0) + bytes(block)


def packets() -> dict[str, tuple[bytes, int]]:
    """label -> (packet bytes, number of vars)."""
    cookie = "; ".join("c%03d=%s" % (i, "v" * 180) for i in range(100))  # ~19 KB
    big = [(k, cookie if k == "HTTP_COOKIE" else v) for k, v in TYPICAL_VARS]
    big += [("HTTP_X_PAD_%02d" % i, "p" * 1000) for i in range(40)]
    return {
        "typical": (encode(TYPICAL_VARS), len(TYPICAL_VARS)),
        "60 KB": (encode(big), len(big)),
    }


def load_backends() -> tuple[dict, dict]:
    """(name -> decode function, name -> why it is missing)."""
    found, missing = {}, {}
    try:
        from uwsgigw.backend import DecoderUnavailable, select
    except ImportError:  # the selector not written yet: use the modules
        for name, module in (("c", "uwsgigw.protocol.decoder_c"), ("python", "uwsgigw.protocol.decoder_py")):
            try:
                found[name] = __import__(module, fromlist=["decode"]).decode
            except ImportError as exc:
                missing[name] = str(exc)
        return found, missing
    for name in ("c", "python"):
        try:
            found[name] = select(name).decode
        except (DecoderUnavailable, ImportError) as exc:
            missing[name] = str(exc).split(";")[0]
    return found, missing


def c_fastpath():
    """uwsgigw.wsgi.fastpath.environ_from, or None when the C fast path is not built."""
    try:
        from uwsgigw.wsgi.fastpath import environ_from
    except ImportError:
        return None
    return environ_from


def make_timer(stmt: str, env: dict, target: float) -> tuple[timeit.Timer, int]:
    """A timer and the loop count that makes one repeat last about ``target`` s."""
    timer = timeit.Timer(stmt, globals=env)
    number, elapsed = 1, 0.0
    while elapsed < target / 4:
        number *= 2
        elapsed = timer.timeit(number)
    return timer, max(1, int(number * target / elapsed))


def measure(quick: bool = False, trials: int | None = None, best_of: int | None = None) -> dict:
    """Per cell: ``trials`` x (best of ``best_of`` timeit repeats), median of the trials.

    Best-of-N drops the repeats another process interrupted; the median over
    trials, taken with the backends interleaved, keeps one lucky or unlucky
    trial (and drift of a shared machine) from deciding the ratio.
    """
    from uwsgigw.protocol.environ import base_environ, build_environ

    trials = trials or (3 if quick else 7)
    best_of = best_of or (3 if quick else 5)
    target = 0.02 if quick else 0.05
    base = base_environ(errors=None, file_wrapper=None, multithread=False, multiprocess=True)
    backends, missing = load_backends()
    rows = []
    for label, (data, nvars) in packets().items():
        environs, cells = {}, []
        for name, decode in backends.items():
            packet = decode(data, MAX_BLOCK)
            if packet is None or packet.consumed != len(data):
                raise RuntimeError("%s decoder: packet %r not decoded whole" % (name, label))
            environs[name] = build_environ(base, packet.items, packet.modifier1)[0]
            full = "p = decode(data, mb); build(base, p.items, p.modifier1)"
            fast = c_fastpath() if name == "c" else None
            if fast is not None:
                environs[name] = fast(data, MAX_BLOCK, base)[0]
                full = "fast(data, mb, base)"
            env = {"decode": decode, "build": build_environ, "base": base,
                   "data": data, "mb": MAX_BLOCK, "fast": fast}
            for kind, stmt in (("decode", "decode(data, mb)"), ("full", full)):
                timer, number = make_timer(stmt, env, target)
                cells.append((name, kind, timer, number))
        if len(environs) == 2 and environs["c"] != environs["python"]:
            raise RuntimeError("C and Python environs differ for packet %r" % label)
        samples: dict[tuple[str, str], list[float]] = {}
        for trial in range(trials):
            order = cells if trial % 2 == 0 else cells[::-1]  # interleave backends
            for name, kind, timer, number in order:
                best = min(timer.repeat(repeat=best_of, number=number)) / number
                samples.setdefault((name, kind), []).append(best)
        for name in backends:
            dec, full = samples[(name, "decode")], samples[(name, "full")]
            rows.append({"packet": label, "bytes": len(data), "vars": nvars,
                         "backend": name,
                         "decode": (statistics.median(dec), min(dec)),
                         "full": (statistics.median(full), min(full))})
    return {"rows": rows, "missing": missing, "trials": trials, "best_of": best_of}


def ratios(results: dict) -> dict:
    """packet label -> Python time / C time for decode + environ (None: no C)."""
    by = {(r["packet"], r["backend"]): r for r in results["rows"]}
    out = {}
    for label in dict.fromkeys(r["packet"] for r in results["rows"]):
        c, py = by.get((label, "c")), by.get((label, "python"))
        out[label] = py["full"][0] / c["full"][0] if c and py else None
    return out


def format_markdown(results: dict) -> str:
    lines = ["| packet | bytes | vars | backend | decode µs | decode + environ µs "
             "| best trial, decode + environ µs |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append("| %s | %d | %d | %s | %.2f | %.2f | %.2f |" % (
            r["packet"], r["bytes"], r["vars"], r["backend"], r["decode"][0] * 1e6,
            r["full"][0] * 1e6, r["full"][1] * 1e6))
    lines.append("")
    by = {(r["packet"], r["backend"]): r for r in results["rows"]}
    for label, ratio in ratios(results).items():
        if ratio is None:
            continue
        py, c = by[(label, "python")], by[(label, "c")]
        lines.append("- %s: C is **%.1fx** faster than Python for decode + environ "
                     "(best trials: %.1fx; decode alone: %.1fx)" % (
                         label, ratio, py["full"][1] / c["full"][1],
                         py["decode"][0] / c["decode"][0]))
    for name, why in results["missing"].items():
        lines.append("- %s backend not available: %s" % (name, why))
    lines.append("- each cell: median over %d trials of the best of %d timeit repeats "
                 "(backends interleaved); the best trial is also shown; Python %s" % (
                     results["trials"], results["best_of"], sys.version.split()[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="uwsgi decoder + environ microbenchmark")
    p.add_argument("--quick", action="store_true", help="fewer, shorter trials")
    p.add_argument("--trials", type=int, help="trials per cell (7; quick 3)")
    p.add_argument("--best-of", type=int, help="timeit repeats per trial (5; quick 3)")
    args = p.parse_args(argv)
    print(format_markdown(measure(args.quick, args.trials, args.best_of)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
