"""FastAPI and Starlette on the async worker, behind the real nginx (nginx/site.conf).

JSON in and out, streaming responses, multipart uploads, background tasks
that run after the response, lifespan state, and the ASGI scope as the
frameworks see it (root_path via mount + manage-script-name).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from conftest import read_record, http_request, multipart, wait_until

pytest.importorskip("fastapi")
pytest.importorskip("starlette")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return str(tmp_path_factory.mktemp("asgi-records"))


@pytest.fixture(scope="module")
def fastapi_site(module_factories, records):
    server = module_factories.uwsgigw("--module", "asgi_apps:fastapi_app", "--master",
                                      "--processes", "2",
                                      env={"ASGI_APPS_RECORD_DIR": records})
    return server, module_factories.nginx(server.socket)


@pytest.fixture(scope="module")
def starlette_site(module_factories, records):
    # Mounted under /st to check root_path; nginx passes the full path.
    server = module_factories.uwsgigw("--mount", "/st=asgi_apps:starlette_app",
                                      "--manage-script-name", "--master",
                                      env={"ASGI_APPS_RECORD_DIR": records}, tcp=True)
    return server, module_factories.nginx(server.socket)



# -- FastAPI -------------------------------------------------------------------------

def test_fastapi_json_get(fastapi_site):
    _, nginx = fastapi_site
    r = http_request(nginx.port, "GET", "/items/42?q=caf%C3%A9")
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"item_id": 42, "q": "caf\u00e9"}


def test_fastapi_lifespan_state_and_client(fastapi_site, records):
    server, nginx = fastapi_site
    r = http_request(nginx.port, "GET", "/")
    assert r.status == 200
    assert json.loads(r.body) == {"app": "fastapi", "items": 3, "client": "127.0.0.1"}
    # One startup per worker process (the loop lives in the worker).
    assert read_record(records, "lifespan-fastapi").count("startup") == 2


def test_fastapi_json_post_and_validation(fastapi_site):
    _, nginx = fastapi_site
    body = json.dumps({"name": "widget", "price": 10, "tags": ["a", "b"]}).encode()
    r = http_request(nginx.port, "POST", "/items", body=body,
                     headers={"Content-Type": "application/json"})
    assert r.status == 200
    assert json.loads(r.body) == {"name": "widget", "price_with_tax": 12.0,
                                  "tags": ["a", "b"]}
    r = http_request(nginx.port, "POST", "/items", body=b'{"name": 1}',
                     headers={"Content-Type": "application/json"})
    assert r.status == 422
    assert json.loads(r.body)["detail"]


def test_fastapi_sync_endpoint(fastapi_site):
    r = http_request(fastapi_site[1].port, "GET", "/sync")
    assert r.status == 200 and json.loads(r.body) == {"sync": True}


def test_fastapi_streaming(fastapi_site):
    r = http_request(fastapi_site[1].port, "GET", "/stream?n=50")
    assert r.status == 200 and r.error is None
    assert r.header("Content-Type") == "application/x-ndjson"
    lines = r.body.decode().splitlines()
    assert [json.loads(line)["i"] for line in lines] == list(range(50))


def test_fastapi_upload(fastapi_site):
    data = os.urandom(3 * 1024 * 1024 + 7)
    body, ctype = multipart({"name": "blob"}, {"file": ("blob.bin", data,
                                                         "application/octet-stream")})
    r = http_request(fastapi_site[1].port, "POST", "/upload", body=body,
                     headers={"Content-Type": ctype})
    assert r.status == 200, r.body[:500]
    assert json.loads(r.body) == {"name": "blob", "filename": "blob.bin", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}


def test_fastapi_background_task_runs_after_response(fastapi_site, records):
    r = http_request(fastapi_site[1].port, "GET", "/background?tag=fa1")
    assert r.status == 200 and json.loads(r.body) == {"queued": "fa1"}
    # The response came back before the task (which sleeps 0.3 s) finished.
    assert read_record(records, "bg-fa1") == ""
    wait_until(lambda: read_record(records, "bg-fa1") == "ran\n", 5, what="background task")


def test_fastapi_404_and_head(fastapi_site):
    r = http_request(fastapi_site[1].port, "GET", "/nope")
    assert r.status == 404
    r = http_request(fastapi_site[1].port, "HEAD", "/items/1")
    assert r.status in (200, 405) and r.body == b""


# -- Starlette ---------------------------------------------------------------------

def test_starlette_root_path_and_lifespan_state(starlette_site):
    r = http_request(starlette_site[1].port, "GET", "/st/?x=1&y=%20z")
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"app": "starlette", "greeting": "hello from lifespan",
                                  "path": "/st/", "root_path": "/st",
                                  "query": {"x": "1", "y": " z"}}


def test_starlette_streaming(starlette_site):
    r = http_request(starlette_site[1].port, "GET", "/st/stream?n=100")
    assert r.status == 200 and r.error is None
    assert r.body == b"".join(b"line %d\n" % i for i in range(100))


def test_starlette_upload(starlette_site):
    data = os.urandom(200_000)
    body, ctype = multipart({"name": "n1"}, {"file": ("f.bin", data, "application/x-raw")})
    r = http_request(starlette_site[1].port, "POST", "/st/upload", body=body,
                     headers={"Content-Type": ctype})
    assert r.status == 200, r.body[:500]
    assert json.loads(r.body) == {"name": "n1", "filename": "f.bin", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}


def test_starlette_background_task(starlette_site, records):
    r = http_request(starlette_site[1].port, "GET", "/st/background?tag=st1")
    assert r.status == 200 and r.body == b"queued"
    wait_until(lambda: read_record(records, "bg-st1") == "ran\n", 5, what="background task")


def test_starlette_request_log_line(starlette_site):
    server, nginx = starlette_site
    mark = server.log_mark()
    assert http_request(nginx.port, "GET", "/st/?logline=1").status == 200
    text = server.wait_for_log("GET /st/?logline=1 =>", since=mark)
    line = [l for l in text.splitlines() if "GET /st/?logline=1 =>" in l][0]
    assert line.startswith("[pid: ") and "(HTTP/1.1 200)" in line


def test_lifespan_shutdown_on_graceful_stop(uwsgigw_factory, tmp_path):
    records = str(tmp_path)
    server = uwsgigw_factory("--module", "asgi_apps:starlette_app", "--master",
                             env={"ASGI_APPS_RECORD_DIR": records})
    assert "startup" in read_record(records, "lifespan-starlette")
    server.stop()  # SIGTERM: graceful
    assert server.proc.returncode == 0
    assert "shutdown" in read_record(records, "lifespan-starlette")
