"""``--check`` predicts start-up for the same command line and environment
(issue 12, section 5), with real processes.

For each configuration, ``uwsgigw --check`` and a real start-up are run: check
exits 1 exactly when start-up stops (it used to say "OK" with no socket at
all, and warn only about missing directories and users). Only what cannot be
known before start-up -- sockets systemd will pass -- stays a warning.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from conftest import APPS_DIR, server_env, short_tmpdir, uwsgigw_cmd
from test_master_support import raw_get
from uwsgigw import preflight
from uwsgigw.cli import main

ROOT = os.geteuid() == 0
GOOD = "pythonpath = {apps}\nmodule = master_apps:application\n"
SOCKET = "socket = {d}/app.sock\n"
# name -> INI body; each but "good" stops start-up
CASES = {
    "good": SOCKET + GOOD,
    "no-socket": GOOD,
    "socket-dir-missing": "socket = {d}/missing/app.sock\n" + GOOD,
    "tcp-address-in-use": "socket = 127.0.0.1:{busy}\n" + GOOD,
    "module-does-not-import": SOCKET + "pythonpath = {apps}\nmodule = no_such_module_xyz\n",
    "app-raises-at-import": SOCKET + "pythonpath = {d}\nmodule = raising_app\n",
    "no-app-configured": SOCKET,
    "chdir-missing": SOCKET + GOOD + "chdir = {d}/missing\n",
    "home-not-a-virtualenv": SOCKET + GOOD + "home = {d}\n",
    "wsgi-file-missing": SOCKET + "wsgi-file = {d}/missing.py\n",
    "unknown-uid": SOCKET + GOOD + "uid = no-such-user-xyz\n",
    "unknown-gid": SOCKET + GOOD + "gid = no-such-group-xyz\n",
    "chown-socket-unknown-user": SOCKET + GOOD + "chown-socket = no-such-user-xyz\n",
    "logto-dir-missing": SOCKET + GOOD + "logto = {d}/missing/app.log\n",
    "pidfile-dir-missing": SOCKET + GOOD + "pidfile = {d}/missing/app.pid\n",
    "missing-include": SOCKET + GOOD + "ini = {d}/missing.ini\n",
    # an HTTP socket is a socket, checked like one
    "http-socket-only": "http-socket = {d}/app.sock\n" + GOOD,
    "http-socket-dir-missing": "http-socket = {d}/missing/app.sock\n" + GOOD,
    "http-tcp-address-in-use": SOCKET + "http = 127.0.0.1:{busy}\n" + GOOD,
}
SERVES = {"good", "http-socket-only"}
RAISING_APP = "import os\nraise RuntimeError('database unreachable')\n"


def check_run(ini, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(uwsgigw_cmd("--ini", str(ini), "--check"),
                          capture_output=True, text=True, env=server_env(env), timeout=90)


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def write_case(name: str, port: int) -> tuple[str, str]:
    d = short_tmpdir()
    with open(os.path.join(d, "raising_app.py"), "w") as f:
        f.write(RAISING_APP)
    ini = os.path.join(d, "%s.ini" % name)
    with open(ini, "w") as f:
        f.write("[uwsgi]\n" + CASES[name].format(d=d, apps=APPS_DIR, busy=port))
    return ini, os.path.join(d, "app.sock")


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_fails_exactly_when_start_up_does(name, uwsgigw_factory, busy_port):
    ini, sock = write_case(name, busy_port)
    check = check_run(ini)
    server = uwsgigw_factory("--ini", ini, socket=sock, wait=False)
    if name in SERVES:
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.splitlines()[-1].startswith("%s: OK for uwsgigw" % ini)
        server.wait_ready()
        if name == "good":
            assert raw_get(sock, "/").status == 200
        return
    code = server.proc.wait(60)
    assert code != 0, server.log_text()
    assert check.returncode == 1, "start-up stopped (%d) but --check said:\n%s\n%s" % (
        code, check.stdout, check.stderr)
    assert check.stdout.splitlines()[-1].startswith("configuration NOT usable")
    assert check.stderr.startswith("uwsgigw: error: ")
    assert "Traceback" not in check.stdout + check.stderr


def test_check_names_the_line_the_value_and_the_reason(busy_port):
    ini, _ = write_case("app-raises-at-import", busy_port)
    err = check_run(ini).stderr
    assert err == ("uwsgigw: error: %s:4: module = raising_app: on this machine, the app does "
                   "not load: RuntimeError: database unreachable (%s, line 2)\n"
                   % (ini, os.path.join(os.path.dirname(ini), "raising_app.py")))
    ini, _ = write_case("tcp-address-in-use", busy_port)
    assert ("%s:2: socket = 127.0.0.1:%d: on this machine, in use: another server listens "
            "on it" % (ini, busy_port)) in check_run(ini).stderr
    ini, _ = write_case("http-tcp-address-in-use", busy_port)
    assert check_run(ini).stderr == (
        "uwsgigw: error: %s:3: http-socket = 127.0.0.1:%d: on this machine, in use: another "
        "server listens on it (stop it, or choose another)\n" % (ini, busy_port))
    ini, _ = write_case("http-socket-dir-missing", busy_port)
    assert check_run(ini).stderr == (
        "uwsgigw: error: %s:2: http-socket = %s/missing/app.sock: on this machine, directory "
        "%s/missing does not exist\n" % (ini, os.path.dirname(ini), os.path.dirname(ini)))


def test_check_with_neither_socket_fails_and_with_an_http_socket_passes(busy_port):
    ini, _ = write_case("no-socket", busy_port)
    out = check_run(ini)
    assert out.returncode == 1
    assert out.stderr.startswith("uwsgigw: error: no socket to serve on: set socket = ADDRESS")
    ini, _ = write_case("http-socket-only", busy_port)
    out = check_run(ini)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("%s: OK for uwsgigw" % ini)


def test_need_app_off_makes_an_import_error_a_warning(busy_port):
    ini, _ = write_case("app-raises-at-import", busy_port)
    with open(ini, "a") as f:
        f.write("need-app = false\n")
    out = check_run(ini)
    assert out.returncode == 0, out.stderr
    assert "RuntimeError: database unreachable" in out.stdout
    assert "need-app is off: start-up goes on, every request gets 500" in out.stdout


def test_systemd_sockets_are_a_warning_that_says_it_cannot_check(busy_port):
    ini, _ = write_case("no-socket", busy_port)
    out = check_run(ini, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert out.returncode == 0, out.stderr
    assert ("warning: LISTEN_FDS is set: at start-up the sockets come from systemd socket "
            "activation (socket = and http-socket = entries are then ignored); they cannot be "
            "checked before start-up") in out.stdout


def test_a_socket_held_by_the_running_server_is_a_warning(uwsgigw_factory, tmp_path):
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    ini = tmp_path / "running.ini"
    ini.write_text("[uwsgi]\nsocket = 127.0.0.1:%d\npidfile = %s\n" % (port, tmp_path / "pid")
                   + GOOD.format(apps=APPS_DIR))
    server = uwsgigw_factory("--ini", str(ini), socket="127.0.0.1:%d" % port)
    out = check_run(ini)  # before a reload, say
    assert out.returncode == 0, out.stderr
    assert ("socket = 127.0.0.1:%d: on this machine, in use by the running uwsgigw (pid %d, "
            "from the pidfile): a reload (SIGHUP) keeps it" % (port, server.pid)) in out.stdout


def test_the_app_is_imported_in_a_child_process(tmp_path):
    marker = tmp_path / "imported-by"
    (tmp_path / "noisy_app.py").write_text(textwrap.dedent("""
        import os
        print("noise from the app's import")
        with open(%r, "w") as f:
            f.write(str(os.getpid()))
        def application(environ, start_response):
            return []
    """ % str(marker)))
    ini = tmp_path / "noisy.ini"
    ini.write_text("[uwsgi]\nsocket = %s\npythonpath = %s\nmodule = noisy_app\n"
                   % (os.path.join(short_tmpdir(), "n.sock"), tmp_path))
    result = CliRunner().invoke(main, ["--ini", str(ini), "--check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert int(marker.read_text()) != os.getpid()
    assert "noisy_app" not in sys.modules
    assert "noise" not in result.output


def test_an_import_that_takes_too_long_is_not_checked(tmp_path, monkeypatch):
    (tmp_path / "slow_app.py").write_text("import time\ntime.sleep(30)\n")
    ini = tmp_path / "slow.ini"
    ini.write_text("[uwsgi]\nsocket = %s\npythonpath = %s\nmodule = slow_app\n"
                   % (os.path.join(short_tmpdir(), "s.sock"), tmp_path))
    monkeypatch.setattr(preflight, "IMPORT_TIMEOUT", 1.0)
    result = CliRunner().invoke(main, ["--ini", str(ini), "--check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "the app did not finish importing within 1s; not checked" in result.stdout


@pytest.mark.skipif(not ROOT, reason="root binds the socket as root:root")
def test_check_predicts_the_socket_nginx_cannot_reach(tmp_path):
    d = short_tmpdir()
    os.chmod(d, 0o755)
    ini = tmp_path / "perm.ini"
    base = "[uwsgi]\nsocket = %s/app.sock\n" % d + GOOD.format(apps=APPS_DIR)
    ini.write_text(base)
    out = check_run(ini)
    assert out.returncode == 0, out.stderr
    (line,) = [l for l in out.stdout.splitlines() if "nginx usually runs as" in l]
    assert "is root:root mode 0660" in line and "chown-socket" in line and \
        "chmod-socket" in line
    ini.write_text(base + "chown-socket = www-data:www-data\n")
    assert "nginx usually runs as" not in check_run(ini).stdout
    # nginx's proxy_pass to a unix HTTP socket needs the same permissions
    ini.write_text(base.replace("socket = ", "http-socket = "))
    (line,) = [l for l in check_run(ini).stdout.splitlines() if "nginx usually runs as" in l]
    assert "%s/app.sock" % d in line and "is root:root mode 0660" in line


def test_readme_states_the_check_rules():
    from uwsgigw.config.options import settings_markdown
    text = " ".join(settings_markdown().split())
    assert "it exits 1 when start-up would stop" in text
    assert "socket activation (`LISTEN_FDS` set) cannot be checked before start-up" in text
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        assert settings_markdown() in f.read()
