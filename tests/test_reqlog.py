"""The request log (reqlog.py): uWSGI's default line, log-format, log-json,
the disable-logging filters, memory-report and the master's JSON events.

Unit tests drive the compiled formatters with stand-in request objects; the
integration tests run real servers (and the real nginx) and match the lines
they write, exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest
from conftest import nginx_vars, uwsgi_request, wait_until
from test_master_support import APP, raw_get

from uwsgigw import log
from uwsgigw.observe import reqlog
from uwsgigw.config.settings import Config
from uwsgigw.observe.record import RequestRecord

PLAIN = "plain_apps:application"


# -- stand-ins for one finished request ---------------------------------------------

START = 1700000000.25  # a fixed request start (epoch seconds)


def fake_request(env: dict | None = None, status=200, tx=150, head_size=100, headers=3,
                 pid=4242, wid=2, core=1, requests=7) -> RequestRecord:
    """A finished request's record, as every driver hands it to reqlog.emit."""
    env = dict(env or nginx_vars(uri="/a/b?c=d", HTTP_USER_AGENT="curl/8"))
    block = sum(4 + len(k) + len(v) for k, v in env.items())
    return RequestRecord(env, status, tx, head_size, headers, 2 * len(env), block, 0, START,
                         0.0, pid, wid, core, requests, 0)


@pytest.fixture
def captured(monkeypatch):
    """Point the log at a pipe; return a function that reads what was written."""
    r, w = os.pipe()
    monkeypatch.setattr(log, "_fd", w)
    os.set_blocking(r, False)

    def read() -> bytes:
        try:
            return os.read(r, 1 << 20)
        except BlockingIOError:
            return b""
    yield read
    os.close(r)
    os.close(w)


# -- the default line -----------------------------------------------------------------

def test_default_line_is_uwsgis_format_exactly():
    r = fake_request()
    env = r.env
    line = reqlog.default_line(r._replace(elapsed=0.0123, total=99))
    vars_bytes = sum(4 + len(k) + len(v) for k, v in env.items())
    # uWSGI's var_cnt counts keys and values: 15 vars make "30 vars"
    assert line == (
        "[pid: 4242|app: 0|req: 7/99] 127.0.0.1 () {%d vars in %d bytes} [%s] "
        "GET /a/b?c=d => generated 50 bytes in 12 msecs (HTTP/1.1 200) 3 headers in "
        "100 bytes (1 switches on core 1)" % (2 * len(env), vars_bytes, time.ctime(START)))


def test_default_emit_writes_one_line_with_the_clients_bytes(captured):
    uri = "/caf\xc3\xa9?q=\x1b[31mred"  # UTF-8 bytes as PEP 3333 latin-1, an ESC
    r = fake_request(nginx_vars(uri=uri, REMOTE_USER="bob"))
    reqlog.build_emit(None)(r._replace(elapsed=0.001, total=1))
    data = captured()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert b" 127.0.0.1 (bob) {" in data
    # the bytes as sent (UTF-8 stays UTF-8), the control character escaped
    assert b"GET /caf\xc3\xa9?q=\\x1b[31mred =>" in data


# -- log-format ---------------------------------------------------------------------------

def test_log_format_variables():
    env = nginx_vars(method="POST", uri="/p?x=1", body=b"12345", HTTP_HOST="ex.org",
                     HTTP_USER_AGENT="UA/1", HTTP_REFERER="http://r/", HTTP_X_ID="abc")
    r = fake_request(env, status=201, tx=160, head_size=60, headers=4)
    names = ("addr user host method uri proto uagent referer status size rsize hsize "
             "headers cl msecs micros secs time tmsecs tmicros pid wid core switches vars "
             "pktsize modifier1 modifier2 werr rerr ioerr var.HTTP_X_ID var.NOPE").split()
    fmt = "|".join("%%(%s)" % n for n in names)
    got = dict(zip(names, reqlog.compile_format(fmt)(r._replace(elapsed=0.0025, total=9))
                   .split("|")))
    assert got == {
        "addr": "127.0.0.1", "user": "-", "host": "ex.org", "method": "POST",
        "uri": "/p?x=1", "proto": "HTTP/1.1", "uagent": "UA/1", "referer": "http://r/",
        "status": "201", "size": "160", "rsize": "100", "hsize": "60", "headers": "4",
        "cl": "5", "msecs": "2", "micros": "2500", "secs": "0.002500",
        "time": "1700000000", "tmsecs": "1700000000250", "tmicros": "1700000000250000",
        "pid": "4242", "wid": "2", "core": "1", "switches": "1",
        "vars": str(2 * len(env)),
        "pktsize": str(sum(4 + len(k) + len(v) for k, v in env.items())), "modifier1": "0",
        "modifier2": "0", "werr": "0", "rerr": "0", "ioerr": "0", "var.HTTP_X_ID": "abc",
        "var.NOPE": "-"}


def test_log_format_times_text_and_literal_percent():
    r = fake_request()
    line = reqlog.compile_format("100%% [%(ltime)] [%(ctime)] %(epoch) %(nosuch) 5%")(
        r._replace(elapsed=0.0, total=1))
    lt = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(START))
    m = re.fullmatch(r"100%% \[(.*)\] \[(.*)\] (\d+) - 5%", line)  # "%%" stays, as in uWSGI
    assert m, line
    assert m.group(1) == lt and m.group(2) == time.ctime(START)
    assert abs(int(m.group(3)) - time.time()) < 5
    assert reqlog.compile_format("no placeholders, 50%")(r._replace(elapsed=0, total=1)) == \
        "no placeholders, 50%"


def test_unknown_log_format_names_are_warned_about():
    cfg = Config.defaults(log_format="%(addr) %(json_uri) %(var.X) %(status)")
    warnings = reqlog.setup(cfg)
    try:
        assert len(warnings) == 1 and "%(json_uri)" in warnings[0]
    finally:
        reqlog.setup(Config.defaults())


# -- JSON --------------------------------------------------------------------------------

NASTY_URI = '/q?a="b"&c=\\d&e=caf\xc3\xa9&f=\xff\xfe&g=\x01'
NASTY_UA = 'Agent "quoted" \\back\\ \t tab \xe2\x82\xac euro \x7f'


def test_json_line_escapes_quotes_backslashes_controls_and_non_ascii():
    env = nginx_vars(uri=NASTY_URI, HTTP_USER_AGENT=NASTY_UA, HTTP_X_REQUEST_ID="rid-1")
    r = fake_request(env)
    line = reqlog.compile_json(reqlog.JSON_FIELDS)(r._replace(elapsed=0.0042, total=3))
    assert line.isascii() and "\n" not in line
    obj = json.loads(line)
    # valid UTF-8 comes back as text; other bytes as U+0080..U+00FF
    assert obj["uri"] == '/q?a="b"&c=\\d&e=café&f=\xff\xfe&g=\x01'
    assert obj["uagent"] == 'Agent "quoted" \\back\\ \t tab € euro \x7f'
    assert obj["request_id"] == "rid-1"
    assert obj["status"] == 200 and obj["micros"] == 4200 and obj["user"] is None
    assert obj["type"] == "request" and obj["wid"] == 2 and obj["total"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.250([+-]\d\d:\d\d|Z)",
                        obj["timestamp"])


def test_json_with_log_format_uses_its_names_as_keys():
    r = fake_request()
    obj = json.loads(reqlog.compile_json(["addr", "status", "secs", "var.HTTP_HOST"])(
        r._replace(elapsed=0.5, total=1)))
    assert list(obj) == ["timestamp", "type", "request_id", "wid", "addr", "status",
                         "secs", "var.HTTP_HOST"]
    assert obj["secs"] == 0.5 and obj["var.HTTP_HOST"] == "localhost"


def test_generated_request_ids_are_unique_and_differ_per_process():
    env = nginx_vars()
    ids = {reqlog.request_id(env) for _ in range(1000)}
    assert len(ids) == 1000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(w, reqlog.request_id(env).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 100).decode()
    os.close(r)
    os.close(w)
    assert child.split("-")[0] != reqlog.request_id(env).split("-")[0]


# -- filters -------------------------------------------------------------------------------

@pytest.mark.parametrize("status, elapsed, logged", [
    (200, 0.01, False), (404, 0.01, True), (500, 0.01, False), (200, 0.3, True)])
def test_disable_logging_filters(captured, status, elapsed, logged):
    r = fake_request(status=status)
    emit = reqlog.build_filter(reqlog.build_emit(None), log_4xx=True, log_5xx=False,
                               slow_ms=250)
    emit(r._replace(elapsed=elapsed, total=1))
    assert bool(captured()) is logged
    assert reqlog.build_filter(reqlog.build_emit(None), False, False, 0) is None


def test_setup_chooses_emit_and_filter():
    try:
        reqlog.setup(Config.defaults(disable_logging=True))
        assert reqlog.emit is None and reqlog.emit_filtered is None
        reqlog.setup(Config.defaults(disable_logging=True, log_5xx=True))
        assert reqlog.emit is None and reqlog.emit_filtered is not None
        reqlog.setup(Config.defaults())
        assert reqlog.emit is reqlog._default_emit
    finally:
        reqlog.setup(Config.defaults())


def test_memory_report_prefix():
    text = reqlog.memory_prefix()
    m = re.fullmatch(r"\{address space usage: (\d+) bytes/(\d+)MB\} "
                     r"\{rss usage: (\d+) bytes/(\d+)MB\} ", text)
    assert m and int(m.group(1)) >> 20 == int(m.group(2)) and int(m.group(3)) > 0


# -- real servers --------------------------------------------------------------------------

DEFAULT_RE = re.compile(
    r"\[pid: (?P<pid>\d+)\|app: 0\|req: (?P<r>\d+)/(?P<t>\d+)\] (?P<addr>\S*) \(\) "
    r"\{(?P<vars>\d+) vars in (?P<bytes>\d+) bytes\} \[(?P<ctime>\w{3} \w{3} [ \d]\d "
    r"\d\d:\d\d:\d\d \d{4})\] (?P<method>\S+) (?P<uri>\S+) => generated (?P<size>\d+) "
    r"bytes in (?P<msecs>\d+) msecs \((?P<proto>\S+) (?P<status>\d+)\) (?P<headers>\d+) "
    r"headers in (?P<hsize>\d+) bytes \(1 switches on core 0\)")


def request_lines(server, since=0) -> list[str]:
    return [line for line in server.log_since(since).splitlines()
            if line.startswith(("[pid: ", "{\"timestamp\"", "{address space"))]


def test_default_line_on_the_socket_matches_exactly(uwsgigw_factory):
    server = uwsgigw_factory("--module", PLAIN)
    env = nginx_vars(uri="/nope?x=1")
    uwsgi_request(server.socket, env)
    line = wait_until(lambda: request_lines(server), 10, what="a request line")[0]
    m = DEFAULT_RE.fullmatch(line)
    assert m, line
    block = sum(4 + len(k) + len(v) for k, v in env.items())
    assert m["vars"] == str(2 * len(env)) and m["bytes"] == str(block)
    assert (m["r"], m["t"], m["addr"], m["method"], m["uri"], m["status"], m["size"]) == \
        ("1", "1", "127.0.0.1", "GET", "/nope?x=1", "404", "9")


def test_default_line_through_nginx(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", PLAIN)
    nginx = nginx_factory(server.socket)
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as s:
        s.sendall(b"GET /nope?a=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert b" 404 " in s.recv(4096).split(b"\r\n")[0]
    line = wait_until(lambda: request_lines(server), 10, what="a request line")[0]
    m = DEFAULT_RE.fullmatch(line)
    assert m, line
    assert (m["method"], m["uri"], m["proto"], m["status"]) == ("GET", "/nope?a=1",
                                                               "HTTP/1.1", "404")


def test_log_json_through_nginx_with_a_nasty_uri_and_user_agent(uwsgigw_factory,
                                                                 nginx_factory):
    server = uwsgigw_factory("--module", PLAIN, "--log-json")
    nginx = nginx_factory(server.socket)
    uri = b'/nope?a="b"&c=\\d&e=caf\xc3\xa9&f=\xff'
    ua = b'UA "quoted" \\back\\ caf\xc3\xa9 \xe9'
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as s:
        s.sendall(b"GET " + uri + b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: " + ua +
                  b"\r\nX-Request-ID: from-client-1\r\nConnection: close\r\n\r\n")
        assert b" 404 " in s.recv(4096).split(b"\r\n")[0]
    uwsgi_request(server.socket, nginx_vars(uri="/second"))  # no X-Request-ID
    lines = wait_until(lambda: (lambda ls: ls if len(ls) == 2 else None)(
        request_lines(server)), 10, what="two JSON lines")
    first, second = (json.loads(line) for line in lines)
    assert first["uri"] == '/nope?a="b"&c=\\d&e=café&f=\xff'
    assert first["uagent"] == 'UA "quoted" \\back\\ café \xe9'
    assert first["request_id"] == "from-client-1" and first["status"] == 404
    assert first["method"] == "GET" and first["proto"] == "HTTP/1.1"
    assert first["rsize"] == 9 and first["req"] == 1 and first["total"] == 1
    assert second["uri"] == "/second" and re.fullmatch(r"[0-9a-f]{12}-\d+",
                                                       second["request_id"])


def test_disable_logging_with_log_4xx_5xx_and_log_format(uwsgigw_factory):
    server = uwsgigw_factory("--module", PLAIN, "--disable-logging", "--log-4xx",
                             "--log-5xx", "--log-format", "%(method) %(uri) %(status) "
                             "%(var.HTTP_X_TAG)")
    for uri in ("/echo", "/nope", "/raise-before", "/echo?again"):
        uwsgi_request(server.socket, nginx_vars(uri=uri, HTTP_X_TAG="t" + uri[1:3]))
    lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 2 else None)(
        [l for l in server.log_text().splitlines() if l.startswith("GET ")]), 10,
        what="two filtered lines")
    time.sleep(0.2)  # nothing else may follow (a bounded look for extras)
    lines = [l for l in server.log_text().splitlines() if l.startswith("GET ")]
    assert lines == ["GET /nope 404 tno", "GET /raise-before 500 tra"]


def test_memory_report_and_log_slow(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--memory-report",
                             "--disable-logging", "--log-slow", "200")
    raw_get(server.socket, "/")
    raw_get(server.socket, "/slow?0.3")
    line = wait_until(lambda: request_lines(server), 10, what="a slow line")[0]
    m = re.match(r"\{address space usage: (\d+) bytes/(\d+)MB\} \{rss usage: (\d+) "
                 r"bytes/(\d+)MB\} (\[pid: .*)", line)
    assert m and DEFAULT_RE.fullmatch(m.group(5)), line
    assert "/slow?0.3" in line and int(m.group(3)) > 1 << 20
    assert len(request_lines(server)) == 1


def events(server) -> list[dict]:
    out = []
    for line in server.log_text().splitlines():
        if line.startswith('{"timestamp"'):
            obj = json.loads(line)
            if obj["type"] == "event":
                out.append(obj)
    return out


def wait_event(server, predicate, what, timeout=15.0):
    return wait_until(lambda: next((e for e in events(server) if predicate(e)), None),
                      timeout, what=what)


def test_master_events_as_json(uwsgigw_factory):
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "1",
                             "--log-json", "--harakiri", "1", "--max-requests", "2")
    spawn = wait_event(server, lambda e: e["event"] == "spawn", "spawn")
    assert spawn["worker"] == 1 and spawn["pid"] == server.pid and spawn["msg"].startswith(
        "spawned worker 1")
    # harakiri: the event, then the death with its reason
    assert raw_get(server.socket, "/sleep?30") is None
    hk = wait_event(server, lambda e: e["event"] == "harakiri", "harakiri")
    assert hk["worker"] == 1 and hk["request"] == "GET /sleep?30" and hk["level"] == "error"
    death = wait_event(server, lambda e: e["event"] == "death" and "harakiri" in
                       e.get("reason", ""), "death by harakiri")
    assert death["worker_pid"] == hk["worker_pid"] and "signal 9" in death["status"]
    # recycle after max-requests, with the reason
    wait_until(lambda: len([e for e in events(server) if e["event"] == "spawn"]) == 2, 10,
               what="respawn")
    for _ in range(2):
        assert raw_get(server.socket, "/").status == 200
    rc = wait_event(server, lambda e: e["event"] == "recycle", "recycle")
    assert rc["reason"] == "max-requests 2 reached"
    wait_event(server, lambda e: e["event"] == "death" and e.get("reason") == "recycled"
               and e["worker_pid"] == rc["worker_pid"], "recycled worker's exit")
    # reload
    wait_until(lambda: len([e for e in events(server) if e["event"] == "spawn"]) == 3, 10,
               what="third spawn")
    os.kill(server.pid, signal.SIGHUP)
    wait_event(server, lambda e: e["event"] == "reload" and e["phase"] == "start",
               "reload start")
    done = wait_event(server, lambda e: e["event"] == "reload" and e["phase"] == "done",
                      "reload done", timeout=30)
    assert done["generation"] == 2
    for e in events(server):
        assert e["pid"] == server.pid and e["msg"]
