"""A Flask app behind real nginx (nginx/site.conf) and uwsgigw, over unix and TCP."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

import flask_app
from conftest import http_request, multipart
from conftest import site_get as get, site_post as post


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


TRANSPORTS = ["unix", "tcp", pytest.param("tcp6", marks=pytest.mark.skipif(
    not ipv6_available(), reason="no IPv6 loopback"))]


@pytest.fixture(scope="module", params=TRANSPORTS)
def site(request, module_factories):
    if request.param == "tcp6":
        from uwsgigw.devnginx import free_port
        server = module_factories.uwsgigw("--module", "flask_app:app", "--processes", "2",
                                          "--master", socket="[::1]:%d" % free_port("::1"))
    else:
        server = module_factories.uwsgigw("--module", "flask_app:app", "--processes", "2",
                                          "--master", tcp=request.param == "tcp")
    nginx = module_factories.nginx(server.socket)
    return server, nginx




def test_get_index(site):
    r = get(site, "/")
    assert r.status == 200
    assert r.body == b"Hello from Flask on uwsgigw"
    assert r.header("Content-Type").startswith("text/html")


def test_request_log_line(site):
    server, _ = site
    mark = server.log_mark()
    assert get(site, "/?logline=1").status == 200
    text = server.wait_for_log("GET /?logline=1 =>", since=mark)
    line = [l for l in text.splitlines() if "GET /?logline=1 =>" in l][0]
    assert line.startswith("[pid: ")
    assert "|app: 0|req: " in line and "] 127.0.0.1 () {" in line
    assert "vars in" in line and "bytes} [" in line
    assert "(HTTP/1.1 200)" in line and "headers in" in line and "switches on core" in line


def test_query_string(site):
    r = get(site, "/query?a=1&b=two&a=3&u=%C3%A9t%C3%A9&empty=")
    assert r.status == 200
    assert json.loads(r.body) == {"a": ["1", "3"], "b": ["two"], "u": ["\u00e9t\u00e9"],
                                  "empty": [""]}


def test_form_post(site):
    r = post(site, "/form", b"name=uwsgi+gw&lang=py&lang=c&note=caf%C3%A9",
             "application/x-www-form-urlencoded")
    assert r.status == 200
    assert json.loads(r.body) == {"name": ["uwsgi gw"], "lang": ["py", "c"],
                                  "note": ["caf\u00e9"]}


def test_json_get_and_post(site):
    r = get(site, "/json")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"hello": "world", "n": 42, "unicode": "h\u00e9llo \u2603"}
    payload = {"items": list(range(1000)), "nested": {"k": "v\u2603"}}
    r = post(site, "/json", json.dumps(payload).encode(), "application/json")
    assert r.status == 200
    assert json.loads(r.body) == {"received": payload, "type": "dict"}


def test_20mb_multipart_upload(site):
    data = os.urandom(20 * 1024 * 1024)
    body, ctype = multipart({"note": "twenty"}, {"file": ("big.bin", data,
                                                          "application/octet-stream")})
    r = post(site, "/upload", body, ctype, timeout=120)
    assert r.status == 200, r.body[:500]
    assert json.loads(r.body) == {"filename": "big.bin", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest(),
                                  "note": "twenty"}


def test_cookies(site):
    r = get(site, "/set-cookie")
    assert r.status == 200
    cookies = r.header_list("Set-Cookie")
    assert len(cookies) == 2
    assert any(c.startswith("flavour=chocolate") for c in cookies)
    assert any(c.startswith("session=abc123") and "HttpOnly" in c for c in cookies)
    r = get(site, "/cookies", headers={"Cookie": "flavour=chocolate; session=abc123"})
    assert json.loads(r.body) == {"flavour": "chocolate", "session": "abc123"}


def test_redirect(site):
    r = get(site, "/redirect")
    assert r.status == 302
    assert r.header("Location") in ("/landing", "http://127.0.0.1:%d/landing" % site[1].port)
    assert get(site, "/landing").body == b"landed"


def test_404(site):
    assert get(site, "/missing").status == 404
    assert get(site, "/no/such/route").status == 404


def test_500_logs_traceback(site):
    server, _ = site
    mark = server.log_mark()
    r = get(site, "/error")
    assert r.status == 500
    assert b"flask test error" not in r.body  # no details to the client
    server.wait_for_log("Traceback", "RuntimeError: flask test error (expected)", since=mark)


def test_10mb_response_byte_exact(site):
    r = get(site, "/big", timeout=120)
    assert r.status == 200 and r.error is None
    assert int(r.header("Content-Length")) == flask_app.BIG_SIZE
    assert r.body == flask_app.big_body()


def test_head(site):
    r = http_request(site[1].port, "HEAD", "/")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Length") == str(len(b"Hello from Flask on uwsgigw"))


def test_environ(site):
    env = json.loads(get(site, "/environ?k=v").body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "k=v"
    assert env["REQUEST_URI"] == "/environ?k=v"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_PORT"] == str(site[1].port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.input_terminated"] is True
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env


def test_concurrent_requests(site):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: get(site, "/query?i=%d" % i), range(40)))
    assert [json.loads(r.body) for r in results] == [{"i": [str(i)]} for i in range(40)]
