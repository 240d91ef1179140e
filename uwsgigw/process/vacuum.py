"""``vacuum``: remove the unix sockets and the pidfile on exit, also after the
server dropped to ``uid``/``gid``.

The master binds its sockets and writes its pidfile before it drops its
privileges. In a directory only root may write to (systemd's
``RuntimeDirectory=``, ``/run/...``), or a sticky one such as /tmp, the
unprivileged master can then not remove them; uWSGI leaves them behind
without a word. Gunicorn keeps its master privileged for this; uwsgigw forks
a tiny privileged cleaner before the drop instead, for exactly the paths the
target user could not remove (perms.py):

- it holds nothing: no socket, no app (it is forked before the app is
  imported), no descriptor but the master's pidfd and the log;
- it ignores the stop signals (TERM, INT, HUP...), so it outlives the master
  however the master is stopped (a SIGKILL too), and it dies with SIGKILL;
- it waits on a pidfd for the master to end. A reload re-executes the master
  with the same pid: exec does not signal a pidfd, so a reload is not an end;
- then it removes a socket only if it is still a socket with the same device,
  inode and creation time, and the pidfile only if it still holds the master's pid.

The master's own vacuum leaves those paths to it (across reloads too: the
re-exec state carries the list). Every cleanup that fails is logged with the
path and the reason, here and in the master.
"""

from __future__ import annotations

import ctypes
import gc
import os
import select
import signal
import stat
from typing import TYPE_CHECKING, NoReturn

from .. import log
from . import perms

if TYPE_CHECKING:
    from ..config.settings import Config

# Signals a stop or a supervisor may send the whole process group.
_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)
_PR_SET_NAME = 15

_delegated: set[str] = set()  # absolute paths the cleaner removes, not us


def state() -> list[str]:
    """For the re-exec state (master.py): the paths left to the cleaner."""
    return sorted(_delegated)


def adopt(paths) -> None:
    """A re-executed master: the cleaner of the first image has these paths."""
    _delegated.update(paths or ())


def remove_socket(path: str) -> None:
    """Vacuum one unix socket path; a failure is logged, never raised."""
    if os.path.abspath(path) not in _delegated:
        _unlink(path, "socket")


def remove_pidfile(path: str) -> None:
    """Vacuum the pidfile if it still holds our pid; a failure is logged."""
    if os.path.abspath(path) not in _delegated:
        _remove_pidfile(path, os.getpid())


def _unlink(path: str, what: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("vacuum: cannot remove %s %s: %s" % (what, path, exc.strerror))
    return False


def _remove_pidfile(path: str, pid: int) -> bool:
    try:
        with open(path) as f:
            held = f.read().strip()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("vacuum: cannot read pidfile %s: %s" % (path, exc.strerror))
        return False
    if held != str(pid):
        log.info("vacuum: pidfile %s now holds %r, not %d: left alone" % (path, held, pid))
        return False
    return _unlink(path, "pidfile")


def delegate(cfg: Config, listeners, pidfile: str | None) -> None:
    """Before dropping privileges: fork the cleaner for what the uid/gid we drop
    to could not remove. Does nothing unless vacuum is on and we are root."""
    if not cfg.vacuum or os.geteuid() != 0:
        return
    try:
        ids = perms.target_ids(cfg.uid, cfg.gid)
    except KeyError:
        return  # drop_privileges stops start-up with the message
    if ids is None or ids.uid == 0:
        return
    items = []
    for listener in listeners:
        path = listener.path
        if path and not perms.can_unlink(path, ids):
            items.append(("socket", os.path.abspath(path), identity(path)))
    if pidfile and not perms.can_unlink(pidfile, ids):
        items.append(("pidfile", os.path.abspath(pidfile), None))
    if not items:
        return
    paths = ", ".join(item[1] for item in items)
    try:
        cleaner = start_cleaner(items)
    except OSError as exc:
        log.warning("vacuum: uid %d cannot remove %s, and no privileged cleaner could be "
                    "started (%s): they will be left behind" % (ids.uid, paths, exc.strerror))
        return
    _delegated.update(item[1] for item in items)
    log.info("vacuum: uid %d cannot remove %s; a privileged cleaner (pid %d) removes them "
             "when the master exits" % (ids.uid, paths, cleaner))


def identity(path: str) -> list[int]:
    """What tells our socket from one that replaced it: an unlinked inode's
    number is soon reused, so the creation time goes with it (mtime: chmod
    and chown change ctime, not mtime)."""
    st = os.lstat(path)
    return [st.st_dev, st.st_ino, st.st_mtime_ns]


def start_cleaner(items: list[tuple]) -> int:
    """Fork the cleaner for ``items`` ((kind, path, identity) with kind "socket"
    or "pidfile") of this process; -> its pid. Double fork: it is nobody's
    child to reap."""
    master = os.getpid()
    pidfd = os.pidfd_open(master)  # before the fork: no window for the pid to be reused
    read_end, write_end = os.pipe()
    log.flush_std()  # or the cleaner would write out a copy of what is buffered
    try:
        child = os.fork()
        if child == 0:
            try:
                os.close(read_end)
                grandchild = os.fork()
                if grandchild == 0:
                    os.close(write_end)
                    _clean_after(pidfd, master, items)
                os.write(write_end, b"%d" % grandchild)
            finally:
                os._exit(0)
        os.close(write_end)
        write_end = -1
        os.waitpid(child, 0)
        text = os.read(read_end, 32)
    finally:
        os.close(pidfd)
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if not text:
        raise OSError(0, "the cleaner did not start")
    return int(text)


def _clean_after(pidfd: int, master: int, items: list[tuple]) -> NoReturn:
    try:
        for sig in _IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        gc.disable()  # no finalizer may close a descriptor number we reuse
        os.chdir("/")
        try:
            ctypes.CDLL(None).prctl(_PR_SET_NAME, b"uwsgigw-vacuum", 0, 0, 0)
        except (OSError, AttributeError):
            pass
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        # Keep only the pidfd and the log (fd 2): no socket, no scoreboard.
        os.closerange(3, pidfd)
        os.closerange(pidfd + 1, 1 << 20)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
        log.reopen()  # logrotate may have moved the log since
        for kind, path, ident in items:
            if _clean_one(kind, path, ident, master):
                log.info("vacuum: removed %s %s (the master, pid %d, has exited)"
                         % (kind, path, master))
    except BaseException:
        log.exception("vacuum: the cleaner failed")
    finally:
        os._exit(0)


def _clean_one(kind: str, path: str, ident, master: int) -> bool:
    if kind == "pidfile":
        return _remove_pidfile(path, master)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("vacuum: cannot remove socket %s: %s" % (path, exc.strerror))
        return False
    if not stat.S_ISSOCK(st.st_mode) or identity(path) != list(ident):
        log.info("vacuum: %s is no longer the socket the master (pid %d) bound: left alone"
                 % (path, master))
        return False
    return _unlink(path, "socket")
