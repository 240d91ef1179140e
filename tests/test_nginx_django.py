"""The Django project mysite1 behind real nginx (nginx/site.conf) and uwsgigw,
under Django's WSGI handler and its ASGI handler (``get_asgi_application``:
every GET of it hung before the ASGI worker sent the empty request body)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from conftest import http_request, multipart
from framed_client import fetch
from conftest import site_get as get, site_post as post


@pytest.fixture(scope="module", params=["wsgi-unix", "wsgi-tcp", "asgi-unix", "asgi-tcp",
                                        "wsgi-http", "asgi-http"])
def site(request, module_factories, tmp_path_factory):
    """uwsgi_pass over a unix or TCP socket (nginx/site.conf), or proxy_pass to
    an http-socket with upstream keep-alive (nginx/site-http.conf)."""
    uploads = tmp_path_factory.mktemp("django-uploads")
    handler, transport = request.param.split("-")
    server = module_factories.uwsgigw(
        "--module", "mysite1.%s:application" % handler, "--processes", "2", "--master",
        "--post-buffering", "65536", tcp=transport == "tcp", http=transport == "http",
        env={"MYSITE1_UPLOAD_DIR": str(uploads)})
    nginx = module_factories.nginx(server.socket, site="site-http.conf"
                                   if transport == "http" else "site.conf")
    return server, nginx



def test_get_index(site):
    r = get(site, "/")
    assert r.status == 200 and r.body == b"Hello from Django on uwsgigw"


def test_query_string(site):
    r = get(site, "/query/?a=1&a=2&b=%E2%98%83")
    assert json.loads(r.body) == {"a": ["1", "2"], "b": ["\u2603"]}


def test_form_post(site):
    r = post(site, "/form/", b"name=mysite1&tags=a&tags=b", "application/x-www-form-urlencoded")
    assert r.status == 200
    assert json.loads(r.body) == {"name": ["mysite1"], "tags": ["a", "b"]}


def test_json(site):
    assert json.loads(get(site, "/json/").body)["unicode"] == "h\u00e9llo \u2603"
    payload = [1, "two", {"three": 3.0}]
    r = post(site, "/json/", json.dumps(payload).encode(), "application/json")
    assert json.loads(r.body) == {"received": payload, "type": "list"}


def test_20mb_multipart_upload(site):
    data = os.urandom(20 * 1024 * 1024)
    body, ctype = multipart({"note": "django"}, {"file": ("up.bin", data,
                                                          "application/octet-stream")})
    r = post(site, "/upload/", body, ctype, timeout=120)
    assert r.status == 200, r.body[:500]
    assert json.loads(r.body) == {"filename": "up.bin", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest(),
                                  "note": "django"}


def test_cookies(site):
    r = get(site, "/set-cookie/")
    cookies = r.header_list("Set-Cookie")
    assert len(cookies) == 2
    assert any(c.startswith("flavour=chocolate") for c in cookies)
    assert any(c.startswith("session=abc123") and "HttpOnly" in c for c in cookies)
    r = get(site, "/cookies/", headers={"Cookie": "flavour=vanilla; session=xyz"})
    assert json.loads(r.body) == {"flavour": "vanilla", "session": "xyz"}


def test_redirect(site):
    r = get(site, "/redirect/")
    assert r.status == 302 and r.header("Location") == "/landing/"
    assert get(site, "/landing/").body == b"landed"


def test_append_slash_redirect(site):
    r = get(site, "/landing")
    assert r.status == 301 and r.header("Location") == "/landing/"


def test_404(site):
    assert get(site, "/missing/").status == 404
    assert get(site, "/nope/").status == 404


def test_500_logs_traceback(site):
    server, _ = site
    mark = server.log_mark()
    r = get(site, "/error/")
    assert r.status == 500
    assert b"django test error" not in r.body
    server.wait_for_log("Traceback", "django test error (expected)", since=mark)


def test_head(site):
    get_ = get(site, "/")
    r = http_request(site[1].port, "HEAD", "/")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Length") == get_.header("Content-Length") == str(len(get_.body))


def test_streaming_response(site):
    resp = fetch(site[1].port, "/stream/?n=50")
    assert resp.status == 200 and resp.complete, resp.raw[:300]
    assert resp.header("transfer-encoding") == "chunked"  # no length: nginx chunks it
    assert resp.body == b"".join(b"part %d\n" % i for i in range(50))


def test_environ(site):
    env = json.loads(get(site, "/environ/").body)
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/environ/"
    assert env["SERVER_PORT"] == str(site[1].port)
    assert env["scheme"] == env.get("wsgi.url_scheme", "http") == "http"
