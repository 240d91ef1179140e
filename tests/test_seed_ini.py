"""The reference uWSGI INI from seed 001 runs as written behind the real nginx.

The file is read from ../shared/seeds/001_*.txt (the Chinese article it comes
from: NBSPs, inline `# 中文` comments, `%(project)`/`%(base)` references,
`daemonize`, `pidfile`, `vacuum`, `home`, `chown-socket`...). Only what is
machine-specific is rewritten: the paths (into a temp dir) and uid/gid, because
www-data cannot read this machine's Python under /root. The Django project is
`mysite1`, as seed 002 names it (`module = %(project).wsgi:application`).
Its three ways to reach nginx: option 1 (the unix socket, as written) and
option 3 (`http=0.0.0.0:8000` with nginx `proxy_pass`) are started here.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import (DJANGO_DIR, REPO_DIR, http_request, server_env, stop_pid,
                      uwsgigw_cmd, wait_until)

SEEDS = sorted((REPO_DIR.parent / "shared" / "seeds").glob("001_*.txt"))
pytestmark = pytest.mark.skipif(not SEEDS, reason="../shared/seeds is not here")


def seed_ini() -> str:
    text = SEEDS[0].read_text(encoding="utf-8")
    start = text.index("[uwsgi]")
    return text[start:text.index("注意", start)]  # the INI ends where the prose resumes


def rewrite(ini: str, base: str, rundir: str) -> str:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    subs = [
        (r"^uid\s*=\s*www-data", "uid=" + user),
        (r"^gid\s*=\s*www-data", "gid=" + group),
        (r"^base\s*=\s*/home/user1", "base = " + base),
        (r"^socket\s*=\s*/run/uwsgi/", "socket=%s/" % rundir),
        (r"^pidfile\s*=\s*/tmp/", "pidfile=%s/" % base),
        (r"^daemonize\s*=\s*/var/log/uwsgi/", "daemonize=%s/" % base),
    ]
    for pattern, replacement in subs:
        ini, count = re.subn(pattern, replacement, ini, flags=re.M)
        assert count == 1, "the seed no longer has a line matching %r" % pattern
    return ini


@pytest.fixture
def seed_site(nginx_factory):
    base = tempfile.mkdtemp(prefix="ugw-seed-", dir="/tmp")
    rundir = tempfile.mkdtemp(prefix="ugw-run-", dir="/tmp")
    shutil.copytree(DJANGO_DIR / "mysite1", Path(base) / "mysite1")
    # home = %(base)/Env/%(project): a virtualenv layout whose site-packages
    # the app imports from (empty here: Django comes from the test venv).
    site = Path(base, "Env", "mysite1", "lib", "python%d.%d" % sys.version_info[:2],
                "site-packages")
    site.mkdir(parents=True)
    ini = Path(base, "mysite1.ini")
    ini.write_text(rewrite(seed_ini(), base, rundir), encoding="utf-8")
    pidfile = Path(base, "mysite1-master.pid")
    state = {"pid": None}
    try:
        yield ini, pidfile, Path(rundir, "mysite1.sock"), Path(base, "mysite1.log"), state
    finally:
        pid = state["pid"] or (int(pidfile.read_text()) if pidfile.exists() else None)
        if pid:
            stop_pid(pid)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(rundir, ignore_errors=True)


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run(uwsgigw_cmd("--ini", str(path), "--check"),
                          capture_output=True, text=True, env=server_env(), timeout=60)


def test_seed_ini_as_written_checks_with_only_machine_errors():
    """--check on the seed as written: its values are all valid; what stops it here is
    another machine's directories, each an error naming its line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "seed.ini")
        path.write_text(seed_ini(), encoding="utf-8")
        out = _check(path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "configuration NOT usable (3 errors, on stderr)"
    errors = sorted(line.split(": ", 3)[3] for line in out.stderr.splitlines())
    assert errors == [
        "chdir = /home/user1/mysite1: on this machine, no such directory",
        "daemonize = /var/log/uwsgi/mysite1.log: on this machine, directory /var/log/uwsgi "
        "does not exist",
        "socket = /run/uwsgi/mysite1.sock: on this machine, directory /run/uwsgi does not exist"]


def test_seed_ini_with_this_machines_paths_checks_ok(seed_site):
    """The same file with this machine's paths: --check says it starts (and the next
    test starts it)."""
    ini = seed_site[0]
    out = _check(ini)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("%s: OK for uwsgigw" % ini)


def test_seed_ini_serves_django_through_nginx(seed_site, nginx_factory):
    ini, pidfile, sock, logfile, state = seed_site
    started = subprocess.run(uwsgigw_cmd("--ini", str(ini)),
                             capture_output=True, text=True, env=server_env(), timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr  # daemonize: parent returns
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="pidfile")
    state["pid"] = int(pidfile.read_text())
    wait_until(lambda: "ready to accept requests" in logfile.read_text(), 30,
               what="ready line in the daemonize log")
    assert oct(os.stat(sock).st_mode & 0o777) == oct(0o664)  # chmod-socket=664
    nginx = nginx_factory(str(sock))
    r = http_request(nginx.port, "GET", "/")
    assert r.status == 200, (r.body, logfile.read_text(), nginx.error_log())
    assert r.body == b"Hello from Django on uwsgigw"
    assert "2 workers" in logfile.read_text()  # processes=2
    # The worker writes its request line after nginx has the response: poll for it.
    wait_until(lambda: re.search(r"\] GET / => generated \d+ bytes", logfile.read_text()), 10,
               what="request line in the daemonize log")
    # SIGTERM: graceful stop; vacuum removes the socket and the pidfile.
    os.kill(state["pid"], signal.SIGTERM)
    wait_until(lambda: not os.path.exists("/proc/%d" % state["pid"]), 20, what="master exit")
    assert not sock.exists() and not pidfile.exists()


def option3(ini: str, port: int) -> str:
    """The article's third way to reach nginx, as its comments say to pick it:
    the option-1 ``socket=`` line commented out, the ``# http=0.0.0.0:8000``
    line uncommented (on a free port instead of 8000)."""
    ini, off = re.subn(r"^(socket\s*=.*)$", r"# \1", ini, flags=re.M)
    ini, on = re.subn(r"^#\s*http=0\.0\.0\.0:8000\s*$", "http=0.0.0.0:%d" % port, ini,
                      flags=re.M)
    assert off == 1 and on == 1, "the seed no longer has its option 1 and 3 lines"
    return ini


def test_seed_ini_option_3_serves_django_through_nginx_proxy_pass(seed_site, nginx_factory):
    """Option 3 of the seed (``http=0.0.0.0:8000``, nginx ``proxy_pass``): the
    HTTP listener, behind nginx/site-http.conf."""
    ini, pidfile, sock, logfile, state = seed_site
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ini.write_text(option3(ini.read_text(encoding="utf-8"), port), encoding="utf-8")
    started = subprocess.run(uwsgigw_cmd("--ini", str(ini)),
                             capture_output=True, text=True, env=server_env(), timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="pidfile")
    state["pid"] = int(pidfile.read_text())
    wait_until(lambda: "ready to accept requests" in logfile.read_text(), 30,
               what="ready line in the daemonize log")
    assert "0.0.0.0:%d (http)" % port in logfile.read_text()
    assert not sock.exists()  # option 1's unix socket is not there
    nginx = nginx_factory("127.0.0.1:%d" % port, site="site-http.conf")
    for _ in range(3):  # kept-alive upstream connections carry several requests
        r = http_request(nginx.port, "GET", "/")
        assert r.status == 200, (r.body, logfile.read_text(), nginx.error_log())
        assert r.body == b"Hello from Django on uwsgigw"
    wait_until(lambda: len(re.findall(r"\] GET / => generated \d+ bytes",
                                      logfile.read_text())) == 3, 10,
               what="three request lines in the daemonize log")
    os.kill(state["pid"], signal.SIGTERM)
    wait_until(lambda: not os.path.exists("/proc/%d" % state["pid"]), 20, what="master exit")
    assert not pidfile.exists()
