"""HTTP sockets (http-socket, http11-socket, http) from configuration to bound
listeners that know their protocol, with real servers. Speaking HTTP on them is
the HTTP driver's (asgi/http_connection.py); here: binding, logging, the reload
handover, the worker kind and the dispatch of each connection by protocol."""

from __future__ import annotations

import socket

from conftest import short_tmpdir
from test_master_support import APP

from uwsgigw.devnginx import free_port


def test_a_server_with_only_an_http_socket_binds_it(uwsgigw_factory):
    address = "127.0.0.1:%d" % free_port()
    server = uwsgigw_factory("--module", APP, "--http-socket", address, socket=address)
    with socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=5):
        pass
    server.wait_for_log("ready to accept requests: 1 worker on %s (http)" % address)


def test_http_and_http11_socket_accumulate_with_the_uwsgi_socket(uwsgigw_factory):
    d = short_tmpdir()
    uwsgi, first, second = ("%s/%s.sock" % (d, n) for n in ("u", "h1", "h2"))
    server = uwsgigw_factory("--module", APP, "--master", "--http", first,
                             "--http11-socket", second, socket=uwsgi)
    server.wait_for_log("ready to accept requests: 1 worker on %s, %s (http), %s (http)"
                        % (uwsgi, first, second))
