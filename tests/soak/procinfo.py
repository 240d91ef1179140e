"""/proc readings for the hostile-input, resource and soak runs (Linux only)."""

from __future__ import annotations

import glob
import os
import re
import time

APP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps.py")


def children(pid: int) -> set[int]:
    """Live (non-zombie) children of ``pid``: a master's workers."""
    pids: set[int] = set()
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(path) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return {p for p in pids if alive(p)}


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_children(pid: int, count: int, timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = children(pid)
        if len(pids) == count:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError("expected %d workers under %d, found %r" % (count, pid, pids))
        time.sleep(0.02)


def status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as {field: text}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    return int(status(pid)[field].split()[0])


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fds(pid: int) -> dict[int, str]:
    """Open descriptors of ``pid``: fd -> readlink target."""
    out = {}
    for path in glob.glob("/proc/%d/fd/*" % pid):
        try:
            out[int(path.rsplit("/", 1)[1])] = os.readlink(path)
        except OSError:
            pass
    return out


def threads(pid: int) -> int:
    return int(status(pid)["Threads"])


class RssSampler:
    """Samples VmRSS of some pids every ``interval`` s in a thread; .peak_kb."""

    def __init__(self, pids, interval: float = 0.02):
        import threading
        self.pids = list(pids)
        self.interval = interval
        self.peak_kb = {p: 0 for p in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    self.peak_kb[pid] = max(self.peak_kb[pid], kb(pid, "VmRSS"))
                except (OSError, KeyError):
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(\d+)\] (\w+) ")


def log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def count_levels(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
    return counts
