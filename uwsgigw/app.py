"""Finding and loading the WSGI application(s), the way uWSGI does.

``module = pkg.mod`` or ``pkg.mod:callable``, ``wsgi-file = path.py``,
``callable`` (default ``application``), and ``mount = /prefix=app`` with
``manage-script-name``. Also the process set-up that must precede the import:
``chdir``, ``home``/``virtualenv``, ``pythonpath``, ``env``. A loaded callable
may be an ASGI app (:func:`is_asgi`): the worker kind follows from that
(``WorkerContext.from_config``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import site
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .config.settings import Config

WSGIApp = Callable


class AppLoadError(Exception):
    """The app could not be imported or is not a callable; start-up stops."""


def prepare_process(cfg: Config) -> None:
    """Apply chdir, virtualenv, pythonpath and env before importing the app."""
    for item in cfg.env or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AppLoadError("env %r: expected KEY=VALUE" % item)
        os.environ[key] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            raise AppLoadError("chdir %s: %s" % (cfg.chdir, exc.strerror)) from None
    if cfg.home:
        add_virtualenv(cfg.home)
    for path in reversed(cfg.pythonpath or ()):
        if path not in sys.path:
            sys.path.insert(0, path)
    # uWSGI and Gunicorn both import the app relative to the working directory.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def venv_site_packages(home: str) -> str:
    return os.path.join(home, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")


def virtualenv_problem(home: str) -> str | None:
    """Why ``home`` is no virtualenv this interpreter can import from, or None."""
    site_packages = venv_site_packages(home)
    if os.path.isdir(site_packages):
        return None
    return "no %s (is it a virtualenv made with Python %d.%d?)" % (
        site_packages, *sys.version_info[:2])


def add_virtualenv(home: str) -> None:
    """Make ``home``'s site-packages importable (uWSGI's ``home``/``virtualenv``).

    The running interpreter stays ours; we add the venv's site-packages the
    way ``site`` would (processing .pth files), ahead of the system's.
    """
    problem = virtualenv_problem(home)
    if problem:
        raise AppLoadError("home/virtualenv %s: %s" % (home, problem))
    site_packages = venv_site_packages(home)
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    os.environ["VIRTUAL_ENV"] = home


def _load_file(path: str):
    """Execute a ``wsgi-file`` as a module, as uWSGI does (``uwsgi_file_*``)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise AppLoadError("wsgi-file %s: no such file" % path)
    name = "uwsgi_file_" + re.sub(r"\W", "_", path)
    # An explicit loader: ".wsgi" files are Python too, whatever the suffix.
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(path)
    if folder not in sys.path:  # so the file can import its neighbours
        sys.path.insert(0, folder)
    spec.loader.exec_module(module)
    return module


def load_callable(spec: str, default_callable: str = "application",
                  from_file: bool | None = None) -> WSGIApp:
    """``mod``, ``mod:callable`` or a ``.py``/``.wsgi`` file -> the WSGI callable.

    ``module=`` is always imported (``mysite.wsgi`` is a module, as in
    uWSGI), ``wsgi-file=`` is always a file; a ``mount`` target is a file when
    it looks like a path (``from_file=None``). Import errors propagate with
    their traceback: the operator needs to see where the app broke.
    """
    target, _, name = spec.partition(":")
    name = name or default_callable
    if from_file is None:
        from_file = target.endswith((".py", ".wsgi")) or os.sep in target
    module = _load_file(target) if from_file else importlib.import_module(target)
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError("%s has no attribute %r (set callable= or use module=%s:NAME)"
                           % (target, name, target)) from None
    if not callable(app):
        raise AppLoadError("%s:%s is a %s, not a WSGI callable" % (target, name,
                           type(app).__name__))
    return app


def is_asgi(app) -> bool:
    """True for an ASGI 3 callable: ``async def app(scope, receive, send)``,
    an object with ``async def __call__`` (FastAPI, Starlette), or a plain
    callable taking exactly three positional arguments."""
    target = app
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)
    if not inspect.isfunction(target) and call is not None and \
            inspect.iscoroutinefunction(call):
        return True
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) == 3 and not any(p.kind == p.VAR_POSITIONAL for p in params)


class AppTable:
    """The default app plus ``mount`` points; picks the app for a request."""

    def __init__(self, default: WSGIApp | None, mounts: list[tuple[str, WSGIApp]],
                 manage_script_name: bool):
        self.default = default
        # Longest prefix first, so /api/v2 wins over /api.
        self.mounts = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
        self.manage_script_name = manage_script_name

    def named(self) -> list[tuple[str, WSGIApp]]:
        """Every app, with how the log names it."""
        named = []
        if self.default is not None:
            named.append(("the app", self.default))
        for prefix, app in self.mounts:
            named.append(("the app mounted at %s" % prefix, app))
        return named

    def kinds(self) -> dict[int, str]:
        """id(app) -> "asgi" or "wsgi", for every app."""
        return {id(app): ("asgi" if is_asgi(app) else "wsgi") for _, app in self.named()}

    def picker(self) -> Callable[[dict], WSGIApp | None]:
        if not self.mounts:
            app = self.default
            return lambda env: app
        return self.pick

    def pick(self, env: dict) -> WSGIApp | None:
        if self.manage_script_name:
            path = env["PATH_INFO"]
            for prefix, app in self.mounts:
                if path == prefix or path.startswith(prefix + "/"):
                    env["SCRIPT_NAME"] = prefix
                    env["PATH_INFO"] = path[len(prefix):]
                    return app
        else:
            script_name = env["SCRIPT_NAME"]
            for prefix, app in self.mounts:
                if script_name == prefix:
                    return app
        return self.default


def load_apps(cfg: Config) -> AppTable:
    """Load ``module``/``wsgi-file`` and every ``mount``; need at least one."""
    default = None
    if cfg.module:
        default = load_callable(cfg.module, cfg.callable, from_file=False)
    elif cfg.wsgi_file:
        default = load_callable(cfg.wsgi_file, cfg.callable, from_file=True)
    mounts = []
    for item in cfg.mount or ():
        prefix, sep, target = item.partition("=")
        if not sep or not prefix.startswith("/") or not target:
            raise AppLoadError("mount %r: expected /PREFIX=module[:callable] or "
                               "/PREFIX=path/to/app.py" % item)
        prefix = prefix.rstrip("/")
        app = load_callable(target, cfg.callable)
        if prefix == "":
            default = app
        else:
            mounts.append((prefix, app))
    if default is None and not mounts:
        raise AppLoadError("no application configured: set module= (or wsgi-file=, "
                           "or mount=)")
    return AppTable(default, mounts, bool(cfg.manage_script_name))
