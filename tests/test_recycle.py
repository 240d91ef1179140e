"""Recycling limits (recycle.py) and the check every worker kind runs after a
request (workerbase.py)."""

from types import SimpleNamespace

import pytest

from uwsgigw.config.settings import Config
from uwsgigw.process.recycle import Limits
from uwsgigw.observe.scoreboard import STOPPING, CoreSlot
from uwsgigw.process.workerbase import WorkerBase

MB = 1 << 20


@pytest.mark.parametrize("limits, requests, rss, vsz, reason", [
    (Limits(), 10**6, 10**12, 10**12, None),  # all off
    (Limits(max_requests=5), 4, 0, 0, None),
    (Limits(max_requests=5), 5, 0, 0, "max-requests 5 reached"),
    (Limits(max_requests=5), 9, 0, 0, "max-requests 5 reached"),
    (Limits(rss=100 * MB), 1, 100 * MB, 0, None),  # at the limit is not past it
    (Limits(rss=100 * MB), 1, 101 * MB, 0, "reload-on-rss: rss 101 MB > 100 MB"),
    (Limits(rss=100 * MB), 1, 0, 0, None),  # not measured
    (Limits(address_space=1024 * MB), 1, 0, 2048 * MB,
     "reload-on-as: address space 2048 MB > 1024 MB"),
    # one reason, in this order: requests, then rss, then address space
    (Limits(5, 100 * MB, 1024 * MB), 5, 200 * MB, 2048 * MB, "max-requests 5 reached"),
    (Limits(5, 100 * MB, 1024 * MB), 1, 200 * MB, 2048 * MB,
     "reload-on-rss: rss 200 MB > 100 MB"),
])
def test_exceeded(limits, requests, rss, vsz, reason):
    assert limits.exceeded(requests, rss, vsz) == reason


def test_from_config():
    cfg = Config.defaults(max_requests=100, max_requests_delta=10, reload_on_rss=512)
    assert Limits.from_config(cfg, 3) == Limits(130, 512 * MB, 0)
    assert Limits.from_config(Config.defaults(max_requests_delta=10), 3) == Limits()
    assert not Limits() and Limits(max_requests=1) and not Limits(max_requests=1).memory
    assert Limits(rss=1).memory and Limits(address_space=1).memory


def _worker(limits, requests):
    cores = [CoreSlot(), CoreSlot()]
    cores[0].requests, cores[1].requests = requests, 1
    ctx = SimpleNamespace(worker_id=2, cores=cores)
    return WorkerBase(ctx, [], limits=limits)


def test_check_limits_stops_the_worker(capfd):
    worker = _worker(Limits(max_requests=3), 1)
    worker._check_limits()
    assert not worker.stopping
    worker.ctx.cores[0].requests = 2  # the cores add up: 2 + 1
    worker._check_limits()
    assert worker.stopping and worker.slot.state == STOPPING
    assert worker.slot.stopping_since > 0
    assert "worker 2 (pid" in capfd.readouterr().err


def test_check_limits_measures_memory_only_when_limited():
    worker = _worker(Limits(max_requests=100), 1)
    worker._check_limits()
    assert worker.slot.rss == 0
    worker = _worker(Limits(rss=1 << 50), 1)  # a petabyte: measured, not exceeded
    worker._check_limits()
    assert worker.slot.rss > 0 and worker.slot.vsz > 0 and not worker.stopping
