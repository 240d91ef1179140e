"""Issue 15: the C core's repeat static answers, attacked (test_static_cache.py style:
in process, byte for byte against the Python decoder's handler, plus real servers).

A newcomer's review found, and these tests hold fixed: a stale answer after an
absolute or '..' symlink into the map was repointed or removed (the stored path
was the link's target); no answer at all for a non-UTF-8 file name in
x-accel-redirect mode (and a 500 for it on the Python path, and in x-sendfile
mode); a file shorter than its size cut with a reset by C but closed cleanly by
Python; a client that stopped reading logged as 0 bytes by Python; a store
bounded by entries, not bytes (2,040 long spellings of one path: +36 MB).
What held up stays here too: GET/HEAD in any order, log lines, odd PATH_INFO
bytes, request vars, option combinations, privilege drop, threads and
descriptors."""

from __future__ import annotations

import os

import pytest
from conftest import parse_response
from static_cache_kit import SMALL, app, handler_for, make_pair, make_site, served


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


@pytest.fixture
def pair(site):
    return make_pair(site)


# A link into the map that leaves it on the way (absolute, or with '..') is
# opened through the lookup's EXDEV detour; then a deploy changes the link.
# (link name, its first target, what the deploy does to it; a target is
# relative to the site, or None for "removed").
LINKS = {
    "absolute, repointed": ("cur.txt", "first/v1.txt", "first/v2.txt"),
    "absolute, removed": ("cur.txt", "first/v1.txt", None),
    "absolute, repointed outside": ("cur.txt", "first/v1.txt", "out/secret.txt"),
    "absolute directory, repointed": ("current", "first/r1", "first/r2"),
    "relative with '..', repointed": ("cur.txt", "../first/v1.txt", "../first/v2.txt"),
}


@pytest.mark.parametrize("case", list(LINKS))
def test_a_symlink_through_a_detour_is_seen_when_it_changes(site, pair, case):
    c_handler, py_handler, cache = pair
    first = site / "first"
    (first / "v1.txt").write_bytes(b"version one\n")
    (first / "v2.txt").write_bytes(b"version two!\n")
    for release in ("r1", "r2"):
        (first / release).mkdir()
        (first / release / "v1.txt").write_bytes(b"release %s\n" % release.encode())
    name, before, after = LINKS[case]
    uri = "/static/" + name + ("/v1.txt" if name == "current" else "")

    def target(rel):
        return rel if rel.startswith("..") else site / rel

    os.symlink(target(before), first / name)
    first_answer = parse_response(served(c_handler, uri)[0])
    assert first_answer.status == 200
    assert first_answer.body in (b"version one\n", b"release r1\n")
    os.unlink(first / name)
    if after is not None:
        os.symlink(target(after), first / name)
    expected, _ = served(py_handler, uri)
    got, calls = served(c_handler, uri)
    assert got == expected and calls == 1, (calls, parse_response(got).body)
    assert parse_response(got).body != first_answer.body


def _lines(text):
    import re
    out = []
    for line in text.splitlines():
        if "=>" in line:
            line = re.sub(r"\[\w{3} \w{3} [ \d]\d [\d:]+ \d{4}\]", "[T]", line)
            line = re.sub(r"in \d+ msecs", "in N msecs", line)
            line = re.sub(r"req: \d+/\d+", "req: n", line)
            out.append(line)
    return out


@pytest.mark.parametrize("path, method, extra", [
    ("/static/a.txt", "GET", ()), ("/static/a.txt", "HEAD", ()),
    ("/static/big.bin", "GET", ()), ("/static/big.bin", "HEAD", ()),
    ("/static/empty.txt", "GET", ()),
    ("/static/a.txt", "GET", ("file_serve_mode=x-accel-redirect",)),
    ("/static/a.txt", "GET", ("file_serve_mode=x-sendfile",)),
])
def test_the_repeat_logs_as_the_first(site, capfd, path, method, extra):
    c_handler, ctx = handler_for(site, "c", *extra)
    py_handler, _ = handler_for(site, "python", *extra)
    capfd.readouterr()
    exp, _ = served(py_handler, path, method)
    py_log = _lines(capfd.readouterr().err)
    first, _ = served(c_handler, path, method)
    again, calls = served(c_handler, path, method)
    c_log = _lines(capfd.readouterr().err)
    assert calls == 0 and first == again == exp
    assert c_log[0] == c_log[1] == py_log[0], (py_log, c_log)


@pytest.mark.parametrize("extra", [(), ("file_serve_mode=x-accel-redirect",),
                                   ("file_serve_mode=x-sendfile",)])
@pytest.mark.parametrize("path", ["/static/a.txt", "/static/big.bin", "/static/empty.txt"])
@pytest.mark.parametrize("order", [("GET", "HEAD"), ("HEAD", "GET"), ("HEAD", "HEAD", "GET", "GET")])
def test_get_and_head_in_any_order(site, path, order, extra):
    c_handler, _ = handler_for(site, "c", *extra)
    py_handler, _ = handler_for(site, "python", *extra)
    for method in order:
        assert served(c_handler, path, method)[0] == served(py_handler, path, method)[0], method


@pytest.mark.parametrize("raw", [b"caf\xc3\xa9.txt", b"caf\xe9.txt", b"a b%20.txt", b"\x01ctl.txt",
                                 b"x\xff\xfe.txt"])
def test_non_ascii_path_info(site, pair, raw):
    c_handler, py_handler, cache = pair
    with open(os.path.join(os.fsencode(site / "first"), raw), "wb") as f:
        f.write(b"raw name\n")
    uri = (b"/static/" + raw).decode("latin-1")
    for _ in range(3):
        got, calls = served(c_handler, uri)
        assert got == served(py_handler, uri)[0]
        assert parse_response(got).body == b"raw name\n"
    assert calls == 0 and len(cache) == 1


def test_duplicate_path_info_vars(site, pair):
    import socket
    import threading
    from packet_builder import build_packet
    from conftest import nginx_vars
    c_handler, py_handler, cache = pair
    (site / "first" / "b.txt").write_bytes(b"bbb\n")

    def raw(handler):
        env = nginx_vars(method="GET", uri="/static/a.txt")
        pairs = [(k.encode(), v.encode()) for k, v in env.items()]
        pairs.append((b"PATH_INFO", b"/static/b.txt"))
        a, b = socket.socketpair()
        b.sendall(build_packet(pairs))
        t = threading.Thread(target=handler.handle, args=(a.detach(),))
        t.start()
        b.settimeout(5)
        out = b""
        while chunk := b.recv(65536):
            out += chunk
        t.join()
        b.close()
        return out
    exp = raw(py_handler)
    for _ in range(3):
        assert raw(c_handler) == exp
    served(c_handler, "/static/a.txt")
    served(c_handler, "/static/b.txt")
    assert raw(c_handler) == exp


# ---------------------------------------------------------------- real servers --

def _worker_pids(master):
    with open("/proc/%d/task/%d/children" % (master, master)) as f:
        return [int(p) for p in f.read().split()]


def _fds(pid):
    return sorted(os.listdir("/proc/%d/fd" % pid), key=int)


@pytest.fixture
def pub_site():
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="brk-", dir="/tmp")
    os.chmod(d, 0o755)
    (open(os.path.join(d, "a.txt"), "wb")).write(SMALL)
    (open(os.path.join(d, "big.bin"), "wb")).write(os.urandom(200_000))
    (open(os.path.join(d, "c.txt"), "wb")).write(b"c\n")
    (open(os.path.join(d, "app.py"), "w")).write(
        "def application(e, sr):\n    sr('200 OK', [('Content-Length', '3')])\n    return [b'app']\n")
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o644)
    yield d
    shutil.rmtree(d)


def test_unreadable_after_store_as_nobody(factories, pub_site):
    from conftest import nginx_vars, uwsgi_request
    server = factories.uwsgigw("--wsgi-file", os.path.join(pub_site, "app.py"), "--master",
                               "--processes", "1", "--uid", "nobody", "--gid", "nogroup",
                               "--static-map", "/static=%s" % pub_site)
    get = lambda: parse_response(uwsgi_request(server.socket,
                                               nginx_vars(method="GET", uri="/static/a.txt")))
    assert get().body == SMALL and get().body == SMALL
    os.chmod(os.path.join(pub_site, "a.txt"), 0)
    assert get().status == 403
    os.chmod(os.path.join(pub_site, "a.txt"), 0o644)
    assert get().body == SMALL and get().body == SMALL
    os.chmod(pub_site, 0o700)  # the directory: nobody may not search it any more
    assert get().status == 403


@pytest.mark.timeout(120)
def test_threads_concurrent_repeats_and_changes_keep_fds(factories, pub_site):
    import random
    import threading
    from conftest import nginx_vars, uwsgi_request
    server = factories.uwsgigw("--module", "field_apps:wsgi", "--master", "--processes", "1",
                               "--threads", "4", "--static-map", "/static=%s" % pub_site)
    worker = _worker_pids(server.pid)[0]
    before = None
    bad = []
    stop = threading.Event()

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            path = rnd.choice(["/static/a.txt", "/static/big.bin", "/static/c.txt"])
            method = rnd.choice(["GET", "GET", "HEAD"])
            try:
                r = parse_response(uwsgi_request(server.socket, nginx_vars(method=method, uri=path)))
            except Exception as exc:  # noqa: BLE001
                bad.append((path, method, repr(exc)))
                continue
            if r.status != 200:
                bad.append((path, r.status))
            elif method == "GET" and "app" not in r.body.decode("latin-1", "replace")[:5] and \
                    str(len(r.body)) != r.header("Content-Length"):
                # a shrink during the send is a cut; anything else is a bug
                bad.append((path, "length", len(r.body), r.header("Content-Length")))

    def changer():
        rnd = random.Random(1)
        while not stop.is_set():
            p = os.path.join(pub_site, "c.txt")
            tmp = p + ".tmp"
            with open(tmp, "wb") as f:
                f.write(os.urandom(rnd.choice([0, 10, 70000])))
            os.rename(tmp, p)  # atomic swap: never a partial file
            stop.wait(0.002)

    for _ in range(20):  # warm up
        uwsgi_request(server.socket, nginx_vars(uri="/static/a.txt"))
    before = _fds(worker)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=changer))
    for t in threads:
        t.start()
    stop.wait(4)
    stop.set()
    for t in threads:
        t.join()
    assert not bad[:10], bad[:10]
    assert server.alive()
    after = _fds(worker)
    assert len(after) <= len(before) + 1, (before, after)


def _served_count(handler, path, method="GET", delay=0.0, during=None):
    """(head bytes, body byte count, sha of the body) without keeping it all."""
    import hashlib
    import socket
    import threading
    import time
    from conftest import nginx_vars
    from packet_builder import build_packet
    env = nginx_vars(method=method, uri=path)
    a, b = socket.socketpair()
    b.sendall(build_packet([(k.encode(), v.encode("latin-1")) for k, v in env.items()]))
    t = threading.Thread(target=handler.handle, args=(a.detach(),))
    t.start()
    if delay:
        time.sleep(delay)
    if during:
        during()
    b.settimeout(30)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = b.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    h = hashlib.sha1(rest)
    n = len(rest)
    try:
        while chunk := b.recv(1 << 20):
            n += len(chunk)
            h.update(chunk)
    except ConnectionResetError:
        n = -n  # a reset (the sender's abort): marked negative
    t.join(60)
    b.close()
    return head, n, h.hexdigest()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [3 * 1024 * 1024, 60000])
def test_a_file_that_shrinks_while_sent(site, pair, capfd, size):
    c_handler, py_handler, cache = pair
    p = site / "first" / "shrink.bin"
    data = os.urandom(size)
    results = []
    for handler in (py_handler, c_handler, c_handler):
        p.write_bytes(data)
        os.utime(p, (1_000_000, 1_000_000))
        capfd.readouterr()
        got = _served_count(handler, "/static/shrink.bin", delay=0.3,
                            during=lambda: os.truncate(p, 1000) or os.utime(p, (1_000_000, 1_000_000)))
        results.append((got, _lines(capfd.readouterr().err)))
    (py, py_log), (c1, c1_log), (c2, c2_log) = results
    assert len(cache) == 1
    assert c2 == py and c2_log == py_log


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["FMT %(status) %(size) %(rsize) %(hsize) %(headers) %(vars) "
                                 "%(pktsize) %(method) %(uri) %(modifier1) %(switches) %(cl)",
                                 "json"])
def test_a_custom_log_format_logs_the_repeat_as_the_python_path(factories, pub_site, fmt):
    import re
    from conftest import nginx_vars, uwsgi_request
    logs = {}
    for decoder in ("python", "c"):
        server = factories.uwsgigw("--wsgi-file", os.path.join(pub_site, "app.py"),
                                   "--decoder", decoder,
                                   *(["--log-json"] if fmt == "json" else ["--log-format", fmt]),
                                   "--static-map", "/static=%s" % pub_site)
        for path, method in [("/static/a.txt", "GET")] * 3 + [("/static/a.txt", "HEAD")] * 2 + \
                [("/static/big.bin", "GET")] * 3:
            mark = server.log_mark()
            uwsgi_request(server.socket, nginx_vars(method=method, uri=path))
            line = server.wait_for_log("FMT" if fmt != "json" else '"type":"request"', since=mark)
            line = [x for x in line.splitlines() if "FMT" in x or '"type":"request"' in x][-1]
            line = re.sub(r'"(timestamp|msecs|micros|secs|time|tmsecs|tmicros|epoch|ltime|'
                          r'ftime|ctime|vsz|rss|req|total|pid|request_id)":[^,}]*', "", line)
            logs.setdefault(decoder, []).append(re.sub(r"^.*?(FMT|\{)", r"\1", line))
    assert logs["c"] == logs["python"]


@pytest.mark.timeout(60)
def test_a_client_that_stops_reading_a_big_file(site, capfd):
    import socket
    import threading
    import time
    from conftest import nginx_vars
    from packet_builder import build_packet
    c_handler, ctx = handler_for(site, "c", "socket_timeout=1")
    py_handler, _ = handler_for(site, "python", "socket_timeout=1")
    served(c_handler, "/static/big.bin")
    assert len(ctx.static_cache) == 1

    def stall(handler):
        env = nginx_vars(method="GET", uri="/static/big.bin")
        a, b = socket.socketpair()
        b.sendall(build_packet([(k.encode(), v.encode()) for k, v in env.items()]))
        t0 = time.monotonic()
        t = threading.Thread(target=handler.handle, args=(a.detach(),))
        t.start()
        t.join(20)
        b.close()
        return time.monotonic() - t0, t.is_alive()

    capfd.readouterr()
    py_took, py_alive = stall(py_handler)
    py_err = capfd.readouterr().err
    c_took, c_alive = stall(c_handler)
    c_err = capfd.readouterr().err
    assert not py_alive and not c_alive
    assert _lines(c_err) == _lines(py_err)
    assert c_took < 3


def _handler(site, decoder, cli):
    from uwsgigw import backend as backends
    from uwsgigw.app import AppTable
    from uwsgigw.config import settings
    from uwsgigw.observe.record import SharedCounter
    from uwsgigw.wsgi.handler import ConnectionHandler, WorkerContext
    cfg = settings.build(dict(cli, socket=[str(site / "unused.sock")], module="unused"), {})
    ctx = WorkerContext.from_config(cfg, backends.select(decoder), AppTable(app, [], False),
                                    SharedCounter())
    return ConnectionHandler(ctx), ctx


CONFIGS = {
    "check+map": lambda s: {"check_static": [str(s / "second")],
                            "static_map": ["/static=%s" % (s / "first")]},
    "map2": lambda s: {"static_map2": ["/first=%s" % s], "static_map": ["/static=%s" % (s / "first")]},
    "skip-ext": lambda s: {"static_map": ["/static=%s" % (s / "first")], "static_skip_ext": [".css"]},
    "file-root": lambda s: {"static_map": ["/static/a.txt=%s" % (s / "first" / "big.bin"),
                                           "/static=%s" % (s / "first")]},
    "nested": lambda s: {"static_map": ["/static/sub=%s" % (s / "second"), "/static=%s" % (s / "first")]},
    "slash-prefix": lambda s: {"static_map": ["/=%s" % (s / "first")]},
    "safe": lambda s: {"static_map": ["/static=%s" % (s / "first")], "static_safe": [str(s / "out")]},
}
URIS = ["/static/a.txt", "/static/style.css", "/static/sub/index.html", "/static/sub/",
        "/static/sub", "/first/a.txt", "/a.txt", "/static//a.txt", "/static/./a.txt",
        "/static/sub/../a.txt", "/static/only2.txt", "/static/lnk.txt", "/static/abs.txt", "/only2.txt",
        "/static", "/static/", "/"]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_option_combinations(site, config):
    os.symlink(site / "out" / "secret.txt", site / "first" / "lnk.txt")
    os.symlink(site / "first" / "a.txt", site / "first" / "abs.txt")
    (site / "second" / "sub").mkdir()
    (site / "second" / "sub" / "index.html").write_bytes(b"second index\n")
    (site / "second" / "static").mkdir()
    (site / "second" / "static" / "a.txt").write_bytes(b"check-static's a\n")
    cli = CONFIGS[config](site)
    cli["static_index"] = ["index.html"]
    c_handler, ctx = _handler(site, "c", cli)
    py_handler, _ = _handler(site, "python", cli)
    for uri in URIS:
        for method in ("GET", "HEAD", "GET"):
            exp = served(py_handler, uri, method)[0]
            got = served(c_handler, uri, method)[0]
            assert got == exp, (uri, method)


@pytest.mark.parametrize("extra", [{"SERVER_PROTOCOL": "HTTP/1.0"}, {"SERVER_PROTOCOL": "HTTP/2.0"},
                                   {"HTTP_CONNECTION": "keep-alive"}, {"HTTPS": "on"},
                                   {"HTTP_ACCEPT_ENCODING": "gzip"}, {"HTTP_IF_RANGE": "x"},
                                   {"HTTP_IF_MATCH": '"nope"'},
                                   {"HTTP_IF_UNMODIFIED_SINCE": "Sat, 01 Jan 2000 00:00:00 GMT"},
                                   {"HTTP_RANGE": ""}, {"HTTP_IF_NONE_MATCH": ""},
                                   {"UWSGI_SCHEME": "https"}, {"SCRIPT_NAME": "/static"}])
def test_request_vars_after_a_store(site, pair, extra):
    c_handler, py_handler, cache = pair
    served(c_handler, "/static/a.txt")
    for method in ("GET", "HEAD"):
        assert served(c_handler, "/static/a.txt", method, **extra)[0] == \
            served(py_handler, "/static/a.txt", method, **extra)[0]


def test_a_file_shorter_than_its_size_sysfs(site):
    """sysfs says 4096 bytes and has a few: the deterministic 'shrank' case."""
    import socket
    import threading
    from conftest import nginx_vars
    from packet_builder import build_packet
    cli = {"static_map": ["/sys=/sys/kernel"]}
    c_handler, ctx = _handler(site, "c", cli)
    py_handler, _ = _handler(site, "python", cli)

    def get(handler):
        env = nginx_vars(method="GET", uri="/sys/profiling")
        a, b = socket.socketpair()
        b.sendall(build_packet([(k.encode(), v.encode()) for k, v in env.items()]))
        t = threading.Thread(target=handler.handle, args=(a.detach(),))
        t.start()
        out, reset = b"", False
        b.settimeout(5)
        try:
            while chunk := b.recv(65536):
                out += chunk
        except ConnectionResetError:
            reset = True
        t.join()
        b.close()
        return out, reset
    exp = get(py_handler)
    assert exp[1], "the short body must end in a reset (ending.py)"
    assert get(c_handler) == exp  # the first: Python decides, stores
    assert len(ctx.static_cache) == 1
    assert get(c_handler) == exp  # the repeat: C


@pytest.mark.timeout(120)
def test_the_bound_counts_bytes_too(factories, pub_site):
    """2,048 entries, each keyed by a distinct long spelling of one file."""
    from conftest import nginx_vars, uwsgi_request
    server = factories.uwsgigw("--wsgi-file", os.path.join(pub_site, "app.py"), "--master",
                               "--processes", "1", "--buffer-size", "32768", "--disable-logging",
                               "--static-map", "/static=%s" % pub_site)
    worker = _worker_pids(server.pid)[0]

    def rss():
        with open("/proc/%d/status" % worker) as f:
            return int([x for x in f if x.startswith("VmRSS")][0].split()[1])
    uwsgi_request(server.socket, nginx_vars(uri="/static/a.txt"))
    before = rss()
    for k in range(2040):
        uri = "/static/" + "/" * (9000 + k) + "./" * 2000 + "a.txt"
        r = parse_response(uwsgi_request(server.socket, nginx_vars(uri=uri)))
        assert r.status == 200 and r.body == SMALL
    grown = rss() - before
    assert grown < 8 * 1024, "%d KiB" % grown


@pytest.mark.parametrize("mode", ["x-accel-redirect", "x-sendfile", ""])
@pytest.mark.parametrize("raw", [b"caf\xe9.txt", b"caf\xc3\xa9.txt", b"new\\line.txt", b"q?x.txt"])
def test_serve_modes_with_odd_names(site, raw, mode):
    extra = ("file_serve_mode=" + mode,) if mode else ()
    c_handler, ctx = handler_for(site, "c", *extra)
    py_handler, _ = handler_for(site, "python", *extra)
    with open(os.path.join(os.fsencode(site / "first"), raw), "wb") as f:
        f.write(b"odd\n")
    uri = (b"/static/" + raw).decode("latin-1")
    exp = served(py_handler, uri)[0]
    assert parse_response(exp).status == 200, exp
    for _ in range(2):
        assert served(c_handler, uri)[0] == exp


@pytest.mark.parametrize("mode", ["x-accel-redirect", "x-sendfile"])
def test_a_non_utf8_name_in_accel_mode_c_vs_python(site, mode, capfd):
    c_handler, ctx = handler_for(site, "c", "file_serve_mode=" + mode)
    py_handler, _ = handler_for(site, "python", "file_serve_mode=" + mode)
    with open(os.path.join(os.fsencode(site / "first"), b"caf\xe9.txt"), "wb") as f:
        f.write(b"odd\n")
    uri = b"/static/caf\xe9.txt".decode("latin-1")
    exp = served(py_handler, uri)[0]
    got = served(c_handler, uri)[0]
    assert got == exp


def test_a_non_utf8_name_in_accel_mode_real_server(factories, pub_site):
    from conftest import nginx_vars, uwsgi_request
    with open(os.path.join(os.fsencode(pub_site), b"caf\xe9.txt"), "wb") as f:
        f.write(b"odd\n")
    out = {}
    for decoder in ("python", "c"):
        server = factories.uwsgigw("--wsgi-file", os.path.join(pub_site, "app.py"), "--master",
                                   "--processes", "1", "--decoder", decoder,
                                   "--file-serve-mode", "x-accel-redirect",
                                   "--static-map", "/static=%s" % pub_site)
        mark = server.log_mark()
        try:
            raw = uwsgi_request(server.socket, nginx_vars(uri=b"/static/caf\xe9.txt".decode("latin-1")))
        except Exception as exc:  # noqa: BLE001
            raw = repr(exc).encode()
        import time
        time.sleep(0.5)
        out[decoder] = (raw[:40], server.alive(), "=>" in server.log_since(mark),
                        parse_response(uwsgi_request(server.socket, nginx_vars(uri="/static/a.txt"))).status)
    assert out["c"] == out["python"]
