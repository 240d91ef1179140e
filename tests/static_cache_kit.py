"""The parts tests/test_static_cache*.py share: a tree of static files, a
worker's ConnectionHandler built from options (C core or Python decoder), and
one request served in process on a socketpair."""

from __future__ import annotations

import os
import socket
import sys
import threading

from conftest import nginx_vars
from packet_builder import build_packet

from uwsgigw import backend as backends
from uwsgigw.app import AppTable
from uwsgigw.config import settings
from uwsgigw.observe.record import SharedCounter
from uwsgigw.wsgi.handler import ConnectionHandler, WorkerContext

SMALL = b"small file\n" * 10
BIG = os.urandom(3 * 1024 * 1024 + 5)  # above the C core's 64 KiB pread: sendfile


def app(environ, start_response):
    body = b"app: " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def make_site(tmp_path):
    """first/ (a.txt, big.bin, empty.txt, sub/index.html, style.css), second/
    (only2.txt) and out/secret.txt, outside both maps."""
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for d in (first, second, out, first / "sub"):
        d.mkdir()
    (first / "a.txt").write_bytes(SMALL)
    (first / "big.bin").write_bytes(BIG)
    (first / "empty.txt").write_bytes(b"")
    (first / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (first / "style.css").write_bytes(b"body{}\n")
    (second / "only2.txt").write_bytes(b"from the second map\n")
    (out / "secret.txt").write_bytes(b"SECRET\n")
    return tmp_path


def handler_for(site, decoder: str, *extra: str):
    """A worker's ConnectionHandler for ``static-map /static`` to first/ then
    second/, built from the options as the worker builds it."""
    cli = {"socket": [str(site / "unused.sock")], "module": "unused",
           "static_map": ["/static=%s" % (site / "first"), "/static=%s" % (site / "second")],
           "static_index": ["index.html"]}
    for item in extra:
        key, _, value = item.partition("=")
        cli.setdefault(key, []).append(value) if key.startswith("static") else \
            cli.__setitem__(key, value)
    cfg = settings.build(cli, {})
    ctx = WorkerContext.from_config(cfg, backends.select(decoder), AppTable(app, [], False),
                                    SharedCounter())
    return ConnectionHandler(ctx), ctx


def served(handler, path: str, method: str = "GET", **headers) -> tuple[bytes, int]:
    """(the raw response, calls of the Python lookup while serving it)."""
    env = nginx_vars(method=method, uri=path, **headers)
    packet = build_packet([(k.encode(), v.encode("latin-1")) for k, v in env.items()])
    a, b = socket.socketpair()
    calls = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_lookup":
            calls.append(frame.f_code.co_filename)

    got = []  # read meanwhile: a big answer does not fit in the socket buffers

    def read():
        b.settimeout(10)
        while chunk := b.recv(1 << 20):
            got.append(chunk)

    with b:
        b.sendall(packet)
        reader = threading.Thread(target=read)
        reader.start()
        sys.setprofile(watch)  # this thread's calls only
        try:
            handler.handle(a.detach())  # closes it
        finally:
            sys.setprofile(None)
            reader.join(10)
    return b"".join(got), len(calls)


def make_pair(site):
    """(C core handler, Python decoder handler, the C core's StaticCache)."""
    c_handler, ctx = handler_for(site, "c")
    py_handler, py_ctx = handler_for(site, "python")
    assert ctx.static_cache is not None and py_ctx.static_cache is None
    return c_handler, py_handler, ctx.static_cache
