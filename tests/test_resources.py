"""Resources under big bodies and many connections (issue 6).

- A 1 GiB upload (spooled by post-buffering, or streamed to the app) and a
  1 GiB download (iterable, sized, sendfile) each grow the worker's peak RSS
  by less than 32 MiB. The peak is the kernel's VmHWM, reset right before
  the request (``/proc/<pid>/clear_refs``), cross-checked by sampling VmRSS.
  ``UWSGIGW_BIG_BYTES`` changes the size (default 1 GiB: about 10 s here
  over a unix socket, the fast local path).
- 1000 concurrent connections through nginx for 30 s with zero non-2xx
  answers: minutes of CPU, so only with ``UWSGIGW_LOAD_SECONDS=30`` (what
  ``make soak`` sets); the driver is tests/soak/load.py.
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import nginx_vars, parse_response, uwsgi_connect, uwsgi_request
from packet_builder import build_packet
from soak.procinfo import APP_FILE, RssSampler, kb, reset_peak_rss, wait_children

SIZE = int(os.environ.get("UWSGIGW_BIG_BYTES", str(1 << 30)))
LIMIT_KB = 32 * 1024
LOAD_SECONDS = int(os.environ.get("UWSGIGW_LOAD_SECONDS", "0"))


def _head(uri: str, method: str = "GET", length: int | None = None) -> bytes:
    extra = {"CONTENT_LENGTH": str(length)} if length is not None else {}
    vars_ = nginx_vars(method=method, uri=uri, **extra)
    return build_packet([(k.encode(), v.encode()) for k, v in vars_.items()])


class Peak:
    """Peak RSS growth of ``pid`` over a block, in kB (VmHWM and sampled)."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.base = kb(self.pid, "VmRSS")
        self.hwm_ok = reset_peak_rss(self.pid)
        self.sampler = RssSampler([self.pid]).__enter__()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.started
        self.sampler.__exit__(*exc)
        self.sampled = self.sampler.peak_kb[self.pid] - self.base
        self.hwm = kb(self.pid, "VmHWM") - self.base if self.hwm_ok else self.sampled

    @property
    def growth(self) -> int:
        return max(self.hwm, self.sampled)


@pytest.fixture
def worker(uwsgigw_factory):
    def _start(*extra):
        srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "1",
                              "--disable-logging", "--socket-timeout", "30", *extra)
        (pid,) = wait_children(srv.pid, 1)
        # Warm up: the first request imports and allocates what every later one reuses.
        assert parse_response(uwsgi_request(srv.socket, nginx_vars(uri="/ok"))).status == 200
        return srv, pid
    return _start


def upload(addr: str, size: int) -> bytes:
    block = os.urandom(1 << 20)
    s = uwsgi_connect(addr, timeout=120)
    with s:
        s.sendall(_head("/sink", "POST", size))
        left = size
        view = memoryview(block)
        while left:
            n = min(left, len(block))
            s.sendall(view[:n])
            left -= n
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


@pytest.mark.parametrize("mode", ["post-buffering", "stream"])
def test_big_upload_keeps_worker_rss_flat(worker, mode):
    extra = ("--post-buffering", "65536") if mode == "post-buffering" else ()
    srv, pid = worker(*extra)
    with Peak(pid) as peak:
        raw = upload(srv.socket, SIZE)
    resp = parse_response(raw)
    assert resp.status == 200 and resp.body.split()[0] == b"%d" % SIZE, raw[-200:]
    print("\n%d MiB upload (%s): %.1f s, worker peak RSS growth %d kB (VmHWM %d, sampled %d)"
          % (SIZE >> 20, mode, peak.elapsed, peak.growth, peak.hwm, peak.sampled))
    assert peak.growth < LIMIT_KB, peak.growth


@pytest.mark.parametrize("kind", ["stream", "sized", "file"])
def test_big_download_keeps_worker_rss_flat(worker, kind):
    srv, pid = worker()
    size = SIZE if kind != "file" else min(SIZE, 256 << 20)
    if kind == "file":  # create the file outside the measurement
        uwsgi_request(srv.socket, nginx_vars(uri="/file?size=%d" % size), timeout=120)
    buf = bytearray(1 << 20)
    got = 0
    with Peak(pid) as peak:
        with uwsgi_connect(srv.socket, timeout=120) as s:
            s.sendall(_head("/%s?size=%d" % (kind, size)))
            while True:
                n = s.recv_into(buf)
                if not n:
                    break
                got += n
    assert got > size  # the body plus the head
    print("\n%d MiB download (%s): %.1f s, worker peak RSS growth %d kB (VmHWM %d, "
          "sampled %d)" % (size >> 20, kind, peak.elapsed, peak.growth, peak.hwm,
                           peak.sampled))
    assert peak.growth < LIMIT_KB, peak.growth


@pytest.mark.long_running
@pytest.mark.skipif(not LOAD_SECONDS, reason="long: UWSGIGW_LOAD_SECONDS=30 (make soak)")
def test_1000_concurrent_connections_through_nginx(uwsgigw_factory, factories):
    from soak.load import LoadNginx, run_load
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "4",
                          "--disable-logging", "--listen", "4096")
    workers = wait_children(srv.pid, 4)
    nginx = LoadNginx.start_for(factories, srv.socket)
    result = run_load(nginx.port, connections=1000, seconds=LOAD_SECONDS)
    print("\n" + result.summary())
    assert result.requests > 0
    assert result.non_2xx == 0 and result.errors == 0, result.summary()
    from soak.procinfo import children
    assert children(srv.pid) == workers
