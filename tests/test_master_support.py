"""Helpers shared by the tests/test_master_*.py files (no tests here)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from conftest import http_request, nginx_vars, parse_response, server_env, uwsgi_request, \
    uwsgigw_cmd, wait_until
from soak.procinfo import children  # noqa: F401  (the test_master_* files import it from here)

APP = "master_apps:application"


def wait_workers(server, count: int, timeout: float = 10.0) -> set[int]:
    return wait_until(lambda: (lambda c: c if len(c) == count else None)(
        children(server.pid)), timeout, what="%d workers" % count)


def raw_get(sock: str, uri: str, timeout: float = 10.0):
    """GET straight on the uwsgi socket; -> RawResponse, or None if the server closed
    the connection without an answer (what nginx turns into a 502)."""
    data = uwsgi_request(sock, nginx_vars(uri=uri), timeout=timeout)
    return parse_response(data) if data else None


def get(port: int, path: str, timeout: float = 30.0):
    return http_request(port, "GET", path, timeout=timeout)


def in_thread(fn, *args):
    """Run ``fn(*args)`` in a thread; ``.result()`` joins and returns its value."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # surfaced by result()
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Handle:
        @staticmethod
        def result(timeout: float = 30.0):
            thread.join(timeout)
            assert not thread.is_alive(), "request thread still running"
            if "error" in box:
                raise box["error"]
            return box["value"]

    return Handle()


def exit_status(server, timeout: float = 15.0) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("uwsgigw did not exit within %gs; log:\n%s"
                             % (timeout, server.log_text())) from None


class Launched:
    """A uwsgigw started by hand (custom fds/env), stopped by its pid group."""

    def __init__(self, cmd, log_path, env, pass_fds=()):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         pass_fds=pass_fds, start_new_session=True)
        self.pid = self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        from uwsgigw.devnginx import stop_process_group
        stop_process_group(self.proc, signal.SIGTERM, 10)


def launch_env(extra: dict | None = None) -> dict:
    return server_env(extra)


def poll(predicate, timeout: float = 10.0, what: str = "condition"):
    return wait_until(predicate, timeout, what=what)


def now() -> float:
    return time.monotonic()


__all__ = ["APP", "children", "wait_workers", "raw_get", "get", "in_thread", "exit_status",
           "Launched", "uwsgigw_cmd", "launch_env", "poll", "now", "os"]
