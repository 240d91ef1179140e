"""Scale-out: several uwsgigw servers on TCP behind one nginx ``upstream``
(the shipped nginx/upstream-rolling.conf), restarted one at a time under GET
and POST load: SIGTERM, wait for the exit, start again, wait until nginx
sends it requests, next.

- Taken out of nginx's pool first (``down`` + reload, then back): no
  request fails.
- SIGTERM only: no GET fails; a POST that nginx sent to the stopping server
  may get 502 (the file's comment says why), and nothing else may fail.

The figure (requests, failed) is printed; run with ``-s`` to see it:

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_rolling_restart.py
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
from collections import Counter

import pytest

from conftest import http_request, wait_until
from uwsgigw import devnginx

APP = "rolling_apps:application"
POOL = 3        # servers in the shipped upstream block
CLIENTS = 4     # concurrent client loops through nginx
SLEEP = 0.02    # seconds each request takes in the app: some are always in flight
POST_BODY = os.urandom(24 * 1024)  # above a socket buffer's worth: sent in pieces
POST_DIGEST = hashlib.sha256(POST_BODY).hexdigest()


def pool_text() -> str:
    return (devnginx.default_nginx_dir() / devnginx.POOL_SITE).read_text()


class Load:
    """CLIENTS threads sending GET and POST /who through nginx until stopped;
    every answer is checked, every failure kept with what went wrong."""

    def __init__(self, port: int):
        self.port = port
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()   # server name -> good answers
        self.pids: dict[str, set[int]] = {}     # server name -> worker pids seen
        self.methods: Counter[str] = Counter()
        self.failures: list[str] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in range(CLIENTS)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a client loop hung"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.served.values()) + len(self.failures)

    def count(self, name: str) -> int:
        with self.lock:
            return self.served[name]

    def _run(self, n: int) -> None:
        i = 0
        while not self.done.is_set():
            i += 1
            post = (i + n) % 2 == 0
            method = "POST" if post else "GET"
            try:
                r = http_request(self.port, method, "/who?%g" % SLEEP, timeout=30,
                                 body=POST_BODY if post else None,
                                 headers={"Content-Type": "application/octet-stream"}
                                 if post else None)
                fields = r.body.decode("latin-1").split()
                good = r.status == 200 and r.error is None and len(fields) == (
                    4 if post else 2) and (not post or fields[2:] == [
                        str(len(POST_BODY)), POST_DIGEST])
                problem = None if good else "%s %d %r" % (method, r.status, r.body[:200])
            except Exception as exc:  # a refused nginx, a timeout: a failure too
                problem, fields = "%s raised %r" % (method, exc), []
            with self.lock:
                self.methods[method] += 1
                if problem:
                    self.failures.append("%.3f %s" % (time.monotonic(), problem))
                else:
                    self.served[fields[0]] += 1
                    self.pids.setdefault(fields[0], set()).add(int(fields[1]))


def upstream_errors(nginx) -> str:
    """nginx's error-level lines (refused, reset, 502s), not its per-request info."""
    return "\n".join(line for line in nginx.error_log().splitlines()
                     if "[error]" in line or "[crit]" in line)


def start_server(factories, name: str, socket: str | None = None):
    return factories.uwsgigw("--module", APP, "--master", "--processes", "2",
                             tcp=True, socket=socket, env={"ROLLING_SERVER": name})


def test_pool_file_has_the_settings_a_rolling_restart_needs():
    text = pool_text()
    directives = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "uwsgi_next_upstream error timeout;" in directives
    assert not any("non_idempotent" in d for d in directives)  # see the file's comment
    servers = [d for d in directives if d.startswith("server 127.0.0.1:800")]
    assert len(servers) == POOL
    assert all("max_fails=1" in d and "fail_timeout=5s" in d for d in servers)


def test_pool_templating_keeps_the_parameters_and_fails_loudly():
    text = pool_text()
    out = devnginx.render_pool_site(text, listen="127.0.0.1:1", params_path="/p/up",
                                    servers=["10.0.0.1:9", "/run/a.sock", "[::1]:7"])
    assert "server 10.0.0.1:9 max_fails=1 fail_timeout=5s;" in out
    assert "server unix:/run/a.sock max_fails=1 fail_timeout=5s;" in out
    assert "server [::1]:7 max_fails=1 fail_timeout=5s;" in out
    assert "listen 127.0.0.1:1;" in out and "include /p/up;" in out
    changed = [a for a, b in zip(text.splitlines(), out.splitlines()) if a != b]
    assert len(changed) == POOL + 2, changed  # nothing else is touched
    with pytest.raises(devnginx.DevNginxError, match="2 upstream servers given"):
        devnginx.render_pool_site(text, listen="x", params_path="/p", servers=["a:1", "b:2"])


def set_down(nginx, address: str, down: bool) -> None:
    """Mark one server of the running nginx's pool ``down`` (or not) and reload
    nginx gracefully; return once the old nginx workers have exited, so every
    new connection follows the new pool."""
    path = os.path.join(nginx.workdir, "site.conf")
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip().startswith("server %s " % address)]
    assert len(hits) == 1, "no line 'server %s ...' in %s" % (address, path)
    line = lines[hits[0]].replace(" down;", ";")
    lines[hits[0]] = line.replace(";", " down;") if down else line
    with open(path, "w") as f:
        f.write("".join(lines))
    mark = len(nginx.error_log())
    os.kill(nginx.pid, signal.SIGHUP)
    wait_until(lambda: re.search(r"worker process \d+ exited", nginx.error_log()[mark:]), 30,
               what="nginx's old workers gone after its reload")


def run_rolling_restart(factories, drain: bool):
    """Start the pool and the load, restart every server in turn (``drain``:
    out of nginx's pool first), stop the load; (nginx, load)."""
    servers = [start_server(factories, "s%d.0" % n) for n in range(POOL)]
    nginx = factories.nginx([s.socket for s in servers], site=devnginx.POOL_SITE)
    load = Load(nginx.port).start()
    try:
        # Every server takes its share before the first restart.
        for n in range(POOL):
            wait_until(lambda: load.count("s%d.0" % n) >= 20, 60,
                       what="server %d serving through nginx" % n)
        for n, old in enumerate(servers):
            old_pid, before = old.proc.pid, load.count("s%d.0" % n)
            if drain:
                set_down(nginx, old.socket, True)
            mark = old.log_mark()
            os.kill(old_pid, signal.SIGTERM)
            assert old.proc.wait(60) == 0, old.log_text()  # a graceful stop exits 0
            old.wait_for_log("SIGTERM: graceful stop", since=mark)
            name = "s%d.1" % n
            new = start_server(factories, name, socket=old.socket)  # same address
            assert new.proc.pid != old_pid
            if drain:
                set_down(nginx, old.socket, False)
            # Back in nginx's rotation (fail_timeout over) before the next stops.
            wait_until(lambda: load.count(name) >= 20, 60,
                       what="restarted server %d serving through nginx" % n)
            assert load.count("s%d.0" % n) >= before  # it served until its stop
        # Nothing fails after the last one either.
        last = load.total
        wait_until(lambda: load.total >= last + 100, 60, what="100 more requests")
    finally:
        load.stop()
    assert load.methods["GET"] > 100 and load.methods["POST"] > 100
    for n in range(POOL):
        old_workers, new_workers = load.pids["s%d.0" % n], load.pids["s%d.1" % n]
        assert old_workers and new_workers and not old_workers & new_workers
    print("\nrolling restart (%s) of %d servers behind nginx: %d requests (%s), %d failed"
          % ("out of the pool first" if drain else "SIGTERM only", POOL, load.total,
             ", ".join("%d %s" % (c, m) for m, c in sorted(load.methods.items())),
             len(load.failures)))
    return nginx, load


@pytest.mark.timeout(240)
def test_rolling_restart_out_of_the_pool_first_loses_no_request(factories):
    """The recipe for any request: mark the server down in nginx and reload
    it, SIGTERM, start again, mark it up, reload. Nothing fails, POST included."""
    nginx, load = run_rolling_restart(factories, drain=True)
    assert not load.failures, "%d of %d requests failed:\n%s\nnginx errors:\n%s" % (
        len(load.failures), load.total, "\n".join(load.failures[:20]), upstream_errors(nginx))


@pytest.mark.timeout(240)
def test_rolling_restart_sigterm_only_loses_no_idempotent_request(factories):
    """The plain recipe (SIGTERM, wait, start, next): nginx passes every GET
    that meets a stopping server to another one, so none fails. A POST can
    meet a connection the stopping server's kernel queued but no worker took
    any more: reset when the server closes its socket, after nginx sent the
    POST, which it then answers 502 rather than replay (no non_idempotent in
    nginx/upstream-rolling.conf). Those are the only failures allowed here."""
    nginx, load = run_rolling_restart(factories, drain=False)
    errors = upstream_errors(nginx)
    # The stops happened under load: nginx met refused or reset connections.
    assert "while connecting to upstream" in errors or "reset by peer" in errors, errors
    failed_gets = [f for f in load.failures if " GET " in f]
    assert not failed_gets, "%d GET failed:\n%s\nnginx errors:\n%s" % (
        len(failed_gets), "\n".join(failed_gets[:20]), errors)
    resets = len(re.findall(r"reset by peer\) while reading response header from upstream, "
                            r"client: \S+, server: \S+, request: \"POST ", errors))
    assert all(" POST 502 " in f for f in load.failures), load.failures
    assert len(load.failures) <= resets, (load.failures, errors)
