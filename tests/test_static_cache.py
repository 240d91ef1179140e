"""Issue 15: a repeat static hit on a uwsgi socket is answered by the C core.

The Python lookup (cycle/static.py) decides every answer; a plain one (a 200
from the first map the path matches, no condition, range, gzip variant or
time-based header) is stored in the worker's StaticCache, and the C core
answers the next request for that PATH_INFO itself after reopening the file
beneath its directory and checking the descriptor (csrc/fastpath_static.c).

These tests hold the two to the same answers, in process, with the real
handlers on a socketpair: the C core (cache on) against the Python decoder's
handler (no cache), byte for byte, over a table of requests and of changes to
the files between two requests -- and they watch, with a profiler hook, that
a repeat really skipped Python. Through a real worker:
test_a_cached_hit_is_logged_and_counted.
"""

from __future__ import annotations

import os
import random
import socket

import pytest
from conftest import nginx_vars, parse_response, uwsgi_request
from packet_builder import build_packet
from static_cache_kit import BIG, SMALL, app, handler_for, make_pair, make_site, served

from uwsgigw import backend as backends
from uwsgigw.app import AppTable
from uwsgigw.config import settings
from uwsgigw.observe.record import SharedCounter
from uwsgigw.wsgi.handler import WorkerContext


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


@pytest.fixture
def pair(site):
    return make_pair(site)


REQUESTS = [
    ("/static/a.txt", "GET", {}),
    ("/static/a.txt", "HEAD", {}),
    ("/static/big.bin", "GET", {}),
    ("/static/empty.txt", "GET", {}),
    ("/static/only2.txt", "GET", {}),  # the second map: never stored
    ("/static/sub/", "GET", {}),  # an index: never stored
    ("/static/a.txt", "GET", {"HTTP_RANGE": "bytes=2-5"}),
    ("/static/a.txt", "GET", {"HTTP_IF_NONE_MATCH": "*"}),
    ("/static/a.txt", "GET", {"HTTP_IF_MODIFIED_SINCE": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    ("/static/missing.txt", "GET", {}),
    ("/static/a.txt", "POST", {}),
]


@pytest.mark.parametrize("path, method, headers", REQUESTS)
def test_a_repeat_gets_the_answer_of_the_python_path(pair, path, method, headers):
    c_handler, py_handler, cache = pair
    expected, _ = served(py_handler, path, method, **headers)
    first, _ = served(c_handler, path, method, **headers)
    again, python_calls = served(c_handler, path, method, **headers)
    assert first == expected and again == expected
    plain = not headers and method in ("GET", "HEAD") and path in (
        "/static/a.txt", "/static/big.bin", "/static/empty.txt")
    # A plain answer is stored and its repeat never reaches the Python lookup.
    assert (len(cache), python_calls) == ((1, 0) if plain else (0, 1))


def test_a_stored_answer_serves_the_conditional_request_through_python(pair):
    c_handler, py_handler, _ = pair
    served(c_handler, "/static/a.txt")
    got, calls = served(c_handler, "/static/a.txt", HTTP_IF_NONE_MATCH="*")
    assert parse_response(got).status == 304 and calls == 1
    assert got == served(py_handler, "/static/a.txt", HTTP_IF_NONE_MATCH="*")[0]


def _grow(site):
    (site / "first" / "a.txt").write_bytes(SMALL + b"more\n")


def _touch(site):
    os.utime(site / "first" / "a.txt", (1_000_000_000, 1_000_000_000))


def _swap_for_symlink_out(site):
    os.unlink(site / "first" / "a.txt")
    os.symlink(site / "out" / "secret.txt", site / "first" / "a.txt")


def _move_to_second_map(site):
    os.rename(site / "first" / "a.txt", site / "second" / "a.txt")


def _remove(site):
    os.unlink(site / "first" / "a.txt")


def _fifo(site):
    os.unlink(site / "first" / "a.txt")
    os.mkfifo(site / "first" / "a.txt")


def _directory(site):
    os.unlink(site / "first" / "a.txt")
    (site / "first" / "a.txt").mkdir()


CHANGES = {  # change -> (status, what the body must be)
    "grown": (_grow, 200, SMALL + b"more\n"),
    "touched": (_touch, 200, SMALL),
    "symlink out": (_swap_for_symlink_out, 403, b""),
    "moved to the second map": (_move_to_second_map, 200, SMALL),
    "removed": (_remove, 200, b"app: /static/a.txt"),
    "fifo": (_fifo, 200, b"app: /static/a.txt"),
    "directory": (_directory, 200, b"app: /static/a.txt"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_file_is_never_answered_from_the_stored_answer(site, pair, change):
    c_handler, py_handler, cache = pair
    before, _ = served(c_handler, "/static/a.txt")
    assert len(cache) == 1 and parse_response(before).body == SMALL
    do, status, body = CHANGES[change]
    do(site)
    got, calls = served(c_handler, "/static/a.txt")
    expected, _ = served(py_handler, "/static/a.txt")
    answer = parse_response(got)
    assert (answer.status, answer.body) == (status, body)
    assert got == expected and calls == 1  # Python decided it again
    if change in ("grown", "touched"):
        assert answer.header("Last-Modified") != parse_response(before).header(
            "Last-Modified") or answer.header("Content-Length") != str(len(SMALL))
        assert served(c_handler, "/static/a.txt") == (got, 0)  # the new answer, stored
    else:
        assert len(cache) == 0


def test_a_client_gone_mid_file_costs_the_request_not_the_worker(pair):
    c_handler, _, cache = pair
    served(c_handler, "/static/big.bin")
    assert len(cache) == 1
    env = nginx_vars(method="GET", uri="/static/big.bin")
    packet = build_packet([(k.encode(), v.encode()) for k, v in env.items()])
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    b.sendall(packet)
    b.close()  # gone before the answer: the send fails
    c_handler.handle(a.detach())
    again, calls = served(c_handler, "/static/big.bin")
    assert parse_response(again).body == BIG and calls == 0


ACCEL = ("file_serve_mode=x-accel-redirect",)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_accel_redirect_answers_match_the_python_path(site, method):
    c_handler, ctx = handler_for(site, "c", *ACCEL)
    py_handler, _ = handler_for(site, "python", *ACCEL)
    expected, _ = served(py_handler, "/static/a.txt", method)
    assert b"X-Accel-Redirect: " in expected or method == "HEAD"
    for _ in range(2):
        got, _ = served(c_handler, "/static/a.txt", method)
        assert got == expected
    # A HEAD's accel answer is the file's own headers: only GET is stored.
    assert len(ctx.static_cache) == (1 if method == "GET" else 0)


@pytest.mark.parametrize("option", ["static_gzip_all=1", r"static_expires=\.txt$ 60",
                                    r"static_expires_uri=\.txt 60"])
def test_answers_that_depend_on_more_than_the_file_are_not_stored(site, option):
    c_handler, ctx = handler_for(site, "c", option)
    py_handler, _ = handler_for(site, "python", option)
    for _ in range(2):
        got, calls = served(c_handler, "/static/a.txt")
        assert calls == 1
    assert len(ctx.static_cache) == 0
    if "expires" not in option:  # (Expires moves with the clock)
        assert got == served(py_handler, "/static/a.txt")[0]


def test_a_mount_keeps_static_hits_in_python(site):
    cfg = settings.build({"socket": [str(site / "unused.sock")], "module": "unused",
                          "static_map": ["/static=%s" % (site / "first")]}, {})
    ctx = WorkerContext.from_config(cfg, backends.select("c"),
                                    AppTable(app, [("/api", app)], True), SharedCounter())
    assert ctx.static_cache is None


def test_the_store_is_bounded():
    from uwsgigw.wsgi.fastpath import StaticCache
    cache = StaticCache()
    headers = [("Content-Type", "text/plain"), ("Content-Length", "1")]
    for i in range(5000):
        assert cache.put("/f%d" % i, 3, b"f", 1, i, 0, 1, "200 OK", headers, False)
        assert 1 <= len(cache) <= 2048
    # A head C would not send as it is is not stored (Python explains it).
    assert not cache.put("/bad", 3, b"f", 1, 1, 0, 1, "200 OK", [("Bad Name", "x")], False)
    assert not cache.put("/nul", 3, b"f\0g", 1, 1, 0, 1, "200 OK", headers, False)


def test_a_cached_hit_is_logged_and_counted(factories, site):
    server = factories.uwsgigw("--module", "field_apps:wsgi", "--master", "--processes", "1",
                               "--static-map", "/static=%s" % (site / "first"),
                               )
    for n in range(3):
        mark = server.log_mark()
        got = parse_response(uwsgi_request(server.socket,
                                           nginx_vars(method="GET", uri="/static/a.txt")))
        assert (got.status, got.body) == (200, SMALL)
        line = server.wait_for_log("GET /static/a.txt =>", since=mark)
        assert "generated %d bytes" % len(SMALL) in line and "HTTP/1.1 200)" in line, line
        assert "req: %d/%d" % (n + 1, n + 1) in line, line


def test_random_requests_and_changes_get_the_python_paths_answers(site, pair):
    """Fuzz, seeded: 400 steps, each a random change to the tree or a random
    request, answered by both handlers; the C core's answer is the Python
    path's, byte for byte, whether it came from the store or not."""
    c_handler, py_handler, cache = pair
    rnd = random.Random(15)
    first = site / "first"
    names = ["a.txt", "b.txt", "sub/c.txt", "sub"]
    for name in names[1:3]:
        (first / name).write_bytes(b"%s\n" % name.encode())
    touch = lambda p: os.utime(p, (rnd.randrange(1, 2 ** 31), rnd.randrange(1, 2 ** 31)))
    write = lambda p: p.write_bytes(os.urandom(rnd.choice([0, 1, 100, 70000])))
    changes = [
        write, write, write,  # (so the tree keeps files to store)
        touch,
        lambda p: None,  # removed
        lambda p: os.symlink(site / "out" / "secret.txt", p),
        lambda p: os.symlink("a.txt", p),
        lambda p: os.mkfifo(p),
    ]
    hits = 0
    for step in range(400):
        if rnd.random() < 0.1:
            path = first / rnd.choice(names[:3])
            change = rnd.choice(changes)
            if change is touch:
                if path.is_file() and not path.is_symlink():
                    touch(path)
                continue
            if path.is_symlink() or path.exists():
                path.unlink()  # (never a FIFO written to: that open would wait)
            path.parent.mkdir(exist_ok=True)
            change(path)
            continue
        uri = "/static/" + rnd.choice(names)
        method = rnd.choice(["GET", "GET", "GET", "HEAD"])
        headers = rnd.choice([{}, {}, {}, {"HTTP_RANGE": "bytes=0-3"},
                              {"HTTP_IF_MODIFIED_SINCE": "Sat, 01 Jan 2000 00:00:00 GMT"}])
        expected, _ = served(py_handler, uri, method, **headers)
        got, calls = served(c_handler, uri, method, **headers)
        assert got == expected, (step, uri, method, headers)
        hits += calls == 0
    assert hits > 20, "the store answered %d requests: the test did not exercise it" % hits
