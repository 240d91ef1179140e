"""HTTP sockets (http-socket, http11-socket, http) from configuration to bound
listeners that know their protocol, with real servers. Speaking HTTP on them is
tests/test_http_listener.py's; here: binding, logging, the reload handover, the
worker kind and the dispatch of each connection by protocol."""

from __future__ import annotations

import os
import signal
import socket

from conftest import short_tmpdir
from test_master_support import APP, raw_get

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


def test_an_http_socket_runs_the_event_loop_worker_and_each_listener_its_protocol(
        uwsgigw_factory):
    http = "127.0.0.1:%d" % free_port()
    server = uwsgigw_factory("--module", APP, "--master", "--http-socket", http)
    server.wait_for_log("event loop, async-concurrency")  # a WSGI app, on the async worker
    assert raw_get(server.socket, "/").status == 200  # the uwsgi socket: still uwsgi
    with socket.create_connection(("127.0.0.1", int(http.rsplit(":", 1)[1])),
                                  timeout=10) as conn:  # and the HTTP one HTTP
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert raw_get(server.socket, "/").status == 200


def test_a_reload_keeps_the_http_listeners_http(uwsgigw_factory, tmp_path):
    # The new image adopts the sockets from the handover, protocol and all: still
    # HTTP, on the event-loop worker, even when the INI file no longer lists it.
    d = short_tmpdir()
    uwsgi, http = "%s/u.sock" % d, "%s/h.sock" % d
    ini = tmp_path / "app.ini"
    text = "[uwsgi]\nsocket = %s\nmodule = %s\nmaster = true\n" % (uwsgi, APP)
    ini.write_text(text + "http-socket = %s\n" % http)
    server = uwsgigw_factory("--ini", str(ini), socket=uwsgi)
    server.wait_for_log("ready to accept requests: 1 worker on %s, %s (http)" % (uwsgi, http))
    ini.write_text(text)
    mark = server.log_mark()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log("reloaded in", "generation 2 accepts (1 worker on %s, %s (http))"
                        % (uwsgi, http), "event loop, async-concurrency", since=mark)
    assert raw_get(uwsgi, "/").status == 200
