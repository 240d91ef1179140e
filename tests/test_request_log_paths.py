"""Issue 13: one request log and one set of counters for every request path.

Each log and stats option runs on the three paths a request can take: the
WSGI C core, the WSGI Python path (``--decoder python``) and the ASGI worker
(the same routes: tests/apps/field_apps.py). Before the request cycle was
shared, the ASGI path ignored ``log-format``, ``log-json``, ``log-4xx``,
``log-5xx``, ``log-slow`` and ``memory-report``, did not escape control
characters, printed ``()`` for REMOTE_USER and half the vars count, and
reported ``avg_rt`` 0 under ``disable-logging``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import nginx_vars, parse_response, uwsgi_request, wait_until
from test_reqlog import DEFAULT_RE, request_lines
from test_stats import read_stats


PATHS = {
    "wsgi-c": ("--module", "field_apps:wsgi", "--decoder", "c"),
    "wsgi-python": ("--module", "field_apps:wsgi", "--decoder", "python"),
    "asgi": ("--module", "field_apps:asgi"),
}


@pytest.fixture(params=list(PATHS))
def start(request, uwsgigw_factory):
    """start(*options) -> a server on this test's request path."""
    return lambda *options: uwsgigw_factory(*PATHS[request.param], *options)


def get(server, uri: str, **extra) -> int:
    """One request straight on the socket; its status."""
    return parse_response(uwsgi_request(server.socket, nginx_vars(uri=uri, **extra))).status


def lines_after(server, count: int, since: int = 0) -> list[str]:
    return wait_until(lambda: (lambda ls: ls if len(ls) >= count else None)(
        request_lines(server, since)), 10, what="%d request lines" % count)


def test_default_line(start):
    server = start()
    env = nginx_vars(uri="/status?code=200", REMOTE_USER="bob")
    assert parse_response(uwsgi_request(server.socket, env)).status == 200
    line = lines_after(server, 1)[0]
    # REMOTE_USER in the parentheses, keys and values counted, the packet's bytes
    assert " 127.0.0.1 (bob) {" in line, line
    m = DEFAULT_RE.fullmatch(line.replace("(bob)", "()"))
    assert m, line
    block = sum(4 + len(k) + len(v) for k, v in env.items())
    assert (m["vars"], m["bytes"], m["method"], m["uri"], m["status"], m["size"]) == (
        str(2 * len(env)), str(block), "GET", "/status?code=200", "200", "18")


def test_control_characters_are_escaped(start):
    server = start()
    get(server, "/nope?\x1b[31mred")
    line = lines_after(server, 1)[0]
    assert "/nope?\\x1b[31mred " in line and "\x1b" not in line, repr(line)


def test_log_format(start):
    server = start("--log-format", "%(method) %(uri) %(status) %(vars) %(pktsize) %(rsize) "
                   "%(core) %(var.HTTP_X_TAG)")
    env = nginx_vars(uri="/status?code=404", HTTP_X_TAG="tag-1")
    uwsgi_request(server.socket, env)
    block = sum(4 + len(k) + len(v) for k, v in env.items())
    line = wait_until(lambda: [l for l in server.log_text().splitlines()
                               if l.startswith("GET ")], 10, what="the line")[0]
    assert line == "GET /status?code=404 404 %d %d 18 0 tag-1" % (2 * len(env), block)


def test_log_json(start):
    server = start("--log-json")
    get(server, "/status?code=201", HTTP_X_REQUEST_ID="rid-7")
    obj = json.loads(lines_after(server, 1)[0])
    assert obj["type"] == "request" and obj["request_id"] == "rid-7"
    assert (obj["method"], obj["uri"], obj["status"], obj["rsize"]) == (
        "GET", "/status?code=201", 201, 18)
    assert obj["req"] == 1 and obj["total"] == 1 and obj["wid"] == 1


def test_disable_logging_keeps_log_4xx_and_log_5xx(start):
    server = start("--disable-logging", "--log-4xx", "--log-5xx",
                   "--log-format", "%(method) %(uri) %(status)")
    for uri in ("/status?code=200", "/nope", "/stream-fail", "/status?code=200"):
        get(server, uri)
    wait_until(lambda: len([l for l in server.log_text().splitlines()
                            if l.startswith("GET ")]) >= 2, 10, what="two lines")
    time.sleep(0.2)  # nothing else may follow (a bounded look for extras)
    assert [l for l in server.log_text().splitlines() if l.startswith("GET ")] == [
        "GET /nope 404", "GET /stream-fail 500"]


def test_log_slow_with_memory_report(start):
    server = start("--disable-logging", "--log-slow", "200", "--memory-report")
    get(server, "/status?code=200")
    get(server, "/slow?s=0.3")
    line = lines_after(server, 1)[0]
    m = re.match(r"\{address space usage: (\d+) bytes/(\d+)MB\} \{rss usage: (\d+) "
                 r"bytes/(\d+)MB\} (\[pid: .*)", line)
    assert m and DEFAULT_RE.fullmatch(m.group(5)) and "/slow?s=0.3" in line, line
    time.sleep(0.2)
    assert len(request_lines(server)) == 1


@pytest.mark.parametrize("logging", ["on", "off"])
def test_counters_do_not_depend_on_logging(start, tmp_path, logging):
    """requests, tx and avg_rt in the stats, whatever the log settings."""
    stats = str(tmp_path / "stats.sock")
    server = start("--master", "--stats", stats,
                   *(["--disable-logging"] if logging == "off" else []))
    for _ in range(3):
        assert get(server, "/slow?s=0.05") == 200
    worker = wait_until(lambda: (lambda w: w if w["requests"] == 3 else None)(
        read_stats(stats)["workers"][0]), 10, what="3 requests in the stats")
    assert worker["avg_rt"] >= 50_000, worker  # microseconds: each took >= 50 ms
    assert worker["tx"] >= 3 * 5, worker


def test_the_c_and_python_counters_agree(uwsgigw_factory, tmp_path):
    """observe/record.account and its C twin (csrc/fastpath_core.c account)
    count the same requests the same: requests, bytes sent, timed requests."""
    seen = {}
    for name in ("wsgi-c", "wsgi-python"):
        stats = str(tmp_path / ("%s.sock" % name))
        server = uwsgigw_factory(*PATHS[name], "--master", "--stats", stats)
        for uri in ("/status?code=200", "/nope", "/status?code=204", "/stream-ok"):
            get(server, uri)
        worker = wait_until(lambda: (lambda w: w if w["requests"] == 4 else None)(
            read_stats(stats)["workers"][0]), 10, what="4 requests in the stats")
        seen[name] = (worker["requests"], worker["tx"], worker["avg_rt"] > 0)
    assert seen["wsgi-c"] == seen["wsgi-python"], seen
