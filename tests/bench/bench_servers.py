"""How each server under test and the shared nginx are configured and started.

All three servers get the same app, 2 workers, a master, a unix socket and
the same relevant settings (``buffer-size`` and ``post-buffering`` as in the
reference INI, seeds/001): only the spelling differs.

uwsgigw is started with its CLI (``python -m uwsgigw``) when the package has
one; until then with ``uwsgigw.server.serve(cfg)`` through a small launcher
(``--uwsgigw-launch serve``), the way /tmp/scratch/run.py does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
WORKERS = 2
BUFFER_SIZE = 65536     # seeds/001: buffer-size=65536
POST_BUFFERING = 65536  # seeds/001: post-buffering=65536
SERVERS = ("uwsgigw", "uwsgi", "gunicorn")


@dataclass
class Launch:
    argv: list[str]
    env: dict
    stop_signal: int
    note: str = ""


def venv_bin(name: str) -> str:
    """A console script of the venv the bench runs in (uwsgi, gunicorn)."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError("%s not found next to %s nor on PATH: run `make bench`, "
                                "which installs it into the bench venv" % (name, sys.executable))
    return found


def check_installed(server_names: list[str]) -> None:
    """Fail before starting anything if a server under test is not installed."""
    for name in server_names:
        if name in ("uwsgi", "gunicorn"):
            try:
                venv_bin(name)
            except FileNotFoundError as exc:
                raise SystemExit(str(exc)) from None


def _env(extra: dict | None = None, tmpdir: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if tmpdir:
        env["TMPDIR"] = tmpdir  # post-buffering temp files of the Python servers
    env.update(extra or {})
    return env


# --- uWSGI ---------------------------------------------------------------

def uwsgi_launch(app: str, sock: str, log_requests: bool, server_log: str,
                 tmpdir: str) -> Launch:
    argv = [venv_bin("uwsgi"), "--socket", sock, "--master", "--processes", str(WORKERS),
            "--pythonpath", str(BENCH_DIR), "--module", app,
            "--virtualenv", sys.prefix, "--buffer-size", str(BUFFER_SIZE),
            "--post-buffering", str(POST_BUFFERING), "--vacuum", "--need-app",
            "--logto", server_log]
    if not log_requests:
        argv.append("--disable-logging")
    # uWSGI 2.0: SIGTERM means "reload", SIGINT/SIGQUIT mean stop.
    return Launch(argv, _env(tmpdir=tmpdir), signal.SIGINT)


# --- Gunicorn ------------------------------------------------------------

def gunicorn_has_uwsgi_protocol() -> bool:
    """Gunicorn 25+ has ``--protocol uwsgi``; older releases speak HTTP only."""
    try:
        out = subprocess.run([venv_bin("gunicorn"), "--help"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--protocol" in out


def gunicorn_launch(app: str, sock: str, log_requests: bool, server_log: str,
                    tmpdir: str, uwsgi_protocol: bool) -> Launch:
    argv = [venv_bin("gunicorn"), "--worker-class", "sync", "--workers", str(WORKERS),
            "--bind", "unix:" + sock, "--chdir", str(BENCH_DIR),
            "--error-logfile", server_log, "--log-level", "warning"]
    note = ""
    if uwsgi_protocol:
        argv += ["--protocol", "uwsgi"]
    else:
        note = ("HTTP behind nginx `proxy_pass` (no `--protocol uwsgi`: not in this "
                "release, or --gunicorn-proxy)")
    if log_requests:  # Gunicorn's access log is off by default
        argv += ["--access-logfile", server_log]
    argv.append(app)
    # Gunicorn: SIGTERM is a graceful stop (up to 30 s), SIGINT a quick one.
    return Launch(argv, _env(tmpdir=tmpdir), signal.SIGINT, note)


# --- uwsgigw -------------------------------------------------------------

LAUNCHER = r'''
"""Start uwsgigw through uwsgigw.server.serve(cfg) (the bench's fallback
until `python -m uwsgigw` exists). argv[1] is the config as JSON."""
import json, sys, types
sys.path.insert(0, %(repo)r)
try:
    import uwsgigw.backend  # noqa: F401
except ImportError:
    # The decoder selector is not there yet: C if built, else Python.
    mod = types.ModuleType("uwsgigw.backend")
    class DecoderUnavailable(RuntimeError):
        pass
    def select(choice="auto"):
        if choice in ("auto", "c"):
            try:
                import uwsgigw.protocol.decoder_c as impl
                return types.SimpleNamespace(name="c", decode=impl.decode)
            except ImportError as exc:
                if choice == "c":
                    raise DecoderUnavailable(str(exc))
        import uwsgigw.protocol.decoder_py as impl
        return types.SimpleNamespace(name="python", decode=impl.decode)
    mod.select, mod.DecoderUnavailable = select, DecoderUnavailable
    sys.modules["uwsgigw.backend"] = mod
from uwsgigw.server import serve

class Cfg(types.SimpleNamespace):
    def __getattr__(self, name):  # options this launcher does not know: unset
        return None

sys.exit(serve(Cfg(**json.loads(sys.argv[1]))))
'''


def uwsgigw_has_cli() -> bool:
    sys.path.insert(0, str(REPO))
    try:
        return importlib.util.find_spec("uwsgigw.__main__") is not None
    except ImportError:
        return False
    finally:
        sys.path.remove(str(REPO))


def uwsgigw_cli_args(app: str, sock: str, log_requests: bool, server_log: str) -> list[str]:
    """The options every uwsgigw CLI start gets (after the command itself)."""
    argv = ["--socket", sock, "--master", "--processes", str(WORKERS),
            "--pythonpath", str(BENCH_DIR), "--module", app,
            "--buffer-size", str(BUFFER_SIZE), "--post-buffering", str(POST_BUFFERING),
            "--vacuum", "--logto", server_log]
    if not log_requests:
        argv.append("--disable-logging")
    return argv


def uwsgigw_script_launch(script: str, app: str, sock: str, log_requests: bool,
                          server_log: str, tmpdir: str) -> Launch:
    """An installed build (A/B mode): its venv's ``uwsgigw`` console script, and no
    PYTHONPATH, so it imports only that venv's package (and the apps from
    BENCH_DIR, through --pythonpath)."""
    return Launch([script] + uwsgigw_cli_args(app, sock, log_requests, server_log),
                  _env(tmpdir=tmpdir), signal.SIGINT, "started with %s" % script)


def uwsgigw_launch(app: str, sock: str, log_requests: bool, server_log: str,
                   tmpdir: str, mode: str, workdir: str) -> Launch:
    env = _env({"PYTHONPATH": str(REPO)}, tmpdir)
    if mode == "auto":
        mode = "cli" if uwsgigw_has_cli() else "serve"
    if mode == "cli":
        argv = [sys.executable, "-m", "uwsgigw"] + uwsgigw_cli_args(
            app, sock, log_requests, server_log)
        return Launch(argv, env, signal.SIGINT, "started with `python -m uwsgigw`")
    launcher = os.path.join(workdir, "launch_uwsgigw.py")
    with open(launcher, "w") as f:
        f.write(LAUNCHER % {"repo": str(REPO)})
    module, _, callable_ = app.partition(":")
    cfg = dict(
        logto=server_log, warnings=[], decoder="auto", env=[], chdir=None,
        home=None, pythonpath=[str(BENCH_DIR)], socket=[sock], listen=128,
        chmod_socket=None, chown_socket=None, module=module, wsgi_file=None,
        callable=callable_ or "application", mount=[], manage_script_name=False,
        buffer_size=BUFFER_SIZE, socket_timeout=4, post_buffering=POST_BUFFERING,
        post_buffering_bufsize=8192, limit_post=0, threads=1, processes=WORKERS,
        disable_logging=not log_requests, master=True, vacuum=True)
    argv = [sys.executable, launcher, json.dumps(cfg)]
    return Launch(argv, env, signal.SIGINT,
                  "started with uwsgigw.server.serve(cfg): no `python -m uwsgigw` yet")


# --- versions --------------------------------------------------------------

def _version_of(argv) -> str:
    """The first version number a command prints (``nginx -v``: "nginx/1.22.1")."""
    try:
        res = subprocess.run(argv(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unknown (%s)" % exc
    match = re.search(r"\d+\.\d+(\.\d+)*", res.stdout + res.stderr)
    return match.group(0) if match else "unknown"


def versions() -> dict[str, str]:
    from importlib import metadata

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    uwsgigw_version = _version_of(lambda: [
        sys.executable, "-c", "import sys; sys.path.insert(0, %r); import uwsgigw; "
        "print(uwsgigw.__version__)" % str(REPO)])
    return {
        "uwsgigw": uwsgigw_version,
        "uWSGI": _version_of(lambda: [venv_bin("uwsgi"), "--version"]),
        "Gunicorn": _version_of(lambda: [venv_bin("gunicorn"), "--version"]),
        "Flask": dist("flask"),
        "Python": sys.version.split()[0],
        "nginx": _version_of(lambda: [find_nginx(), "-v"]),
        "wrk": _version_of(lambda: ["wrk", "-v"]),
    }


def decoder_from_log(path: str) -> str | None:
    """The decoder backend uwsgigw logged at start-up."""
    try:
        with open(path, errors="replace") as f:
            match = re.search(r"decoder: (\w+)", f.read(65536))
    except OSError:
        return None
    return match.group(1) if match else None


# --- nginx -----------------------------------------------------------------

def find_nginx() -> str:
    for path in (os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if path and os.access(path, os.X_OK):
            return path
    raise SystemExit("nginx not found: apt-get install nginx-light")


NGINX_CONF = """\
# Written by tests/bench/run_bench.py: one nginx worker in front of every
# server under test, each on its own loopback port.
user root;
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_max_body_size 64m;
    client_body_buffer_size 128k;  # the 64 KB POST stays in memory
    client_body_temp_path %(dir)s/nginx-client-body;
    uwsgi_temp_path %(dir)s/nginx-uwsgi;
    proxy_temp_path %(dir)s/nginx-proxy;
    fastcgi_temp_path %(dir)s/nginx-fastcgi;
    scgi_temp_path %(dir)s/nginx-scgi;
    # Room for a 1 MB response in memory, for every server alike.
    uwsgi_buffers 16 64k;
    uwsgi_busy_buffers_size 128k;
    proxy_buffers 16 64k;
    proxy_busy_buffers_size 128k;
%(servers)s}
"""

SERVER_BLOCK = """\
    server {
        listen 127.0.0.1:%(port)d;
        location / {
%(pass)s
        }
    }
"""


def nginx_conf(workdir: str, upstreams: dict[str, tuple[int, str, bool]]) -> str:
    """upstreams: server name -> (port, socket path, speaks uwsgi?)."""
    params = REPO / "nginx" / "uwsgi_params"
    if not params.exists():
        params = Path("/etc/nginx/uwsgi_params")
    blocks = []
    for name, (port, sock, uwsgi) in upstreams.items():
        if uwsgi:
            lines = ["            include %s;" % params,
                     "            uwsgi_pass unix:%s;" % sock]
        else:
            lines = ["            proxy_http_version 1.1;",
                     "            proxy_set_header Host $host;",
                     "            proxy_pass http://unix:%s:;" % sock]
        blocks.append("    # %s\n" % name + SERVER_BLOCK % {"port": port, "pass": "\n".join(lines)})
    return NGINX_CONF % {"dir": workdir, "servers": "".join(blocks)}
