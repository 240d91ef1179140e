"""Load through nginx for the resource test and the soak: N concurrent
keep-alive HTTP connections for S seconds, every answer's status counted.

wrk does it when installed (``make soak`` installs it); otherwise an asyncio
client of the same shape does (slower, but counts every status itself).
Only loopback addresses are ever targeted.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from uwsgigw.devnginx import DevNginx

NGINX_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "nginx")


class LoadNginx(DevNginx):
    """The shipped site.conf, with room for thousands of connections (the dev
    config allows 256): each client connection costs nginx a second one to
    uwsgigw."""

    connections = 8192

    def write_config(self) -> None:
        super().write_config()
        with open(self.conf_path) as f:
            text = f.read()
        text = text.replace("worker_connections 256;", "worker_connections %d;"
                            % self.connections)
        text = text.replace("worker_processes 1;", "worker_processes 1;\n"
                            "worker_rlimit_nofile %d;" % (self.connections * 2 + 100))
        with open(self.conf_path, "w") as f:
            f.write(text)

    @classmethod
    def start_for(cls, factories, upstream: str) -> "LoadNginx":
        """Started like conftest's nginx_factory, and stopped by the same fixture."""
        factories.count += 1
        workdir = os.path.join(factories.workdir, "nginx-load-%d" % factories.count)
        os.makedirs(workdir)
        nginx = cls(upstream, workdir=workdir, nginx_dir=NGINX_DIR)
        factories.nginxes.append(nginx)
        return nginx.start()


@dataclass
class LoadResult:
    tool: str
    connections: int
    seconds: float
    requests: int = 0
    statuses: dict = field(default_factory=dict)
    non_2xx: int = 0
    errors: int = 0
    error_text: str = ""
    latency: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return ("%s: %d connections for %.0f s: %d requests (%.0f/s), non-2xx %d, socket "
                "errors %d%s%s" % (self.tool, self.connections, self.seconds, self.requests,
                                   self.rps, self.non_2xx, self.errors,
                                   " (%s)" % self.error_text if self.error_text else "",
                                   "; latency %s" % self.latency if self.latency else ""))


def run_load(port: int, connections: int = 1000, seconds: float = 30, path: str = "/ok",
             threads: int = 2) -> LoadResult:
    if shutil.which("wrk"):
        return _wrk(port, connections, seconds, path, threads)
    return asyncio.run(_asyncio_load(port, connections, seconds, path))


def _wrk(port, connections, seconds, path, threads) -> LoadResult:
    cmd = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
           "--timeout", "30s", "--latency", "http://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120).stdout
    result = LoadResult("wrk", connections, seconds)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise AssertionError("cannot read wrk's output:\n" + out)
    result.requests = int(m.group(1))
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result.non_2xx = int(m2.group(1)) if m2 else 0
    m3 = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m3:
        result.errors = sum(int(x) for x in m3.groups())
        result.error_text = m3.group(0)
    m4 = re.search(r"Latency Distribution\s+50%\s+(\S+).*?99%\s+(\S+)", out, re.S)
    if m4:
        result.latency = "p50 %s, p99 %s" % m4.groups()
    result.statuses = {"2xx": result.requests - result.non_2xx}
    return result


async def _asyncio_load(port, connections, seconds, path) -> LoadResult:
    result = LoadResult("asyncio", connections, seconds)
    request = ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode()
    deadline = time.monotonic() + seconds

    async def one():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            result.errors += 1
            return
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await asyncio.wait_for(reader.readexactly(length), 30)
                result.requests += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if not 200 <= status < 300:
                    result.non_2xx += 1
                if re.search(rb"(?i)connection: *close", head):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, AttributeError):
            result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return result
