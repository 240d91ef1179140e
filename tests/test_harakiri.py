"""The master's harakiri check (harakiri.py) on a real scoreboard, with the
signals recorded instead of sent. Whole servers: test_master_signals.py."""

import signal
import time
from types import SimpleNamespace

import pytest

from uwsgigw.process.harakiri import DUMP_WAIT, Harakiri
from uwsgigw.process.workerproc import WorkerProc
from uwsgigw.observe.scoreboard import Scoreboard


@pytest.fixture
def stuck():
    board = Scoreboard(4, 2)
    index = board.allocate()
    board.reset(index, 1, 1)
    w = WorkerProc(4242, 1, index, 1, board, time.monotonic())
    core = w.cores()[1]
    core.busy_since, core.req = time.time() - 5, b"GET /slow"
    sent = []
    master = SimpleNamespace(workers={w.pid: w}, counts={},
                             kill=lambda proc, sig: sent.append(sig))
    yield Harakiri(master, 3), w, sent
    board.close()


def test_dump_then_kill_on_acknowledgement(stuck, capfd):
    harakiri, w, sent = stuck
    mono = time.monotonic()
    harakiri.check(mono)
    assert sent == [signal.SIGUSR2] and w.dump.core == 1
    assert "HARAKIRI ON WORKER 1 (pid 4242, core 1): GET /slow" in capfd.readouterr().err
    harakiri.check(mono)  # not acknowledged yet, not past DUMP_WAIT
    assert sent == [signal.SIGUSR2]
    w.slot.dump_ack += 1  # the worker wrote its tracebacks
    harakiri.check(mono)
    assert sent == [signal.SIGUSR2, signal.SIGKILL] and w.dump is None
    assert w.killed_for == "harakiri after 3 s"
    assert harakiri.master.counts == {1: [0, 1]} and w.slot.harakiri_count == 1
    harakiri.check(mono)  # killed: nothing more
    assert len(sent) == 2


def test_kill_without_acknowledgement_after_the_wait(stuck):
    harakiri, w, sent = stuck
    mono = time.monotonic()
    harakiri.check(mono)
    harakiri.check(mono + DUMP_WAIT)
    assert sent == [signal.SIGUSR2, signal.SIGKILL]


def test_cancelled_when_the_request_ends_meanwhile(stuck, capfd):
    harakiri, w, sent = stuck
    mono = time.monotonic()
    harakiri.check(mono)
    w.cores()[1].busy_since = 0.0  # done after all
    harakiri.check(mono + DUMP_WAIT)
    assert sent == [signal.SIGUSR2] and not w.killed_for and w.dump is None
    assert "finished that request after all; harakiri cancelled" in capfd.readouterr().err


def test_a_request_under_the_limit_is_left_alone(stuck):
    harakiri, w, sent = stuck
    w.cores()[1].busy_since = time.time() - 1
    harakiri.check(time.monotonic())
    assert sent == [] and w.dump is None
