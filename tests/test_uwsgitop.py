"""uwsgitop (the real one, from PyPI) against uwsgigw's stats socket, in a
pseudo-terminal whose screen is read back with the pyte terminal emulator."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios

import pytest
from conftest import short_tmpdir, wait_until
from test_master_support import APP, raw_get, wait_workers

pyte = pytest.importorskip("pyte")
UWSGITOP = shutil.which("uwsgitop")
pytestmark = pytest.mark.skipif(UWSGITOP is None, reason="uwsgitop is not installed "
                                "(pip install uwsgitop)")
COLS, ROWS = 160, 30


class Terminal:
    """A program in a pty, its output fed to a pyte screen."""

    def __init__(self, argv: list[str]):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = dict(os.environ, TERM="xterm", LINES=str(ROWS), COLUMNS=str(COLS))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self) -> None:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program exited
                return
            if not data:
                return
            self.stream.feed(data)

    def text(self) -> str:
        self.pump()
        return "\n".join(line.rstrip() for line in self.screen.display)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.write(self.master, b"q")
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        os.close(self.master)


@pytest.fixture
def terminal():
    opened = []

    def run(*argv):
        t = Terminal(list(argv))
        opened.append(t)
        return t
    yield run
    for t in opened:
        t.close()


def worker_rows(text: str) -> dict[int, list[str]]:
    """uwsgitop's table: " WID  %  PID  REQ  RPS  EXC  SIG  STATUS ..." rows by WID."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0].isdigit() and fields[2].isdigit():
            rows[int(fields[0])] = fields
    return rows


def test_uwsgitop_shows_the_workers_and_their_requests(uwsgigw_factory, terminal):
    stats = os.path.join(short_tmpdir(), "stats.sock")
    server = uwsgigw_factory("--module", APP, "--master", "--processes", "2",
                             "--stats", stats)
    pids = wait_workers(server, 2)
    for _ in range(7):
        assert raw_get(server.socket, "/").status == 200
    top = terminal(UWSGITOP, "--frequency", "1", stats)

    def screen_with_all_requests():
        text = top.text()
        rows = worker_rows(text)
        if len(rows) == 2 and sum(int(r[3]) for r in rows.values()) == 7:
            return text
        assert top.proc.poll() is None, "uwsgitop exited:\n" + text
        return None
    text = wait_until(screen_with_all_requests, 15, what="uwsgitop's table")
    header = text.splitlines()[0]
    assert re.match(r"uwsgi-\S+ - .* - req: 7 - RPS: \d+ - lq: 0 - tx: \S+", header), header
    assert "masterpid: %d" % server.pid in text
    assert "WID" in text and "STATUS" in text and "ReSpwn" in text
    rows = worker_rows(text)
    assert sorted(rows) == [1, 2]
    assert {int(r[2]) for r in rows.values()} == pids
    for r in rows.values():
        assert r[7] == "idle"  # STATUS
    # it keeps polling: more requests show up on the next refresh
    for _ in range(3):
        raw_get(server.socket, "/")
    wait_until(lambda: sum(int(r[3]) for r in worker_rows(top.text()).values()) == 10, 10,
               what="the refreshed counts")
