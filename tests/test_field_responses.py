"""Issue 12, sections 3, 4 and 6: what the client sees at the end of a response.

Through the real nginx (``nginx/site.conf``, ``uwsgi_buffering`` on and off),
over unix and TCP sockets, for the WSGI C path, the WSGI Python path and the
ASGI worker (tests/apps/field_apps.py):

* a response cut short (an exception after the head, ``exc_info`` too late, a
  killed worker, harakiri, ``reload-mercy`` running out) must look cut short
  to the client: no terminating chunk. Before the held tail (uwsgigw/cycle/ending.py)
  a unix socket delivered every one of these as a complete ``200``;
* a child process that inherited the connection must not hold the response:
  the connection ends when the response ends;
* 204 and 304 go out without a body and without Content-Length or
  Transfer-Encoding; an app's final 1xx is a 500 with a log line naming it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import wait_until
from test_master_support import in_thread
from framed_client import fetch

FIRST = b"first chunk\n"
KINDS = {
    "wsgi-c": ("--module", "field_apps:wsgi", "--decoder", "c"),
    "wsgi-python": ("--module", "field_apps:wsgi", "--decoder", "python"),
    "asgi": ("--module", "field_apps:asgi"),
}
TRANSPORTS = ["unix", "tcp"]
BUFFERING = {"buffered": "", "unbuffered": "uwsgi_buffering off;"}


def _pids(records, prefix: str) -> list[int]:
    pids = []
    for name in os.listdir(records):
        if name.startswith(prefix):
            with open(os.path.join(records, name)) as f:
                pids += [int(line) for line in f.read().split()]
    return pids


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("field-records")
    yield str(path)
    for pid in _pids(str(path), "child-"):  # children the apps left behind
        _kill_quietly(pid)


_SERVERS: dict = {}


@pytest.fixture(scope="module")
def site(module_factories, records):
    """site(kind, transport, buffering) -> (server, nginx), started once each."""
    def get(kind: str, transport: str, buffering: str = "buffered"):
        key = (kind, transport)
        if key not in _SERVERS:
            _SERVERS[key] = module_factories.uwsgigw(
                *KINDS[kind], "--master", "--processes", "2", "--socket-timeout", "5",
                tcp=transport == "tcp", env={"FIELD_APPS_RECORD_DIR": records})
        server = _SERVERS[key]
        nkey = key + (buffering,)
        if nkey not in _SERVERS:
            _SERVERS[nkey] = module_factories.nginx(server.socket,
                                                   upstream_extra=BUFFERING[buffering])
        return server, _SERVERS[nkey]
    yield get
    _SERVERS.clear()


def _assert_cut(resp, nginx) -> None:
    """What the client sees of a response cut short: the head, what nginx
    relayed of the first chunk (all of it, or none when nginx buffers and the
    reset comes with it), then a connection that ends without the terminating
    chunk."""
    assert resp.status == 200, resp.raw[:300]
    assert FIRST.startswith(resp.body), resp.raw[:300]
    assert not resp.complete, "a cut response reached the client as complete: %r" % resp.raw
    wait_until(lambda: "reset by peer" in nginx.error_log(), 5,
               what="nginx's 'reset by peer' for the upstream")


# -- section 3: a response cut short must look cut short -------------------------------

@pytest.mark.parametrize("buffering", list(BUFFERING))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_complete_stream_is_complete(site, kind, transport, buffering):
    """The control: the same client says "complete" for a whole stream."""
    _, nginx = site(kind, transport, buffering)
    resp = fetch(nginx.port, "/stream-ok")
    assert resp.status == 200 and resp.complete and resp.ended == "eof", resp.raw
    assert resp.body == FIRST + b"second chunk\nlast chunk\n"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("buffering", list(BUFFERING))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_exception_after_the_head_cuts_the_response(site, kind, transport, buffering,
                                                       method):
    """A WSGI generator raising after one chunk, an ASGI app raising after
    ``more_body=True``. POST sends 300 KB the app reads whole first (the held
    tail is then the body's last byte, not the packet)."""
    server, nginx = site(kind, transport, buffering)
    mark = server.log_mark()
    body = os.urandom(300 * 1024) if method == "POST" else None
    resp = fetch(nginx.port, "/stream-fail", method=method, body=body)
    _assert_cut(resp, nginx)
    server.wait_for_log("exception in the app for %s /stream-fail" % method,
                        "failed mid-stream (expected)", since=mark)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["wsgi-c", "wsgi-python"])
def test_exc_info_after_the_head_cuts_the_response(site, kind, transport):
    """PEP 3333: start_response(..., exc_info) after the head went out
    re-raises; the connection is aborted."""
    server, nginx = site(kind, transport)
    mark = server.log_mark()
    _assert_cut(fetch(nginx.port, "/exc-info-late"), nginx)
    server.wait_for_log("exception in the app for GET /exc-info-late",
                        "failed after the head (expected)", since=mark)


@pytest.mark.parametrize("buffering", list(BUFFERING))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_worker_killed_mid_stream_cuts_the_response(site, records, kind, transport,
                                                      buffering):
    server, nginx = site(kind, transport, buffering)
    tag = "kill-%s-%s-%s" % (kind, transport, buffering)
    request = in_thread(fetch, nginx.port, "/stream-stall?s=30&tag=" + tag)
    pid = int(wait_until(lambda: _pids(records, "stalled-" + tag), 10,
                         what="the app to stall")[0])
    os.kill(pid, signal.SIGKILL)
    _assert_cut(request.result(), nginx)
    server.wait_for_log("pid %d" % pid, timeout=10)  # the master saw it die


@pytest.fixture
def harakiri_site(factories, tmp_path):
    def start(kind: str, transport: str, buffering: str):
        server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                                   "--harakiri", "1", tcp=transport == "tcp",
                                   env={"FIELD_APPS_RECORD_DIR": str(tmp_path)})
        return server, factories.nginx(server.socket, upstream_extra=BUFFERING[buffering])
    return start


@pytest.mark.parametrize("buffering", list(BUFFERING))
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["wsgi-c", "asgi"])
def test_harakiri_mid_stream_cuts_the_response(harakiri_site, kind, transport, buffering):
    """WSGI: the master kills the worker. ASGI: the loop cancels the task
    (its head went out, so no 504 can be sent); ``/stream-block`` blocks the
    loop instead, and the master kills the worker as for WSGI."""
    server, nginx = harakiri_site(kind, transport, buffering)
    for path in (["/stream-stall", "/stream-block"] if kind == "asgi" else ["/stream-stall"]):
        mark = server.log_mark()
        _assert_cut(fetch(nginx.port, path + "?s=30&tag=h"), nginx)
        server.wait_for_log("HARAKIRI", path, since=mark, timeout=10)


@pytest.mark.parametrize("stop", ["TERM (reload-mercy)", "HUP (worker-reload-mercy)"])
@pytest.mark.parametrize("kind", ["wsgi-c", "asgi"])
def test_mercy_running_out_cuts_the_response(factories, tmp_path, kind, stop):
    """A stop or reload waits for the request in flight only so long; then
    the master kills the worker, and the client must see the cut."""
    records = str(tmp_path)
    server = factories.uwsgigw(*KINDS[kind], "--master", "--processes", "1",
                               "--reload-mercy", "1", "--worker-reload-mercy", "1",
                               env={"FIELD_APPS_RECORD_DIR": records})
    nginx = factories.nginx(server.socket)
    path = "/stream-block" if kind == "asgi" else "/stream-stall"
    request = in_thread(fetch, nginx.port, path + "?s=30&tag=m")
    wait_until(lambda: _pids(records, "stalled-m"), 10, what="the app to stall")
    os.kill(server.pid, signal.SIGTERM if stop.startswith("TERM") else signal.SIGHUP)
    _assert_cut(request.result(), nginx)


# -- section 4: the connection ends when the response ends -----------------------------

@pytest.mark.parametrize("how", ["fork", "subprocess"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_child_holding_the_connection_does_not_hold_the_response(site, records, kind,
                                                                   transport, how):
    """The app starts a child that inherits the connection and lives 60 s;
    the answer has no Content-Length, so only the end of the connection ends
    it. The worker shuts the connection down (SHUT_WR), so nginx answers now."""
    server, nginx = site(kind, transport)
    tag = "%s-%s-%s" % (kind, transport, how)
    started = time.monotonic()
    resp = fetch(nginx.port, "/child?how=%s&tag=%s" % (how, tag), timeout=20)
    assert _pids(records, "child-" + tag), "the app did not start its child"
    assert resp.status == 200 and resp.complete and resp.ended == "eof", resp.raw
    assert resp.body == b"answered while a child holds the connection\n"
    # Not a timing test: the child lives 60 s, the bound is there to say
    # which of the two it waited for.
    assert time.monotonic() - started < 15


# -- section 6: HTTP rules for bodies ------------------------------------------------------

@pytest.mark.parametrize("te", ["", "1"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("code", [204, 304])
@pytest.mark.parametrize("kind", list(KINDS))
def test_204_and_304_have_no_body_and_no_framing(site, kind, code, method, te):
    server, nginx = site(kind, "unix")
    resp = fetch(nginx.port, "/status?code=%d&te=%s" % (code, te), method=method)
    assert resp.status == code, resp.raw
    assert resp.body == b"" and resp.ended == "eof", resp.raw
    assert resp.header("content-length") is None, resp.raw
    assert resp.header("transfer-encoding") is None, resp.raw
    assert resp.header("x-kept") == "yes"  # the other headers stay, also for HEAD


@pytest.mark.parametrize("kind", list(KINDS))
def test_head_keeps_the_headers_of_get(site, kind):
    _, nginx = site(kind, "unix")
    get = fetch(nginx.port, "/status?code=200")
    head = fetch(nginx.port, "/status?code=200", method="HEAD")
    assert get.status == head.status == 200
    assert get.body == b"should not be sent" and head.body == b""
    assert head.header("content-length") == get.header("content-length") == "18"
    assert head.header("x-kept") == "yes"


@pytest.mark.parametrize("code", [100, 103])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_final_1xx_is_a_500_naming_the_status(site, kind, code):
    server, nginx = site(kind, "unix")
    mark = server.log_mark()
    resp = fetch(nginx.port, "/status?code=%d" % code)
    assert resp.status == 500 and resp.complete, resp.raw
    text = server.wait_for_log("invalid response from the app for GET /status?code=%d"
                               % code, since=mark)
    assert "'%d " % code in text and "informational (1xx)" in text, text
