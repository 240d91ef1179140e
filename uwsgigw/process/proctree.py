"""The master's view of its process tree (Linux ``/proc``), for attached daemons.

A daemon may fork, double-fork or ``setsid`` away from the process group the
master signals. The master is made a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``, kept across its re-exec), so whatever
a daemon leaves behind is reparented to the master rather than to init: it
stays in the master's subtree, where :func:`marked` finds it by the marker
variable every daemon's environment carries (inherited by its descendants).
As PID 1 in a container, or as a subreaper, the master reaps every orphan
that lands on it with its ``waitpid(-1)`` loop.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import NoReturn

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False where
    the kernel cannot (not Linux, or before 3.4)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child: receive ``sig`` when the parent dies (kept across exec)."""
    _prctl(PR_SET_PDEATHSIG, int(sig))


def parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process we can see."""
    found = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()  # after "pid (comm) "
        if len(fields) >= 2:
            found[int(name)] = (int(fields[1]), fields[0].decode("ascii", "replace"))
    return found


def subtree(root: int, skip: set[int] = frozenset()) -> list[int]:
    """The live (not zombie) descendants of ``root``, leaving out the pids in
    ``skip`` and their descendants."""
    table = parents()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        if table[pid][1] != "Z":
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def environ_value(pid: int, name: str) -> str | None:
    """The value of ``name`` in the environment ``pid`` was started with."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode("utf-8", "replace")
    return None


def marked(root: int, name: str, prefix: str, skip: set[int] = frozenset()) -> dict[int, str]:
    """pid -> value, for the descendants of ``root`` (not under ``skip``)
    whose environment has ``name`` set to a value starting with ``prefix``."""
    found = {}
    for pid in subtree(root, skip):
        value = environ_value(pid, name)
        if value is not None and value.startswith(prefix):
            found[pid] = value
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
        return data[data.rfind(b")") + 2:][:1] != b"Z"
    except OSError:
        return False


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pid`` leads, else to ``pid`` alone;
    False if neither exists."""
    for target in (-pid, pid):
        try:
            os.kill(target, sig)
            return True
        except ProcessLookupError:
            continue
        except PermissionError:
            return False
    return False


def close_fds_from(lowest: int) -> None:
    """In a child about to exec: close every descriptor >= ``lowest``."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(lowest, 65536)
        return
    for fd in fds:
        if fd >= lowest:
            try:
                os.close(fd)
            except OSError:
                pass


def exec_in_session(argv: list[str], env: dict, chdir: str | None, stdin: int, out: int,
                    die_with_master: bool, master: int) -> NoReturn:
    """In a forked child: a session (process group) of its own, SIGKILL when
    the master dies (``die_with_master``), default signal handling and none
    blocked, ``stdin`` (-1: /dev/null) and ``out`` as fds 0, 1 and 2 and no
    other descriptor, ``chdir``, then ``execve(argv[0], argv, env)``. Never
    returns: exit code 127 (the reason on ``out``) if the exec fails."""
    try:
        os.setsid()
        if die_with_master:
            die_with_parent(signal.SIGKILL)
            if os.getppid() != master:
                os._exit(0)
        signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                if signal.getsignal(sig) not in (signal.SIG_DFL, None):
                    signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if chdir:
            os.chdir(chdir)
        if stdin < 0:
            stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        close_fds_from(3)
        os.execve(argv[0], argv, env)
    except BaseException as exc:
        try:
            os.write(2, ("cannot run %s: %s\n" % (argv[-1], exc)).encode("utf-8", "replace"))
        except OSError:
            pass
    os._exit(127)
