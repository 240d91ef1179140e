"""The command line: uWSGI spellings, errors and exit codes, the CLI-only flags.

Most tests run the click command in-process (fast); a few run the installed
``uwsgigw`` command as a real subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner
from conftest import APPS_DIR, uwsgigw_cmd

from uwsgigw import exitcodes
from uwsgigw.cli import load, main, parse_argv
from uwsgigw.config.settings import ConfigError
from uwsgigw.config.options import OPTIONS


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("UWSGIGW_", "LISTEN_")):
            monkeypatch.delenv(name)


def run(*args: str, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def printed(result) -> dict[str, list[str]]:
    """--print-config output -> {name: [values]} (set lines only)."""
    values: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if "=" in line and not line.startswith(("[", ";")):
            name, _, rest = line.partition(" = ")
            values.setdefault(name, []).append(rest.split("  ; ")[0])
    return values


# -- uWSGI-style command lines -----------------------------------------------------------

def test_uwsgi_long_options():
    result = run("--socket", "/tmp/x.sock", "--module", "app:application", "--processes", "2",
                 "--master", "--print-config")
    assert result.exit_code == 0, result.output
    got = printed(result)
    assert got["socket"] == ["/tmp/x.sock"] and got["module"] == ["app:application"]
    assert got["processes"] == ["2"] and got["master"] == ["true"]


def test_uwsgi_short_options():
    got = printed(run("-s", ":8000", "-w", "app", "-p", "2", "-M", "--print-config"))
    assert got["socket"] == [":8000"] and got["module"] == ["app"]
    assert got["processes"] == ["2"] and got["master"] == ["true"]


def test_uwsgi_aliases_on_the_command_line():
    inv = parse_argv(["--uwsgi-socket", ":1", "--wsgi", "app", "--workers", "3",
                      "--virtualenv", "/venv", "--file", "x.py"])
    assert inv.values["socket"] == (":1",) and inv.values["module"] == "app"
    assert inv.values["processes"] == "3" and inv.values["home"] == "/venv"
    assert inv.values["wsgi_file"] == "x.py"


def test_load_parses_a_command_line_like_the_cli():
    cfg = load(["-s", ":8000", "-w", "app", "-p", "2", "-M", "--threads", "4", "--enable-threads",
                "--chmod-socket", "--harakiri", "30"], {})
    assert (cfg.socket, cfg.module, cfg.processes, cfg.master, cfg.threads) == \
        ([":8000"], "app", 2, True, 4)
    assert cfg.enable_threads is True and cfg.chmod_socket == "666" and cfg.harakiri == 30


def test_bare_and_negated_boolean_flags(tmp_path):
    ini = tmp_path / "a.ini"
    ini.write_text("[uwsgi]\nsocket = :1\nmaster = true\nvacuum = true\n")
    cfg = load(["--ini", str(ini), "--no-master"], {})
    assert cfg.master is False and cfg.vacuum is True  # absent flags leave the INI alone
    assert load(["--ini", str(ini), "--master"], {}).master is True


def test_positional_ini_file(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = :1\nprocesses = 3\n")
    assert printed(run(str(ini), "--print-config"))["processes"] == ["3"]
    result = run("site.yaml")
    assert result.exit_code == exitcodes.CONFIG_ERROR
    assert "unexpected argument 'site.yaml'" in result.stderr


# -- errors -------------------------------------------------------------------------------

def test_bad_value_is_one_line_and_exit_78():
    result = run("-s", ":1", "-p", "two")
    assert result.exit_code == exitcodes.CONFIG_ERROR
    assert result.stderr == ("uwsgigw: error: command line (--processes): processes = 'two': "
                             "expected a whole number, e.g. 4\n")


def test_unknown_flag_suggests_the_closest_option():
    result = run("--proceses", "2")
    assert result.exit_code == exitcodes.CONFIG_ERROR
    assert result.stderr == ("uwsgigw: error: command line: 'proceses' is not a uwsgigw or "
                             "uWSGI option (did you mean 'processes'?); see uwsgigw --help\n")
    with pytest.raises(ConfigError) as info:
        load(["--proceses", "2"], {})
    assert info.value.messages == ["command line: 'proceses' is not a uwsgigw or uWSGI option "
                                   "(did you mean 'processes'?); see uwsgigw --help"]
    with pytest.raises(ConfigError, match="command line: Option '--processes' requires an"):
        load(["--processes"], {})


def test_unsupported_uwsgi_flag_gets_the_same_message_as_in_ini(tmp_path):
    ini = tmp_path / "a.ini"
    ini.write_text("[uwsgi]\ncollect-header = X-A a\n")
    from_ini = load(["--ini", str(ini), "--check"], {}).warnings[0].split(": ", 1)[1]
    cfg = load(["-s", ":1", "--collect-header", "X-A a", "--check-static-docroot", "-w", "app"],
               {})
    assert sorted(cfg.warnings) == ["command line (--check-static-docroot): " + from_ini.replace(
                                        "'collect-header'", "'check-static-docroot'"),
                                    "command line (--collect-header): " + from_ini]


def test_https_only_on_the_command_line_explains_the_missing_socket():
    result = run("--https", ":8443,cert.pem,key.pem", "-w", "app")
    assert result.exit_code == exitcodes.CONFIG_ERROR
    assert ("no socket to serve on: uwsgigw does not serve --https :8443,cert.pem,key.pem. "
            "Add socket = ") in result.stderr


def test_missing_ini_file_exit_78(tmp_path):
    result = run("--ini", str(tmp_path / "nope.ini"))
    assert result.exit_code == exitcodes.CONFIG_ERROR
    assert "nope.ini does not exist" in result.stderr


# -- --check, --print-config, --version, --help ---------------------------------------------

def test_check_ok_prints_warnings_and_exits_0(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nhttps = :8443\nsocket = %s\npythonpath = %s\nmodule = plain_apps\n"
                   "thunder-lock\n" % (tmp_path / "app.sock", APPS_DIR))
    result = run("--ini", str(ini), "--check")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("warning: %s:2: 'https' is a uWSGI option" % ini)
    assert any(line.startswith("note: ") and "thunder-lock" in line for line in lines)
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert lines[-1] == "%s: OK for uwsgigw (%d warnings)" % (ini, len(warnings))


def test_check_without_a_socket_exits_1(tmp_path):
    # It used to print "OK" and exit 0: start-up stops there.
    result = run("-w", "no_such_app_module", "--check")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("uwsgigw: error: no socket to serve on")
    assert errors[1] == ("uwsgigw: error: command line (--module): module = no_such_app_module: "
                         "on this machine, the app does not load: ModuleNotFoundError: No "
                         "module named 'no_such_app_module'")
    assert "configuration NOT usable (2 errors, on stderr)" in result.stdout


def test_check_with_errors_exits_1(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = :1\nprocesses = two\nguid = x\n")
    result = run("--ini", str(ini), "--check")
    assert result.exit_code == 1
    assert result.stderr == ("uwsgigw: error: %s:3: processes = 'two': expected a whole "
                             "number, e.g. 4\n" % ini)
    assert "configuration NOT usable (1 error, on stderr)" in result.stdout
    assert "'guid'" in result.stdout  # warnings are still reported


def test_print_config_shows_sources(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nsocket = :1\nbuffer-size = 65536\n")
    result = run("--ini", str(ini), "--print-config", "--threads", "2",
                 env={"UWSGIGW_HARAKIRI": "30"})
    assert result.exit_code == 0
    assert "buffer-size = 65535  ; %s:3" % ini in result.stdout
    assert "threads = 2  ; command line (--threads)" in result.stdout
    assert "harakiri = 30  ; environment UWSGIGW_HARAKIRI" in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"uwsgigw \S+ \(decoder: (c|python), Python \d+\.\d+\.\d+\)\n",
                        result.stdout)
    forced = run("--version", "--decoder", "python")
    assert "(decoder: python," in forced.stdout
    bad = run("--version", env={"UWSGIGW_DECODER": "rust"})
    assert bad.exit_code == exitcodes.CONFIG_ERROR and "one of auto, c, python" in bad.stderr


def test_help_lists_every_option():
    result = run("--help")
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", result.stdout)
    for opt in OPTIONS:
        assert "--%s" % opt.name in text, opt.name
    for flag in ("--check", "--print-config", "--version", "--reload", "--stop", "-h,"):
        assert flag in text
    assert "--https " not in text  # unsupported uWSGI flags are hidden


# -- serving ---------------------------------------------------------------------------------

def test_serve_gets_the_config_and_its_exit_code(monkeypatch):
    seen = []
    fake = types.ModuleType("uwsgigw.server")
    fake.serve = lambda cfg: seen.append(cfg) or exitcodes.SOCKET_ERROR
    monkeypatch.setitem(sys.modules, "uwsgigw.server", fake)
    result = run("-s", ":9000", "-w", "app", "-p", "3")
    assert result.exit_code == exitcodes.SOCKET_ERROR
    assert seen[0].processes == 3 and seen[0].socket == [":9000"]


# -- --reload / --stop -----------------------------------------------------------------------

CHILD = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *a: (print("HUP", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(30)
"""


def _child(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    pidfile = tmp_path / "master.pid"
    pidfile.write_text("%d\n" % proc.pid)
    return proc, str(pidfile)


def test_reload_sends_sighup(tmp_path):
    proc, pidfile = _child(tmp_path)
    try:
        result = run("--reload", pidfile)
        assert result.exit_code == 0 and "sent SIGHUP to uwsgigw master %d" % proc.pid in result.stdout
        assert proc.stdout.readline() == "HUP\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_stop_sends_sigterm(tmp_path):
    proc, pidfile = _child(tmp_path)
    try:
        assert run("--stop", pidfile).exit_code == 0
        assert proc.wait(timeout=10) == -15
    finally:
        proc.kill()


def test_reload_errors(tmp_path):
    result = run("--reload", str(tmp_path / "none.pid"))
    assert result.exit_code == 1 and "cannot read pidfile" in result.stderr
    bad = tmp_path / "bad.pid"
    bad.write_text("not a pid")
    assert "does not hold a pid" in run("--stop", str(bad)).stderr
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = tmp_path / "stale.pid"
    stale.write_text(str(proc.pid))
    result = run("--stop", str(stale))
    assert result.exit_code == 1 and "stale pidfile" in result.stderr


# -- the real command ---------------------------------------------------------------------------

def _uwsgigw(*args: str, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGIGW_")}
    return subprocess.run(uwsgigw_cmd(*args), capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def test_subprocess_check_and_error(tmp_path):
    from test_config import SEED_INI  # noqa: E402 (tests/ is on sys.path under pytest)
    ini = tmp_path / "seed.ini"
    ini.write_text(SEED_INI, encoding="utf-8")
    seed = _uwsgigw("--ini", str(ini), "--check")
    # The seed's paths are another machine's: each is an error naming its line.
    assert seed.returncode == 1, seed.stdout + seed.stderr
    assert seed.stdout.splitlines()[-1].startswith("configuration NOT usable")
    errors = seed.stderr.splitlines()
    assert errors and all(e.startswith("uwsgigw: error: %s:" % ini) and "on this machine" in e
                          for e in errors), errors
    assert any("chdir = /home/user1/mysite1: on this machine, no such directory" in e
               for e in errors)
    assert any("daemonize = /var/log/uwsgi/mysite1.log: on this machine, directory "
               "/var/log/uwsgi does not exist" in e for e in errors)
    bad = _uwsgigw("-s", ":1", "-w", "app", "-p", "two")
    assert bad.returncode == exitcodes.CONFIG_ERROR
    assert bad.stderr.strip() == ("uwsgigw: error: command line (--processes): processes = "
                                  "'two': expected a whole number, e.g. 4")
    assert "Traceback" not in bad.stderr


def test_subprocess_version():
    result = _uwsgigw("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("uwsgigw ")
