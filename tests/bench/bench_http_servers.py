"""The HTTP half of `make bench` (issue 14): how each HTTP peer is started,
and the nginx config with a ``proxy_pass`` site per peer (from
nginx/site-http.conf) beside the ``uwsgi_pass`` one for uwsgigw's own
uwsgi path.

Every peer gets the same app, 2 worker processes, 1 thread per worker
where the server has threads, request logging off (Granian's and Uvicorn's
default) and a TCP listener on 127.0.0.1 (wrk speaks TCP only; nginx's
site-http.conf points at 127.0.0.1:8000). The listen backlog is 1024 for
uwsgigw and uWSGI (uWSGI's 100 overflows under the idle/slow crowd before the
server sees a connection; the others default to 1024 or more).
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import dataclass

from bench_servers import (BENCH_DIR, BUFFER_SIZE, NGINX_CONF, POST_BUFFERING, REPO,
                           SERVER_BLOCK, WORKERS, Launch, _env, venv_bin)

LISTEN = 1024
WSGI_APP = "apps:hello"
ASGI_APP = "bench_asgi_apps:hello"   # also echoes WebSocket messages


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    kind: str            # "wsgi" | "asgi"
    listen: str          # "tcp" | "unix" (uwsgi_pass)
    speaks: str          # "http" | "uwsgi"
    note: str = ""
    closes: bool = False  # no keep-alive: wrk sends it HTTP/1.0 requests


PEERS = {p.key: p for p in (
    Peer("uwsgigw", "uwsgigw http-socket", "wsgi", "tcp", "http"),
    Peer("uwsgi-http11", "uWSGI http11-socket", "wsgi", "tcp", "http",
         "`--http11-socket --http-keepalive`"),
    Peer("uwsgi-http", "uWSGI http-socket", "wsgi", "tcp", "http",
         "`--http-socket`: no keep-alive, so wrk sends it HTTP/1.0 requests, a "
         "connection each", closes=True),
    Peer("granian", "Granian wsgi", "wsgi", "tcp", "http", "`--interface wsgi --http 1`"),
    Peer("gunicorn-gthread", "Gunicorn gthread", "wsgi", "tcp", "http",
         "`--worker-class gthread --threads 1`"),
    Peer("uvicorn-wsgi", "Uvicorn wsgi", "wsgi", "tcp", "http", "`--interface wsgi`"),
    Peer("uwsgigw-uwsgi", "uwsgigw uwsgi_pass", "wsgi", "unix", "uwsgi",
         "`--socket` (uwsgi protocol), nginx `uwsgi_pass unix:`"),
    Peer("uwsgigw-asgi", "uwsgigw http-socket (ASGI)", "asgi", "tcp", "http"),
    Peer("uvicorn", "Uvicorn", "asgi", "tcp", "http",
         "`--loop uvloop --http httptools --ws websockets`"),
    Peer("granian-asgi", "Granian asgi", "asgi", "tcp", "http",
         "`--interface asgi --loop uvloop --http 1`"),
)}


def launch(peer: Peer, address: str, server_log: str, tmpdir: str) -> Launch:
    """The command line of one peer; ``address`` is HOST:PORT, or the unix
    socket path for the uwsgi-protocol peer."""
    host, _, port = address.rpartition(":")
    app = ASGI_APP if peer.kind == "asgi" else WSGI_APP
    env = _env(tmpdir=tmpdir)
    if peer.key.startswith("uwsgigw"):
        listener = ["--socket", address] if peer.speaks == "uwsgi" else ["--http-socket", address]
        argv = [sys.executable, "-m", "uwsgigw"] + listener + [
            "--master", "--processes", str(WORKERS), "--threads", "1",
            "--pythonpath", str(BENCH_DIR), "--module", app,
            "--buffer-size", str(BUFFER_SIZE), "--post-buffering", str(POST_BUFFERING),
            "--listen", str(LISTEN), "--disable-logging", "--logto", server_log]
        env = _env({"PYTHONPATH": str(REPO)}, tmpdir)
        return Launch(argv, env, signal.SIGINT)
    if peer.key.startswith("uwsgi-"):
        listener = (["--http11-socket", address, "--http-keepalive"]
                    if peer.key == "uwsgi-http11" else ["--http-socket", address])
        argv = [venv_bin("uwsgi")] + listener + [
            "--master", "--processes", str(WORKERS), "--pythonpath", str(BENCH_DIR),
            "--module", app, "--virtualenv", sys.prefix, "--buffer-size", str(BUFFER_SIZE),
            "--post-buffering", str(POST_BUFFERING), "--listen", str(LISTEN),
            "--need-app", "--disable-logging", "--logto", server_log]
        return Launch(argv, env, signal.SIGINT)  # uWSGI 2.0: SIGTERM reloads
    if peer.key.startswith("granian"):
        interface = "asgi" if peer.kind == "asgi" else "wsgi"
        argv = [venv_bin("granian"), "--interface", interface, "--workers", str(WORKERS),
                "--host", host, "--port", port, "--http", "1", "--no-ws",
                "--working-dir", str(BENCH_DIR), "--log-level", "warning"]
        if interface == "asgi":
            argv += ["--loop", "uvloop"]
        return Launch(argv + [app], env, signal.SIGINT)
    if peer.key == "gunicorn-gthread":
        argv = [venv_bin("gunicorn"), "--worker-class", "gthread", "--threads", "1",
                "--workers", str(WORKERS), "--bind", address, "--chdir", str(BENCH_DIR),
                "--error-logfile", server_log, "--log-level", "warning", app]
        return Launch(argv, env, signal.SIGINT)
    if peer.key.startswith("uvicorn"):
        argv = [venv_bin("uvicorn"), "--workers", str(WORKERS), "--host", host,
                "--port", port, "--no-access-log", "--log-level", "warning",
                "--app-dir", str(BENCH_DIR)]
        if peer.kind == "wsgi":
            argv += ["--interface", "wsgi"]
        else:
            argv += ["--loop", "uvloop", "--http", "httptools", "--ws", "websockets"]
        return Launch(argv + [app], env, signal.SIGINT)
    raise ValueError("unknown peer %r" % peer.key)


# --- nginx -------------------------------------------------------------------

class SiteConfError(RuntimeError):
    pass


def _sub_once(pattern: str, repl: str, text: str, what: str) -> str:
    new, n = re.subn(pattern, repl, text, count=1, flags=re.S | re.M)
    if n != 1:
        raise SiteConfError("nginx/site-http.conf: cannot find %s (pattern %r): the "
                            "bench rewrites that line; update bench_http_servers.py"
                            % (what, pattern))
    return new


def site_http_parts(text: str) -> tuple[str, str]:
    """(the http-level ``map`` block, the upstream + server template) of
    site-http.conf, comments and the static location dropped."""
    text = "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines())
    text = "\n".join(line for line in text.splitlines() if line.strip())
    match = re.search(r"^map \$http_upgrade .*?^\}\n", text + "\n", re.S | re.M)
    if not match:
        raise SiteConfError("nginx/site-http.conf: no `map $http_upgrade` block")
    map_block = match.group(0)
    rest = (text + "\n").replace(map_block, "")
    rest = _sub_once(r"^\s*location /static/ \{.*?\}\n", "", rest, "the static location")
    return map_block, rest


def site_http_server(template: str, name: str, listen_port: int, upstream: str) -> str:
    """One proxy_pass site: the upstream renamed, its server and the listen rewritten."""
    up = "bench_" + re.sub(r"\W", "_", name)
    text = _sub_once(r"upstream uwsgigw_http \{", "upstream %s {" % up, template,
                     "the upstream block")
    text = _sub_once(r"^(\s*)server 127\.0\.0\.1:8000;", r"\g<1>server %s;" % upstream, text,
                     "the upstream server line")
    text = _sub_once(r"proxy_pass http://uwsgigw_http;", "proxy_pass http://%s;" % up, text,
                     "proxy_pass")
    text = _sub_once(r"^(\s*)listen 80;", r"\g<1>listen 127.0.0.1:%d;" % listen_port, text,
                     "the listen line")
    return "    # %s (nginx/site-http.conf)\n" % name + "".join(
        "    " + line + "\n" for line in text.splitlines())


def nginx_conf(workdir: str, sites: dict[str, tuple[int, str, str]]) -> str:
    """sites: name -> (nginx port, upstream address, "http" | "uwsgi").

    The same frame as the uwsgi bench (bench_servers.NGINX_CONF: 1 worker,
    access_log off); HTTP peers get site-http.conf's proxy_pass site with
    upstream keepalive, the uwsgi peer the uwsgi bench's ``uwsgi_pass`` block.
    """
    with open(REPO / "nginx" / "site-http.conf") as f:
        map_block, template = site_http_parts(f.read())
    blocks = ["".join("    " + line + "\n" for line in map_block.splitlines())]
    params = REPO / "nginx" / "uwsgi_params"
    for name, (port, upstream, speaks) in sites.items():
        if speaks == "uwsgi":
            lines = ["            include %s;" % params,
                     "            uwsgi_pass unix:%s;" % upstream]
            blocks.append("    # %s\n" % name + SERVER_BLOCK % {
                "port": port, "pass": "\n".join(lines)})
        else:
            blocks.append(site_http_server(template, name, port, upstream))
    return NGINX_CONF % {"dir": workdir, "servers": "".join(blocks)}


def versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in ("granian", "uvicorn", "gunicorn", "uWSGI", "httptools", "uvloop",
                 "websockets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
