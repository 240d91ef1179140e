"""``--check``: predict start-up for the same command line and environment.

``config.build`` checks the values; this asks the machine what
``server.serve`` would meet there, in its order, without serving: the log
file can be opened, the decoder is there, each socket can be bound (its
directory exists and is writable, the path is not taken; a TCP address is
bound for a moment and closed), the pidfile can be written, the uid/gid exist
and can be dropped to, and the app imports -- in a child process, after
env/chdir/home/pythonpath and the privilege drop, as in a worker, so nothing
of the app runs in the checking process (Gunicorn's ``--check-config`` does
the import too).

Whatever would stop start-up is an error (``--check`` exits 1); the rest is
a warning. What this machine lacks says "on this machine" after the INI line
and the value, so a configuration written for another machine reads as
such. Only what cannot be known before start-up stays a warning that says
so: sockets systemd socket activation will pass.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import Mapping

from .config.settings import Config
from .process import perms

IMPORT_TIMEOUT = 30.0  # seconds the app's import may take in the check


@dataclass
class Prediction:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def predict(cfg: Config, environ: Mapping[str, str]) -> Prediction:
    out = Prediction()
    _log_files(cfg, out)
    _decoder(cfg, out)
    _sockets(cfg, environ, out)
    _pidfile(cfg, out)
    if _privileges(cfg, out):  # the app is imported after the drop: as that user
        _app(cfg, environ, out)
    return out


def _here(cfg: Config, attr: str, value, problem: str, index: int | None = None) -> str:
    where = cfg.item_sources[attr][index] if index is not None else cfg.sources[attr]
    return "%s: %s = %s: on this machine, %s" % (where, attr.replace("_", "-"), value,
                                                   problem)


def _access(path: str, mode: int) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


def _in_dir(path: str, directory: str | None) -> str:
    """``path`` as the server resolves it after ``chdir``."""
    return os.path.join(directory, path) if directory and not os.path.isabs(path) else path


def _dir_problem(path: str) -> str | None:
    """Why a file cannot be created (or replaced) at ``path``, or None."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return "directory %s does not exist" % directory
    if not _access(directory, os.W_OK | os.X_OK):
        return "directory %s is not writable for uid %d" % (directory, os.geteuid())
    return None


# -- in serve()'s order -----------------------------------------------------------------

def _log_files(cfg: Config, out: Prediction) -> None:
    # logto, else daemonize's file: opened (O_APPEND, created if missing) first,
    # before chdir, from the start directory.
    attr, path = ("logto", cfg.logto) if cfg.logto else ("daemonize", cfg.daemonize)
    if not path:
        return
    if os.path.isdir(path):
        problem = "is a directory"
    elif os.path.exists(path):
        problem = None if _access(path, os.W_OK) else "not writable for uid %d" % (
            os.geteuid())
    else:
        problem = _dir_problem(path)
    if problem:
        out.errors.append(_here(cfg, attr, path, problem))


def _decoder(cfg: Config, out: Prediction) -> None:
    from .backend import DecoderUnavailable, select
    try:
        select(cfg.decoder)
    except DecoderUnavailable as exc:
        out.errors.append(_here(cfg, "decoder", cfg.decoder, str(exc).rstrip(".")))


def _chdir(cfg: Config) -> str | None:
    return cfg.chdir if cfg.chdir and os.path.isdir(cfg.chdir) else None


def _sockets(cfg: Config, environ: Mapping[str, str], out: Prediction) -> None:
    if environ.get("LISTEN_FDS"):
        out.warnings.append(
            "LISTEN_FDS is set: at start-up the sockets come from systemd "
            "socket activation (socket = and http-socket = entries are then ignored); they "
            "cannot be checked before start-up")
        return
    from .process.sockets import SocketError, parse_address
    owner = _socket_owner(cfg, out) if cfg.socket or cfg.http_socket else None
    for attr in ("socket", "http_socket"):  # bound in this order (sockets.bind_all)
        for index, spec in enumerate(getattr(cfg, attr)):
            try:
                family, address = parse_address(spec)
            except SocketError as exc:
                out.errors.append(_here(cfg, attr, spec, str(exc), index))
                continue
            if family == socket.AF_UNIX and not address.startswith("\0"):
                problem = _unix_socket(cfg, _in_dir(address, _chdir(cfg)), owner, out)
            else:
                problem = _try_bind(family, address)
            if problem == "in use":
                running = _running_server(cfg)
                if running:
                    out.warnings.append(_here(cfg, attr, spec, "in use by the running "
                                              "uwsgigw (pid %d, from the pidfile): a reload "
                                              "(SIGHUP) keeps it; a second server could not "
                                              "bind it" % running, index))
                    continue
                problem = "in use: another server listens on it (stop it, or choose another)"
            if problem:
                out.errors.append(_here(cfg, attr, spec, problem, index))


def _try_bind(family, address) -> str | None:
    """Bind for a moment, as sockets.bind_tcp would (SO_REUSEADDR), and close."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else "cannot bind: %s" % (
                exc.strerror)
    return None


def _unix_socket(cfg: Config, path: str, owner, out: Prediction) -> str | None:
    problem = _dir_problem(path)
    if problem:
        return problem
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            return "the path exists and is not a socket (start-up refuses to replace it)"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                return "in use"
            except ConnectionRefusedError:
                pass  # a stale socket: start-up replaces it
            except OSError as exc:
                return "cannot probe the existing socket: %s" % exc.strerror
    if owner is not None:
        mode = int(cfg.chmod_socket, 8)
        warning = perms.socket_warning(path, perms.Mode(owner[0], owner[1],
                                                        stat.S_IFSOCK | mode))
        if warning:
            out.warnings.append("%s (predicted from chmod-socket, chown-socket and the "
                                "user uwsgigw binds as)" % warning)
    return None


def _socket_owner(cfg: Config, out: Prediction) -> tuple[int, int] | None:
    """The sockets' uid and gid after bind and chown-socket; None (and an error)
    if chown-socket cannot work."""
    uid, gid = os.geteuid(), os.getegid()
    if not cfg.chown_socket:
        return uid, gid
    user, _, group = cfg.chown_socket.partition(":")
    try:
        what = "user %s" % user
        if user:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        what = "group %s" % group
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        problem = "no %s" % what
    else:
        if os.geteuid() == 0 or (uid == os.geteuid() and gid in perms.current_ids().gids):
            return uid, gid
        problem = "only root may give a socket to another user or to a group it is not in"
    out.errors.append(_here(cfg, "chown_socket", cfg.chown_socket, problem))
    return None


def _running_server(cfg: Config) -> int | None:
    """The live pid in this configuration's pidfile, if any."""
    if not cfg.pidfile:
        return None
    try:
        with open(_in_dir(cfg.pidfile, _chdir(cfg))) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _pidfile(cfg: Config, out: Prediction) -> None:
    # Written after chdir, before the privilege drop, through a temporary file.
    if cfg.pidfile:
        problem = _dir_problem(_in_dir(cfg.pidfile, _chdir(cfg)))
        if problem:
            out.errors.append(_here(cfg, "pidfile", cfg.pidfile, problem))


def _privileges(cfg: Config, out: Prediction) -> bool:
    """False (and errors) if uid/gid cannot be dropped to."""
    known = True
    for attr, spec in (("uid", cfg.uid), ("gid", cfg.gid)):
        try:
            perms.resolve(spec, None) if attr == "uid" else perms.resolve(None, spec)
        except KeyError:
            out.errors.append(_here(cfg, attr, spec, "no such %s" % (
                "user" if attr == "uid" else "group")))
            known = False
    if not known or not (cfg.uid or cfg.gid):
        return known
    user, gid = perms.resolve(cfg.uid, cfg.gid)
    uid = user.pw_uid if user is not None else None
    if os.getuid() != 0 and not ((uid is None or uid == os.getuid()) and
                                 (gid is None or gid == os.getgid())):
        attr, spec = ("uid", cfg.uid) if cfg.uid else ("gid", cfg.gid)
        out.errors.append(_here(cfg, attr, spec, "cannot drop privileges: "
                                "only root can (uwsgigw would run as uid %d)" % os.getuid()))
        return False
    return True


# -- the app, imported in a child process ---------------------------------------------------

def _app(cfg: Config, environ: Mapping[str, str], out: Prediction) -> None:
    if cfg.chdir and not os.path.isdir(cfg.chdir):
        out.errors.append(_here(cfg, "chdir", cfg.chdir, "no such directory"))
        return
    if cfg.home:
        from .app import virtualenv_problem
        problem = virtualenv_problem(_in_dir(cfg.home, cfg.chdir))
        if problem:
            out.errors.append(_here(cfg, "home", cfg.home, problem))
            return
    for attr, value in (("module", cfg.module), ("wsgi_file", cfg.wsgi_file),
                        ("mount", cfg.mount)):
        if value:
            break
    else:
        message = "no application configured: set module = (or wsgi-file =, or mount =)"
        if cfg.need_app:
            out.errors.append(message + "; start-up stops (need-app is on)")
        else:
            out.warnings.append(message + "; need-app is off: every request gets 500")
        return
    value = ", ".join(value) if isinstance(value, list) else value
    try:
        problem = _import_in_child(cfg, environ)
    except subprocess.TimeoutExpired:
        out.warnings.append("%s: %s = %s: the app did not finish importing within %gs; "
                            "not checked" % (cfg.sources[attr], attr.replace("_", "-"),
                                             value, IMPORT_TIMEOUT))
        return
    if problem is None:
        return
    if cfg.need_app:
        out.errors.append(_here(cfg, attr, value, "the app does not load: " + problem))
    else:
        out.warnings.append(_here(cfg, attr, value, "the app does not load: %s (need-app "
                                  "is off: start-up goes on, every request gets 500)"
                                  % problem))


def _import_in_child(cfg: Config, environ: Mapping[str, str]) -> str | None:
    """None if the app loads in a fresh interpreter, else why not
    (TimeoutExpired after IMPORT_TIMEOUT)."""
    data = json.dumps(cfg.as_dict())
    done = subprocess.run([sys.executable, "-m", "uwsgigw.preflight"], input=data,
                          capture_output=True, text=True, env=dict(environ),
                          timeout=IMPORT_TIMEOUT)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])["problem"]
    except (IndexError, ValueError, KeyError):
        return "the interpreter ended while importing it (exit status %d)%s" % (
            done.returncode, (": " + done.stderr.strip().splitlines()[-1])
            if done.stderr.strip() else "")


def _describe(exc: BaseException) -> str:
    """The exception's last line, and where it was raised."""
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    if isinstance(exc, SyntaxError) and exc.filename:
        return "%s (%s, line %s)" % (text, exc.filename, exc.lineno)
    # The innermost frame of the app's own code (not importlib's, not ours).
    ours = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(("<frozen", ours, os.path.dirname(os.__file__)))]
    if frames:
        return "%s (%s, line %s)" % (text, frames[-1].filename, frames[-1].lineno)
    return text


def _child() -> None:
    """``python -m uwsgigw.preflight``: the config as JSON on stdin -> one JSON
    line ``{"problem": null | "..."}`` on stdout; what the app prints goes nowhere."""
    cfg = Config.defaults(**json.load(sys.stdin))
    report = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    problem = None
    try:
        from .app import AppLoadError, load_apps, prepare_process
        from .server import PrivilegeError, drop_privileges
        try:
            prepare_process(cfg)
            if os.geteuid() == 0:
                drop_privileges(cfg.uid, cfg.gid)  # the app is imported after the drop
            load_apps(cfg)
        except (AppLoadError, PrivilegeError) as exc:
            problem = str(exc)
    except BaseException as exc:  # the app's own import error, SystemExit included
        problem = _describe(exc)
    report.write(json.dumps({"problem": problem}) + "\n")
    report.flush()
    os._exit(0)  # the app may have started threads


if __name__ == "__main__":
    _child()
