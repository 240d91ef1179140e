"""Issue 15 behind the real nginx: static-map on a uwsgi socket through
``uwsgi_pass`` (nginx/site.conf), ``file-serve-mode = x-accel-redirect``
with the shipped nginx/static-accel.conf, and the worker's memory while it
sends big files (sendfile: the bytes never pass through the worker).
"""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

import pytest
from conftest import nginx_vars, uwsgi_connect
from framed_client import fetch
from packet_builder import build_packet
from soak.procinfo import kb, reset_peak_rss, wait_children

from uwsgigw.devnginx import default_nginx_dir

BIG = 5 * 1024 * 1024
A_TXT = b"static through nginx\n" * 5
ACCEL_LINE = "location ^~ /srv/mysite1/static/ {"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    (root / "a.txt").write_bytes(A_TXT)
    (root / "a.txt.gz").write_bytes(gzip.compress(A_TXT))
    (root / "big.bin").write_bytes(os.urandom(BIG))
    os.chmod(root, 0o755)  # nginx's workers read them in the accel case
    return root


def _server(factories, assets, *extra):
    # /assets: site.conf's own /static/ location is nginx's (alias), so the
    # map uses another prefix, as a site serving uploads through the app would.
    return factories.uwsgigw("--module", "field_apps:wsgi", "--master", "--processes", "1",
                             "--static-map", "/assets=%s" % assets,
                             "--static-expires-uri", r"\.txt$ 600", *extra)


@pytest.mark.parametrize("decoder", ["c", "python"])
def test_static_map_behind_nginx(factories, assets, decoder):
    srv = _server(factories, assets, "--decoder", decoder)
    nginx = factories.nginx(srv.socket)
    got = fetch(nginx.port, "/assets/a.txt")
    assert (got.status, got.body, got.complete) == (200, A_TXT, True)
    assert got.header("content-type").startswith("text/plain")
    assert "max-age=600" in got.header("cache-control")
    again = fetch(nginx.port, "/assets/a.txt",
                  headers={"If-Modified-Since": got.header("last-modified")})
    assert again.status == 304 and "max-age=600" in again.header("cache-control")
    part = fetch(nginx.port, "/assets/big.bin", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == (assets / "big.bin").read_bytes()[100:200]
    whole = fetch(nginx.port, "/assets/big.bin")
    assert whole.complete and whole.body == (assets / "big.bin").read_bytes()
    missing = fetch(nginx.port, "/assets/nope.txt")
    assert missing.status == 404 and b"no route" in missing.body  # the app's answer


def _accel_snippet(workdir: str, assets: Path) -> str:
    """nginx/static-accel.conf as shipped, its directory line made the test's."""
    text = (default_nginx_dir() / "static-accel.conf").read_text()
    assert text.count(ACCEL_LINE) == 1
    real = os.path.realpath(assets).rstrip("/") + "/"
    path = os.path.join(workdir, "static-accel.conf")
    Path(path).write_text(text.replace(ACCEL_LINE, "location ^~ %s {" % real))
    return path


def test_x_accel_redirect_lets_nginx_send_the_file(factories, assets, tmp_path):
    srv = _server(factories, assets, "--file-serve-mode", "x-accel-redirect")
    snippet = _accel_snippet(str(tmp_path), assets)
    nginx = factories.nginx(srv.socket, upstream_extra="include %s;" % snippet)
    mark = srv.log_mark()
    whole = fetch(nginx.port, "/assets/big.bin")
    assert whole.status == 200 and whole.complete
    assert whole.body == (assets / "big.bin").read_bytes()
    assert whole.header("x-accel-redirect") is None  # nginx consumed it
    # The worker answered with the redirect, not the 5 MB (its request line):
    line = srv.wait_for_log("GET /assets/big.bin", since=mark)
    assert "GET /assets/big.bin => generated 0 bytes" in line and "(HTTP/1.1 200)" in line
    small = fetch(nginx.port, "/assets/a.txt")
    assert small.status == 200 and small.body == A_TXT
    assert small.header("content-type").startswith("text/plain")
    assert "max-age=600" in (small.header("cache-control") or "")
    part = fetch(nginx.port, "/assets/big.bin", headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == (assets / "big.bin").read_bytes()[10:20]
    # a request nginx may not serve directly: the internal location is internal
    real = os.path.realpath(assets)
    direct = fetch(nginx.port, real + "/a.txt")
    assert direct.status == 404 and A_TXT not in direct.body


@pytest.mark.parametrize("module", ["field_apps:wsgi", "field_apps:asgi"])
def test_four_concurrent_big_downloads_keep_the_worker_small(factories, assets, module):
    """Each 5 MB download may raise the worker's peak RSS by 1 MB at most."""
    srv = factories.uwsgigw("--module", module, "--master", "--processes", "1",
                            "--disable-logging", "--static-map", "/assets=%s" % assets)
    (pid,) = wait_children(srv.pid, 1)
    packet = build_packet([(k.encode(), v.encode())
                           for k, v in nginx_vars(uri="/assets/big.bin").items()])
    with uwsgi_connect(srv.socket) as s:  # warm up: imports and first allocations
        s.sendall(packet)
        while s.recv(1 << 20):
            pass
    base = kb(pid, "VmRSS")
    assert reset_peak_rss(pid)
    sizes = []

    def download():
        got = 0
        with uwsgi_connect(srv.socket, timeout=30) as s:
            s.sendall(packet)
            while True:
                data = s.recv(1 << 16)
                if not data:
                    break
                got += len(data)
        sizes.append(got)

    threads = [threading.Thread(target=download) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(sizes) == 4 and all(size > BIG for size in sizes)  # the body and its head
    growth = kb(pid, "VmHWM") - base
    assert growth <= 4 * 1024, "peak RSS grew by %d kB" % growth
