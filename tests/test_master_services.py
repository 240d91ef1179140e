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
