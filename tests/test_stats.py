"""The stats server (stats.py): uWSGI's JSON schema key by key, real values from
the scoreboard and the kernel, stats-http and /metrics, and a master loop the
stats clients cannot block."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import time

import pytest
from conftest import short_tmpdir, uwsgi_connect, wait_until
from test_master_support import APP, in_thread, raw_get, wait_workers

from uwsgigw.process import stats
from uwsgigw.devnginx import free_port

# What the consumers read (their sources): uwsgitop 0.12 (xrmx/uwsgitop) and
# timonwong/uwsgi_exporter's UwsgiStats (pkg/collector/stats.go).
UWSGITOP_TOP = {"version", "listen_queue", "cwd", "uid", "gid", "pid", "workers"}
UWSGITOP_WORKER = {"id", "requests", "tx", "running_time", "last_spawn", "signals", "status",
                   "pid", "exceptions", "avg_rt", "rss", "vsz", "respawn_count",
                   "harakiri_count", "cores"}
UWSGITOP_CORE = {"id", "requests", "in_request"}
EXPORTER_TOP = {"version": str, "listen_queue": int, "listen_queue_errors": int,
                "signal_queue": int, "load": int, "pid": int, "uid": int, "gid": int,
                "cwd": str, "sockets": list, "workers": list}
EXPORTER_SOCKET = {"name": str, "proto": str, "queue": int, "max_queue": int, "shared": int,
                   "can_offload": int}
EXPORTER_WORKER = {"id": int, "pid": int, "accepting": int, "requests": int,
                   "delta_requests": int, "exceptions": int, "harakiri_count": int,
                   "signals": int, "signal_queue": int, "status": str, "rss": int, "vsz": int,
                   "running_time": int, "last_spawn": int, "respawn_count": int, "tx": int,
                   "avg_rt": int, "apps": list, "cores": list}
EXPORTER_APP = {"id": int, "modifier1": int, "mountpoint": str, "startup_time": int,
                "requests": int, "exceptions": int, "chdir": str}
EXPORTER_CORE = {"id": int, "requests": int, "static_requests": int, "routed_requests": int,
                 "offloaded_requests": int, "write_errors": int, "read_errors": int,
                 "in_request": int, "vars": list}


def read_stats(addr: str) -> dict:
    """What uwsgitop does: connect, read to EOF, parse."""
    with uwsgi_connect(addr, timeout=5) as s:
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return json.loads(data)


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path)).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == (len(body) if method != "HEAD" else
                                               int(headers["Content-Length"]))
    return int(lines[0].split()[1]), headers, body


def check_types(obj: dict, schema: dict, where: str) -> None:
    for key, kind in schema.items():
        assert key in obj, "%s: no %r" % (where, key)
        assert isinstance(obj[key], kind) and not isinstance(obj[key], bool), \
            "%s.%s = %r is not %s" % (where, key, obj[key], kind.__name__)


def check_schema(doc: dict) -> None:
    assert UWSGITOP_TOP <= set(doc)
    check_types(doc, EXPORTER_TOP, "stats")
    for sock in doc["sockets"]:
        check_types(sock, EXPORTER_SOCKET, "socket")
    for w in doc["workers"]:
        assert UWSGITOP_WORKER <= set(w)
        check_types(w, EXPORTER_WORKER, "worker %s" % w.get("id"))
        assert w["status"] in ("idle", "busy", "cheap", "pause") or w["status"].startswith(
            "sig")
        for app in w["apps"]:
            check_types(app, EXPORTER_APP, "app")
        for core in w["cores"]:
            assert UWSGITOP_CORE <= set(core)
            check_types(core, EXPORTER_CORE, "core")


# -- a strict parser for the Prometheus text format (0.0.4) ---------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"(%s)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*=%s)(?:,[a-zA-Z_][a-zA-Z0-9_]*=%s)*)"
                    r"\})? (\S+)(?: (-?\d+))?" % (NAME, LABEL_VALUE, LABEL_VALUE))
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)=(%s)' % LABEL_VALUE)


def parse_prometheus(text: str) -> dict[tuple[str, tuple], float]:
    """{(name, labels): value}; raises AssertionError on anything malformed."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, tuple], float] = {}
    families_done: set[str] = set()
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        assert line, "line %d is empty" % n
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[1] in ("HELP", "TYPE") and re.fullmatch(NAME, parts[2]), line
            name = parts[2]
            if parts[1] == "HELP":
                assert name not in helps, "second HELP for %s" % name
                helps.add(name)
            else:
                assert name not in types, "second TYPE for %s" % name
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped")
                types[name] = parts[3]
            if name != current:
                assert name not in families_done, "%s is split in two" % name
                if current:
                    families_done.add(current)
                current = name
            continue
        m = SAMPLE.fullmatch(line)
        assert m, "line %d is not a sample: %r" % (n, line)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert name == current and name in types, "%s without its TYPE first" % name
        pairs = tuple(LABEL.findall(labels))
        assert len({k for k, _ in pairs}) == len(pairs), "repeated label in %r" % line
        key = (name, pairs)
        assert key not in samples, "duplicate series %r" % line
        number = float(value)  # raises for garbage; NaN/+Inf are legal spellings
        assert not math.isnan(number) or value == "NaN"
        samples[key] = number
    return samples


def metric(samples, metric_name: str, **labels) -> float:
    want = tuple(sorted((k, '"%s"' % v) for k, v in labels.items()))
    for (n, pairs), value in samples.items():
        if n == metric_name and tuple(sorted(pairs)) == want:
            return value
    raise KeyError((metric_name, labels))


def test_the_strict_parser_refuses_bad_expositions():
    good = "# HELP a x\n# TYPE a gauge\na{b=\"1\"} 2\n"
    assert parse_prometheus(good) == {("a", (("b", '"1"'),)): 2.0}
    for bad in ["# TYPE a gauge\na 1",  # no final newline
                "a 1\n",  # no TYPE
                "# TYPE a gauge\na{b=1} 1\n",  # unquoted label
                "# TYPE a gauge\na 1\na 2\n",  # duplicate series
                "# TYPE a gauge\na one\n",
                "# TYPE a gauge\n# TYPE b gauge\nb 1\n# TYPE a gauge\n"]:
        with pytest.raises((AssertionError, ValueError)):
            parse_prometheus(bad)


# -- the kernel's listen queues --------------------------------------------------------

@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_listen_queue_comes_from_the_kernel(family):
    if family == "tcp":
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        addr = server.getsockname()
    else:
        addr = os.path.join(short_tmpdir(), "q.sock")
        server = socket.socket(socket.AF_UNIX)
        server.bind(addr)
    server.listen(7)
    clients = []
    try:
        assert stats.socket_queue(server) == (0, 7)
        for _ in range(3):
            c = socket.socket(server.family)
            c.connect(addr)
            clients.append(c)
        wait_until(lambda: stats.socket_queue(server) == (3, 7), 5, what="queue of 3")
        server.accept()[0].close()
        assert stats.socket_queue(server) == (2, 7)
    finally:
        for c in clients:
            c.close()
        server.close()


# -- real servers -------------------------------------------------------------------------

def start(factory, *args, http=False):
    addr = os.path.join(short_tmpdir(), "stats.sock")
    extra = ["--stats-http", "127.0.0.1:%d" % free_port()] if http else []
    server = factory("--module", APP, "--master", "--stats", addr, *extra, *args)
    wait_workers(server, int(args[args.index("--processes") + 1]) if "--processes" in args
                 else 1)
    server.stats = addr
    server.http_port = int(extra[1].rsplit(":", 1)[1]) if http else None
    return server


def test_schema_and_values(uwsgigw_factory):
    server = start(uwsgigw_factory, "--processes", "2", "--threads", "2")
    doc = read_stats(server.stats)
    check_schema(doc)
    assert doc["pid"] == server.pid and doc["uid"] == os.getuid()
    assert doc["cwd"] == os.readlink("/proc/%d/cwd" % server.pid)
    assert [s["name"] for s in doc["sockets"]] == [server.socket]
    assert doc["sockets"][0]["max_queue"] == 1024 and doc["sockets"][0]["proto"] == "uwsgi"
    workers = {w["id"]: w for w in doc["workers"]}
    assert sorted(workers) == [1, 2]
    assert {w["pid"] for w in workers.values()} == wait_workers(server, 2)
    for w in workers.values():
        assert w["accepting"] == 1 and w["status"] == "idle" and w["respawn_count"] == 1
        assert len(w["cores"]) == 2 and w["requests"] == 0
        statm = open("/proc/%d/statm" % w["pid"]).read().split()
        assert abs(w["rss"] - int(statm[1]) * os.sysconf("SC_PAGE_SIZE")) < 8 << 20
        assert abs(w["last_spawn"] - time.time()) < 60
    for _ in range(6):
        assert raw_get(server.socket, "/").status == 200
    doc = read_stats(server.stats)
    assert sum(w["requests"] for w in doc["workers"]) == 6
    assert sum(w["tx"] for w in doc["workers"]) > 6 * 60
    busy = [w for w in doc["workers"] if w["requests"]]
    assert all(w["running_time"] > 0 and w["avg_rt"] > 0 for w in busy)
    assert all(sum(c["requests"] for c in w["cores"]) == w["requests"] == w["delta_requests"]
               for w in doc["workers"])


def test_each_socket_says_its_protocol(uwsgigw_factory):
    # uWSGI's "proto" per socket; uwsgitop does not read sockets, the exporters label by it
    http = "127.0.0.1:%d" % free_port()
    server = start(uwsgigw_factory, "--http-socket", http, http=True)
    doc = read_stats(server.stats)
    check_schema(doc)
    assert [(s["name"], s["proto"]) for s in doc["sockets"]] == [(server.socket, "uwsgi"),
                                                                  (http, "http")]
    samples = parse_prometheus(http_get(server.http_port, "/metrics")[2].decode())
    assert metric(samples, "uwsgi_socket_max_queue_length", name=http, proto="http") == 1024
    assert metric(samples, "uwsgi_socket_max_queue_length", name=server.socket,
                  proto="uwsgi") == 1024


def test_busy_workers_and_a_real_listen_queue(uwsgigw_factory):
    server = start(uwsgigw_factory, "--processes", "1")
    slow = in_thread(raw_get, server.socket, "/slow?1.5")
    server.wait_for_log("slow request started")
    doc = read_stats(server.stats)
    assert doc["workers"][0]["status"] == "busy"
    assert doc["workers"][0]["cores"][0]["in_request"] == 1
    waiting = []
    try:
        for _ in range(3):  # the only worker is busy: these wait in the backlog
            waiting.append(uwsgi_connect(server.socket))
        doc = wait_until(lambda: (lambda d: d if d["listen_queue"] == 3 else None)(
            read_stats(server.stats)), 5, what="listen_queue 3")
        assert doc["sockets"][0]["queue"] == 3 and doc["load"] == 3
    finally:
        for s in waiting:
            s.close()
    assert slow.result().status == 200


def test_counters_survive_a_respawn_and_a_reload(uwsgigw_factory):
    server = start(uwsgigw_factory, "--processes", "1")
    for _ in range(3):
        raw_get(server.socket, "/")
    old_pid = read_stats(server.stats)["workers"][0]["pid"]
    assert raw_get(server.socket, "/exit") is None
    wait_until(lambda: read_stats(server.stats)["workers"][0]["pid"] not in (0, old_pid), 10,
               what="respawned worker")
    raw_get(server.socket, "/")
    # (a request is counted just after its answer went out)
    wait_until(lambda: read_stats(server.stats)["workers"][0]["requests"] == 4, 5,
               what="the request counted")
    w = read_stats(server.stats)["workers"][0]
    assert (w["requests"], w["delta_requests"], w["respawn_count"]) == (4, 1, 2)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", since=mark, timeout=30)
    wait_until(lambda: all(w["accepting"] for w in read_stats(server.stats)["workers"]),
               10, what="stats back")
    raw_get(server.socket, "/")
    wait_until(lambda: read_stats(server.stats)["workers"][0]["requests"] == 5, 5,
               what="the request counted")
    w = read_stats(server.stats)["workers"][0]
    assert w["requests"] == 5 and w["delta_requests"] == 1


def fd_targets(pid: int) -> set[str]:
    return {os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)}


def test_workers_do_not_hold_the_stats_socket(uwsgigw_factory):
    # A worker holding it would keep it accepting into a backlog nobody serves
    # once the master is gone, and block a reloading master from binding it.
    server = start(uwsgigw_factory, "--processes", "2")
    with open("/proc/net/unix") as f:  # "... Inode Path": the listening socket's inode
        inodes = {line.split()[6] for line in f if line.rstrip().endswith(" " + server.stats)}
    assert inodes
    listening = {"socket:[%s]" % i for i in inodes}
    assert listening & fd_targets(server.pid)
    for pid in wait_workers(server, 2):
        assert not listening & fd_targets(pid)


def test_stats_http_json_and_metrics(uwsgigw_factory):
    server = start(uwsgigw_factory, "--processes", "2", http=True)
    status, headers, body = http_get(server.http_port, "/")
    assert status == 200 and headers["Content-Type"] == "application/json"
    check_schema(json.loads(body))
    status, headers, body = http_get(server.http_port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    before = parse_prometheus(body.decode())
    assert metric(before, "uwsgi_up") == 1 and metric(before, "uwsgi_workers") == 2
    assert metric(before, "uwsgi_socket_max_queue_length", name=server.socket,
                  proto="uwsgi") == 1024
    for _ in range(5):
        raw_get(server.socket, "/")
    expected = 5 + sum(metric(before, "uwsgi_worker_requests_total", worker_id=i)
                       for i in (1, 2))

    def requests_now():
        after = parse_prometheus(http_get(server.http_port, "/metrics")[2].decode())
        return sum(metric(after, "uwsgi_worker_requests_total", worker_id=i) for i in (1, 2))

    # (a request is counted just after its answer went out)
    wait_until(lambda: requests_now() == expected, 5, what="the requests counted")
    after = parse_prometheus(http_get(server.http_port, "/metrics")[2].decode())
    total = sum(metric(after, "uwsgi_worker_requests_total", worker_id=i) for i in (1, 2))
    assert total == expected
    assert sum(metric(after, "uwsgi_worker_transmitted_bytes_total", worker_id=i)
               for i in (1, 2)) > sum(metric(before, "uwsgi_worker_transmitted_bytes_total",
                                             worker_id=i) for i in (1, 2))
    assert sum(metric(after, "uwsgi_worker_core_requests_total", worker_id=i, core_id=0)
               for i in (1, 2)) == total
    # counters never go down
    for key, value in before.items():
        if key[0].endswith("_total"):
            assert after[key] >= value, key
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:  # and the reference parser agrees
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["uwsgi_worker_requests"].type == "counter"
    assert http_get(server.http_port, "/metrics", "HEAD")[0] == 200
    assert http_get(server.http_port, "/", "POST")[0] == 405
    # the plain socket still answers plain JSON
    check_schema(read_stats(server.stats))


def test_stats_http_true_makes_the_stats_socket_speak_http(uwsgigw_factory):
    port = free_port()
    server = uwsgigw_factory("--module", APP, "--master", "--stats", "127.0.0.1:%d" % port,
                             "--stats-http")
    server.wait_for_log("stats server on 127.0.0.1:%d (HTTP" % port)
    status, _, body = http_get(port, "/metrics")
    assert status == 200 and parse_prometheus(body.decode())


def test_stats_clients_cannot_block_the_master(uwsgigw_factory):
    server = start(uwsgigw_factory, "--processes", "1", http=True)
    idle = []
    try:
        for _ in range(5):  # connect and say nothing
            idle.append(socket.create_connection(("127.0.0.1", server.http_port)))
        half = socket.create_connection(("127.0.0.1", server.http_port))
        half.sendall(b"GET /metr")  # half a request line
        idle.append(half)
        started = time.monotonic()
        assert http_get(server.http_port, "/metrics")[0] == 200
        check_schema(read_stats(server.stats))
        os.kill(server.pid, signal.SIGTTIN)  # the master still handles signals
        wait_workers(server, 2)
        assert time.monotonic() - started < 3
        # an idle client is dropped after stats.CONNECTION_TIMEOUT
        idle[0].settimeout(stats.CONNECTION_TIMEOUT + 5)
        assert idle[0].recv(10) == b""
    finally:
        for s in idle:
            s.close()


def test_stats_without_master_flag_and_a_bad_address(uwsgigw_factory):
    # stats implies the master (uWSGI serves stats from it); a stats address
    # that cannot be bound is an error in the log, not a dead server
    addr = os.path.join(short_tmpdir(), "nodir", "stats.sock")
    server = uwsgigw_factory("--module", APP, "--stats", addr)
    server.wait_for_log("cannot start the stats server on %s" % addr)
    assert raw_get(server.socket, "/").status == 200
    good = os.path.join(short_tmpdir(), "s.sock")
    server2 = uwsgigw_factory("--module", APP, "--stats", good)
    wait_until(lambda: os.path.exists(good), 10, what="stats socket")
    assert read_stats(good)["pid"] == server2.pid
    server2.stop()
    assert not os.path.exists(good)  # removed at exit
