"""The async worker behind the real nginx: concurrency and its limit, the
request/response rules shared with the WSGI path (header validation,
limit-post, post-buffering), disconnects, harakiri, lifespan failures,
graceful stop, and WSGI apps on the same worker through the thread pool.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import read_record, http_request, nginx_vars, parse_response, uwsgi_request, wait_until
from conftest import site_get as get
from uwsgigw import exitcodes



@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return str(tmp_path_factory.mktemp("asgi-worker-records"))


@pytest.fixture(scope="module")
def raw_site(module_factories, records):
    """One worker, raw ASGI app, a WSGI app mounted next to it."""
    server = module_factories.uwsgigw(
        "--module", "asgi_apps:raw", "--mount", "/wsgi=asgi_apps:wsgi_hello",
        "--manage-script-name", "--threads", "4", "--master", "--limit-post", "1000000",
        env={"ASGI_APPS_RECORD_DIR": records})
    return server, module_factories.nginx(server.socket)



# -- concurrency ---------------------------------------------------------------------

def test_hundred_sleeping_requests_run_concurrently_on_one_worker(raw_site):
    """100 requests that each await 0.5 s finish in about 0.5 s, not 50 s."""
    start = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda i: get(raw_site, "/sleep?s=0.5&i=%d" % i), range(100)))
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == [200] * 100
    assert all(r.body == b"slept" for r in results)
    assert elapsed < 3.0, "100 x 0.5 s took %.2f s" % elapsed


def test_async_concurrency_limit_queues_in_the_backlog(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--async-concurrency", "2")
    nginx = nginx_factory(server.socket)
    start = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: http_request(nginx.port, "GET", "/sleep?s=0.4"),
                                range(6)))
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == [200] * 6
    # 2 at a time: three rounds of 0.4 s, none refused.
    assert 1.1 < elapsed < 5.0, elapsed


# -- scope and request body -------------------------------------------------------------

def test_scope_from_nginx(raw_site):
    r = get(raw_site, "/scope/caf%C3%A9%20x?a=1&b=%20", headers={"X-Custom": "v1",
                                                                 "Cookie": "a=b"})
    assert r.status == 200
    import json
    scope = json.loads(r.body)
    assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
    assert scope["method"] == "GET" and scope["scheme"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["path"] == "/scope/caf\u00e9 x"
    assert scope["raw_path"] == "/scope/caf%C3%A9%20x"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"][1] == raw_site[1].port
    headers = dict(scope["headers"])
    assert headers["x-custom"] == "v1" and headers["cookie"] == "a=b"
    assert headers["host"].startswith("127.0.0.1")


def test_body_streamed_in_chunks(raw_site):
    data = os.urandom(300_000)
    r = http_request(raw_site[1].port, "POST", "/echo", body=data)
    assert r.status == 200 and r.body == data
    assert int(r.header("X-Messages")) > 1  # several http.request messages


def test_limit_post_413_before_the_app(raw_site):
    r = http_request(raw_site[1].port, "POST", "/echo", body=b"x" * 1_000_001)
    assert r.status == 413
    r = http_request(raw_site[1].port, "POST", "/echo", body=b"x" * 1_000_000)
    assert r.status == 200 and len(r.body) == 1_000_000


@pytest.mark.parametrize("size,messages", [(500, 1), (200_000, 4)])
def test_post_buffering(uwsgigw_factory, nginx_factory, size, messages):
    """Below N bytes: one message from memory; at N and above: from the temp file."""
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--post-buffering", "1000")
    nginx = nginx_factory(server.socket)
    data = os.urandom(size)
    r = http_request(nginx.port, "POST", "/echo", body=data)
    assert r.status == 200 and r.body == data
    assert int(r.header("X-Messages")) == messages


# -- response validation and app errors ---------------------------------------------------

def test_header_with_crlf_is_refused_with_500(raw_site):
    server, _ = raw_site
    mark = server.log_mark()
    r = get(raw_site, "/bad-header")
    assert r.status == 500
    assert r.header("Set-Cookie") is None and b"never" not in r.body
    text = server.wait_for_log("invalid response from the app", since=mark)
    assert "header 'x-bad'" in text and "CR, LF or NUL" in text


@pytest.mark.parametrize("value", ["a\0b", "a\nb"])
def test_header_with_nul_or_lf_is_refused(raw_site, value):
    r = uwsgi_request(raw_site[0].socket, nginx_vars(
        uri="/bad-header?v=%s" % value.replace("\0", "%00").replace("\n", "%0A"),
        QUERY_STRING="v=%s" % value.replace("\0", "%00").replace("\n", "%0A")))
    assert parse_response(r).status == 500


def test_invalid_status_and_exceptions(raw_site):
    assert get(raw_site, "/bad-status").status == 500
    assert get(raw_site, "/raise").status == 500
    assert get(raw_site, "/no-response").status == 500
    r = get(raw_site, "/raise-after-head")
    # The head went out: the connection is reset so nginx does not pass a
    # truncated body off as complete.
    assert r.error is not None or len(r.body) < 100
    assert raw_site[0].alive()


def test_head_request_has_no_body(raw_site):
    r = http_request(raw_site[1].port, "HEAD", "/echo-nothing")
    assert r.status == 200 and r.body == b""


def test_streaming_chunks(raw_site):
    r = get(raw_site, "/stream?n=20")
    assert r.status == 200 and r.body == b"".join(b"chunk %d\n" % i for i in range(20))


def test_work_after_response_does_not_delay_it(raw_site, records):
    start = time.monotonic()
    r = get(raw_site, "/after-response?tag=ar1")
    assert r.status == 200 and r.body == b"done"
    assert time.monotonic() - start < 0.3 or read_record(records, "after-ar1") == ""
    wait_until(lambda: read_record(records, "after-ar1"), 5, what="work after the response")


# -- disconnects ----------------------------------------------------------------------

def _abandon(port: int, path: str, records, tag: str) -> None:
    """Send a request to nginx, wait until the app runs, then hang up."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        wait_until(lambda: read_record(records, "started-" + tag), 10, what="the app to start")
    finally:
        s.close()


def test_task_cancelled_when_nginx_goes_away(raw_site, records):
    server, nginx = raw_site
    mark = server.log_mark()
    _abandon(nginx.port, "/cancel-me?tag=c1", records, "c1")
    wait_until(lambda: read_record(records, "cancelled-c1"), 10, what="the task's cancellation")
    server.wait_for_log("client went away; request cancelled", since=mark)


def test_listening_app_gets_http_disconnect(raw_site, records):
    _abandon(raw_site[1].port, "/wait-disconnect?tag=d1", records, "d1")
    wait_until(lambda: read_record(records, "disconnect-d1") == "http.disconnect\n", 10,
               what="http.disconnect")


# -- harakiri ---------------------------------------------------------------------------

def test_harakiri_cancels_the_stuck_task_not_the_worker(uwsgigw_factory, nginx_factory,
                                                        tmp_path):
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--harakiri", "1",
                             env={"ASGI_APPS_RECORD_DIR": str(tmp_path)})
    nginx = nginx_factory(server.socket)
    pid_line = server.wait_for_log("spawned worker 1")
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(http_request, nginx.port, "GET", "/stuck?s=30&tag=h1")
        fine = pool.submit(http_request, nginx.port, "GET", "/sleep?s=0.2")
        assert fine.result().status == 200  # the loop kept serving
        r = stuck.result()
    assert r.status == 504 and time.monotonic() - start < 5
    text = server.wait_for_log("HARAKIRI ON WORKER 1", "cancelling the request")
    assert "GET /stuck?s=30&tag=h1" in text and "in raw" in text  # the task's stack
    assert read_record(tmp_path, "cancelled-h1") == "cancelled\n"
    assert "killed" not in server.log_text() and pid_line
    assert get((server, nginx), "/").status == 200


def test_harakiri_kills_a_worker_whose_loop_is_blocked(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--harakiri", "1")
    nginx = nginx_factory(server.socket)
    mark = server.log_mark()
    r = http_request(nginx.port, "GET", "/block?s=30", timeout=20)
    assert r.status == 502
    text = server.wait_for_log("HARAKIRI ON WORKER 1", "killed by signal 9", since=mark)
    assert "GET /block?s=30" in text
    assert "time.sleep" in text or "asgi_apps.py" in text  # faulthandler's dump
    # A fresh worker takes over.
    wait_until(lambda: get((server, nginx), "/").status == 200, 15, what="respawn")


# -- lifespan ----------------------------------------------------------------------------

@pytest.mark.parametrize("app,needle", [
    ("failing_lifespan", "database unreachable at startup"),
    ("refusing_lifespan", "config missing: API_KEY"),
])
@pytest.mark.parametrize("master", [True, False])
def test_lifespan_startup_failure_stops_start_up(uwsgigw_factory, app, needle, master):
    args = ["--module", "asgi_apps:" + app] + (["--master"] if master else [])
    server = uwsgigw_factory(*args, wait=False)
    assert server.proc.wait(timeout=20) == exitcodes.APP_LOAD_ERROR
    text = server.log_text()
    assert "lifespan startup failed" in text and needle in text
    if app == "failing_lifespan":
        assert "Traceback" in text
    assert text.count("spawned worker") <= 1  # no respawn loop


# -- graceful stop -----------------------------------------------------------------------

def test_graceful_stop_waits_for_requests_in_flight(uwsgigw_factory, nginx_factory,
                                                    tmp_path):
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--master",
                             env={"ASGI_APPS_RECORD_DIR": str(tmp_path)})
    nginx = nginx_factory(server.socket)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(http_request, nginx.port, "GET", "/sleep?s=1&tag=g1")
        wait_until(lambda: read_record(tmp_path, "started-g1"), 10, what="request start")
        os.kill(server.pid, signal.SIGTERM)
        r = fut.result()
    assert r.status == 200 and r.body == b"slept"
    assert server.proc.wait(timeout=10) == 0


# -- WSGI on the async worker -------------------------------------------------------------

def test_wsgi_app_mounted_next_to_asgi(raw_site):
    r = http_request(raw_site[1].port, "POST", "/wsgi/hello", body=b"abc")
    assert r.status == 200
    assert r.body == b"wsgi hello /wsgi /hello multithread=True body=3"
    assert get(raw_site, "/plain").body == b"raw asgi: /plain"


def test_wsgi_requests_use_the_thread_pool(raw_site):
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: get(raw_site, "/wsgi/sleep"), range(4)))
    assert all(r.status == 200 for r in results)
    assert time.monotonic() - start < 1.0  # 4 threads: 0.3 s, not 1.2 s


def test_asgi_flag_runs_a_wsgi_app_on_the_async_worker(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", "asgi_apps:wsgi_hello", "--asgi", "--master")
    nginx = nginx_factory(server.socket)
    r = http_request(nginx.port, "GET", "/x")
    assert r.status == 200 and r.body.startswith(b"wsgi hello")
    assert "event loop" in server.log_text()


def test_max_requests_recycles_the_async_worker(uwsgigw_factory, nginx_factory):
    server = uwsgigw_factory("--module", "asgi_apps:raw", "--max-requests", "3")
    nginx = nginx_factory(server.socket)
    for _ in range(3):
        assert http_request(nginx.port, "GET", "/").status == 200
    server.wait_for_log("recycling: max-requests 3 reached", "spawned worker 1 (pid")
    wait_until(lambda: server.log_text().count("spawned worker 1") == 2, 10,
               what="the replacement worker")
    assert http_request(nginx.port, "GET", "/").status == 200


def test_stdlib_asyncio_loop_without_uvloop(uwsgigw_factory, nginx_factory, tmp_path):
    """uvloop is optional: hide it and the worker runs on asyncio's own loop."""
    from conftest import APPS_DIR
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "uvloop.py").write_text("raise ImportError('hidden by the test')\n")
    records = tmp_path / "records"
    records.mkdir()
    server = uwsgigw_factory("--module", "asgi_apps:raw", env={
        "PYTHONPATH": os.pathsep.join([str(shim), str(APPS_DIR)]),
        "ASGI_APPS_RECORD_DIR": str(records)})
    nginx = nginx_factory(server.socket)
    server.wait_for_log("asyncio event loop")
    start = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: http_request(nginx.port, "GET", "/sleep?s=0.5"),
                                range(20)))
    assert [r.status for r in results] == [200] * 20
    assert time.monotonic() - start < 3.0
    data = os.urandom(200_000)
    r = http_request(nginx.port, "POST", "/echo", body=data)
    assert r.status == 200 and r.body == data
    _abandon(nginx.port, "/cancel-me?tag=s1", records, "s1")
    wait_until(lambda: read_record(records, "cancelled-s1"), 10, what="cancellation")
