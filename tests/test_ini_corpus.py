"""Every real-world uwsgi.ini in ../shared/ini-corpus through ``uwsgigw --ini FILE --check``.

The files are valid: no value is refused, and every uWSGI option uwsgigw does
not support gets one clear warning line. ``--check`` predicts start-up on
this machine, though, and the files were written for others: their paths,
users, virtualenvs and modules are not here, some include files that are not
here, and some have no socket (one from an unset ``$(VAR)``), or no app (the module comes from another file or the
image). Start-up would stop on each of those, so each is an error (exit 1) --
and only those: every error must say "on this machine" (or be a missing
include, socket or app), never a value error or a crash.

The 20 files that use ``http``, ``http-socket`` or ``http11-socket`` also start
and serve (issue 14): their listen addresses moved to free loopback ports, the
environment variables they read set, a stand-in in place of their app; each
answers on every socket it binds, and warns about exactly the keys listed in
STILL_WARNED, never an http-* one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import uwsgigw_cmd

from uwsgigw.cli import main
from uwsgigw.config.uwsgi_compat import UNSUPPORTED

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "ini-corpus"
FILES = sorted(CORPUS.glob("*.ini")) if CORPUS.is_dir() else []
# Variables the corpus tests with if-env/$(...): unset, so runs are repeatable.
CORPUS_VARIABLES = re.compile(r"^(UWSGI|UWSGIGW_|LISTEN_)|^(CIRCLECI|SMTPD_PORT|BIND_ADDRESS|"
                              r"MOUNT_PATH|DJANGO_DIR|TERM|REDIS_.*|CELERY_.*)$")
# The errors a corpus file may get here: what this machine lacks.
MACHINE_ERROR = re.compile(r"^(\S+:\d+|command line \(--\S+\)): \S+ = .*: on this machine, "
                           r"|^\S+:\d+: ini file .* does not exist"
                           r"|^no socket to serve on: "
                           r"|^no application configured: ")
ERROR_PREFIX = "uwsgigw: error: "

pytestmark = pytest.mark.skipif(not FILES, reason="../shared/ini-corpus is not here")


@pytest.fixture(autouse=True)
def corpus_environment(monkeypatch):
    for name in list(os.environ):
        if CORPUS_VARIABLES.search(name):
            monkeypatch.delenv(name)


def keys_in(path: Path) -> set[str]:
    """Option keys of a file, read independently of uwsgigw's reader."""
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#;[" and "=" in line:
            keys.add(line.split("=", 1)[0].strip())
    return keys


def machine_errors(path: Path, code: int, stdout: str, stderr: str) -> list[str]:
    """The errors of one --check run, after checking they are all about this machine."""
    assert all(line.startswith(ERROR_PREFIX) for line in stderr.splitlines()), stderr
    errors = [line[len(ERROR_PREFIX):] for line in stderr.splitlines()]
    for error in errors:
        assert MACHINE_ERROR.search(error), error
    last = stdout.splitlines()[-1]
    if errors:
        assert code == 1
        assert last == "configuration NOT usable (%d error%s, on stderr)" % (
            len(errors), "" if len(errors) == 1 else "s")
    else:
        assert code == 0
        assert last.startswith("%s: OK for uwsgigw" % path)
    assert "Traceback" not in stdout + stderr
    return errors


def check(path: Path):
    result = CliRunner().invoke(main, ["--ini", str(path), "--check"], catch_exceptions=False)
    return result, machine_errors(path, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("path", FILES, ids=[p.name[:3] for p in FILES])
def test_corpus_file_checks_with_only_machine_errors(path):
    result, _ = check(path)
    lines = result.stdout.splitlines()
    for key in sorted(keys_in(path) & set(UNSUPPORTED)):
        expected = "'%s' is a uWSGI option uwsgigw does not support: %s" % (
            key, UNSUPPORTED[key].advice)
        assert any(expected in line for line in lines), key
    assert all(line.startswith(("warning: ", "note: ")) for line in lines[:-1])


@pytest.mark.parametrize("prefix,expected", [
    ("019", ["019-SEED-platform-seed.ini:", "chdir = /seed: on this machine, no such directory"]),
    ("030", ["module = shadowsocks_manager.wsgi: on this machine, the app does not load: "
             "ModuleNotFoundError: No module named 'shadowsocks_manager'"]),
    ("034", ["daemonize = /data/log/uwsgi.log: on this machine, directory /data/log does not "
             "exist", "socket = /data/oa.sock: on this machine, directory /data does not exist",
             "chdir = /www/oaback: on this machine, no such directory"]),
    # http = ... is an HTTP socket now, no longer "no uwsgi socket"
    ("003", ["module = pretix.wsgi: on this machine, the app does not load: "
             "ModuleNotFoundError: No module named 'pretix'"]),
])
def test_corpus_errors_say_what_this_machine_lacks(prefix, expected):
    """Each expected text is in an error of its own; there are no others (but a
    corpus port something else on this machine listens on)."""
    path = next(p for p in FILES if p.name.startswith(prefix))
    _, errors = check(path)
    errors = [e for e in errors if ": on this machine, in use: " not in e]
    wanted = [w for w in expected if not w.endswith(".ini:")]
    assert len(errors) == len(wanted), errors
    for want in expected:
        assert any(want in error for error in errors), (want, errors)


HTTP_KEYS = ("http", "http-socket", "http11-socket")


def test_corpus_http_sockets_are_served_not_unsupported():
    from uwsgigw.cli import load

    using = [p for p in FILES if keys_in(p) & set(HTTP_KEYS)]
    assert len(using) >= 15
    for path in using:
        result, _ = check(path)
        for key in sorted(keys_in(path) & set(HTTP_KEYS)):
            assert "'%s' is a uWSGI option" % key not in result.stdout, (path, key)
        assert "no socket to serve on" not in result.stderr or "$(" in path.read_text()
        if path.name.startswith("002"):
            continue  # http-socket = $(BIND_ADDRESS), unset here
        assert load(["--ini", str(path), "--check"], {}).http_socket, path


def test_corpus_strict_files_have_no_value_errors():
    strict = [p for p in FILES if re.search(r"^strict\s*=\s*true", p.read_text(), re.M)]
    assert len(strict) == 3
    for path in strict:
        check(path)


@pytest.mark.parametrize("name", ["001", "017", "040"])
def test_corpus_with_the_real_command(name):
    path = next(p for p in FILES if p.name.startswith(name))
    env = {k: v for k, v in os.environ.items() if not CORPUS_VARIABLES.search(k)}
    result = subprocess.run(uwsgigw_cmd("--ini", str(path), "--check"),
                            capture_output=True, text=True, env=env, timeout=60)
    assert machine_errors(path, result.returncode, result.stdout, result.stderr)


def test_corpus_values_that_need_uwsgi_rules(tmp_path):
    from uwsgigw.cli import load

    def cfg(prefix: str):
        path = next(p for p in FILES if p.name.startswith(prefix))
        return load(["--ini", str(path), "--check"], {})

    assert cfg("012").processes == 2 * (os.cpu_count() or 1)  # %(%k * 2)
    assert cfg("012").buffer_size == 65535 and cfg("012").reload_on_rss == 2048
    assert cfg("017").max_requests == 1000  # "1000    ; Restart workers ..."
    assert cfg("017").log_format.startswith('"address":"%(addr)"')
    assert cfg("017").socket == [":8001"]  # uwsgi-socket
    assert cfg("017").http_socket == [":8000"]
    assert cfg("016").http_socket == [":8080"]  # http11-socket
    assert cfg("003").http_socket == ["0.0.0.0:8000"]  # http (uWSGI's router)
    assert cfg("012").socket_timeout == 300.0  # http-timeout
    assert cfg("020").http_keepalive is True
    assert cfg("019").chdir == "/seed" and cfg("019").chmod_socket == "666"  # ini = :base
    assert cfg("020").buffer_size == 65535  # "65536  # Increase buffer ..."
    assert cfg("020").log_format.startswith("%(ftime) INFO")
    assert cfg("021").post_buffering == 0  # "true", as uWSGI reads it
    assert cfg("038").processes == 2 and cfg("038").threads == 2
    assert cfg("039").wsgi_file == "/opt/kispower/project/run.py"  # %(pythonpath)
    assert cfg("040").threads == 200 and cfg("040").chdir == "/usr/local/flowmeter"
    assert cfg("014").chdir == str(CORPUS.resolve()) + "/../"  # %d../ (%d is the real path)
    assert cfg("007").mount == ["/api=wsgi:app"] and cfg("007").manage_script_name is True


# -- the files that use an HTTP socket start and serve ----------------------------------

HTTP_FILES = [p for p in FILES if keys_in(p) & set(HTTP_KEYS)]
SOCKET_KEYS = ("socket", "uwsgi-socket")
# Lines that name this machine's absent things: dropped (their users, virtualenvs
# and log files are not here; daemonize/logto would take the log from the test).
DROPPED = {"uid", "gid", "home", "virtualenv", "pythonpath", "daemonize", "logto",
           "wsgi-file", "plugin", "plugins"}
# Environment variables the files read with $(VAR), as their Docker images set them.
FILE_ENV = {"002": {"UWSGI_WORKERS": "2", "UWSGI_THREADS": "2"},
            "020": {"UWSGI_WORKERS": "2"}}
# What stays warned about in each file, correctly: uWSGI options uwsgigw does
# not run (attach-daemon, loggers, ...) and lines that are not options
# (typos, a missing '='), as keys. No http-* key may be among them.
STILL_WARNED = {
    "002": {"auto-procname", "add-header"},
    "003": {"cron"},
    "004": {"disable-write-exception", "max-fd", "hook-pre-app", "attach-daemon"},
    "005": {"attach-daemon"},
    "006": {"guid"},  # a typo: not an option
    "012": {"cheaper", "auto-procname", "procname-prefix", "ignore-sigpipe",
            "ignore-write-errors", "disable-write-exception", "logger", "log-route",
            "log-encoder"},
    "013": {"cheaper", "log-master"},
    "014": set(),
    "016": {"hook-master-start"},
    "017": {"no-orphans", "max-worker-lifetime", "logger", "log-route", "log-encoder",
            "logger-req", "log-req-encoder"},
    "020": {"exec-pre", "attach-daemon", "gevent", "gevent-early-monkey-patch",
            "import", "log-master", "logformat-strftime", "log-date", "log-buffering"},
    "022": set(),
    "024": {"static-map /static"},
    "026": {"process", "attach-daemon", "unique-cron", "req-logger", "logger", "log-route"},
    "028": {"paste", "paste-logger"},
    "031": set(),
    "032": set(),
    "034": set(),
    "035": set(),
    "040": set(),
}
WARNED_KEY = re.compile(r" WARNING \S+:\d+: '([^']+)' is (?:a uWSGI option uwsgigw does not "
                        r"support|not a uwsgigw or uWSGI option|not an option)")
STANDIN = '''\
"""Stand-in for a corpus file's app: says which file and which callable."""
import json


def application(environ, start_response):
    body = json.dumps({"file": %r, "path": environ["PATH_INFO"],
                       "remote": environ.get("REMOTE_ADDR", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = flask = application
'''


def rewrite(path: Path, workdir: Path) -> tuple[str, list[str], list[str]]:
    """The file with its listen addresses on free loopback ports (unix sockets
    in ``workdir``), its chdir, pidfile and stats there, its app the stand-in,
    at most 2 processes, and the lines naming this machine's users, virtualenvs
    and log files left out: (text, HTTP addresses, uwsgi addresses). Every
    other line is kept, as are the other sections."""
    from uwsgigw.devnginx import free_port

    out, http, uwsgi = [], [], []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key, eq, value = stripped.partition("=")
        key = key.strip()
        if section != "[uwsgi]" or not eq or stripped[:1] in "#;":
            out.append(line)
            continue
        value = value.strip()
        if key in HTTP_KEYS and "$(" not in value:
            http.append("127.0.0.1:%d" % free_port())
            line = "%s = %s" % (key, http[-1])
        elif key in SOCKET_KEYS:
            uwsgi.append(str(workdir / ("u%d.sock" % len(uwsgi))) if value.startswith("/")
                         else "127.0.0.1:%d" % free_port())
            line = "%s = %s" % (key, uwsgi[-1])
        elif key == "chdir":
            line = "chdir = %s" % workdir
        elif key == "pidfile":
            line = "pidfile = %s" % (workdir / "master.pid")
        elif key == "stats":
            line = "stats = 127.0.0.1:%d" % free_port()
        elif key in ("processes", "workers"):
            line = "%s = 2" % key
        elif key == "module":
            line = "module = corpus_standin"  # the file's callable = picks the name
        elif key in DROPPED:
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    if "module" not in keys_in(path):  # wsgi-file or paste apps
        text = text.replace("[uwsgi]\n", "[uwsgi]\nmodule = corpus_standin\n", 1)
    return text, http, uwsgi


@pytest.mark.parametrize("path", HTTP_FILES, ids=[p.name[:3] for p in HTTP_FILES])
def test_corpus_http_file_starts_and_serves(path, factories, tmp_path):
    """Each corpus file that uses http/http-socket/http11-socket, its addresses
    and app put on this machine (rewrite), starts and answers on every HTTP
    socket (and uwsgi one) it binds; its start-up log warns about exactly the
    keys in STILL_WARNED, never about an http-* key."""
    from framed_client import Connection, fetch

    from uwsgigw import healthcheck

    name = path.name[:3]
    workdir = tmp_path / "srv"
    workdir.mkdir()
    text, http, uwsgi = rewrite(path, workdir)
    env = {"PYTHONPATH": str(workdir), **FILE_ENV.get(name, {})}
    if "$(BIND_ADDRESS)" in path.read_text():
        from uwsgigw.devnginx import free_port
        http.append("127.0.0.1:%d" % free_port())
        env["BIND_ADDRESS"] = http[-1]
    (workdir / "corpus_standin.py").write_text(STANDIN % path.name)
    ini = workdir / path.name
    ini.write_text(text)
    server = factories.uwsgigw("--ini", str(ini), socket=http[0], env=env, cwd=str(workdir))
    proxied = "http-enable-proxy-protocol" in keys_in(path)  # 014: a PROXY header first
    for address in http:
        port = int(address.rpartition(":")[2])
        if proxied:
            with Connection(port) as c:
                c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 %d\r\n" % port
                       + b"GET /corpus HTTP/1.1\r\nHost: t\r\n\r\n")
                r = c.response()
        else:
            r = fetch(port, "/corpus")
        assert r.status == 200 and r.complete, r.raw
        assert json.loads(r.body) == {"file": path.name, "path": "/corpus",
                                      "remote": "192.0.2.1" if proxied else "127.0.0.1"}
    for address in uwsgi:
        resp = healthcheck.request(address, target="/corpus-uwsgi")
        assert resp.status == 200 and json.loads(resp.body)["file"] == path.name
    log = server.log_text()
    warned = {m.group(1) for m in map(WARNED_KEY.search, log.splitlines()) if m}
    assert warned == STILL_WARNED[name], log
    for key in keys_in(path):
        if key.startswith("http"):
            assert key not in UNSUPPORTED and "'%s'" % key not in log, (key, log)
