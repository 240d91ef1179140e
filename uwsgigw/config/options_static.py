"""The static-file rows of the option table (uWSGI's ``static-map`` family).

Kept apart from ``options.py`` only for length: these are plain rows (keyword
arguments of ``options.Option``, without ``group``) that ``options.py`` turns
into options of its "Static files" group, plus the parsers of the kinds only
they use. Nothing here imports ``options`` (no import circle); every name is
still declared once, here, and listed with the rest everywhere (CLI, INI,
environment, README).

The values stay text in the Config (``--print-config`` shows them as
written, normalised); ``cycle.static.StaticFiles.from_config`` splits them.
Syntax and meaning follow uWSGI's ``core/uwsgi.c`` and ``core/static.c``:

- ``static-map /PREFIX=DIR`` (``uwsgi_opt_static_map``): split at the first
  ``=``; DIR may also be a single file.
- ``static-expires* REGEX SECONDS`` (``uwsgi_opt_add_regexp_dyn_dict``): split
  at the first space; the regex is searched (not anchored), as PCRE does.
- ``static-expires-type[-mtime] TYPE=SECONDS`` (``uwsgi_opt_add_dyn_dict``).

uWSGI exits on a line without its ``=`` or space; here it is an error that
names the option, the value and the expected shape (as for every option).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from . import optypes

STATIC_MAP, EXPIRES_REGEX, EXPIRES_TYPE, REGEX = (
    "static-map", "expires-regex", "expires-type", "regex")


def parse_static_map(opt: Any, text: str, warn: optypes.Warn) -> str:
    """``/PREFIX=DIR`` -> the same text, stripped; BadValue without ``=``/DIR."""
    value = text.strip()
    prefix, sep, target = value.partition("=")
    if not sep or not target.strip() or not prefix.strip():
        raise optypes.BadValue("/PREFIX=DIR (a URL prefix, '=', then a directory or file), "
                               "e.g. /static=/srv/app/static")
    if not prefix.startswith("/"):
        warn("the prefix %r does not start with '/', so no PATH_INFO matches it" % prefix)
    return prefix.strip() + "=" + target.strip()


def _compile(pattern: str, shape: str) -> None:
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise optypes.BadValue("%s with a valid regular expression (%s)" % (shape, exc)) from None


def _seconds(word: str, shape: str) -> int:
    if not re.fullmatch(r"[0-9]+", word):
        raise optypes.BadValue("%s: a whole number of seconds after the %s"
                               % (shape, "space" if " " in shape else "'='"))
    return int(word)


def parse_expires_regex(opt: Any, text: str, warn: optypes.Warn) -> str:
    """``REGEX SECONDS`` -> ``"REGEX SECONDS"``; BadValue on a bad regex or number."""
    shape = "REGEX SECONDS, e.g. \\.(css|js)$ 86400"
    value = text.strip()
    pattern, sep, seconds = value.partition(" ")
    if not sep or not pattern:
        raise optypes.BadValue(shape)
    _compile(pattern, shape)
    return "%s %d" % (pattern, _seconds(seconds.strip(), shape))


def parse_expires_type(opt: Any, text: str, warn: optypes.Warn) -> str:
    """``TYPE=SECONDS`` -> ``"TYPE=SECONDS"``."""
    shape = "MIME/TYPE=SECONDS, e.g. image/png=86400"
    value = text.strip()
    mime, sep, seconds = value.partition("=")
    if not sep or not mime.strip():
        raise optypes.BadValue(shape)
    return "%s=%d" % (mime.strip(), _seconds(seconds.strip(), shape))


def parse_regex(opt: Any, text: str, warn: optypes.Warn) -> str:
    value = optypes.check_text(text)
    _compile(value, "a regular expression")
    return value


PARSERS: dict[str, Callable[[Any, str, optypes.Warn], Any]] = {
    STATIC_MAP: parse_static_map,
    EXPIRES_REGEX: parse_expires_regex,
    EXPIRES_TYPE: parse_expires_type,
    REGEX: parse_regex,
}

_EXPIRES_HELP = ("set Expires (and Cache-Control max-age, the same number of seconds) "
                 "on static files whose %s matches: REGEX SECONDS (repeatable; the first "
                 "matching rule of the static-expires family wins)")
_MTIME_HELP = ("like %s, but Expires is the file's mtime + SECONDS (max-age: the seconds "
               "left until then, at least 0)")
_SENDFILE = ("the worker sends static files itself with sendfile(2) and never blocks "
             "on a slow client for long; no offload threads are needed")


def _expires(name: str, what: str) -> list[dict[str, Any]]:
    return [
        dict(name=name, kind=EXPIRES_REGEX, default=[], help=_EXPIRES_HELP % what,
             multi=True, metavar="REGEX SECONDS"),
        dict(name=name + "-mtime", kind=EXPIRES_REGEX, default=[], help=_MTIME_HELP % name,
             multi=True, metavar="REGEX SECONDS"),
    ]


ROWS: list[dict[str, Any]] = [
    dict(name="static-map", kind=STATIC_MAP, default=[], help="serve the files of DIR "
         "under the URL prefix /PREFIX (GET and HEAD; matched against PATH_INFO, in the "
         "order given; the first map whose file exists serves it, a missing file falls "
         "through to the next map and then to the app). DIR may be one file, served for "
         "exactly /PREFIX", multi=True, check="map", metavar="/PREFIX=DIR"),
    dict(name="static-map2", kind=STATIC_MAP, default=[], help="like static-map, but the "
         "whole PATH_INFO (prefix included) is looked up under DIR", multi=True,
         check="map", metavar="/PREFIX=DIR"),
    dict(name="check-static", kind="path", default=[], help="look every request's "
         "PATH_INFO up under DIR and serve the file when it exists (tried before the "
         "static maps)", aliases=("static-check",), multi=True, check="map",
         metavar="DIR"),
    dict(name="static-index", kind="text", default=[], help="for a request that maps to a "
         "directory, serve the first of these files that exists in it (else the request "
         "goes to the app)", multi=True, metavar="NAME"),
    dict(name="static-safe", kind="path", default=[], help="a symlink inside a static "
         "directory may point under DIR (otherwise a file that resolves outside its "
         "mapped directory is refused with 403 and a log line)", multi=True,
         metavar="DIR"),
    dict(name="static-skip-ext", kind="text", default=[], help="never serve static files "
         "whose path ends with this text (e.g. .php); such requests go to the app",
         multi=True, metavar=".EXT"),
    dict(name="static-gzip-all", kind="bool", default=False, help="serve FILE.gz "
         "(Content-Encoding: gzip; FILE.br for clients that accept br) instead of FILE "
         "when it exists and the client accepts it, for every static file"),
    dict(name="static-gzip-dir", kind="path", default=[], help="like static-gzip-all, for "
         "files whose path starts with this text", aliases=("static-gzip-prefix",),
         multi=True, metavar="DIR"),
    dict(name="static-gzip-ext", kind="text", default=[], help="like static-gzip-all, for "
         "files whose path ends with this text", aliases=("static-gzip-suffix",),
         multi=True, metavar=".EXT"),
    dict(name="static-gzip", kind=REGEX, default=[], help="like static-gzip-all, for files "
         "whose path matches this regular expression", multi=True, metavar="REGEX"),
    *_expires("static-expires", "file path"),
    *_expires("static-expires-uri", "REQUEST_URI"),
    *_expires("static-expires-path-info", "PATH_INFO"),
    dict(name="static-expires-type", kind=EXPIRES_TYPE, default=[], help="set Expires "
         "(and Cache-Control max-age) on static files of this Content-Type: "
         "TYPE=SECONDS (repeatable)", multi=True, metavar="TYPE=SECONDS"),
    dict(name="static-expires-type-mtime", kind=EXPIRES_TYPE, default=[],
         help=_MTIME_HELP % "static-expires-type", multi=True, metavar="TYPE=SECONDS"),
    dict(name="mimefile", kind="path", default=[], help="read more extension -> "
         "Content-Type pairs from this mime.types file (lines 'type ext ext ...'; they "
         "win over Python's table and /etc/mime.types); an unknown extension is sent as "
         "application/octet-stream", aliases=("mime-file",), multi=True, check="file",
         metavar="FILE"),
    dict(name="honour-range", kind="bool", default=False, help="honour Range requests",
         status="mapped", maps_to="single byte ranges of static files are always "
         "honoured (206/416, If-Range); a multi-range request gets the whole file"),
    dict(name="file-serve-mode", kind="choice", default=None, help="answer static-map hits "
         "(200/206) with no body and X-Accel-Redirect (x-accel-redirect, nginx: the file's "
         "real path, for an internal nginx location: nginx/static-accel.conf) or X-Sendfile "
         "(x-sendfile, apache) so the web server sends the file; unset: the worker sends it "
         "with sendfile(2)",
         aliases=("fileserve-mode",), choices=("x-sendfile", "xsendfile", "apache",
                                               "x-accel-redirect", "xaccelredirect",
                                               "nginx"),
         metavar="MODE"),
    dict(name="offload-threads", kind="int", default=0, help="uWSGI: threads per worker "
         "that send static files", aliases=("offload-thread",), status="mapped",
         maps_to=_SENDFILE, metavar="N"),
    dict(name="static-offload-to-thread", kind="int", default=0, help="uWSGI 1.x: threads "
         "that serve static files", status="mapped", maps_to=_SENDFILE, metavar="N"),
    dict(name="static-cache-paths", kind="int", default=0, help="uWSGI: cache resolved "
         "static paths for this many seconds", status="mapped", maps_to="each static "
         "path is resolved by one openat2(2) call beneath its directory, which needs no "
         "timed cache (and cannot serve a stale one); the C core's store of plain answers "
         "checks the opened file on every hit", metavar="SECONDS"),
    dict(name="static-cache-paths-name", kind="text", default=None, help="uWSGI: the "
         "cache static-cache-paths uses", status="mapped", maps_to="see "
         "static-cache-paths: there is no path cache", metavar="NAME"),
]
