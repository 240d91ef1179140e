"""The server log: whole lines, rate limiting that says what it held back."""

import os

from uwsgigw import log


def read_lines(path):
    return path.read_text().splitlines()


def test_rate_limited_counts_suppressed(tmp_path, monkeypatch):
    r, w = os.pipe()
    monkeypatch.setattr(log, "_fd", w)
    monkeypatch.setattr(log, "_rate", {})
    clock = [100.0]
    monkeypatch.setattr(log.time, "monotonic", lambda: clock[0])
    log.rate_limited("k", "bad packet")
    log.rate_limited("k", "bad packet")
    log.rate_limited("k", "bad packet")
    log.rate_limited("other", "other kind")
    clock[0] += 1.5
    log.rate_limited("k", "bad packet again")
    os.close(w)
    lines = os.read(r, 65536).decode().splitlines()
    os.close(r)
    assert len(lines) == 3
    assert lines[0].endswith("WARNING bad packet")
    assert lines[1].endswith("WARNING other kind")
    assert lines[2].endswith("bad packet again (2 similar messages suppressed)")


def test_error_stream_writes_lines(monkeypatch):
    r, w = os.pipe()
    monkeypatch.setattr(log, "_fd", w)
    stream = log.ErrorStream()
    stream.write("from the app\n")
    stream.writelines(["a\n", "b"])
    stream.flush()
    os.close(w)
    assert os.read(r, 65536).decode().splitlines() == ["from the app", "a", "b"]
    os.close(r)
