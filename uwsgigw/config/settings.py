"""Precedence and the Config object.

One path for every value: defaults < INI files (in order) < ``UWSGIGW_<NAME>``
environment variables < command line, each value through its option's parser
(``options.Option.parse``). Within a layer list options accumulate and scalars
take the last value; a higher layer's list replaces a lower layer's.

Problems are collected, not raised one by one, so ``--check`` reports them
all: *errors* (a bad value, an unknown key under strict, a missing include,
no socket) end in one ``ConfigError``; *warnings* (unknown keys, unsupported
uWSGI options, paths missing on this machine) end up in ``cfg.warnings``,
which ``server.serve`` logs; *notes* say what accepted-and-mapped options do.
With ``check=True`` the errors that are not about a value (a missing
include, no socket) go to ``cfg.stoppers`` instead, so the rest can still be
checked, and the machine is left to ``preflight.predict``: ``--check``
reports both as errors.
"""

from __future__ import annotations

import difflib
import glob
import grp
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import exitcodes
from . import ini, optypes
from .options import (
    ANY,
    BY_ATTR,
    BY_ENV,
    BY_NAME,
    MAPPED,
    OPTIONS,
    Option,
    known_names,
    unsupported,
)


class ConfigError(Exception):
    """The configuration cannot be used; each message is one line for the user."""

    def __init__(self, messages: list[str] | str, exit_code: int = exitcodes.CONFIG_ERROR,
                 warnings: list[str] | None = None):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        self.exit_code = exit_code
        self.warnings = warnings or []  # for --check, which reports everything
        super().__init__("\n".join(self.messages))


class Config:
    """Every option as an attribute (``cfg.buffer_size``), converted and checked.

    ``cfg.sources[attr]`` says where each value came from: ``default``,
    ``FILE:LINE`` (several for a list), ``environment UWSGIGW_X`` or
    ``command line (--x)``.
    """

    def __init__(self, values: dict[str, Any], sources: dict[str, list[str]],
                 warnings: list[str], notes: list[str], files: list[str],
                 stoppers: list[str] | None = None) -> None:
        self.__dict__.update(values)
        # attr -> "where": one origin, or the distinct origins of a list's items
        self.sources = {attr: ", ".join(dict.fromkeys(where)) for attr, where in sources.items()}
        self.item_sources = sources  # attr -> one origin per list item
        self.warnings = warnings
        self.notes = notes
        self.ini_files = files
        self.stoppers = stoppers or []  # check=True: errors start-up would stop on

    @classmethod
    def defaults(cls, **values: Any) -> "Config":
        """Every option at its default, ``values`` (attr=converted value, not
        checked) on top: a Config passed on as data (``--check``'s import
        child) or made by a test."""
        unknown = sorted(set(values) - set(BY_ATTR))
        if unknown:
            raise TypeError("not options: %s" % ", ".join(unknown))
        merged = {o.attr: o.initial() for o in OPTIONS}
        merged.update(values)
        sources = {attr: _origins("given" if attr in values else "default", merged[attr])
                   for attr in merged}
        return cls(merged, sources, [], [], [])

    # -- policy that follows from several options, decided here once ----------
    # (properties, not values stored at build time: they cannot go stale, and
    # Config.defaults gets them too)

    @property
    def runs_master(self) -> bool:
        """A master runs with master = true, several workers, or any feature
        only a master provides: harakiri, recycling and the stats server
        (stats.py; as in uWSGI, stats implies master)."""
        return bool(self.master or self.processes > 1 or self.harakiri or self.max_requests
                    or self.reload_on_rss or self.reload_on_as or self.stats
                    or self.stats_http not in (None, "on"))

    def or_default(self, attr: str) -> Any:
        """The value, or the option's default when it is 0: uWSGI's
        ``x ? x : default`` for reload-mercy and worker-reload-mercy."""
        return getattr(self, attr) or BY_ATTR[attr].default

    def source(self, name: str) -> str:
        opt = BY_NAME.get(name)
        return self.sources[opt.attr if opt else name]

    def as_dict(self) -> dict[str, Any]:
        return {o.attr: getattr(self, o.attr) for o in OPTIONS}

    def format(self) -> str:
        """The effective configuration as a ``[uwsgi]`` INI section, sources as comments."""
        lines = ["[uwsgi]", "; effective uwsgigw configuration (value  ; where it came from)"]
        for opt in OPTIONS:
            value = getattr(self, opt.attr)
            source = self.sources[opt.attr]
            if opt.multi:
                if not value:
                    lines.append("; %s = (none)" % opt.name)
                for item, where in zip(value, self.item_sources[opt.attr]):
                    lines.append("%s = %s  ; %s" % (opt.name, item, where))
            elif value is None:
                lines.append("; %s = (not set)" % opt.name)
            else:
                lines.append("%s = %s  ; %s" % (opt.name, _show(value), source))
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return "Config(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())


def _origins(origin: str, value: Any) -> list[str]:
    """One origin per item of a list (forwarded-allow-ips has a default of two)."""
    return [origin] * len(value) if isinstance(value, list) and value else [origin]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class _Layer:
    """One precedence layer's values; lists accumulate inside a layer."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def set(self, opt: Option, value: Any, origin: str) -> None:
        if opt.multi:
            self.values.setdefault(opt.attr, []).append(value)
            self.sources.setdefault(opt.attr, []).append(origin)
        else:
            self.values[opt.attr] = value
            self.sources[opt.attr] = [origin]


_WHERE = re.compile(r"(.+?):([0-9]+): ")


class _Problems:
    def __init__(self, check: bool = False) -> None:
        self.check = check
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.stoppers: list[str] = []  # check: what would stop start-up (cfg.stoppers)

    @staticmethod
    def _add(bucket: list[str], message: str) -> None:
        if message not in bucket:  # a for-loop repeats one line
            bucket.append(message)

    def error(self, message: str) -> None:
        self._add(self.errors, message)

    def warn(self, message: str) -> None:
        self._add(self.warnings, message)

    def stop(self, message: str) -> None:
        """An error at start-up; ``--check`` reports it as one, but the Config
        is still built (to check the rest, and for tools that read it)."""
        self._add(self.stoppers if self.check else self.errors, message)

    def note(self, message: str) -> None:
        self._add(self.notes, message)

    @staticmethod
    def in_file_order(messages: list[str], files: list[str]) -> list[str]:
        """Messages about FILE:LINE first, by file (in load order) and line."""
        def key(message: str) -> tuple:
            match = _WHERE.match(message)
            if match and match.group(1) in files:
                return (0, files.index(match.group(1)), int(match.group(2)))
            return (1,)
        return sorted(messages, key=key)


def suggest(key: str) -> str:
    """" (did you mean 'x'?)" for a likely typo, or "".

    uWSGI option names never contain "_", so ``project_name`` is a
    placeholder, not a typo. Ties go to the name with the same first letter
    (``guid`` is ``gid``, not ``uid``).
    """
    if "_" in key or not key:
        return ""
    scored = []
    for name in known_names():
        ratio = difflib.SequenceMatcher(None, key, name).ratio()
        if ratio >= 0.8:
            scored.append((-ratio, name[0] != key[0], name))
    if not scored:
        return ""
    best = min(scored)[2]
    where = "" if BY_NAME.get(best) else ", a uWSGI option uwsgigw does not support"
    return " (did you mean %r%s?)" % (best, where)


def missing_equals(key: str) -> str | None:
    """``static-map /static=...`` was split at its only '=': name the real key."""
    if any(c.isspace() for c in key):
        first = key.split()[0]
        if BY_NAME.get(first) or unsupported(first):
            return first
    return None


def describe_unknown(key: str) -> str:
    """Why a key is not an option, for INI, environment and command line alike."""
    first = missing_equals(key)
    if first:
        return "%r is not an option: is the '=' after %r missing?" % (key, first)
    return "%r is not a uwsgigw or uWSGI option%s" % (key, suggest(key))


def describe_unsupported(key: str) -> str:
    info = unsupported(key)
    assert info is not None
    return "%r is a uWSGI option uwsgigw does not support: %s; ignored" % (key, info.advice)


def _parse(opt: Option, text: str, origin: str, label: str, problems: _Problems) -> tuple[bool, Any]:
    """Run the option's parser; -> (ok, value). Problems carry the origin.

    A mapped option gets a note saying what it amounts to, unless its value
    already drew a warning (``plugin = bonjour``)."""
    warned = []

    def warn(message: str) -> None:
        warned.append(message)
        problems.warn("%s: %s = %r: %s" % (origin, label, text, message))
    try:
        value = opt.parse(text, warn)
    except optypes.BadValue as exc:
        problems.error("%s: %s = %r: expected %s" % (origin, label, text, exc.expected))
        return False, None
    if opt.status == MAPPED and not warned:
        problems.note("%s: %s is accepted: %s" % (origin, opt.name, opt.maps_to))
    return True, value


# -- the layers ----------------------------------------------------------------

def _ini_layer(result: ini.IniResult, layer: _Layer, problems: _Problems,
               unknown: list[ini.Entry], listeners: list[str]) -> None:
    for entry in result.entries:
        if entry.placeholder:
            if BY_NAME.get(entry.key) or unsupported(entry.key):
                problems.error("%s: %r is an option, not a placeholder name"
                               % (entry.origin, entry.key))
            continue
        opt = BY_NAME.get(entry.key)
        if opt is None:
            info = unsupported(entry.key)
            if info is not None:
                problems.warn("%s: %s" % (entry.origin, describe_unsupported(entry.key)))
                if info.listener:
                    listeners.append("%s = %s (%s)" % (entry.key, entry.value, entry.origin))
            else:
                unknown.append(entry)
            continue
        if entry.unset_env:
            names = ", ".join(entry.unset_env)
            problems.warn("%s: %s = %s: environment variable %s is not set; the line is "
                          "left out (uWSGI would use the text itself)"
                          % (entry.origin, entry.key, entry.value, names))
            continue
        if entry.unresolved and opt.kind != ANY:
            problems.warn("%s: %s = %s: %s refers to no key; left as written"
                          % (entry.origin, entry.key, entry.value,
                             ", ".join("%%(%s)" % k for k in entry.unresolved)))
        ok, value = _parse(opt, entry.value, entry.origin, entry.key, problems)
        if ok:
            layer.set(opt, value, entry.origin)


def _env_layer(environ: Mapping[str, str], layer: _Layer, problems: _Problems) -> None:
    for name in sorted(environ):
        if not name.startswith("UWSGIGW_"):
            continue
        origin = "environment %s" % name
        opt = BY_ENV.get(name)
        if opt is None:
            key = name[len("UWSGIGW_"):].lower().replace("_", "-")
            if unsupported(key):
                problems.warn("%s: %s" % (origin, describe_unsupported(key)))
            else:
                problems.warn("%s: %s; ignored" % (origin, describe_unknown(key)))
            continue
        ok, value = _parse(opt, environ[name], origin, opt.name, problems)
        if ok:
            layer.set(opt, value, origin)


def _cli_layer(cli: Mapping[str, Any], layer: _Layer, problems: _Problems) -> None:
    for opt in OPTIONS:
        raw = cli.get(opt.attr)
        if raw is None or (opt.multi and not raw):
            continue
        origin = "command line (--%s)" % opt.name
        items = list(raw) if opt.multi else [raw]
        for item in items:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            ok, value = _parse(opt, text, origin, opt.name, problems)
            if ok:
                layer.set(opt, value, origin)


def _unknown_keys(unknown: list[ini.Entry], referenced: set[str], strict: bool,
                  problems: _Problems) -> None:
    for entry in unknown:
        if entry.key in referenced:
            if strict:
                problems.error("%s: %r is not an option; strict mode allows no "
                               "placeholders: write set-placeholder = %s=%s"
                               % (entry.origin, entry.key, entry.key, entry.value))
            continue
        message = "%s: %s" % (entry.origin, describe_unknown(entry.key))
        if strict:
            problems.error(message + " (strict mode)")
        elif missing_equals(entry.key) or "did you mean" in message:
            problems.warn(message + "; ignored")
        else:
            problems.warn(message + "; ignored (a placeholder nothing refers to?)")


# -- after the layers: what only makes sense for the whole configuration -------

def _exists(path: str, chdir: str | None, test=os.path.exists) -> bool:
    if test(path):
        return True
    return bool(chdir) and not os.path.isabs(path) and test(os.path.join(chdir, path))


def _check_paths(values: dict[str, Any], sources: dict[str, list[str]],
                 problems: _Problems, only: str | None = None) -> None:
    chdir = values["chdir"]
    for opt in OPTIONS:
        value = values[opt.attr]
        if not opt.check or value in (None, []) or (only and opt.check != only):
            continue
        items = value if opt.multi else [value]
        for item, where in zip(items, sources[opt.attr]):
            problem = _check_one(opt.check, item, chdir)
            if problem:
                problems.warn("%s: %s = %s: %s on this machine" % (where, opt.name, item, problem))


def _check_one(check: str, value: str, chdir: str | None) -> str | None:
    if check == "dir":
        return None if _exists(value, None, os.path.isdir) else "no such directory"
    if check == "file":
        return None if _exists(value, chdir, os.path.isfile) else "no such file"
    if check == "map":  # static-map's /PREFIX=DIR or check-static's DIR (after chdir)
        target = value.partition("=")[2] or value
        return None if _exists(target, chdir) else "no such directory (skipped until it exists)"
    if check in ("parent", "socket"):
        if check == "socket" and (value.startswith("@") or (":" in value and not value.startswith(("/", ".")))):
            return None
        parent = os.path.dirname(value) or "."
        return None if _exists(parent, chdir, os.path.isdir) else "directory %s does not exist" % parent
    if check == "pythonpath":
        return None if _exists(value, chdir) else "no such directory"
    user, _, group = value.partition(":") if check == "owner" else (
        (value, "", "") if check == "user" else ("", "", value))
    if user and not user.isdigit():
        try:
            pwd.getpwnam(user)
        except KeyError:
            return "no user %r" % user
    if group and not group.isdigit():
        try:
            grp.getgrnam(group)
        except KeyError:
            return "no group %r" % group
    return None


def _expand_pythonpath(values: dict[str, Any], sources: dict[str, list[str]]) -> None:
    # uWSGI's pythonpath takes a glob (python_plugin.c): every match, or the
    # text itself when nothing matches.
    paths: list[str] = []
    where: list[str] = []
    for item, origin in zip(values["pythonpath"], sources["pythonpath"]):
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else []
        paths.extend(matches or [item])
        where.extend([origin] * len(matches or [item]))
    values["pythonpath"], sources["pythonpath"] = paths, where


def _no_socket(values: dict[str, Any], environ: Mapping[str, str], listeners: list[str],
               problems: _Problems) -> None:
    if values["socket"] or values["http_socket"] or environ.get("LISTEN_FDS"):
        return  # systemd socket activation: --check says it cannot check those
    if listeners:
        message = ("no socket to serve on: uwsgigw does not serve %s. Add socket = "
                   "127.0.0.1:8000 (or a unix socket path) for nginx's uwsgi_pass, or "
                   "http-socket = 127.0.0.1:8000 for plain HTTP (proxy_pass); TLS ends in "
                   "nginx or the load balancer" % "; ".join(listeners))
    else:
        message = ("no socket to serve on: set socket = ADDRESS (uwsgi protocol, for "
                   "nginx's uwsgi_pass) or http-socket = ADDRESS (HTTP) in the INI file, "
                   "--socket/--http-socket ADDRESS or UWSGIGW_SOCKET/UWSGIGW_HTTP_SOCKET "
                   "(or use systemd socket activation)")
    problems.stop(message)


def _finish(values: dict[str, Any], sources: dict[str, list[str]],
            environ: Mapping[str, str], listeners: list[str], check: bool,
            problems: _Problems) -> None:
    _expand_pythonpath(values, sources)
    _no_socket(values, environ, listeners, problems)
    if values["module"] and values["wsgi_file"]:
        problems.warn("%s: module and wsgi-file are both set; module %s is used, wsgi-file "
                      "%s is not" % (sources["module"][-1], values["module"],
                                     values["wsgi_file"]))
    if not (values["module"] or values["wsgi_file"] or values["mount"] or check):
        problems.warn("no application configured: set module = (or wsgi-file =, or mount =)"
                      + ("; start-up stops when need-app is on" if values["need_app"] else ""))
    if values["chmod_socket"] in ("666", "777") and (values["socket"] or values["http_socket"]):
        problems.warn("%s: chmod-socket = %s lets every local user connect, and whoever "
                      "connects can forge REMOTE_ADDR; prefer 660 with nginx in the group"
                      % (sources["chmod_socket"][-1], values["chmod_socket"]))
    # --check: preflight.py predicts the rest, as errors where start-up would stop.
    _check_paths(values, sources, problems, only="pythonpath" if check else None)


# -- entry points --------------------------------------------------------------

def build(cli: Mapping[str, Any], environ: Mapping[str, str], *, check: bool = False,
          cli_warnings: Iterable[str] = (), cli_listeners: Iterable[str] = ()) -> Config:
    """Build the Config from parsed command-line values (``attr -> raw``; lists as
    sequences; ``None``/empty when not given) and the environment."""
    problems = _Problems(check)
    for message in cli_warnings:
        problems.warn(message)
    layers = [_Layer(), _Layer(), _Layer()]
    _env_layer(environ, layers[1], problems)
    _cli_layer(cli, layers[2], problems)
    specs = layers[2].values.get("ini") or layers[1].values.get("ini") or []
    placeholders: dict[str, str] = {}
    for layer in (layers[1], layers[2]):
        for item in layer.values.get("set_placeholder", []):
            name, _, value = item.partition("=")
            placeholders.setdefault(name.strip(), value)
    unknown: list[ini.Entry] = []
    listeners = list(cli_listeners)
    files: list[str] = []
    referenced: set[str] = set()
    try:
        result = ini.read(specs, environ, placeholders=placeholders)
    except ini.IniError as exc:
        problems.error(str(exc))
    else:
        files, referenced = result.files, result.referenced
        for message in result.warnings:
            problems.warn(message)
        for message in result.missing:
            problems.stop(message)
        # ("ini =" in a file is an include the reader has already followed.)
        _ini_layer(result, layers[0], problems, unknown, listeners)
    values = {o.attr: o.initial() for o in OPTIONS}
    sources = {o.attr: _origins("default", values[o.attr]) for o in OPTIONS}
    for layer in layers:
        for attr, value in layer.values.items():
            values[attr] = value
            sources[attr] = layer.sources[attr]
    _unknown_keys(unknown, referenced, bool(values["strict"]), problems)
    _finish(values, sources, environ, listeners, check, problems)
    warnings = _Problems.in_file_order(problems.warnings, files)
    if problems.errors:
        raise ConfigError(_Problems.in_file_order(problems.errors + problems.stoppers, files),
                          warnings=warnings)
    return Config(values, sources, warnings, _Problems.in_file_order(problems.notes, files),
                  files, _Problems.in_file_order(problems.stoppers, files))
