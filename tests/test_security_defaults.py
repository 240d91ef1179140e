"""Security defaults (issue 6): what a hostile peer or a careless deployment
cannot make uwsgigw do.

- no ``UWSGI_*`` var changes anything (uWSGI's UWSGI_FILE/UWSGI_SCRIPT load
  code named by the request: remote code execution);
- response splitting is impossible, whatever the app copies into a header;
- unix sockets are 0660 (root's, so "others" cannot even connect);
- a TCP socket on a non-loopback address is warned about;
- ``uwsgi-allow-from`` closes connections from other peers, logged and
  rate limited;
- ``uid``/``gid`` really change the processes' credentials, and running as
  root without them is warned about;
- post-buffering temp files have no name and mode 0600 while the app runs.
"""

from __future__ import annotations

import json
import os
import pwd
import grp
import socket
import stat
import time
import urllib.parse

import pytest
from hypothesis import given, settings, strategies as st

from packet_builder import build_packet
from conftest import (has_ipv6, http_request, nginx_vars, parse_response, recv_all,
                      short_tmpdir, uwsgi_connect, uwsgi_request)
from soak.procinfo import APP_FILE, children, fds, status, wait_children
from uwsgigw.cli import load
from uwsgigw.config.settings import ConfigError
from uwsgigw.devnginx import free_port
from uwsgigw.config.optypes import normalise
from uwsgigw.process.peers import AllowList
from uwsgigw.config.optypes import BadValue
from uwsgigw.cycle.response import ResponseError, build_head

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (to drop privileges)")


def get(addr: str, uri: str, **extra):
    return parse_response(uwsgi_request(addr, nginx_vars(uri=uri, **extra)))


# -- UWSGI_* magic vars ------------------------------------------------------------

# Every request var uWSGI acts on (core/protocol.c, plugins/python): each one
# changes what uWSGI loads, where it runs, or how it answers.
MAGIC = {
    "UWSGI_SCHEME": "https", "UWSGI_SCRIPT": "evil", "UWSGI_MODULE": "evil",
    "UWSGI_CALLABLE": "application", "UWSGI_FILE": "EVIL_FILE",
    "UWSGI_PYHOME": "/", "UWSGI_CHDIR": "/", "UWSGI_APPID": "evil",
    "UWSGI_SETENV": "EVIL_ENV=1", "UWSGI_TOUCH_RELOAD": "EVIL_FILE",
    "UWSGI_HOME": "/", "UWSGI_POSTFILE": "EVIL_FILE", "UWSGI_CACHE_GET": "x",
    "UWSGI_FORCE_HTTPS": "1", "UWSGI_HTTP_HOST": "evil.example",
}


def test_uwsgi_magic_vars_never_change_behaviour(uwsgigw_factory, tmp_path):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "2")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text("open(%r, 'w').write('loaded')\n"
                    "def application(e, s):\n    s('200 OK', [])\n    return [b'EVIL']\n"
                    % str(marker))
    magic = {k: v.replace("EVIL_FILE", str(evil)) for k, v in MAGIC.items()}
    base_who = json.loads(get(srv.socket, "/whoami").body)
    base_keys = json.loads(get(srv.socket, "/request-keys").body)
    base_ok = get(srv.socket, "/ok").raw
    for round_ in range(4):  # both workers, more than once
        each = [{k: v} for k, v in magic.items()] + [magic]
        for extra in each:
            who = json.loads(get(srv.socket, "/whoami", **extra).body)
            for key in ("uid", "gid", "cwd", "sys_path", "environ_keys", "app"):
                assert who[key] == base_who[key], (extra, key)
            assert json.loads(get(srv.socket, "/request-keys", **extra).body) == base_keys
            assert get(srv.socket, "/ok", **extra).raw == base_ok
    assert not marker.exists()
    # A lower-case spelling is just another var (uWSGI ignores it too), never acted on.
    who = json.loads(get(srv.socket, "/whoami", uwsgi_file=str(evil),
                         uwsgi_chdir="/").body)
    assert who["cwd"] == base_who["cwd"] and who["app"] == base_who["app"]
    assert not marker.exists()
    assert "Traceback" not in srv.log_text()


# -- response splitting ---------------------------------------------------------------

_header_text = st.lists(st.sampled_from(
    list("aZ-_:; \t\r\n\0\x7f\x85\u2028\u0100é") + ["\r\n", "Set-Cookie: x=1"]),
    max_size=8).map("".join)


@settings(max_examples=600, deadline=None)
@given(status=st.one_of(st.just("200 OK"), _header_text.map(lambda t: "200 " + t), _header_text),
       headers=st.lists(st.tuples(_header_text, _header_text), max_size=4))
def test_build_head_never_splits(status, headers):
    """Any status/headers: either refused, or exactly one line per header."""
    try:
        head, count = build_head(status, headers)
    except ResponseError:
        return
    text = head.decode("latin-1")
    assert text.endswith("\r\n\r\n")
    lines = text[:-4].split("\r\n")
    assert len(lines) == 1 + len(headers) == 1 + count
    assert lines[0] == "HTTP/1.1 " + status
    for line, (name, value) in zip(lines[1:], headers):
        assert line == "%s: %s" % (name, value)
    for line in lines:
        assert "\r" not in line and "\n" not in line and "\0" not in line


def test_unencodable_status_is_refused_like_any_bad_status():
    """Found by test_build_head_never_splits: a status reason outside latin-1
    with no headers escaped as UnicodeEncodeError (logged as an app crash with
    a traceback) instead of ResponseError ("invalid response from the app")."""
    with pytest.raises(ResponseError):
        build_head("200 \u2028", [])
    with pytest.raises(ResponseError):
        build_head("200 caf\u20ac", [("Content-Type", "text/plain")])


@pytest.fixture(scope="module")
def served(module_uwsgigw_factory, module_nginx_factory):
    srv = module_uwsgigw_factory("--wsgi-file", APP_FILE)
    return srv, module_nginx_factory(srv.socket)


@pytest.mark.parametrize("payload", ["a\r\nSet-Cookie: pwned=1", "a\nSet-Cookie: pwned=1",
                                     "a\rSet-Cookie: pwned=1", "a\0b",
                                     "\r\n\r\nHTTP/1.1 200 OK\r\nX-Pwned: 1"])
def test_user_input_in_a_header_cannot_split_the_response(served, payload):
    srv, nginx = served
    query = urllib.parse.urlencode({"v": payload})
    r = http_request(nginx.port, "GET", "/reflect?" + query)
    assert r.status == 500
    assert r.header("Set-Cookie") is None and r.header("X-Pwned") is None
    assert r.header("X-Reflect") is None
    assert b"reflected" not in r.body
    raw = uwsgi_request(srv.socket, nginx_vars(uri="/reflect?" + query))
    assert raw.startswith(b"HTTP/1.1 500 ") and b"pwned" not in raw.lower()


def test_status_line_never_echoes_the_client_protocol(served):
    srv, _ = served
    for proto in ["HTTP/1.0", "HTTP/2.0\r\nX-Pwned: 1", "HTTP/9 666", ""]:
        raw = uwsgi_request(srv.socket, nginx_vars(uri="/ok", SERVER_PROTOCOL=proto))
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"X-Pwned" not in raw


# -- socket permissions and binds ------------------------------------------------------

def test_unix_socket_is_0660_by_default(uwsgigw_factory):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE)
    st_ = os.stat(srv.socket)
    assert stat.S_ISSOCK(st_.st_mode)
    assert stat.S_IMODE(st_.st_mode) == 0o660
    assert st_.st_uid == os.geteuid()


def test_chmod_socket_is_honoured(uwsgigw_factory):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--chmod-socket", "600")
    assert stat.S_IMODE(os.stat(srv.socket).st_mode) == 0o600


def _connect_as(uid: int, gid: int, path: str) -> str:
    """connect() to ``path`` from a child with other credentials: "ok" or the errno name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                out = b"ok"
            except OSError as exc:
                out = (os.strerror(exc.errno) if exc.errno else str(exc)).encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@needs_root
def test_others_cannot_connect_to_the_default_unix_socket(uwsgigw_factory):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE)
    os.chmod(os.path.dirname(srv.socket), 0o755)  # the directory is not what stops them
    nobody = pwd.getpwnam("nobody")
    assert _connect_as(nobody.pw_uid, nobody.pw_gid, srv.socket) == os.strerror(13)
    # The group (nginx's, in a real set-up) can.
    assert _connect_as(nobody.pw_uid, 0, srv.socket) == "ok"


def test_loopback_tcp_is_not_warned_about(uwsgigw_factory):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, tcp=True)
    assert "accepts connections from the network" not in srv.log_text()


def test_non_loopback_tcp_gets_a_warning(uwsgigw_factory):
    port = free_port("0.0.0.0")
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, socket="0.0.0.0:%d" % port)
    line = [l for l in srv.log_text().splitlines() if "accepts connections from the network"
            in l]
    assert len(line) == 1 and " WARNING " in line[0], srv.log_text()
    assert "REMOTE_ADDR" in line[0]
    # Still serves (on loopback).
    assert get("127.0.0.1:%d" % port, "/ok").status == 200


# -- uwsgi-allow-from ---------------------------------------------------------------------

def test_allow_list_parsing_and_matching():
    allow = AllowList.from_values(["127.0.0.2, 10.0.0.0/8", "::1 fd00::/8"])
    assert allow.admits(("127.0.0.2", 1)) and not allow.admits(("127.0.0.1", 1))
    assert allow.admits(("10.255.1.2", 1)) and not allow.admits(("11.0.0.1", 1))
    assert allow.admits(("::1", 1, 0, 0)) and allow.admits(("fd12::5", 1, 0, 0))
    assert not allow.admits(("fe80::1%lo", 1, 0, 1))
    assert allow.admits(("::ffff:10.1.2.3", 1, 0, 0))  # IPv4 client on a [::] socket
    assert not allow.admits(("::ffff:127.0.0.1", 1, 0, 0))
    assert allow.admits("")  # unix peers are not filtered
    assert AllowList.from_values([]) is None
    assert normalise(" 10.0.0.0/8 ,192.168.1.5 ") == "10.0.0.0/8, 192.168.1.5/32"
    for bad in ["", "10.0.0.300", "10.1.2.3/8", "example.com", "10.0.0.0/33", "unix:/x"]:
        with pytest.raises(BadValue):
            normalise(bad)


def test_allow_list_is_an_option_with_one_validator():
    cfg = load(["--socket", "127.0.0.1:1", "--module", "m", "--uwsgi-allow-from",
                "127.0.0.1", "--uwsgi-allow-from", "10.0.0.0/8,::1"], {})
    assert cfg.uwsgi_allow_from == ["127.0.0.1/32", "10.0.0.0/8, ::1/128"]
    env = load(["--socket", "127.0.0.1:1", "--module", "m"],
               {"UWSGIGW_UWSGI_ALLOW_FROM": "192.168.0.0/16"})
    assert env.uwsgi_allow_from == ["192.168.0.0/16"]
    with pytest.raises(ConfigError) as err:
        load(["--socket", "127.0.0.1:1", "--module", "m", "--uwsgi-allow-from", "10.1.2.3/8"],
             {})
    assert "uwsgi-allow-from" in str(err.value) and "10.1.2.3/8" in str(err.value)


def _request_from(source: str, addr: str, uri: str = "/ok") -> bytes:
    host, _, port = addr.rpartition(":")
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect((host.strip("[]"), int(port)))
        try:
            s.sendall(build_packet([(k.encode(), v.encode())
                                    for k, v in nginx_vars(uri=uri).items()]))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return recv_all(s)


def test_allow_from_closes_and_logs_other_peers(uwsgigw_factory):
    port = free_port()
    unix = os.path.join(short_tmpdir(), "u.sock")
    addr = "127.0.0.1:%d" % port
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--master", "--processes", "2",
                          "--socket", addr, "--socket", unix,
                          "--uwsgi-allow-from", "127.0.0.2", socket=addr)
    workers = wait_children(srv.pid, 2)
    # The fixture's readiness probe connected from 127.0.0.1 and was refused;
    # each worker logs one refusal per second, so a refusal inside that
    # second would only be counted, not logged. Wait the window out.
    time.sleep(1.1)
    mark = srv.log_mark()
    assert _request_from("127.0.0.1", addr) == b""
    srv.wait_for_log("refused connection from 127.0.0.1", "uwsgi-allow-from", since=mark)
    assert parse_response(_request_from("127.0.0.2", addr)).status == 200
    # The unix socket of the same server is not filtered.
    assert get(unix, "/ok").status == 200
    # A burst of refused peers: closed, a few log lines, workers unharmed.
    started = time.monotonic()
    for _ in range(300):
        assert _request_from("127.0.0.3", addr) == b""
    elapsed = time.monotonic() - started
    time.sleep(1.1)  # let the rate limiter report what it held back
    assert _request_from("127.0.0.1", addr) == b""
    text = srv.wait_for_log("similar message", since=mark)
    refused = [l for l in text.splitlines() if "refused connection" in l]
    assert len(refused) <= 2 * 2 * (elapsed + 3), refused  # 2 workers, 1 line/s each
    assert children(srv.pid) == workers
    assert parse_response(_request_from("127.0.0.2", addr)).status == 200
    assert "Traceback" not in srv.log_text()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_allow_from_ipv6(uwsgigw_factory):
    port = free_port("::1")
    addr = "[::1]:%d" % port
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--uwsgi-allow-from", "127.0.0.1",
                          socket=addr)
    assert _request_from("::1", addr) == b""
    srv.wait_for_log("refused connection from ::1")
    port2 = free_port("::1")
    addr2 = "[::1]:%d" % port2
    srv2 = uwsgigw_factory("--wsgi-file", APP_FILE, "--uwsgi-allow-from", "::1/128",
                           socket=addr2)
    assert parse_response(_request_from("::1", addr2)).status == 200
    assert "refused" not in srv2.log_text()


# -- privileges ---------------------------------------------------------------------------

# The app for processes that dropped to nobody: it imports nothing the server
# has not imported already, because this interpreter may live where nobody
# cannot read (/root/.pyenv here), which has nothing to do with uwsgigw.
NOBODY_APP = """
import json, os, sys, time

def _q(environ):
    return dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        q = _q(environ)
        inp = environ["wsgi.input"]
        first = inp.read(1)
        with open(q["flag"] + ".ready", "w") as f:
            f.write("%d %d %s" % (os.getpid(), inp.fileno(), type(inp).__name__))
        deadline = time.monotonic() + 15
        while not os.path.exists(q["flag"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = b"held %d" % (len(first) + len(inp.read()))
    else:
        body = json.dumps({"pid": os.getpid(), "uid": os.getuid(), "euid": os.geteuid(),
                           "gid": os.getgid(), "egid": os.getegid(),
                           "groups": sorted(os.getgroups())}).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def nobody_dir() -> str:
    """A directory nobody can read the app from and write flag files to."""
    path = short_tmpdir()
    os.chmod(path, 0o777)
    with open(os.path.join(path, "nobody_app.py"), "w") as f:
        f.write(NOBODY_APP)
    return path


def _ids(pid: int) -> tuple[list[int], list[int], list[int], str]:
    s = status(pid)
    return ([int(x) for x in s["Uid"].split()], [int(x) for x in s["Gid"].split()],
            [int(x) for x in s["Groups"].split()], s["CapEff"])


@needs_root
def test_master_and_workers_really_run_as_uid_gid(uwsgigw_factory, nobody_dir):
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup")
    srv = uwsgigw_factory("--wsgi-file", os.path.join(nobody_dir, "nobody_app.py"),
                          "--master", "--processes", "2", "--uid", "nobody", "--gid", "nogroup")
    workers = wait_children(srv.pid, 2)
    for pid in [srv.pid, *workers]:
        uids, gids, groups, cap_eff = _ids(pid)
        assert uids == [nobody.pw_uid] * 4, (pid, uids)  # real, effective, saved, fs
        assert gids == [nogroup.gr_gid] * 4, (pid, gids)
        assert 0 not in groups, (pid, groups)
        assert int(cap_eff, 16) == 0, (pid, cap_eff)
    seen = set()
    for _ in range(6):
        who = json.loads(get(srv.socket, "/").body)
        seen.add(who["pid"])
        assert (who["uid"], who["euid"], who["gid"], who["egid"]) == (
            nobody.pw_uid, nobody.pw_uid, nogroup.gr_gid, nogroup.gr_gid)
        assert 0 not in who["groups"]
    assert seen <= workers
    srv.wait_for_log("dropped privileges to uid %d, gid %d" % (nobody.pw_uid, nogroup.gr_gid))


@needs_root
def test_single_process_mode_drops_privileges_too(uwsgigw_factory, nobody_dir):
    nobody = pwd.getpwnam("nobody")
    srv = uwsgigw_factory("--wsgi-file", os.path.join(nobody_dir, "nobody_app.py"),
                          "--uid", str(nobody.pw_uid))
    uids, gids, groups, _ = _ids(srv.pid)
    assert uids == [nobody.pw_uid] * 4
    assert gids == [nobody.pw_gid] * 4  # the user's primary group when gid is not given
    assert 0 not in groups
    assert json.loads(get(srv.socket, "/").body)["uid"] == nobody.pw_uid


# The warning server.py should log at start-up (see the report to the lead).
ROOT_WARNING_WORDS = ("running as root", "uid")


@needs_root
def test_running_as_root_without_uid_is_warned_about(uwsgigw_factory):
    srv = uwsgigw_factory("--wsgi-file", APP_FILE)
    lines = [l for l in srv.log_text().splitlines()
             if " WARNING " in l and all(w in l for w in ROOT_WARNING_WORDS)]
    assert len(lines) == 1, "no warning about running as root without uid:\n" + \
        srv.log_text()


@needs_root
def test_no_root_warning_once_uid_is_set(uwsgigw_factory, nobody_dir):
    srv = uwsgigw_factory("--wsgi-file", os.path.join(nobody_dir, "nobody_app.py"),
                          "--uid", "nobody", "--gid", "nogroup")
    assert not [l for l in srv.log_text().splitlines()
                if " WARNING " in l and "running as root" in l]


# -- post-buffering temp files ---------------------------------------------------------------

@pytest.mark.parametrize("uid", [None, "nobody"] if ROOT else [None])
def test_post_buffering_file_is_nameless_and_private(uwsgigw_factory, nobody_dir, uid):
    args = ["--wsgi-file", os.path.join(nobody_dir, "nobody_app.py"), "--post-buffering",
            "4096"]
    if uid:
        args += ["--uid", uid, "--gid", "nogroup"]
    srv = uwsgigw_factory(*args)
    flag = os.path.join(nobody_dir, "release")
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    body = os.urandom(1 << 20)
    conn = uwsgi_connect(srv.socket, timeout=20)
    vars_ = nginx_vars(method="POST", uri="/hold?flag=" + flag, body=body)
    conn.sendall(build_packet([(k.encode(), v.encode()) for k, v in vars_.items()], body=body))
    try:
        ready = flag + ".ready"
        deadline = time.monotonic() + 15
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(ready) as f:
            pid, fd, kind = f.read().split()
        pid, fd = int(pid), int(fd)
        target = os.readlink("/proc/%d/fd/%d" % (pid, fd))
        st_ = os.stat("/proc/%d/fd/%d" % (pid, fd))
        assert st_.st_nlink == 0, target  # no name anyone could open
        assert target.endswith("(deleted)"), target
        assert stat.S_IMODE(st_.st_mode) == 0o600, oct(st_.st_mode)
        assert st_.st_size == len(body)
        assert st_.st_uid == (pwd.getpwnam(uid).pw_uid if uid else os.geteuid())
        # No file of the worker has a name in the temp directory.
        named = [(n, p) for n, p in fds(pid).items()
                 if os.path.dirname(p) == tmpdir and not p.endswith("(deleted)")]
        assert not named, named
    finally:
        open(flag, "w").close()
    data = recv_all(conn)
    conn.close()
    assert parse_response(data).body == b"held %d" % len(body)


def test_post_buffering_file_is_closed_after_the_request(uwsgigw_factory):
    """The spool must not outlive its request: an idle worker would otherwise
    hold the disk space of its last upload (up to limit-post) until its next
    request, one such file per worker and thread."""
    srv = uwsgigw_factory("--wsgi-file", APP_FILE, "--post-buffering", "4096")
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    body = os.urandom(4 << 20)
    resp = parse_response(uwsgi_request(srv.socket, nginx_vars(method="POST", uri="/sink",
                                                               body=body), body=body))
    assert resp.status == 200 and resp.body.split()[0] == b"%d" % len(body)
    deadline = time.monotonic() + 2
    while True:
        spools = [p for p in fds(srv.pid).values()
                  if os.path.dirname(p) == tmpdir and p.endswith("(deleted)")]
        if not spools or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not spools, "the request is over but the worker still holds %r" % spools
