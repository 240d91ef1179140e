"""The static-file bench's peers (issue 15): the files, how each server is
started with them, and the nginx config (bench_static.py runs them).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from bench_servers import (BENCH_DIR, BUFFER_SIZE, NGINX_CONF, POST_BUFFERING, REPO,
                           WORKERS, Launch, _env, venv_bin)

ROUTE = "/static"
APP = "apps:hello"
LISTEN = 1024
# name -> size in bytes; the content is not compressible text nor all zeros.
FILES = {"1k": 1024, "1m": 1024 * 1024}


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    listen: str          # "nginx" (nginx alone), "unix" (uwsgi_pass), "tcp" (direct)
    accel: bool = False  # file-serve-mode = x-accel-redirect
    note: str = ""


PEERS = {p.key: p for p in (
    Peer("nginx", "(1) nginx alone", "nginx",
         note="`location /static/ { alias DIR/; }`, `sendfile on; tcp_nopush on;`: the ceiling"),
    Peer("uwsgi", "(2) uWSGI static-map, uwsgi_pass", "unix",
         note="`--static-map /static=DIR` (no offload threads), nginx `uwsgi_pass unix:`"),
    Peer("uwsgigw", "(3) uwsgigw static-map, uwsgi_pass", "unix",
         note="`--static-map /static=DIR`, nginx `uwsgi_pass unix:`"),
    Peer("uwsgigw-accel", "(4) uwsgigw static-map x-accel-redirect, uwsgi_pass", "unix",
         accel=True, note="`--static-map /static=DIR --file-serve-mode x-accel-redirect`; "
         "nginx `location ^~ DIR/ { internal; root /; }` serves the named path"),
    Peer("granian", "(5) Granian static route, direct", "tcp",
         note="`--interface wsgi --http 1 --static-path-route /static "
         "--static-path-mount DIR` (its default `--static-path-expires 86400`)"),
    Peer("uwsgigw-http", "(6) uwsgigw http-socket static-map, direct", "tcp",
         note="`--http-socket H:P --static-map /static=DIR --threads 1 --listen 1024`"),
    Peer("uwsgi-accel", "(ref) uWSGI static-map x-accel-redirect, uwsgi_pass", "unix",
         accel=True, note="`--static-map /static=DIR --file-serve-mode x-accel-redirect`, "
         "the same internal location (a reference row, no target)"),
)}

def make_files(directory: str) -> dict[str, str]:
    """The files served, ``name -> path`` (``1k.bin``, ``1m.bin``)."""
    os.makedirs(directory, exist_ok=True)
    out = {}
    for name, size in FILES.items():
        path = os.path.join(directory, name + ".bin")
        block = bytes(range(256)) * 4
        with open(path, "wb") as f:
            f.write((block * (size // len(block) + 1))[:size])
        out[name] = path
    return out


def launch(peer: Peer, address: str, files_dir: str, server_log: str, tmpdir: str) -> Launch:
    """The command line of one peer (not ``nginx``, which is the bench's nginx)."""
    static = "%s=%s" % (ROUTE, files_dir)
    env = _env(tmpdir=tmpdir)
    if peer.key.startswith("uwsgigw"):
        listener = (["--http-socket", address, "--threads", "1", "--listen", str(LISTEN)]
                    if peer.listen == "tcp" else ["--socket", address])
        argv = [sys.executable, "-m", "uwsgigw"] + listener + [
            "--master", "--processes", str(WORKERS), "--pythonpath", str(BENCH_DIR),
            "--module", APP, "--buffer-size", str(BUFFER_SIZE),
            "--post-buffering", str(POST_BUFFERING), "--static-map", static,
            "--disable-logging", "--logto", server_log]
        if peer.accel:
            argv += ["--file-serve-mode", "x-accel-redirect"]
        return Launch(argv, _env({"PYTHONPATH": str(REPO)}, tmpdir), signal.SIGINT)
    if peer.key.startswith("uwsgi"):
        argv = [venv_bin("uwsgi"), "--socket", address, "--master", "--processes", str(WORKERS),
                "--pythonpath", str(BENCH_DIR), "--module", APP, "--virtualenv", sys.prefix,
                "--buffer-size", str(BUFFER_SIZE), "--post-buffering", str(POST_BUFFERING),
                "--static-map", static, "--need-app", "--disable-logging",
                "--logto", server_log]
        if peer.accel:
            argv += ["--file-serve-mode", "x-accel-redirect"]
        return Launch(argv, env, signal.SIGINT)  # uWSGI 2.0: SIGTERM reloads
    if peer.key == "granian":
        host, _, port = address.rpartition(":")
        argv = [venv_bin("granian"), "--interface", "wsgi", "--workers", str(WORKERS),
                "--host", host, "--port", port, "--http", "1", "--no-ws",
                "--working-dir", str(BENCH_DIR), "--log-level", "warning",
                "--static-path-route", ROUTE, "--static-path-mount", files_dir, APP]
        return Launch(argv, env, signal.SIGINT)
    raise ValueError("unknown peer %r" % peer.key)


def nginx_conf(workdir: str, files_dir: str, sites: dict[str, tuple[int, str]]) -> str:
    """sites: peer key -> (nginx port, unix socket or ''). The uwsgi bench's frame
    (1 worker, access_log off, 1 MB of uwsgi buffers) with ``sendfile on``, as
    distributions ship nginx."""
    params = REPO / "nginx" / "uwsgi_params"
    blocks = ["    sendfile on;\n    tcp_nopush on;\n    default_type application/octet-stream;\n"]
    for key, (port, sock) in sites.items():
        if PEERS[key].listen == "nginx":
            body = ("        location %s/ {\n            alias %s/;\n        }\n"
                    % (ROUTE, files_dir))
        else:
            body = ("        location / {\n            include %s;\n"
                    "            uwsgi_pass unix:%s;\n        }\n" % (params, sock))
            if PEERS[key].accel:
                body += ("        location ^~ %s/ {\n            internal;\n"
                         "            root /;\n        }\n" % files_dir)
        blocks.append("    # %s\n    server {\n        listen 127.0.0.1:%d;\n%s    }\n"
                      % (key, port, body))
    return NGINX_CONF % {"dir": workdir, "servers": "".join(blocks)}
