"""The reload handover (handover.py): what a reloading master passes to its
fresh image. A real SIGHUP reload is in test_master_signals.py."""

import json
import os
import signal

import pytest

from uwsgigw.process.handover import (REEXEC_ENV, HandedBoard, HandedListener, HandedWorker,
                                      Handover)


def _handover():
    return Handover(
        generation=3,
        listeners=[HandedListener(5, "/run/app.sock", "/run/app.sock"),
                   HandedListener(6, None, "127.0.0.1:8000")],
        boards={"0": HandedBoard(7, 32, 2), "1": HandedBoard(8, 32, 1)},
        workers=[HandedWorker(101, 1, 0, 3, "0", "", 0.0),
                 HandedWorker(99, 1, 4, 2, "1", "reload", 42.5)],
        counts={1: [2, 1]}, carried={1: [10, 1, 2048, 0.5, 10]}, vacuum=["/run/app.sock"])


def test_round_trip_through_the_environment():
    handover = _handover()
    env = handover.to_env({"PATH": "/bin"})
    assert env["PATH"] == "/bin" and set(env) == {"PATH", REEXEC_ENV}
    assert Handover.from_env(env) == handover
    assert REEXEC_ENV not in env  # taken out: the app must not see it, nor pass it on
    assert Handover.from_env(env) is None  # a plain start


def test_the_wire_format_is_the_previous_releases():
    # Written by the master of the release before handover.py: the reload that
    # upgrades uwsgigw must still adopt its workers.
    old = {"generation": 3,
           "listeners": [[5, "/run/app.sock", "/run/app.sock"], [6, None, "127.0.0.1:8000"]],
           "boards": {"0": [7, 32, 2], "1": [8, 32, 1]},
           "workers": [[101, 1, 0, 3, "0", "", 0.0], [99, 1, 4, 2, "1", "reload", 42.5]],
           "counts": {"1": [2, 1]}, "carried": {"1": [10, 1, 2048, 0.5, 10]},
           "vacuum": ["/run/app.sock"]}
    assert Handover.from_json(json.dumps(old)) == _handover()
    assert json.loads(_handover().to_json()) == old
    # its listeners have no protocol: they are uwsgi ones
    assert [l.protocol for l in Handover.from_json(json.dumps(old)).listeners] == ["uwsgi"] * 2


def test_listener_fds():
    assert _handover().listener_fds() == ([5, 6], {5: "/run/app.sock"})
    assert _handover().listener_protocols() == {5: "uwsgi", 6: "uwsgi"}


def test_an_http_listener_carries_its_protocol():
    handover = _handover()
    handover.listeners.append(HandedListener(9, "/run/h.sock", "/run/h.sock", "http"))
    wire = json.loads(handover.to_json())["listeners"]
    # uwsgi listeners keep the three items the previous releases read; http adds the fourth
    assert wire == [[5, "/run/app.sock", "/run/app.sock"], [6, None, "127.0.0.1:8000"],
                    [9, "/run/h.sock", "/run/h.sock", "http"]]
    back = Handover.from_env(handover.to_env({}))
    assert back == handover
    assert back.listener_protocols() == {5: "uwsgi", 6: "uwsgi", 9: "http"}
    assert back.listener_fds() == ([5, 6, 9], {5: "/run/app.sock", 9: "/run/h.sock"})


def test_missing_parts_have_their_empty_value():
    handover = Handover.from_json('{"generation": 1}')
    assert handover == Handover(1) and handover.listener_fds() == ([], {})


@pytest.mark.parametrize("text", ["{not json", '{"workers": [[1, 2]]}', "[]"])
def test_malformed_is_ignored(text, capfd):
    assert Handover.from_env({REEXEC_ENV: text}) is None
    assert "ignoring a malformed %s" % REEXEC_ENV in capfd.readouterr().err


def test_a_failed_exec_puts_everything_back(monkeypatch, tmp_path):
    r, w = os.pipe()
    handover = Handover(1, listeners=[HandedListener(r, None, "x")],
                        boards={"0": HandedBoard(w, 32, 1)})

    def fail(*args):
        assert os.get_inheritable(r) and os.get_inheritable(w)
        assert signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        raise OSError(13, "Permission denied")
    monkeypatch.setattr(os, "execve", fail)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(OSError):
            handover.exec(block=[signal.SIGUSR1])
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(cwd)
    assert not os.get_inheritable(r) and not os.get_inheritable(w)
    assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    os.close(r)
    os.close(w)


def test_a_worker_crosses_the_reload_with_its_deadline():
    from uwsgigw.observe.scoreboard import ACCEPTING, Scoreboard
    from uwsgigw.process.workerproc import WorkerProc
    board = Scoreboard(4, 1)
    try:
        index = board.allocate()
        board.reset(index, 2, 1)
        board.workers[index].state = ACCEPTING
        w = WorkerProc(4242, 2, index, 1, board, 0.0, retiring="SIGTTOU", kill_at=130.0,
                       mercy=60.0)
        handed = w.handed("0", now=100.0)
        assert handed == HandedWorker(4242, 2, index, 1, "0", "SIGTTOU", 30.0)
        back = WorkerProc.adopted(handed, board, now=500.0)
        assert (back.pid, back.id, back.index, back.generation) == (4242, 2, index, 1)
        assert back.booted and back.retiring == "SIGTTOU"
        assert back.kill_at == 530.0 and back.mercy == 30.0
        serving = WorkerProc.adopted(HandedWorker(4243, 3, index, 1, "0", "", 0.0), board, 1.0)
        assert not serving.retiring and serving.kill_at == 0.0
    finally:
        board.close()


def test_services_state_crosses_the_reload():
    handover = _handover()
    handover.services = {"daemons": [{"cmd": "sleep 60", "pid": 321}], "cron": {"last": 5}}
    back = Handover.from_env(handover.to_env({}))
    assert back.services == handover.services and back == handover
