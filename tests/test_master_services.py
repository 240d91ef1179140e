"""services.py: the master's hooks reach every service, and one service's bug
is logged without stopping the others."""

from uwsgigw.process.services import MasterService, Services


class Recorder(MasterService):
    def __init__(self, name, wait=None, owns=()):
        self.name, self.wait, self.owns, self.calls = name, wait, set(owns), []

    def tick(self, now):
        self.calls.append(("tick", now))

    def deadline(self, now):
        return self.wait

    def reaped(self, pid, status):
        self.calls.append(("reaped", pid))
        return pid in self.owns

    def hand_over(self):
        return {"seen": len(self.calls)}

    def adopt(self, state):
        self.calls.append(("adopt", state))

    def stats(self):
        return [self.name]


class Broken(MasterService):
    name = "broken"

    def tick(self, now):
        raise RuntimeError("tick bug")

    def busy(self):
        raise RuntimeError("busy bug")

    def hand_over(self):
        raise RuntimeError("hand-over bug")


def test_every_service_is_called_and_a_broken_one_is_logged(capfd):
    a, b = Recorder("a", wait=2.0, owns={7}), Recorder("b", wait=0.5, owns={9})
    services = Services([a, Broken(), b])
    services.tick(1.0)
    assert a.calls == b.calls == [("tick", 1.0)]
    assert "internal error in the master's broken (tick)" in capfd.readouterr().err
    assert services.deadline(0.0) == 0.5
    assert services.busy() is False
    assert services.reaped(9, 0) is True and b.calls[-1] == ("reaped", 9)
    assert services.reaped(11, 0) is False  # an orphan nobody owns
    assert services.hand_over() == {"a": {"seen": 3}, "b": {"seen": 3}}
    assert services.stats() == {"a": ["a"], "b": ["b"]}
    services.adopt({"a": {"x": 1}, "gone": {}})
    assert a.calls[-1] == ("adopt", {"x": 1}) and b.calls[-1] != ("adopt", {"x": 1})


def test_no_services_need_nothing():
    services = Services([])
    assert services.deadline(0.0) is None and not services.busy()
    assert services.hand_over() == {} and services.stats() == {}


class Reader(MasterService):
    """A service with pipes of its own (cron's job output, say)."""

    def __init__(self, name, fds):
        self.name, self.own, self.seen = name, fds, []

    def fds(self):
        return self.own

    def readable(self, fds):
        self.seen.append([fd for fd in fds if fd in self.own])


def test_the_pipes_of_every_service_reach_select_and_back():
    a, b = Reader("a", [7, 8]), Reader("b", [9])
    services = Services([a, Broken(), b, Recorder("c")])
    assert services.fds() == [7, 8, 9]
    services.readable([3, 8, 9])
    assert a.seen == [[8]] and b.seen == [[9]]
    services.readable([])  # nothing ready: nobody is asked
    assert len(a.seen) == 1
