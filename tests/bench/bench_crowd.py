"""The idle/slow crowd of the HTTP bench (issue 14, "Connections"): run as its
own process group by bench_http.py, stopped by it with SIGTERM.

    python bench_crowd.py HOST PORT [--idle 200] [--slow 50]

- ``--idle`` keep-alive connections: each sends one complete GET, reads the
  answer, then sits idle. One the server closes is not reopened (a server
  without keep-alive ends up with none).
- ``--slow`` slow-header clients: each sends one byte of a request head per
  second (a head long enough to last the whole run). One the server closes
  (its header timeout) reconnects after a second, as a slowloris would.

Prints ``READY ...`` once the idle connections have had their answers (or 10 s
went by) and the slow ones are connected, then a ``CROWD ...`` line of counts
every second (the bench reads the last one).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-crowd-idle\r\n\r\n"
SLOW_HEAD = (b"GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-crowd-slow\r\n"
             + b"".join(b"X-Slow-%d: %s\r\n" % (i, b"s" * 40) for i in range(20)) + b"\r\n")


class Counts:
    def __init__(self) -> None:
        self.idle_open = 0        # idle connections that got their answer and are open
        self.idle_failed = 0      # could not connect or got no answer
        self.idle_closed = 0      # closed by the server while idle
        self.slow_open = 0
        self.slow_reconnects = 0  # slow connections the server closed (and we reopened)
        self.slow_failed = 0      # connect attempts that failed

    def line(self) -> str:
        return " ".join("%s=%d" % kv for kv in vars(self).items())


async def idle_conn(host: str, port: int, counts: Counts) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        writer.write(REQUEST)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError):
        counts.idle_failed += 1
        return
    counts.idle_open += 1
    try:
        while await reader.read(65536):  # the body, then nothing until the server closes
            pass
    except OSError:
        pass
    counts.idle_open -= 1
    counts.idle_closed += 1
    writer.close()


async def slow_conn(host: str, port: int, counts: Counts) -> None:
    first = True
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError):
            counts.slow_failed += 1
            await asyncio.sleep(1)
            continue
        if not first:
            counts.slow_reconnects += 1
        first = False
        counts.slow_open += 1
        try:
            for i in range(len(SLOW_HEAD)):
                writer.write(SLOW_HEAD[i:i + 1])
                await writer.drain()
                try:  # a second per byte; an answer (an error) or EOF ends this connection
                    await asyncio.wait_for(reader.read(65536), 1.0)
                    break
                except asyncio.TimeoutError:
                    pass
        except OSError:
            pass
        counts.slow_open -= 1
        writer.close()
        await asyncio.sleep(1)


async def main_async(args) -> None:
    counts = Counts()
    tasks = [asyncio.ensure_future(idle_conn(args.host, args.port, counts))
             for _ in range(args.idle)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = counts.idle_open + counts.idle_failed + counts.idle_closed
        if done >= args.idle:
            break
        await asyncio.sleep(0.05)
    tasks += [asyncio.ensure_future(slow_conn(args.host, args.port, counts))
              for _ in range(args.slow)]
    await asyncio.sleep(0.5)
    print("READY tasks=%d %s" % (len(tasks), counts.line()), flush=True)
    while True:  # the tasks run until SIGTERM
        await asyncio.sleep(1)
        print("CROWD " + counts.line(), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--slow", type=int, default=50)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        asyncio.run(main_async(args))
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
