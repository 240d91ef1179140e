"""Shared fixtures: real uwsgigw processes, real nginx, raw uwsgi and HTTP clients.

Everything here starts real processes in their own session (process group)
and stops them by that group id at teardown, also when the test failed.
Readiness is polled, never slept for. Sockets and ports are per test (or per
module for the ``module_*`` factories, which tests share when they do not need
a fresh server).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import uwsgigw
from uwsgigw.devnginx import (DevNginx, can_connect, connect_address, free_port,
                              stop_process_group, uwsgigw_command)

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
APPS_DIR = TESTS_DIR / "apps"
DJANGO_DIR = APPS_DIR / "djangoproj"
NGINX_DIR = REPO_DIR / "nginx"  # the files as tracked; the installed copy must equal them
READY_LINE = "ready to accept requests"
DECODERS = ["c", "python"]  # both backends run the bad-input tests

# `make test` runs this suite from a fresh virtualenv holding the wheel built from
# the sdist (not an editable install) and says so with these variables.
INSTALLED = os.environ.get("UWSGIGW_TEST_INSTALLED") == "1"
NO_SKIPS = os.environ.get("UWSGIGW_TEST_NO_SKIPS") == "1"
BIN_DIR = os.path.dirname(sys.executable)  # the venv's bin: uwsgigw, uwsgitop, uwsgi_curl

# Servers and tools come from this venv even when it is not activated.
if os.environ.get("PATH", "").split(os.pathsep)[0] != BIN_DIR:
    os.environ["PATH"] = os.pathsep.join([BIN_DIR, os.environ.get("PATH", "")]).rstrip(os.pathsep)

# Tests import the apps too, to compute the bytes they must receive.
sys.path.insert(0, str(APPS_DIR))


# -- what runs: the installed command, never the checkout ------------------------

def uwsgigw_cmd(*args: str) -> list[str]:
    """The server command: the ``uwsgigw`` script of this venv (``python -m
    uwsgigw`` only in a dev run that has no script)."""
    return uwsgigw_command(*args)


def python_module_cmd(module: str, *args: str) -> list[str]:
    """``python -m module``, without the working directory on sys.path (-P)."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", module, *args]


def installed_problems() -> list[str]:
    """Why this run does not test the installed build (empty when it does)."""
    problems = []
    package = Path(uwsgigw.__file__).resolve().parent
    if package == (REPO_DIR / "uwsgigw").resolve() or \
            not package.is_relative_to(Path(sys.prefix).resolve()):
        problems.append("uwsgigw is imported from %s, not from this venv's installed wheel (%s)"
                        % (package, sys.prefix))
    script = os.path.join(BIN_DIR, "uwsgigw")
    cmd = uwsgigw_cmd()
    if cmd != [script] or not os.access(script, os.X_OK):
        problems.append("the server command is %r, not the installed script %s" % (cmd, script))
    return problems


def pytest_sessionstart(session):
    if INSTALLED:
        problems = installed_problems()
        if problems:
            pytest.exit("UWSGIGW_TEST_INSTALLED=1, but:\n  " + "\n  ".join(problems),
                        returncode=pytest.ExitCode.USAGE_ERROR)


# -- skips: none in `make test` but the long-running ones -------------------------

_SKIPPED: list[str] = []


def _note_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and \
            "long_running" not in getattr(report, "keywords", {}):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _SKIPPED.append("%s: %s" % (report.nodeid or "(collection)", reason))


def pytest_collectreport(report):
    _note_skip(report)


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    # UWSGIGW_TEST_NO_SKIPS (make test): whatever make installed must run; a
    # skip means something is missing. Only @pytest.mark.long_running may skip.
    if NO_SKIPS and _SKIPPED and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if NO_SKIPS and _SKIPPED:
        terminalreporter.section("skipped tests fail this run (UWSGIGW_TEST_NO_SKIPS=1)",
                                 sep="=", red=True, bold=True)
        for line in _SKIPPED:
            terminalreporter.line("SKIPPED %s" % line, red=True)
        terminalreporter.line("Only @pytest.mark.long_running tests may skip here "
                              "(they run in make soak).", red=True)


# -- packets and raw uwsgi ------------------------------------------------------

def _build_packet(pairs, modifier1=0, modifier2=0, body=b""):
    try:
        from packet_builder import build_packet
    except ImportError:  # tests/ is a package in some layouts
        from tests.packet_builder import build_packet
    return build_packet(pairs, modifier1=modifier1, modifier2=modifier2, body=body)


def _b(value) -> bytes:
    # PEP 3333: the CGI vars are bytes on the wire, latin-1 as native str.
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def to_pairs(vars) -> list[tuple[bytes, bytes]]:
    items = vars.items() if isinstance(vars, dict) else vars
    return [(_b(k), _b(v)) for k, v in items]


def nginx_vars(method="GET", uri="/", body=b"", content_type="", **extra) -> dict:
    """The vars nginx's uwsgi_params would send for a simple request."""
    path, _, query = uri.partition("?")
    env = {
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "REQUEST_URI": uri,
        "PATH_INFO": path,
        "DOCUMENT_ROOT": "/usr/share/nginx/html",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "SERVER_PORT": "80",
        "SERVER_NAME": "localhost",
        "HTTP_HOST": "localhost",
    }
    env.update(extra)
    return env


def uwsgi_connect(addr: str, timeout: float = 10.0) -> socket.socket:
    """Connect to a uwsgi socket given as a unix path or host:port."""
    family, address = connect_address(addr)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s


def recv_all(s: socket.socket) -> bytes:
    """Read to EOF; a reset after some data still returns that data."""
    chunks = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def recv_response(s: socket.socket) -> bytes:
    """Read one answer that has a Content-Length, without waiting for EOF."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = parse_response(data).header("Content-Length")
            if length is not None and len(body) >= int(length):
                return data
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def uwsgi_request(addr: str, vars=None, body: bytes = b"", raw: bytes | None = None,
                  modifier1: int = 0, modifier2: int = 0, timeout: float = 10.0,
                  shutdown_write: bool = False) -> bytes:
    """Send one uwsgi packet (or ``raw`` bytes) and return the whole answer."""
    data = raw if raw is not None else _build_packet(
        to_pairs(vars or {}), modifier1=modifier1, modifier2=modifier2, body=body)
    with uwsgi_connect(addr, timeout) as s:
        try:
            s.sendall(data)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before taking everything
        return recv_all(s)


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = b""

    def header(self, name: str, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default


def parse_response(raw: bytes) -> RawResponse:
    """Split an HTTP/1.x answer as uwsgigw writes it to the uwsgi socket."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no end of headers in %r" % raw[:500]
    lines = head.decode("latin-1").split("\r\n")
    proto, _, rest = lines[0].partition(" ")
    assert proto == "HTTP/1.1", "bad status line %r" % lines[0]
    code, _, reason = rest.partition(" ")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k, v.strip()))
    return RawResponse(int(code), reason, headers, body, raw)


# -- HTTP through nginx ---------------------------------------------------------

@dataclass
class HTTPResult:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    error: Exception | None = None  # set when the body was cut short

    def header(self, name: str, default=None):
        return self.headers.get(name, default)

    def header_list(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []


def has_ipv6() -> bool:
    """Whether this machine can bind the IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def site_get(site, path: str, **kw) -> "HTTPResult":
    """GET through the nginx of a ``(server, nginx)`` fixture."""
    return http_request(site[1].port, "GET", path, **kw)


def site_post(site, path: str, body: bytes, content_type: str, **kw) -> "HTTPResult":
    """POST ``body`` as ``content_type`` through the nginx of a ``(server, nginx)`` fixture."""
    headers = {"Content-Type": content_type}
    headers.update(kw.pop("headers", {}))
    return http_request(site[1].port, "POST", path, body=body, headers=headers, **kw)


def http_request(port: int, method: str = "GET", path: str = "/", body=None,
                 headers: dict | list | None = None, timeout: float = 60.0,
                 host: str = "127.0.0.1", https: bool = False) -> HTTPResult:
    """One request to nginx with http.client; a truncated body is reported, not raised."""
    if https:
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        names = set()
        for k, v in items:
            conn.putheader(k, v)
            names.add(k.lower())
        if body is not None and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        error = None
        try:
            data = resp.read()
        except (http.client.IncompleteRead, ConnectionError) as exc:
            data, error = getattr(exc, "partial", b""), exc
        return HTTPResult(resp.status, resp.reason, resp.headers, data, error)
    finally:
        conn.close()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body: files = {name: (filename, bytes, content_type)}."""
    boundary = "----uwsgigwtest%d" % time.monotonic_ns()
    parts = []
    for name, value in fields.items():
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n"
                      % (boundary, name)).encode() + _b(value) + b"\r\n")
    for name, (filename, data, ctype) in files.items():
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; "
                      "filename=\"%s\"\r\nContent-Type: %s\r\n\r\n"
                      % (boundary, name, filename, ctype)).encode() + data + b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode())
    return b"".join(parts), "multipart/form-data; boundary=%s" % boundary


# -- processes -------------------------------------------------------------------

def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(interval)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process we did not start as a child (a daemon): SIGTERM, then
    SIGKILL if it is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not os.path.exists("/proc/%d" % pid), timeout,
                       what="pid %d gone" % pid)
            return
        except TimeoutError:
            continue


def read_record(records, name: str) -> str:
    """What a test app wrote to ``records/name`` (apps leave evidence there), or ""."""
    try:
        with open(os.path.join(str(records), name)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


_SHORT_DIRS: list[str] = []


def short_tmpdir() -> str:
    """A fresh short directory for unix sockets, removed at the end of the session.

    AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    """
    path = tempfile.mkdtemp(prefix="ugw-", dir="/tmp")
    _SHORT_DIRS.append(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _remove_short_tmpdirs():
    yield
    for path in _SHORT_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def server_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # Never the checkout: a server imports the uwsgigw this venv has installed.
    paths = [str(APPS_DIR), str(DJANGO_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    # Settings come from the test's command line only, not the caller's shell.
    for key in [k for k in env if k.startswith("UWSGIGW_")]:
        del env[key]
    for key in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "WATCHDOG_USEC"):
        env.pop(key, None)
    env.update(extra or {})
    return env


class UwsgigwProcess:
    """``uwsgigw ...`` (see uwsgigw_cmd) in its own process group, log in a file."""

    def __init__(self, args: list[str], socket_addr: str, log_path: str, env: dict,
                 cwd: str | None = None):
        self.args = args
        self.socket = socket_addr
        self.log_path = log_path
        self.cmd = uwsgigw_cmd(*args)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_mark(self) -> int:
        """An offset into the log; pass it as ``since`` to look only at later lines."""
        return os.path.getsize(self.log_path)

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, *needles: str, since: int = 0, timeout: float = 10.0) -> str:
        """Poll the log until every needle is in it (after ``since``); return that text."""
        def found():
            text = self.log_since(since)
            return text if all(n in text for n in needles) else None
        try:
            return wait_until(found, timeout, what="log lines %r" % (needles,))
        except TimeoutError:
            raise AssertionError("log lines %r not found; log since mark:\n%s"
                                 % (needles, self.log_since(since))) from None

    def connectable(self) -> bool:
        family, address = connect_address(self.socket)
        return can_connect(family, address, timeout=0.5)

    def wait_ready(self, timeout: float = 30.0) -> "UwsgigwProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("uwsgigw exited with status %s at start-up: %s\n%s"
                                     % (self.proc.returncode, " ".join(self.cmd),
                                        self.log_text()))
            if READY_LINE in self.log_text() and self.connectable():
                return self
            time.sleep(0.02)
        raise AssertionError("uwsgigw not ready within %gs: %s\n%s"
                             % (timeout, " ".join(self.cmd), self.log_text()))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0):
        return stop_process_group(self.proc, sig, timeout)


class _Factories:
    """Starts servers and nginx for one scope and stops all of them at its end."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.servers: list[UwsgigwProcess] = []
        self.nginxes: list[DevNginx] = []
        self.count = 0

    def uwsgigw(self, *args: str, socket: str | None = None, tcp: bool = False,
                env: dict | None = None, cwd: str | None = None, wait: bool = True,
                ready_timeout: float = 30.0, http: bool = False) -> UwsgigwProcess:
        """Start ``uwsgigw *args``.

        ``--socket`` is added (a fresh unix path, or 127.0.0.1:<free port> with
        ``tcp=True``) unless ``socket`` is given, or ``--ini`` names it (then pass
        ``socket`` too, so readiness can connect to it), or ``socket`` is already
        in ``args`` (``--http-socket ADDRESS``: the server has no uwsgi socket).
        With ``http=True`` the added one is ``--http-socket`` (TCP unless
        ``socket`` is a path).
        """
        tcp = tcp or (http and socket is None)
        flag = "--http-socket" if http else "--socket"
        pick_port = socket is None and tcp
        for attempt in range(3 if pick_port else 1):
            self.count += 1
            argv = list(args)
            if socket is None or pick_port:
                socket = ("127.0.0.1:%d" % free_port()) if tcp else os.path.join(
                    short_tmpdir(), "s%d.sock" % self.count)
            if not {"--ini", flag, "-s", socket} & set(argv):
                argv = [flag, socket, *argv]
            log_path = os.path.join(self.workdir, "uwsgigw-%d.log" % self.count)
            proc = UwsgigwProcess(argv, socket, log_path, server_env(env), cwd)
            self.servers.append(proc)
            if not wait:
                return proc
            try:
                return proc.wait_ready(ready_timeout)
            except AssertionError:
                # Another process took the free port between probe and bind.
                if not (pick_port and "Address already in use" in proc.log_text()):
                    raise
        raise AssertionError("no free TCP port after 3 attempts")

    def nginx(self, upstream: str, **kwargs) -> DevNginx:
        self.count += 1
        workdir = os.path.join(self.workdir, "nginx-%d" % self.count)
        os.makedirs(workdir)
        # nginx_dir: devnginx's own default, so an installed run uses the shipped copy.
        nginx = DevNginx(upstream, workdir=workdir, **kwargs)
        self.nginxes.append(nginx)
        return nginx.start()

    def close(self) -> None:
        for nginx in self.nginxes:
            nginx.stop()
        for server in self.servers:
            server.stop()
            if server.socket.startswith("/tmp/ugw-"):
                shutil.rmtree(os.path.dirname(server.socket), ignore_errors=True)


@pytest.fixture
def factories(tmp_path):
    f = _Factories(str(tmp_path))
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_factories(tmp_path_factory):
    f = _Factories(str(tmp_path_factory.mktemp("module")))
    yield f
    f.close()


@pytest.fixture
def uwsgigw_factory(factories):
    """Start a uwsgigw server for this test: ``uwsgigw_factory("--module", "m:app")``."""
    return factories.uwsgigw


@pytest.fixture
def nginx_factory(factories):
    """Start nginx (from nginx/site.conf) in front of an upstream for this test."""
    return factories.nginx


@pytest.fixture(scope="module")
def module_uwsgigw_factory(module_factories):
    return module_factories.uwsgigw


@pytest.fixture(scope="module")
def module_nginx_factory(module_factories):
    return module_factories.nginx


@pytest.fixture(scope="session")
def record_dir(tmp_path_factory) -> Path:
    """Where test apps write what they observed (e.g. that close() was called)."""
    return tmp_path_factory.mktemp("records")


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """A throwaway self-signed certificate for nginx's ``listen ... ssl``."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key
