"""Run a private nginx in front of a uwsgigw socket (tests and ``make run``).

The site configuration is the shipped ``nginx/site.conf`` itself: only the
lines that name machine-specific things are rewritten (the listen port, the
``uwsgi_pass`` target, the ``include uwsgi_params`` path and the static
directory), so the tests exercise the file users copy to /etc/nginx. A main
``nginx.conf`` around it keeps every path nginx writes (pid, logs, temp
files) inside one private directory, so no root, no system nginx and no
fixed port is needed, and any number can run side by side.

    python -m uwsgigw.devnginx --demo --port 8080        # what `make run` does
    python -m uwsgigw.devnginx --upstream unix:/tmp/app.sock --port 8080
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Where site.conf and uwsgi_params are: the copy a wheel ships inside the package
# (setup.py's build_py puts it there), else the checkout's nginx/ (editable installs).
PACKAGE_NGINX_DIR = Path(__file__).resolve().parent / "nginx"
CHECKOUT_NGINX_DIR = Path(__file__).resolve().parent.parent / "nginx"

# The literal lines of nginx/site.conf that get rewritten. If site.conf
# changes one of them, templating fails loudly instead of testing a config
# that differs from the shipped one.
LISTEN_LINE = "listen 80;"
UPSTREAM_LINE = "uwsgi_pass unix:/run/uwsgigw/site.sock;"
INCLUDE_LINE = "include uwsgi_params;"
STATIC_LINE = "alias /srv/mysite1/static/;"
# nginx/site-http.conf (proxy_pass to an http-socket): its upstream server.
HTTP_UPSTREAM_LINE = "server 127.0.0.1:8000;"
HTTP_KEEPALIVE_LINE = "keepalive 16;"
HTTP_PROXY_LINE = "proxy_pass http://uwsgigw_http;"
# nginx/upstream-rolling.conf (uwsgi_pass to a pool of servers): its server lines,
# whose address is rewritten and whose parameters (max_fails, ...) are kept.
POOL_SITE = "upstream-rolling.conf"
POOL_SERVER_RE = re.compile(r"^(\s*)server 127\.0\.0\.1:800\d\b([^;]*);\s*$")

MIME_TYPES = "/etc/nginx/mime.types"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class DevNginxError(RuntimeError):
    """nginx could not be configured or started; the message has its log."""


def default_nginx_dir() -> Path:
    """The shipped nginx/ files: inside the installed package, or in the checkout."""
    for directory in (PACKAGE_NGINX_DIR, CHECKOUT_NGINX_DIR):
        if (directory / "site.conf").is_file():
            return directory
    raise DevNginxError("no site.conf in %s (installed package) nor %s (checkout): "
                        "pass --nginx-dir DIR (a directory with site.conf and uwsgi_params)"
                        % (PACKAGE_NGINX_DIR, CHECKOUT_NGINX_DIR))


def uwsgigw_command(*args: str) -> list[str]:
    """The ``uwsgigw`` console script beside this interpreter (the venv's), so what
    runs is the installed command; ``python -m uwsgigw`` only where it has none."""
    script = os.path.join(os.path.dirname(sys.executable), "uwsgigw")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script, *args]
    return [sys.executable, "-m", "uwsgigw", *args]


def find_nginx() -> str:
    """The nginx binary: $NGINX, PATH, then the usual sbin locations."""
    candidates = [os.environ.get("NGINX"), shutil.which("nginx"),
                  "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise DevNginxError("nginx not found: install it (apt-get install nginx-light) "
                        "or set NGINX=/path/to/nginx")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (callers retry on a lost race)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def normalize_upstream(target: str) -> str:
    """``unix:/p``, ``/p``, ``host:port``, ``[v6]:port`` or ``:port`` -> uwsgi_pass form."""
    if target.startswith("unix:"):
        return "unix:" + os.path.abspath(target[5:])
    if "/" in target or not re.search(r":\d+$", target):
        return "unix:" + os.path.abspath(target)
    if target.startswith(":"):
        return "127.0.0.1" + target
    return target


def connect_address(target: str):
    """(family, address) to connect() to for a uwsgi_pass-style target."""
    target = normalize_upstream(target)
    if target.startswith("unix:"):
        return socket.AF_UNIX, target[5:]
    host, _, port = target.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def can_connect(family: int, address, timeout: float = 1.0) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(address)
        return True
    except OSError:
        return False


def _replace_line(text: str, literal: str, replacement: str, source: str) -> str:
    """Replace the one non-comment line whose content is ``literal``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == literal]
    if len(hits) != 1:
        raise DevNginxError("%s: expected exactly one line %r to template, found %d"
                            % (source, literal, len(hits)))
    i = hits[0]
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    body = "".join(indent + part + "\n" for part in replacement.splitlines())
    lines[i] = body
    return "".join(lines)


def render_site(site_text: str, *, listen: str, upstream: str, params_path: str,
                static_dir: str, source: str = "site.conf",
                tls: tuple[str, str] | None = None, upstream_extra: str = "") -> str:
    """nginx/site.conf with its machine-specific lines rewritten;
    ``upstream_extra``: directives added after ``uwsgi_pass`` (tests use it
    for settings such as ``uwsgi_buffering off;``)."""
    listen_lines = "listen %s%s;" % (listen, " ssl" if tls else "")
    if tls:
        listen_lines += "\nssl_certificate %s;\nssl_certificate_key %s;" % tls
    text = _replace_line(site_text, LISTEN_LINE, listen_lines, source)
    text = _replace_line(text, UPSTREAM_LINE, "uwsgi_pass %s;%s" % (
        normalize_upstream(upstream), "\n" + upstream_extra if upstream_extra else ""), source)
    text = _replace_line(text, INCLUDE_LINE, "include %s;" % params_path, source)
    return _replace_line(text, STATIC_LINE, "alias %s/;" % static_dir.rstrip("/"), source)


def render_http_site(site_text: str, *, listen: str, upstream: str, static_dir: str,
                     source: str = "site-http.conf", upstream_extra: str = "",
                     keepalive: bool = True) -> str:
    """nginx/site-http.conf with its machine-specific lines rewritten:
    ``upstream`` is the http-socket (``host:port`` or ``unix:/path``);
    ``upstream_extra``: directives added after ``proxy_pass``; ``keepalive``
    False: no idle connections kept to uwsgigw (one per request)."""
    target = upstream if upstream.startswith("unix:") or not upstream.startswith("/") \
        else "unix:" + upstream
    text = _replace_line(site_text, LISTEN_LINE, "listen %s;" % listen, source)
    text = _replace_line(text, HTTP_UPSTREAM_LINE, "server %s;" % target, source)
    if not keepalive:
        text = _replace_line(text, HTTP_KEEPALIVE_LINE, "# keepalive: off (tests)", source)
    if upstream_extra:
        text = _replace_line(text, HTTP_PROXY_LINE, HTTP_PROXY_LINE + "\n" + upstream_extra,
                             source)
    return _replace_line(text, STATIC_LINE, "alias %s/;" % static_dir.rstrip("/"), source)


def render_pool_site(site_text: str, *, listen: str, servers: list[str], params_path: str,
                     source: str = POOL_SITE) -> str:
    """nginx/upstream-rolling.conf with its machine-specific lines rewritten:
    ``servers`` (uwsgi sockets, ``host:port`` or ``unix:/path``) replace the
    addresses of its ``server 127.0.0.1:800N ...;`` lines in order, one each
    (DevNginxError when the counts differ)."""
    lines = site_text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if POOL_SERVER_RE.match(line)]
    if len(hits) != len(servers):
        raise DevNginxError("%s: %d upstream servers given, but the file has %d lines "
                            "'server 127.0.0.1:800N ...;' to template"
                            % (source, len(servers), len(hits)))
    for i, target in zip(hits, servers):
        m = POOL_SERVER_RE.match(lines[i])
        lines[i] = "%sserver %s%s;\n" % (m.group(1), normalize_upstream(target), m.group(2))
    text = _replace_line("".join(lines), LISTEN_LINE, "listen %s;" % listen, source)
    return _replace_line(text, INCLUDE_LINE, "include %s;" % params_path, source)


def render_main(workdir: str, site_path: str, user: str | None = None) -> str:
    """The main nginx.conf: one worker, foreground, everything under workdir.
    ``user``: the workers' user (root only can set it), as a distribution's nginx has."""
    lines = [
        "# generated by uwsgigw.devnginx",
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
        "pid %s/nginx.pid;" % workdir,
        "error_log %s/error.log info;" % workdir,
    ]
    if user:
        lines.append("user %s;" % user)
    elif os.geteuid() == 0:
        # Workers would drop to "nobody" and then could not open a 0660 socket
        # owned by root (uwsgigw's default socket mode).
        lines.append("user root;")
    lines += ["events {", "    worker_connections 256;", "}", "http {"]
    if os.path.exists(MIME_TYPES):
        lines.append("    include %s;" % MIME_TYPES)
    lines += [
        "    default_type application/octet-stream;",
        "    access_log %s/access.log;" % workdir,
    ]
    lines += ["    %s_temp_path %s/%s;" % (d, workdir, d) for d in TEMP_DIRS]
    lines += ["    include %s;" % site_path, "}", ""]
    return "\n".join(lines)


STREAM_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules",
                      "/usr/lib64/nginx/modules", "/etc/nginx/modules")


def stream_module(binary: str) -> str | None:
    """The ``load_module`` path of nginx's stream module; None when ``binary``
    has it built in. Raises DevNginxError with the package to install."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr.split()
    if "--with-stream" in built:
        return None
    for directory in STREAM_MODULE_DIRS:
        path = os.path.join(directory, "ngx_stream_module.so")
        if os.path.isfile(path):
            return path
    raise DevNginxError("nginx's stream module is not installed (apt-get install "
                        "libnginx-mod-stream; make install does it)")


def render_stream_main(workdir: str, *, listen: str, upstream: str, module: str | None,
                       proxy_protocol: bool = True) -> str:
    """An nginx.conf whose only server is a TCP (``stream``) proxy to
    ``upstream``: a layer-4 balancer, sending the PROXY protocol header
    (``proxy_protocol on``) on each connection it opens. nginx's ``http``
    proxy_pass cannot send one; only its stream module can."""
    lines = ["# generated by uwsgigw.devnginx (stream)"]
    if module:
        lines.append("load_module %s;" % module)
    lines += [
        "daemon off;", "master_process on;", "worker_processes 1;",
        "pid %s/nginx.pid;" % workdir, "error_log %s/error.log info;" % workdir,
        "events {", "    worker_connections 256;", "}",
        "stream {", "    server {", "        listen %s;" % listen,
        "        proxy_pass %s;" % normalize_upstream(upstream),
        "        proxy_protocol %s;" % ("on" if proxy_protocol else "off"),
        "    }", "}", ""]
    return "\n".join(lines)


class DevNginx:
    """A private nginx process in front of one uwsgi upstream.

    ``upstream`` is a unix socket path (``unix:/p`` or ``/p``) or ``host:port``;
    with ``site="upstream-rolling.conf"`` a list of them (the pool).
    ``port=0`` picks a free port (retrying if another process takes it first).
    """

    def __init__(self, upstream: str | list[str], *, port: int = 0, host: str = "127.0.0.1",
                 workdir: str | None = None, nginx_dir: str | os.PathLike | None = None,
                 static_dir: str | None = None, tls: tuple[str, str] | None = None,
                 upstream_extra: str = "", user: str | None = None, site: str = "site.conf",
                 http_keepalive: bool = True):
        self.upstream = upstream
        self.upstream_extra = upstream_extra
        # site.conf (uwsgi_pass), site-http.conf (proxy_pass), upstream-rolling.conf
        # (uwsgi_pass to a pool), or "stream": a TCP proxy sending the PROXY
        # protocol (render_stream_main)
        self.site = site
        self.http_keepalive = http_keepalive  # site-http.conf: idle upstream connections
        self.user = user
        self.host = host
        self.requested_port = port
        self.port = port
        self.tls = tls
        self.nginx_dir = Path(nginx_dir) if nginx_dir else default_nginx_dir()
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="uwsgigw-nginx-")
        self.static_dir = static_dir or os.path.join(self.workdir, "static")
        self.proc: subprocess.Popen | None = None
        self.binary = find_nginx()

    # -- paths and logs ------------------------------------------------------

    @property
    def conf_path(self) -> str:
        return os.path.join(self.workdir, "nginx.conf")

    @property
    def error_log_path(self) -> str:
        return os.path.join(self.workdir, "error.log")

    @property
    def access_log_path(self) -> str:
        return os.path.join(self.workdir, "access.log")

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % ("https" if self.tls else "http", host, self.port)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def error_log(self) -> str:
        return _read(self.error_log_path)

    def access_log(self) -> str:
        return _read(self.access_log_path)

    # -- configuration -------------------------------------------------------

    def write_config(self) -> None:
        listen = "%s:%d" % ("[%s]" % self.host if ":" in self.host else self.host, self.port)
        if self.site == "stream":  # a TCP balancer with the PROXY protocol: no site file
            Path(self.conf_path).write_text(render_stream_main(
                self.workdir, listen=listen, upstream=self.upstream,
                module=stream_module(self.binary)))
            return
        site_src = self.nginx_dir / "site.conf"
        params_src = self.nginx_dir / "uwsgi_params"
        for path in (site_src, params_src):
            if not path.is_file():
                raise DevNginxError("missing %s: pass --nginx-dir DIR (a directory with "
                                    "site.conf and uwsgi_params)" % path)
        os.makedirs(self.static_dir, exist_ok=True)
        for d in TEMP_DIRS:
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        params_path = os.path.join(self.workdir, "uwsgi_params")
        shutil.copyfile(params_src, params_path)
        if self.site == "site.conf":
            site = render_site(site_src.read_text(), listen=listen, upstream=self.upstream,
                               params_path=params_path, static_dir=self.static_dir,
                               source=str(site_src), tls=self.tls,
                               upstream_extra=self.upstream_extra)
        elif self.site == POOL_SITE:
            pool_src = self.nginx_dir / POOL_SITE
            servers = [self.upstream] if isinstance(self.upstream, str) else self.upstream
            site = render_pool_site(pool_src.read_text(), listen=listen, servers=list(servers),
                                    params_path=params_path, source=str(pool_src))
        else:
            http_src = self.nginx_dir / self.site
            site = render_http_site(http_src.read_text(), listen=listen,
                                    upstream=self.upstream, static_dir=self.static_dir,
                                    source=str(http_src), upstream_extra=self.upstream_extra,
                                    keepalive=self.http_keepalive)
        site_path = os.path.join(self.workdir, "site.conf")
        Path(site_path).write_text(site)
        Path(self.conf_path).write_text(render_main(self.workdir, site_path, self.user))

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout: float = 15.0) -> "DevNginx":
        attempts = 5 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            if self.requested_port == 0:
                self.port = free_port(self.host)
            self.write_config()
            try:
                self._start_once(timeout)
                return self
            except DevNginxError as exc:
                if "Address already in use" in str(exc) and attempt + 1 < attempts:
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        # Truncate the log so a retry's error is not confused with an old one.
        open(self.error_log_path, "w").close()
        out = open(os.path.join(self.workdir, "nginx.stdout"), "wb")
        cmd = [self.binary, "-p", self.workdir + "/", "-c", self.conf_path,
               "-e", self.error_log_path]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise DevNginxError("nginx exited at start-up:\n%s%s" % (
                    self.error_log(), _read(os.path.join(self.workdir, "nginx.stdout"))))
            if can_connect(family, (self.host, self.port), timeout=0.5):
                return
            time.sleep(0.02)
        log = self.error_log()
        self.stop()
        raise DevNginxError("nginx did not answer on %s within %gs:\n%s"
                            % (self.url, timeout, log))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (master and workers: its whole process group) by pid."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process_group(proc, signal.SIGTERM, timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DevNginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                       timeout: float = 10.0) -> int | None:
    """Signal the group ``proc`` leads (start_new_session=True), escalate to SIGKILL.

    Returns the exit status. The group id is the pid we started, never a name.
    """
    pgid = proc.pid
    if proc.poll() is None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Leftovers in the group (workers of a killed master) go too.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# -- the demo (`make run`) ------------------------------------------------------

def _start_demo_server(workdir: str, processes: int) -> tuple[subprocess.Popen, str]:
    sock = os.path.join(workdir, "demo.sock")
    cmd = uwsgigw_command("--socket", sock, "--module", "uwsgigw.demo",
                          "--processes", str(processes))
    if processes > 1:
        cmd.append("--master")
    # The server's log goes to this terminal, so the request lines show up live.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevNginxError("uwsgigw exited with status %s at start-up" % proc.returncode)
        if os.path.exists(sock) and can_connect(socket.AF_UNIX, sock):
            return proc, sock
        time.sleep(0.05)
    stop_process_group(proc)
    raise DevNginxError("uwsgigw did not listen on %s within 30 s" % sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uwsgigw.devnginx",
        description="Run a private nginx (from nginx/site.conf) in front of a uwsgigw socket.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--demo", action="store_true",
                      help="also start uwsgigw with the built-in demo app")
    what.add_argument("--upstream", help="uwsgi socket to pass to: unix:/path or host:port")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (0 = any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address nginx listens on")
    parser.add_argument("--processes", type=int, default=2, help="demo worker processes")
    parser.add_argument("--nginx-dir", default=None,
                        help="directory with site.conf and uwsgi_params (default: the copy "
                        "installed with uwsgigw, or the checkout's nginx/)")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="uwsgigw-run-")
    server = None
    nginx = None
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        if args.demo:
            server, upstream = _start_demo_server(workdir, args.processes)
        else:
            upstream = args.upstream
        nginx = DevNginx(upstream, port=args.port, host=args.host,
                         workdir=os.path.join(workdir, "nginx"), nginx_dir=args.nginx_dir)
        os.makedirs(nginx.workdir, exist_ok=True)
        nginx.start()
        pids = "nginx pid %d" % nginx.pid
        if server is not None:
            pids += ", uwsgigw pid %d" % server.pid
        print("\nuwsgigw %sis served through nginx at %s/\n"
              "  nginx config: %s\n  nginx logs:   %s\n  (%s)\n"
              "  Ctrl-C stops everything.\n"
              % ("demo " if args.demo else "", nginx.url, nginx.workdir,
                 nginx.error_log_path, pids), flush=True)
        while not stop:
            if server is not None and server.poll() is not None:
                print("uwsgigw exited with status %s" % server.returncode, file=sys.stderr)
                return 1
            if nginx.proc is None or nginx.proc.poll() is not None:
                print("nginx exited:\n%s" % nginx.error_log(), file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except DevNginxError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if nginx is not None:
            nginx.stop()
        if server is not None:
            stop_process_group(server, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
