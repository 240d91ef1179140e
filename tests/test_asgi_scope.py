"""Unit tests for the ASGI pieces that are pure functions: the scope built from
the decoded vars, status/header conversion, ASGI app detection and the
worker kind it decides."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from conftest import nginx_vars
from uwsgigw.app import AppTable, is_asgi
from uwsgigw.asgi.messages import status_line, str_headers
from uwsgigw.asgi.scope import build_scope
from uwsgigw.config.settings import Config
from uwsgigw.protocol.environ import base_environ, build_environ
from uwsgigw.wsgi.handler import WorkerContext
from uwsgigw.observe.record import SharedCounter
from uwsgigw.cycle.response import ResponseError, build_head
from uwsgigw.process.workerbase import worker_class


def _scope(vars: dict, modifier1: int = 0, state=None) -> dict:
    base = base_environ(errors=None, file_wrapper=None, multithread=False,
                        multiprocess=False)
    items = [x for kv in vars.items() for x in kv]
    env, _ = build_environ(base, items, modifier1)
    return build_scope(env, state)


def test_basic_scope():
    scope = _scope(nginx_vars("POST", "/a%20b/c?x=1&y=%C3%A9", body=b"12345",
                              content_type="text/plain", PATH_INFO="/a b/c",
                              HTTP_X_FORWARDED_FOR="10.0.0.1", HTTP_COOKIE="k=v"))
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/c"
    assert scope["raw_path"] == b"/a%20b/c"
    assert scope["query_string"] == b"x=1&y=%C3%A9"
    assert scope["root_path"] == ""
    assert scope["client"] == ("127.0.0.1", 40000)
    assert scope["server"] == ("localhost", 80)
    headers = scope["headers"]
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in headers)
    assert (b"x-forwarded-for", b"10.0.0.1") in headers
    assert (b"cookie", b"k=v") in headers
    assert (b"host", b"localhost") in headers
    assert (b"content-type", b"text/plain") in headers
    assert (b"content-length", b"5") in headers
    assert "state" not in scope


def test_utf8_path_from_latin1_cgi_string():
    # nginx sends PATH_INFO decoded as raw bytes; the environ holds them as latin-1.
    raw = "/caf\u00e9".encode("utf-8").decode("latin-1")
    scope = _scope(nginx_vars("GET", "/caf%C3%A9", PATH_INFO=raw))
    assert scope["path"] == "/caf\u00e9"
    assert scope["raw_path"] == b"/caf%C3%A9"


def test_https_and_http_versions():
    scope = _scope(nginx_vars(HTTPS="on", SERVER_PROTOCOL="HTTP/2.0", SERVER_PORT="443"))
    assert scope["scheme"] == "https"
    assert scope["http_version"] == "2"
    assert scope["server"] == ("localhost", 443)
    assert _scope(nginx_vars(SERVER_PROTOCOL="HTTP/1.0"))["http_version"] == "1.0"


def test_root_path_with_modifier1_30():
    scope = _scope(nginx_vars("GET", "/app/x/y", SCRIPT_NAME="/app", PATH_INFO="/app/x/y"),
                   modifier1=30)
    assert scope["root_path"] == "/app"
    assert scope["path"] == "/app/x/y"  # ASGI: path includes root_path


def test_uwsgi_magic_vars_and_client_headers_dropped():
    scope = _scope(nginx_vars(UWSGI_FILE="/tmp/evil.py", HTTP_CONTENT_LENGTH="99"))
    names = [k for k, _ in scope["headers"]]
    assert b"content-length" not in names  # no body: CONTENT_LENGTH is ""
    assert not any(b"uwsgi" in n for n in names)


def test_missing_vars_from_a_bare_client():
    scope = _scope({"REQUEST_METHOD": "GET", "PATH_INFO": "/p"})
    assert scope["client"] is None
    assert scope["path"] == "/p" and scope["raw_path"] == b"/p"
    assert scope["query_string"] == b""


def test_state_is_copied_per_request():
    state = {"db": object()}
    scope = _scope(nginx_vars(), state=state)
    assert scope["state"] == state and scope["state"] is not state


def test_status_line():
    assert status_line(200) == "200 OK"
    assert status_line(418) == "418 I'm a Teapot" or status_line(418).startswith("418 ")
    assert status_line(299) == "299 Unknown"
    with pytest.raises(ResponseError):
        status_line("200 OK")


@pytest.mark.parametrize("headers,needle", [
    ([(b"x-a", b"1\r\nx-b: 2")], "CR, LF or NUL"),
    ([(b"x-a", b"1\0")], "CR, LF or NUL"),
    ([(b"bad name", b"1")], "not an HTTP token"),
])
def test_invalid_headers_name_the_culprit(headers, needle):
    with pytest.raises(ResponseError, match=needle):
        build_head(status_line(200), str_headers(headers))


@pytest.mark.parametrize("headers", [[("x-a", "1")], [(b"x-a",)], [b"x-a: 1"], 5])
def test_non_bytes_headers_refused(headers):
    with pytest.raises(ResponseError):
        str_headers(headers)


def test_is_asgi():
    async def app(scope, receive, send):
        pass

    def wsgi(environ, start_response):
        pass

    class AsgiClass:
        async def __call__(self, scope, receive, send):
            pass

    class WsgiClass:
        def __call__(self, environ, start_response):
            pass

    def three(scope, receive, send):  # returns a coroutine (a wrapper)
        return app(scope, receive, send)

    assert is_asgi(app) and is_asgi(AsgiClass()) and is_asgi(three)
    assert is_asgi(functools.partial(app))
    assert not is_asgi(wsgi) and not is_asgi(WsgiClass())


def test_frameworks_detected():
    pytest.importorskip("fastapi")
    import asgi_apps
    import flask_app
    assert is_asgi(asgi_apps.fastapi_app) and is_asgi(asgi_apps.starlette_app)
    assert not is_asgi(flask_app.app)


def _context(default, mounts=(), **values):
    cfg = Config.defaults(harakiri=3, async_concurrency=50, threads=2, **values)
    backend = SimpleNamespace(decode=None, fastpath=None)
    return WorkerContext.from_config(cfg, backend, AppTable(default, list(mounts), False),
                                     SharedCounter())


def test_worker_kind_is_decided_by_the_config_and_the_apps():
    def wsgi(environ, start_response):
        pass

    async def asgi(scope, receive, send):
        pass

    ctx = _context(wsgi)
    assert ctx.kind == "sync" and worker_class(ctx.kind).__name__ == "Worker"
    assert ctx.kinds == {id(wsgi): "wsgi"} and ctx.apps == []
    ctx = _context(wsgi, [("/a", asgi)])  # an ASGI app anywhere: the async worker
    assert ctx.kind == "asgi" and worker_class(ctx.kind).__name__ == "AsyncWorker"
    assert ctx.kinds == {id(wsgi): "wsgi", id(asgi): "asgi"}
    assert ctx.harakiri == 3 and ctx.concurrency == 50 and ctx.threads == 2
    assert ctx.apps == [("the app mounted at /a", asgi)]  # lifespan runs for ASGI apps only
    ctx = _context(wsgi, asgi=True)  # asgi = true: WSGI apps in the async worker's pool
    assert ctx.kind == "asgi" and ctx.kinds == {id(wsgi): "wsgi"} and ctx.apps == []
    assert _context(None).kind == "sync"  # need-app off and nothing loaded


def test_context_from_config():
    ctx = _context(None, buffer_size=8192, socket_timeout=2.5, post_buffering=4096,
                   limit_post=100, processes=2, disable_logging=True)
    assert (ctx.max_block, ctx.socket_timeout, ctx.post_buffering, ctx.limit_post) == (
        8192, 2.5, 4096, 100)
    assert ctx.post_buffering_bufsize == 8192 and ctx.log_requests is False
    assert ctx.base_environ["wsgi.multiprocess"] is True
    assert ctx.base_environ["wsgi.multithread"] is True  # threads=2
    assert ctx.peers is None and ctx.count_request() == 1 and ctx.total_address
