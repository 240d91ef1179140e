"""``uwsgi_curl`` (PyPI uwsgi-tools) talks to the uwsgi socket directly, no nginx.

It sends a minimal var set (no CONTENT_LENGTH, no REMOTE_ADDR, no
SERVER_PORT on unix sockets), so this also checks the server's defaults for
clients that are not nginx.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def uwsgi_curl_cmd() -> list[str]:
    # Prefer the console script next to this interpreter (the venv's).
    local = os.path.join(os.path.dirname(sys.executable), "uwsgi_curl")
    if os.access(local, os.X_OK):
        return [local]
    found = shutil.which("uwsgi_curl")
    if found:
        return [found]
    pytest.fail("uwsgi_curl not installed: pip install uwsgi-tools (a declared test extra)")


def uwsgi_curl(*args: str) -> subprocess.CompletedProcess:
    """Run uwsgi_curl; options must come before ADDRESS and URL (argparse)."""
    return subprocess.run([*uwsgi_curl_cmd(), "-t", "20", *args], capture_output=True,
                          timeout=60)


def split(stdout: bytes) -> tuple[str, bytes]:
    head, _, body = stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body.rstrip(b"\n")  # uwsgi_curl print()s it


@pytest.fixture(scope="module", params=["unix", "tcp"])
def server(request, module_factories):
    return module_factories.uwsgigw("--module", "plain_apps", tcp=request.param == "tcp")


@pytest.fixture(scope="module")
def flask_server(module_factories):
    return module_factories.uwsgigw("--module", "flask_app:app", tcp=True)


def test_help_lists_the_cli_we_use():
    out = subprocess.run([*uwsgi_curl_cmd(), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("uwsgi_addr", "-X", "-H", "-d", "-t"):
        assert flag in out.stdout


def test_get_page(server):
    out = uwsgi_curl(server.socket, "/bytes")
    assert out.returncode == 0, out
    head, body = split(out.stdout)
    assert head.startswith("HTTP/1.1 200 OK")
    assert body == b"a bare bytes body"


def test_environ_defaults_for_a_minimal_client(server):
    # uwsgi_curl upper-cases header names but keeps dashes: use a name without.
    out = uwsgi_curl("-H", "Xtest: yes", server.socket, "http://example.org/environ?x=1")
    assert out.returncode == 0, out
    env = json.loads(split(out.stdout)[1])
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_HOST"] == "example.org"
    assert env["HTTP_XTEST"] == "yes"
    assert env["SCRIPT_NAME"] == ""
    # PEP 3333 requires these; uwsgi_curl does not always send them.
    assert env["SERVER_NAME"] and env["SERVER_PORT"]
    assert env["wsgi.url_scheme"] == "http"


def test_404_exit_status(server):
    out = uwsgi_curl(server.socket, "/nope")
    assert out.returncode == 1  # uwsgi_curl exits non-zero for non-2xx
    assert split(out.stdout)[0].startswith("HTTP/1.1 404")


def test_post_without_content_length(server):
    # uwsgi_curl sends -d bytes without CONTENT_LENGTH: there is no body then.
    out = uwsgi_curl("-X", "POST", "-d", "ignored", server.socket, "/echo?mode=read")
    assert out.returncode == 0, out
    assert split(out.stdout)[1] == b""


def test_flask_page(flask_server):
    out = uwsgi_curl(flask_server.socket, "/")
    assert out.returncode == 0, out
    head, body = split(out.stdout)
    assert head.startswith("HTTP/1.1 200")
    assert body == b"Hello from Flask on uwsgigw"
