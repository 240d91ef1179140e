"""Issue 15: ``static-map`` served on every driver, as a user sees it.

One table of drivers -- the uwsgi socket's C core, its Python decoder and
the ASGI worker; the HTTP listener's C path (app on the loop's thread, and
in pool threads), llhttp's driver and ASGI -- each a real server with the
same maps. Requests go straight to the socket (raw uwsgi packets carry any
PATH_INFO, unlike nginx) and assert status, headers and body bytes.
The resolver's rules in detail: test_static_resolver.py.
"""

from __future__ import annotations

import gzip
import os
import socket
from dataclasses import dataclass

import pytest
from conftest import nginx_vars, parse_response, recv_all, uwsgi_request
from framed_client import fetch

DRIVERS = {
    "uwsgi-c": (("--module", "field_apps:wsgi"), False),
    "uwsgi-py": (("--module", "field_apps:wsgi", "--decoder", "python"), False),
    "uwsgi-asgi": (("--module", "field_apps:asgi"), False),
    "http-wsgi-c": (("--module", "field_apps:wsgi", "--threads", "1"), True),
    "http-wsgi-pool": (("--module", "field_apps:wsgi", "--threads", "2"), True),
    "http-wsgi-py": (("--module", "field_apps:wsgi", "--threads", "2", "--decoder",
                      "python"), True),
    "http-asgi": (("--module", "field_apps:asgi"), True),
}
A_TXT = b"hello static\n" * 10
BIG = 5 * 1024 * 1024


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def header(self, name: str):
        return self.headers.get(name.lower())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    static, static2, evil = root / "static", root / "static2", root / "static_evil"
    for d in (static, static2, evil, static / "sub", static / "dir"):
        d.mkdir()
    (static / "a.txt").write_bytes(A_TXT)
    (static / "a.txt.gz").write_bytes(gzip.compress(A_TXT))
    (static / "style.css").write_bytes(b"body{}\n")
    (static / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (static / "big.bin").write_bytes(os.urandom(BIG))
    (static2 / "only2.txt").write_bytes(b"from the second map\n")
    (evil / "x").write_bytes(b"EVIL SIBLING\n")
    (root / "secret.txt").write_bytes(b"SECRET\n")
    os.symlink(root / "secret.txt", static / "link_out")
    os.mkfifo(static / "fifo")
    return root


@pytest.fixture(scope="module", params=list(DRIVERS))
def server(request, module_factories, tree):
    args, http = DRIVERS[request.param]
    srv = module_factories.uwsgigw(
        *args, "--master", "--processes", "1", "--socket-timeout", "5",
        "--static-map", "/static=%s" % (tree / "static"),
        "--static-map", "/static=%s" % (tree / "static2"),
        "--static-index", "index.html", "--static-gzip-all",
        "--static-expires-uri", r"\.css$ 3600", http=http)
    srv.http = http
    return srv


def ask(server, path: str, method: str = "GET", headers: dict | None = None,
        raw_path: bytes | None = None) -> Answer:
    """One request: an HTTP one on the listener, a uwsgi packet on the socket
    (``raw_path``: PATH_INFO as sent, which nginx would never pass through)."""
    headers = headers or {}
    if server.http:
        port = int(server.socket.rpartition(":")[2])
        got = fetch(port, path, method=method, headers=headers)
        assert got.status, got.raw[:200]
        return Answer(got.status, {k: v[-1] for k, v in got.headers.items()}, got.body)
    extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    if raw_path is not None:
        extra["PATH_INFO"] = raw_path
    raw = uwsgi_request(server.socket, nginx_vars(method=method, uri=path, **extra))
    got = parse_response(raw)
    return Answer(got.status, {k.lower(): v for k, v in got.headers}, got.body)


def test_a_mapped_file_is_served_with_its_headers(server):
    got = ask(server, "/static/a.txt")
    assert got.status == 200 and got.body == A_TXT
    assert got.header("content-type").startswith("text/plain")
    assert got.header("content-length") == str(len(A_TXT))
    assert got.header("last-modified")


def test_head_has_the_headers_and_no_body(server):
    got = ask(server, "/static/a.txt", "HEAD")
    assert got.status == 200 and got.body == b""
    assert got.header("content-length") == str(len(A_TXT))


def test_the_second_map_serves_what_the_first_lacks(server):
    got = ask(server, "/static/only2.txt")
    assert (got.status, got.body) == (200, b"from the second map\n")


@pytest.mark.parametrize("path, method", [
    ("/static/missing.txt", "GET"),   # in no map: the app
    ("/static/a.txt", "POST"),        # only GET and HEAD are static
    ("/static/dir", "GET"),           # a directory without an index
    ("/static/fifo", "GET"),          # not a regular file: never opened for reading
    ("/elsewhere/a.txt", "GET"),      # no map's prefix
])
def test_what_is_not_a_static_hit_reaches_the_app(server, path, method):
    got = ask(server, path, method)
    assert got.status == 404 and b"no route" in got.body  # field_apps' own answer


def test_a_directory_serves_its_index(server):
    got = ask(server, "/static/sub/")
    assert (got.status, got.body) == (200, b"<p>index</p>\n")


def test_a_big_file_arrives_whole(server, tree):
    got = ask(server, "/static/big.bin")
    assert got.status == 200 and got.body == (tree / "static" / "big.bin").read_bytes()


def test_a_byte_range(server):
    got = ask(server, "/static/a.txt", headers={"Range": "bytes=6-11"})
    assert (got.status, got.body) == (206, A_TXT[6:12])
    assert got.header("content-range") == "bytes 6-11/%d" % len(A_TXT)
    got = ask(server, "/static/a.txt", headers={"Range": "bytes=%d-" % (len(A_TXT) + 5)})
    assert got.status == 416 and got.header("content-range") == "bytes */%d" % len(A_TXT)


def test_if_modified_since_gives_304_with_the_caching_headers(server):
    first = ask(server, "/static/style.css")
    assert first.status == 200 and "max-age=3600" in first.header("cache-control")
    again = ask(server, "/static/style.css",
                headers={"If-Modified-Since": first.header("last-modified")})
    assert again.status == 304 and again.body == b""
    assert again.header("cache-control") == first.header("cache-control")
    assert again.header("expires")


def test_gzip_variant_only_for_clients_that_take_it(server):
    got = ask(server, "/static/a.txt", headers={"Accept-Encoding": "gzip"})
    assert got.status == 200 and got.header("content-encoding") == "gzip"
    assert gzip.decompress(got.body) == A_TXT
    assert "accept-encoding" in got.header("vary").lower()
    plain = ask(server, "/static/a.txt", headers={"Accept-Encoding": "gzip;q=0"})
    assert plain.status == 200 and plain.body == A_TXT and not plain.header("content-encoding")


# -- safety: nothing outside the maps, whatever the path says -------------------------

HTTP_ESCAPES = ["/static/../secret.txt", "/static/%2e%2e/secret.txt",
                "/static/..%2fsecret.txt", "/static/..%2fstatic_evil/x",
                "/static/%2e%2e%2fstatic_evil/x", "/static/link_out",
                "/static/..%5csecret.txt", "/static/a.txt%00.png"]
RAW_ESCAPES = [b"/static/../secret.txt", b"/static/../static_evil/x", b"/static/..",
               b"/static//../secret.txt", b"/static/./../secret.txt",
               b"/static/..\\secret.txt", b"/static/a.txt\x00", b"/static/link_out",
               b"/static/sub/../../secret.txt", b"/static/\xc0\xae\xc0\xae/secret.txt"]


@pytest.mark.parametrize("path", HTTP_ESCAPES)
def test_escapes_in_the_request_target_never_leave_the_map(server, path):
    got = ask(server, path)
    assert b"SECRET" not in got.body and b"EVIL" not in got.body
    assert got.status in (400, 403, 404)


def ask_raw(server, raw: bytes) -> Answer:
    """``raw`` as the path, unnormalised: PATH_INFO of a uwsgi packet, or the
    request target of an HTTP request line."""
    if not server.http:
        return ask(server, "/static/x", raw_path=raw)
    port = int(server.socket.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    return Answer(int(head.split()[1]), {}, body)


@pytest.mark.parametrize("raw", RAW_ESCAPES)
def test_raw_paths_never_leave_the_map(server, raw):
    got = ask_raw(server, raw)
    assert b"SECRET" not in got.body and b"EVIL" not in got.body
    assert got.status in (400, 403, 404)


def test_a_static_hit_is_logged_and_counted(server):
    mark = server.log_mark()
    assert ask(server, "/static/style.css").status == 200
    server.wait_for_log("GET /static/style.css", since=mark)


HTTP_DRIVERS = [name for name, (_, http) in DRIVERS.items() if http]


@pytest.mark.parametrize("server", HTTP_DRIVERS, indirect=True)
def test_a_slow_download_does_not_hold_the_worker(server):
    """One worker: a client that takes the 5 MB file slowly does not keep
    another from being answered (on uwsgi sockets nginx takes the file at
    once; the HTTP listener needs this itself)."""
    port = int(server.socket.rpartition(":")[2])
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    slow.connect(("127.0.0.1", port))
    try:
        slow.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = slow.recv(4096)
        assert raw.startswith(b"HTTP/1.1 200")
        # Answered before socket-timeout (5 s) could free a blocked worker
        # by cutting the slow client ...
        assert fetch(port, "/static/a.txt", timeout=4).status == 200
        # ... which then still gets its whole file.
        while len(raw.partition(b"\r\n\r\n")[2]) < BIG:
            chunk = slow.recv(1 << 20)
            assert chunk, "the download was cut"
            raw += chunk
    finally:
        slow.close()
