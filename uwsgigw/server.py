"""Start-up: from a validated Config to serving processes.

Order matters and follows uWSGI: log set-up, decoder choice, process
environment (env, chdir, virtualenv), sockets bound once, app loaded (before
fork unless ``lazy-apps``), then workers.
"""

from __future__ import annotations

import os
import sys
import traceback

from . import __version__, exitcodes, log
from .app import AppLoadError, AppTable, load_apps, prepare_process
from .backend import DecoderUnavailable, select
from .config.settings import Config
from .observe import reqlog
from .observe.record import SharedCounter
from .process import perms, systemd, vacuum
from .process.handover import Handover
from .process.master import Master
from .process.sockets import HTTP, SocketError, adopt, bind_all, close_all
from .process.workerbase import worker_class
from .wsgi.handler import WorkerContext


def _load(cfg: Config):
    try:
        return load_apps(cfg)
    except AppLoadError as exc:
        log.error("cannot load the application: %s" % exc)
    except BaseException:  # the app's own import error: show where it broke
        log.error("cannot load the application (%s):\n%s" % (
            cfg.module or cfg.wsgi_file, traceback.format_exc().rstrip()))
    return None


def serve(cfg: Config) -> int:
    inherited = Handover.from_env()  # set when a reloading master re-executed us
    try:  # before daemonizing: a log that cannot be opened fails in the foreground
        log.setup(cfg.logto or cfg.daemonize)
    except OSError as exc:
        log.error("cannot open the log file %s: %s" % (exc.filename, exc.strerror))
        return exitcodes.CONFIG_ERROR
    if cfg.daemonize and inherited is None:
        daemonize()
    # The request log format is compiled once, here, for every way of starting.
    for warning in cfg.warnings + reqlog.setup(cfg):
        log.warning(warning)
    try:
        backend = select(cfg.decoder)
    except DecoderUnavailable as exc:
        log.error(str(exc))
        return exitcodes.CONFIG_ERROR
    log.info("uwsgigw %s (decoder: %s, Python %s) %s, pid %d" % (
        __version__, backend.name, sys.version.split()[0],
        "reloading" if inherited else "starting", os.getpid()))
    try:
        prepare_process(cfg)
    except AppLoadError as exc:
        log.error(str(exc))
        return exitcodes.APP_LOAD_ERROR
    try:
        listeners = open_sockets(cfg, inherited)
    except (SocketError, OSError) as exc:
        log.error(str(exc))
        return exitcodes.SOCKET_ERROR
    if inherited is None:
        warn_unreachable(listeners)
    pidfile = cfg.pidfile
    try:
        if pidfile:
            write_pidfile(pidfile)
        if inherited is None:
            vacuum.delegate(cfg, listeners, pidfile)
        else:
            vacuum.adopt(inherited.vacuum)
        drop_privileges(cfg.uid, cfg.gid)
        if os.geteuid() == 0 and not inherited:  # said once, not at every reload
            log.warning("running as root without uid=: the app runs with full root "
                        "privileges; set uid = www-data (and gid = www-data) to drop "
                        "them after binding the sockets")
    except (OSError, PrivilegeError) as exc:
        log.error(str(exc))
        close_all(listeners, vacuum=inherited is None and bool(cfg.vacuum))
        return exitcodes.CONFIG_ERROR
    try:
        sockets_text = ", ".join(l.describe() for l in listeners)
        if not cfg.runs_master:
            apps = _load(cfg) or (None if cfg.need_app else AppTable(None, [], False))
            if apps is None:
                return exitcodes.APP_LOAD_ERROR
            ctx = _context(cfg, backend, apps, SharedCounter(), listeners)
            log.info("ready to accept requests: 1 worker on %s (decoder: %s)" % (
                sockets_text, backend.name))
            worker = worker_class(ctx.kind)(ctx, listeners, cfg.threads)
            worker.install_signals()
            worker.run()
            return exitcodes.OK
        return _prefork(cfg, backend, listeners, sockets_text, inherited)
    finally:
        close_all(listeners, vacuum=bool(cfg.vacuum))
        if pidfile and cfg.vacuum:
            vacuum.remove_pidfile(pidfile)


def _context(cfg: Config, backend, apps, counter, listeners) -> WorkerContext:
    """The workers' context; HTTP listeners need the event-loop worker, also
    those http-socket does not list (from systemd, or kept across a reload)."""
    ctx = WorkerContext.from_config(cfg, backend, apps, counter)
    if ctx.kind == "sync" and any(l.protocol == HTTP for l in listeners):
        ctx.kind = "asgi"
    return ctx


def _prefork(cfg: Config, backend, listeners, sockets_text: str,
             inherited: Handover | None) -> int:
    """Run the master (master.py): preload the app unless lazy-apps, then fork."""
    counter = SharedCounter()

    def make_ctx():
        apps = _load(cfg)
        if apps is None:
            if cfg.need_app:
                return None
            log.warning("need-app is off: serving 500 until an app loads")
            apps = AppTable(None, [], False)
        return _context(cfg, backend, apps, counter, listeners)

    ctx = None
    if not cfg.lazy_apps:
        ctx = make_ctx()
        if ctx is None and not (inherited and inherited.workers):
            return exitcodes.APP_LOAD_ERROR
        if ctx is not None:
            # Import the worker's module here, before the fork, as the app:
            # imported in each worker, its pages would be private to it
            # (0.4 MB of PSS per worker, measured with hello).
            worker_class(ctx.kind)
    return Master(cfg, listeners, sockets_text, make_ctx, ctx, inherited).run()


# -- process set-up hooks (daemonize, sockets, pidfile, privileges) -----------

class PrivilegeError(Exception):
    """uid/gid cannot be resolved or dropped."""


def open_sockets(cfg: Config, inherited: Handover | None) -> list:
    """Sockets from a reloading master, from systemd, or bound here."""
    if inherited:
        fds, paths = inherited.listener_fds()
        return adopt(fds, paths, inherited.listener_protocols())
    activated = systemd.listen_fds()
    if activated:
        listeners = adopt([fd for fd, _ in activated])
        for listener, (_, name) in zip(listeners, activated):
            listener.protocol = systemd.protocol_of(listener.sock, name, cfg.http_socket)
        log.info("socket activation: using %d socket%s from systemd (%s)%s" % (
            len(listeners), "s" if len(listeners) > 1 else "",
            ", ".join(l.describe() for l in listeners),
            "; socket= and http-socket= entries are not bound"
            if cfg.socket or cfg.http_socket else ""))
        return listeners
    return bind_all(cfg.socket, cfg.listen, cfg.chmod_socket, cfg.chown_socket,
                    cfg.http_socket)


def warn_unreachable(listeners) -> None:
    """A unix socket nginx's usual users cannot connect to: nginx would answer
    502 with no word from us, so say it at start-up (perms.py)."""
    for listener in listeners:
        if listener.path:
            try:
                message = perms.socket_warning(listener.path, os.stat(listener.path))
            except OSError:
                continue
            if message:
                log.warning(message)


def daemonize() -> None:
    """Detach (double fork + setsid), as uWSGI's ``daemonize = LOGFILE``."""
    log.flush_std()
    if os.fork():
        log.exit_now(0)
    os.setsid()
    if os.fork():
        log.exit_now(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)


def write_pidfile(path: str) -> None:
    """The master's pid, written before privileges are dropped (uWSGI's pidfile)."""
    text = "%d\n" % os.getpid()
    try:
        with open(path) as f:
            if f.read() == text:
                return  # a reload: same pid, maybe no longer allowed to write
    except OSError:
        pass
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def drop_privileges(uid_spec, gid_spec) -> None:
    """setgid/setuid after binding, like uWSGI: the app never runs as root."""
    if not uid_spec and not gid_spec:
        return
    try:
        user, gid = perms.resolve(uid_spec, gid_spec)
    except KeyError as exc:
        raise PrivilegeError("uid/gid: unknown user or group %s" % exc) from None
    uid = user.pw_uid if user is not None else None
    if (uid is None or os.getuid() == uid) and (gid is None or os.getgid() == gid):
        return  # already there (e.g. after a reload)
    try:
        if gid is not None:
            if os.getuid() == 0:
                if user is not None:
                    os.initgroups(user.pw_name, gid)
                else:
                    os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError("cannot drop privileges to uid %s gid %s: %s" % (
            uid, gid, exc.strerror)) from None
    log.info("dropped privileges to uid %d, gid %d" % (os.getuid(), os.getgid()))
