"""Process bookkeeping for the benchmark: start, stop, and measure from /proc.

Every process the bench starts goes through ``Registry.start``: it runs in a
session (and so a process group) of its own, and ``Registry.stop_all`` ends
each group by its pid - the polite signal first, SIGKILL after a grace
period - also when the bench is interrupted. Nothing is ever killed by name.

The measurements read /proc directly (proc(5)):
- CPU: ``utime + stime`` (fields 14, 15 of /proc/PID/stat) of every process in
  the server's tree, plus the root's ``cutime + cstime`` (16, 17) so a worker
  that exits and is reaped during a run still counts.
- Memory: ``Pss`` from /proc/PID/smaps_rollup, the fair share of pages shared
  copy-on-write between master and workers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen
    stop_signal: int
    log_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])


class Registry:
    """All processes the bench started, so that every one of them is stopped."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def start(self, name: str, argv: list[str], *, stop_signal: int = signal.SIGTERM,
              env: dict | None = None, cwd: str | None = None,
              log_path: str | None = None) -> Managed:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            if log_path:
                out.close()
        managed = Managed(name, proc, stop_signal, log_path)
        self._procs.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 8.0) -> None:
        """Stop one process group: its stop signal, then SIGKILL after ``grace``."""
        pgid = managed.pid  # start_new_session: the group id is the leader's pid
        if managed.alive():
            _signal_group(pgid, managed.stop_signal)
            try:
                managed.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Workers left behind by a master that died first share the group.
        _signal_group(pgid, signal.SIGKILL)
        try:
            managed.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if managed in self._procs:
            self._procs.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self._procs)):
            try:
                self.stop(managed, grace=5.0)
            except Exception as exc:  # keep stopping the others
                print("warning: stopping %s (pid %d): %s" % (managed.name, managed.pid, exc))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- /proc readers -------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``comm`` (which may hold spaces)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    """ppid -> [pid] for every process on the machine (one /proc scan)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree = children_map()
    found, todo = [], list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by ``root`` and all its descendants."""
    ticks = 0
    fields = _stat_fields(root)
    if fields:
        # state is fields[0]; utime, stime, cutime, cstime are stat fields 14-17.
        ticks += sum(int(x) for x in fields[11:15])
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent busy so far (/proc/stat ``cpu`` line).

    user + nice + system + steal: irq/softirq are left out because the
    bench's own loopback traffic lands there without being charged to any
    of its processes; steal (the hypervisor running someone else) is noise.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system + steal) / CLK_TCK


def pss_kb(pid: int) -> int | None:
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def worker_pids(root: int) -> list[int]:
    """The processes serving requests: the master's children, or the root alone."""
    return children_map().get(root, []) or [root]


def mean_worker_pss_mb(root: int) -> float | None:
    values = [v for v in (pss_kb(p) for p in worker_pids(root)) if v is not None]
    return sum(values) / len(values) / 1024.0 if values else None


def wait_for_path(path: str, timeout: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def run_wrk(argv: list[str], seconds: float, error: type = RuntimeError) -> dict:
    """Run wrk (``argv``, with a Lua script that prints ``BENCHRESULT k=v ...``)
    for about ``seconds``; the result's numbers, or ``error`` when wrk hangs
    or prints no result."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True,
                             timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        raise error("wrk did not finish: %s" % " ".join(argv)) from None
    match = re.search(r"BENCHRESULT (.*)", out)
    if not match:
        raise error("no result from wrk (%s):\n%s" % (" ".join(argv), out))
    return {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


def rotate(items: list, k: int) -> list:
    """``items`` starting at its k-th (modulo its length)."""
    k %= len(items)
    return items[k:] + items[:k]


def rotations(rounds: int, keys: list):
    """(i, total, round, key) for every peer of every round, each round
    starting one peer later (rotate), so no peer always runs first or last."""
    total, i = rounds * len(keys), 0
    for rnd in range(rounds):
        for key in rotate(keys, rnd):
            i += 1
            yield i, total, rnd, key
